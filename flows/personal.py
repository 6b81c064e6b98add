"""Route a trimmed activity to the stores: the public store only when it contributes,
the athlete's personal store always (when ``personal_heatmaps`` is on).

An activity that is not public (``followers_only``, ``only_me``, ``hide_map``, or its
athlete opted out) is trimmed exactly like a public one, but its path goes to the
personal store alone; the public store gets the same path-less row it always got, so
nothing a snapshot reads depends on private activities.
"""

from __future__ import annotations

from heatmetro.core.config import Config
from heatmetro.flows.batch import TrimJob
from heatmetro.state.changes import ActivityChange, StoreItem
from heatmetro.state.personal_store import PersonalChange

Routed = StoreItem | PersonalChange


def route(job: TrimJob, change: StoreItem, config: Config) -> list[Routed]:
    """The items one finished ``TrimJob`` makes (``change``: its trimmed version, or a
    dead letter when trimming failed)."""
    out: list[Routed] = []
    if job.withheld:
        # Exactly the path-less row the public store always got, even when trimming for
        # the personal store failed: it is what hides an older public version.
        out.append(
            ActivityChange(
                status=job.withheld,
                path=b"",
                heat=b"",
                edges=b"",
                hexagons=b"",
                od=b"",
                fixes_kept=0,
                **job.base,
            )  # fmt: skip
        )
        if not isinstance(change, ActivityChange):
            return [*out, change]
    elif not isinstance(change, ActivityChange):
        return [change]
    else:
        out.append(change)
    if config.personal_heatmaps:
        out.append(PersonalChange(change, job.visibility, job.hide_map))
    return out
