"""The OSM street base map: read a ``.osm.pbf`` once, cut ways into street edges, cache.

A street edge is the part of an OSM way between two intersections (nodes shared by two
or more routable ways, or met twice by one way) or the way's ends, as Strava Metro
counts. ``forward`` is the way's digitised direction.

Parsing a city extract takes seconds, so the result is cached as a plain ``.npz`` (no
pickle) next to the store, named after the pbf's sha256: ingest workers and snapshots
load it in milliseconds, and a new extract gets a new cache file.

The network lives in ``state`` because three layers need it: ingest matches tracks to
it, "hide more" cuts stored street sequences with its geometry, and the snapshot writes
its names and polylines.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from heatmetro.core.config import Config
from heatmetro.core.errors import ConfigError
from heatmetro.core.geo import EARTH_RADIUS_M

CACHE_VERSION = 2  # 2: the footway, bicycle and foot tags (mode preferences in matching)
ATTRIBUTION = "© OpenStreetMap contributors"
LICENSE = "ODbL 1.0 (https://www.openstreetmap.org/copyright)"

# Highway values nobody rides or walks along (motorways, things under construction,
# platforms, lifts ...). Everything else tagged ``highway`` is a street or path.
NOT_ROUTABLE = frozenset(
    {
        "motorway", "motorway_link", "trunk_link", "construction", "proposed", "planned",
        "abandoned", "razed", "platform", "elevator", "corridor", "raceway", "bus_guideway",
        "busway", "services", "rest_area", "escape", "emergency_bay", "via_ferrata", "no",
    }
)  # fmt: skip
FOOT_ONLY = frozenset({"steps", "footway_steps"})
ONEWAY_YES = frozenset({"yes", "true", "1"})

# Per-edge direction rules for vehicles (bikes): bit 0 forward allowed, bit 1 reverse.
FWD, REV, BOTH = 1, 2, 3


@dataclass(frozen=True, eq=False)  # hashed by identity (cached per process)
class StreetNetwork:
    """Street edges as parallel arrays (edge ``i`` is row ``i`` everywhere).

    Attributes:
        key: stable 64-bit id of each edge (BLAKE2b of ``edge_uid``); stored per activity.
        uid: ``"{way_id}:{first_node}-{last_node}"``.
        way_id: the OSM way (published as ``osm_reference_id``).
        name, highway, oneway: the way's tags (``oneway`` as tagged, "" when absent).
        footway, bicycle, foot: the way's tags of those names ("" when absent): what
            kind of footway (``sidewalk``, ``crossing`` ...) and who may use it.
        bike: allowed directions for bikes (``FWD``/``REV``/``BOTH``; 0 = no bikes).
        u, v: graph node index of the first and last node.
        length_m: polyline length.
        offsets: polyline of edge ``i`` is ``lat/lng[offsets[i]:offsets[i + 1]]``.
        lat, lng: polyline vertices (degrees).
        sha256: of the pbf this was read from.
    """

    key: np.ndarray
    uid: np.ndarray
    way_id: np.ndarray
    name: np.ndarray
    highway: np.ndarray
    oneway: np.ndarray
    footway: np.ndarray
    bicycle: np.ndarray
    foot: np.ndarray
    bike: np.ndarray
    u: np.ndarray
    v: np.ndarray
    length_m: np.ndarray
    offsets: np.ndarray
    lat: np.ndarray
    lng: np.ndarray
    sha256: str

    def __len__(self) -> int:
        return len(self.key)

    @property
    def n_nodes(self) -> int:
        return int(max(self.u.max(initial=-1), self.v.max(initial=-1))) + 1

    def polyline(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(lat, lng) vertices of edge ``i`` in the way's direction."""
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.lat[a:b], self.lng[a:b]

    def index_of(self, keys: np.ndarray) -> np.ndarray:
        """Edge index of each stored key, -1 for keys this network lacks."""
        order = np.argsort(self.key)
        sk = self.key[order]
        pos = np.clip(np.searchsorted(sk, keys), 0, max(len(sk) - 1, 0))
        found = (sk[pos] == keys) if len(sk) else np.zeros(len(keys), dtype=bool)
        return np.where(found, order[pos] if len(sk) else -1, -1)

    def edges_touching(self, lat: float, lng: float, radius_m: float) -> np.ndarray:
        """Boolean mask of edges whose polyline comes within ``radius_m`` of a point."""
        x, y = project(self.lat, self.lng, lat)
        (px,), (py,) = project(np.array([lat]), np.array([lng]), lat)
        d = segment_distances(x, y, px, py)  # pair i joins vertex i and i + 1
        pair_edge = np.repeat(np.arange(len(self)), np.diff(self.offsets))[:-1]
        inside = np.ones(len(d), dtype=bool)
        inside[self.offsets[1:-1] - 1] = False  # pairs that join two different edges
        hit = np.zeros(len(self), dtype=bool)
        hit[pair_edge[inside & (d <= radius_m)]] = True
        return hit


