"""``heatmetro ingest`` as a user runs it: real Bytewax, real SQLite, real files.

The invariants of DESIGN.md, black box: bad input never stops the stream, replay and
halves change nothing, worker counts agree, a SIGKILL loses and doubles nothing,
erasure publishes what the stream without the athlete publishes, and nothing inside a
privacy zone or a hidden start/end of real rides is stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import h3.api.basic_int as h3
import numpy as np
import orjson
import pytest

import heatmetro
from heatmetro.core.geo import haversine_m, step_lengths_m
from heatmetro.flows.importers.jsonl import write_jsonl
from heatmetro.flows.importers.valleybike import valleybike_events
from heatmetro.flows.importers.valleybike_csv import DATA_DIR
from heatmetro.flows.ingest import RAW_KEEP
from heatmetro.state import store as store_module
from heatmetro.state.records import PATH_DTYPE, from_blob
from tests.conftest import HEATMETRO, REPO, SHARED_DATA, cli_env, write_config
from tests.store_rows import query
from tests.streams import (
    NORTH_EAST,
    NORTH_WEST,
    NORTHAMPTON_EAST,
    NORTHAMPTON_WEST,
    activity,
    athlete,
    deleted,
    line,
    street_rides,
    to_jsonl,
)
from tests.test_contract import BAD

Run = Callable[..., subprocess.CompletedProcess[str]]
T0 = datetime(2021, 6, 2, 11, tzinfo=UTC)  # a Wednesday
ELM = line(NORTHAMPTON_WEST, NORTHAMPTON_EAST)
NORTH = line(NORTH_WEST, NORTH_EAST)
MIDDLE = {"lat": 42.3195, "lng": -72.6350, "radius_m": 150}


# --------------------------------------------------------------------------- helpers


def new_project(folder: Path, **overrides: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_config(folder, **overrides)


def ingest(run_cli: Run, cfg: Path, *inputs: str | Path, workers: int = 1, **kw: Any) -> Any:
    return run_cli("ingest", "-c", cfg, *inputs, "-w", str(workers), **kw)


def state_of(cfg: Path) -> Path:
    return cfg.parent / "state"


def tables(cfg: Path) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    """The store's content by key, over all shards (dead letters aside: they name their
    source file)."""
    return {
        "athletes": query(state_of(cfg), "SELECT * FROM athletes"),
        "activities": query(state_of(cfg), "SELECT * FROM activities"),
        "athlete_months": query(state_of(cfg), "SELECT * FROM athlete_months"),
    }


def stats(run_cli: Run, cfg: Path) -> dict[str, Any]:
    return json.loads(run_cli("stats", "-c", cfg, "--json").stdout)


def site_files(cfg: Path) -> dict[str, str]:
    """Every published file under site/ (through the symlink) -> sha256."""
    root = (cfg.parent / "site").resolve()
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def write(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_bytes(to_jsonl(events))
    return path


def day(n: float, hours: float = 0) -> datetime:
    return T0 + timedelta(days=n, hours=hours)


def synthetic_stream() -> list[dict[str, Any]]:
    """Six athletes on two Northampton streets in June 2021, with every kind of change."""
    ev: list[dict[str, Any]] = [
        athlete("a0", hide_start_end_m=100),
        athlete("a1", hide_start_end_m=0),
        athlete("a2", privacy_zones=[MIDDLE]),
    ]
    for i in range(6):
        a = f"a{i}"
        ev.append(activity(f"{a}-elm", a, ELM, start=day(i), commute=i % 2 == 0))
        ev.append(activity(f"{a}-north", a, NORTH[::-1], start=day(i, 8)))
        ev.append(activity(f"{a}-run", a, NORTH, start=day(i, 20), sport_type="Run"))
    ev += [
        activity("a3-secret", "a3", ELM, start=day(9), visibility="followers_only"),
        activity("a4-nomap", "a4", ELM, start=day(9), hide_map=True),
        deleted("a5-run", "a5", updated=day(12)),
        activity("a1-north", "a1", NORTH[::-1], start=day(1, 8), updated=day(13),
                 visibility="only_me"),
        athlete("a3", updated=datetime(2021, 6, 20, tzinfo=UTC), privacy_zones=[MIDDLE]),
        athlete("a4", updated=datetime(2021, 6, 21, tzinfo=UTC), hide_start_end_m=600),
        activity("a0-short", "a0", ELM[:20], start=day(14)),
    ]  # fmt: skip
    return ev


@pytest.fixture(scope="session")
def june(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled June 2018 ValleyBike month as a stream (283 events)."""
    out = tmp_path_factory.mktemp("june") / "june2018.jsonl"
    write_jsonl(valleybike_events([DATA_DIR / "june2018.csv.gz"]), out)
    return out


