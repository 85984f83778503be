"""How a backtest run ends, decided once: a run that did not finish never looks like one that did.

* **completed**: ``backtest_complete`` with an event id was stored and its ack sent in time (or,
  from a server that gives no event ids at all, any ``backtest_complete``);
* **halted**: ``backtest_complete`` *without* an event id after id-bearing events. That is what
  the gateway sends when its engine gave up on a step nobody acknowledged; a clean end carries an
  id. The gateway leaves the socket open either way: the client has to leave by itself;
* **interrupted**: the server closed the session mid-run (``connection``/``DISCONNECTING``, or a
  closing handshake of its own), or a session lost mid-run was not back within
  ``reconnect_window`` (the engine moves on without us and halts after a few unacknowledged
  steps; what it sent meanwhile is never sent again);
* **unacknowledged**: the completion's ack could not be sent within ``complete_timeout`` (Redis
  would not store it, or the session was down): the engine has given up waiting and torn down.

The service turns the outcome into a marker, a log line and its exit code (see connector.app).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal

log = logging.getLogger(__name__)

Outcome = Literal["completed", "halted", "interrupted", "unacknowledged"]
#: The engine waits this long for the ack of ``backtest_complete`` before tearing down.
COMPLETE_ACK_TIMEOUT = 10.0


class BacktestRun:
    """Watches one backtest run for the ways it can end (see the module docstring)."""

    def __init__(
        self,
        on_end: Callable[[Outcome, str], None],
        ids_seen: Callable[[], int],
        *,
        reconnect_window: float,
        complete_timeout: float = COMPLETE_ACK_TIMEOUT,
    ) -> None:
        self._on_end = on_end
        self._ids_seen = ids_seen
        self._reconnect_window = reconnect_window
        self._complete_timeout = complete_timeout
        self._goodbye = False  # the server announced its shutdown on this connection
        self._deadline: asyncio.TimerHandle | None = None
        self._reconnecting = False  # the deadline is the reconnect window (not the completion's)
        self.outcome: Outcome | None = None

    @property
    def started(self) -> bool:
        """An id-bearing event arrived: the engine runs, and waits for our acks."""
        return self._ids_seen() > 0

    def on_terminal(self, event_id: str | None) -> None:
        """A ``backtest_complete`` frame (routed, not yet stored)."""
        if self.outcome is not None:
            return
        if event_id is not None:
            log.info("backtest complete; acknowledging it", extra={"event_id": event_id})
            self._arm(
                self._complete_timeout,
                "unacknowledged",
                f"backtest_complete was not acknowledged within {self._complete_timeout:g} s: "
                "the engine gave up waiting for it",
            )
        elif self.started:
            self._end(
                "halted",
                f"backtest_complete without an event id after {self._ids_seen()} id-bearing "
                "events: the engine halted the run",
            )
        else:
            self._end("completed", "backtest_complete (this server gives no event ids)")

    def on_completion_acked(self) -> None:
        """The ack naming ``backtest_complete`` went out."""
        if self.outcome is None and self._deadline is not None:
            self._end("completed", "backtest_complete stored and acknowledged")

    def on_goodbye(self) -> None:
        """``connection``/``DISCONNECTING``: the server is shutting down."""
        self._goodbye = True

    def on_connected(self) -> None:
        if self._reconnecting:
            self._disarm()
        self._goodbye = False

    def on_disconnected(self, server_closed: bool) -> None:
        # Once the completion arrived, its own deadline decides (the ack may still go out on a
        # new connection); a reconnect window already running keeps running.
        if self.outcome is not None or not self.started or self._deadline is not None:
            return
        if server_closed or self._goodbye:
            self._end("interrupted", "the server closed the session in the middle of the run")
        else:
            self._arm(
                self._reconnect_window,
                "interrupted",
                f"the session was lost in the middle of the run and not back within "
                f"{self._reconnect_window:g} s",
                reconnecting=True,
            )

    # -- inside -------------------------------------------------------------------------------

    def _arm(
        self, seconds: float, outcome: Outcome, detail: str, reconnecting: bool = False
    ) -> None:
        self._disarm()
        self._reconnecting = reconnecting
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(seconds, self._end, outcome, detail)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._reconnecting = False

    def _end(self, outcome: Outcome, detail: str) -> None:
        if self.outcome is not None:
            return
        self._disarm()
        self.outcome = outcome
        self._on_end(outcome, detail)

    def close(self) -> None:
        """The service stops: no timer may fire after it."""
        self._disarm()
