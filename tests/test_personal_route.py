"""Routing of trimmed activities between the public and the personal store."""

from __future__ import annotations

from typing import Any

from heatmetro.core.config import Config
from heatmetro.core.contract import validate_event
from heatmetro.flows.batch import TrimJob
from heatmetro.flows.fold import AthleteFold
from heatmetro.flows.personal import route
from heatmetro.state.changes import ActivityChange, DeadLetter
from heatmetro.state.personal_store import PersonalChange
from tests.conftest import TEST_SALT
from tests.streams import NORTHAMPTON_EAST, NORTHAMPTON_WEST, activity, line


def job(config: Config, **fields: Any) -> TrimJob:
    event = validate_event(
        activity("r1", "a1", line(NORTHAMPTON_WEST, NORTHAMPTON_EAST), **fields), b""
    )
    _, items = AthleteFold(config).plan(None, event)
    assert isinstance(items[0], TrimJob)
    return items[0]


def test_private_version_hides_the_public_one_even_if_trimming_fails() -> None:
    config = Config(salt=TEST_SALT)
    failed = DeadLetter("f.jsonl", 7, "activity r1: cannot process: boom", "")
    out = route(job(config, visibility="only_me"), failed, config)
    public = [i for i in out if isinstance(i, ActivityChange)]
    assert len(public) == 1 and public[0].status == "hidden" and public[0].path == b""
    assert failed in out and not any(isinstance(i, PersonalChange) for i in out)


def test_private_activity_goes_to_the_personal_store_only() -> None:
    config = Config(salt=TEST_SALT)
    j = job(config, visibility="followers_only")
    trimmed = AthleteFold(config).apply(
        None,
        validate_event(
            activity(
                "r1", "a1", line(NORTHAMPTON_WEST, NORTHAMPTON_EAST), visibility="followers_only"
            ),
            b"",
        ),
    )[1]
    public = [i for i in trimmed if isinstance(i, ActivityChange)]
    personal = [i for i in trimmed if isinstance(i, PersonalChange)]
    assert [p.status for p in public] == ["hidden"] and public[0].path == b""
    assert (
        len(personal) == 1
        and personal[0].activity.path
        and personal[0].visibility == "followers_only"
    )
    assert j.withheld == "hidden"
    # With personal heatmaps off, nothing is even trimmed for the personal store.
    off = Config(salt=TEST_SALT, personal_heatmaps=False)
    _, items = AthleteFold(off).plan(
        None,
        validate_event(
            activity("r1", "a1", line(NORTHAMPTON_WEST, NORTHAMPTON_EAST), visibility="only_me"),
            b"",
        ),
    )
    assert [type(i) for i in items] == [ActivityChange]
