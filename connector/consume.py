"""Example downstream consumer: join a consumer group on the connector's streams and confirm.

Prints each event (``--print``) or just counts them, and can play a slow consumer (``--delay``) or
a failing one (``--fail-rate``: the handler raises, the batch stays pending and is retried;
``--crash-after``: the process dies with its current batch unconfirmed, for another member to
claim). Redis and the prefix come from CONNECTOR_REDIS_URL and CONNECTOR_STREAM_PREFIX unless given.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import sys

from redis.asyncio import Redis

from connector import loop
from connector.consumer import GroupConsumer, Message, default_name
from connector.logs import setup_logging

log = logging.getLogger("connector.consume")


class InjectedFailure(Exception):
    """Raised by ``--fail-rate`` to exercise redelivery."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--group", required=True, help="consumer group to join")
    parser.add_argument("--name", default=None, help="member name (default: host-pid)")
    parser.add_argument(
        "--redis-url", default=env("CONNECTOR_REDIS_URL", "redis://localhost:6379/0")
    )
    parser.add_argument("--prefix", default=env("CONNECTOR_STREAM_PREFIX", "md"))
    parser.add_argument("--symbols", default="", help="comma list (default: every symbol)")
    parser.add_argument("--types", default="", help="comma list, e.g. candle,quote (default: all)")
    parser.add_argument("--start-id", default="$", help="where a new group starts: $ (new) or 0")
    parser.add_argument("--batch", type=int, default=256, help="entries per read")
    parser.add_argument(
        "--claim-idle-ms",
        type=int,
        default=30_000,
        help="claim entries another member left pending this long",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="seconds of 'work' per batch")
    parser.add_argument(
        "--fail-rate",
        type=float,
        default=0.0,
        help="probability that a batch fails (it is retried later)",
    )
    parser.add_argument(
        "--crash-after",
        type=int,
        default=0,
        help="die without confirming once this many events were seen",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--print", dest="print_events", action="store_true", help="print events")
    parser.add_argument("--max-events", type=int, default=0, help="stop after this many events")
    parser.add_argument(
        "--until-complete", action="store_true", help="stop after processing backtest_complete"
    )
    parser.add_argument(
        "--no-notify",
        action="store_true",
        help="plain XACK only (the connector then notices by checking)",
    )
    parser.add_argument("--log-level", default=env("CONNECTOR_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        default=env("CONNECTOR_LOG_FORMAT", "auto"),
        choices=("auto", "json", "text"),
    )


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level.upper(), args.log_format)
    return loop.run(_consume(args), os.environ.get("CONNECTOR_EVENT_LOOP", "auto"))


async def _consume(args: argparse.Namespace) -> int:
    redis = Redis.from_url(args.redis_url, socket_connect_timeout=5)
    consumer = GroupConsumer(
        redis,
        args.group,
        args.name or default_name(),
        prefix=args.prefix,
        types=_split(args.types),
        symbols=_split(args.symbols),
        batch_size=args.batch,
        claim_idle_ms=args.claim_idle_ms,
        start_id=args.start_id,
        notify=not args.no_notify,
    )
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
        if args.max_events and consumer.stats.processed + len(batch) >= args.max_events:
            consumer.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, consumer.stop)
    log.info(
        "consuming", extra={"group": args.group, "member": consumer.name, "prefix": args.prefix}
    )
    try:
        await consumer.run(handle)
    finally:
        await redis.aclose()
    stats = consumer.stats
    print(
        f"processed {stats.processed} events ({_counts(stats.by_type)}); "
        f"claimed {stats.claimed}; failed batches {stats.failed_batches}",
        file=sys.stderr,
    )
    return 0


def _split(text: str) -> list[str] | None:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    return parts or None


def _counts(by_type: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in sorted(by_type.items())) or "none"


def _line(message: Message) -> str:
    fields = " ".join(f"{k}={v}" for k, v in message.fields.items() if k != "data")
    return f"{message.stream} {message.id} {fields}"
