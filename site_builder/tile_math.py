"""Web-Mercator tile maths and H3 sizing for the heat tiles.

Standard slippy-map XYZ scheme (as mercantile and morecantile use): ``x`` grows to the
east, ``y`` grows to the south, tile ``(0, 0)`` has its top-left corner at
(lat 85.0511, lng -180). Global pixel coordinates are pixels of the whole world image at
zoom ``z`` (``256 * 2**z`` pixels wide); tile ``(x, y)`` covers global pixels
``[256 x, 256 x + 256) x [256 y, 256 y + 256)``.

Coordinate order is a classic bug: every function here takes ``(lng, lat)`` like
mercantile, while h3 returns ``(lat, lng)``. Pass by keyword when in doubt.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import h3
import numpy as np
from h3.api import basic_int as h3i

from heatmetro.state.aggregates import cells_to_parent

TILE_SIZE = 256
#: Web-Mercator sphere radius (EPSG:3857), metres.
WEB_MERCATOR_RADIUS_M = 6378137.0
#: The latitude where Web Mercator is square: tiles stop here.
MAX_LAT = 85.0511287798066
#: Ground metres per pixel at the equator at zoom 0.
EQUATOR_M_PER_PX = 2.0 * math.pi * WEB_MERCATOR_RADIUS_M / TILE_SIZE
#: Latitude at which the H3 resolution per zoom is chosen. Fixed (not taken from the data)
#: so that adding activities in Norway never changes the tiles of a town in Ohio; 45 deg is
#: where most activity is, and elsewhere within 0-60 deg hexagons are at most 2x off.
REFERENCE_LAT = 45.0
#: The widest a hexagon (centre-to-centre spacing) may be, in pixels, at the resolution
#: chosen for a zoom. Coarser cells would draw visible blobs; finer ones waste work.
MAX_HEX_PX = 4.0
#: From this zoom on the published cells themselves are drawn, never their parents: a
#: parent would smear a street's heat up to its own size (~50 m for res 11) sideways,
#: into a privacy zone's gap or onto the next street.
STREET_ZOOM = 13


class TileBounds(NamedTuple):
    """A tile's extent in degrees, in mercantile's ``LngLatBbox`` order."""

    west: float
    south: float
    east: float
    north: float


def lnglat_to_global_px(
    lng: np.ndarray | float, lat: np.ndarray | float, z: int
) -> tuple[np.ndarray, np.ndarray]:
    """Project longitudes/latitudes to global pixel coordinates at zoom ``z``.

    Args:
        lng: longitudes in degrees (any shape).
        lat: latitudes in degrees, clamped to +-``MAX_LAT`` as Web Mercator requires.
        z: zoom level.

    Returns:
        ``(px, py)`` float64 arrays; ``px`` grows east from lng -180, ``py`` grows south
        from lat 85.05. At z=1, (lng 0, lat 0) is ``(256.0, 256.0)``.
    """
    world = float(TILE_SIZE << z)
    lng_a = np.asarray(lng, dtype=np.float64)
    lat_a = np.clip(np.asarray(lat, dtype=np.float64), -MAX_LAT, MAX_LAT)
    px = (lng_a + 180.0) / 360.0 * world
    sin_lat = np.sin(np.radians(lat_a))
    # 0.5 - atanh(sin(lat)) / (2 pi): the Mercator y, shifted so the top edge is 0.
    py = (0.5 - np.log((1.0 + sin_lat) / (1.0 - sin_lat)) / (4.0 * math.pi)) * world
    return px, py


def lnglat_to_tile(lng: float, lat: float, z: int) -> tuple[int, int]:
    """The ``(x, y)`` of the tile containing a point at zoom ``z`` (edges clamp inwards)."""
    px, py = lnglat_to_global_px(lng, lat, z)
    last = (1 << z) - 1
    x = min(max(int(math.floor(float(px) / TILE_SIZE)), 0), last)
    y = min(max(int(math.floor(float(py) / TILE_SIZE)), 0), last)
    return x, y


def tile_bounds(x: int, y: int, z: int) -> TileBounds:
    """The extent of tile ``(x, y, z)`` in degrees (``west, south, east, north``)."""
    n = 1 << z

    def lat_of(row: int) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1.0 - 2.0 * row / n))))

    return TileBounds(
        west=x / n * 360.0 - 180.0,
        south=lat_of(y + 1),
        east=(x + 1) / n * 360.0 - 180.0,
        north=lat_of(y),
    )


def m_per_px(lat: np.ndarray | float, z: int) -> np.ndarray:
    """Ground metres per pixel at a latitude and zoom (Mercator scale is 1 / cos(lat))."""
    lat_a = np.clip(np.asarray(lat, dtype=np.float64), -MAX_LAT, MAX_LAT)
    return EQUATOR_M_PER_PX / float(1 << z) * np.cos(np.radians(lat_a))


def resolution_for_zoom(z: int, heat_resolution: int) -> int:
    """The H3 resolution drawn at zoom ``z``.

    The coarsest resolution whose hexagons (centre spacing, ``sqrt(3)`` edge lengths) are at
    most ``MAX_HEX_PX`` pixels wide at ``REFERENCE_LAT``; never finer than
    ``heat_resolution``, the resolution the privacy threshold was applied at, and exactly
    that from ``STREET_ZOOM`` on. Each
    resolution is ~2.65x finer than the previous, so the chosen hexagons are 1.5-4 px wide.

    Args:
        z: zoom level.
        heat_resolution: resolution of the published cells.

    Returns:
        An H3 resolution in ``0..heat_resolution``.
    """
    if z >= STREET_ZOOM:
        return heat_resolution
    scale = float(m_per_px(REFERENCE_LAT, z))
    for res in range(heat_resolution + 1):
        width_px = math.sqrt(3.0) * h3.average_hexagon_edge_length(res, "m") / scale
        if width_px <= MAX_HEX_PX:
            return res
    # Street-level zooms: even heat_resolution hexagons are wider than MAX_HEX_PX.
    return heat_resolution


#: Radii of cells finer than this come from the area of an ancestor up to 3 resolutions up
#: but not coarser than this (where cells differ more from their parent's shape).
RADIUS_ANCESTOR_RES = 8


def cell_radius_m(cells: np.ndarray) -> np.ndarray:
    """Circumradius of each H3 cell in metres, from its true area.

    H3 cells of one resolution vary ~2x in area over the globe, so the average edge
    length would leave gaps between neighbours where cells are large. A regular hexagon of
    area ``A`` has circumradius ``sqrt(2 A / (3 sqrt 3))``. ``A`` is the area of the cell's
    ancestor ``k`` <= 3 resolutions coarser (never coarser than ``RADIUS_ANCESTOR_RES``)
    over ``7**k`` (aperture 7): area varies smoothly, so this is within 1e-5 of the radius
    from the cell's own area (measured on 100k res-13 cells), and a street's 300 res-13
    cells take one h3 call instead of 300.

    Args:
        cells: uint64 H3 cells (any resolutions).

    Returns:
        float64 radii in metres.
    """
    cells = np.asarray(cells, dtype=np.uint64).reshape(-1)
    area = np.zeros(cells.size, dtype=np.float64)
    res_of = ((cells >> np.uint64(52)) & np.uint64(15)).astype(np.int64)
    for res in np.unique(res_of).tolist():
        here = res_of == res
        up = min(3, max(res - RADIUS_ANCESTOR_RES, 0))
        parents, inverse = np.unique(cells_to_parent(cells[here], res - up), return_inverse=True)
        parent_area = np.fromiter(
            (h3i.cell_area(c, "m^2") for c in parents.tolist()), np.float64, count=parents.size
        )
        area[here] = parent_area[inverse.reshape(-1)] / float(7**up)
    return np.sqrt(2.0 * area / (3.0 * math.sqrt(3.0)))


# Splats as large as the hexagon's circumradius: the disc covers its hexagon, so
# neighbouring cells of a street always overlap and the street reads as one line.
SPLAT_SCALE = 1.0
#: Any disc this wide holds a pixel centre (a pixel's half diagonal is 0.7071 px), so every
#: cell is visible, with the least smear around it.
MIN_SPLAT_PX = 0.71


def splat_radius_px(radius_m: np.ndarray, lat: np.ndarray, z: int) -> np.ndarray:
    """Splat radius in pixels: ``SPLAT_SCALE`` x the cell's circumradius at zoom ``z``, at least ``MIN_SPLAT_PX``.

    The circumradius (not the inradius, half the centre spacing) makes neighbouring splats
    overlap, so a street of adjacent cells reads as one continuous line.
    """
    return np.maximum(SPLAT_SCALE * np.asarray(radius_m) / m_per_px(lat, z), MIN_SPLAT_PX)


class Projected(NamedTuple):
    """Cells projected once, at zoom 0: ``at(z)`` gives any zoom's by exact scaling."""

    px: np.ndarray
    py: np.ndarray
    radius: np.ndarray  # splat radius in pixels before the ``MIN_SPLAT_PX`` floor

    @classmethod
    def of(cls, lng: np.ndarray, lat: np.ndarray, radius_m: np.ndarray) -> Projected:
        px, py = lnglat_to_global_px(lng, lat, 0)
        return cls(px, py, SPLAT_SCALE * np.asarray(radius_m) / m_per_px(lat, 0))

    def at(self, z: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(px, py, radius)`` at zoom ``z``, bit for bit what ``lnglat_to_global_px`` and
        ``splat_radius_px`` give: zoom ``z`` multiplies or divides by ``2**z`` where
        those round, and scaling by a power of two commutes with rounding."""
        scale = float(1 << z)
        return self.px * scale, self.py * scale, np.maximum(self.radius * scale, MIN_SPLAT_PX)
