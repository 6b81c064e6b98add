"""The OSM street network read from the real Helsinki extract, against a plain reference.

An edge must run from an intersection (or a way's end) to the next one, with no
intersection inside it; the parse is cached by the pbf's sha256 and never repeated.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import osmium
import pytest

from heatmetro.state import street_network as sn
from tests.street_tracks import HELSINKI

pytestmark = pytest.mark.skipif(not HELSINKI.is_file(), reason=f"{HELSINKI} is absent")


def reference_intersections() -> tuple[set[tuple[float, float]], int]:
    """Positions of nodes on two or more routable ways (or twice on one), and how many
    routable ways there are: read plainly with osmium, one object at a time."""
    uses: dict[int, int] = {}
    where: dict[int, tuple[float, float]] = {}
    ways = 0
    for obj in osmium.FileProcessor(str(HELSINKI)).with_locations():
        if not isinstance(obj, osmium.osm.Way) or not sn._routable(dict(obj.tags)):
            continue
        nodes = [n for n in obj.nodes if n.location.valid()]
        if len(nodes) < 2:
            continue
        ways += 1
        for n in nodes:
            uses[n.ref] = uses.get(n.ref, 0) + 1
            where[n.ref] = (n.location.lat, n.location.lon)
    return {where[n] for n, k in uses.items() if k >= 2}, ways


def test_edges_run_between_intersections_with_none_inside() -> None:
    net = sn.parse_pbf(HELSINKI)
    crossings, ways = reference_intersections()
    assert len(set(net.way_id.tolist())) == ways
    inner = np.ones(len(net.lat), dtype=bool)
    inner[net.offsets[:-1]] = False
    inner[net.offsets[1:] - 1] = False
    inside = {(a, b) for a, b in zip(net.lat[inner].tolist(), net.lng[inner].tolist(), strict=True)}
    assert not inside & crossings, "an edge runs through an intersection"
    ends = set(
        zip(net.lat[net.offsets[:-1]].tolist(), net.lng[net.offsets[:-1]].tolist(), strict=True)
    )
    assert crossings <= ends | set(
        zip(
            net.lat[net.offsets[1:] - 1].tolist(),
            net.lng[net.offsets[1:] - 1].tolist(),
            strict=True,
        )
    )
    # edge_uid names the way and the two end nodes; keys are unique.
    way, nodes = np.char.partition(net.uid, ":")[:, 0], np.char.partition(net.uid, ":")[:, 2]
    assert (way.astype(np.int64) == net.way_id).all() and all("-" in n for n in nodes)
    assert len(np.unique(net.key)) == len(net) == len(np.unique(net.uid))


def test_the_parse_is_cached_by_sha256_and_reused(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pbf = tmp_path / "city.osm.pbf"
    shutil.copy(HELSINKI, pbf)
    first = sn.load_network(pbf, tmp_path / "state")
    (cache,) = (tmp_path / "state" / "streets").glob("*.npz")
    assert sn.file_sha256(pbf)[:32] in cache.name

    def no_parse(path: Path) -> sn.StreetNetwork:
        msg = f"parsed {path} again"
        raise AssertionError(msg)

    monkeypatch.setattr(sn, "parse_pbf", no_parse)
    sn._load.cache_clear()  # a new process: only the file cache is left
    again = sn.load_network(pbf, tmp_path / "state")
    assert again is not first
    for field in sn._FIELDS:
        assert np.array_equal(getattr(again, field), getattr(first, field)), field
