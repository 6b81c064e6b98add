"""A user mistake or a broken environment gives one line on stderr, never a traceback,
and leaves the store and the published site as they were (real CLI, real files).

Tests run as root, so "permission denied" is simulated with a state_dir that is a file
or lies under one; a full disk with ``RLIMIT_FSIZE`` (writes then fail with EFBIG).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from heatmetro.core.config import DEV_SALT
from heatmetro.state.shards import salt_check
from tests.conftest import HEATMETRO, REPO, cli_env, write_config
from tests.conftest import heatmetro as run_heatmetro
from tests.store_rows import query, shard_files
from tests.streams import (
    NORTH_EAST,
    NORTH_WEST,
    NORTHAMPTON_EAST,
    NORTHAMPTON_WEST,
    activity,
    line,
    street_rides,
    to_jsonl,
)
from tests.test_ingest_cli import _worker_children

SDE = "1700000000"
MONTH = "2021-06"


def heatmetro(
    *args: str | Path, env: dict[str, str] | None = None, fsize: int | None = None
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process (warm, tests/warm_cli.py); ``fsize`` caps the size
    of any file it writes (a fresh process: the cap is set before it starts)."""
    if not fsize:
        return run_heatmetro(*args, env=env or cli_env(SOURCE_DATE_EPOCH=SDE), timeout=120)

    def limit() -> None:  # in the child: a write past the cap fails with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))  # type: ignore[arg-type]

    return subprocess.run(
        [*HEATMETRO, *map(str, args)],
        capture_output=True,
        text=True,
        env=env or cli_env(SOURCE_DATE_EPOCH=SDE),
        cwd=REPO,
        timeout=120,
        preexec_fn=limit,  # noqa: PLW1509 - the test has no threads
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in err and "panicked" not in err, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("heatmetro "), err
    for needle in needles:
        assert needle in err, err
    return err


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links followed) -> sha256; the link target too."""
    out = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
           for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip
    out["<target>"] = str(root.resolve())
    return out


def leftovers(project: Path) -> list[str]:
    return sorted(p.name for p in (project / ".site.builds").iterdir() if "partial" in p.name)


def store_rows(project: Path) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    for shard in shard_files(project / "state"):
        con = sqlite3.connect(f"file:{shard}?mode=ro", uri=True)
        try:
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",), shard
        finally:
            con.close()
    return {
        t: query(project / "state", f"SELECT * FROM {t}")  # noqa: S608
        for t in ("athletes", "activities", "athlete_months")
    }


def biggest_shard(project: Path) -> Path:
    return max(shard_files(project / "state"), key=lambda p: p.stat().st_size)


def small_stream() -> bytes:
    elm = line(NORTHAMPTON_WEST, NORTHAMPTON_EAST)
    return to_jsonl([activity(f"s{i}", f"a{i}", elm) for i in range(4)])


def big_stream() -> bytes:
    north = line(NORTH_WEST, NORTH_EAST)
    return to_jsonl(
        [
            activity(f"b{i}", f"b{i % 7}", north, start=datetime(2021, 6, 3 + i % 20, tzinfo=UTC))
            for i in range(300)
        ]
    )


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a small store and a published site."""
    project = tmp_path_factory.mktemp("published")
    write_config(project)
    (project / "small.jsonl").write_bytes(small_stream())
    (project / "big.jsonl").write_bytes(big_stream())
    cfg = project / "config.toml"
    for args in (("ingest", "-c", cfg, project / "small.jsonl"), ("snapshot", "-c", cfg, "-q")):
        proc = heatmetro(*args, "--month", MONTH) if args[0] == "snapshot" else heatmetro(*args)
        assert proc.returncode == 0, proc.stderr
    return project


