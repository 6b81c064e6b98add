"""The Metro files written beside the heat: in a forked process while this one thresholds
the heat and draws its tiles.

The two halves of a snapshot share nothing but the window's records, read before either
starts: the Metro writer (counting, suppressing and formatting every edge: pure Python,
so a thread would wait on this one's lock) needs no heat, and the heat needs no Metro
file. On two cores, a rebuild spends the Metro writer's time (~0.6 s here) drawing
instead. Every file is the same, byte for byte, whichever process writes it: the writer
reads nothing that the other half changes, and the order of its own work is fixed.

The child writes into the build folder and the Metro cache only; it hands back what it
reports (rows per file, the cache's line) through a pipe, or the error it met, which
``result`` raises here as it would have been raised in this process. A child that dies
without a word (killed, out of memory) is a ``PublishError`` naming how it ended; the
build is then discarded like any failed build, and the published site stays.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from heatmetro.core.errors import HeatmetroError, PublishError


@dataclass(frozen=True)
class MetroDone:
    """What a Metro writer reports: data rows per file, and its cache's summary line."""

    rows: dict[str, int]
    cache_line: str = ""
    cache_problem: bool = False


class MetroJob:
    """``work()`` (the Metro writer) in a forked child when ``parallel``; else run by
    ``result`` in this process, where it always ran.

    Call ``result`` once the heat is drawn, or ``cancel`` when the build is given up.
    """

    def __init__(self, work: Callable[[], MetroDone], *, parallel: bool) -> None:
        self._work = work
        self._pid: int | None = None
        self._fd: int | None = None
        self._done: MetroDone | None = None
        if parallel and hasattr(os, "fork"):
            self._start()

    @property
    def forked(self) -> bool:
        return self._pid is not None

    def _start(self) -> None:
        read_end, write_end = os.pipe()
        parent = os.getpid()
        sys.stdout.flush()  # else the child's exit could print what this process buffered
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller's stack
            code = 1
            try:
                os.close(read_end)
                _die_with(parent)
                try:
                    payload: tuple[str, object] = ("ok", self._work())
                    code = 0
                except BaseException as exc:  # noqa: BLE001 - handed to the parent, raised there
                    payload = ("error", _portable(exc))
                with os.fdopen(write_end, "wb") as fh:
                    fh.write(pickle.dumps(payload))
            finally:
                os._exit(code)  # no atexit handlers, no buffers of the parent flushed twice
        os.close(write_end)
        self._pid, self._fd = pid, read_end

    def result(self) -> MetroDone:
        """What the writer reported; raises what it raised."""
        if self._done is not None:
            return self._done
        if self._pid is None:
            self._done = self._work()
            return self._done
        assert self._fd is not None
        with os.fdopen(self._fd, "rb") as fh:
            self._fd = None
            data = fh.read()
        _, status = os.waitpid(self._pid, 0)
        self._pid = None
        if not data:
            msg = f"the Metro writer (process {_ended(status)}) gave no result"
            raise PublishError(msg)
        kind, value = pickle.loads(data)  # noqa: S301 - our own child's bytes, never input
        if kind == "error":
            raise value
        self._done = value
        return value

    def cancel(self) -> None:
        """Stop a writer still running (the build is given up); a no-op otherwise."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._pid is not None:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self._pid, 0)
            self._pid = None


def _die_with(parent: int) -> None:
    """On Linux, have this child killed when ``parent`` dies: a snapshot killed mid-build
    (SIGKILL, out of memory) leaves no writer behind to touch the Metro cache later."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the child ends with its own work
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent was gone before the call took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def _portable(exc: BaseException) -> BaseException:
    """``exc`` as it can cross the pipe: our own errors, file-system errors and Ctrl-C as
    they are; anything else (a bug) as a ``PublishError`` carrying its traceback."""
    if isinstance(exc, HeatmetroError | OSError | KeyboardInterrupt):
        try:
            pickle.loads(pickle.dumps(exc))  # noqa: S301 - round trip of our own object
            return exc
        except Exception:  # noqa: BLE001 - an unpicklable one: described instead
            pass
    text = "".join(traceback.format_exception(exc)).rstrip()
    return PublishError(f"the Metro writer failed:\n{text}")


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
