"""The per-athlete fold and the idempotent store, as plain classes (no dataflow).

Events go through the real parser, ``AthleteFold`` and ``StoreWriter`` into a real
SQLite file; assertions read the tables the snapshot reads.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pytest
import sqlite_utils

from heatmetro.core.cells import cell_centres
from heatmetro.core.config import Config
from heatmetro.core.contract import parse_event
from heatmetro.core.geo import haversine_m, offset_point
from heatmetro.flows.fold import AthleteFold
from heatmetro.state.changes import DeadLetter, SettingsChange, StoreItem
from heatmetro.state.records import HEAT_DTYPE, PATH_DTYPE, from_blob
from heatmetro.state.settings import AthleteSettings, EffectiveZone, cells_touching_zones
from heatmetro.state.writer import StoreWriter
from tests.conftest import public_items
from tests.streams import (
    NORTH_EAST,
    NORTH_WEST,
    NORTHAMPTON_EAST,
    NORTHAMPTON_WEST,
    activity,
    athlete,
    deleted,
    line,
)

ELM = line(NORTHAMPTON_WEST, NORTHAMPTON_EAST)  # ~1.65 km west -> east
NORTH = line(NORTH_WEST, NORTH_EAST)
T0 = datetime(2021, 6, 1, tzinfo=UTC)
MIDDLE = (42.3195, -72.6350)  # on Elm Street, ~820 m from either end


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


class Harness:
    """What the dataflow does for one athlete key, minus Bytewax: fold, then write."""

    def __init__(self, config: Config, db: sqlite_utils.Database) -> None:
        self.config = config
        self.db = db
        self.fold = AthleteFold(config)
        self.writer = StoreWriter(
            db,
            heat_res=config.heat_resolution,
            metro_res=config.metro_resolution,
            od_res=config.od_resolution,
            salt=config.salt,
            hide_jitter_m=config.hide_jitter_m,
        )
        self.settings: dict[str, AthleteSettings] = {}

    def items(self, event: dict[str, Any]) -> list[StoreItem]:
        """The public store's items of ``event`` (these tests store no personal ones)."""
        parsed = parse_event(orjson.dumps(event))
        new, items = self.fold.apply(self.settings.get(parsed.athlete_id), parsed)
        self.settings[parsed.athlete_id] = new
        return public_items(items)

    def send(self, *events: dict[str, Any]) -> list[StoreItem]:
        """Fold and write each event as its own batch; returns every item written."""
        out: list[StoreItem] = []
        for event in events:
            items = self.items(event)
            self.writer.write_batch(items)
            out.extend(items)
        return out


@pytest.fixture
def h(config: Config, fresh_db: sqlite_utils.Database) -> Harness:
    return Harness(config, fresh_db)


def dump(db: sqlite_utils.Database) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    return {
        "athletes": db.execute("SELECT * FROM athletes ORDER BY athlete_id").fetchall(),
        "activities": db.execute("SELECT * FROM activities ORDER BY activity_id").fetchall(),
        "athlete_months": db.execute(
            "SELECT * FROM athlete_months ORDER BY athlete_id, month, layer"
        ).fetchall(),
    }


def row(db: sqlite_utils.Database, activity_id: str) -> dict[str, Any]:
    cur = db.execute("SELECT * FROM activities WHERE activity_id = ?", (activity_id,))
    names = [d[0] for d in cur.description]
    found = cur.fetchone()
    assert found is not None, f"no row for {activity_id}"
    return dict(zip(names, found, strict=True))


def path_of(db: sqlite_utils.Database, activity_id: str) -> np.ndarray:
    return from_blob(row(db, activity_id)["path"], PATH_DTYPE)


def months_of(db: sqlite_utils.Database, athlete_id: str) -> list[tuple]:  # type: ignore[type-arg]
    return db.execute(
        "SELECT month, layer, activities, heat, edges, hexagons, od FROM athlete_months "
        "WHERE athlete_id = ? ORDER BY month, layer",
        (athlete_id,),
    ).fetchall()


def heat_cells(db: sqlite_utils.Database, athlete_id: str) -> set[int]:
    cells: set[int] = set()
    for _, _, _, heat, *_ in months_of(db, athlete_id):
        cells |= set(from_blob(heat, HEAT_DTYPE)["cell"].tolist())
    return cells


def stored_zones(db: sqlite_utils.Database, athlete_id: str) -> tuple[EffectiveZone, ...]:
    (zones,) = db.execute(
        "SELECT zones FROM athletes WHERE athlete_id = ?", (athlete_id,)
    ).fetchone()
    return tuple(EffectiveZone(*z) for z in orjson.loads(zones))


