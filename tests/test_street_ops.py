"""Hide-more on a stored street sequence: new zones and larger hide distances cut it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from heatmetro.state.path_ops import cut_path_ends
from heatmetro.state.records import PATH_DTYPE
from heatmetro.state.settings import EffectiveZone
from heatmetro.state.street_ops import STREET_DTYPE, recut_streets
from tests.street_tracks import HELSINKI, by_uid, helsinki

pytestmark = pytest.mark.skipif(not HELSINKI.is_file(), reason=f"{HELSINKI} is absent")
KIRKKOKATU = "36730359:343813967-324694810"
CYCLEWAY = "38966499:331822733-581077545"


def _blob(data: bytes | None) -> bytes:
    assert data is not None
    return data


def _seq(net, uids: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    s = np.zeros(len(uids), STREET_DTYPE)
    s["edge"] = [net.key[by_uid(net, u)] for u in uids]
    s["fwd"], s["t"], s["t_out"], s["v"] = 1, [0, 10, 20], [10, 20, 30], 5.0
    return s


NO_PATH = np.zeros(0, PATH_DTYPE)


def test_a_new_zone_drops_every_visit_to_an_edge_reaching_into_it(tmp_path: Path) -> None:
    net = helsinki(tmp_path)
    seq = _seq(net, [CYCLEWAY, KIRKKOKATU, CYCLEWAY])
    lat, lng = net.polyline(by_uid(net, KIRKKOKATU))
    zone = EffectiveZone(float(lat[-1]), float(lng[-1]), 5.0)  # touches only its far end
    out = np.frombuffer(
        _blob(recut_streets(seq.tobytes(), NO_PATH, NO_PATH, 0, 0, (zone,), net)),
        STREET_DTYPE,
    )
    assert [net.uid[net.index_of(out["edge"])[i]] for i in range(len(out))] == [CYCLEWAY, CYCLEWAY]
    # Without a base map to check against, a new zone drops the whole sequence.
    assert recut_streets(seq.tobytes(), NO_PATH, NO_PATH, 0, 0, (zone,), None) == b""


def test_a_larger_hide_distance_drops_visits_outside_the_cut_path(tmp_path: Path) -> None:
    net = helsinki(tmp_path)
    seq = _seq(net, [CYCLEWAY, KIRKKOKATU, CYCLEWAY])
    # An H3 path due east along one latitude, one cell every ~25 m, entered at t = 0..29.
    import h3

    cells: list[int] = []
    for i in range(60):
        c = h3.str_to_int(h3.latlng_to_cell(60.17, 24.94 + i * 0.0002, 11))
        if not cells or cells[-1] != c:
            cells.append(c)
    path = np.zeros(len(cells), PATH_DTYPE)
    path["cell"], path["t"] = cells, np.linspace(0, 30, len(cells))
    out = np.frombuffer(
        _blob(recut_streets(seq.tobytes(), path, cut_path_ends(path, 200, 0), 200.0, 0.0, (), net)),
        STREET_DTYPE,
    )
    assert len(out) and out["t"].min() > 0  # the first visit went with the hidden start
    out = np.frombuffer(
        _blob(recut_streets(seq.tobytes(), path, cut_path_ends(path, 0, 200), 0.0, 200.0, (), net)),
        STREET_DTYPE,
    )
    assert len(out) and out["t_out"].max() < 30  # the last visit went with the hidden end
    assert recut_streets(seq.tobytes(), path, path, 0.0, 0.0, (), net) == seq.tobytes()


def test_the_store_cuts_street_sequences_when_an_athlete_hides_more(
    tmp_path: Path, fresh_db
) -> None:  # type: ignore[no-untyped-def]
    """Through the real fold and writer: a later zone, a larger hide distance and an
    opt-out each cut what is stored (the zone's jitter is applied, as on ingest)."""
    from datetime import UTC, datetime

    import orjson

    from heatmetro.core.config import load_config
    from heatmetro.core.contract import parse_event
    from heatmetro.flows.fold import AthleteFold
    from heatmetro.state.writer import StoreWriter
    from tests.conftest import TEST_SALT, public_items
    from tests.streams import activity, athlete
    from tests.street_tracks import noisy_track, route_through

    config = load_config(None, state_dir=tmp_path / "state", base_map=HELSINKI, salt=TEST_SALT)
    net = helsinki(config.state_dir)
    fold, writer = AthleteFold(config), StoreWriter.for_config(fresh_db, config)
    settings = None

    def send(event: dict) -> None:  # type: ignore[type-arg]
        nonlocal settings
        settings, items = fold.apply(settings, parse_event(orjson.dumps(event)))
        writer.write_batch(public_items(items))

    def stored() -> list[str]:
        (blob,) = fresh_db.execute("SELECT streets FROM activities").fetchone()
        idx = net.index_of(np.frombuffer(blob or b"", STREET_DTYPE)["edge"])
        return [str(net.uid[i]) for i in idx]

    def later(day: int) -> datetime:
        return datetime(2021, 7, day, tzinfo=UTC)

    route = route_through(net, by_uid(net, KIRKKOKATU), True, bike=True)
    send(athlete("a", hide_start_end_m=0))
    send(activity("r1", "a", noisy_track(net, route, seed=9)))
    first = stored()
    assert KIRKKOKATU in first and len(first) > 10
    lat, lng = net.polyline(by_uid(net, KIRKKOKATU))
    zone = {"lat": float(lat[len(lat) // 2]), "lng": float(lng[len(lng) // 2]), "radius_m": 20}
    send(athlete("a", hide_start_end_m=0, privacy_zones=[zone], updated=later(1)))
    after_zone = stored()
    assert KIRKKOKATU not in after_zone and 0 < len(after_zone) < len(first)
    send(athlete("a", hide_start_end_m=300, privacy_zones=[zone], updated=later(2)))
    after_hide = stored()
    assert len(after_hide) < len(after_zone) and set(after_hide) <= set(after_zone)
    send(athlete("a", aggregate_opt_out=True, updated=later(3)))
    assert stored() == []
