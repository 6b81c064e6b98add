"""Noisy GPS tracks routed along the real streets of an OSM extract (seeded), for tests.

A route is given as street edges with the direction travelled; the track follows their
polylines at a steady speed, one fix a second, with Gaussian noise of ``sigma_m``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from heatmetro.flows.map_match import avoided_edges
from heatmetro.state.street_network import BOTH, FWD, REV, StreetNetwork, load_network
from tests.conftest import SHARED_DATA

HELSINKI = SHARED_DATA / "osm" / "helsinki.osm.pbf"

Route = list[tuple[int, bool]]  # (edge index, forward)


def helsinki(state_dir: Path) -> StreetNetwork:
    return load_network(HELSINKI, state_dir)


def by_uid(net: StreetNetwork, uid: str) -> int:
    hits = np.flatnonzero(net.uid == uid)
    assert len(hits) == 1, f"edge {uid} not in the extract"
    return int(hits[0])


def _graph(
    net: StreetNetwork, bike: bool, skip: int = -1, detour: np.ndarray | None = None
) -> tuple[csr_matrix, dict[tuple[int, int], int]]:
    allowed = net.bike.astype(int) if bike else np.full(len(net), BOTH)
    # Edges the traveller keeps off: taken only when the way round is 10 times as long.
    weight = net.length_m * np.where(detour, 10.0, 1.0) if detour is not None else net.length_m
    arcs: dict[tuple[int, int], int] = {}
    for e in np.argsort(weight)[::-1].tolist():  # shortest parallel edge wins
        if e == skip:
            continue
        if allowed[e] & FWD:
            arcs[(int(net.u[e]), int(net.v[e]))] = e
        if allowed[e] & REV:
            arcs[(int(net.v[e]), int(net.u[e]))] = e
    rows, cols = zip(*arcs, strict=True)
    w = [max(float(weight[e]), 1e-6) for e in arcs.values()]
    n = net.n_nodes
    return csr_matrix((w, (rows, cols)), shape=(n, n)), arcs


def route_through(
    net: StreetNetwork,
    edge: int,
    forward: bool,
    *,
    bike: bool,
    around_m: float = 250.0,
    detour: np.ndarray | None = None,
) -> Route:
    """A route that rides ``edge`` in the given direction, with about ``around_m`` of
    streets before and after it (shortest paths to the nodes nearest that far away).
    ``detour``: per edge, whether the traveller keeps off it where another way exists;
    by default the edges the matcher's mode avoids (a walker takes the sidewalk where one
    is mapped, a cyclist the road or the cycle track)."""
    if detour is None:
        detour = avoided_edges(net, "bike" if bike else "foot")
    graph, arcs = _graph(net, bike, skip=edge, detour=detour)  # no U-turn back over the edge
    entry = int(net.u[edge] if forward else net.v[edge])
    exit_ = int(net.v[edge] if forward else net.u[edge])

    def far_node(dist: np.ndarray, avoid: int) -> int:
        score = np.abs(dist - around_m)
        score[~np.isfinite(dist)] = np.inf
        score[avoid] = np.inf
        return int(np.argmin(score))

    def walk(pred: np.ndarray, src: int, dst: int) -> list[int]:
        nodes = [dst]
        while nodes[-1] != src:
            nodes.append(int(pred[nodes[-1]]))
        return nodes[::-1]

    d_before, p_before = dijkstra(graph.T.tocsr(), indices=entry, return_predecessors=True)
    start = far_node(d_before, exit_)
    before = walk(p_before, entry, start)[::-1]  # start ... entry (reverse graph)
    # The way on must not come back over the way in (a real ride rarely loops at once).
    ahead = graph.tolil()
    for node in before:
        ahead[node, :] = 0
        ahead[:, node] = 0
    d_after, p_after = dijkstra(ahead.tocsr(), indices=exit_, return_predecessors=True)
    end = far_node(d_after, entry)
    after = walk(p_after, exit_, end)
    route: Route = []
    for a, b in zip(before[:-1], before[1:], strict=True):
        e = arcs[(a, b)]
        route.append((e, int(net.u[e]) == a))
    route.append((edge, forward))
    for a, b in zip(after[:-1], after[1:], strict=True):
        e = arcs[(a, b)]
        route.append((e, int(net.u[e]) == a))
    return route


def route_points(net: StreetNetwork, route: Route) -> tuple[np.ndarray, np.ndarray]:
    """The route's polyline (lat, lng), vertices in travel order."""
    lats: list[np.ndarray] = []
    lngs: list[np.ndarray] = []
    for e, fwd in route:
        la, ln = net.polyline(e)
        if not fwd:
            la, ln = la[::-1], ln[::-1]
        lats.append(la if not lats else la[1:])
        lngs.append(ln if not lngs else ln[1:])
    return np.concatenate(lats), np.concatenate(lngs)


def noisy_track(
    net: StreetNetwork, route: Route, *, seed: int, speed_ms: float = 5.0, sigma_m: float = 5.0
) -> list[list[float]]:
    """Fixes every second along ``route`` at ``speed_ms`` with N(0, sigma_m) noise."""
    lat, lng = route_points(net, route)
    k = 111_195.0
    y, x = lat * k, lng * k * np.cos(np.radians(lat[0]))
    along = np.concatenate(([0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))))
    s = np.arange(0.0, along[-1], speed_ms)
    rng = np.random.default_rng(seed)
    px = np.interp(s, along, x) + rng.normal(0, sigma_m, len(s))
    py = np.interp(s, along, y) + rng.normal(0, sigma_m, len(s))
    out_lat = py / k
    out_lng = px / (k * np.cos(np.radians(lat[0])))
    return [
        [round(a, 7), round(b, 7)] for a, b in zip(out_lat.tolist(), out_lng.tolist(), strict=True)
    ]