def ride(
    aid: str,
    ath: str,
    pts: list[list[float]] = ELM,
    *,
    hours: float = 0,
    updated: datetime | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """An activity starting ``hours`` after T0, updated an hour later unless told."""
    return activity(aid, ath, pts, start=at(hours), updated=updated or at(hours + 1), **kw)


# --------------------------------------------------------------------------- baseline


def test_a_public_ride_is_stored_trimmed_and_counted(h: Harness) -> None:
    h.send(ride("r1", "a1"))
    r = row(h.db, "r1")
    assert r["status"] == "active" and r["month"] == "2021-05"  # local time UTC-4
    assert r["fixes_in"] == len(ELM) and 0 < r["fixes_kept"] < len(ELM)
    path = path_of(h.db, "r1")
    lat, lng = cell_centres(path["cell"])
    # The default 200 m (+ up to 150 m secret extra) is gone from both ends.
    assert haversine_m(lat, lng, *NORTHAMPTON_WEST).min() > 200 - 20
    assert haversine_m(lat, lng, *NORTHAMPTON_EAST).min() > 200 - 20
    assert 200 <= r["cut_start_m"] <= 350 and 200 <= r["cut_end_m"] <= 350
    ((month, layer, n, heat, *_),) = months_of(h.db, "a1")
    assert (month, layer, n) == ("2021-05", "ride", 1)
    assert set(from_blob(heat, HEAT_DTYPE)["cell"].tolist()) == set(path["cell"].tolist())


# --------------------------------------------------------------------------- stale / replay


def test_stale_athlete_event_is_ignored(h: Harness) -> None:
    zone = {"lat": MIDDLE[0], "lng": MIDDLE[1], "radius_m": 300}
    h.send(athlete("a1", updated=at(5), privacy_zones=[zone], hide_start_end_m=400))
    before = dump(h.db)
    items = h.send(athlete("a1", updated=at(4), privacy_zones=[], hide_start_end_m=0))
    assert items == []  # the fold drops it
    assert dump(h.db) == before
    assert h.settings["a1"].hide_start_end_m == 400
    # Even if a stale change reached the store (another worker's replay), it loses.
    stale = SettingsChange("a1", int(at(4).timestamp() * 1000), True, 0.0, ())
    h.writer.write_batch([stale])
    assert dump(h.db) == before
    h.send(ride("r1", "a1", hours=10))
    assert len(stored_zones(h.db, "a1")) == 1
    assert not cells_touching_zones(
        path_of(h.db, "r1")["cell"], h.config.heat_resolution, stored_zones(h.db, "a1")
    ).any()


def test_stale_activity_version_and_stale_delete_are_ignored(h: Harness) -> None:
    newer = activity("r1", "a1", NORTH, start=at(0), updated=at(9))
    older = activity("r1", "a1", ELM, start=at(0), updated=at(8))
    h.send(newer)
    before = dump(h.db)
    h.send(older)
    h.send(deleted("r1", "a1", updated=at(7)))
    assert dump(h.db) == before
    lat, _ = cell_centres(path_of(h.db, "r1")["cell"])
    assert np.all(np.abs(lat - NORTH_WEST[0]) < 0.001)  # still the North street version


def test_redelivering_a_batch_changes_nothing(h: Harness) -> None:
    zone = {"lat": MIDDLE[0], "lng": MIDDLE[1], "radius_m": 250}
    events = [
        athlete("a1", updated=at(0), privacy_zones=[zone]),
        ride("r1", "a1"),
        ride("r2", "a1", NORTH, hours=2),
        ride("r3", "a2", hours=3, visibility="followers_only"),
        ride("r4", "a2", hours=4),
        deleted("r2", "a1", updated=at(20)),
        athlete("a2", updated=at(30), hide_start_end_m=600),
        ride("r5", "a3", hours=5, hide_map=True),
    ]
    items = [it for e in events for it in h.items(e)]
    h.writer.write_batch(items)
    once = dump(h.db)
    assert once["athlete_months"], "nothing was counted"
    h.writer.write_batch(items)  # at-least-once sink: the whole batch again
    assert dump(h.db) == once
    for it in items:  # and item by item, in reverse
        h.writer.write_batch([it])
    assert dump(h.db) == once
    # Re-delivery through the fold too (settings restored from an older snapshot).
    h.settings.clear()
    h.send(*events)
    assert dump(h.db) == once


# --------------------------------------------------------------------------- stop contributing


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda: deleted("r1", "a1", updated=at(30)), id="delete"),
        pytest.param(lambda: ride("r1", "a1", visibility="only_me", updated=at(30)), id="only_me"),
        pytest.param(
            lambda: ride("r1", "a1", visibility="followers_only", updated=at(30)), id="followers"
        ),
        pytest.param(lambda: ride("r1", "a1", hide_map=True, updated=at(30)), id="hide_map"),
    ],
)
def test_withdrawn_activity_leaves_no_trace(
    h: Harness, config: Config, tmp_path: Any, change: Any
) -> None:
    h.send(ride("r1", "a1"), ride("r2", "a1", NORTH, hours=3))
    with_both = months_of(h.db, "a1")
    assert with_both[0][2] == 2
    h.send(change())
    r = row(h.db, "r1")
    assert r["status"] in ("deleted", "hidden")
    assert not r["path"] and not r["heat"] and not r["edges"]
    # Exactly what a store that never saw r1 holds for the athlete.
    from heatmetro.state.store import connect

    other = Harness(config, connect(tmp_path / "other.db"))
    other.send(ride("r2", "a1", NORTH, hours=3))
    assert months_of(h.db, "a1") == months_of(other.db, "a1")
    elm_cells = set(path_of(other.db, "r2")["cell"].tolist())
    assert heat_cells(h.db, "a1") == elm_cells
    other.db.close()


