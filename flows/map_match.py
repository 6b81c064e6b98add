"""Hidden-Markov map matching of a trimmed track to the street network (Newson & Krumm 2009).

States are positions on candidate street edges near each fix; the emission is a Gaussian
on the fix-to-edge distance (``SIGMA_M``), the transition ``exp(-|route - great circle| /
BETA_M)`` where *route* is the shortest way along the streets between the two positions.
Viterbi picks the likeliest sequence; the route between consecutive states fills in the
edges travelled without a fix on them.

Bikes (``ride`` layer) obey one-way tags in the routes they may take; people on foot do
not. Why hand-written rather than a library: the maintained matchers pull in heavy
stacks (osmnx, geopandas, an external routing server) or are pure Python per point;
this one is numpy, a KD-tree and SciPy's C Dijkstra, and its work is bounded:

* fixes are thinned to one per ``THIN_M`` of movement (Newson & Krumm thin to 2 sigma),
* at most ``MAX_CANDIDATES`` edges within ``RADIUS_M`` per fix,
* routes are searched in a small subgraph around each chunk of fixes, and no longer
  than ``MAX_ROUTE_M``; a fix with no candidate, or no route from the previous one,
  breaks the chain, so an activity far from every street matches nothing.

So the cost grows linearly with the fixes (plus the KD-tree's log), whatever the track.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from heatmetro.core.config import Config
from heatmetro.state.settings import EffectiveZone
from heatmetro.state.street_network import BOTH, FWD, REV, StreetNetwork, network_for, project
from heatmetro.state.street_ops import STREET_DTYPE, drop_zone_edges

if TYPE_CHECKING:
    from scipy.spatial import cKDTree

# SciPy is imported where a network is matched, not here: loading it costs ~0.4 s of
# CPU per process (it pulls in numpy.f2py), and most ingests have no street network.

SIGMA_M = 7.0  # GPS noise (emission)
BETA_M = 8.0  # tolerated difference between route and straight-line distance (transition)
RADIUS_M = 40.0  # candidate edges within this of a fix
MAX_CANDIDATES = 6
THIN_M = 12.0
CHUNK = 96  # fixes per routing subgraph
MAX_ROUTE_M = 1500.0
SEG_M = 25.0  # edges are cut into pieces this long for the KD-tree
NOISE_BACK_M = 15.0  # on a one-way edge, moving back this little is GPS noise, not travel
MIN_NET_M = 15.0
SMOOTH_FIXES = 3  # fixes averaged before matching (see _smooth)
SPUR_M = 30.0  # out-and-back hops shorter than this are noise (see _cancel_spurs)  # a track inside one edge must move this far along it to have a direction
# Where a city maps its sidewalks and cycle tracks as ways of their own, they run a few
# metres from the carriageway: closer than GPS can tell apart. What tells them apart is
# who travels where. An edge the mode is not meant to use costs this much log-likelihood
# per fix (a fix ~7 m farther at SIGMA_M), so it is chosen only when the fixes clearly
# lie on it; where it is the only street in reach, the penalty changes nothing.
AVOID_LOGP = 1.5
# The same preference for the streets routed between two fixes, where no fix lies to pay
# it: a metre of an avoided edge costs this many metres in the transition. Without it a
# route cut a junction's corner through a crossing's footway (a bike) or a road (a
# walker), and those 5-10 m pieces got counts nobody travelled along.
AVOID_ROUTE_FACTOR = 3.0
# Carriageways people on foot walk beside, not on (when a sidewalk is mapped in reach).
_ROADS = frozenset(
    {
        "trunk", "trunk_link", "primary", "primary_link", "secondary", "secondary_link",
        "tertiary", "tertiary_link", "unclassified", "residential",
    }
)  # fmt: skip
# Ways for people on foot, where bikes go only when signed (bicycle=yes/designated).
# Not ``path`` or ``track``: mountain bikes and gravel bikes ride them unsigned.
_FOOTWAYS = frozenset({"footway", "pedestrian", "bridleway", "corridor"})
_SIGNED = ("yes", "designated", "permissive")


@dataclass(frozen=True, eq=False)
class Graph:
    """One travel mode's view of the network: which edges, which directions."""

    net: StreetNetwork
    allowed: np.ndarray  # per edge: FWD | REV bits (0 = not usable)
    avoid: np.ndarray  # per edge: log-likelihood taken from a fix matched to it
    lat0: float
    x: np.ndarray  # projected polyline vertices
    y: np.ndarray
    piece_edge: np.ndarray  # KD-tree pieces: edge, start vertex, fractions along the segment
    piece_a: np.ndarray
    tree: cKDTree
    cum: np.ndarray  # along-edge distance of each vertex from its edge's start
    bbox: np.ndarray  # per edge: min x, min y, max x, max y


