"""The minimal Redis ACL of docs/deploy.md, exactly as written there, is enough.

A consumer-ack backtest long enough for a lease renewal, through the two users of the docs: the
connector's, and a toolkit service's that also takes over, gives up on and dead-letters an entry
its handler keeps failing on. Nothing is refused (Redis' ACL LOG stays empty of them).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from connector.consumer.group import GroupConsumer, Message
from connector.sim import SimConfig, Simulator
from connector.streams.lease import PrefixLease
from tests.support.harness import run_connector, stream_entries
from tests.support.redis_server import RedisServer

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
PASSWORDS = {"connector": "pw-connector-1", "risk": "pw-risk-2"}


def documented_users() -> dict[str, list[str]]:
    """user -> its ACL rules, from the ```acl block of docs/deploy.md."""
    block = re.search(r"```acl\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert block, "docs/deploy.md has no ```acl block"
    users: dict[str, list[str]] = {}
    for line in block.group(1).splitlines():
        words = line.split()
        assert words[:2] == ["ACL", "SETUSER"], line
        name = words[2]
        users[name] = [f">{PASSWORDS[name]}" if w == "><password>" else w for w in words[3:]]
    assert set(users) == set(PASSWORDS)
    return users


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[RedisServer]:
    args = ["--user", "default", "off", "--user", "admin", "on", ">pw-admin", "~*", "&*", "+@all"]
    for name, rules in documented_users().items():
        args += ["--user", name, *rules]
    server = RedisServer(tmp_path / "acl", args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def url(server: RedisServer, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


async def test_a_consumer_ack_backtest_runs_through_the_documented_users(
    acl_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Renew the lease well within the run (the ACL must allow renewals, not only taking it).
    monkeypatch.setattr(PrefixLease, "__init__", _short_lease(PrefixLease.__init__))
    admin = Redis.from_url(url(acl_server, "admin", "pw-admin"))
    await admin.execute_command("ACL", "LOG", "RESET")
    poison: list[str] = []

    async def handle(batch: list[Message]) -> None:
        await asyncio.sleep(0.002)
        for message in batch:
            if message.symbol == "MSFT" and message.fields.get("event_id") in (poison or [None]):
                raise ValueError("this entry cannot be handled")
            if message.symbol == "MSFT" and not poison:
                poison.append(message.fields["event_id"])
                raise ValueError("this entry cannot be handled")

    consumer = GroupConsumer(
        Redis.from_url(url(acl_server, "risk", PASSWORDS["risk"])),
        "risk",
        claim_idle_ms=100,
        max_deliveries=2,
    )
    task = asyncio.create_task(consumer.run(handle))
    try:
        config = SimConfig(mode="backtest", symbols=("AAPL", "MSFT"), steps=120, step_timeout=20)
        async with (
            Simulator(config) as sim,
            run_connector(
                sim,
                url(acl_server, "connector", PASSWORDS["connector"]),
                mode="backtest",
                ack_mode="consumer",
                consumer_groups="risk",
            ) as app,
        ):
            assert await app.exit_code() == 0
        assert sim.record.outcome == "completed"
        assert sim.record.timeouts == 0
        assert consumer.stats.dead_lettered == 1  # taken over, then given up on: all allowed
        assert len(await stream_entries(admin, "md:deadletter:risk")) == 1
        denied = await admin.execute_command("ACL", "LOG")
        refusals = [_entry(row) for row in denied]
        assert [r for r in refusals if r.get("object") != "client|setname"] == [], refusals
    finally:
        consumer.stop()
        await task
        await consumer.redis.aclose()
        await admin.aclose()


def _short_lease(init: object) -> object:
    def patched(self: PrefixLease, *args: object, **kwargs: object) -> None:
        kwargs["ttl_ms"] = 3000
        kwargs["write_timeout"] = 0.5
        init(self, *args, **kwargs)  # type: ignore[operator]

    return patched


def _entry(row: object) -> dict[str, str]:
    """One ACL LOG entry as text (redis-py gives a dict, or the raw flat list)."""
    if isinstance(row, dict):
        pairs = list(row.items())
    else:
        items = list(row)  # type: ignore[call-overload]
        pairs = list(zip(items[::2], items[1::2], strict=False))
    return {_text(key): _text(value) for key, value in pairs}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
