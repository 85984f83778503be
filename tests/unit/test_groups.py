"""Declaring the required consumer groups and what each reads (CONNECTOR_CONSUMER_GROUPS)."""

from __future__ import annotations

import pytest

from connector.config import ConfigError, load_settings
from connector.streams.groups import GroupSpec, Readers, parse_groups
from connector.streams.schema import StreamKeys


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CONNECTOR_"):
            monkeypatch.delenv(name)


def test_plain_names_read_everything_as_before() -> None:
    assert parse_groups("risk,signals") == (GroupSpec("risk"), GroupSpec("signals"))
    assert parse_groups(" risk , signals , ") == (GroupSpec("risk"), GroupSpec("signals"))
    assert parse_groups("") == ()


def test_selectors_narrow_a_group_to_types_and_symbols() -> None:
    specs = parse_groups(
        "risk, signals[types=candle], strategy[types=candle,order; symbols=AAPL,F:EURUSD]"
    )
    assert specs == (
        GroupSpec("risk"),
        GroupSpec("signals", frozenset({"candle"})),
        GroupSpec("strategy", frozenset({"candle", "order"}), frozenset({"AAPL", "F:EURUSD"})),
    )
    # Printed back in the same syntax (--print-config).
    assert [str(spec) for spec in specs] == [
        "risk",
        "signals[types=candle]",
        "strategy[types=candle,order; symbols=AAPL,F:EURUSD]",
    ]
    assert parse_groups(", ".join(str(spec) for spec in specs)) == specs


def test_which_groups_read_which_stream() -> None:
    readers = Readers(
        StreamKeys("md"),
        parse_groups("risk, signals[types=candle], aapl[symbols=AAPL], fills[types=order,trade]"),
    )
    assert readers.of("md:{AAPL}:candle:1m") == ("risk", "signals", "aapl")
    assert readers.of("md:{MSFT}:candle:1m") == ("risk", "signals")
    assert readers.of("md:{AAPL}:quote") == ("risk", "aapl")
    # Per-type streams carry every symbol: only types= (or no selector) reads them.
    assert readers.of("md:order") == ("risk", "fills")
    assert readers.of("md:backtest_complete") == ("risk",)
    # Not data: nobody waits on markers, dead letters or the registry.
    assert readers.of("md:system") == ()
    assert readers.of("md:deadletter") == ()
    assert readers.of("md:streams") == ()
    assert readers.of("other:{AAPL}:candle:1m") == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("risk,risk", "names group 'risk' twice"),
        ("sig nals", "expected ',' between groups"),
        ("r!sk", "group 'r!sk' must be 1-64 characters"),
        ("signals[type=candle]", "'type=candle' is not a selector (use types=... or symbols=...)"),
        ("signals[types=candel]", "'candel' is not a stream type (one of candle, quote,"),
        ("signals[types=]", "types= names nothing"),
        ("signals[]", "empty brackets"),
        ("signals[types=candle; types=quote]", "types= given twice"),
        ("signals[types=candle", "group signals: '[' without a matching ']'"),
        ("signals types=candle]", "expected ',' between groups"),
    ],
)
def test_bad_declarations_are_one_clear_line_at_start_up(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("CONNECTOR_CONSUMER_GROUPS", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert text.startswith("CONNECTOR_CONSUMER_GROUPS: "), text
    assert message in text, text
    assert "\n" not in text


def test_print_config_shows_the_declarations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_CONSUMER_GROUPS", "risk,signals[ types = candle ]")
    described = load_settings().describe()
    assert described["consumer_groups"] == "risk, signals[types=candle]"
