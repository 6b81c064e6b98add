"""The ValleyBike stream N times over, in N towns: the same city's data, N times bigger.

A bench of incremental work needs more than one small city: what a rebuild costs on top
of the change (start-up, anything still proportional to the whole window) shrinks next to
a full build only as the data grows. Town ``i`` is the stream moved ``0.6 * i`` degrees
east (~50 km at 42 N: no street shared with another town), with its own athletes and
activities (ids suffixed ``-t<i>``) and their privacy zones moved along. Town 0 is the
stream itself.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

#: Degrees of longitude between two towns.
TOWN_STEP_DEG = 0.6


def in_towns(events: list[dict], towns: int) -> Iterator[dict]:
    """``events`` once per town, town by town (each town's order as given)."""
    for town in range(towns):
        shift = TOWN_STEP_DEG * town
        for event in events:
            if town == 0:
                yield event
                continue
            ev = copy.deepcopy(event)
            for key in ("athlete_id", "activity_id"):
                if key in ev:
                    ev[key] = f"{ev[key]}-t{town}"
            points = (ev.get("streams") or {}).get("latlng")
            if points:
                ev["streams"]["latlng"] = [[lat, lng + shift] for lat, lng in points]
            for zone in ev.get("privacy_zones") or []:
                zone["lng"] += shift
            yield ev