@lru_cache(maxsize=4)
def graph_for(net: StreetNetwork, mode: str) -> Graph:
    """The (cached) matching graph of ``net`` for ``"bike"`` or ``"foot"``."""
    from scipy.spatial import cKDTree

    allowed = net.bike.astype(np.int64) if mode == "bike" else np.full(len(net), BOTH)
    lat0 = float(np.mean(net.lat)) if len(net.lat) else 0.0
    x, y = project(net.lat, net.lng, lat0)
    seg_edge = np.repeat(np.arange(len(net)), np.diff(net.offsets))[:-1]
    ok = np.ones(max(len(x) - 1, 0), dtype=bool)
    ok[net.offsets[1:-1] - 1] = False
    ok &= allowed[seg_edge] > 0
    a = np.flatnonzero(ok)
    dx, dy = x[a + 1] - x[a], y[a + 1] - y[a]
    seg_len = np.hypot(dx, dy)
    step = np.hypot(np.diff(x), np.diff(y)) if len(x) > 1 else np.zeros(0)
    step_in = np.where(np.isin(np.arange(len(step)), net.offsets[1:-1] - 1), 0.0, step)
    cum_all = np.concatenate(([0.0], np.cumsum(step_in)))
    cum = cum_all - np.repeat(cum_all[net.offsets[:-1]], np.diff(net.offsets))
    # Pieces no longer than SEG_M, indexed by their midpoints.
    n_pieces = np.maximum(np.ceil(seg_len / SEG_M).astype(np.int64), 1)
    seg_of = np.repeat(np.arange(len(a)), n_pieces)
    k = np.arange(len(seg_of)) - np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces)
    f = (k + 0.5) / n_pieces[seg_of]
    mx, my = x[a][seg_of] + f * dx[seg_of], y[a][seg_of] + f * dy[seg_of]
    bb = np.zeros((len(net), 4))
    for j, (fn, init) in enumerate(((np.minimum, np.inf), (np.maximum, -np.inf))):
        for c, arr in enumerate((x, y)):
            out = np.full(len(net), init)
            fn.at(out, np.repeat(np.arange(len(net)), np.diff(net.offsets)), arr)
            bb[:, 2 * j + c] = out
    return Graph(
        net=net,
        allowed=allowed,
        avoid=np.where(avoided_edges(net, mode), AVOID_LOGP, 0.0),
        lat0=lat0,
        x=x,
        y=y,
        piece_edge=seg_edge[a][seg_of],
        piece_a=a[seg_of],
        tree=cKDTree(np.column_stack([mx, my]) if len(mx) else np.zeros((0, 2))),
        cum=cum,
        bbox=bb,
    )


def avoided_edges(net: StreetNetwork, mode: str) -> np.ndarray:
    """Per edge, whether ``mode`` keeps off it when a street of its own lies in reach.

    On foot: a road's carriageway (the sidewalk beside it is the way), a cycleway
    not signed for walkers, and ``foot=no``. By bike: footways and pedestrian streets
    not signed for bikes, and roads tagged ``bicycle=use_sidepath`` (the cycle track
    beside them is the way). Nothing is forbidden: on a street with no sidewalk mapped,
    the walker is matched to the road.
    """
    hw = net.highway
    if mode == "bike":
        foot_only = np.isin(hw, list(_FOOTWAYS)) & ~np.isin(net.bicycle, _SIGNED)
        return np.asarray(foot_only | (net.bicycle == "use_sidepath"))
    cycle_only = (hw == "cycleway") & ~np.isin(net.foot, _SIGNED)
    return np.asarray(np.isin(hw, list(_ROADS)) | cycle_only | (net.foot == "no"))


def mode_for_layer(layer: str) -> str | None:
    """Bikes keep to one-way rules; water sports are not matched to streets."""
    if layer == "ride":
        return "bike"
    if layer == "water":
        return None
    return "foot"