@pytest.fixture
def project(published: Path, tmp_path: Path) -> Path:
    """A private copy of ``published`` (the site stays a relative link)."""
    copy = tmp_path / "p"
    shutil.copytree(published, copy, symlinks=True)
    return copy


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("legacy", [False, True], ids=["recorded", "legacy"])
@pytest.mark.parametrize(
    ("key", "value", "made"),
    [("heat_resolution", 12, 13), ("metro_resolution", 9, 10), ("od_resolution", 7, 8)],
)
def test_a_store_keeps_its_resolutions(
    project: Path, key: str, value: int, made: int, legacy: bool
) -> None:
    """A store's cells are at the resolutions it was made with: another one in the config
    would mix cells of two sizes under one label (an operator's review found res-9 and
    res-10 edges in one edges.csv), so ingest and snapshot refuse it, naming both. A
    store made before the manifest recorded them (``legacy``) is judged by its cells."""
    if legacy:
        manifest = project / "state/shards/store.json"
        meta = json.loads(manifest.read_text())
        del meta["resolutions"]
        manifest.write_text(json.dumps(meta) + "\n")
    before, rows = tree_hashes(project / "site"), store_rows(project)
    overrides = {key: value}
    if key == "heat_resolution":
        overrides["threshold_ring"] = 0  # ring 1 needs res 13
    write_config(project, **overrides)
    for args in (("ingest", "-c", project / "config.toml", project / "big.jsonl"),
                 ("snapshot", "-c", project / "config.toml", "--month", MONTH)):  # fmt: skip
        proc = heatmetro(*args)
        assert_one_line_error(proc, f"was made with {key} = {made}", f"says {value}")
    assert tree_hashes(project / "site") == before and store_rows(project) == rows
    if legacy:  # refused, not recorded; the config it was made with is, on its next run
        assert "resolutions" not in json.loads(manifest.read_text())
        write_config(project)
        proc = heatmetro("ingest", "-c", project / "config.toml", project / "big.jsonl")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(manifest.read_text())["resolutions"][key] == made


@pytest.mark.parametrize("value", ["abc", "-5", "99999999999999999999", "２０２１"])
def test_bad_source_date_epoch_is_one_line_and_keeps_the_site(project: Path, value: str) -> None:
    before = tree_hashes(project / "site")
    proc = heatmetro(
        "snapshot", "-c", project / "config.toml", "--month", MONTH,
        env=cli_env(SOURCE_DATE_EPOCH=value),
    )  # fmt: skip
    assert_one_line_error(proc, "SOURCE_DATE_EPOCH", "expected whole seconds")
    assert tree_hashes(project / "site") == before
    assert leftovers(project) == []


