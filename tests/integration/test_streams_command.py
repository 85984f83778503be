"""``connector streams``: what is under a prefix, and a safe way to clear it between runs."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from connector.consumer.group import GroupConsumer, Message
from connector.sim import SimConfig, Simulator
from tests.support.harness import run_connector, wait_until
from tests.support.processes import clean_env, run_command
from tests.support.redis_server import RedisServer

SYMBOLS = ("AAPL", "MSFT")


async def streams(url: str, *args: str, prefix: str = "md") -> tuple[int, str, str]:
    return await run_command(
        "streams", "--redis-url", url, "--prefix", prefix, *args, env=clean_env()
    )


async def test_lists_each_stream_once_with_its_run_length_and_groups(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    url = redis_server.url
    config = SimConfig(mode="backtest", symbols=SYMBOLS, steps=20, seed=3)
    run_ids = []
    for _ in range(2):  # two runs: the event-type streams are announced again at each start
        async with Simulator(config) as sim, run_connector(sim, url, mode="backtest") as app:
            run_ids.append(app.connector.run_id)
            assert await app.exit_code() == 0
    code, out, err = await streams(url, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["lease"] is None
    names = [row["stream"] for row in report["streams"]]
    assert len(names) == len(set(names))  # de-duplicated
    candles = {row["stream"]: row for row in report["streams"] if row["type"] == "candle"}
    assert set(candles) == {"md:{AAPL}:candle:1m", "md:{MSFT}:candle:1m"}
    for stream, row in candles.items():
        assert row["entries"] == await redis_client.xlen(stream) == 40
    complete = next(row for row in report["streams"] if row["type"] == "backtest_complete")
    assert complete["run"] == run_ids[-1]  # the last announcement names the run
    assert run_ids[0] != run_ids[1]

    # A consumer group shows with its consumers and what it has not confirmed.
    consumer = GroupConsumer(redis_client, "risk", "r1", start_id="0", types={"candle"})
    handled: list[Message] = []

    async def handle(batch: list[Message]) -> None:
        handled.extend(batch)

    await consumer.run(handle, limit=80)
    code, out, _ = await streams(url, "--json")
    rows = {row["stream"]: row for row in json.loads(out)["streams"]}
    assert rows["md:{AAPL}:candle:1m"]["groups"]["risk"] == {
        "consumers": 1,
        "pending": 0,
        "lag": 0,
    }
    code, table, _ = await streams(url)
    assert code == 0
    assert table.splitlines()[0].startswith("prefix md: ")
    assert "md:{AAPL}:candle:1m" in table
    assert "risk 1/0/0" in table


async def test_clear_refuses_while_a_connector_holds_the_prefix_and_asks_for_yes(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    url = redis_server.url
    await redis_client.xadd("other:{AAPL}:candle:1m", {"keep": "1"})  # another prefix
    config = SimConfig(mode="live", symbols=SYMBOLS, rate=50.0)
    async with Simulator(config) as sim, run_connector(sim, url) as app:
        await wait_until(lambda: app.sample("connector_published_total", type="candle") > 0)
        code, _, err = await streams(url, "--clear", "--yes")
        assert code == 2
        assert "a connector holds the prefix 'md'" in err
        assert await redis_client.exists("md:{AAPL}:candle:1m")
    code, _, err = await streams(url, "--clear")  # stopped: the lease is gone
    assert code == 2
    assert "add --yes" in err
    assert await redis_client.exists("md:{AAPL}:candle:1m")
    code, _, err = await streams(url, "--clear", "--yes")
    assert code == 0, err
    assert [key async for key in redis_client.scan_iter(match="md:*")] == []
    assert await redis_client.exists("other:{AAPL}:candle:1m")
