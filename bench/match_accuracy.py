"""Map-matching accuracy by travel mode: distance alone vs the modes' way preferences.

Walks along sidewalks mapped as ways of their own (``footway=sidewalk``) and rides along
roads bikes are meant to use, on the real Helsinki extract, each with ~200 m of the ways
such a traveller takes before and after (tests/street_tracks.py: a walker keeps to the
sidewalk where one is mapped, a cyclist to the road or cycle track); seeded noisy fixes
(sigma 5 m, 1 Hz, 1.4 m/s on foot, 5 m/s by bike). Each route is matched three times in this
process: with ``AVOID_LOGP = 0`` (the emission reads the distance only), with the
preferences on the fixes alone (``AVOID_ROUTE_FACTOR = 1``), and with the current
setting (on the streets routed between fixes too). Reported, length-weighted over the routes: the share of the
route's ways not matched (missed), of matched ways not on the route (extra), of that on
ways the mode avoids (a walker on a carriageway, a cyclist on a footway), and how many
routes had their middle edge matched.

    .venv/bin/python bench/match_accuracy.py [--routes 150] [--seed 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import heatmetro.flows.map_match as mm  # noqa: E402
from heatmetro.state.street_network import StreetNetwork  # noqa: E402
from tests.street_tracks import HELSINKI, helsinki, noisy_track, route_through  # noqa: E402

ROADS = ["primary", "secondary", "tertiary", "residential", "unclassified", "living_street"]


@dataclass
class Tally:
    routed_m: float = 0.0
    missed_m: float = 0.0
    extra_m: float = 0.0
    avoided_m: float = 0.0
    middles: int = 0
    routes: int = 0
    seconds: list[float] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"missed {self.missed_m / self.routed_m:5.1%}  extra {self.extra_m / self.routed_m:5.1%}"
            f"  on avoided ways {self.avoided_m / self.routed_m:5.1%}"
            f"  middle edge matched {self.middles}/{self.routes}"
        )


def evaluate(
    net: StreetNetwork, mode: str, middles: np.ndarray, speed: float, n: int, seed: int
) -> dict[tuple[float, float], Tally]:
    rng = np.random.default_rng(seed)
    picks = rng.choice(middles, size=min(n, len(middles)), replace=False).tolist()
    # (fix penalty, route factor): distance only; preferences on the fixes alone; on
    # the fixes and the streets routed between them (the current setting).
    current = (mm.AVOID_LOGP, mm.AVOID_ROUTE_FACTOR)
    out = {(0.0, 1.0): Tally(), (current[0], 1.0): Tally(), current: Tally()}
    for i, edge in enumerate(picks):
        route = route_through(net, edge, bool(rng.integers(2)), bike=mode == "bike", around_m=200)
        pts = np.array(noisy_track(net, route, seed=i, speed_ms=speed))
        ways = {e for e, _ in route}
        for setting, tally in out.items():
            mm.AVOID_LOGP, mm.AVOID_ROUTE_FACTOR = setting
            mm.graph_for.cache_clear()
            avoided = mm.avoided_edges(net, mode)
            k = len(pts)
            m = mm.match_activity(
                net, mode, pts[:, 0], pts[:, 1], np.arange(k, dtype=float), np.zeros(k)
            )
            got = {int(e) for e in net.index_of(m["edge"])}
            tally.routes += 1
            tally.middles += edge in got
            tally.routed_m += float(net.length_m[list(ways)].sum())
            tally.missed_m += float(net.length_m[list(ways - got)].sum())
            tally.extra_m += float(net.length_m[list(got - ways)].sum())
            tally.avoided_m += sum(float(net.length_m[e]) for e in got - ways if avoided[e])
    mm.AVOID_LOGP, mm.AVOID_ROUTE_FACTOR = current
    mm.graph_for.cache_clear()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--routes", type=int, default=150, help="per mode (default 150)")
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-acc-") as tmp:
        net = helsinki(Path(tmp))
        sidewalks = np.flatnonzero((net.footway == "sidewalk") & (net.length_m > 40))
        roads = np.flatnonzero(
            np.isin(net.highway, ROADS)
            & (net.length_m > 40)
            & (net.bike > 0)
            & ~mm.avoided_edges(net, "bike")
        )
        print(f"{HELSINKI.name}: {len(sidewalks)} sidewalk and {len(roads)} road edges over 40 m")
        for mode, middles, speed in (("foot", sidewalks, 1.4), ("bike", roads, 5.0)):
            result = evaluate(net, mode, middles, speed, args.routes, args.seed)
            for (logp, factor), tally in result.items():
                label = (
                    "distance only" if logp == 0
                    else f"fixes ({logp})" if factor == 1
                    else f"fixes, routes x{factor:g}"
                )  # fmt: skip
                print(f"{mode}, {label:18s} {tally.line()}")


if __name__ == "__main__":
    main()