@pytest.fixture(scope="session")
def october(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled October 2020 ValleyBike month as a stream (~1,500 events)."""
    out = tmp_path_factory.mktemp("october") / "october2020.jsonl"
    write_jsonl(valleybike_events([DATA_DIR / "october2020.csv.gz"]), out)
    return out


# --------------------------------------------------------------------------- bad input


def test_a_dead_letters_reason_quotes_no_place(run_cli: Run, project: Path) -> None:
    """The reason may quote the fix it refused: that fix's other half is a real place
    (an outside review found a doorstep there, and one in a zone written 4232011.3e-5)."""
    start = (
        '"start_date":"2021-06-01T10:00:00Z","utc_offset_s":0,"updated_at":"2021-06-01T11:00:00Z"'
    )
    head = '{"kind":"activity","activity_id":"x%d","athlete_id":"a","sport_type":"Ride",'
    lines = [
        head % 1 + start + ',"visibility":"everyone","streams":{"latlng":'
        '[[42.320213,-72.650087],[42.320213,200.5]],"time":[0,1]}}',
        head % 2 + start + ',"visibility":"everyone","streams":{"latlng":'
        '[["42.320113","-72.650087"],["42.320213","-72.650087"]],"time":[0,1]}}',
        '{"kind":"athlete","athlete_id":"a","updated_at":"2021-06-01T11:00:00Z",'
        '"privacy_zones":[{"lat":4232011.3e-5,"lng":-7265008.7e-5,"radius_m":-1}]}',
    ]
    events = project / "bad.jsonl"
    events.write_text("\n".join(lines) + "\n")
    run_cli("ingest", "-c", project / "config.toml", events)
    text = (project / "state" / "dead_letters.jsonl").read_text()
    assert len(text.splitlines()) == 3, text
    for place in ("42.320", "72.650", "4232011", "7265008"):
        assert place not in text, (place, text)
    assert "longitude out of range" in text and "200.5" in text  # the bad half stays


def test_a_dead_letters_reason_is_capped_and_says_how_long_it_was(
    run_cli: Run, project: Path
) -> None:
    """A deletion whose id is a million characters: its reason names it, so the reason
    was a megabyte in the store and in dead_letters.jsonl (an outside review)."""
    huge = "x" * 1_000_000
    events = write(project / "huge-id.jsonl", [deleted(huge, "a1", updated=day(3))])
    run_cli("ingest", "-c", project / "config.toml", events)
    (dead,) = [json.loads(x) for x in (project / "state" / "dead_letters.jsonl").open()]
    (stored,) = query(project / "state", "SELECT reason FROM dead_letters")
    for reason in (dead["reason"], stored[0]):
        assert reason.startswith("activity_deleted xxx") and len(reason) < 600, len(reason)
        assert re.fullmatch(r"activity_deleted x+… \(1,000,\d{3} characters\)", reason), reason


def test_bad_records_go_to_dead_letters_and_the_rest_is_stored(run_cli: Run, project: Path) -> None:
    cfg = project / "config.toml"
    good = synthetic_stream()[:9]  # 3 athlete events, then a0..a1's six activities
    lines: list[bytes] = []
    expected: dict[int, list[str]] = {}
    bad = iter(BAD)
    for e in good:
        lines.append(orjson.dumps(e))
        case_id, raw, patterns = next(bad)
        lines.append(raw)
        expected[len(lines)] = patterns
    for case_id, raw, patterns in bad:  # the rest of the bad kinds, one after another
        assert b"\n" not in raw, case_id
        lines.append(raw)
        expected[len(lines)] = patterns
    lines.append(b"")  # a blank line is skipped, but still counts as a line
    lines.append(b"\xff\xfe not utf-8")
    expected[len(lines)] = [r"^invalid JSON"]
    lines.append(orjson.dumps(activity("last", "a1", ELM, start=day(3))))
    stream = project / "mixed.jsonl"
    stream.write_bytes(b"\n".join(lines) + b"\n")

    proc = ingest(run_cli, cfg, stream, check=False, env=cli_env(HEATMETRO_QUIET="0"))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    path = project / "state" / "dead_letters.jsonl"
    n = len(expected)
    assert f", {n} new dead letters ({n} on file: {path})" in proc.stdout, proc.stdout

    dead = [
        json.loads(x) for x in (project / "state" / "dead_letters.jsonl").read_text().splitlines()
    ]
    assert [d["position"] for d in dead] == sorted(expected)

    for d in dead:
        assert d["source"] == str(stream.resolve())
        assert "\n" not in d["reason"]
        for pattern in expected[d["position"]]:
            assert re.search(pattern, d["reason"]), (d["position"], pattern, d["reason"])
        # The record's text, but no place: every coordinate masked (raw points never
        # reach the store, a broken record's neither).
        line = lines[d["position"] - 1][:RAW_KEEP].decode("utf-8", errors="replace")
        # (Numbers written with an exponent too, such as 1e999: 42320113e-6 is a place.)
        bare_exponents = re.sub(r"(?<=[\[,:])-?\d+(?:\.\d+)?[eE][+-]?\d+(?=[\],}])", "#", line)
        # (And bare integers of 6+ digits: 6016991 is 60.16991 scaled to an integer.)
        bare_integers = re.sub(r"(?<=[\[,: ])-?\d{6,}(?:\.\d+)?(?=[\],})])", "#", bare_exponents)
        assert d["raw"] == re.sub(r"-?\d+\.\d{3,}", "#", bare_integers)
        assert not re.search(r"\d\.\d{3}|\d{6}", d["raw"]), d
    # Every good record is in the store.
    ids = {r[0] for r in tables(cfg)["activities"]}
    assert ids == {e["activity_id"] for e in good if e["kind"] == "activity"} | {"last"}
    s = stats(run_cli, cfg)
    assert s["dead_letters"] == len(expected) and s["athletes"] == 3
    assert s["activities_by_status"] == {"active": 7}
    # The same command again files the same letters again: none of them is new.
    proc = ingest(run_cli, cfg, stream, check=False, env=cli_env(HEATMETRO_QUIET="0"))
    assert f", 0 new dead letters ({n} on file: {path})" in proc.stdout, proc.stdout


# --------------------------------------------------------------------------- replay


def test_replay_and_halves_give_the_same_store(run_cli: Run, tmp_path: Path) -> None:
    events = synthetic_stream()
    whole = write(tmp_path / "whole.jsonl", events)
    a = new_project(tmp_path / "a")
    ingest(run_cli, a, whole)
    ref = tables(a)
    assert (
        len(ref["activities"]) == 21 and len(ref["athlete_months"]) >= 9
    )  # a4 hides 600 m later: its 1.65 km rides keep nothing

    ingest(run_cli, a, whole)  # resumes at the end: nothing new
    assert tables(a) == ref
    copy = write(tmp_path / "copy.jsonl", events)  # every event delivered again
    ingest(run_cli, a, copy)
    assert tables(a) == ref

    b = new_project(tmp_path / "b")
    half = len(events) // 2
    ingest(run_cli, b, write(tmp_path / "first.jsonl", events[:half]))
    ingest(run_cli, b, write(tmp_path / "second.jsonl", events[half:]))
    assert tables(b) == ref


def test_stdin_is_an_input(run_cli: Run, tmp_path: Path) -> None:
    events = synthetic_stream()
    a, b = new_project(tmp_path / "a"), new_project(tmp_path / "b")
    ingest(run_cli, a, write(tmp_path / "s.jsonl", events))
    ingest(run_cli, b, "-", stdin=to_jsonl(events) + b"{oops\n")
    assert tables(b) == tables(a)
    dead = (tmp_path / "b" / "state" / "dead_letters.jsonl").read_text().splitlines()
    assert len(dead) == 1
    assert json.loads(dead[0])["source"].startswith("stdin@")  # each run's stdin is new data
    assert json.loads(dead[0])["position"] == len(events) + 1


def test_stats_json_matches_the_stream(run_cli: Run, project: Path) -> None:
    cfg = project / "config.toml"
    events = [
        athlete("p1"),
        athlete("p2", aggregate_opt_out=True),
        activity("ok1", "p1", ELM, start=day(0)),
        activity("ok2", "p1", NORTH, start=day(1)),
        activity("ok3", "p3", ELM, start=day(2)),  # no athlete event: defaults
        activity("fo", "p1", ELM, start=day(3), visibility="followers_only"),
        activity("me", "p3", ELM, start=day(3), visibility="only_me"),
        activity("nomap", "p3", ELM, start=day(4), hide_map=True),
        activity("out", "p2", ELM, start=day(5)),
        activity("tiny", "p1", ELM[:30], start=day(6)),  # 150 m: all hidden start/end
        activity("gone", "p3", NORTH, start=day(7)),
        deleted("gone", "p3", updated=day(8)),
        deleted("never-seen", "p3", updated=day(8)),
    ]
    stream = write(project / "s.jsonl", events)
    stream.write_bytes(stream.read_bytes() + b"not json\n[]\n")
    ingest(run_cli, cfg, stream)
    s = stats(run_cli, cfg)
    assert s["activities_by_status"] == {
        "active": 3, "hidden": 3, "opted_out": 1, "empty": 1, "deleted": 2,
    }  # fmt: skip
    assert s["activities"] == 10
    # p3 sent no athlete event but has activities: still an athlete.
    assert s["athletes"] == 3 and s["athletes_opted_out"] == 1
    assert s["athletes_contributing"] == 2  # p1 and p3
    assert s["dead_letters"] == 2
    assert s["months"] == ["2021-06"]
    # Every shard at the newest migration, and the version that wrote it.
    newest = max(name for name in vars(store_module) if re.fullmatch(r"m\d{3}_\w+", name))
    assert s["schema"] == [newest] and s["version"] == heatmetro.__version__
    assert s["aggregate_rows"] == 2  # p1 and p3, ride layer
    cells = (
        sum(n or 0 for (n,) in query(state_of(cfg), "SELECT sum(length(path)) FROM activities"))
        // PATH_DTYPE.itemsize
    )
    assert s["path_cells"] == cells > 0


# --------------------------------------------------------------------------- workers


def test_two_workers_store_what_one_does(run_cli: Run, tmp_path: Path, june: Path) -> None:
    one, two = new_project(tmp_path / "one"), new_project(tmp_path / "two")
    ingest(run_cli, one, june)
    ingest(run_cli, two, june, workers=2)
    t1 = tables(one)
    assert len(t1["activities"]) > 200 and t1["athlete_months"]
    assert tables(two) == t1


# --------------------------------------------------------------------------- crash


WORKER_MODULE = "heatmetro.flows.cluster_worker"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:  # gone
        return ""


def _worker_children(parent: int) -> list[int]:
    """Pids of the ingest worker processes whose parent is ``parent`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces
        if ppid == parent and WORKER_MODULE in _cmdline(int(entry.name)):
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Still running as an ingest worker (not a zombie, and the pid not reused)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and WORKER_MODULE in _cmdline(pid)


def _kill_after(
    cfg: Path, stream: Path, seconds: float, workers: int = 1, seen: list[int] | None = None
) -> bool:
    """Start ingest, SIGKILL it after ``seconds``; True if it was still running.

    ``seen`` receives the pids of its worker processes alive just before the kill."""
    proc = subprocess.Popen(
        [*HEATMETRO, "ingest", "-c", str(cfg), str(stream), "-w", str(workers)],
        env=cli_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        if seen is not None:
            seen.extend(_worker_children(proc.pid))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def test_sigkill_and_rerun_store_what_one_run_does(
    run_cli: Run, tmp_path: Path, october: Path
) -> None:
    ref = new_project(tmp_path / "ref")
    t = time.monotonic()
    ingest(run_cli, ref, october)
    whole_s = time.monotonic() - t
    expected = tables(ref)
    assert len(expected["activities"]) > 1000

    # Two kills at random moments of a run (the second one during the resumed run).
    # Kill well inside a run: a rerun can be faster than the measured one on a noisy machine.
    kills = sorted(random.uniform(0.3, max(0.4, min(3.0, 0.5 * whole_s))) for _ in range(2))
    crashed = new_project(tmp_path / "crashed")
    killed = [_kill_after(crashed, october, k) for k in kills]
    assert killed[0], f"ingest ({whole_s:.1f} s) finished before the kill at {kills[0]:.2f} s"
    ingest(run_cli, crashed, october)
    got = tables(crashed)
    assert len(got["activities"]) == len(expected["activities"]), kills
    assert got == expected, f"kills at {kills} s"


def test_sigkill_of_a_two_process_run_and_rerun(
    run_cli: Run, tmp_path: Path, october: Path
) -> None:
    """Killing `ingest -w 2` kills its worker processes too; the rerun finishes the job."""
    ref = new_project(tmp_path / "ref")
    t = time.monotonic()
    ingest(run_cli, ref, october, workers=2)
    whole_s = time.monotonic() - t
    kill_at = random.uniform(0.3, max(0.4, 0.5 * whole_s))
    workers: list[int] = []
    for attempt in range(6):
        crashed = new_project(tmp_path / f"crashed{attempt}")
        workers.clear()
        if not _kill_after(crashed, october, kill_at, workers=2, seen=workers):
            kill_at /= 2  # a run can be faster than the measured one: kill sooner
        elif not workers:
            kill_at *= 1.5  # killed before it started its worker: kill later
        else:
            break
    else:
        pytest.fail(f"no kill of ingest -w 2 while its worker ran ({whole_s:.1f} s run)")
    assert len(workers) == 1, workers  # -w 2: this process and one child
    deadline = time.monotonic() + 10
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, workers)), f"worker {workers} outlived the killed ingest"
    ingest(run_cli, crashed, october, workers=2)
    assert tables(crashed) == tables(ref)


# --------------------------------------------------------------------------- erasure


def _publish(run_cli: Run, cfg: Path, events: list[dict[str, Any]]) -> dict[str, str]:
    ingest(run_cli, cfg, write(cfg.parent / "s.jsonl", events))
    run_cli(
        "snapshot", "-c", cfg, "--month", "2021-06", env=cli_env(SOURCE_DATE_EPOCH="1700000000")
    )
    return site_files(cfg)


def test_erasure_publishes_what_the_stream_without_them_does(run_cli: Run, tmp_path: Path) -> None:
    events = synthetic_stream()
    # After everything: a2 opts out (and one more of their rides arrives), and one of
    # a0's rides is deleted. Published: what the stream without those events publishes.
    erased = [
        *events,
        athlete("a2", updated=datetime(2021, 7, 1, tzinfo=UTC), aggregate_opt_out=True),
        activity("a2-late", "a2", ELM, start=day(20)),
        deleted("a0-elm", "a0", updated=day(25)),
    ]
    without = [e for e in events if e["athlete_id"] != "a2" and e.get("activity_id") != "a0-elm"]
    sites = {
        name: _publish(run_cli, new_project(tmp_path / name), evs)
        for name, evs in [("full", events), ("erased", erased), ("without", without)]
    }
    full = sites["full"]
    assert any(k.startswith("metro/") and k.endswith(".csv") for k in full)
    assert any(k.startswith("tiles/") and k.endswith(".png") for k in full)
    assert any(k.startswith("members/tiles/") for k in full)
    assert "metadata.json" in full and "index.html" in full
    # What was erased did show (the comparison can tell), in tiles and in Metro files.
    changed = {k for k in full if full[k] != sites["without"].get(k)}
    assert any(k.startswith("metro/") for k in changed)
    assert any(k.endswith(".png") for k in changed)
    assert sites["erased"] == sites["without"], sorted(
        k
        for k in sites["erased"].keys() | sites["without"].keys()
        if sites["erased"].get(k) != sites["without"].get(k)
    )


# --------------------------------------------------------------------------- real rides


def _along(pts: np.ndarray) -> np.ndarray:
    return np.r_[0.0, np.cumsum(step_lengths_m(pts[:, 0], pts[:, 1]))]


def test_real_rides_keep_nothing_near_homes_or_ends(
    run_cli: Run, project: Path, june: Path
) -> None:
    cfg = project / "config.toml"
    ingest(run_cli, cfg, june)
    events = [orjson.loads(x) for x in june.read_bytes().splitlines()]
    settings = {e["athlete_id"]: e for e in events if e["kind"] == "athlete"}
    rides = {e["activity_id"]: e for e in events if e["kind"] == "activity"}
    rows = query(
        state_of(cfg),
        "SELECT activity_id, athlete_id, path FROM activities WHERE status = 'active'",
    )
    assert len(rows) > 45
    zoned_checked = hidden_checked = inside_zone_raw = 0
    for activity_id, athlete_id, blob in rows:
        path = from_blob(blob, PATH_DTYPE)
        assert len(path)
        ll = np.array([h3.cell_to_latlng(int(c)) for c in path["cell"]])
        raw = np.asarray(rides[activity_id]["streams"]["latlng"], dtype=np.float64)
        t = np.asarray(rides[activity_id]["streams"]["time"], dtype=np.float64)
        for zone in settings[athlete_id]["privacy_zones"]:
            d = haversine_m(ll[:, 0], ll[:, 1], zone["lat"], zone["lng"])
            assert d.min() > zone["radius_m"], (activity_id, zone, d.min())
            inside_zone_raw += bool(
                (
                    haversine_m(raw[:, 0], raw[:, 1], zone["lat"], zone["lng"]) <= zone["radius_m"]
                ).any()
            )
            zoned_checked += 1
        hide = settings[athlete_id]["hide_start_end_m"]
        if hide > 0:
            along = _along(raw)
            # Cells are entered no earlier than the track passed `hide` metres, and no
            # later than the last moment `hide` metres remained (times of raw fixes).
            first_ok = t[np.argmax(along >= hide)]
            last_ok = t[np.flatnonzero(along[-1] - along >= hide)[-1]]
            assert path["t"].min() >= first_ok - 1e-3, activity_id
            assert path["t"].max() <= last_ok + 1e-3, activity_id
            hidden_checked += 1
    # Real zones, really crossed by real rides: the checks were not vacuous.
    assert zoned_checked >= 2 and inside_zone_raw >= 1 and hidden_checked > 30


def test_verbose_progress_goes_to_a_log_with_utc_stamps(run_cli: Run, project: Path) -> None:
    """Under a supervisor stderr is no terminal: progress only with -v, each line stamped."""
    stream = write(project / "s.jsonl", street_rides(3))
    cfg = project / "config.toml"
    quiet = run_cli("ingest", "-c", cfg, stream)
    assert "activities (" not in quiet.stderr, quiet.stderr
    more = write(project / "more.jsonl", street_rides(2, prefix="m"))
    loud = run_cli("ingest", "-c", cfg, more, "-v")
    lines = [ln for ln in loud.stderr.splitlines() if " activities (" in ln]
    assert lines and re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ [\d,]+ activities \(.*\), .* dead letters, "
        r"longest commit stall [\d,]+ ms done",
        lines[-1],
    ), loud.stderr


def test_a_reimport_with_another_visibility_replaces_the_first_with_updated_at(
    run_cli: Run, tmp_path: Path
) -> None:
    """A re-import is the same event by default (its version time is the activity's
    start), so another --visibility alone changed nothing (an operator's review);
    --updated-at makes it a newer version, which the stream then takes."""
    gpx = SHARED_DATA / "tracks" / "gpx" / "cerknicko-jezero.gpx"
    cfg = new_project(tmp_path / "p")

    def imported(*extra: str) -> Path:
        out = tmp_path / f"import-{len(list(tmp_path.glob('import-*')))}.jsonl"
        out.write_text(run_cli("import", gpx, "--athlete-id", "a-1", *extra).stdout)
        return out

    first = imported()
    quiet = imported("--visibility", "only_me")
    (one,), (two,) = ([json.loads(x) for x in p.read_text().splitlines()] for p in (first, quiet))
    assert one["activity_id"] == two["activity_id"] and one["updated_at"] == two["updated_at"]
    ingest(run_cli, cfg, first, quiet)
    assert stats(run_cli, cfg)["activities_by_status"] == {"active": 1}  # unchanged

    later = imported("--visibility", "only_me", "--updated-at", "now")
    (three,) = [json.loads(x) for x in later.read_text().splitlines()]
    assert three["updated_at"] > one["updated_at"] and three["visibility"] == "only_me"
    ingest(run_cli, cfg, later)
    assert stats(run_cli, cfg)["activities_by_status"] == {"hidden": 1}  # never public now
    bad = run_cli(
        "import", gpx, "--athlete-id", "a-1", "--updated-at", "2026-11-30T12:00", check=False
    )
    assert bad.returncode == 2 and "no time zone" in bad.stderr and "Traceback" not in bad.stderr
    # A version from the future would outrank every real update or deletion after it.
    late = run_cli("import", gpx, "--athlete-id", "a-1", "--updated-at", "2062-11-30T00:00:00Z",
                   check=False)  # fmt: skip
    assert late.returncode == 2 and "in the future" in late.stderr


def test_import_options_follow_the_stream_contract(run_cli: Run, tmp_path: Path) -> None:
    """An --athlete-id or --sport-type the contract refuses made events that ingest then
    filed as dead letters (`--sport-type '   '` exited 0): now a usage error, nothing out."""
    gpx = SHARED_DATA / "tracks" / "gpx" / "cerknicko-jezero.gpx"
    for option, value, said in (
        ("--sport-type", "   ", "a sport type of spaces only"),
        ("--sport-type", "R" * 101, "at most 100 characters"),
        ("--athlete-id", "", "must not be empty or blank"),
        ("--athlete-id", " \t", "must not be empty or blank"),
        ("--athlete-id", "a" * 201, "at most 200 characters"),
        ("--athlete-id", "a" * 181, "too long (181 characters) for the activity ids"),
    ):
        args = {"--athlete-id": "a-1", option: value}
        proc = run_cli("import", gpx, *(x for kv in args.items() for x in kv), check=False)
        err = proc.stderr.strip()
        assert proc.returncode == 2 and proc.stdout == "", (option, value, err)
        assert len(err.splitlines()) == 1 and f"argument {option}: " in err and said in err, err
    # The longest id allowed, and a sport as a person writes it: stored, no dead letter.
    out = run_cli("import", gpx, "--athlete-id", "a" * 180, "--sport-type", " walk ").stdout
    (event,) = [json.loads(x) for x in out.splitlines()]
    assert event["sport_type"] == "Walk" and len(event["activity_id"]) == 197
    cfg = new_project(tmp_path / "p")
    (tmp_path / "p" / "walk.jsonl").write_text(out)
    ingest(run_cli, cfg, tmp_path / "p" / "walk.jsonl")
    s = stats(run_cli, cfg)
    assert s["activities"] == 1 and s["dead_letters"] == 0, s


def test_a_version_from_the_future_cannot_outrank_a_deletion_or_an_opt_out(
    run_cli: Run, tmp_path: Path
) -> None:
    """A producer's clock ten years ahead: stored, its activity's later deletion and its
    athlete's later settings would be "stale" and ignored. Such a record is a dead letter;
    a deletion or an opt-out with that time is still applied (it only hides more)."""
    cfg = new_project(tmp_path)
    now = datetime.now(UTC)
    future, soon = now + timedelta(days=3650), now + timedelta(hours=2)
    events = [
        activity("ahead", "a1", ELM, start=day(1), updated=future),
        activity("kept", "a1", ELM, start=day(2), updated=soon),  # within a day: skew
        athlete("a2", updated=future, privacy_zones=[MIDDLE]),
        activity("gone", "a3", ELM, start=day(1), updated=day(1)),
        deleted("gone", "a3", updated=future),
        athlete("a4", updated=future, aggregate_opt_out=True),
        activity("a4-ride", "a4", ELM, start=day(1), updated=day(1)),
    ]
    proc = ingest(run_cli, cfg, write(tmp_path / "s.jsonl", events), check=False)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    dead = [json.loads(x) for x in (state_of(cfg) / "dead_letters.jsonl").read_text().splitlines()]
    assert [d["position"] for d in dead] == [1, 3, 6]
    for d, name in zip(dead, ["activity ahead", "athlete a2", "athlete a4"], strict=True):
        assert d["reason"].startswith(f"{name}: updated_at = {future.year}-"), d["reason"]
        assert "in the future" in d["reason"] and "deletion or opt-out" in d["reason"]
    status = {r[0]: r[3] for r in tables(cfg)["activities"]}
    assert status == {"kept": "active", "gone": "deleted", "a4-ride": "opted_out"}
    opted = {r[0]: r for r in tables(cfg)["athletes"]}
    assert "a2" not in opted and "a4" in opted
