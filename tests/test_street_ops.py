"""Hide-more on a stored street sequence: new zones and larger hide distances cut it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from heatmetro.state.records import PATH_DTYPE
from heatmetro.state.settings import EffectiveZone
from heatmetro.state.street_ops import STREET_DTYPE, recut_streets
from tests.street_tracks import HELSINKI, by_uid, helsinki

pytestmark = pytest.mark.skipif(not HELSINKI.is_file(), reason=f"{HELSINKI} is absent")
KIRKKOKATU = "36730359:343813967-324694810"
CYCLEWAY = "38966499:331822733-581077545"


def _seq(net, uids: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    s = np.zeros(len(uids), STREET_DTYPE)
    s["edge"] = [net.key[by_uid(net, u)] for u in uids]
    s["fwd"], s["t"], s["t_out"], s["v"] = 1, [0, 10, 20], [10, 20, 30], 5.0
    return s


def test_a_new_zone_drops_every_visit_to_an_edge_reaching_into_it(tmp_path: Path) -> None:
    net = helsinki(tmp_path)
    seq = _seq(net, [CYCLEWAY, KIRKKOKATU, CYCLEWAY])
    lat, lng = net.polyline(by_uid(net, KIRKKOKATU))
    zone = EffectiveZone(float(lat[-1]), float(lng[-1]), 5.0)  # touches only its far end
    out = np.frombuffer(
        recut_streets(seq.tobytes(), np.zeros(0, PATH_DTYPE), 0, 0, (zone,), net), STREET_DTYPE
    )
    assert [net.uid[net.index_of(out["edge"])[i]] for i in range(len(out))] == [CYCLEWAY, CYCLEWAY]
    # Without a base map to check against, a new zone drops the whole sequence.
    assert recut_streets(seq.tobytes(), np.zeros(0, PATH_DTYPE), 0, 0, (zone,), None) == b""


def test_a_larger_hide_distance_drops_visits_outside_the_cut_path(tmp_path: Path) -> None:
    net = helsinki(tmp_path)
    seq = _seq(net, [CYCLEWAY, KIRKKOKATU, CYCLEWAY])
    # An H3 path due east along one latitude, one cell every ~25 m, entered at t = 0..29.
    import h3

    cells = []
    for i in range(60):
        c = h3.str_to_int(h3.latlng_to_cell(60.17, 24.94 + i * 0.0002, 11))
        if not cells or cells[-1] != c:
            cells.append(c)
    path = np.zeros(len(cells), PATH_DTYPE)
    path["cell"], path["t"] = cells, np.linspace(0, 30, len(cells))
    out = np.frombuffer(recut_streets(seq.tobytes(), path, 200.0, 0.0, (), net), STREET_DTYPE)
    assert len(out) and out["t"].min() > 0  # the first visit went with the hidden start
    out = np.frombuffer(recut_streets(seq.tobytes(), path, 0.0, 200.0, (), net), STREET_DTYPE)
    assert len(out) and out["t_out"].max() < 30  # the last visit went with the hidden end
    assert recut_streets(seq.tobytes(), path, 0.0, 0.0, (), net) == seq.tobytes()