def test_good_source_date_epoch_is_stamped(project: Path) -> None:
    proc = heatmetro("snapshot", "-c", project / "config.toml", "--month", MONTH, "-q",
                     env=cli_env(SOURCE_DATE_EPOCH="0"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert '"built_at": "1970-01-01T00:00:00Z"' in (project / "site/metadata.json").read_text()


@pytest.mark.parametrize(
    ("month", "needles"),
    [
        ("2099-01", ("--month 2099-01: that month has not begun",)),
        # Well-formed and past, but nobody rode in its window: the map would go blank.
        ("2019-01", ("2018-02..2019-01", "(4 athletes, window ending 2021-06)", "--allow-empty")),
    ],
)
def test_a_mistyped_month_keeps_the_published_site(
    project: Path, month: str, needles: tuple[str, ...]
) -> None:
    before = tree_hashes(project / "site")
    proc = heatmetro("snapshot", "-c", project / "config.toml", "--month", month, "-q")
    assert_one_line_error(proc, *needles)
    assert tree_hashes(project / "site") == before
    assert leftovers(project) == []


@pytest.mark.usefixtures("same_utc_day")
def test_the_month_in_progress_takes_partial_and_is_published_as_partial(project: Path) -> None:
    """A planner would read the month in progress as a whole month: refused as a typo
    would be; with --partial, published and said so on every page a reader opens."""
    now = datetime.now(UTC)
    this = now.strftime("%Y-%m")
    first = datetime(now.year, now.month, 1, 0, 0, 30, tzinfo=UTC)  # always in the past
    elm = line(NORTHAMPTON_WEST, NORTHAMPTON_EAST)
    stream = [activity(f"n{i}", f"a{i}", elm, start=first, utc_offset_s=0) for i in range(4)]
    (project / "now.jsonl").write_bytes(to_jsonl(stream))
    cfg = project / "config.toml"
    assert heatmetro("ingest", "-c", cfg, project / "now.jsonl").returncode == 0
    before = tree_hashes(project / "site")
    err = assert_one_line_error(heatmetro("snapshot", "-c", cfg, "--month", this), "--partial")
    assert f"--month {this}: that month is not over (today is {now:%Y-%m-%d})" in err
    assert tree_hashes(project / "site") == before
    assert_one_line_error(
        heatmetro("snapshot", "-c", cfg, "--month", MONTH, "--partial"), f"{MONTH} is over"
    )
    assert heatmetro("snapshot", "-c", cfg, "--month", this, "--partial", "-q").returncode == 0
    site = project / "site"
    meta = json.loads((site / "metadata.json").read_text())
    assert meta["window"]["last_month"] == this and meta["window"]["last_month_in_progress"]
    assert meta["counts"]["athletes"] == 4
    about = (site / "about.html").read_text()
    assert f"({this} was not over when this was built: partial)" in about
    index = (site / "metro" / "index.html").read_text()
    readme = (site / "metro" / "README.md").read_text()
    assert f"{this} was not\nover</strong> when these files were built: its counts" in index
    assert f"* **Partial:** {this} was not over when these files were built: its" in readme
    # SOURCE_DATE_EPOCH pins the build date before the month began: no date is better
    # than one saying the month was in progress before it started (an outside review).
    built = datetime.fromtimestamp(int(SDE), UTC).strftime("%Y-%m-%d")
    assert built < this and f"({built})" not in index and f"({built})" not in readme
    # A finished month says nothing of the kind.
    assert heatmetro("snapshot", "-c", cfg, "--month", MONTH, "-q").returncode == 0
    assert not json.loads((site / "metadata.json").read_text())["window"]["last_month_in_progress"]
    assert "was not over" not in (site / "about.html").read_text()
    assert "Partial" not in (site / "metro" / "README.md").read_text()


@pytest.mark.usefixtures("same_utc_day")
def test_the_default_month_follows_the_clock_not_source_date_epoch(project: Path) -> None:
    """SOURCE_DATE_EPOCH (2023-11 here) only stamps the build: without --month the window
    ends with the clock's last complete month, so a cron job pinning it moves on."""
    today = datetime.now(UTC)
    last = f"{today.year - (today.month == 1):04d}-{(today.month - 2) % 12 + 1:02d}"
    proc = heatmetro("snapshot", "-c", project / "config.toml", "-q")  # SDE = 1700000000
    assert_one_line_error(proc, f"--month {last}: no athlete has an activity")


def test_allow_empty_publishes_an_empty_window(project: Path) -> None:
    cfg = project / "config.toml"
    proc = heatmetro("snapshot", "-c", cfg, "--month", "2019-01", "--allow-empty")
    assert proc.returncode == 0, proc.stderr
    assert "0 athletes" in proc.stdout and "0 tiles" in proc.stdout, proc.stdout
    meta = json.loads((project / "site" / "metadata.json").read_text())
    assert meta["month"] == "2019-01" and meta["counts"]["athletes"] == 0
    # An empty site over an empty one needs no flag (a new install's first builds).
    again = heatmetro("snapshot", "-c", cfg, "--month", "2019-02", "-q")
    assert again.returncode == 0 and again.stderr == "", again.stderr


def test_another_salt_is_refused_before_it_touches_the_store_or_the_site(project: Path) -> None:
    cfg = project / "config.toml"
    site, rows = tree_hashes(project / "site"), store_rows(project)
    other = cli_env(HEATMETRO_SALT="another-salt", SOURCE_DATE_EPOCH=SDE)
    private = project / "private"
    with sqlite3.connect(project / "state" / "personal.db") as db:
        athlete = db.execute("SELECT min(athlete_id) FROM activities").fetchone()[0]
    for args in (
        ("ingest", "-c", cfg, project / "big.jsonl"),
        ("snapshot", "-c", cfg, "--month", MONTH),
        ("snapshot", "-c", cfg, "--weekly", "--until", "2021-06-20"),
        ("personal", "-c", cfg, "--athlete", athlete, "--out", private),
    ):
        assert_one_line_error(heatmetro(*args, env=other), "made with another HEATMETRO_SALT")
        assert tree_hashes(project / "site") == site and store_rows(project) == rows
        assert not private.exists()
    # With the salt it was made with, the same personal map is built.
    assert heatmetro("personal", "-c", cfg, "--athlete", athlete, "--out", private).returncode == 0
    assert (private / "index.html").exists()
    # No salt at all (a new shell without the variable): said so, not "another salt".
    unset = {k: v for k, v in other.items() if k != "HEATMETRO_SALT"}
    for args in (
        ("snapshot", "-c", cfg, "--month", MONTH),
        ("ingest", "-c", cfg, project / "big.jsonl"),
    ):
        # ... and only that: no warning that the store was made with the public salt.
        err = assert_one_line_error(heatmetro(*args, env=unset), "")
        assert "none is set now: set HEATMETRO_SALT" in err and "another HEATMETRO" not in err
        assert tree_hashes(project / "site") == site and store_rows(project) == rows
    # A store from before the check has no record of its salt: the next ingest makes one.
    manifest = project / "state" / "shards" / "store.json"
    meta = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({k: v for k, v in meta.items() if k != "salt_check"}))
    assert heatmetro("ingest", "-c", cfg, project / "small.jsonl").returncode == 0
    assert json.loads(manifest.read_text()) == meta
    assert heatmetro("ingest", "-c", cfg, project / "small.jsonl", env=other).returncode == 1
    # A damaged manifest: one line naming it, from every command that opens the store.
    manifest.write_text('{"shards": ')
    commands: list[tuple[str | Path, ...]] = [
        ("stats", "-c", cfg),
        ("ingest", "-c", cfg, project / "small.jsonl"),
        ("snapshot", "-c", cfg, "--month", MONTH),
    ]
    for command in commands:
        assert_one_line_error(heatmetro(*command), f"store manifest {manifest} is damaged")
    manifest.write_text(json.dumps(meta))


def test_no_new_store_is_made_with_the_public_development_salt(tmp_path: Path) -> None:
    """Without HEATMETRO_SALT the built-in salt, public in the source, would seed every
    hidden end's jitter: ingest refuses to start a store with it (one or two workers)."""
    cfg = tmp_path / "config.toml"
    cfg.write_text('state_dir = "state"\nout_dir = "site"\n')
    events = tmp_path / "e.jsonl"
    events.write_bytes(to_jsonl(street_rides(3)))
    unset = {k: v for k, v in cli_env().items() if k != "HEATMETRO_SALT"}
    for workers in ("1", "2"):
        proc = heatmetro("ingest", "-c", cfg, events, "-w", workers, env=unset)
        err = assert_one_line_error(proc, "no secret salt is set", "HEATMETRO_SALT")
        assert "warning" not in err and not (tmp_path / "state" / "shards").exists()
    assert heatmetro("ingest", "-c", cfg, events).returncode == 0  # with one: stored


def test_a_store_made_with_the_development_salt_is_warned_about_each_run(project: Path) -> None:
    """Such a store (from before a new one was refused) still runs, saying why it should
    not hold real data; the warning is for that store only (see the test above)."""
    manifest = project / "state" / "shards" / "store.json"
    meta = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**meta, "salt_check": salt_check(DEV_SALT)}))
    unset = {k: v for k, v in cli_env().items() if k != "HEATMETRO_SALT"}
    proc = heatmetro("ingest", "-c", project / "config.toml", project / "small.jsonl", env=unset)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("warning: this store was made with the built-in development salt")


