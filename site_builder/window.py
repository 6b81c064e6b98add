"""What one snapshot reads from the store: the 12-month window, already privacy-filtered.

The writers (tiles, pages, Metro files) take a ``WindowData`` and never touch the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LayerHeat:
    """Published heat of one layer at the heat resolution.

    Attributes:
        layer: ``all``, ``ride``, ``run``, ``water`` or ``winter``.
        cells: H3 cells (uint64) that reached ``min_athletes`` distinct athletes, sorted.
        heat: per cell, the sum over athletes of ``min(activities, max_per_athlete)``.
        athletes: per cell, how many distinct athletes contributed.
    """

    layer: str
    cells: np.ndarray
    heat: np.ndarray
    athletes: np.ndarray


@dataclass(frozen=True)
class WindowData:
    """Everything a snapshot publishes from, for the window ``first_month..month``.

    ``edges``, ``hexagons`` and ``od`` hold, per layer, the records of
    ``heatmetro.state.records`` (``EDGE_DTYPE``, ``HEX_DTYPE``, ``OD_DTYPE``) with a leading
    ``athlete`` int32 field (an index local to this snapshot, never an identifier),
    one row per athlete, local month and key: a ``month`` field (months since year 0,
    see ``heatmetro.core.months.month_index``) and, on edges, ``ride`` (the record is of the ride layer,
    so planners can tell rides from e-bike rides). They are NOT thresholded yet: the Metro writer counts
    distinct athletes, suppresses below ``min_athletes`` and rounds.
    """

    month: str
    first_month: str
    heat: dict[str, LayerHeat]
    edges: dict[str, np.ndarray]
    hexagons: dict[str, np.ndarray]
    od: dict[str, np.ndarray]
    athletes: int
    activities: int
    counts: dict[str, int] = field(default_factory=dict)


def publishable_heat(
    layer: str, per_athlete: np.ndarray, min_athletes: int, max_per_athlete: int
) -> LayerHeat:
    """Cap each athlete's weight per cell, then keep cells with enough distinct athletes.

    ``per_athlete`` has one row per (athlete, cell) with the athlete's activity count.
    """
    if len(per_athlete) == 0:
        empty = np.zeros(0, np.uint64)
        return LayerHeat(layer, empty, np.zeros(0), np.zeros(0, np.uint32))
    capped = np.minimum(per_athlete["n"], max_per_athlete).astype(np.float64)
    cells, inv = np.unique(per_athlete["cell"], return_inverse=True)
    heat = np.bincount(inv, weights=capped, minlength=len(cells))
    athletes = np.bincount(inv, minlength=len(cells)).astype(np.uint32)
    keep = athletes >= min_athletes
    return LayerHeat(layer, cells[keep], heat[keep], athletes[keep])
