"""What is under a stream prefix: ``connector streams`` lists it, and clears it on request.

The list comes from the registry (``{prefix}:streams``, one entry per announcement, so
de-duplicated here) and from Redis itself: each stream's length, its consumer groups with what
they have not confirmed yet, and who holds the prefix's lease. ``--clear`` deletes every key under
the prefix (streams, registry, markers, dead letters) so that the next backtest starts from
nothing; it refuses while a connector holds the prefix (its lease key exists), and asks for
``--yes`` before deleting anything.

Redis settings are the same as ``connector run``'s (CONNECTOR_REDIS_URL and the rest);
--redis-url and --prefix override them.

examples:
  connector streams
  connector streams --prefix bt-42 --json
  connector streams --prefix bt-42 --clear --yes
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from connector import loop
from connector.cli import config_error
from connector.config import ConfigError, Settings, load_settings, mask_url
from connector.streams.schema import StreamKeys, parse_key
from connector.wire.client import RedisClient, configuration_problem, make_redis

DELETE_CHUNK = 500


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=None, help="default: CONNECTOR_REDIS_URL")
    parser.add_argument("--prefix", default=None, help="default: CONNECTOR_STREAM_PREFIX (md)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--clear",
        action="store_true",
        help="delete every key under the prefix (refused while a connector holds it)",
    )
    parser.add_argument("--yes", action="store_true", help="confirm --clear")


def run(args: argparse.Namespace) -> int:
    overrides = {"redis_url": args.redis_url, "stream_prefix": args.prefix}
    try:
        settings = load_settings({k: v for k, v in overrides.items() if v is not None})
        return loop.run(_main(args, settings), settings.event_loop)
    except ConfigError as exc:
        return config_error(exc)


async def _main(args: argparse.Namespace, settings: Settings) -> int:
    redis = make_redis(settings)
    keys = StreamKeys(settings.stream_prefix)
    try:
        try:
            await redis.ping()
        except Exception as exc:  # one line for any Redis trouble: this is a one-shot command
            problem = configuration_problem(exc)
            raise ConfigError(
                f"CONNECTOR_REDIS_URL: {problem or 'Redis does not answer'} "
                f"({mask_url(settings.redis_url)}: {str(exc)[:120]})"
            ) from None
        if args.clear:
            return await _clear(redis, keys, args.yes)
        report = await inventory(redis, keys)
    finally:
        await redis.aclose()
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(_table(report))
    return 0


async def inventory(redis: RedisClient, keys: StreamKeys) -> dict[str, Any]:
    """The prefix's streams (from the registry, de-duplicated), lengths, groups and lease."""
    announced: dict[str, dict[str, str]] = {}
    for _, fields in await redis.xrange(keys.registry) or []:
        if not fields:  # trimmed, or written by another client without fields
            continue
        stream = _text(fields.get(b"stream", b""))
        if stream:  # announced again at each start: the last announcement names the run
            announced[stream] = {_text(k): _text(v) for k, v in fields.items()}
    streams = sorted(announced)
    pipe = redis.pipeline(transaction=False)
    for stream in streams:
        pipe.xlen(stream)
        pipe.xinfo_groups(stream)
    replies = iter(await pipe.execute(raise_on_error=False))
    rows = []
    for stream in streams:
        length, groups = next(replies), next(replies)
        info = parse_key(keys.prefix, stream)
        rows.append(
            {
                "stream": stream,
                "type": info.type if info else announced[stream].get("type", ""),
                "entries": length if isinstance(length, int) else 0,
                "groups": _groups(groups),
                "run": announced[stream].get("run", ""),
            }
        )
    holder = await redis.get(keys.lease)
    return {
        "prefix": keys.prefix,
        "lease": _text(holder) if holder is not None else None,
        "streams": rows,
    }


def _groups(reply: Any) -> dict[str, dict[str, int]]:
    if isinstance(reply, Exception) or not isinstance(reply, list):
        return {}
    return {
        _text(row.get("name", b"?")): {
            "consumers": int(row.get("consumers") or 0),
            "pending": int(row.get("pending") or 0),
            "lag": int(row.get("lag") or 0),
        }
        for row in reply
    }


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"prefix {report['prefix']}: {len(report['streams'])} streams; lease held by "
        f"{report['lease'] or 'nobody'}"
    ]
    width = max([len(row["stream"]) for row in report["streams"]] + [6])
    lines.append(
        f"{'stream':<{width}}  {'type':<17} {'entries':>9}  groups (consumers/pending/lag)"
    )
    for row in report["streams"]:
        groups = ", ".join(
            f"{name} {g['consumers']}/{g['pending']}/{g['lag']}"
            for name, g in row["groups"].items()
        )
        lines.append(f"{row['stream']:<{width}}  {row['type']:<17} {row['entries']:>9}  {groups}")
    return "\n".join(lines) + "\n"


async def _clear(redis: RedisClient, keys: StreamKeys, confirmed: bool) -> int:
    holder = await redis.get(keys.lease)
    if holder is not None:
        raise ConfigError(
            f"--clear: a connector holds the prefix {keys.prefix!r} ({_text(holder)}); stop it "
            "first (its lease ends with it, or within 15 s of a crash)"
        )
    found = [key async for key in redis.scan_iter(match=f"{keys.prefix}:*", count=1000)]
    if not confirmed:
        print(
            f"--clear would delete {len(found)} keys under {keys.prefix!r}; add --yes to do it",
            file=sys.stderr,
        )
        return 2
    for start in range(0, len(found), DELETE_CHUNK):
        await redis.unlink(*found[start : start + DELETE_CHUNK])
    print(f"deleted {len(found)} keys under {keys.prefix!r}", file=sys.stderr)
    return 0


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
