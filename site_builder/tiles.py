"""Heat tiles: the pyramid of one layer, drawn from published H3 cell counts.

The cells given here already passed the privacy threshold (rule 7), so every one may be
drawn; coarser zooms draw their parents (``tile_levels``). Zooms up to
``public_max_zoom`` go to ``tiles/``, deeper ones to ``members/tiles/`` (rule 8).

One job per module: ``tile_levels`` (heat -> ramp level per resolution), ``raster``
(cells -> pixels), ``png`` (pixels -> bytes), ``tile_cache`` (what changed since the
published build), ``tile_output`` (PNG tree or PMTiles). This module runs them: it plans
every zoom, renders the tiles whose inputs changed over all cores, and hands the bytes,
in a fixed order, to the sink.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from heatmetro.site_builder.code_digest import code_digest
from heatmetro.site_builder.png import encode_indexed_png, encode_scanlines, png_header
from heatmetro.site_builder.raster import ZoomPlan, plan_zoom, render_tiles
from heatmetro.site_builder.tile_cache import (
    Manifest,
    TileCache,
    layer_digest,
    settings_digest,
    tile_digests,
    tile_ids,
    tile_zxy,
)
from heatmetro.site_builder.tile_colours import LUT
from heatmetro.site_builder.tile_levels import (
    GEOMETRY_KEY,
    levels_for,
    load_geometry,
    save_geometry,
    sum_by_cell,
)
from heatmetro.site_builder.tile_math import TILE_SIZE, Projected, resolution_for_zoom
from heatmetro.site_builder.tile_output import PngTreeSink, TileSink, make_sink

__all__ = [
    "LayerHeat",
    "TileStats",
    "default_workers",
    "encode_png",
    "write_heat_tiles",
    "write_layers_tiles",
]

#: Bump when the drawing or the encoding changes: every cached tile is then rendered again
#: (4: zlib's run-length strategy instead of ISA-L).
RENDER_VERSION = 4
#: Tiles per job handed to a worker process: big enough to amortise the hand-over.
CHUNK_TILES = 128
#: Fewer tiles to draw than this are drawn in this process: starting workers costs more.
MIN_PARALLEL_TILES = 1000
_LAYER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_HEADER = png_header(LUT, TILE_SIZE, TILE_SIZE)


@dataclass(frozen=True)
class TileStats:
    """What :func:`write_heat_tiles` wrote.

    Attributes:
        tiles_per_zoom: tiles written per zoom, every zoom ``min_zoom..max_zoom`` present.
        bounds: ``(south, west, north, east)`` of the drawn cell centres in degrees
            (Leaflet's ``fitBounds`` order); all zero for empty input.
        seconds: wall time spent.
        rendered: tiles drawn and encoded in this call.
        reused: tiles taken unchanged from the previous build.
        twin_of: the earlier layer with this one's very input, whose drawing it shares
            (its tiles cost little here: benchmarks leave them out of rates per core).
    """

    tiles_per_zoom: dict[int, int]
    bounds: tuple[float, float, float, float]
    seconds: float
    rendered: int = 0
    reused: int = 0
    twin_of: str | None = None


def encode_png(levels: np.ndarray) -> bytes:
    """PNG bytes of a ``(256, 256)`` tile of ramp levels (indexed, the hot ramp as palette)."""
    return encode_indexed_png(levels, _HEADER)


def default_workers() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Plans of the zooms being drawn, keyed by (layer, zoom). Worker processes are forked
# after every layer is planned, so they read them from inherited memory instead of
# receiving megabytes of arrays per job, and one pool serves the whole snapshot.
_PLANS: dict[tuple[str, int], ZoomPlan] = {}


# Per layer written as a PNG tree: workers then write their tiles themselves (creating
# files is a good part of the cost, and parallel too), and hand back b"" for each.
_TREE: dict[str, PngTreeSink] = {}
# In a cluster snapshot: which tiles this process writes (the others are only counted).
_OWNS: list[Callable[[int, int, int], bool]] = []

_Key = tuple[str, int]


# Tiles of a twin layer (the input of an earlier one: see ``_plan_twin``) that its
# original draws anyway: (twin layer, its tile indices among those of the job).
_Copies = tuple[tuple[str, np.ndarray], ...]
_Tiles = list[tuple[int, bytes]]


def _render_job(
    key: _Key, tiles: np.ndarray, copies: _Copies = ()
) -> tuple[_Tiles, dict[str, _Tiles]]:
    """``(tile, bytes)`` of ``key``'s tiles with heat, and per twin layer in ``copies`` the
    same bytes of the tiles it needs: a twin's tile is the original's, drawn once."""
    layer, z = key
    plan = _PLANS[key]
    tree = _TREE.get(layer)
    out = []
    twins: dict[str, _Tiles] = {name: [] for name, _ in copies}
    wanted = [(name, set(want.tolist()), _TREE.get(name)) for name, want in copies]
    for t, scanlines in render_tiles(plan, tiles):
        if _OWNS and not _OWNS[0](z, *plan.tile_xy(t)):
            out.append((t, b""))  # drawn (it counts), written by its owner in the cluster
            for name, want, _ in wanted:
                if t in want:
                    twins[name].append((t, b""))
            continue
        data = encode_scanlines(scanlines, _HEADER)
        if tree is not None:
            tree.put(z, *plan.tile_xy(t), data)
        for name, want, twin_tree in wanted:
            if t not in want:
                continue
            if twin_tree is None:
                twins[name].append((t, data))
                continue
            if tree is not None:
                twin_tree.put_copy(z, *plan.tile_xy(t), data, of=tree)
            else:
                twin_tree.put(z, *plan.tile_xy(t), data)
            twins[name].append((t, b""))
        out.append((t, b"" if tree is not None else data))
    return out, twins


@dataclass(frozen=True)
class LayerHeat:
    """The published cells of one layer: ``layer`` name, uint64 ``cells``, their ``heat``."""

    layer: str
    cells: np.ndarray
    heat: np.ndarray


@dataclass(frozen=True)
class _Settings:
    """What every layer of one call shares."""

    min_zoom: int
    public_max_zoom: int
    max_zoom: int
    heat_resolution: int
    tiles_format: str


@dataclass
class _Planned:
    """One layer between planning and writing: what to draw, what to reuse."""

    layer: str
    sink: TileSink
    bounds: tuple[float, float, float, float]
    seconds: float
    cells: np.ndarray  # the input, summed by cell
    heat: np.ndarray
    ids: list[np.ndarray] = field(default_factory=list)
    digests: list[np.ndarray] = field(default_factory=list)
    unchanged: list[np.ndarray] = field(default_factory=list)
    was_written: list[np.ndarray] = field(default_factory=list)
    twin_of: str | None = None
    input_digest: str = ""

    def same_input(self, cells: np.ndarray, heat: np.ndarray) -> bool:
        return bool(np.array_equal(self.cells, cells) and np.array_equal(self.heat, heat))

    def look_up(self, old: Manifest | None) -> None:
        """Which tiles of the zoom just added are unchanged in, and were written by, ``old``."""
        if old is not None:
            same, wrote = old.lookup(self.ids[-1], self.digests[-1])
        else:
            same = wrote = np.zeros(self.ids[-1].size, dtype=bool)
        self.unchanged.append(same)
        self.was_written.append(wrote)


def write_heat_tiles(
    cells: np.ndarray,
    heat: np.ndarray,
    *,
    layer: str,
    out_root: Path,
    min_zoom: int,
    public_max_zoom: int,
    max_zoom: int,
    heat_resolution: int,
    tiles_format: str = "png",
    cache: TileCache | None = None,
    workers: int = 1,
    owns: Callable[[int, int, int], bool] | None = None,
) -> TileStats:
    """Write the heat tile pyramid of one layer.

    Tiles go to ``out_root/tiles/{layer}/{z}/{x}/{y}.png`` for ``min_zoom..public_max_zoom``
    and ``out_root/members/tiles/{layer}/...`` above (or to one ``{layer}.pmtiles`` per
    tree); only tiles with heat.

    Args:
        cells: uint64 H3 cells at ``heat_resolution``, already privacy-thresholded.
        heat: heat (activity counts) per cell.
        layer: layer name (``all``, ``ride``, ...), used as a directory name.
        out_root: the site being built.
        min_zoom: first zoom written.
        public_max_zoom: last zoom written under the public ``tiles/`` tree.
        max_zoom: last zoom written (under ``members/tiles/`` when above the public one).
        heat_resolution: H3 resolution of ``cells``.
        tiles_format: ``png`` (a file per tile) or ``pmtiles`` (one archive per tree).
        cache: manifests of the published build: unchanged tiles are reused from it.
        workers: processes rendering tiles (1 = in this process).
        owns: in a cluster snapshot, whether this process writes tile ``(z, x, y)``
            (png, no cache); every tile is still drawn and counted, so the counts and
            everything derived from them match a one-process build.

    Returns:
        Tiles written per zoom, the drawn bounds, the time taken, rendered/reused counts.

    Raises:
        ValueError: on mismatched arrays, an unsafe layer name, inconsistent zooms or an
            unknown format.
    """
    stats = write_layers_tiles(
        [LayerHeat(layer, cells, heat)],
        out_root=out_root, min_zoom=min_zoom, public_max_zoom=public_max_zoom,
        max_zoom=max_zoom, heat_resolution=heat_resolution, tiles_format=tiles_format,
        cache=cache, workers=workers, owns=owns,
    )  # fmt: skip
    return stats[layer]


def write_layers_tiles(
    layers: Sequence[LayerHeat],
    *,
    out_root: Path,
    min_zoom: int,
    public_max_zoom: int,
    max_zoom: int,
    heat_resolution: int,
    tiles_format: str = "png",
    cache: TileCache | None = None,
    workers: int = 1,
    owns: Callable[[int, int, int], bool] | None = None,
) -> dict[str, TileStats]:
    """Write the tile pyramids of several layers, drawn by one pool of workers.

    As :func:`write_heat_tiles` for each layer, with the same bytes; but every layer is
    planned first and the tiles of all of them are drawn by one set of worker processes,
    forked once: a fork of a big process costs more than a layer of a city has to draw.
    The plans of all layers are held at once (~22 MB per layer on six months of a
    city's bike share, where the window stage's arrays set the peak anyway).

    Returns:
        The stats of each layer, in the order given; a layer's ``seconds`` are its
        planning plus the time spent waiting for and writing its tiles, so they add up
        to the wall time of the call.

    Raises:
        ValueError: as :func:`write_heat_tiles`, or on a layer named twice.
    """
    names = [lh.layer for lh in layers]
    if len(set(names)) != len(names):
        msg = f"tiles: a layer is named twice in {names}"
        raise ValueError(msg)
    zs = _Settings(min_zoom, public_max_zoom, max_zoom, heat_resolution, tiles_format)
    stats: dict[str, TileStats] = {}
    planned: list[_Planned] = []
    try:
        _OWNS[:] = [owns] if owns is not None else []
        # Threads for planning only with cores to spare, and gone before workers fork.
        with ThreadPoolExecutor(workers) if workers > 1 else nullcontext() as threads:
            for lh in layers:
                got = _plan_layer(lh, out_root, zs, cache, planned, threads)
                if isinstance(got, TileStats):
                    stats[lh.layer] = got
                else:
                    planned.append(got)
        written = _write_planned(planned, zs, cache, workers, owns)
    finally:
        _PLANS.clear()
        _TREE.clear()
        _OWNS.clear()
    return {name: stats[name] if name in stats else written[name] for name in names}


def _plan_layer(
    lh: LayerHeat,
    out_root: Path,
    zs: _Settings,
    cache: TileCache | None,
    before: Sequence[_Planned] = (),
    threads: ThreadPoolExecutor | None = None,
) -> _Planned | TileStats:
    """Plan every zoom of a layer into ``_PLANS`` (or the stats of an empty layer).

    A layer with the very cells and heat of one planned ``before`` (a bike share's
    ``ride`` is ``all``) shares its plans and digests, and the tiles both draw are drawn
    once (``_render_all``): the same pairs give the same bytes.
    """
    started = time.perf_counter()
    layer = lh.layer
    cells = np.asarray(lh.cells, dtype=np.uint64).reshape(-1)
    heat = np.asarray(lh.heat, dtype=np.float64).reshape(-1)
    if cells.size != heat.size:
        msg = f"tiles {layer}: {cells.size} cells but {heat.size} heat values"
        raise ValueError(msg)
    if not _LAYER_NAME.fullmatch(layer):
        msg = f"tiles: layer name {layer!r} is not a safe directory name"
        raise ValueError(msg)
    if not 0 <= zs.min_zoom <= zs.max_zoom or not 0 <= zs.heat_resolution <= 15:
        msg = (
            f"tiles {layer}: bad zooms {zs.min_zoom}..{zs.max_zoom} "
            f"or resolution {zs.heat_resolution}"
        )
        raise ValueError(msg)
    previous = cache.previous if cache is not None else None
    sink = make_sink(zs.tiles_format, out_root, layer, zs.public_max_zoom, previous)
    zooms = range(zs.min_zoom, zs.max_zoom + 1)
    if cells.size == 0:
        counts = dict.fromkeys(zooms, 0)
        return TileStats(tiles_per_zoom=counts, bounds=(0.0, 0.0, 0.0, 0.0), seconds=0.0)

    cells, heat = sum_by_cell(cells, heat)  # tolerate duplicates: they are one cell
    old = cache.load(layer, zs.tiles_format) if cache is not None else None
    digest = layer_digest(cells, heat, _layer_settings(layer, zs))
    if cache is not None and old is not None and old.input_digest == digest and not _OWNS:
        taken = _take_whole(layer, sink, old, zs, cache, started)
        if taken is not None:
            return taken
    if isinstance(sink, PngTreeSink):
        _TREE[layer] = sink
    twin = next((p for p in before if p.same_input(cells, heat)), None)
    if twin is not None:
        shared = _plan_twin(twin, layer, sink, cells, heat, old, zooms, started)
        shared.input_digest = digest
        return shared
    res_of = {z: resolution_for_zoom(z, zs.heat_resolution) for z in zooms}
    if cache is not None:
        load_geometry(cache.geometry_path)
    levels = levels_for(
        cells, heat, zs.heat_resolution, set(res_of.values()) | {zs.heat_resolution}
    )
    top = levels[zs.heat_resolution]
    bounds = (
        float(top.lat.min()),
        float(top.lng.min()),
        float(top.lat.max()),
        float(top.lng.max()),
    )
    if cache is not None:
        save_geometry(cache.geometry_path)
    out = _Planned(layer, sink, bounds, 0.0, cells, heat, input_digest=digest)
    projected = {res: Projected.of(lvl.lng, lvl.lat, lvl.radius_m) for res, lvl in levels.items()}

    def plan_one(z: int) -> tuple[ZoomPlan, np.ndarray, np.ndarray]:
        lvl = levels[res_of[z]]
        plan = plan_zoom(*projected[res_of[z]].at(z), lvl.level, z)
        settings = settings_digest(
            version=RENDER_VERSION, format=zs.tiles_format, z=z, res=res_of[z],
            public=z <= zs.public_max_zoom, tile=TILE_SIZE,
            geometry=GEOMETRY_KEY,  # another h3 may move centres by a bit: draw again
        )  # fmt: skip
        return plan, tile_ids(z, plan.tile_key), tile_digests(plan, lvl.cells, settings)

    # Each zoom's plan is a pure function of the levels: with threads (numpy lets go of
    # the GIL in its loops), zooms are planned side by side; results come in zoom order.
    planned = threads.map(plan_one, zooms) if threads is not None else map(plan_one, zooms)
    for z, (plan, ids, digests) in zip(zooms, planned, strict=True):
        _PLANS[layer, z] = plan
        out.ids.append(ids)
        out.digests.append(digests)
        out.look_up(old)
    out.seconds = time.perf_counter() - started
    return out


@functools.cache
def _drawing_code() -> str:
    """Digest of the modules that turn a layer's cells into its tiles' bytes."""
    here = Path(__file__).parent
    names = ("tiles", "tile_levels", "tile_math", "tile_colours", "raster", "png",
             "tile_output", "pmtiles_writer", "hilbert")  # fmt: skip
    return code_digest(here / f"{name}.py" for name in names)


def _layer_settings(layer: str, zs: _Settings) -> int:
    """Everything besides its input that a layer's tiles, bounds and archives depend on."""
    return settings_digest(
        layer=layer, version=RENDER_VERSION, format=zs.tiles_format, min_zoom=zs.min_zoom,
        public_max_zoom=zs.public_max_zoom, max_zoom=zs.max_zoom, res=zs.heat_resolution,
        tile=TILE_SIZE, geometry=GEOMETRY_KEY, code=_drawing_code(),
    )  # fmt: skip


def _take_whole(
    layer: str, sink: TileSink, old: Manifest, zs: _Settings, cache: TileCache, started: float
) -> TileStats | None:
    """``layer``'s tiles taken whole from the published build, whose manifest ``old`` has
    this build's very input and settings: no zoom is planned, no tile looked up. ``None``
    when the published files are not all there (then the layer is planned as usual)."""
    zooms = range(zs.min_zoom, zs.max_zoom + 1)
    lit = old.ids[old.written]
    if not sink.take_whole(*tile_zxy(lit)):
        return None
    cache.save(layer, zs.tiles_format, old)  # the same tiles, now of this build
    n = int(lit.size)
    return TileStats(
        tiles_per_zoom=old.tiles_per_zoom(zooms),
        bounds=old.bounds,
        seconds=time.perf_counter() - started,
        reused=n,
    )


def _plan_twin(
    twin: _Planned,
    layer: str,
    sink: TileSink,
    cells: np.ndarray,
    heat: np.ndarray,
    old: Manifest | None,
    zooms: range,
    started: float,
) -> _Planned:
    """``layer``'s plan when it has ``twin``'s input: its plans, digests and bounds."""
    out = _Planned(layer, sink, twin.bounds, 0.0, cells, heat, twin_of=twin.layer)
    for i, z in enumerate(zooms):
        _PLANS[layer, z] = _PLANS[twin.layer, z]
        out.ids.append(twin.ids[i])
        out.digests.append(twin.digests[i])
        out.look_up(old)  # against this layer's own last build
    out.seconds = time.perf_counter() - started
    return out


def _write_planned(
    planned: list[_Planned],
    zs: _Settings,
    cache: TileCache | None,
    workers: int,
    owns: Callable[[int, int, int], bool] | None,
) -> dict[str, TileStats]:
    """Draw the planned layers' changed tiles over ``workers`` processes, write them in order."""
    zooms = range(zs.min_zoom, zs.max_zoom + 1)
    keys = [(p.layer, z) for p in planned for z in zooms]
    unchanged = [u for p in planned for u in p.unchanged]
    was_written = [w for p in planned for w in p.was_written]
    results = _render_all(keys, unchanged, was_written, workers)
    try:
        return _write_in_order(planned, zs, results, cache, owns)
    finally:
        results.close()  # shuts the pool down, also on an error


def _write_in_order(
    planned: list[_Planned],
    zs: _Settings,
    results: Iterator[tuple[_Key, list[tuple[int, bytes | None]]]],
    cache: TileCache | None,
    owns: Callable[[int, int, int], bool] | None,
) -> dict[str, TileStats]:
    """Each layer's tiles into its sink, its manifest into the cache, its stats."""
    zooms = range(zs.min_zoom, zs.max_zoom + 1)
    out = {}
    mark = time.perf_counter()
    for p in planned:
        counts = dict.fromkeys(zooms, 0)
        written: list[np.ndarray] = []
        rendered = reused = 0
        for z in zooms:
            key, got = next(results)  # in the order of the keys: (p.layer, z)
            plan = _PLANS[key]
            lit = np.zeros(plan.tile_key.size, dtype=bool)
            for t, data in got:
                x, y = plan.tile_xy(t)
                if owns is not None and not owns(z, x, y):
                    lit[t] = True  # another process of the cluster writes it
                    continue
                if data is None:
                    if p.sink.reuse(z, x, y):
                        reused += 1
                        lit[t] = True
                        continue
                    # The old file is gone: draw the tile after all.
                    fresh = _render_job(key, np.array([t]))[0]
                    if not fresh:
                        continue
                    data = fresh[0][1]
                if data:
                    p.sink.put(z, x, y, data)
                rendered += 1
                lit[t] = True
            counts[z] = int(lit.sum())
            written.append(lit)
        p.sink.close(p.bounds)
        if cache is not None:
            order = np.argsort(np.concatenate(p.ids), kind="stable")
            cache.save(
                p.layer,
                zs.tiles_format,
                Manifest(
                    ids=np.concatenate(p.ids)[order],
                    digests=np.concatenate(p.digests)[order],
                    written=np.concatenate(written)[order],
                    input_digest=p.input_digest,
                    bounds=p.bounds,
                ),
            )
        now = time.perf_counter()
        out[p.layer] = TileStats(
            tiles_per_zoom=counts,
            bounds=p.bounds,
            seconds=p.seconds + now - mark,
            rendered=rendered,
            reused=reused,
            twin_of=p.twin_of,
        )
        mark = now
    return out


def _render_all(
    keys: list[_Key], unchanged: list[np.ndarray], was_written: list[np.ndarray], workers: int
) -> Generator[tuple[_Key, list[tuple[int, bytes | None]]], None, None]:
    """Per (layer, zoom), ``(tile, bytes)`` of rendered tiles and ``(tile, None)`` of
    reusable ones.

    Results come back in the order of ``keys`` and, within one, in tile order, whatever
    the number of workers: the output does not depend on scheduling. A twin layer's
    tiles that its original draws too are not drawn twice: the original's job hands
    their bytes over (they are the same, from the same plan).
    """
    todo = [np.flatnonzero(~u) for u in unchanged]
    # Per key: the twin keys (later, same plan) taking some of its tiles, as masks.
    copies: list[list[tuple[str, np.ndarray]]] = [[] for _ in keys]
    for i, key in enumerate(keys):
        first = next(j for j in range(i + 1) if _PLANS[keys[j]] is _PLANS[key])
        if first == i:
            continue
        copied = np.zeros(unchanged[i].size, dtype=bool)
        copied[todo[first]] = True
        copied &= ~unchanged[i]
        copies[first].append((key[0], copied))
        todo[i] = np.flatnonzero(~unchanged[i] & ~copied)
    jobs: list[tuple[int, _Key, np.ndarray, _Copies]] = []
    for i, key in enumerate(keys):
        for k in range(0, todo[i].size, CHUNK_TILES):
            chunk = todo[i][k : k + CHUNK_TILES]
            share = tuple((name, chunk[mask[chunk]]) for name, mask in copies[i])
            jobs.append((i, key, chunk, tuple((n, c) for n, c in share if c.size)))
    if workers > 1 and sum(t.size for _, _, t, _ in jobs) >= MIN_PARALLEL_TILES:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
            done = pool.map(
                _render_job, [j[1] for j in jobs], [j[2] for j in jobs], [j[3] for j in jobs]
            )
            yield from _merge(keys, was_written, jobs, done)
    else:
        done = (_render_job(k, t, c) for _, k, t, c in jobs)
        yield from _merge(keys, was_written, jobs, done)


def _merge(
    keys: list[_Key],
    was_written: list[np.ndarray],
    jobs: list[tuple[int, _Key, np.ndarray, _Copies]],
    done: Iterator[tuple[_Tiles, dict[str, _Tiles]]],
) -> Generator[tuple[_Key, list[tuple[int, bytes | None]]], None, None]:
    """The jobs' results gathered per key (jobs come in the order of their keys; a twin's
    handed-over tiles come with its original's, an earlier key)."""
    results = iter(done)
    index = {key: i for i, key in enumerate(keys)}
    handed: dict[int, list[tuple[int, bytes | None]]] = {}
    next_job = 0
    for i, key in enumerate(keys):
        got: list[tuple[int, bytes | None]] = [
            (int(t), None) for t in np.flatnonzero(was_written[i])
        ]
        got.extend(handed.pop(i, []))
        while next_job < len(jobs) and jobs[next_job][0] == i:
            own, twins = next(results)
            got.extend(own)
            for name, tiles in twins.items():
                handed.setdefault(index[name, key[1]], []).extend(tiles)
            next_job += 1
        got.sort(key=lambda r: r[0])
        yield key, got
