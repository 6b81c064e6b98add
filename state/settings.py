"""An athlete's privacy settings and the secret geometry derived from them.

Shared by ingest (trimming new activities) and by the store (applying "hide more"
settings to activities already stored), so both cut exactly the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h3.api.basic_int as h3
import numpy as np

from heatmetro.core.cells import cell_centres
from heatmetro.core.geo import haversine_m, offset_point, secret_uniforms


@dataclass(frozen=True, slots=True)
class Zone:
    """A privacy zone as the athlete set it (nominal centre and radius)."""

    lat: float
    lng: float
    radius_m: float


@dataclass(frozen=True, slots=True)
class EffectiveZone:
    """The zone actually removed: centre moved by a secret offset, radius grown by it.

    Growing the radius by the offset keeps the athlete's whole nominal circle inside the
    removed disc, while the disc's centre (what an attacker can fit from the cut points)
    is not the athlete's point.
    """

    lat: float
    lng: float
    radius_m: float


@dataclass(frozen=True, slots=True)
class AthleteSettings:
    """What the stream last told us about an athlete (defaults until an event arrives)."""

    updated_ms: int = -1
    opt_out: bool = False
    hide_start_end_m: float | None = None  # None: the configured default
    zones: tuple[Zone, ...] = field(default_factory=tuple)


def effective_zones(
    settings: AthleteSettings, *, athlete_id: str, salt: str, jitter_fraction: float
) -> tuple[EffectiveZone, ...]:
    """The jittered zones for ``settings`` (same salt and zone -> same jitter)."""
    out = []
    for z in settings.zones:
        u_dist, u_bear = secret_uniforms(salt, "zone", athlete_id, z.lat, z.lng, z.radius_m, n=2)
        d = u_dist * jitter_fraction * z.radius_m
        lat, lng = offset_point(z.lat, z.lng, d, 360.0 * u_bear)
        out.append(EffectiveZone(lat, lng, z.radius_m + d))
    return tuple(out)


def zone_key(zones: tuple[EffectiveZone, ...]) -> list[list[float]]:
    """A JSON-friendly record of which zones were applied to a stored activity."""
    return sorted([round(z.lat, 7), round(z.lng, 7), round(z.radius_m, 3)] for z in zones)


def hide_cuts_m(
    hide_m: float, *, activity_id: str, salt: str, jitter_m: float
) -> tuple[float, float]:
    """Distances removed at the start and at the end of one activity.

    Each end gets its own secret extra ``0..jitter_m`` metres so the cut points of many
    activities from one home do not lie on a circle an attacker could fit.
    """
    if hide_m <= 0:
        return 0.0, 0.0
    u_start, u_end = secret_uniforms(salt, "hide", activity_id, n=2)
    start = hide_m + jitter_m * u_start
    end = hide_m + jitter_m * u_end
    return start, end


def points_in_zones(
    lat: np.ndarray, lng: np.ndarray, zones: tuple[EffectiveZone, ...]
) -> np.ndarray:
    """Boolean mask of the points inside any zone."""
    inside = np.zeros(len(lat), dtype=bool)
    for z in zones:
        inside |= haversine_m(lat, lng, z.lat, z.lng) <= z.radius_m
    return inside


def cells_touching_zones(
    cells: np.ndarray, res: int, zones: tuple[EffectiveZone, ...]
) -> np.ndarray:
    """Boolean mask of H3 cells whose hexagon may overlap any zone.

    A hexagon overlaps the disc when its centre is within radius + the hexagon's
    circumradius; we use 1.5x the average edge length of the resolution as that
    circumradius because H3 hexagons vary in size across the globe.
    """
    if not zones or len(cells) == 0:
        return np.zeros(len(cells), dtype=bool)
    circum = 1.5 * h3.average_hexagon_edge_length(res, "m")
    lat, lng = cell_centres(cells)
    hit = np.zeros(len(cells), dtype=bool)
    for z in zones:
        hit |= haversine_m(lat, lng, z.lat, z.lng) <= z.radius_m + circum
    return hit
