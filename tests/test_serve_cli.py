"""``heatmetro serve`` as a user runs it: the URL it prints, the address it really binds
(read from the kernel's socket table, not from a constant), and a clean Ctrl-C."""

from __future__ import annotations

import ipaddress
import os
import re
import select
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from heatmetro.site_builder.pages import write_pages
from tests.conftest import HEATMETRO, REPO, cli_env
from tests.test_pages import META

READY = re.compile(r"^Serving (?P<dir>.+) at (?P<url>http://(?P<host>[^:/]+):(?P<port>\d+)/) \(Ctrl-C to stop\)$")  # fmt: skip


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], re.Match[str]]]:
    """``heatmetro serve --port 0`` on a freshly built site, once it said it is ready."""
    site = tmp_path / "site"
    write_pages(site, META)
    proc = subprocess.Popen(
        [*HEATMETRO, "serve", "--directory", str(site), "--port", "0"],
        env=cli_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        # A ready line stuck in a pipe buffer would hang here: give it 30 s, then fail.
        readable, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline().rstrip("\n") if readable else "(nothing in 30 s)"
        ready = READY.match(line)
        why = proc.stderr.read() if proc.poll() and proc.stderr else ""
        assert ready, f"no ready line: {line!r} / {why}"
        assert ready["dir"] == str(site)
        yield proc, ready
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 4), ("tcp6", 16)):
        with open(f"/proc/{pid}/net/{table}") as fh:
            next(fh)
            for row in fh:
                cols = row.split()
                local, state, inode = cols[1], cols[3], cols[9]
                if state != "0A" or inode not in inodes:  # 0A = LISTEN
                    continue
                host_hex, port_hex = local.split(":")
                raw = bytes.fromhex(host_hex)
                # /proc prints each 32-bit word in host (little-endian) order.
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
                found.append((str(ipaddress.ip_address(raw)), int(port_hex, 16)))
    return found


def test_serve_listens_on_loopback_only(
    server: tuple[subprocess.Popen[str], re.Match[str]],
) -> None:
    proc, ready = server
    assert listening_addresses(proc.pid) == [("127.0.0.1", int(ready["port"]))]
    assert ready["host"] == "127.0.0.1"
    url = ready["url"]
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 -- loopback server
        assert resp.status == 200
        assert b"heatmetro" in resp.read()
    with urllib.request.urlopen(url + "assets/leaflet/leaflet.js", timeout=10) as resp:  # noqa: S310
        assert "javascript" in resp.headers["Content-Type"]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url + "tiles/all/1/0/0.png", timeout=10)  # noqa: S310
    assert err.value.code == 404


def test_the_socket_table_reader_sees_a_wildcard_bind() -> None:
    """The check above could only pass if it can tell 0.0.0.0 from 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))  # noqa: S104 -- the case the serve check must catch
        s.listen()
        assert ("0.0.0.0", s.getsockname()[1]) in listening_addresses(os.getpid())


def test_ctrl_c_stops_serve_cleanly(server: tuple[subprocess.Popen[str], re.Match[str]]) -> None:
    proc, ready = server
    with urllib.request.urlopen(ready["url"], timeout=10) as resp:  # noqa: S310
        assert resp.status == 200
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert err == "" and out == "", (out, err)