def test_a_mistyped_config_key_names_the_real_ones(project: Path) -> None:
    cfg = project / "typo.toml"
    for typo, hint in (
        ("basemap", "did you mean `base_map` or `basemap_url`?"),
        ("min_athlete", "did you mean `min_athletes`"),
        ("colour", "config.toml lists every key"),
    ):
        cfg.write_text((project / "config.toml").read_text() + f'{typo} = "x"\n')
        err = assert_one_line_error(heatmetro("snapshot", "-c", cfg, "--month", MONTH), typo)
        assert f"{typo}: not a heatmetro setting" in err and hint in err


def test_usage_mistakes_are_one_line(project: Path) -> None:
    cfg = project / "config.toml"
    for args, needle in (
        (("personal", "-c", cfg, "--athlete", "a1", "--out", "x", "--layer", "bike"), "'bike'"),
        (
            ("personal", "-c", cfg, "--athlete", "a1", "--out", "x", "--commutes", "--no-commutes"),
            "not allowed with",
        ),
        (("snapshot", "-c", cfg, "--bogus"), "--bogus"),
        (("snapshot", "-c", cfg, "--weekly", "--allow-empty"), "--allow-empty only applies"),
    ):
        err = assert_one_line_error(heatmetro(*args), needle)
        assert "usage:" not in err


