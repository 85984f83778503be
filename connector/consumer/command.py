"""Example downstream consumer: join a consumer group on the connector's streams and confirm.

Prints each event (--print) or just counts them, and can play a slow consumer (--delay) or a
failing one (--fail-rate: the handler raises and the entries are retried; --crash-after: the
process dies with its current batch unconfirmed, for another member to claim).

Redis and the prefix come from the same settings as `connector run` (CONNECTOR_REDIS_URL,
CONNECTOR_REDIS_USERNAME, CONNECTOR_REDIS_PASSWORD[_FILE], CONNECTOR_REDIS_CA_FILE,
CONNECTOR_STREAM_PREFIX, CONNECTOR_LOG_LEVEL, ...), with the same rules; --redis-url and
--prefix override them. It waits, and says so, while Redis does not answer or the prefix has no
streams yet. Exit codes: 0 stopped (SIGTERM/SIGINT, --max-events, --until-complete), 2 bad
options or configuration (including credentials Redis refuses).

examples:
  connector consume --group risk --print
  connector consume --group signals --types candle --symbols AAPL,MSFT --max-events 100
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import sys
import time

from connector import loop
from connector.cli import config_error
from connector.config import ConfigError, Settings, load_settings
from connector.consumer.group import GroupConsumer, Message, default_name
from connector.logs import setup_logging
from connector.streams.groups import GROUP_NAME, GROUP_NAME_RULE, START_NEW, STREAM_TYPES
from connector.streams.schema import StreamKeys
from connector.wire.client import RedisClient, configuration_problem, make_redis

log = logging.getLogger(__name__)

WAIT_NOTICE_S = 30.0  # while waiting for Redis or for streams, say so this often


class InjectedFailure(Exception):
    """Raised by ``--fail-rate`` to exercise redelivery."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--group", required=True, help="consumer group to join (created if new)")
    parser.add_argument("--name", default=None, help="member name (default: host-pid)")
    parser.add_argument("--redis-url", default=None, help="default: CONNECTOR_REDIS_URL")
    parser.add_argument("--prefix", default=None, help="default: CONNECTOR_STREAM_PREFIX (md)")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="default: CONNECTOR_LOG_LEVEL (INFO)",
    )
    parser.add_argument("--symbols", default="", help="comma list (default: every symbol)")
    parser.add_argument(
        "--types",
        default="",
        help=f"comma list of stream types (default: all): {', '.join(STREAM_TYPES)}",
    )
    parser.add_argument(
        "--start-id",
        default=START_NEW,
        help="where a new group starts: $ (entries written from now on) or 0 (the beginning)",
    )
    parser.add_argument("--batch", type=int, default=256, help="entries per read (default 256)")
    parser.add_argument(
        "--claim-idle-ms",
        type=int,
        default=30_000,
        help="claim entries another member left pending this long (default 30000)",
    )
    parser.add_argument(
        "--max-deliveries",
        type=int,
        default=5,
        help="deliveries after which an entry goes to <prefix>:deadletter:<group> (default 5)",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="seconds of 'work' per batch")
    parser.add_argument(
        "--fail-rate",
        type=float,
        default=0.0,
        help="probability that handling a batch fails (its entries are retried)",
    )
    parser.add_argument(
        "--crash-after",
        type=int,
        default=0,
        help="die without confirming once this many events were seen (exit 3)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of --fail-rate's draws")
    parser.add_argument("--print", dest="print_events", action="store_true", help="print events")
    parser.add_argument(
        "--max-events", type=int, default=0, help="stop after handling exactly this many"
    )
    parser.add_argument(
        "--until-complete", action="store_true", help="stop after handling backtest_complete"
    )
    parser.add_argument(
        "--no-notify",
        action="store_true",
        help="plain XACK only (the connector then notices by checking group state)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        types = _types(args.types)
    except (ConfigError, ValueError) as exc:
        return config_error(exc)
    setup_logging(settings.log_level, settings.log_format, settings.secrets())
    try:
        return loop.run(_consume(args, settings, types), settings.event_loop)
    except ConfigError as exc:
        return config_error(exc)


def _settings(args: argparse.Namespace) -> Settings:
    """The service's settings model, with this command's overrides: one set of rules."""
    if not GROUP_NAME.fullmatch(args.group):
        raise ConfigError(f"--group: {args.group!r} {GROUP_NAME_RULE}")
    for option in ("batch", "claim_idle_ms", "max_deliveries"):
        if getattr(args, option) < 1:
            raise ConfigError(f"--{option.replace('_', '-')}: must be at least 1")
    if args.max_events < 0 or args.crash_after < 0 or args.delay < 0:
        raise ConfigError("--max-events, --crash-after and --delay cannot be negative")
    overrides = {
        "redis_url": args.redis_url,
        "stream_prefix": args.prefix,
        "log_level": args.log_level,
    }
    return load_settings({key: value for key, value in overrides.items() if value is not None})


def _types(text: str) -> list[str] | None:
    types = _split(text)
    unknown = sorted(set(types or ()) - set(STREAM_TYPES))
    if unknown:
        raise ValueError(
            f"--types: {unknown[0]!r} is not a stream type (one of {', '.join(STREAM_TYPES)})"
        )
    return types


async def _consume(args: argparse.Namespace, settings: Settings, types: list[str] | None) -> int:
    redis = make_redis(settings)
    try:
        await _until_answering(redis, settings)
        consumer = GroupConsumer(
            redis,
            args.group,
            args.name or default_name(),
            prefix=settings.stream_prefix,
            types=types,
            symbols=_split(args.symbols),
            batch_size=args.batch,
            claim_idle_ms=args.claim_idle_ms,
            max_deliveries=args.max_deliveries,
            start_id=args.start_id,
            notify=not args.no_notify,
        )
        await _until_streams(redis, settings.stream_prefix)
        await _run(args, consumer)
    finally:
        await redis.aclose()
    stats = consumer.stats
    print(
        f"processed {stats.processed} events ({_counts(stats.by_type)}); "
        f"claimed {stats.claimed}; failed batches {stats.failed_batches}; "
        f"dead-lettered {stats.dead_lettered}",
        file=sys.stderr,
    )
    return 0


async def _until_answering(redis: RedisClient, settings: Settings) -> None:
    """Wait while Redis does not answer (said every WAIT_NOTICE_S); credentials or a database
    it refuses are a configuration error."""
    last = float("-inf")
    while True:
        try:
            await redis.ping()
            return
        except Exception as exc:  # not answering yet, or refusing us
            problem = configuration_problem(exc)
            if problem is not None:
                raise ConfigError(f"CONNECTOR_REDIS_URL: {problem}") from None
            if time.monotonic() - last >= WAIT_NOTICE_S:
                last = time.monotonic()
                log.warning("Redis is not answering; retrying", extra={"error": str(exc)[:200]})
        await asyncio.sleep(1.0)


async def _until_streams(redis: RedisClient, prefix: str) -> None:
    """A wrong --prefix must not look like a quiet market: say so while the registry is empty."""
    registry = StreamKeys(prefix).registry
    last = float("-inf")
    while not await redis.exists(registry):
        if time.monotonic() - last >= WAIT_NOTICE_S:
            last = time.monotonic()
            log.warning(
                "no streams under this prefix yet (its registry is empty); waiting for a "
                "connector to write some (is the prefix right?)",
                extra={"prefix": prefix, "registry": registry},
            )
        await asyncio.sleep(1.0)


async def _say_while_idle(consumer: GroupConsumer) -> None:
    """Streams exist, but none of the selected types or symbols: say so, now and then."""
    while not consumer.streams:
        await asyncio.sleep(WAIT_NOTICE_S)
        if not consumer.streams:
            log.warning(
                "no stream under the prefix matches --types/--symbols yet; waiting",
                extra={"prefix": consumer.keys.prefix},
            )


async def _run(args: argparse.Namespace, consumer: GroupConsumer) -> None:
    rng = random.Random(args.seed)
    seen = 0

    async def handle(batch: list[Message]) -> None:
        nonlocal seen
        seen += len(batch)
        if args.crash_after and seen >= args.crash_after:
            log.error("crashing on purpose (--crash-after)", extra={"seen": seen})
            logging.shutdown()
            os._exit(3)
        if args.delay:
            await asyncio.sleep(args.delay)
        if args.fail_rate and rng.random() < args.fail_rate:
            raise InjectedFailure("injected failure (--fail-rate)")
        for message in batch:
            if args.print_events:
                print(_line(message), flush=True)
            if args.until_complete and message.type == "backtest_complete":
                consumer.stop()

    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, consumer.stop)
    log.info(
        "consuming",
        extra={"group": args.group, "member": consumer.name, "prefix": consumer.keys.prefix},
    )
    idle = asyncio.create_task(_say_while_idle(consumer))
    try:
        await consumer.run(handle, limit=args.max_events or None)
    finally:
        idle.cancel()


def _split(text: str) -> list[str] | None:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    return parts or None


def _counts(by_type: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in sorted(by_type.items())) or "none"


def _line(message: Message) -> str:
    fields = " ".join(f"{k}={v}" for k, v in message.fields.items() if k != "data")
    return f"{message.stream} {message.id} {fields}"
