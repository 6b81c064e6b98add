"""What a command loads before it works: the snapshot path leaves the stream contract's
models to ingest, GDAL and the Metro tables (the Metro cache's, the street counts')
to the forked Metro writer (start-up is a good part of a rebuild that changed little)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import cli_env

# Loaded by the Metro writer (its own process on two cores), or with a base map only.
LEFT_TO_THE_METRO_WRITER = (
    "heatmetro.core.contract",
    "pyogrio",
    "heatmetro.site_builder.metro_cache",
    "heatmetro.site_builder.metro_tables",
    "heatmetro.site_builder.metro_streets",
    "heatmetro.site_builder.metro_plan",
    "numpy.random",
)


def _loaded_after(imports: str) -> list[str]:
    check = (
        f"import sys, {imports}\n"
        f"print(' '.join(m for m in {LEFT_TO_THE_METRO_WRITER!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, env=cli_env(), check=True
    )
    return out.stdout.split()


def test_snapshot_start_up_leaves_the_metro_writers_modules_unloaded() -> None:
    assert _loaded_after("heatmetro.cli, heatmetro.site_builder.snapshot") == []


@pytest.mark.parametrize("command", [["--help"], ["snapshot", "--help"], ["ingest", "--help"]])
def test_the_command_still_starts(command: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "heatmetro.cli", *command],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "usage: heatmetro" in out.stdout


def _in_a_cli_process(code: str, **env: str) -> str:
    """What ``code`` prints once ``heatmetro.cli`` and then numpy are imported, in a new
    process whose environment has no BLAS setting but ``env``'s."""
    base = {k: v for k, v in cli_env().items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run(
        [sys.executable, "-c", f"import os, heatmetro.cli, numpy\n{code}"],
        capture_output=True,
        text=True,
        env={**base, **env},
        check=True,
    )
    return out.stdout.strip()


def test_a_command_starts_no_idle_blas_threads() -> None:
    # numpy's OpenBLAS would start a thread per core, spinning ~0.1 s of CPU a process
    # (two cores: one more thread). heatmetro multiplies no matrices.
    assert _in_a_cli_process("print(len(os.listdir('/proc/self/task')))") == "1"


def test_a_blas_thread_count_the_user_set_is_kept() -> None:
    got = _in_a_cli_process("print(os.environ['OPENBLAS_NUM_THREADS'])", OPENBLAS_NUM_THREADS="2")
    assert got == "2"
