"""Health: is Redis answering, did it lose its data, and is the service ready.

:class:`RedisWatch` probes Redis every few seconds: it tells a Redis that does not answer yet
(retried, warned about every 30 s) from one that refuses us for good (a configuration error),
and notices a Redis that came back without its data (the registry gone) so that everything is
provisioned again. :func:`readiness` puts the service's parts together into ``/readyz``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from connector.acks.consumer_gate import ConsumerGate
from connector.config import ConfigError, mask_url
from connector.http import Readiness
from connector.metrics import Metrics
from connector.streams.lease import PrefixLease
from connector.streams.publisher import Publisher
from connector.trading.session import WARNING_EVERY_S, Session
from connector.wire.client import RedisClient, configuration_problem

log = logging.getLogger(__name__)

CHECK_INTERVAL = 2.0


class RedisWatch:
    """Redis' health as the service sees it: answering or not, and why."""

    def __init__(
        self,
        redis: RedisClient,
        url: str,
        timeout: float,
        metrics: Metrics,
        *,
        registry_key: str,
        has_streams: Callable[[], bool],
        on_data_lost: Callable[[], Awaitable[None]],
    ) -> None:
        self._redis = redis
        self._url = mask_url(url)
        self._timeout = timeout
        self._metrics = metrics
        self._registry_key = registry_key
        self._has_streams = has_streams
        self._on_data_lost = on_data_lost
        self.ok = False
        self.error = ""  # the last probe's failure, for /readyz
        self._ever_ok = False
        self._warned = float("-inf")

    async def watch(self, on_config_error: Callable[[ConfigError], None]) -> None:
        """Probe until cancelled; a Redis that answers at last and refuses us for good ends it
        (``on_config_error``)."""
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            try:
                await self.check()
            except ConfigError as exc:
                on_config_error(exc)
                return

    async def check(self, first: bool = False) -> None:
        """One probe. Raises ConfigError when Redis refuses us for good before it ever
        answered (credentials, a database that does not exist)."""
        try:
            await asyncio.wait_for(self._redis.ping(), self._timeout)
        except Exception as exc:  # any failure of the probe means: not answering
            self._failed(exc, first)
        else:
            if not self.ok and not first:
                log.info("Redis answers again", extra={"url": self._url})
            self.ok = self._ever_ok = True
            await self._check_registry()
        self._metrics.redis_up.set(1 if self.ok else 0)

    def _failed(self, exc: BaseException, first: bool) -> None:
        problem = configuration_problem(exc)
        if problem is not None and not self._ever_ok:
            raise ConfigError(f"CONNECTOR_REDIS_URL: {problem}")
        self.error = (str(exc) or type(exc).__name__)[:200]
        now = time.monotonic()
        if self.ok or first or now - self._warned >= WARNING_EVERY_S:
            self._warned = now
            log.warning(
                "Redis is not answering" if problem is None else problem,
                extra={"url": self._url, "error": self.error},
            )
        self.ok = False

    async def _check_registry(self) -> None:
        """Redis restarted without its data: the registry, and with it the consumer groups,
        are gone. Everything is provisioned again (``on_data_lost``)."""
        if not self._has_streams():
            return
        try:
            present = await self._redis.exists(self._registry_key)
        except Exception:  # the next check tries again
            return
        if not present:
            log.warning(
                "Redis lost the stream registry (a restart without persistence?); "
                "creating streams, groups and registry again"
            )
            await self._on_data_lost()


def readiness(
    *,
    session: Session,
    redis: RedisWatch,
    publisher: Publisher,
    gate: ConsumerGate | None,
    lease: PrefixLease | None,
    phase: str,
) -> Readiness:
    """Connected to the Trading API, Redis answering and taking writes, the prefix ours, and
    nothing held too long for a consumer group; each failing check says why."""
    checks = {"trading_api": session.connected, "redis": redis.ok and publisher.healthy}
    detail = {}
    if gate is not None:
        stall = gate.stall()
        checks["consumers"] = not gate.overdue and stall is None
        if stall is not None:
            detail["consumers"] = stall
        elif not checks["consumers"]:
            detail["consumers"] = "confirmation overdue (CONSUMER_ACK_TIMEOUT, policy hold)"
    if lease is not None and lease.holder is not None:
        checks["prefix"] = False
        detail["prefix"] = f"stream prefix held by {lease.holder}"
    elif lease is not None and lease.held and not lease.confirmed():
        checks["prefix"] = False  # writes wait (see PrefixLease.confirmed)
        detail["prefix"] = "stream prefix lease not confirmed (renewals fail)"
    if not checks["trading_api"]:
        detail["trading_api"] = f"not started: {phase}" if phase else session.status
    if not checks["redis"]:
        detail["redis"] = (
            f"not answering: {redis.error}"
            if not redis.ok
            else f"publishing fails: {publisher.last_error}"
        )
    return Readiness(all(checks.values()), checks, detail)
