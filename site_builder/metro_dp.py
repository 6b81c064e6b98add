"""Optional differentially-private Metro counts (``metro_epsilon``, ``metro_delta``).

What is protected: each published number (a trip or people count of one row and
direction, or a sub-count) is (epsilon, delta)-differentially private with respect to
adding or removing one person, whose contribution to it is first bounded: at most
``MAX_TRIPS_PER_PERSON`` trips, and 1 to a people count. A person who appears in k
published numbers is protected at k * epsilon by composition; which rows appear is
still decided by the exact ``min_athletes`` rule (the project's first privacy rule),
so the row set itself is not covered by the guarantee.

Calibration is OpenDP's: the noise scale is the smallest for which OpenDP's own
privacy map of its discrete Laplace (delta unset: pure epsilon-DP) or discrete Gaussian
(delta set: zCDP converted to (epsilon, delta)) measurement stays within the budget.
Sampling is done here with numpy, because OpenDP deliberately draws from an unseedable
system generator and builds must be byte-identical: the generator is seeded from the
secret salt, so the noise is as secret as the salt. The samplers draw exactly OpenDP's
distributions: a discrete Laplace as the difference of two geometric variables, a
discrete Gaussian by rejection from a discrete Laplace (Canonne, Kamath and Steinke 2020,
Algorithm 3).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from heatmetro.core.errors import ConfigError

MAX_TRIPS_PER_PERSON = 10  # a daily commuter's month on one street, in one direction


@functools.lru_cache(maxsize=32)  # a binary search over OpenDP maps: once per budget
def _calibrate(epsilon: float, delta: float | None, sensitivity: int) -> float:
    """The smallest noise scale OpenDP certifies for ``sensitivity`` within the budget."""
    try:
        import opendp.prelude as dp  # imported only when a budget is set (it is large)
    except ImportError as err:
        msg = "metro_epsilon is set but OpenDP is not installed: pip install 'heatmetro[dp]'"
        raise ConfigError(msg) from err

    dp.enable_features("contrib")
    space = dp.atom_domain(T=int), dp.absolute_distance(T=int)
    if delta is None:
        return float(
            dp.binary_search_param(
                lambda s: dp.m.make_laplace(*space, scale=s), d_in=sensitivity, d_out=epsilon
            )
        )
    return float(
        dp.binary_search_param(
            lambda s: dp.c.make_fix_delta(
                dp.c.make_zCDP_to_approxDP(dp.m.make_gaussian(*space, scale=s)), delta
            ),
            d_in=sensitivity,
            d_out=(epsilon, delta),
        )
    )


def _discrete_laplace(rng: np.random.Generator, scale: float, n: int) -> np.ndarray:
    p = -math.expm1(-1.0 / scale)  # 1 - exp(-1/scale)
    return rng.geometric(p, n) - rng.geometric(p, n)


def _discrete_gaussian(rng: np.random.Generator, sigma: float, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.int64)
    todo = np.arange(n)
    t = math.floor(sigma) + 1
    while len(todo):
        y = _discrete_laplace(rng, t, len(todo))
        accept = rng.random(len(todo)) < np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
        out[todo[accept]] = y[accept]
        todo = todo[~accept]
    return out


@dataclass
class DpNoise:
    """Seeded, calibrated integer noise for Metro counts.

    Attributes:
        epsilon, delta: the budget of each published number.
        trip_scale, people_scale: OpenDP-calibrated scale for a count with sensitivity
            ``MAX_TRIPS_PER_PERSON`` (trips) and 1 (people).
        mechanism: ``discrete Laplace`` or ``discrete Gaussian``.
    """

    epsilon: float
    delta: float | None
    trip_scale: float
    people_scale: float
    mechanism: str
    max_trips: int = MAX_TRIPS_PER_PERSON
    _rng: np.random.Generator = field(repr=False, default_factory=np.random.default_rng)

    @classmethod
    def create(
        cls, epsilon: float | None, delta: float | None, salt: str, release: str
    ) -> DpNoise | None:
        """``None`` when ``epsilon`` is unset (exact counts).

        ``release`` (the snapshot month) is part of the seed: a rebuild of the same month
        draws the same noise, but two months never share it (otherwise subtracting two
        releases with the same layout would cancel the noise out).
        """
        if epsilon is None:
            if delta is not None:
                msg = f"metro_delta = {delta}: set metro_epsilon too (delta alone means nothing)"
                raise ConfigError(msg)
            return None
        if not (epsilon > 0 and math.isfinite(epsilon)):
            msg = f"metro_epsilon = {epsilon}: expected a positive number"
            raise ConfigError(msg)
        if delta is not None and not 0 < delta < 1:
            msg = f"metro_delta = {delta}: expected 0 < delta < 1"
            raise ConfigError(msg)
        seed = hashlib.sha256(f"heatmetro-metro-dp\0{salt}\0{release}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(seed[:16], "little"))
        return cls(
            epsilon=epsilon,
            delta=delta,
            trip_scale=_calibrate(epsilon, delta, MAX_TRIPS_PER_PERSON),
            people_scale=_calibrate(epsilon, delta, 1),
            mechanism="discrete Laplace" if delta is None else "discrete Gaussian",
            _rng=rng,
        )

    def add(self, counts: np.ndarray, *, people: bool) -> np.ndarray:
        """``counts`` plus fresh noise, never below 0 (clamping is post-processing)."""
        scale = self.people_scale if people else self.trip_scale
        n = counts.size
        if self.delta is None:
            noise = _discrete_laplace(self._rng, scale, n)
        else:
            noise = _discrete_gaussian(self._rng, scale, n)
        return np.maximum(counts + noise.reshape(counts.shape), 0)
