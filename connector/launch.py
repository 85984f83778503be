"""The ``connector`` command's entry point: no stop signal is lost while the program starts.

Importing the service (pydantic, redis, websockets) takes a few hundred milliseconds. A SIGTERM
in that time used to be lost: as PID 1 in a container Python ignores a signal it has no handler
for, so ``docker stop`` waited out its whole grace period and then killed the process (and a
stream-prefix lease taken meanwhile blocked the next connector until it expired). So this module
imports nothing heavy and records SIGTERM/SIGINT from its first line; ``connector run`` picks the
record up once its own handlers are in place (:func:`take_early_signals`) and stops cleanly.
Every other command gets the default behaviour back, with any recorded signal delivered again.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_early: list[signal.Signals] = []


def _remember(signum: int, frame: FrameType | None) -> None:
    _early.append(signal.Signals(signum))


def take_early_signals() -> list[signal.Signals]:
    """Stop signals received before the caller installed its own handlers (and forget them)."""
    taken = list(_early)
    _early.clear()
    return taken


def restore_default_signals() -> None:
    """Back to Python's usual behaviour (SIGINT raises KeyboardInterrupt, SIGTERM ends the
    process), then deliver what arrived meanwhile: for commands that do not handle signals."""
    if signal.getsignal(signal.SIGTERM) is not _remember:
        return  # not started through main(): nothing was changed
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for received in take_early_signals():
        signal.raise_signal(received)


def record_early_signals() -> None:
    """From now on SIGTERM/SIGINT are recorded (see :func:`take_early_signals`)."""
    for stop in STOP_SIGNALS:
        signal.signal(stop, _remember)


def main(argv: Sequence[str] | None = None) -> int:
    record_early_signals()
    from connector.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