def match_activity(
    net: StreetNetwork,
    mode: str,
    lat: np.ndarray,
    lng: np.ndarray,
    t: np.ndarray,
    piece: np.ndarray,
) -> np.ndarray:
    """The street sequence (``STREET_DTYPE``) of a trimmed track, piece by piece."""
    g = graph_for(net, mode)
    out = []
    if len(lat) == 0 or len(g.piece_edge) == 0:
        return np.zeros(0, STREET_DTYPE)
    x, y = project(np.asarray(lat, np.float64), np.asarray(lng, np.float64), g.lat0)
    t = np.asarray(t, np.float64)
    bounds = np.flatnonzero(np.r_[True, piece[1:] != piece[:-1], True])
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        px, py = x[a:b], y[a:b]
        if b - a > 2 and np.median(np.hypot(np.diff(px), np.diff(py))) < THIN_M:
            px, py = _smooth(px), _smooth(py)  # dense fixes: noise is a good part of a step
        keep = _thin(px, py)
        out.extend(_match_piece(g, px[keep], py[keep], t[a:b][keep]))
    arr = np.zeros(len(out), STREET_DTYPE)
    if out:
        e, fwd, t_in, t_out, v = zip(*out, strict=True)
        arr["edge"] = net.key[np.array(e, dtype=np.int64)]
        arr["fwd"], arr["t"], arr["t_out"], arr["v"] = fwd, t_in, t_out, v
    return arr


def _smooth(v: np.ndarray) -> np.ndarray:
    """Centred moving average over ``SMOOTH_FIXES`` fixes (shorter at the ends).

    Averaging independent GPS errors shrinks them by sqrt(n): what lets a slow walker's
    track, whose noise is larger than its step, tell a footway from the next one.
    """
    k = min(SMOOTH_FIXES, len(v))
    if k < 2:
        return v
    kernel = np.ones(k)
    num = np.convolve(v - v[0], kernel, mode="same")
    den = np.convolve(np.ones(len(v)), kernel, mode="same")
    return num / den + v[0]


