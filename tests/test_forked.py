"""Work in a forked process beside the heat (``forked``): the Metro files, the window cache.

Unit level: a result or an error crosses from the child as it would have been returned or
raised here; a child killed or cancelled is a clear error, never a hang; a child dies
with its parent; a child's garbage collector leaves the inherited heap alone and runs
rarely, the parent's as it was. Through a real snapshot of real rides: the same bytes whichever process
writes the Metro files and the same cache, a failing Metro writer leaves the published
site as it was, a failing cache writer costs the cache only.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import heatmetro.site_builder.metro as metro_module
import heatmetro.site_builder.snapshot as snapshot_module
import heatmetro.site_builder.window_cache as window_cache_module
from heatmetro.core.config import load_config
from heatmetro.core.errors import ConfigError, PublishError
from heatmetro.site_builder.forked import CHILD_GC_THRESHOLD, ForkedJob
from heatmetro.site_builder.snapshot import MetroDone, run_snapshot
from heatmetro.site_builder.window_cache import CACHE_DIR
from tests.conftest import HEATMETRO, REPO, TEST_SALT, write_config
from tests.test_snapshot_cli import SDE_ENV, copy_project, real_store, tree  # noqa: F401

# --------------------------------------------------------------------------- unit


def Job(work, *, parallel):  # type: ignore[no-untyped-def]  # noqa: N802 - reads as the class
    return ForkedJob(work, parallel=parallel, what="the Metro writer")


def _report_pid() -> MetroDone:
    return MetroDone({"pid": os.getpid()}, "metro cache: from the child", True)


@pytest.mark.parametrize("parallel", [True, False])
def test_the_result_comes_back_from_the_process_that_wrote_it(parallel: bool) -> None:
    job = Job(_report_pid, parallel=parallel)
    assert job.forked is parallel
    done = job.result()
    assert (done.rows["pid"] != os.getpid()) is parallel
    assert done.cache_line == "metro cache: from the child" and done.cache_problem
    assert job.result() is done  # asked again: the same answer, no second run


def _collector() -> MetroDone:
    gen0, gen1, gen2 = gc.get_threshold()
    return MetroDone({"gen0": gen0, "gen1": gen1, "gen2": gen2, "frozen": gc.get_freeze_count()})


def test_the_child_collects_rarely_and_never_the_heap_it_inherited() -> None:
    before = (gc.get_threshold(), gc.get_freeze_count())
    rows = Job(_collector, parallel=True).result().rows
    assert (rows["gen0"], rows["gen1"], rows["gen2"]) == CHILD_GC_THRESHOLD
    assert CHILD_GC_THRESHOLD[0] >= 100 * 700  # not Python's (700, 10, 10)
    assert rows["frozen"] > 10_000  # the parent's objects (a pytest process: many more)
    assert (gc.get_threshold(), gc.get_freeze_count()) == before  # the parent's as it was


def test_our_errors_cross_as_they_are() -> None:
    def bad() -> MetroDone:
        msg = "metro: settings.month = '2021-13' is not YYYY-MM"
        raise ConfigError(msg)

    with pytest.raises(ConfigError, match=r"settings\.month = '2021-13'"):
        Job(bad, parallel=True).result()


def test_a_bug_in_the_child_is_a_publish_error_with_its_traceback() -> None:
    def bug() -> MetroDone:
        return MetroDone({"x": 1 // 0})

    with pytest.raises(PublishError, match="Metro writer failed") as info:
        Job(bug, parallel=True).result()
    assert "ZeroDivisionError" in str(info.value) and "in bug" in str(info.value)


def test_a_killed_child_is_named_not_waited_for() -> None:
    def killed() -> MetroDone:
        os.kill(os.getpid(), signal.SIGKILL)
        return MetroDone({})

    with pytest.raises(PublishError, match="killed by SIGKILL"):
        Job(killed, parallel=True).result()


def test_cancel_stops_a_running_writer() -> None:
    def slow() -> MetroDone:
        time.sleep(60)
        return MetroDone({})

    job = Job(slow, parallel=True)
    pid = job._pid
    assert pid is not None
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 10
    with pytest.raises(ChildProcessError):  # reaped, not left a zombie
        os.waitpid(pid, os.WNOHANG)
    job.cancel()  # twice: a no-op


# --------------------------------------------------------------------------- real snapshot


def _config(project: Path, workers: int):  # type: ignore[no-untyped-def]
    write_config(project, tile_workers=workers, basemap_url="")
    return load_config(project / "config.toml", salt=TEST_SALT)


def test_one_process_or_two_publish_the_same_bytes(
    real_store: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", SDE_ENV["SOURCE_DATE_EPOCH"])
    forked: list[tuple[str, bool]] = []
    real_job = snapshot_module.ForkedJob

    def watched(work, *, parallel, what):  # type: ignore[no-untyped-def]
        job = real_job(work, parallel=parallel, what=what)
        forked.append((what, job.forked))
        return job

    monkeypatch.setattr(snapshot_module, "ForkedJob", watched)
    sites, caches = {}, {}
    for workers in (1, 2):
        project = copy_project(real_store, tmp_path / f"w{workers}")
        run_snapshot(_config(project, workers), month="2018-06", quiet=True)
        sites[workers] = tree(project / "site")
        caches[workers] = _cache_arrays(project / "state" / CACHE_DIR)
    assert forked == [
        ("the Metro writer", False),
        ("the window cache writer", False),
        ("the Metro writer", True),
        ("the window cache writer", True),
    ]
    assert sorted(sites[1]) == sorted(sites[2])
    differ = [name for name in sites[1] if sites[1][name] != sites[2][name]]
    assert differ == []
    metro = [n for n in sites[2] if n.startswith("metro/")]
    assert {"metro/edges.csv", "metro/metro.gpkg", "metro/edges.geojson"} <= set(metro)
    assert sites[2]["metro/edges.csv"].count(b"\n") > 10  # real rows, not a header alone
    # The window cache written by the child holds what the parent would have written.
    assert sorted(caches[1]) == sorted(caches[2])
    assert "pack 0" in caches[2] and any(k.startswith("layer ") for k in caches[2])
    for name, data in caches[1].items():
        assert data == caches[2][name], name


def _cache_arrays(cache: Path) -> dict[str, bytes]:
    """What the window cache holds, by what each piece is (not by its file's random
    name): each file's bytes but its footer (which names the file), and the manifest's
    lists."""
    manifest = json.loads((cache / "manifest.json").read_text())
    files = {f"pack {i}": p["file"] for i, p in enumerate(manifest["packs"])}
    files.update({f"layer {k}": v["file"] for k, v in manifest["layers"].items() if "file" in v})
    out = {what: (cache / name).read_bytes()[:-32] for what, name in files.items()}
    for what in ("ids", "stamps", "where", "key"):
        out[what] = json.dumps(manifest[what]).encode()
    return out


def test_a_failing_cache_writer_costs_the_cache_not_the_site(
    real_store: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", SDE_ENV["SOURCE_DATE_EPOCH"])
    project = copy_project(real_store, tmp_path / "p")
    config = _config(project, 2)
    run_snapshot(config, month="2018-06", quiet=True)
    cache = project / "state" / CACHE_DIR
    assert (cache / "manifest.json").is_file()
    parent = os.getpid()

    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        assert os.getpid() != parent, "the cache writer was expected in a child process"
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(window_cache_module, "write_cache", failing)
    capsys.readouterr()
    run_snapshot(config, month="2018-07", quiet=True)
    err = capsys.readouterr().err
    assert "window cache: not saved (the window cache writer (process killed by SIGKILL)" in err
    assert not cache.exists(), "a cache not saved must not leave the old one behind"
    site = project / "site"
    assert json.loads((site / "metadata.json").read_text())["month"] == "2018-07"


@pytest.mark.parametrize("how", ["error", "killed"])
def test_a_failing_writer_leaves_the_published_site(
    real_store: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", SDE_ENV["SOURCE_DATE_EPOCH"])
    project = copy_project(real_store, tmp_path / "p")
    config = _config(project, 2)
    run_snapshot(config, month="2018-06", quiet=True)
    site = project / "site"
    published, before = site.resolve(), tree(site)
    parent = os.getpid()

    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        assert os.getpid() != parent, "the writer was expected in a child process"
        if how == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        msg = f"metro: edges.csv cannot be written (child {os.getpid()})"
        raise PublishError(msg)

    monkeypatch.setattr(metro_module, "write_metro", failing)
    expected = "killed by SIGKILL" if how == "killed" else r"edges\.csv cannot be written \(child"
    with pytest.raises(PublishError, match=expected):
        run_snapshot(config, month="2018-07", quiet=True)
    assert site.resolve() == published
    assert tree(site) == before
    assert sorted((project / ".site.builds").glob("*.partial")) == []


_ORPHAN = """
import sys, time
from heatmetro.site_builder.forked import CHILD_GC_THRESHOLD, ForkedJob
from heatmetro.site_builder.snapshot import MetroDone
def slow():
    time.sleep(60)
    return MetroDone({})
job = ForkedJob(slow, parallel=True, what="a test")
print(job._pid, flush=True)
time.sleep(60)
"""


def _stopped(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie waiting for init to reap it has stopped too
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_a_killed_snapshot_leaves_no_writer_behind() -> None:
    """A snapshot SIGKILLed mid-build (or killed for memory) takes its writer with it:
    no orphan goes on writing a Metro cache behind the next snapshot's back."""
    proc = subprocess.Popen(
        [HEATMETRO[0], "-c", _ORPHAN], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        writer = int(proc.stdout.readline())
        assert not _stopped(writer)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while not _stopped(writer) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _stopped(writer), f"the writer {writer} outlived its killed snapshot"
    finally:
        proc.kill()
        proc.wait(timeout=30)
