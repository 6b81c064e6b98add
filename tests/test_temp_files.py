"""Cache temporaries (``core.temp_files``): a writer killed mid-write leaves one behind;
the next writer removes it, and never one that a running process is writing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from heatmetro.core.temp_files import temporary_for


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(proc.stdout)


def test_a_dead_writers_temporary_goes_a_live_ones_stays(tmp_path: Path) -> None:
    cache = tmp_path / "window_cache.npz"
    host = socket.gethostname().replace(".", "-")
    dead = tmp_path / f".window_cache.npz.{host}.{_dead_pid()}.tmp"
    live = tmp_path / f".window_cache.npz.{host}.1.tmp"  # pid 1 runs as long as the machine
    elsewhere = (
        tmp_path / ".window_cache.npz.other-host.4242.tmp"
    )  # another host's: not ours to judge
    other_cache = tmp_path / f".metro_cache.npz.{host}.{_dead_pid()}.tmp"
    for f in (dead, live, elsewhere, other_cache):
        f.write_bytes(b"half")
    tmp = temporary_for(cache)
    assert tmp == tmp_path / f".window_cache.npz.{host}.{os.getpid()}.tmp"
    assert not dead.exists()
    assert live.exists() and elsewhere.exists() and other_cache.exists()


def test_a_snapshot_clears_what_a_killed_one_left(tmp_path: Path) -> None:
    """Through the writers: each cache write clears its own stale temporaries."""
    from heatmetro.site_builder.pages import _write_maps

    cache = tmp_path / "map_cache.json"
    host = socket.gethostname().replace(".", "-")
    stale = tmp_path / f".map_cache.json.{host}.{_dead_pid()}.tmp"
    stale.write_text("{")
    _write_maps(cache, {"k": "v"})
    assert not stale.exists()
    assert cache.read_text() == '{"k": "v"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map_cache.json"]
