"""The GeoPackage written in a process of its own while the Metro writer writes the text
files (``write_metro(parallel=True)``): the same bytes as in one process, and its
errors raised as they would be there."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from heatmetro.site_builder import metro
from heatmetro.site_builder.metro import MetroSettings, write_metro
from tests.test_metro_reuse import _data
from tests.test_snapshot_cli import tree

SETTINGS = MetroSettings(
    min_athletes=3, round_to=5, month="2021-02", first_month="2020-03",
    version="0.1.0", build_date="2021-03-01",
)  # fmt: skip


def _build(out: Path, *, parallel: bool) -> dict[str, int]:
    out.mkdir(parents=True)
    return write_metro(_data(), SETTINGS, out, parallel=parallel)


def test_the_geopackage_is_written_by_another_process_with_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers = tmp_path / "writers"
    writers.mkdir()
    original = metro.write_gpkg

    def recorded(path: Path, *args: Any, **kwargs: Any) -> tuple[dict[str, int], int]:
        (writers / f"{path.parent.parent.name}.pid").write_text(str(os.getpid()))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(metro, "write_gpkg", recorded)
    apart = _build(tmp_path / "apart" / "metro", parallel=True)
    one = _build(tmp_path / "one" / "metro", parallel=False)

    assert int((writers / "apart.pid").read_text()) != os.getpid()
    assert int((writers / "one.pid").read_text()) == os.getpid()
    assert apart == one
    assert apart["metro.gpkg:edges"] > 0  # the layers' rows came back through the pipe
    assert tree(tmp_path / "apart" / "metro") == tree(tmp_path / "one" / "metro")


@pytest.mark.parametrize("parallel", [True, False])
def test_a_failing_geopackage_writer_fails_the_build_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parallel: bool
) -> None:
    def full(path: Path, *args: Any, **kwargs: Any) -> tuple[dict[str, int], int]:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(metro, "write_gpkg", full)
    with pytest.raises(OSError, match="No space left") as caught:
        _build(tmp_path / "metro", parallel=parallel)
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(tmp_path / "metro" / "metro.gpkg")