def _thin(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indexes of fixes at least ``THIN_M`` from the previous kept one (plus the last)."""
    keep = [0]
    kx, ky = x[0], y[0]
    # One pass in Python over numbers already in lists: cheap next to the rest.
    for i, (px, py) in enumerate(zip(x.tolist(), y.tolist(), strict=True)):
        if (px - kx) ** 2 + (py - ky) ** 2 >= THIN_M * THIN_M:
            keep.append(i)
            kx, ky = px, py
    if keep[-1] != len(x) - 1:
        keep.append(len(x) - 1)
    return np.array(keep, dtype=np.int64)


@dataclass
class _Cands:
    edge: np.ndarray  # [K]
    off: np.ndarray  # along-edge position of the fix's projection
    logp: np.ndarray  # emission log-likelihood


def _candidates(g: Graph, x: np.ndarray, y: np.ndarray) -> list[_Cands]:
    """Per fix, up to ``MAX_CANDIDATES`` edges within ``RADIUS_M``, nearest first.

    Rows are padded to ``MAX_CANDIDATES`` (edge -1, log-likelihood -inf) so the
    transitions of many fixes can be computed as one array.
    """
    n, kk = len(x), MAX_CANDIDATES
    k = min(32, max(len(g.piece_edge), 1))
    dist, idx = g.tree.query(
        np.column_stack([x, y]), k=k, distance_upper_bound=RADIUS_M + SEG_M / 2
    )
    dist, idx = dist.reshape(n, k), idx.reshape(n, k)
    found = np.isfinite(dist)
    va = g.piece_a[np.where(found, idx, 0)]
    ax, ay, bx, by = g.x[va], g.y[va], g.x[va + 1], g.y[va + 1]
    dx, dy = bx - ax, by - ay
    ll = np.maximum(dx * dx + dy * dy, 1e-9)
    px, py = x[:, None], y[:, None]
    f = np.clip(((px - ax) * dx + (py - ay) * dy) / ll, 0.0, 1.0)
    d = np.where(found, np.hypot(ax + f * dx - px, ay + f * dy - py), np.inf)
    off = g.cum[va] + f * np.sqrt(ll)
    edge = np.where(found, g.piece_edge[np.where(found, idx, 0)], -1)
    # Keep each edge's nearest piece only: sort by (row, edge, distance), mark repeats.
    row = np.repeat(np.arange(n), k)
    order = np.lexsort((d.ravel(), edge.ravel(), row))
    repeat = np.zeros(n * k, dtype=bool)
    fe, fr = edge.ravel()[order], row[order]
    repeat[1:] = (fe[1:] == fe[:-1]) & (fr[1:] == fr[:-1])
    dflat = d.ravel().copy()
    dflat[order[repeat]] = np.inf
    d = dflat.reshape(n, k)
    d[d > RADIUS_M] = np.inf
    best = np.argsort(d, axis=1, kind="stable")[:, :kk]
    bd = np.take_along_axis(d, best, axis=1)
    ok = np.isfinite(bd)
    if best.shape[1] < kk:  # fewer pieces in the whole map than candidates per fix
        pad = kk - best.shape[1]
        best = np.pad(best, ((0, 0), (0, pad)))
        bd = np.pad(bd, ((0, 0), (0, pad)), constant_values=np.inf)
        ok = np.pad(ok, ((0, 0), (0, pad)))
    ce = np.where(ok, np.take_along_axis(edge, best, axis=1), -1)
    co = np.where(ok, np.take_along_axis(off, best, axis=1), 0.0)
    lp = np.where(ok, -0.5 * (np.where(ok, bd, 0.0) / SIGMA_M) ** 2 - g.avoid[ce], -np.inf)
    return [_Cands(ce[i], co[i], lp[i]) for i in range(n)]


class _Routes:
    """Shortest street distances between nodes near one chunk of fixes."""

    def __init__(self, g: Graph, x: np.ndarray, y: np.ndarray, sources: np.ndarray, limit: float):
        net = g.net
        self.u = net.u
        # Every point of a route no longer than ``limit`` between two points near the
        # fixes lies within limit / 2 of one of them (+ RADIUS_M: candidates are that
        # far from their fix): nothing farther can be on a route we would accept.
        margin = limit / 2 + RADIUS_M
        lo_x, hi_x = x.min() - margin, x.max() + margin
        lo_y, hi_y = y.min() - margin, y.max() + margin
        bb = g.bbox
        near = (bb[:, 0] <= hi_x) & (bb[:, 2] >= lo_x) & (bb[:, 1] <= hi_y) & (bb[:, 3] >= lo_y)
        near &= g.allowed > 0
        edges = np.flatnonzero(near)
        u, v, al = net.u[edges], net.v[edges], g.allowed[edges]
        w = net.length_m[edges] * np.where(g.avoid[edges] > 0, AVOID_ROUTE_FACTOR, 1.0)
        self.nodes = np.unique(np.concatenate([u, v, sources]))
        lu, lv = np.searchsorted(self.nodes, u), np.searchsorted(self.nodes, v)
        f, r = (al & FWD) > 0, (al & REV) > 0
        rows = np.concatenate([lu[f], lv[r]])
        cols = np.concatenate([lv[f], lu[r]])
        wts = np.concatenate([w[f], w[r]])
        self.arc_edge = np.concatenate([edges[f], edges[r]])
        n = len(self.nodes)
        # Parallel arcs: keep the shortest (csr_matrix would add their weights up).
        order = np.lexsort((wts, cols, rows))
        rows, cols, wts, self.arc_edge = rows[order], cols[order], wts[order], self.arc_edge[order]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
        rows, cols, wts, self.arc_edge = rows[first], cols[first], wts[first], self.arc_edge[first]
        self.arc_key = rows * n + cols
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import dijkstra

        # Zero-length arcs would vanish from a sparse matrix: give them a hair of length.
        graph = csr_matrix((np.maximum(wts, 1e-6), (rows, cols)), shape=(n, n))
        self.src = np.unique(np.searchsorted(self.nodes, sources))
        self.dist, self.pred = dijkstra(
            graph, directed=True, indices=self.src, limit=limit, return_predecessors=True
        )

    def local(self, nodes: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.nodes, nodes)

    def between(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Distance from global node(s) ``a`` (sources) to ``b``."""
        ra = np.searchsorted(self.src, self.local(a))
        return self.dist[ra, self.local(b)]

    def path_edges(self, a: int, b: int) -> list[tuple[int, bool]]:
        """Edges (with forward flags) of the shortest route from node ``a`` to ``b``."""
        la, lb = int(self.local(np.array([a]))[0]), int(self.local(np.array([b]))[0])
        row = int(np.searchsorted(self.src, la))
        hops = []
        cur = lb
        while cur != la and cur >= 0:
            prev = int(self.pred[row, cur])
            if prev < 0:
                return []
            hops.append((prev, cur))
            cur = prev
        n = len(self.nodes)
        out = []
        for p, q in reversed(hops):
            j = int(np.searchsorted(self.arc_key, p * n + q))
            e = int(self.arc_edge[j])
            out.append((e, int(self.nodes[p]) == int(self.u[e])))
        return out


def _transitions(
    g: Graph, routes: _Routes, cands: list[_Cands], x: np.ndarray, y: np.ndarray, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transitions from fix ``i - 1`` to ``i`` for every ``i`` in ``lo+1..hi``, at once.

    Returns log-likelihoods ``[S, K, K]``, route distances and which way each route
    goes: option 0 stays on the edge; 1..4 = (exit end, entry end) of
    (start|end) x (start|end).
    """
    net = g.net
    e_all = np.stack([c.edge for c in cands[lo : hi + 1]])
    o_all = np.stack([c.off for c in cands[lo : hi + 1]])
    valid = e_all >= 0
    # Padding gets a real edge of the chunk (its results are masked out below).
    e_all = np.where(valid, e_all, e_all[valid][0] if valid.any() else 0)
    ea, eb = e_all[:-1, :, None], e_all[1:, None, :]
    oa, ob = o_all[:-1, :, None], o_all[1:, None, :]
    gc = np.hypot(np.diff(x[lo : hi + 1]), np.diff(y[lo : hi + 1]))[:, None, None]
    la, lb = net.length_m[ea], net.length_m[eb]
    alla, allb = g.allowed[ea], g.allowed[eb]
    shape = np.broadcast_shapes(ea.shape, eb.shape)
    inf = np.inf
    d = ob - oa
    ok_same = (ea == eb) & (
        ((d >= 0) & ((alla & FWD) > 0))
        | ((d <= 0) & ((alla & REV) > 0))
        | (np.abs(d) <= NOISE_BACK_M)
    )
    options = [np.where(ok_same, np.abs(d), inf)]
    for exit_end in (0, 1):  # 0: leave by the start node (reverse), 1: by the end node
        ex_cost = la - oa if exit_end == 1 else oa
        ex_ok = (alla & (FWD if exit_end == 1 else REV)) > 0
        ex_node = net.v[ea] if exit_end == 1 else net.u[ea]
        for entry_end in (0, 1):  # 0: enter at the start (forward), 1: at the end
            en_cost = ob if entry_end == 0 else lb - ob
            en_ok = (allb & (FWD if entry_end == 0 else REV)) > 0
            en_node = net.u[eb] if entry_end == 0 else net.v[eb]
            mid = routes.between(
                np.broadcast_to(ex_node, shape).ravel(), np.broadcast_to(en_node, shape).ravel()
            ).reshape(shape)
            options.append(np.where(ex_ok & en_ok, ex_cost + mid + en_cost, inf))
    stack = np.stack(options)
    which = np.argmin(stack, axis=0)
    route = np.take_along_axis(stack, which[None], axis=0)[0]
    pair_ok = valid[:-1, :, None] & valid[1:, None, :] & np.isfinite(route)
    with np.errstate(invalid="ignore"):
        logp = np.where(pair_ok, -np.abs(route - gc) / BETA_M, -np.inf)
    return logp, route, which


def _match_piece(
    g: Graph, x: np.ndarray, y: np.ndarray, t: np.ndarray
) -> list[tuple[int, int, float, float, float]]:
    """Visits ``(edge, fwd, t_in, t_out, speed)`` of one piece of track."""
    if len(x) < 2:
        return []
    cands = _candidates(g, x, y)
    has = np.array([c.edge[0] >= 0 for c in cands])
    visits: list[tuple[int, int, float, float, float]] = []
    chain: list[int] = []  # fixes of the current Viterbi run
    score = np.zeros(0)
    back: list[np.ndarray] = []
    trans: list[tuple[np.ndarray, np.ndarray, _Routes]] = []
    chunk_lo, chunk_hi = 0, 0
    logp = route = which = np.zeros((0, 0, 0))
    routes: _Routes | None = None
    for i in range(len(x)):
        c = cands[i]
        if not has[i]:
            visits += _finish(g, chain, score, back, trans, cands, t)
            chain, back, trans = [], [], []
            continue
        if not chain:
            chain, score = [i], c.logp.copy()
            continue
        if routes is None or i > chunk_hi:  # chain[-1] == i - 1 always
            chunk_lo, chunk_hi = i - 1, min(i - 1 + CHUNK, len(x) - 1)
            routes = _routes_for(g, x, y, cands, chunk_lo, chunk_hi)
            logp, route, which = _transitions(g, routes, cands, x, y, chunk_lo, chunk_hi)
        s = i - 1 - chunk_lo
        total = score[:, None] + logp[s]
        best = np.argmax(total, axis=0)
        new = total[best, np.arange(len(c.edge))] + c.logp
        if not np.isfinite(new).any():  # no way along the streets: start a new run
            visits += _finish(g, chain, score, back, trans, cands, t)
            chain, score, back, trans = [i], c.logp.copy(), [], []
            continue
        chain.append(i)
        back.append(best)
        trans.append((route[s], which[s], routes))
        score = new
    visits += _finish(g, chain, score, back, trans, cands, t)
    return visits


def _routes_for(
    g: Graph, x: np.ndarray, y: np.ndarray, cands: list[_Cands], lo: int, hi: int
) -> _Routes:
    edges = np.concatenate([c.edge for c in cands[lo : hi + 1]])
    edges = edges[edges >= 0]
    sources = np.unique(np.concatenate([g.net.u[edges], g.net.v[edges]]))
    gcs = np.hypot(np.diff(x[lo : hi + 1]), np.diff(y[lo : hi + 1]))
    limit = min(MAX_ROUTE_M, 2.0 * float(gcs.max(initial=0.0)) + 4 * RADIUS_M)
    return _Routes(g, x[lo : hi + 1], y[lo : hi + 1], sources, limit)


def _finish(g, chain, score, back, trans, cands, t):  # type: ignore[no-untyped-def]
    """Backtrack one Viterbi run and turn its states into edge visits."""
    if len(chain) < 2:
        return []
    states = [int(np.argmax(score))]
    for b in reversed(back):
        states.append(int(b[states[-1]]))
    states.reverse()
    net = g.net
    # Each run of states on one edge is a visit; routes between them add the edges between.
    visits: list[dict] = []  # type: ignore[type-arg]

    def open_visit(e: int, t_in: float, entry: int | None) -> None:
        visits.append(
            {"e": e, "t_in": t_in, "entry": entry, "exit": None, "offs": [], "dist": 0.0, "dt": 0.0}
        )

    first = cands[chain[0]]
    open_visit(int(first.edge[states[0]]), float(t[chain[0]]), None)
    visits[-1]["offs"].append(float(first.off[states[0]]))
    for k in range(1, len(chain)):
        i0, i1 = chain[k - 1], chain[k]
        ca, cb = cands[i0], cands[i1]
        sa, sb = states[k - 1], states[k]
        route, which, routes = trans[k - 1]
        w, dist = int(which[sa, sb]), float(route[sa, sb])  # a cost if w > 0 (see below)
        t0, t1 = float(t[i0]), float(t[i1])
        dt = max(t1 - t0, 0.0)
        ea, eb = int(ca.edge[sa]), int(cb.edge[sb])
        if w == 0:
            visits[-1]["offs"].append(float(cb.off[sb]))
            visits[-1]["dist"] += dist
            visits[-1]["dt"] += dt
            continue
        exit_end, entry_end = divmod(w - 1, 2)
        ex_cost = net.length_m[ea] - ca.off[sa] if exit_end == 1 else ca.off[sa]
        ex_node = int(net.v[ea] if exit_end == 1 else net.u[ea])
        en_node = int(net.u[eb] if entry_end == 0 else net.v[eb])
        en_cost = float(cb.off[sb] if entry_end == 0 else net.length_m[eb] - cb.off[sb])
        path = routes.path_edges(ex_node, en_node) if ex_node != en_node else []
        # The route's cost weighs avoided edges more (AVOID_ROUTE_FACTOR): times and
        # speeds go by its length.
        dist = float(ex_cost + net.length_m[[e for e, _ in path]].sum() + en_cost)
        visits[-1]["exit"] = ex_node
        visits[-1]["dist"] += ex_cost
        visits[-1]["dt"] += dt * ex_cost / dist if dist > 0 else 0.0
        along = ex_cost

        def at(d: float, t0: float = t0, dt: float = dt, dist: float = dist) -> float:
            return t0 + (dt * min(max(d / dist, 0.0), 1.0) if dist > 0 else 0.0)

        for e, fwd in path:
            length = float(net.length_m[e])
            visits.append(
                {"e": e, "t_in": at(along), "entry": int(net.u[e] if fwd else net.v[e]),
                 "exit": int(net.v[e] if fwd else net.u[e]), "offs": [], "dist": length,
                 "dt": dt * length / dist if dist > 0 else 0.0}
            )  # fmt: skip
            along += length
        open_visit(eb, at(along), en_node)
        visits[-1]["offs"].append(float(cb.off[sb]))
        visits[-1]["dist"] += en_cost
        visits[-1]["dt"] += dt * en_cost / dist if dist > 0 else 0.0
    t_end = float(t[chain[-1]])
    out = []
    for k, vis in enumerate(visits):
        fwd = _direction(net, vis)
        if fwd is None or not g.allowed[vis["e"]] & (FWD if fwd else REV):
            # A way the mode may not go: a track that starts or ends inside a one-way
            # street against it (each step back short enough to pass for noise).
            continue
        t_out = max(visits[k + 1]["t_in"] if k + 1 < len(visits) else t_end, vis["t_in"])
        speed = vis["dist"] / vis["dt"] if vis["dt"] > 0 else float("nan")
        out.append((vis["e"], int(fwd), vis["t_in"], t_out, speed))
    return _cancel_spurs(net, out)


def _cancel_spurs(net: StreetNetwork, visits: list[tuple[int, int, float, float, float]]):  # type: ignore[no-untyped-def]
    """Remove short out-and-back hops: an edge travelled and at once travelled back.

    At a junction of short edges GPS noise makes the likeliest path dart into a side
    street and back; a person turning round there would cover under ``SPUR_M`` both ways,
    which no planner needs counted. Longer returns are kept (a real out-and-back).
    """
    out: list[tuple[int, int, float, float, float]] = []
    spur: list[float] = []  # length cancelled so far at each stack position
    for vis in visits:
        if out and out[-1][0] == vis[0] and out[-1][1] != vis[1]:
            length = float(net.length_m[vis[0]]) + (spur[-1] if spur else 0.0)
            if length <= SPUR_M:
                out.pop()
                prev = spur.pop()
                if spur:
                    spur[-1] = max(spur[-1], prev + float(net.length_m[vis[0]]))
                continue
        out.append(vis)
        spur.append(0.0)
    return out


def _direction(net: StreetNetwork, vis: dict) -> bool | None:  # type: ignore[type-arg]
    """Forward (the way's direction), reverse, or None when the visit cannot tell."""
    e = vis["e"]
    u, v = int(net.u[e]), int(net.v[e])
    entry, exit_ = vis["entry"], vis["exit"]
    if u == v:  # a closed loop with one node: only the positions along it can tell
        entry = exit_ = None
    if entry is not None and exit_ is not None:
        if entry == exit_:
            return None  # in and back out the same end: a U-turn or a GPS hop
        return entry == u
    if entry is not None:
        return entry == u
    if exit_ is not None:
        return exit_ == v
    offs = vis["offs"]
    net_m = offs[-1] - offs[0] if offs else 0.0
    if abs(net_m) < MIN_NET_M:
        return None
    return net_m > 0


def match_streets(
    config: Config,
    layer: str,
    lat: np.ndarray,
    lng: np.ndarray,
    t: np.ndarray,
    piece: np.ndarray,
    zones: tuple[EffectiveZone, ...],
) -> bytes:
    """The stored street sequence of one trimmed track (empty without a base map).

    Visits to an edge that reaches into one of the athlete's zones are dropped, the
    same rule "hide more" applies later (``street_ops.drop_zone_edges``).
    """
    mode = mode_for_layer(layer)
    net = network_for(config)
    if net is None or mode is None or len(lat) < 2:
        return b""
    return drop_zone_edges(match_activity(net, mode, lat, lng, t, piece), net, zones).tobytes()
