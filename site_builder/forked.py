"""Work done in a forked process while this one goes on: the Metro files while the heat
is thresholded and drawn, the window cache while the tiles are.

The snapshot's halves share nothing but what was read before the fork: the Metro writer
(counting, suppressing and formatting every edge: pure Python, so a thread would wait
on this one's lock) needs no heat, the heat needs no Metro file, and nothing reads the
window cache until the next snapshot. On two cores, a rebuild spends that time drawing
instead. Every file is the same, byte for byte, whichever process writes it: the child
reads nothing the parent changes afterwards, and the order of its own work is fixed.

The child hands back its result through a pipe, or the error it met, which ``result``
raises here as it would have been raised in this process. A child that dies without a
word (killed, out of memory) is a ``PublishError`` naming how it ended; a child whose
parent dies is killed with it (Linux), so a snapshot killed mid-build leaves no writer
behind.

The child's garbage collector leaves the heap it inherited alone (``gc.freeze``) and runs
less often (``CHILD_GC_THRESHOLD``): the Metro writer allocates millions of small objects
(rows, cells, lines of text), and each pass of the collector over the parent's heap
(millions of objects the child only reads) costs CPU and, as it writes to the objects'
headers, a copy of each page it touches.
"""

from __future__ import annotations

import ctypes
import gc
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Generic, TypeVar

from heatmetro.core.errors import HeatmetroError, PublishError

T = TypeVar("T")

#: ``gc.set_threshold`` in a child: a young collection every 200,000 net allocations
#: instead of 700, and older ones 5 and 10 times as rarely as Python's (10, 10). Memory is
#: still reclaimed (reference counting frees all but cycles, and the collector still
#: runs).
CHILD_GC_THRESHOLD = (200_000, 50, 100)


class ForkedJob(Generic[T]):
    """``work()`` in a forked child when ``parallel``; else run by ``result`` in this
    process. ``what`` names the work in errors ("the Metro writer").

    Call ``result`` when the work is needed, or ``cancel`` when it is not any more.
    """

    def __init__(self, work: Callable[[], T], *, parallel: bool, what: str) -> None:
        self._work, self.what = work, what
        self._pid: int | None = None
        self._fd: int | None = None
        self._done: tuple[T] | None = None
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
                gc.freeze()  # the inherited heap: never scanned, never copied for it
                gc.set_threshold(*CHILD_GC_THRESHOLD)
                try:
                    payload: tuple[str, object] = ("ok", self._work())
                    code = 0
                except BaseException as exc:  # noqa: BLE001 - handed to the parent, raised there
                    payload = ("error", _portable(exc, self.what))
                with os.fdopen(write_end, "wb") as fh:
                    fh.write(pickle.dumps(payload))
            finally:
                os._exit(code)  # no atexit handlers, no buffers of the parent flushed twice
        os.close(write_end)
        self._pid, self._fd = pid, read_end

    def result(self) -> T:
        """What the work returned; raises what it raised."""
        if self._done is not None:
            return self._done[0]
        if self._pid is None:
            self._done = (self._work(),)
            return self._done[0]
        assert self._fd is not None
        with os.fdopen(self._fd, "rb") as fh:
            self._fd = None
            data = fh.read()
        _, status = os.waitpid(self._pid, 0)
        self._pid = None
        if not data:
            msg = f"{self.what} (process {_ended(status)}) gave no result"
            raise PublishError(msg)
        kind, value = pickle.loads(data)  # noqa: S301 - our own child's bytes, never input
        if kind == "error":
            raise value
        self._done = (value,)
        return value

    def cancel(self, *, kill: bool = True) -> None:
        """Stop a child still running (``kill``), or let it finish (a writer that cleans
        up after itself), and forget its result; a no-op once done."""
        if self._fd is not None and not kill:
            try:
                self.result()
            except BaseException:  # noqa: BLE001 - given up: its outcome no longer matters
                pass
            return
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
    (SIGKILL, out of memory) leaves no writer behind to touch a cache later."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the child ends with its own work
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent was gone before the call took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def _portable(exc: BaseException, what: str) -> BaseException:
    """``exc`` as it can cross the pipe: our own errors, file-system errors and Ctrl-C as
    they are; anything else (a bug) as a ``PublishError`` carrying its traceback."""
    if isinstance(exc, HeatmetroError | OSError | KeyboardInterrupt):
        try:
            pickle.loads(pickle.dumps(exc))  # noqa: S301 - round trip of our own object
            return exc
        except Exception:  # noqa: BLE001 - an unpicklable one: described instead
            pass
    text = "".join(traceback.format_exception(exc)).rstrip()
    return PublishError(f"{what} failed:\n{text}")


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
