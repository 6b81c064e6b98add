"""The warm ``heatmetro`` of the tests (tests/warm_cli.py) answers as a fresh process does:
the same exit code, output and errors, the caller's stdin, environment and folder; a
command past its timeout is killed; a setting read at start-up gets a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HEATMETRO, REPO, cli_env, heatmetro, write_config
from tests.warm_cli import WarmCli, needs_fresh_process, text


@pytest.fixture(scope="module")
def warm() -> Iterator[WarmCli]:
    server = WarmCli(HEATMETRO[0], cli_env(), REPO)
    yield server
    server.close()


def _fresh(args: list[str], env: dict[str, str], cwd: Path, stdin: bytes | None = None) -> tuple:  # type: ignore[type-arg]
    got = subprocess.run(
        [*HEATMETRO, *args], input=stdin, capture_output=True, env=env, cwd=cwd, timeout=120
    )
    return got.returncode, got.stdout, got.stderr


def _warm(
    warm: WarmCli, args: list[str], env: dict[str, str], cwd: Path, stdin: bytes | None = None
) -> tuple:  # type: ignore[type-arg]
    got = warm.run(HEATMETRO, args, env=env, cwd=cwd, input=stdin, timeout=120)
    return got.returncode, got.stdout, got.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["snapshot"],  # argparse: exit 2, usage on stderr
        ["stats", "-c", "missing.toml"],  # relative to the folder: one line, exit 1
        ["config", "-c", "config.toml"],  # the settings in force: output on stdout
    ],
    ids=["version", "usage", "missing-config", "config"],
)
def test_a_warm_command_answers_as_a_fresh_process(
    warm: WarmCli, tmp_path: Path, args: list[str]
) -> None:
    write_config(tmp_path)
    env = cli_env(HEATMETRO_OUT_DIR=str(tmp_path / "elsewhere"))  # seen by the command
    fresh = _fresh(args, env, tmp_path)
    assert _warm(warm, args, env, tmp_path) == fresh
    assert fresh[1] or fresh[2]  # something to compare
    if args[0] == "config":
        assert str(tmp_path / "elsewhere") in fresh[1].decode()


def test_stdin_reaches_a_warm_command(warm: WarmCli, tmp_path: Path) -> None:
    """``ingest -`` reads the caller's bytes: the dead letter names the line read."""
    config = write_config(tmp_path)
    env = cli_env(HEATMETRO_QUIET="0")
    code, _, err = _warm(warm, ["ingest", "-c", str(config), "-"], env, tmp_path, b"not json\n")
    assert code == 0, err
    lines = (tmp_path / "state" / "dead_letters.jsonl").read_text().splitlines()
    dead = [json.loads(line) for line in lines]
    assert [(d["position"], d["raw"]) for d in dead] == [(1, "not json")]


def test_a_warm_command_past_its_timeout_is_killed(warm: WarmCli, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    stream = tmp_path / "stream.jsonl"
    stream.write_text("")
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        warm.run(
            HEATMETRO, ["ingest", "-c", str(config), str(stream), "--follow"],
            env=cli_env(), cwd=tmp_path, input=None, timeout=3,
        )  # fmt: skip
    assert time.monotonic() - started < 60
    # The server goes on serving.
    assert _warm(warm, ["--version"], cli_env(), tmp_path)[0] == 0


def test_start_up_settings_need_a_fresh_process() -> None:
    base = cli_env()
    assert not needs_fresh_process(cli_env(HEATMETRO_QUIET="0", TZ="UTC"), base)
    assert needs_fresh_process({**base, "PYTHONHASHSEED": "1"}, base)
    assert needs_fresh_process({**base, "LC_ALL": "C"}, base)
    assert needs_fresh_process({k: v for k, v in base.items() if k != "PYTHONPATH"}, base)


def test_the_suites_heatmetro_gives_text_as_subprocess_does(tmp_path: Path) -> None:
    got = heatmetro("--version", cwd=tmp_path)
    assert got.returncode == 0 and got.stdout.startswith("heatmetro ")
    assert text(b"a\r\nb\rc") == "a\nb\nc"
    if os.environ.get("HEATMETRO_TEST_WARM", "1") != "0":
        assert got.args[: len(HEATMETRO)] == HEATMETRO
