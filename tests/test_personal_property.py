"""Property: private activities never change what a snapshot reads.

For any mix of visibilities (and ``hide_map``, and later visibility changes), the
public window — month layers, per-sport and night layers, Metro records, counts, and
the weekly map's layers —
equals the window of the stream holding only the activities whose final version is
public. The personal store meanwhile receives every one of them. Real SQLite stores,
the real fold (trimming) and writers; no dataflow, to keep each example fast.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heatmetro.core.config import Config
from heatmetro.core.contract import validate_event
from heatmetro.flows.fold import AthleteFold
from heatmetro.site_builder.activity_layers import layer_heat
from heatmetro.site_builder.load import contributing_paths, load_window
from heatmetro.state.personal_store import PersonalWriter, connect_personal, personal_db_path
from heatmetro.state.store import connect
from heatmetro.state.view import ReadView
from heatmetro.state.writer import StoreWriter
from tests.conftest import TEST_SALT, public_items
from tests.streams import activity, line

STREETS = [
    line((42.3195, -72.6450), (42.3195, -72.6300)),
    line((42.3295, -72.6450), (42.3295, -72.6300)),
    line((42.3195, -72.6400), (42.3320, -72.6400)),
]
SPORTS = ["Ride", "MountainBikeRide", "Run"]
VISIBILITY = st.sampled_from(["everyone", "followers_only", "only_me"])


@st.composite
def streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    events = []
    for k in range(draw(st.integers(3, 7))):
        who = f"a{draw(st.integers(0, 3))}"
        street = draw(st.sampled_from(STREETS))
        hour = draw(st.sampled_from([3, 12, 23]))  # night, day, night (UTC-4: 23h, 8h, 19h)
        start = datetime(2021, 6, 10 + k, hour, 0, tzinfo=UTC)
        versions = draw(st.lists(st.tuples(VISIBILITY, st.booleans()), min_size=1, max_size=2))
        for v, (visibility, hide_map) in enumerate(versions):
            events.append(
                activity(
                    f"r{k}",
                    who,
                    street,
                    start=start,
                    sport_type=draw(st.sampled_from(SPORTS)),
                    visibility=visibility,
                    hide_map=hide_map,
                    updated=start + timedelta(hours=1 + v),
                )  # fmt: skip
            )
    return events


def public_only(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stream of the activities whose newest version contributes (that version only)."""
    newest: dict[str, dict[str, Any]] = {}
    for e in events:
        newest[e["activity_id"]] = e
    return [e for e in newest.values() if e["visibility"] == "everyone" and not e["hide_map"]]


def ingest(events: list[dict[str, Any]], folder: Path) -> tuple[Any, int]:
    """Fold ``events`` into a public store (returned open) and a personal store."""
    config = Config(salt=TEST_SALT, state_dir=folder, min_athletes=2, sport_layers=("Run",))
    fold, state = AthleteFold(config), dict[str, Any]()
    db = connect(folder / "public.db")
    writer = StoreWriter.for_config(db, config)
    personal = PersonalWriter.for_config(config)
    for e in events:
        ev = validate_event(e, b"")
        state[ev.athlete_id], items = fold.apply(state.get(ev.athlete_id), ev)
        writer.write_batch(public_items(items))
        personal.write_batch(items)
    writer.refresh()
    personal.close()
    pdb = connect_personal(personal_db_path(folder))
    stored = pdb.execute("SELECT count(*) FROM activities").fetchone()[0]
    pdb.close()
    return db, stored


def window(db: Any) -> Any:
    with ReadView([db]) as view:
        return load_window(
            view,
            "2021-06",
            min_athletes=2,
            max_per_athlete=10,
            threshold_ring=1,
            sport_layers=("Run",),
            night=True,
        )


def weekly(db: Any) -> dict[str, Any]:
    """The weekly map's layers for 2021-06-11..17, as ``snapshot --weekly`` reads them."""
    lo, hi = 1623369600, 1623369600 + 7 * 86400  # local midnight 2021-06-11 .. 06-18
    with ReadView([db]) as view:
        acts = list(
            contributing_paths(
                view,
                "a.start_s + a.utc_offset_s >= ? AND a.start_s + a.utc_offset_s < ?",
                (lo, hi),
            )
        )
    return layer_heat(
        acts, group_layers=True, sport_layers=("Run",), night=True, min_athletes=2,
        max_per_athlete=10, threshold_ring=1,
    )  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_public_window_equals_the_window_of_public_activities_alone(
    events: list[dict[str, Any]],
) -> None:
    with TemporaryDirectory() as tmp:
        db_all, personal_rows = ingest(events, Path(tmp) / "all")
        db_pub, _ = ingest(public_only(events), Path(tmp) / "pub")
        got, want = window(db_all), window(db_pub)
        got_week, want_week = weekly(db_all), weekly(db_pub)
        db_all.close()
        db_pub.close()
    # Every activity reached the personal store, whatever its visibility.
    assert personal_rows == len({e["activity_id"] for e in events})
    assert (got.athletes, got.activities) == (want.athletes, want.activities)
    assert sorted(got.heat) == sorted(want.heat)
    for layer, heat in want.heat.items():
        mine = got.heat[layer]
        assert np.array_equal(mine.cells, heat.cells), layer
        assert np.array_equal(mine.heat, heat.heat), layer
        assert np.array_equal(mine.athletes, heat.athletes), layer
    assert sorted(got_week) == sorted(want_week)
    for layer, heat in want_week.items():
        assert np.array_equal(got_week[layer].cells, heat.cells), f"weekly {layer}"
        assert np.array_equal(got_week[layer].heat, heat.heat), f"weekly {layer}"
    for name in ("edges", "hexagons", "od"):
        mine, theirs = getattr(got, name), getattr(want, name)
        assert sorted(mine) == sorted(theirs)
        for layer in theirs:
            assert mine[layer].tobytes() == theirs[layer].tobytes(), (name, layer)
