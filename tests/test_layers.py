"""The one-way layer order is enforced: an upward import fails `make test`.

import-linter runs in `make layers`; here it runs on a copy of the package, once as it is
and once with one upward import planted, so the check itself is shown able to fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layers")
    # symlinks=False: the copy holds real folders, as an installed wheel does.
    shutil.copytree(
        REPO / "heatmetro", root / "heatmetro", ignore=shutil.ignore_patterns("__pycache__")
    )
    return root


def test_the_package_keeps_its_layers(package_copy: Path) -> None:
    result = _lint(package_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "KEPT" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward"),
    [
        ("state/store.py", "heatmetro.site_builder.snapshot"),
        ("core/config.py", "heatmetro.state.store"),
        ("flows/ingest.py", "heatmetro.site_builder.tiles"),
        ("site_builder/load.py", "heatmetro.cli"),
    ],
)
def test_an_upward_import_breaks_the_contract(
    package_copy: Path, tmp_path: Path, module: str, upward: str
) -> None:
    root = tmp_path / "pkg"
    shutil.copytree(package_copy, root)
    target = root / "heatmetro" / module
    target.write_text(
        target.read_text(encoding="utf-8") + f"\nimport {upward}  # noqa\n", encoding="utf-8"
    )
    result = _lint(root)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert upward in result.stdout
