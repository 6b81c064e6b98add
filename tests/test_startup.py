"""What a command loads before it works: the snapshot path leaves the stream contract's
models to ingest and GDAL to the forked Metro writer (start-up is a good part of a
rebuild that changed little)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import cli_env

_CHECK = (
    "import sys, heatmetro.cli, heatmetro.site_builder.snapshot\n"
    "print(' '.join(m for m in ('heatmetro.core.contract', 'pyogrio') if m in sys.modules))"
)


def test_snapshot_start_up_leaves_contract_and_gdal_unloaded() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CHECK], capture_output=True, text=True, env=cli_env(), check=True
    )
    assert out.stdout.split() == []
