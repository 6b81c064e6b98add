"""Imported first by the ``heatmetro`` command: SIGINT or SIGTERM while it loads its
modules (a second or so: pydantic, Bytewax, numpy) ends it with one line, not a
traceback from the middle of an import. ``heatmetro.cli.main`` hands the signals back
(``release``) once loading is done; ``ingest`` then installs its own (flows/stop.py).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop(signum: int, frame: FrameType | None) -> None:
    print(f"heatmetro: stopped by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
    os._exit(128 + signum)  # nothing was written yet: nothing to unwind


def release() -> None:
    """The usual behaviour again: SIGINT raises ``KeyboardInterrupt``, SIGTERM ends."""
    for s, before in _before.items():
        signal.signal(s, before)


# Only when the program is the command (its script, or ``python -m heatmetro.cli``), not
# when a test or a tool imports the module. A signal the parent ignores (SIGINT of a
# background job in a script) stays ignored.
_command = bool(sys.argv) and Path(sys.argv[0]).name in {"heatmetro", "cli.py"}
_before = {
    s: signal.getsignal(s)
    for s in (SIGNALS if _command else ())
    if signal.getsignal(s) is not signal.SIG_IGN
}
for _s in _before:
    signal.signal(_s, _stop)