def project(lat: np.ndarray, lng: np.ndarray, lat0: float) -> tuple[np.ndarray, np.ndarray]:
    """Local equirectangular metres (x east, y north) around latitude ``lat0``.

    Good to a few centimetres over a city, which is all matching and zone tests need.
    """
    k = np.pi / 180.0 * EARTH_RADIUS_M
    return lng * (k * np.cos(np.radians(lat0))), lat * k


def segment_distances(x: np.ndarray, y: np.ndarray, px: float, py: float) -> np.ndarray:
    """Distance from (px, py) to each segment ``(x[i], y[i]) - (x[i+1], y[i+1])``."""
    ax, ay, bx, by = x[:-1], y[:-1], x[1:], y[1:]
    dx, dy = bx - ax, by - ay
    ll = dx * dx + dy * dy
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.clip(np.where(ll > 0, ((px - ax) * dx + (py - ay) * dy) / ll, 0.0), 0.0, 1.0)
    return np.hypot(ax + f * dx - px, ay + f * dy - py)


def edge_key(uid: str) -> int:
    return int.from_bytes(hashlib.blake2b(uid.encode(), digest_size=8).digest(), "little")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bike_rule(tags: dict[str, str]) -> int:
    hw = tags.get("highway", "")
    if hw in FOOT_ONLY or tags.get("bicycle") in ("no", "dismount"):
        return 0
    if tags.get("oneway:bicycle") == "no" or tags.get("cycleway", "").startswith("opposite"):
        return BOTH
    ow = tags.get("oneway:bicycle") or tags.get("oneway", "")
    if hw == "motorway" or tags.get("junction") == "roundabout":
        ow = ow or "yes"
    if ow in ONEWAY_YES:
        return FWD
    if ow == "-1":
        return REV
    return BOTH


def _routable(tags: dict[str, str]) -> bool:
    hw = tags.get("highway")
    if not hw or hw in NOT_ROUTABLE or tags.get("area") == "yes":
        return False
    if tags.get("access") in ("no", "private"):
        return tags.get("bicycle") in ("yes", "designated") or tags.get("foot") in (
            "yes",
            "designated",
        )
    return True


def parse_pbf(path: Path) -> StreetNetwork:
    """Read every routable way of ``path`` with pyosmium and cut it at intersections."""
    import osmium  # only needed when a base map is configured and not yet cached

    ways: list[tuple[int, list[int], list[float], list[float], dict[str, str]]] = []
    try:
        fp = (
            osmium.FileProcessor(str(path))
            .with_locations()
            .with_filter(osmium.filter.KeyFilter("highway"))
        )
        for obj in fp:
            if not isinstance(obj, osmium.osm.Way):
                continue
            tags = {t.k: t.v for t in obj.tags}
            if not _routable(tags):
                continue
            ids, lats, lngs = [], [], []
            for n in obj.nodes:
                if not n.location.valid():
                    continue  # a node outside the extract: the way is cut there
                ids.append(n.ref)
                lats.append(n.location.lat)
                lngs.append(n.location.lon)
            if len(ids) >= 2:
                ways.append((obj.id, ids, lats, lngs, tags))
    except RuntimeError as exc:
        msg = f"base_map {path}: cannot read it as OSM data: {exc}"
        raise ConfigError(msg) from None
    return _build(ways, file_sha256(path))