def test_quiet_snapshot_prints_nothing_when_the_cache_is_merely_for_another_month(
    project: Path,
) -> None:
    cfg = project / "config.toml"
    proc = heatmetro("snapshot", "-c", cfg, "--month", "2021-07", "-q")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    # A damaged cache is worth its line, even when quiet.
    cache = project / "state" / "window_cache" / "manifest.json"
    cache.write_bytes(cache.read_bytes()[:100])
    proc = heatmetro("snapshot", "-c", cfg, "--month", "2021-07", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("window cache: unreadable window_cache"), proc.stderr


# --------------------------------------------------------------------------- serve


def test_a_port_in_use_is_one_line(project: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = heatmetro("serve", "-c", project / "config.toml", "--port", str(port))
    assert_one_line_error(proc, f"127.0.0.1:{port}", "in use", "--port")


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "http"])
def test_a_port_out_of_range_is_a_usage_error(project: Path, port: str) -> None:
    proc = heatmetro("serve", "--directory", project / "site", "--port", port)
    assert_one_line_error(proc, "argument --port", f"'{port}'", "from 0 to 65535")
    assert proc.returncode == 2  # as argparse's other usage mistakes


# --------------------------------------------------------------------------- state dir

Commands = list[tuple[str, ...]]
COMMANDS: Commands = [("ingest", "small.jsonl"), ("stats",), ("snapshot", "--month", MONTH)]


def _run(project: Path, command: tuple[str, ...], **kw: object) -> subprocess.CompletedProcess[str]:
    args = [project / a if a.endswith(".jsonl") else a for a in command[1:]]
    return heatmetro(command[0], "-c", project / "config.toml", *args, **kw)  # type: ignore[arg-type]


def _a_file(state: Path) -> Path:
    state.write_text("not a folder")
    return state


def _under_a_file(state: Path) -> Path:
    state.write_text("not a folder")
    return state / "sub"


def _store_is_a_folder(state: Path) -> Path:
    (state / "shards" / "0000.db").mkdir(parents=True)
    (state / "shards" / "store.json").write_text('{"shards": 16}')
    return state


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(
    ("make", "needle"),
    [(_a_file, "is a file, not a folder"), (_under_a_file, "sub"), (_store_is_a_folder, ".db")],
)
def test_an_unusable_state_dir_is_one_line(
    project: Path, command: tuple[str, ...], make: Callable[[Path], Path], needle: str
) -> None:
    state = make(project / "elsewhere")
    before = tree_hashes(project / "site")
    proc = _run(
        project, command, env=cli_env(SOURCE_DATE_EPOCH=SDE, HEATMETRO_STATE_DIR=str(state))
    )
    assert_one_line_error(proc, needle)
    assert tree_hashes(project / "site") == before


# --------------------------------------------------------------------------- corrupt store


def _garbage_all(db: Path) -> None:
    db.write_bytes(os.urandom(64 * 1024))


