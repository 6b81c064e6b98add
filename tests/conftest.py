"""Shared fixtures: a fresh store, a project folder with its own config, the real CLI."""

from __future__ import annotations

import atexit
import compileall
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from heatmetro.core.config import Config, load_config
from heatmetro.state.changes import (
    ActivityChange,
    ActivityDelete,
    DeadLetter,
    SettingsChange,
    StoreItem,
)
from heatmetro.state.store import connect
from tests.warm_cli import WarmCli, needs_fresh_process, text

REPO = Path(__file__).resolve().parent.parent


def compile_checkout(root: Path = REPO) -> None:
    """Byte-compile the checkout at ``root``, as pip does when it installs the wheel.

    Where ``PYTHONDONTWRITEBYTECODE`` is set (as on these machines), Python never keeps
    the compiled modules of an editable checkout, and each CLI start compiled them all
    again (~0.1-0.2 s of CPU); it still reads compiled files it finds. The symlinked
    packages (``heatmetro/flows`` etc.) are named on their own: compileall does not
    follow symlinks. Used by the benches too."""
    for package in ("heatmetro", "flows", "state", "site_builder"):
        compileall.compile_dir(root / package, quiet=1)


def pytest_configure(config: pytest.Config) -> None:
    """Before any test starts the CLI (some 500 times, each a new process)."""
    # A shell starts a background job (`make test &`) with SIGINT ignored, and its
    # children inherit that: the tests that send Ctrl-C to the CLI would then wait for
    # an exit that never comes. Python's own handler is reset to the default at exec.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if not hasattr(config, "workerinput"):  # not in xdist workers: the controller did it
        compile_checkout()


def public_items(items: Iterable[object]) -> list[StoreItem]:
    """The items the public store writes: a fold's personal ones go to the personal
    store (``flows.store_sink`` routes them; ``StoreWriter`` would skip them)."""
    return [
        i
        for i in items
        if isinstance(i, SettingsChange | ActivityChange | ActivityDelete | DeadLetter)
    ]


def _shared_data() -> Path:
    """The real recorded data (``../shared/data``): $HEATMETRO_SHARED_DATA, else beside the
    checkout or beside any parent folder (a git worktree), else the workplace's copy."""
    candidates = (
        [Path(os.environ["HEATMETRO_SHARED_DATA"])] if "HEATMETRO_SHARED_DATA" in os.environ else []
    )
    candidates += [p / "shared" / "data" for p in REPO.parents]
    candidates.append(Path("/work/shared/data"))
    return next((d for d in candidates if d.is_dir()), REPO.parent / "shared" / "data")


SHARED_DATA = _shared_data()
HEATMETRO = [sys.executable, "-m", "heatmetro.cli"]
TEST_SALT = "test-salt-not-secret"


def write_config(folder: Path, **overrides: Any) -> Path:
    """A config.toml in ``folder`` (state/ and site/ beside it), with small test zooms."""
    values: dict[str, Any] = {
        "state_dir": "state",
        "out_dir": "site",
        "min_zoom": 10,
        "public_max_zoom": 12,
        "max_zoom": 14,
        "epoch_s": 0.5,
    }
    values.update(overrides)
    lines = [
        f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in values.items()
    ]
    path = folder / "config.toml"
    path.write_text("\n".join(lines).replace("True", "true").replace("False", "false") + "\n")
    return path


#: Longer than any one test that reads the clock's day takes.
_DAY_MARGIN_S = 180.0


@pytest.fixture
def same_utc_day() -> None:
    """For tests that compare the CLI's clock-based dates (yesterday, this month) with their
    own: started close to midnight UTC, the test waits until the day has turned, so the
    test and the CLI it runs read the same day (a run across midnight failed once)."""
    now = datetime.now(UTC)
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    left = (midnight - now).total_seconds()
    if left < _DAY_MARGIN_S:
        time.sleep(left + 1.0)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with a config.toml; run the CLI with ``-c project/'config.toml'``."""
    write_config(tmp_path)
    return tmp_path


@pytest.fixture
def config(project: Path) -> Config:
    return load_config(project / "config.toml", salt=TEST_SALT)


@pytest.fixture
def fresh_db(tmp_path: Path):  # type: ignore[no-untyped-def]
    db = connect(tmp_path / "store.db")
    yield db
    db.close()


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, HEATMETRO_SALT=TEST_SALT, HEATMETRO_QUIET="1", PYTHONPATH=str(REPO))
    env.update(extra)
    return env


_WARM: list[WarmCli] = []


def _warm_cli() -> WarmCli | None:
    """This test process's warm ``heatmetro`` server (``tests.warm_cli``), or None with
    ``HEATMETRO_TEST_WARM=0``."""
    if os.environ.get("HEATMETRO_TEST_WARM", "1") == "0":
        return None
    if not _WARM:
        _WARM.append(WarmCli(sys.executable, cli_env(), REPO))
        atexit.register(_WARM[0].close)
    return _WARM[0]


def heatmetro(
    *args: str | Path,
    env: dict[str, str] | None = None,
    input: bytes | None = None,  # noqa: A002 - as subprocess.run
    timeout: float | None = 300,
    cwd: Path = REPO,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([*HEATMETRO, *args], capture_output=True, text=True, ...)``:
    warm (``tests.warm_cli``) unless the environment needs a fresh interpreter.
    ``check``: a non-zero exit fails the test, with the command's stderr."""
    env = env or cli_env()
    warm = _warm_cli()
    if warm is None or needs_fresh_process(env, warm.env):
        proc = subprocess.run(
            [*HEATMETRO, *map(str, args)], input=input.decode() if input is not None else None,
            capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
        )  # fmt: skip
    else:
        got = warm.run(
            HEATMETRO, [str(a) for a in args], env=env, cwd=cwd, input=input, timeout=timeout
        )
        proc = subprocess.CompletedProcess(
            got.args, got.returncode, text(got.stdout), text(got.stderr)
        )
    if check and proc.returncode != 0:
        msg = f"heatmetro {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stderr}"
        raise AssertionError(msg)
    return proc


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``heatmetro ARGS...`` as a user would; fails the test on a non-zero exit
    unless ``check=False``."""

    def run(
        *args: str | Path,
        check: bool = True,
        stdin: bytes | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        return heatmetro(*args, env=env, input=stdin, timeout=timeout, check=check)

    return run


@pytest.fixture(scope="session")
def june2018_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled real June 2018 ValleyBike rides, ingested and published through the CLI
    (fixture config, ``SOURCE_DATE_EPOCH`` set). Tests only read it."""
    from heatmetro.flows.importers.jsonl import write_jsonl
    from heatmetro.flows.importers.valleybike import valleybike_events
    from heatmetro.flows.importers.valleybike_csv import DATA_DIR

    project = tmp_path_factory.mktemp("june2018-site")
    config = str(write_config(project))
    events = project / "june2018.jsonl"
    write_jsonl(valleybike_events([DATA_DIR / "june2018.csv.gz"]), events)
    env = cli_env(SOURCE_DATE_EPOCH="1700000000")
    for args in (
        ["ingest", "-c", config, str(events)],
        ["snapshot", "-c", config, "--month", "2018-06"],
    ):
        heatmetro(*args, env=env, check=True)
    return (project / "site").resolve()
