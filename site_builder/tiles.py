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

import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heatmetro.site_builder.png import encode_indexed_png, encode_scanlines, png_header
from heatmetro.site_builder.raster import ZoomPlan, plan_zoom, render_tiles
from heatmetro.site_builder.tile_cache import (
    Manifest,
    TileCache,
    settings_digest,
    tile_digests,
    tile_ids,
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
from heatmetro.site_builder.tile_output import PngTreeSink, make_sink

__all__ = ["TileStats", "default_workers", "encode_png", "write_heat_tiles"]

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
    """

    tiles_per_zoom: dict[int, int]
    bounds: tuple[float, float, float, float]
    seconds: float
    rendered: int = 0
    reused: int = 0


def encode_png(levels: np.ndarray) -> bytes:
    """PNG bytes of a ``(256, 256)`` tile of ramp levels (indexed, the hot ramp as palette)."""
    return encode_indexed_png(levels, _HEADER)


def default_workers() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Plans of the zooms being drawn. Worker processes are forked after it is filled, so
# they read it from inherited memory instead of receiving megabytes of arrays per job.
_PLANS: dict[int, ZoomPlan] = {}


# Set with _PLANS for a PNG tree: workers then write their tiles themselves (creating
# files is a good part of the cost, and parallel too), and hand back b"" for each.
_TREE: list[PngTreeSink] = []
# In a cluster snapshot: which tiles this process writes (the others are only counted).
_OWNS: list[Callable[[int, int, int], bool]] = []


def _render_job(z: int, tiles: np.ndarray) -> list[tuple[int, bytes]]:
    out = []
    for t, scanlines in render_tiles(_PLANS[z], tiles):
        if _OWNS and not _OWNS[0](z, *_PLANS[z].tile_xy(t)):
            out.append((t, b""))  # drawn (it counts), written by its owner in the cluster
            continue
        data = encode_scanlines(scanlines, _HEADER)
        if _TREE:
            _TREE[0].put(z, *_PLANS[z].tile_xy(t), data)
            data = b""
        out.append((t, data))
    return out


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
    started = time.perf_counter()
    cells = np.asarray(cells, dtype=np.uint64).reshape(-1)
    heat = np.asarray(heat, dtype=np.float64).reshape(-1)
    if cells.size != heat.size:
        msg = f"tiles {layer}: {cells.size} cells but {heat.size} heat values"
        raise ValueError(msg)
    if not _LAYER_NAME.fullmatch(layer):
        msg = f"tiles: layer name {layer!r} is not a safe directory name"
        raise ValueError(msg)
    if not 0 <= min_zoom <= max_zoom or not 0 <= heat_resolution <= 15:
        msg = f"tiles {layer}: bad zooms {min_zoom}..{max_zoom} or resolution {heat_resolution}"
        raise ValueError(msg)
    previous = cache.previous if cache is not None else None
    sink = make_sink(tiles_format, out_root, layer, public_max_zoom, previous)
    zooms = range(min_zoom, max_zoom + 1)
    counts = dict.fromkeys(zooms, 0)
    if cells.size == 0:
        return TileStats(tiles_per_zoom=counts, bounds=(0.0, 0.0, 0.0, 0.0), seconds=0.0)

    cells, heat = sum_by_cell(cells, heat)  # tolerate duplicates: they are one cell
    res_of = {z: resolution_for_zoom(z, heat_resolution) for z in zooms}
    if cache is not None:
        load_geometry(cache.geometry_path)
    levels = levels_for(cells, heat, heat_resolution, set(res_of.values()) | {heat_resolution})
    top = levels[heat_resolution]
    bounds = (
        float(top.lat.min()),
        float(top.lng.min()),
        float(top.lat.max()),
        float(top.lng.max()),
    )

    if cache is not None:
        save_geometry(cache.geometry_path)
    old = cache.load(layer, tiles_format) if cache is not None else None
    ids, digests, unchanged, was_written = [], [], [], []
    _PLANS.clear()
    _TREE[:] = [sink] if isinstance(sink, PngTreeSink) else []
    _OWNS[:] = [owns] if owns is not None else []
    projected = {res: Projected.of(lvl.lng, lvl.lat, lvl.radius_m) for res, lvl in levels.items()}
    for z in zooms:
        lvl = levels[res_of[z]]
        plan = plan_zoom(*projected[res_of[z]].at(z), lvl.level, z)
        _PLANS[z] = plan
        settings = settings_digest(
            version=RENDER_VERSION, format=tiles_format, z=z, res=res_of[z],
            public=z <= public_max_zoom, tile=TILE_SIZE,
            geometry=GEOMETRY_KEY,  # another h3 may move centres by a bit: draw again
        )  # fmt: skip
        ids.append(tile_ids(z, plan.tile_key))
        digests.append(tile_digests(plan, lvl.cells, settings))
        if old is not None:
            same, wrote = old.lookup(ids[-1], digests[-1])
        else:
            same = wrote = np.zeros(plan.tile_key.size, dtype=bool)
        unchanged.append(same)
        was_written.append(wrote)

    written: list[np.ndarray] = []
    rendered = reused = 0
    try:
        for z, results in _render_all(zooms, unchanged, was_written, workers):
            plan = _PLANS[z]
            lit = np.zeros(plan.tile_key.size, dtype=bool)
            for t, data in results:
                x, y = plan.tile_xy(t)
                if owns is not None and not owns(z, x, y):
                    lit[t] = True  # another process of the cluster writes it
                    continue
                if data is None:
                    if sink.reuse(z, x, y):
                        reused += 1
                        lit[t] = True
                        continue
                    # The old file is gone: draw the tile after all.
                    fresh = _render_job(z, np.array([t]))
                    if not fresh:
                        continue
                    data = fresh[0][1]
                if data:
                    sink.put(z, x, y, data)
                rendered += 1
                lit[t] = True
            counts[z] = int(lit.sum())
            written.append(lit)
        sink.close(bounds)
    finally:
        _PLANS.clear()
        _TREE.clear()
        _OWNS.clear()
    if cache is not None:
        order = np.argsort(np.concatenate(ids), kind="stable")
        cache.save(
            layer,
            tiles_format,
            Manifest(
                ids=np.concatenate(ids)[order],
                digests=np.concatenate(digests)[order],
                written=np.concatenate(written)[order],
            ),
        )
    return TileStats(
        tiles_per_zoom=counts,
        bounds=bounds,
        seconds=time.perf_counter() - started,
        rendered=rendered,
        reused=reused,
    )


def _render_all(
    zooms: range, unchanged: list[np.ndarray], was_written: list[np.ndarray], workers: int
) -> Iterator[tuple[int, list[tuple[int, bytes | None]]]]:
    """Per zoom, ``(tile, bytes)`` of rendered tiles and ``(tile, None)`` of reusable ones.

    Results come back in zoom order and, within a zoom, in tile order, whatever the
    number of workers: the output does not depend on scheduling.
    """
    jobs: list[tuple[int, np.ndarray]] = []
    for i, z in enumerate(zooms):
        todo = np.flatnonzero(~unchanged[i])
        jobs.extend((z, todo[k : k + CHUNK_TILES]) for k in range(0, todo.size, CHUNK_TILES))
    if workers > 1 and sum(t.size for _, t in jobs) >= MIN_PARALLEL_TILES:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
            done = pool.map(_render_job, [z for z, _ in jobs], [t for _, t in jobs])
            yield from _merge(zooms, unchanged, was_written, jobs, done)
    else:
        done = (_render_job(z, t) for z, t in jobs)
        yield from _merge(zooms, unchanged, was_written, jobs, done)


def _merge(zooms, unchanged, was_written, jobs, done):  # type: ignore[no-untyped-def]
    results = iter(done)
    job_zooms = iter(z for z, _ in jobs)
    pending: list[tuple[int, list[tuple[int, bytes]]]] = []
    for i, z in enumerate(zooms):
        got: list[tuple[int, bytes | None]] = [
            (int(t), None) for t in np.flatnonzero(was_written[i])
        ]
        while True:
            if not pending:
                jz = next(job_zooms, None)
                if jz is None:
                    break
                pending.append((jz, next(results)))
            if pending[0][0] != z:
                break
            got.extend(pending.pop(0)[1])
        got.sort(key=lambda r: r[0])
        yield z, got
