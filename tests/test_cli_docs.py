"""Every command documents itself, and user mistakes are one clean line, not a traceback."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from heatmetro import __version__
from heatmetro.cli import build_parser
from heatmetro.core.config import load_config
from tests.conftest import cli_env


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_the_commands_exist() -> None:
    assert _commands() == [
        "config", "demo", "import", "ingest", "personal", "serve", "shards", "snapshot", "stats",
    ]  # fmt: skip


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help_with_an_example(
    command: str, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    out = run_cli(command, "--help").stdout
    assert out.startswith(f"usage: heatmetro {command}")
    assert re.search(rf"example:\n  heatmetro {command}\b", out), out
    assert "HEATMETRO_SALT" in out  # the environment overrides are listed
    for option in ("-c CONFIG", "-q", "-v"):
        assert option in out


def test_version(run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    assert run_cli("--version").stdout.strip() == f"heatmetro {__version__}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ingest", "no/such/file.jsonl"), "input no/such/file.jsonl does not exist"),
        (("stats",), "no store at"),
        (
            ("snapshot", "--month", "2021-13"),
            "'2021-13': there is no month 13; expected YYYY-MM, e.g. 2021-02",
        ),
        (("snapshot", "--month", "June"), "'June': expected YYYY-MM, e.g. 2021-02"),
        (
            (
                "personal",
                "--athlete",
                "a-1",
                "--out",
                "x",
                "--from",
                "2021-06-20",
                "--to",
                "2021-06-10",
            ),
            "--from 2021-06-20 is after --to 2021-06-10",
        ),
        (("serve", "--directory", "no/such/site"), "no site in no/such/site"),
        (("personal", "--athlete", "a-1", "--out", "x"), "no personal store at"),
        (("ingest", "-w", "9", "x"), "--workers must be between 1 and 8"),
    ],
)
def test_user_mistakes_are_one_line(
    args: tuple[str, ...],
    message: str,
    project: Path,
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    proc = run_cli(*args[:1], "-c", project / "config.toml", *args[1:], check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # one line, as promised


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("min_athletes = 0", "min_athletes: Input should be greater than or equal to 1 (got 0)"),
        ('night_layer = "yes"', "night_layer: Input should be a valid boolean (got 'yes')"),
        ('epoch_s = "2"', "epoch_s: Input should be a valid number (got '2')"),
        ("personal_heatmaps = 1", "personal_heatmaps: Input should be a valid boolean (got 1)"),
        ('template_dir = "nope"', "template_dir"),
        ("weekly_min_athletes = 2", "weekly_min_athletes = 2 is looser than min_athletes = 3"),
        ("weekly_public_max_zoom = 14", "weekly_public_max_zoom = 14 is looser than"),
    ],
)
def test_a_config_mistake_names_the_key_and_the_value(
    project: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]], line: str, message: str
) -> None:
    (project / "config.toml").write_text(line + "\n")
    proc = run_cli("stats", "-c", project / "config.toml", check=False)
    err = proc.stderr.strip()
    assert proc.returncode == 1 and len(err.splitlines()) == 1, err
    assert message in err, err
    if line.startswith("template_dir"):
        assert err.endswith("/nope is not a folder"), err


def test_bad_config_is_a_clean_error(
    project: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    (project / "config.toml").write_text("min_athletes = 0\n")
    proc = run_cli("stats", "-c", project / "config.toml", check=False)
    assert proc.returncode == 1
    assert "min_athletes" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_previews_the_published_site_on_localhost(project: Path) -> None:
    from tests.conftest import HEATMETRO, REPO, cli_env

    site = project / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>heat</title>")
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*HEATMETRO, "serve", "-c", str(project / "config.toml"), "--port", str(port)],
        env=cli_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        body = b""
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as r:
                    assert r.status == 200
                    body = r.read()
                break
            except OSError:
                time.sleep(0.1)
        assert b"<title>heat</title>" in body
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_demo_quiet_says_nothing_and_publishes(
    tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    (tmp_path / "config.toml").write_text(
        'state_dir = "state"\nout_dir = "site"\nbasemap_url = ""\n'
    )
    # The demo's own salt, as `make demo` runs (the salt draws each ride's hidden ends,
    # and a short ride may keep nothing).
    env = {k: v for k, v in cli_env().items() if k != "HEATMETRO_SALT"}
    proc = run_cli("demo", "-q", "-c", tmp_path / "config.toml", "-w", "1", env=env)
    assert (proc.stdout, proc.stderr) == ("", ""), proc.stdout + proc.stderr
    meta = (tmp_path / "site" / "metadata.json").read_text()
    assert '"athletes": 280' in meta  # the bundled months' last window, as make demo shows


def test_demo_never_writes_into_an_operators_store(
    tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """Run where an operator's config.toml is, with their salt exported, the demo once
    ingested its 1,344 rides into their store and published them over their site."""
    config = tmp_path / "config.toml"
    config.write_text('state_dir = "state"\nout_dir = "site"\nbasemap_url = ""\n')
    events = tmp_path / "real.jsonl"
    events.write_text(
        '{"kind": "athlete", "athlete_id": "a1", "updated_at": "2021-06-01T00:00:00Z"}\n'
    )
    run_cli("ingest", "-c", config, events)  # with the operator's (the tests') secret salt
    proc = run_cli("demo", "-q", "-c", config, "-w", "1", check=False)
    assert proc.returncode == 1 and "not the demo's" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    stats = json.loads(run_cli("stats", "-c", config, "--json").stdout)
    assert stats["athletes"] == 1 and stats["activities"] == 0
    assert not (tmp_path / "site").exists()


def test_config_prints_what_is_in_force_and_an_example_that_reads_back(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """An operator with only the installed package starts from ``--example``; ``config``
    shows the settings in force (environment included) and never the salt."""
    example = run_cli("config", "--example").stdout
    assert 'state_dir = "state_data"' in example and "min_athletes = 3" in example
    assert "demo_run" not in example
    (tmp_path / "config.toml").write_text(example.replace("min_athletes = 3", "min_athletes = 7"))
    env = cli_env(HEATMETRO_SALT="s3cret-salt-value", HEATMETRO_OUT_DIR=str(tmp_path / "site"))
    shown = run_cli("config", "-c", tmp_path / "config.toml", env=env).stdout
    assert "s3cret" not in shown and "# salt = ...  (set; never printed)" in shown
    assert f'out_dir = "{tmp_path / "site"}"' in shown  # the environment wins
    assert "min_athletes = 7" in shown
    assert "weekly_min_athletes = 7" in shown  # the weekly map is never looser
    # What it prints reads back to the same settings.
    (tmp_path / "again.toml").write_text(shown)
    again = load_config(tmp_path / "again.toml", salt="s3cret-salt-value")
    first = load_config(tmp_path / "config.toml", salt="s3cret-salt-value")
    assert again.model_dump() == first.model_dump(exclude={"weekly_min_athletes"}) | {
        "weekly_min_athletes": 7,
        "out_dir": tmp_path / "site",
    }