def _garbage_after_header(db: Path) -> None:
    size = db.stat().st_size
    with db.open("r+b") as fh:  # the header and page 1 survive, every other page is noise
        fh.seek(4096)
        fh.write(os.urandom(size - 4096))


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("spoil", [_garbage_all, _garbage_after_header])
def test_a_corrupt_store_is_one_line_and_left_alone(
    project: Path, command: tuple[str, ...], spoil: Callable[[Path], None]
) -> None:
    db = biggest_shard(project)
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    spoil(db)
    spoiled = db.read_bytes()
    before = tree_hashes(project / "site")
    proc = _run(project, command)
    assert_one_line_error(proc, f"store {db} is corrupt (")
    assert db.read_bytes() == spoiled  # never "repaired" into something else
    assert tree_hashes(project / "site") == before


# --------------------------------------------------------------------------- full disk


def test_a_full_disk_during_ingest_is_one_line_and_a_rerun_completes(
    project: Path, tmp_path: Path
) -> None:
    cfg = project / "config.toml"
    db = biggest_shard(project)
    proc = heatmetro(
        "ingest", "-c", cfg, project / "big.jsonl", fsize=db.stat().st_size + 64 * 1024
    )
    assert_one_line_error(proc, str(db.parent), "rerun to resume")
    store_rows(project)  # integrity_check: no half-written page or transaction

    ref = tmp_path / "ref"
    ref.mkdir()
    write_config(ref)
    for stream in ("small.jsonl", "big.jsonl"):
        assert heatmetro("ingest", "-c", ref / "config.toml", project / stream).returncode == 0
    rerun = heatmetro("ingest", "-c", cfg, project / "big.jsonl")
    assert rerun.returncode == 0, rerun.stderr
    assert store_rows(project) == store_rows(ref)


def test_a_full_disk_during_snapshot_keeps_the_previous_site(project: Path) -> None:
    before = tree_hashes(project / "site")
    sizes = {
        p.name: p.stat().st_size for p in (project / "site").resolve().rglob("*") if p.is_file()
    }
    biggest = max(v for k, v in sizes.items() if k != "metro.gpkg")
    db_size = biggest_shard(project).stat().st_size
    assert db_size < biggest - 8192, "the store must fit under the cap, a site file not"
    proc = heatmetro(
        "snapshot", "-c", project / "config.toml", "--month", MONTH, "-q", fsize=biggest - 4096
    )
    assert_one_line_error(proc, "file size limit", ".site.builds")
    assert tree_hashes(project / "site") == before
    assert leftovers(project) == []
    # Only the GeoPackage past the cap (GDAL's file, or the published one copied to take
    # its rows: metro_gpkg_reuse): one line, naming the file.
    assert sizes["metro.gpkg"] > max(biggest, db_size) + 8192, "the GeoPackage is the biggest"
    cap = sizes["metro.gpkg"] - 4096
    proc = heatmetro("snapshot", "-c", project / "config.toml", "--month", MONTH, "-q", fsize=cap)
    assert_one_line_error(proc, "file size limit", "metro.gpkg", ".site.builds")
    assert tree_hashes(project / "site") == before
    assert leftovers(project) == []


def test_older_builds_are_removed_while_the_next_is_made_and_the_served_one_stays(
    project: Path,
) -> None:
    """A snapshot removes the builds publishing would remove (all but the one served)
    while it makes its own, off its last stage: so even one that then fails has removed
    them, and the build served, rolled back to by hand, stays and is still served."""
    cfg, site, builds = project / "config.toml", project / "site", project / ".site.builds"
    first = site.resolve()
    done = heatmetro("snapshot", "-c", cfg, "--month", MONTH, "-q")
    assert done.returncode == 0, done.stderr
    second = site.resolve()
    assert second != first and first.is_dir()
    subprocess.run(  # the rollback of docs/operations.md
        ["sh", "-c", f"ln -sfn .site.builds/{first.name} site.new && mv -T site.new site"],
        cwd=project, check=True,
    )  # fmt: skip
    before = tree_hashes(site)
    biggest = max(p.stat().st_size for p in first.rglob("*") if p.name != "metro.gpkg")
    proc = heatmetro("snapshot", "-c", cfg, "--month", MONTH, "-q", fsize=biggest - 4096)
    assert_one_line_error(proc, "file size limit")
    assert sorted(p.name for p in builds.iterdir()) == [first.name], "older builds left"
    assert site.resolve() == first and tree_hashes(site) == before


