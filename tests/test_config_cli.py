"""Config mistakes through the real CLI: one line naming the setting, exit 1, never a
traceback, whatever the value's type, size or encoding (an outside operator review)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from annotated_types import Le

from heatmetro.core.config import Config
from tests.conftest import cli_env
from tests.streams import street_rides, to_jsonl

Run = Callable[..., subprocess.CompletedProcess[str]]


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize(
    "line",
    [
        "state_dir = 3",
        "out_dir = 3",
        "template_dir = 3",
        "base_map = 3",
        "state_dir = true",
        'state_dir = ["a"]',
    ],
)
@pytest.mark.parametrize("command", [("config",), ("stats",), ("snapshot", "--month", "2021-06")])
def test_a_path_setting_of_another_type_is_one_line(
    project: Path, run_cli: Run, line: str, command: tuple[str, ...]
) -> None:
    (project / "config.toml").write_text(line + "\n")
    proc = run_cli(command[0], "-c", project / "config.toml", *command[1:], check=False)
    key = line.split(" =")[0]
    one_line_error(proc, f"{key}: expected a path (a TOML string)")


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path, run_cli: Run) -> None:
    (tmp_path / "b.toml").write_bytes(b"\xff\xfe")
    proc = run_cli("config", "-c", tmp_path / "b.toml", check=False)
    one_line_error(proc, "b.toml: not UTF-8 text (byte 0xff at offset 0)")


def test_every_integer_setting_has_an_upper_bound_that_fits_int64() -> None:
    """An unbounded integer passes `heatmetro config` and overflows in numpy or C later."""
    for name, field in Config.model_fields.items():
        if field.annotation is int:
            bounds = [int(m.le) for m in field.metadata if isinstance(m, Le)]  # type: ignore[call-overload]
            assert bounds and bounds[0] < 2**63, f"{name} has no upper bound"


@pytest.mark.parametrize(
    "key", ["min_athletes", "round_to", "weekly_min_athletes", "max_record_bytes"]
)
def test_a_huge_integer_is_refused_by_config(tmp_path: Path, run_cli: Run, key: str) -> None:
    (tmp_path / "config.toml").write_text(f"{key} = 99999999999999999999\n")
    proc = run_cli("config", "-c", tmp_path / "config.toml", check=False)
    one_line_error(proc, f"{key}: Input should be less than or equal to")


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("hide_jitter_m = nan", "hide_jitter_m: not a number (got nan)"),
        ("zone_jitter_fraction = nan", "zone_jitter_fraction: not a number (got nan)"),
        ("epoch_s = inf", "epoch_s: not finite (got inf)"),
        ("max_gap_fill_m = inf", "max_gap_fill_m: not finite (got inf)"),
        ("metro_epsilon = -inf", "metro_epsilon: not finite (got -inf)"),
    ],
)
def test_nan_and_infinity_are_named_as_such(
    tmp_path: Path, run_cli: Run, line: str, said: str
) -> None:
    (tmp_path / "config.toml").write_text(line + "\n")
    one_line_error(run_cli("config", "-c", tmp_path / "config.toml", check=False), said)


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("min_zoom = 15", ": zooms must satisfy min_zoom <= public_max_zoom"),
        ('template_dir = "nope"', "nope is not a folder"),
        ("weekly_min_athletes = 2", "weekly_min_athletes = 2 is looser"),
        # Leaflet refuses tiles without a credit: once a traceback in the snapshot.
        (
            'basemap_url = "https://tiles.example.org/{z}/{x}/{y}.png"',
            "needs its basemap_attribution",
        ),
        (
            'basemap_url = "https://t.example/{z}/{x}/{y}.png"\nbasemap_attribution = " "',
            "needs its",
        ),
    ],
)
def test_a_check_of_several_settings_reads_without_pydantics_prefix(
    tmp_path: Path, run_cli: Run, line: str, said: str
) -> None:
    (tmp_path / "config.toml").write_text(line + "\n")
    err = one_line_error(run_cli("config", "-c", tmp_path / "config.toml", check=False), said)
    assert "Value error" not in err and ": config:" not in err, err


# --------------------------------------------------------------------------- salt


@pytest.mark.parametrize(
    ("salt_line", "env_salt", "named"),
    [
        ('salt = ""', None, "salt: must not be empty or blank"),
        ('salt = "   "', None, "salt: must not be empty or blank"),
        ("", "", "HEATMETRO_SALT (overrides `salt`): must not be empty or blank"),
        ("", " \t ", "HEATMETRO_SALT (overrides `salt`): must not be empty or blank"),
        ('salt = "a-real-secret"', "", "HEATMETRO_SALT (overrides `salt`): must not be empty"),
    ],
)
def test_a_blank_salt_makes_no_store(
    tmp_path: Path, run_cli: Run, salt_line: str, env_salt: str | None, named: str
) -> None:
    """A blank salt is no secret: anyone could compute the jitter it seeds."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'state_dir = "state"\nout_dir = "site"\n{salt_line}\n')
    events = tmp_path / "e.jsonl"
    events.write_bytes(to_jsonl(street_rides(3)))
    env = {k: v for k, v in cli_env().items() if k != "HEATMETRO_SALT"}
    if env_salt is not None:
        env["HEATMETRO_SALT"] = env_salt
    for args in (("ingest", "-c", cfg, events), ("config", "-c", cfg)):
        one_line_error(run_cli(*args, env=env, check=False), named)
    assert not (tmp_path / "state").exists()


def test_a_salt_is_never_echoed_in_an_error(tmp_path: Path, run_cli: Run) -> None:
    (tmp_path / "config.toml").write_text("salt = 8675309123\n")
    env = {k: v for k, v in cli_env().items() if k != "HEATMETRO_SALT"}
    proc = run_cli("config", "-c", tmp_path / "config.toml", env=env, check=False)
    err = one_line_error(proc, "salt: Input should be a valid string")
    assert "8675309123" not in err, err