def test_withdrawing_the_only_activity_empties_the_month(h: Harness) -> None:
    h.send(ride("r1", "a1"))
    assert months_of(h.db, "a1")
    h.send(ride("r1", "a1", visibility="only_me", updated=at(30)))
    assert months_of(h.db, "a1") == []
    # A newer public version brings it back (that reveals no more than the athlete chose).
    h.send(ride("r1", "a1", updated=at(40)))
    assert row(h.db, "r1")["status"] == "active" and months_of(h.db, "a1")


# --------------------------------------------------------------------------- opt-out


def test_opt_out_purges_and_opt_in_counts_only_later_activities(h: Harness) -> None:
    h.send(ride("r1", "a1"), ride("r2", "a1", NORTH, hours=2), ride("r9", "a9", hours=1))
    other_before = months_of(h.db, "a9")
    h.send(athlete("a1", updated=at(10), aggregate_opt_out=True))
    for aid in ("r1", "r2"):
        r = row(h.db, aid)
        assert r["status"] == "purged" and r["path"] is None and r["heat"] is None
    assert months_of(h.db, "a1") == []
    assert months_of(h.db, "a9") == other_before  # someone else is untouched
    # While opted out, new activities are stored without a path.
    h.send(ride("r3", "a1", hours=11))
    assert row(h.db, "r3")["status"] == "opted_out" and not path_of(h.db, "r3").size
    assert months_of(h.db, "a1") == []

    h.send(athlete("a1", updated=at(20), aggregate_opt_out=False))
    assert months_of(h.db, "a1") == []  # opting in reveals nothing already stored
    h.send(ride("r1", "a1"), ride("r3", "a1", hours=11))  # re-delivered: still stale
    assert months_of(h.db, "a1") == []
    h.send(ride("r4", "a1", NORTH, hours=21))
    ((_, _, n, heat, *_),) = months_of(h.db, "a1")
    assert n == 1
    assert set(from_blob(heat, HEAT_DTYPE)["cell"].tolist()) == set(
        path_of(h.db, "r4")["cell"].tolist()
    )
    assert {row(h.db, a)["status"] for a in ("r1", "r2", "r3")} == {"purged", "opted_out"}


# --------------------------------------------------------------------------- hide more, later


def _far_from(path: np.ndarray, point: tuple[float, float]) -> float:
    lat, lng = cell_centres(path["cell"])
    return float(haversine_m(lat, lng, *point).min())


def test_new_zone_is_cut_from_stored_paths(h: Harness, config: Config) -> None:
    h.send(ride("r1", "a1"), ride("r2", "a1", NORTH, hours=2))
    before1, before2 = path_of(h.db, "r1"), path_of(h.db, "r2")
    assert _far_from(before1, MIDDLE) < 40  # the ride passes the middle of Elm Street
    zone = {"lat": MIDDLE[0], "lng": MIDDLE[1], "radius_m": 200}
    h.send(athlete("a1", updated=at(10), privacy_zones=[zone]))
    after1 = path_of(h.db, "r1")
    eff = stored_zones(h.db, "a1")
    assert len(eff) == 1 and eff[0].radius_m >= 200
    assert len(after1) < len(before1)
    assert set(after1["cell"].tolist()) < set(before1["cell"].tolist())
    assert not cells_touching_zones(after1["cell"], config.heat_resolution, eff).any()
    assert _far_from(after1, MIDDLE) > 200  # nothing near the athlete's point
    assert len(np.unique(after1["piece"])) == 2  # split in two pieces at the zone
    # The North street ride is >1 km away: unchanged.
    assert path_of(h.db, "r2").tobytes() == before2.tobytes()
    # The aggregates follow the cut.
    assert heat_cells(h.db, "a1") == set(after1["cell"].tolist()) | set(before2["cell"].tolist())
    # Re-delivering the zone event, or sending it again newer, cuts nothing more.
    h.settings.clear()
    snap = dump(h.db)
    h.send(athlete("a1", updated=at(10), privacy_zones=[zone]))
    h.send(athlete("a1", updated=at(11), privacy_zones=[zone]))
    assert dump(h.db)["activities"] == snap["activities"]