def _build(
    ways: list[tuple[int, list[int], list[float], list[float], dict[str, str]]], sha: str
) -> StreetNetwork:
    ways.sort(key=lambda w: w[0])  # deterministic whatever order the file had
    use: dict[int, int] = {}
    for _, ids, *_ in ways:
        for n in ids:
            use[n] = use.get(n, 0) + 1
        use[ids[0]] += 1  # way ends always cut
        use[ids[-1]] += 1
    node_index: dict[int, int] = {}
    names = ("uid", "way", "name", "hw", "ow", "footway", "bicycle", "foot", "bike", "u", "v")
    cols: dict[str, list] = {k: [] for k in names}  # type: ignore[type-arg]
    lat_parts: list[list[float]] = []
    lng_parts: list[list[float]] = []
    seen: set[str] = set()
    for way_id, ids, lats, lngs, tags in ways:
        start = 0
        for j in range(1, len(ids)):
            if use[ids[j]] < 2 and j < len(ids) - 1:
                continue
            uid = f"{way_id}:{ids[start]}-{ids[j]}"
            k = 2
            while uid in seen:  # a way passing the same node pair twice
                uid = f"{way_id}:{ids[start]}-{ids[j]}#{k}"
                k += 1
            seen.add(uid)
            cols["uid"].append(uid)
            cols["way"].append(way_id)
            cols["name"].append(tags.get("name", ""))
            cols["hw"].append(tags.get("highway", ""))
            cols["ow"].append(tags.get("oneway", ""))
            for tag in ("footway", "bicycle", "foot"):
                cols[tag].append(tags.get(tag, ""))
            cols["bike"].append(_bike_rule(tags))
            cols["u"].append(node_index.setdefault(ids[start], len(node_index)))
            cols["v"].append(node_index.setdefault(ids[j], len(node_index)))
            lat_parts.append(lats[start : j + 1])
            lng_parts.append(lngs[start : j + 1])
            start = j
    sizes = np.array([len(p) for p in lat_parts], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    lat = np.array([x for p in lat_parts for x in p], dtype=np.float64)
    lng = np.array([x for p in lng_parts for x in p], dtype=np.float64)
    steps = _step_m(lat, lng)
    seg_len = np.append(steps, 0.0)
    seg_len[offsets[1:] - 1] = 0.0  # no length between one edge's end and the next's start
    cum = np.concatenate(([0.0], np.cumsum(seg_len)))
    length = cum[offsets[1:] - 1] - cum[offsets[:-1]]
    return StreetNetwork(
        key=np.array([edge_key(u) for u in cols["uid"]], dtype=np.uint64),
        uid=np.array(cols["uid"], dtype=str),
        way_id=np.array(cols["way"], dtype=np.int64),
        name=np.array(cols["name"], dtype=str),
        highway=np.array(cols["hw"], dtype=str),
        oneway=np.array(cols["ow"], dtype=str),
        footway=np.array(cols["footway"], dtype=str),
        bicycle=np.array(cols["bicycle"], dtype=str),
        foot=np.array(cols["foot"], dtype=str),
        bike=np.array(cols["bike"], dtype=np.int8),
        u=np.array(cols["u"], dtype=np.int64),
        v=np.array(cols["v"], dtype=np.int64),
        length_m=length,
        offsets=offsets,
        lat=lat,
        lng=lng,
        sha256=sha,
    )


def _step_m(lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    from heatmetro.core.geo import step_lengths_m

    return step_lengths_m(lat, lng) if len(lat) > 1 else np.zeros(0)


_FIELDS = (
    "key", "uid", "way_id", "name", "highway", "oneway", "footway", "bicycle", "foot", "bike",
    "u", "v", "length_m", "offsets", "lat", "lng",
)  # fmt: skip


def cache_path(state_dir: Path, sha: str) -> Path:
    return state_dir / "streets" / f"network-v{CACHE_VERSION}-{sha[:32]}.npz"


def network_for(config: Config) -> StreetNetwork | None:
    """The configured base map's network, or None without one."""
    if config.base_map is None:
        return None
    return load_network(config.base_map, config.state_dir)


def load_network(base_map: Path, state_dir: Path) -> StreetNetwork:
    """The network of ``base_map``, from the cache beside the store when it is there."""
    return _load(str(base_map), str(state_dir), _fingerprint(base_map))


def _fingerprint(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        msg = f"base_map {path}: no such file (an OpenStreetMap .osm.pbf extract)"
        raise ConfigError(msg) from None
    return (st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4)
def _load(base_map: str, state_dir: str, _stamp: tuple[int, int]) -> StreetNetwork:
    path = Path(base_map)
    sha = file_sha256(path)
    cache = cache_path(Path(state_dir), sha)
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            return StreetNetwork(**{f: z[f] for f in _FIELDS}, sha256=sha)
    net = parse_pbf(path)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **{f: getattr(net, f) for f in _FIELDS})
    tmp.replace(cache)  # atomic: another worker may be writing the same file
    return net
