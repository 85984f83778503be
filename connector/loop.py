"""Choosing the event loop: uvloop where it is installed, asyncio's own otherwise.

uvloop (libuv underneath) cuts the per-wakeup cost of every socket read and write; the connector's
backtest round trips and the consumer-ack hops are made of little else. It is a dependency on the
platforms it supports and can be turned off with ``CONNECTOR_EVENT_LOOP=asyncio``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopUnavailable(Exception):
    """``uvloop`` was asked for explicitly and is not installed."""


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for ``choice`` (auto | asyncio | uvloop); None means asyncio's default."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise LoopUnavailable(
                "CONNECTOR_EVENT_LOOP=uvloop but uvloop is not installed"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