def test_larger_hide_distance_cuts_more_and_smaller_adds_nothing_back(h: Harness) -> None:
    # 5 km east: a later, larger hide distance is cut out to a circle around the old
    # first cell wide enough for any direction the start lay in (old cut + new + slack).
    west, east = (NORTHAMPTON_WEST[0], -72.67), (NORTHAMPTON_WEST[0], -72.61)
    h.send(ride("r1", "a1", line(west, east)))
    start200 = _far_from(path_of(h.db, "r1"), west)
    h.send(athlete("a1", updated=at(10), hide_start_end_m=600))
    cut = path_of(h.db, "r1")
    r = row(h.db, "r1")
    assert r["cut_start_m"] >= 600 and r["cut_end_m"] >= 600
    assert len(cut) and _far_from(cut, west) >= 600 - 20 > start200
    assert _far_from(cut, east) >= 600 - 20
    assert heat_cells(h.db, "a1") == set(cut["cell"].tolist())
    # Smaller again, and a zone removed: nothing comes back.
    snap = dump(h.db)
    h.send(athlete("a1", updated=at(20), hide_start_end_m=0))
    assert dump(h.db)["activities"] == snap["activities"]
    assert dump(h.db)["athlete_months"] == snap["athlete_months"]
    # ... but a ride after it uses the smaller distance.
    h.send(ride("r2", "a1", hours=21))
    assert _far_from(path_of(h.db, "r2"), NORTHAMPTON_WEST) < 30


def test_a_larger_hide_distance_reaches_its_distance_from_home_when_the_ride_turns(
    h: Harness,
) -> None:
    """Ten minutes of jitter at home, 300 m east, then north: the metres cut along the
    path from its first stored cell turned the corner and fell ~100 m short of a new
    500 m as the crow flies (an outside review: 404 m)."""
    rng = np.random.default_rng(4)
    home = (NORTHAMPTON_WEST[0], -72.66)
    pts = []
    for _ in range(600):
        lat, lng = offset_point(*home, abs(float(rng.normal(0, 5))), float(rng.uniform(0, 360)))
        pts.append([round(lat, 7), round(lng, 7)])
    for k in range(1, 61):  # 300 m east, 5 m a fix
        lat, lng = offset_point(*home, 5.0 * k, 90.0)
        pts.append([round(lat, 7), round(lng, 7)])
    corner = offset_point(*home, 300.0, 90.0)
    for k in range(1, 2001):  # 10 km north
        lat, lng = offset_point(*corner, 5.0 * k, 0.0)
        pts.append([round(lat, 7), round(lng, 7)])
    h.send(athlete("a1", updated=at(0), hide_start_end_m=200), ride("r1", "a1", pts, hours=1))
    assert _far_from(path_of(h.db, "r1"), home) >= 200 - 20
    h.send(athlete("a1", updated=at(10), hide_start_end_m=500))
    cut = path_of(h.db, "r1")
    assert len(cut) and _far_from(cut, home) >= 500 - 20
    # A second, larger one: the bound the first left (how far the first cell may lie
    # from home) is kept with the activity, so the circle still covers any start.
    (within,) = h.db.execute("SELECT start_within_m FROM activities").fetchone()
    assert within >= _far_from(cut, home) - 20
    h.send(athlete("a1", updated=at(20), hide_start_end_m=900))
    cut = path_of(h.db, "r1")
    assert len(cut) and _far_from(cut, home) >= 900 - 20


