"""A seeded generator of messy phone GPS: what real people record going about their day.

Every activity is honest movement with real-world faults mixed in:

* multi-modal days: a walk, run or ride with a bus, car or train stretch in the middle,
  every fix with independent GPS noise of 1-8 m (sigma, per activity);
* cold starts (the first fixes kilometres away) and bad last fixes;
* spikes (1-4 fixes thrown 100 m - 5 km off, then back on the track);
* clock jumps (the device clock leaps forward minutes to a day);
* still devices jittering for hours (a watch left on a table, 1 Hz);
* long hikes (up to 100,000 fixes at 1 Hz, with jumps and spikes).

Usage: ``python bench/messy_tracks.py OUT.jsonl [--fixes N] [--seed S]`` writes a stream
of about N fixes (athlete events first); ``bench/ingest.py`` uses ``messy_events``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

HOME = (42.3195, -72.6350)  # Northampton, MA: the bike-share data's town
EARTH_M_PER_DEG = 111_195.0
MONTH = datetime(2021, 6, 1, tzinfo=UTC)
SPORTS = {"Walk": 1.4, "Run": 3.0, "Ride": 6.0, "Hike": 1.2}
VEHICLES = {"Walk": 12.0, "Run": 15.0, "Ride": 35.0, "Hike": 12.0}  # bus, car, train


class Track:
    """Positions in metres east/north of ``HOME`` and times, grown piece by piece."""

    def __init__(self, rng: np.random.Generator, x: float, y: float) -> None:
        self.rng = rng
        self.x, self.y, self.t = [np.array([x])], [np.array([y])], [np.array([0.0])]
        self.heading = rng.uniform(0, 2 * math.pi)

    @property
    def end(self) -> tuple[float, float, float]:
        return float(self.x[-1][-1]), float(self.y[-1][-1]), float(self.t[-1][-1])

    def move(self, seconds: float, speed: float, dt: float, turn: float, noise: float) -> None:
        """Travel at about ``speed`` for ``seconds``, a fix every ``dt`` s (jittered)."""
        n = max(1, int(seconds / dt))
        steps = self.rng.uniform(0.7 * dt, 1.3 * dt, n) if dt > 1 else np.full(n, dt)
        heading = self.heading + np.cumsum(self.rng.normal(0, turn, n))
        self.heading = float(heading[-1])
        v = speed * self.rng.uniform(0.8, 1.2)
        x0, y0, t0 = self.end
        xs = x0 + np.cumsum(v * steps * np.cos(heading))
        ys = y0 + np.cumsum(v * steps * np.sin(heading))
        self.x.append(xs + self.rng.normal(0, noise, n))
        self.y.append(ys + self.rng.normal(0, noise, n))
        self.t.append(t0 + np.cumsum(steps))

    def still(self, seconds: float, jitter_m: float) -> None:
        """A device lying still at 1 Hz, its position wandering a few metres."""
        n = int(seconds)
        x0, y0, t0 = self.end
        drift = np.cumsum(self.rng.normal(0, 0.3, (n, 2)), axis=0)
        drift -= np.linspace(0, 1, n)[:, None] * drift[-1]  # wanders, comes back
        xy = np.clip(drift, -jitter_m, jitter_m) + self.rng.normal(0, jitter_m / 3, (n, 2))
        self.x.append(x0 + xy[:, 0])
        self.y.append(y0 + xy[:, 1])
        self.t.append(t0 + 1.0 + np.arange(n))

    def clock_jump(self) -> None:
        self.t[-1] = self.t[-1].copy()
        self.t[-1][-1] += self.rng.uniform(600, 86_400)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, y, t = (np.concatenate(p) for p in (self.x, self.y, self.t))
        # Spikes: a few fixes thrown far off, then back on the track.
        n = len(t)
        for _ in range(self.rng.poisson(1 + n / 2000)):
            at, w = int(self.rng.integers(1, max(2, n - 5))), int(self.rng.integers(1, 5))
            d, b = self.rng.uniform(100, 5000), self.rng.uniform(0, 2 * math.pi)
            x[at : at + w] += d * math.cos(b)
            y[at : at + w] += d * math.sin(b)
        return x, y, t

    def cold_start(self, x: np.ndarray, y: np.ndarray, t: np.ndarray, k: int) -> tuple:  # type: ignore[type-arg]
        d, b = self.rng.uniform(1000, 50_000), self.rng.uniform(0, 2 * math.pi)
        cx = x[0] + d * math.cos(b) + self.rng.normal(0, 20, k)
        cy = y[0] + d * math.sin(b) + self.rng.normal(0, 20, k)
        ct = np.arange(k, dtype=np.float64)
        return np.r_[cx, x], np.r_[cy, y], np.r_[ct, t + k]


def _latlng(x: np.ndarray, y: np.ndarray) -> list[list[float]]:
    lat = HOME[0] + y / EARTH_M_PER_DEG
    lng = HOME[1] + x / (EARTH_M_PER_DEG * math.cos(math.radians(HOME[0])))
    return np.round(np.stack([lat, lng], axis=1), 7).tolist()  # type: ignore[no-any-return]


def _event(aid: str, athlete: str, sport: str, day: int, x, y, t) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    start = MONTH + timedelta(days=day % 28, hours=7 + day % 12)
    t = np.round(t - t[0], 1)
    return {
        "kind": "activity",
        "activity_id": aid,
        "athlete_id": athlete,
        "updated_at": (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sport_type": sport,
        "visibility": "everyone",
        "start_date": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "utc_offset_s": -14400,
        "streams": {"latlng": _latlng(x, y), "time": t.tolist()},
    }


def multimodal_day(rng: np.random.Generator) -> tuple[str, Track]:
    """Honest movement, a vehicle, honest movement; faults sprinkled in."""
    sport = str(rng.choice(["Walk", "Run", "Ride"], p=[0.5, 0.2, 0.3]))
    tr = Track(rng, *rng.uniform(-4000, 4000, 2))
    dt = float(rng.choice([1.0, 2.0, 5.0]))
    v = SPORTS[sport]
    noise = float(rng.uniform(1.0, 8.0))  # independent per fix: cheap phones in cities
    tr.move(rng.uniform(300, 1500), v, dt, 0.15, noise)
    if rng.random() < 0.7:
        tr.move(rng.uniform(300, 1500), VEHICLES[sport] * rng.uniform(1, 1.8), dt, 0.03, noise)
    if rng.random() < 0.15:
        tr.clock_jump()
    if rng.random() < 0.2:
        tr.still(rng.uniform(60, 900), 8.0)
    tr.move(rng.uniform(300, 1500), v, dt, 0.15, noise)
    return sport, tr


def still_watch(rng: np.random.Generator, hours: float) -> tuple[str, Track]:
    tr = Track(rng, *rng.uniform(-3000, 3000, 2))
    tr.still(hours * 3600, 10.0)
    return "Walk", tr


def long_hike(rng: np.random.Generator, fixes: int) -> tuple[str, Track]:
    tr = Track(rng, *rng.uniform(-3000, 3000, 2))
    legs = 4
    for leg in range(legs):
        tr.move(fixes / legs, SPORTS["Hike"], 1.0, 0.1, 3.0)
        if leg == 1:
            tr.clock_jump()
        if leg == 2:  # a teleport: the GPS loses lock and finds itself 2 km on
            x, y, t = tr.end
            tr.x.append(np.array([x + 2000.0]))
            tr.y.append(np.array([y]))
            tr.t.append(np.array([t + 5.0]))
    return "Hike", tr


def messy_events(fixes: int, seed: int = 2021) -> Iterator[dict[str, Any]]:
    """About ``fixes`` fixes of messy activities (athlete events first), seeded."""
    rng = np.random.default_rng(seed)
    plan: list[tuple[str, Track]] = []
    total = 0
    # The profiling cases of issue 7: long hikes with jumps, 8-hour still watches.
    for kind in ("hike", "watch", "hike", "watch"):
        if total > fixes * 0.4:
            break
        sport, tr = long_hike(rng, 100_000) if kind == "hike" else still_watch(rng, 8.0)
        plan.append((sport, tr))
        total += sum(len(t) for t in tr.t)
    while total < fixes:
        sport, tr = (
            still_watch(rng, rng.uniform(1, 3)) if rng.random() < 0.03 else multimodal_day(rng)
        )
        plan.append((sport, tr))
        total += sum(len(t) for t in tr.t)
    athletes = max(10, len(plan) // 4)
    for a in range(athletes):
        yield {"kind": "athlete", "athlete_id": f"m{a}", "updated_at": "2021-01-01T00:00:00Z"}
    for i, (sport, tr) in enumerate(plan):
        x, y, t = tr.arrays()
        if rng.random() < 0.4:
            x, y, t = tr.cold_start(x, y, t, int(rng.integers(1, 6)))
        if rng.random() < 0.1:  # bad last fixes
            x, y, t = (np.r_[x, x[-1] + 30_000.0], np.r_[y, y[-1]], np.r_[t, t[-1] + 1.0])
        yield _event(f"messy-{i}", f"m{i % athletes}", sport, i, x, y, t)


def write_jsonl(events: Iterator[dict[str, Any]], path: Path) -> tuple[int, int]:
    """Write ``events``; (events, fixes) written."""
    n = fixes = 0
    with path.open("wb") as fh:
        for ev in events:
            fh.write(orjson.dumps(ev) + b"\n")
            n += 1
            if ev["kind"] == "activity":
                fixes += len(ev["streams"]["time"])
    return n, fixes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--fixes", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=2021)
    args = ap.parse_args()
    n, fixes = write_jsonl(messy_events(args.fixes, args.seed), args.out)
    print(f"{args.out}: {n:,} events, {fixes:,} fixes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