def test_a_tile_cache_that_cannot_be_written_costs_the_cache_only(project: Path) -> None:
    """The tile cache is state_dir's, not the site's: when it cannot be written (a full
    disk there; here a file where its folder goes) the build still publishes, and says so
    (an operator's review found the site refused, the error naming the site's disk)."""
    cache = project / "state" / "tile_cache"
    shutil.rmtree(cache)
    cache.write_text("in the way")
    before = (project / "site").resolve()
    proc = heatmetro("snapshot", "-c", project / "config.toml", "--month", MONTH, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "tile cache: not saved" in proc.stderr and "Traceback" not in proc.stderr
    assert (project / "site").resolve() != before and (project / "site" / "index.html").is_file()
    assert not list((project / "state").rglob("*.tmp*"))


def test_a_corrupt_recovery_file_is_one_line_and_its_advice_works(project: Path) -> None:
    before = store_rows(project)
    part = project / "state" / "recovery" / "part-3.sqlite3"
    _garbage_all(part)
    proc = _run(project, COMMANDS[0])
    err = assert_one_line_error(proc, f"recovery file {part} is corrupt", "remove")
    assert store_rows(project) == before
    shutil.rmtree(project / "state" / "recovery")  # what the message says to do
    rerun = _run(project, COMMANDS[0])
    assert rerun.returncode == 0, (err, rerun.stderr)
    assert store_rows(project) == before  # the same input again changes nothing


@pytest.mark.parametrize(
    ("data", "why"),
    [(b"not gzip at all", "Not a gzipped file"), (gzip.compress(b"{}\n" * 50_000)[:100], "ended")],
    ids=["not-gzip", "truncated"],
)
def test_a_broken_gzip_input_is_one_line_naming_it(project: Path, data: bytes, why: str) -> None:
    before = store_rows(project)
    broken = project / "broken.jsonl.gz"
    broken.write_bytes(data)
    proc = heatmetro("ingest", "-c", project / "config.toml", broken)
    assert_one_line_error(proc, f"input {broken} cannot be read", why)
    assert store_rows(project) == before


def test_a_dead_worker_process_ends_a_cluster_run_in_one_line(project: Path) -> None:
    """`ingest -w 2` whose second process dies must not hang (timely waits for a lost
    peer forever): it ends in one line, and a rerun completes."""
    north = line(NORTH_WEST, NORTH_EAST)
    stream = project / "long.jsonl"
    stream.write_bytes(
        to_jsonl([activity(f"w{i}", f"w{i % 40}", north,
                           start=datetime(2021, 6, 1 + i % 28, tzinfo=UTC)) for i in range(800)])
    )  # fmt: skip
    cfg = project / "config.toml"
    proc = subprocess.Popen(
        [*HEATMETRO, "ingest", "-c", str(cfg), str(stream), "-w", "2"],
        env=cli_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (workers := _worker_children(proc.pid)) and time.monotonic() < deadline:
            assert proc.poll() is None, "ingest ended before its worker process started"
            time.sleep(0.05)
        assert len(workers) == 1, workers
        time.sleep(0.5)  # well inside the run
        assert proc.poll() is None, "ingest ended before the kill"
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)  # a hang fails here
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert (
        err.strip()
        == "heatmetro ingest: error: worker process 1 ended with code -9; rerun to resume"
    )
    rerun = heatmetro("ingest", "-c", cfg, stream, "-w", "2")
    assert rerun.returncode == 0, rerun.stderr
    assert len(store_rows(project)["activities"]) == 4 + 800
