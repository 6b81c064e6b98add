"""A warm ``heatmetro`` for the tests: each command in a process forked from one that
has already imported heatmetro and its libraries.

The suite runs ~500 commands, and a fresh ``python -m heatmetro.cli`` spends most of a
small command's second importing numpy, pydantic, Bytewax, folium and heatmetro itself.
Here one server process per test worker imports them once; for each command it forks a
child that takes the caller's argv, environment, working folder and standard streams,
then runs ``heatmetro.cli.run()`` as ``python -m heatmetro.cli`` would. The child is a
real process: its exit code (or the signal that killed it) is the server's ``waitpid``,
its output the bytes it wrote.

What a fork cannot give is a fresh interpreter: the hash seed of ``str`` is the server's
(one random seed per server, so per test run), and settings read when Python starts
(``PYTHON*``, the locale) are the server's. A command whose environment differs there
runs as a fresh process (``needs_fresh_process``), and the byte-identity of published
files across hash seeds is checked with fresh processes
(``test_two_snapshots_of_one_store_are_byte_identical``).
``HEATMETRO_TEST_WARM=0`` runs every command as a fresh process.

Protocol: the caller sends one message per command over a Unix socket, a JSON header
``{"args", "env", "cwd"}`` with four descriptors (stdin, stdout, stderr, and one end of
a socket pair for the answer); the server answers on that pair ``pid\\n``, then
``exit CODE\\n`` (``CODE`` as ``subprocess`` gives it: negative for a signal).
"""

from __future__ import annotations

import contextlib
import json
import locale
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

_MAX_HEADER = 1 << 22
# Read when Python starts: a command whose environment sets them otherwise needs its own
# interpreter (``PYTHONPATH`` is the one the server was started with, compared too).
_STARTUP_PREFIXES = ("PYTHON", "LC_")
_STARTUP_NAMES = ("LANG", "LANGUAGE")


def _startup_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_STARTUP_PREFIXES) or k in _STARTUP_NAMES}


def needs_fresh_process(env: Mapping[str, str], server_env: Mapping[str, str]) -> bool:
    """Whether a command with ``env`` must start its own interpreter."""
    return _startup_env(env) != _startup_env(server_env)


# ---------------------------------------------------------------- the server (its own process)


def _preload() -> None:
    """What commands import: the CLI, the dataflow, the site and Metro writers."""
    import folium  # noqa: F401

    import heatmetro.cli  # noqa: F401
    import heatmetro.flows.runner  # noqa: F401
    import heatmetro.site_builder.metro  # noqa: F401
    import heatmetro.site_builder.snapshot  # noqa: F401
    import heatmetro.state.store  # noqa: F401


def _serve(listener: socket.socket) -> dict[str, Any] | None:
    """Fork a child per request until the caller hangs up. Returns the request in the
    child (which then runs it), ``None`` in the server when it is done."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select below
    answers: dict[int, socket.socket] = {}
    while True:
        try:
            ready = select.select([listener.fileno(), wake_r], [], [])[0]
        except InterruptedError:
            continue
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
            while answers:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                answer = answers.pop(pid, None)
                if answer is not None:
                    with contextlib.suppress(OSError):
                        answer.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
                    answer.close()
        if listener.fileno() not in ready:
            continue
        header, fds, _, _ = socket.recv_fds(listener, _MAX_HEADER, 4)
        if not header:
            return None  # the caller is gone
        request = json.loads(header)
        stdin, stdout, stderr, answer_fd = fds
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            # The child: the server's descriptors closed, the caller's streams as its own.
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (wake_r, wake_w, answer_fd):
                os.close(fd)
            listener.close()
            for other in answers.values():
                other.close()
            for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
                os.dup2(fd, target)
                os.close(fd)
            os.setpgid(0, 0)  # its own group: a signal to it never reaches the server
            return request
        for fd in (stdin, stdout, stderr):
            os.close(fd)
        answer = socket.socket(fileno=answer_fd)
        answer.sendall(f"{pid}\n".encode())
        answers[pid] = answer


def _run_request(request: dict[str, Any]) -> None:
    """In the child: become ``python -m heatmetro.cli ARGS`` in the caller's setting."""
    import heatmetro.cli

    os.chdir(request["cwd"])
    sys.path[0] = os.getcwd()  # as ``python -m`` puts the folder it was started in
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    sys.argv = [heatmetro.cli.__file__, *request["args"]]
    heatmetro.cli.run()