def test_removed_zone_adds_nothing_back(h: Harness, config: Config) -> None:
    zone = {"lat": MIDDLE[0], "lng": MIDDLE[1], "radius_m": 200}
    h.send(athlete("a1", updated=at(0), privacy_zones=[zone]), ride("r1", "a1", hours=1))
    with_zone = path_of(h.db, "r1")
    assert _far_from(with_zone, MIDDLE) > 200
    snap = dump(h.db)
    h.send(athlete("a1", updated=at(10), privacy_zones=[]))
    assert dump(h.db)["activities"] == snap["activities"]
    # A hide distance long enough to eat the whole ride leaves it empty and uncounted.
    h.send(athlete("a1", updated=at(20), hide_start_end_m=1609))
    assert row(h.db, "r1")["status"] == "empty" and len(path_of(h.db, "r1")) == 0
    assert months_of(h.db, "a1") == []


def test_activity_override_is_kept_when_the_athlete_default_grows(h: Harness) -> None:
    h.send(ride("r1", "a1", hide_start_end_m=0), ride("r2", "a1", NORTH, hours=1))
    own = path_of(h.db, "r1").tobytes()
    h.send(athlete("a1", updated=at(10), hide_start_end_m=800))
    # The activity set its own distance: the athlete default does not apply to it...
    assert path_of(h.db, "r1").tobytes() == own
    # ... while the one without an override was cut further.
    assert row(h.db, "r2")["cut_start_m"] >= 800


def test_the_public_store_refuses_items_it_does_not_write(fresh_db, config: Config) -> None:  # type: ignore[no-untyped-def]
    """A personal change handed to the public writer is an error, and the batch stays
    unwritten (it used to be skipped without a word)."""
    writer = StoreWriter.for_config(fresh_db, config)
    letter = DeadLetter("stream", 7, "bad record", "{}")
    with pytest.raises(TypeError, match="writes no str items"):
        writer.write_batch([letter, cast(Any, "a personal change")])
    assert fresh_db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0
    writer.write_batch([letter])
    assert fresh_db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 1


def test_an_older_stores_dead_letters_lose_their_coordinates_on_upgrade(tmp_path: Path) -> None:
    """A store from before masking kept a broken record's raw text: opening it with this
    version masks every coordinate there (migration m008), the rest of the text stays."""
    from heatmetro.state.store import connect

    raw = '{"kind":"activity","activity_id":"a-1","streams":{"latlng":[[42.3251,-72.6412]]}} x'
    db = connect(tmp_path / "0000.db")
    db.execute("INSERT INTO dead_letters VALUES ('f.jsonl', 7, 'invalid JSON', ?)", [raw])
    db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm008_mask_dead_letters'")
    db.conn.close()
    db = connect(tmp_path / "0000.db")
    (kept,) = db.execute("SELECT raw FROM dead_letters").fetchone()
    assert kept == '{"kind":"activity","activity_id":"a-1","streams":{"latlng":[[#,#]]}} x'


def test_an_older_stores_dead_letter_reasons_lose_their_coordinates_on_upgrade(
    tmp_path: Path,
) -> None:
    """Migration m010: reasons quoting a refused fix, and exponent-written numbers."""
    from heatmetro.state.store import connect

    reason = "activity a-1: latlng[1] = (42.320213, 200.5): longitude out of range"
    raw = '{"kind":"athlete","athlete_id":"550e8400","privacy_zones":[{"lat":4232011.3e-5}]}'
    db = connect(tmp_path / "0000.db")
    db.execute("INSERT INTO dead_letters VALUES ('f.jsonl', 7, ?, ?)", [reason, raw])
    db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm010_mask_dead_letter_reasons'")
    db.conn.close()
    db = connect(tmp_path / "0000.db")
    assert db.execute("SELECT reason, raw FROM dead_letters").fetchone() == (
        "activity a-1: latlng[1] = (#, 200.5): longitude out of range",
        '{"kind":"athlete","athlete_id":"550e8400","privacy_zones":[{"lat":#}]}',
    )


def test_an_older_stores_scaled_coordinates_are_masked_on_upgrade(tmp_path: Path) -> None:
    """Migration m011: coordinates scaled to integers (1e-5 degrees) are places too."""
    from heatmetro.state.store import connect

    reason = "activity a-1: latlng[0] = (6016991.0, 2493845.0): latitude out of range"
    raw = '{"kind":"activity","activity_id":"r-1234567","streams":{"latlng":[[6016991,2493845]]}}'
    db = connect(tmp_path / "0000.db")
    db.execute("INSERT INTO dead_letters VALUES ('f.jsonl', 7, ?, ?)", [reason, raw])
    db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm011_mask_scaled_coordinates'")
    db.conn.close()
    db = connect(tmp_path / "0000.db")
    assert db.execute("SELECT reason, raw FROM dead_letters").fetchone() == (
        "activity a-1: latlng[0] = (#, #): latitude out of range",
        '{"kind":"activity","activity_id":"r-1234567","streams":{"latlng":[[#,#]]}}',
    )
