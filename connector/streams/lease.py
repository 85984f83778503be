"""One connector per stream prefix: a lease in Redis, so two sessions never interleave.

Two connectors writing the same prefix would mix two backtests in one set of streams and corrupt
both. At start-up the connector takes the lease ``{prefix}:lease`` (``SET NX PX``) before it
opens its Trading API session; while another live connector holds it, it waits (and says so, and
is not ready). The holder renews the lease well within its ``ttl`` and deletes it on a clean stop;
a crashed holder's lease expires after ``ttl``. Writes are allowed only while the lease is surely
still ours (:meth:`PrefixLease.confirmed`). Give each concurrent session its own
``CONNECTOR_STREAM_PREFIX`` (or turn the lock off where symbols are split on purpose).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from connector.streams.groups import GROUP_NAME
from connector.wire.client import RedisClient

log = logging.getLogger(__name__)

LEASE_TTL_MS = 15_000
# Writes stop this long (plus the time one write may take) before the lease could have expired
# without our renewals reaching Redis.
SAFETY_MARGIN_S = 1.0
RETRY_DELAY_S = 0.5

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Replace a value no connector writes (another client's garbage), only if it is still there.
_RECLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return false
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class PrefixLease:
    """Holds ``key`` for ``owner`` while the service runs."""

    def __init__(
        self,
        redis: RedisClient,
        key: str,
        owner: str,
        ttl_ms: int = LEASE_TTL_MS,
        clock: Callable[[], float] = time.monotonic,
        write_timeout: float = 5.0,
        on_foreign: Callable[[], None] = lambda: None,
    ):
        self._redis = redis
        self._clock = clock
        ttl_s = ttl_ms / 1000
        # A write allowed now may still reach Redis up to its timeout later: stop allowing them
        # that long (plus a margin) before the lease could lapse, and renew well before that.
        margin_s = min(write_timeout + SAFETY_MARGIN_S, ttl_s / 2)
        self._valid_for_s = ttl_s - margin_s  # after a confirmed take or renewal was sent
        self._renew_every_s = max(RETRY_DELAY_S, min(ttl_s / 3, self._valid_for_s / 2))
        self._renew_failures = 0
        self.key = key
        self.owner = owner
        self._ttl_ms = ttl_ms
        self.held = False
        self.holder: str | None = None  # who has it when we do not
        # When the last take or renewal that Redis confirmed was sent: the lease is ours until
        # at least that moment plus its TTL, whatever happened since.
        self._confirmed_at = float("-inf")
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._reclaim = redis.register_script(_RECLAIM)
        self._on_foreign = on_foreign

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Take the lease, waiting while another connector holds it (or Redis does not answer:
        nothing could be stored meanwhile anyway). Returns False if ``stop`` was set first."""
        last_notice = float("-inf")
        while not stop.is_set():
            waiting_for = "another connector holds this stream prefix; waiting for it"
            try:
                if await self._try_take():
                    return True
            except Exception as exc:  # any Redis trouble: try again shortly
                waiting_for = f"cannot take the stream prefix lease yet: {type(exc).__name__}"
            if time.monotonic() - last_notice >= 30:
                last_notice = time.monotonic()
                if self.holder is not None and await self._without_expiry():
                    waiting_for = (
                        "the stream prefix lease key has no expiry, which no connector sets: "
                        f"if no connector uses this prefix, delete it (DEL {self.key})"
                    )
                log.warning(
                    waiting_for, extra={"lease": self.key, "holder": self.holder, "me": self.owner}
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        return False

    async def _without_expiry(self) -> bool:
        """A holder that set no TTL is no connector (they always do): worth saying so."""
        try:
            return bool(await self._redis.pttl(self.key) == -1)
        except Exception:  # only a better message is at stake
            return False

    def confirmed(self) -> bool:
        """True while no other connector can hold the prefix: writes wait while this is false
        (renewals failing for nearly a TTL: another connector may take over any moment)."""
        return self.held and self._clock() < self._confirmed_at + self._valid_for_s

    async def _try_take(self) -> bool:
        sent_at = self._clock()
        if await self._redis.set(self.key, self.owner, nx=True, px=self._ttl_ms):
            self.held, self.holder, self._confirmed_at = True, None, sent_at
            log.info("holding the stream prefix", extra={"lease": self.key})
            return True
        raw = await self._redis.get(self.key)
        current = _holder(raw)
        if current is None and raw is not None:
            # Not a connector's session id (they are short plain names): another client's
            # garbage. Nobody holds the prefix: take it, as long as the garbage is still there.
            self._on_foreign()
            log.warning(
                "the stream prefix lease key holds a value no connector writes; taking it over",
                extra={"lease": self.key, "value": repr(raw)[:80]},
            )
            if await self._reclaim(keys=[self.key], args=[raw, self.owner, self._ttl_ms]):
                self.held, self.holder, self._confirmed_at = True, None, sent_at
                return True
            return False
        if current == self.owner:
            if await self._renew(keys=[self.key], args=[self.owner, self._ttl_ms]):
                self.held, self.holder, self._confirmed_at = True, None, sent_at
                return True
            current = None  # it expired in between: nobody holds it, try again
        self.held, self.holder = False, current
        return False

    async def keep(self, on_lost: Callable[[str], None]) -> None:
        """Renew until cancelled; re-take the lease if it vanished (e.g. a Redis restart).

        If another connector holds it now (our renewals failed for longer than the lease lasts,
        and it took over), ``on_lost(holder)`` is called and renewing stops: two sessions must
        not write one set of streams.
        """
        delay = self._renew_every_s
        while True:
            await asyncio.sleep(delay)
            delay = self._renew_every_s
            sent_at = self._clock()
            try:
                if await self._renew(keys=[self.key], args=[self.owner, self._ttl_ms]):
                    self.held, self._confirmed_at = True, sent_at
                    if self._renew_failures:
                        log.info("stream prefix lease renewed again", extra={"lease": self.key})
                        self._renew_failures = 0
                    continue
                if not await self._try_take() and self.holder is not None:
                    log.error(
                        "lost the stream prefix lease to another connector",
                        extra={"lease": self.key, "holder": self.holder},
                    )
                    on_lost(self.holder)
                    return
            except Exception as exc:  # try again soon: writes may be waiting for a confirmed lease
                delay = RETRY_DELAY_S
                self._renew_failures += 1
                if self._renew_failures == 1:
                    log.warning(
                        "cannot renew the stream prefix lease",
                        extra={"lease": self.key, "error": f"{type(exc).__name__}: {exc}"[:200]},
                    )
                continue

    async def release(self) -> None:
        if not self.held:
            return
        with contextlib.suppress(RedisError, OSError):  # if not, it expires by itself
            await self._release(keys=[self.key], args=[self.owner])
        self.held = False


def _holder(raw: bytes | str | None) -> str | None:
    """The session id in the lease key, or None when it holds none (or not one a connector
    would write: see ``GROUP_NAME``, the session id's format)."""
    if raw is None:
        return None
    try:
        text = raw.decode("ascii") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        return None
    return text if GROUP_NAME.fullmatch(text) else None