def server_main(fd: int) -> None:
    listener = socket.socket(fileno=fd)
    _preload()
    listener.sendall(b"ready\n")
    request = _serve(listener)
    if request is None:
        sys.exit(0)
    _run_request(request)


# ---------------------------------------------------------------- the caller (the test process)


class WarmCli:
    """One server per test process, started on first use."""

    def __init__(self, python: str, env: Mapping[str, str], cwd: Path) -> None:
        self.python, self.env, self.cwd = python, dict(env), cwd
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._proc = subprocess.Popen(
            [self.python, "-c", f"from tests.warm_cli import server_main; server_main({theirs.fileno()})"],
            env=self.env, cwd=self.cwd, pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        theirs.close()
        ours.settimeout(120)
        if ours.recv(64) != b"ready\n":
            msg = f"the warm heatmetro server did not start (exit {self._proc.wait()})"
            raise RuntimeError(msg)
        ours.settimeout(None)
        self._sock = ours
        return ours

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()  # the server sees the end and exits
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def run(
        self,
        cmd: Sequence[str],
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        input: bytes | None,  # noqa: A002 - as subprocess.run
        timeout: float | None,
    ) -> subprocess.CompletedProcess[bytes]:
        """``subprocess.run(cmd + args, capture_output=True, ...)``, run warm."""
        header = json.dumps({"args": list(args), "env": dict(env), "cwd": str(cwd)}).encode()
        ours, theirs = socket.socketpair()
        with (
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
            contextlib.ExitStack() as stack,
        ):
            if input is None:
                stdin = stack.enter_context(open(os.devnull, "rb"))  # noqa: SIM115
                stdin_fd, feeder = stdin.fileno(), None
            else:
                stdin_fd, write_end = os.pipe()
                stack.callback(os.close, stdin_fd)
                feeder = threading.Thread(target=_feed, args=(write_end, input), daemon=True)
            with self._lock:
                sock = self._sock or self._start()
                socket.send_fds(
                    sock, [header], [stdin_fd, out.fileno(), err.fileno(), theirs.fileno()]
                )
            theirs.close()
            if feeder is not None:
                feeder.start()
            reader = ours.makefile("rb")
            deadline = None if timeout is None else time.monotonic() + timeout
            pid = int(_line(reader, ours, deadline, None))
            try:
                line = _line(reader, ours, deadline, pid)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                out.seek(0)
                err.seek(0)
                raise subprocess.TimeoutExpired(
                    [*cmd, *args], timeout or 0, out.read(), err.read()
                ) from None
            finally:
                reader.close()
                ours.close()
            if feeder is not None:
                feeder.join()
            code = int(line.removeprefix("exit "))
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess([*cmd, *args], code, out.read(), err.read())


def _feed(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BrokenPipeError:  # the command stopped reading, as with subprocess.run
        pass
    finally:
        os.close(fd)


def _line(reader: BinaryIO, sock: socket.socket, deadline: float | None, pid: int | None) -> str:
    """The server's next answer line, waiting until ``deadline``."""
    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
    sock.settimeout(wait)
    try:
        line = reader.readline()
    except TimeoutError:
        raise subprocess.TimeoutExpired(["heatmetro"], wait or 0) from None
    if not line:
        msg = f"the warm heatmetro server hung up (child {pid})"
        raise RuntimeError(msg)
    return line.decode().strip()


def text(data: bytes) -> str:
    """Bytes as ``subprocess.run(text=True)`` gives them: the locale's encoding,
    universal newlines."""
    decoded = data.decode(_ENCODING)
    return decoded.replace("\r\n", "\n").replace("\r", "\n")


_ENCODING = locale.getpreferredencoding(False)
