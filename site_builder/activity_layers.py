"""Heat layers drawn from stored per-activity paths rather than month aggregates.

The month aggregates (``athlete_months``) are per sport *group*; per-sport layers, the
night layer and the 7-day weekly window need finer slices (the activity's own sport
type, the time of each cell, the start date), so they are counted here from the
activities' trimmed paths. The privacy rules are the same as for the month layers:
one activity adds at most 1 to a cell, each athlete's weight in a cell is capped, and a
cell is kept only with enough distinct athletes (``publishable_heat``).

The rows come from whatever store the caller read (the public store for the published
site, the athlete's personal store for ``heatmetro personal``); nothing here opens one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from heatmetro.core.sports import NIGHT_LAYER, sport_layer
from heatmetro.site_builder.window import LayerHeat, publishable_heat
from heatmetro.state.aggregates import concat
from heatmetro.state.night import night_rows
from heatmetro.state.records import LAYERS, PATH_DTYPE, group_sum

PER_ATHLETE = np.dtype([("athlete", "<i4"), ("cell", "<u8"), ("n", "<u4")])


@dataclass(frozen=True, slots=True)
class ActivityPath:
    """One contributing activity: who (a local index, never an id), what, when, where."""

    athlete: int
    layer: str  # sport group: ride, run, water, winter or other
    sport_type: str
    start_s: int
    utc_offset_s: int
    path: np.ndarray  # PATH_DTYPE, already privacy-trimmed


def layer_heat(
    activities: Iterable[ActivityPath],
    *,
    group_layers: bool,
    sport_layers: tuple[str, ...],
    night: bool,
    min_athletes: int,
    max_per_athlete: int,
    threshold_ring: int,
    partial: bool = False,
) -> dict[str, LayerHeat]:
    """Publishable heat of each requested layer (layers without heat are left out).

    Args:
        activities: the window's contributing activities.
        group_layers: also build ``all`` and the sport-group layers.
        sport_layers: sport types (``TrailRun``...) that get their own ``sport_*`` layer.
        night: build the ``night`` layer.
        min_athletes: distinct athletes a cell needs.
        max_per_athlete: cap on one athlete's activities counted in a cell.
        threshold_ring, partial: see ``publishable_heat``.
    """
    acts = list(activities)
    out: dict[str, LayerHeat] = {}
    if not acts:
        return out
    counts = per_athlete_counts(
        acts, group_layers=group_layers, sport_layers=sport_layers, night=night
    )
    decided: list[tuple[np.ndarray, LayerHeat]] = []
    for name, per_athlete in counts.items():
        # Layers often hold the same rows (every activity of a bike-share week is a ride):
        # the threshold is a function of the rows, so decide each distinct input once.
        same = [h for rows, h in decided if _same_rows(rows, per_athlete)]
        if same:
            heat = replace(same[0], layer=name)
        else:
            heat = publishable_heat(
                name, per_athlete, min_athletes, max_per_athlete,
                threshold_ring=threshold_ring, partial=partial,
            )  # fmt: skip
            decided.append((per_athlete, heat))
        if len(heat.cells):
            out[name] = heat
    return out


def _same_rows(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) == len(b) and bool(np.array_equal(a, b))


def layer_names(*, group_layers: bool, sport_layers: tuple[str, ...], night: bool) -> list[str]:
    """The layers ``per_athlete_counts`` makes, in order."""
    return [
        *(LAYERS if group_layers else ()),
        *(sport_layer(s) for s in sport_layers),
        *([NIGHT_LAYER] if night else []),
    ]


def per_athlete_counts(
    acts: list[ActivityPath],
    *,
    group_layers: bool,
    sport_layers: tuple[str, ...],
    night: bool,
) -> dict[str, np.ndarray]:
    """Per requested layer (``layer_names``), one row per (athlete, cell): how many of
    the athlete's activities reached the cell (``PER_ATHLETE``, sorted, before any
    threshold). An athlete's rows depend on their own activities only, so the window
    cache can keep them per athlete."""
    names = layer_names(group_layers=group_layers, sport_layers=sport_layers, night=night)
    if not acts:
        return {name: np.zeros(0, PER_ATHLETE) for name in names}
    sizes = np.array([len(a.path) for a in acts], dtype=np.int64)
    path = concat([a.path for a in acts], PATH_DTYPE)
    aid = np.repeat(np.arange(len(acts)), sizes)
    athlete = np.array([a.athlete for a in acts], dtype=np.int32)
    layer = np.array([a.layer for a in acts])
    sport = np.array([a.sport_type for a in acts])
    # Each activity counts once per cell: its distinct cells.
    cell_aid, cells = _distinct(aid, path["cell"])

    def count(chosen_aid: np.ndarray, chosen_cells: np.ndarray) -> np.ndarray:
        per_athlete = np.zeros(len(chosen_aid), PER_ATHLETE)
        per_athlete["athlete"], per_athlete["cell"], per_athlete["n"] = (
            athlete[chosen_aid],
            chosen_cells,
            1,
        )
        return group_sum(per_athlete, ("athlete", "cell"), ("n",))

    def by_activity(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = keep[cell_aid]
        return cell_aid[rows], cells[rows]

    out: dict[str, np.ndarray] = {}
    if group_layers:
        out["all"] = count(cell_aid, cells)
        for name in LAYERS[1:]:
            keep = layer == name
            # A window of one sport group (a bike-share week) holds the rows of ``all``.
            out[name] = out["all"].copy() if keep.all() else count(*by_activity(keep))
    for sport_type in sport_layers:
        out[sport_layer(sport_type)] = count(*by_activity(sport == sport_type))
    if night:
        start = np.array([a.start_s for a in acts], dtype=np.float64)
        offset = np.array([a.utc_offset_s for a in acts], dtype=np.int64)
        dark = night_rows(path["cell"], start[aid] + path["t"], offset[aid])
        out[NIGHT_LAYER] = count(*_distinct(aid[dark], path["cell"][dark]))
    return out


def _distinct(aid: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (activity, cell) pairs, sorted (lexsort: far faster than a structured unique)."""
    if len(aid) == 0:
        return aid, cells
    order = np.lexsort((cells, aid))
    a, c = aid[order], cells[order]
    first = np.ones(len(a), dtype=bool)
    first[1:] = (a[1:] != a[:-1]) | (c[1:] != c[:-1])
    return a[first], c[first]
