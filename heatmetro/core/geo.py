"""Vectorised spherical geometry and secret, replayable randomness."""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG); Web Mercator uses its own sphere, see tile_math


def haversine_m(lat1: ArrayLike, lng1: ArrayLike, lat2: ArrayLike, lng2: ArrayLike) -> np.ndarray:
    """Great-circle distance in metres between paired points (degrees in, arrays or scalars)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp = p2 - p1
    dl = np.radians(np.asarray(lng2) - np.asarray(lng1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


#: A track that comes back into its start circle and stays there this long, before it
#: has been far (``HOME_REACH_M``, or twice the radius) from the start, had not left home
#: yet: a phone left recording overnight that wandered out once (GPS drift, a step
#: outside) and then lay at home for hours. (A ride passing back through is no stay.)
HOME_STAY_S = 300.0
HOME_REACH_M = 1000.0


def between_end_circles(
    lat: np.ndarray,
    lng: np.ndarray,
    start_m: float,
    end_m: float,
    t: np.ndarray | None = None,
) -> np.ndarray:
    """Per point of a line: whether it comes after the line leaves the circle of
    ``start_m`` around its first point, and before it enters the one of ``end_m``
    around its last point (a radius of 0: every point). With times ``t``, "leaves" is
    the exit after its last stay of ``HOME_STAY_S`` in the circle before it first goes
    far; likewise at the end."""
    if not len(lat):
        return np.zeros(0, dtype=bool)
    from_start = haversine_m(lat[0], lng[0], lat, lng)
    to_end = haversine_m(lat, lng, lat[-1], lng[-1])
    back = None if t is None else -t[::-1]
    return _after_home(from_start, start_m, t) & _after_home(to_end[::-1], end_m, back)[::-1]


def _after_home(dist: np.ndarray, radius_m: float, t: np.ndarray | None) -> np.ndarray:
    """Per point, whether it comes after home (see ``between_end_circles``); ``dist``:
    from the first point."""
    n = len(dist)
    far = np.flatnonzero(dist >= max(2.0 * radius_m, HOME_REACH_M))
    inside = dist[: far[0] if len(far) else n] < radius_m
    out = np.flatnonzero(~inside)
    home = (out[0] if len(out) else len(inside)) - 1  # the first exit
    if t is not None and len(out):
        step = np.diff(np.r_[0, inside.astype(np.int8), 0])
        begin, end = np.flatnonzero(step == 1), np.flatnonzero(step == -1) - 1
        # (a stay that lasts to the line's end is its end: the other circle's part)
        stays = (begin > 0) & (end < n - 1) & (t[end] - t[begin] >= HOME_STAY_S)
        if stays.any():
            home = max(home, int(end[stays][-1]))
    return np.arange(n) > home


def step_lengths_m(lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    """Distance from each point to the next (length n-1).

    Equirectangular: for the metres-to-kilometres steps of a GPS track it agrees with
    the haversine to well under a millimetre per kilometre, at a third of the cost
    (this runs on every fix).
    """
    rlat = np.radians(lat)
    dy = np.diff(rlat)
    dx = np.diff(np.radians(lng))
    dx = (dx + np.pi) % (2 * np.pi) - np.pi  # across the antimeridian
    dx *= np.cos((rlat[1:] + rlat[:-1]) * 0.5)
    return EARTH_RADIUS_M * np.sqrt(dx * dx + dy * dy)


def offset_point(
    lat: float, lng: float, distance_m: float, bearing_deg: float
) -> tuple[float, float]:
    """The point ``distance_m`` away from (lat, lng) along ``bearing_deg`` (degrees out)."""
    d = distance_m / EARTH_RADIUS_M
    b = np.radians(bearing_deg)
    p1, l1 = np.radians(lat), np.radians(lng)
    p2 = np.arcsin(np.sin(p1) * np.cos(d) + np.cos(p1) * np.sin(d) * np.cos(b))
    l2 = l1 + np.arctan2(np.sin(b) * np.sin(d) * np.cos(p1), np.cos(d) - np.sin(p1) * np.sin(p2))
    lng2 = (np.degrees(l2) + 540.0) % 360.0 - 180.0
    return float(np.degrees(p2)), float(lng2)


@lru_cache(maxsize=8)
def _mac_key(salt: str) -> bytes:
    # BLAKE2b takes keys up to 64 bytes; any salt is first hashed to 32.
    return hashlib.sha256(salt.encode()).digest()


def secret_uniforms(salt: str, *parts: object, n: int = 1) -> tuple[float, ...]:
    """``n`` numbers in [0, 1) that only someone holding ``salt`` can predict.

    Derived with keyed BLAKE2b (a MAC, and cheaper than HMAC on this per-activity path)
    from the salt and ``parts`` (e.g. an activity id), so a replay of the same stream
    draws exactly the same numbers.
    """
    msg = "\x1f".join(str(p) for p in parts).encode()
    digest = hashlib.blake2b(msg, key=_mac_key(salt), digest_size=8 * n).digest()
    return tuple(int.from_bytes(digest[8 * i : 8 * i + 8], "big") / 2**64 for i in range(n))


def secret_uniform(salt: str, *parts: object) -> float:
    """One number of ``secret_uniforms``."""
    return secret_uniforms(salt, *parts)[0]
