"""The consumer-ack ledger on its own: what waits for whom, release in stored order, timeouts.

No Redis and no clock: the ledger is fed stores, confirmations and the time, as the gate does.
The last tests let hypothesis interleave stores and confirmations (early ones included) at random
and check the two promises: no batch is released before every reading group confirmed every
id-bearing entry of it, and batches are released in stored order.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.acks.ledger import HeldBatch, Ledger, Span, id_below, parse_id
from connector.streams.groups import Readers, parse_groups
from connector.streams.schema import Entry, StreamKeys

READERS = Readers(StreamKeys("md"), parse_groups("risk, signals[types=candle]"))
CANDLE = "md:{AAPL}:candle:1m"
QUOTE = "md:{AAPL}:quote"
_ids = itertools.count(1)


def entry(
    key: str, entry_id: str, event_id: str | None = "e", *, final: bool = False, label: str = "x"
) -> Entry:
    return Entry(
        key=key,
        fields={},
        label=label,
        event_id=event_id,
        received=0.0,
        size=1,
        final=final,
        entry_id=entry_id,
    )


def ledger() -> Ledger:
    return Ledger(READERS.of)


def test_an_entry_waits_only_for_the_groups_that_read_its_stream() -> None:
    book = ledger()
    batch = book.add([entry(CANDLE, "1-0"), entry(QUOTE, "1-0")], now=0.0)
    assert batch.waiting == 2
    assert book.spans() == {
        CANDLE: {"risk": Span((1, 0), (1, 0), 1), "signals": Span((1, 0), (1, 0), 1)},
        QUOTE: {"risk": Span((1, 0), (1, 0), 1)},  # signals reads candles only
    }
    assert book.confirm("risk", CANDLE, ["1-0"]).matched == 1
    assert book.confirm("risk", QUOTE, ["1-0"]).settled == [0.0]
    assert book.ready() == []  # the candle still waits for signals
    assert book.confirm("signals", CANDLE, ["1-0"]).settled == [0.0]
    assert book.ready() == [batch]
    assert book.empty


def test_a_confirmation_from_a_group_that_does_not_read_the_stream_counts_for_nothing() -> None:
    book = ledger()
    book.add([entry(QUOTE, "1-0")], now=0.0)
    assert book.confirm("signals", QUOTE, ["1-0"]).matched == 0
    assert book.ready() == []


def test_markers_dead_letters_and_the_end_of_a_run_wait_for_nobody() -> None:
    book = ledger()
    batch = book.add(
        [
            entry("md:system", "1-0", None),
            entry("md:deadletter", "1-0", "evt-1"),
            entry("md:backtest_complete", "1-0", "evt-2", final=True),
            entry(CANDLE, "1-0", None),  # no id: nothing to release
        ],
        now=0.0,
    )
    assert batch.waiting == 0
    assert book.ready() == [batch]


def test_batches_leave_in_stored_order_even_when_confirmed_out_of_order() -> None:
    book = ledger()
    first = book.add([entry(CANDLE, "1-0")], now=0.0)
    second = book.add([entry(CANDLE, "2-0")], now=1.0)
    for group in ("risk", "signals"):
        book.confirm(group, CANDLE, ["2-0"])
    assert book.ready() == []  # the second is confirmed, but the first is not
    for group in ("risk", "signals"):
        book.confirm(group, CANDLE, ["1-0"])
    assert book.ready() == [first, second]


def test_a_confirmation_that_overtakes_the_store_is_kept_for_it() -> None:
    book = ledger()
    book.confirm("risk", QUOTE, ["5-0"])  # the consumer was faster than our pipeline's reply
    batch = book.add([entry(QUOTE, "5-0")], now=0.0)
    assert batch.waiting == 0
    assert book.ready() == [batch]


def test_a_repeated_confirmation_is_not_kept_as_early() -> None:
    book = ledger()
    book.add([entry(QUOTE, "5-0")], now=0.0)
    book.confirm("risk", QUOTE, ["5-0"])
    book.confirm("risk", QUOTE, ["5-0", "4-0", "garbage"])  # repeats, older ids, noise
    assert book._early == {}


def test_group_state_confirms_what_was_delivered_and_is_no_longer_pending() -> None:
    book = ledger()
    book.add([entry(QUOTE, "1-0"), entry(QUOTE, "2-0"), entry(QUOTE, "3-0")], now=0.0)
    # Delivered up to 2-0, of which 1-0 is still pending: only 2-0 is confirmed.
    result = book.apply_group_state(QUOTE, "risk", (2, 0), {(1, 0)})
    assert result.matched == 1
    assert book.spans()[QUOTE]["risk"] == Span((1, 0), (3, 0), 2)


def test_timeouts_release_or_mark_overdue_once() -> None:
    book = ledger()
    batch = book.add([entry(QUOTE, "1-0")], now=0.0)
    assert book.expire(now=0.5, timeout=1.0, release=False) == []
    assert book.expire(now=1.0, timeout=1.0, release=False) == [batch]
    assert book.expire(now=2.0, timeout=1.0, release=False) == []  # once
    assert book.overdue
    assert book.ready() == []  # hold: still held
    assert book.expire(now=2.0, timeout=1.0, release=True) == [batch]
    assert book.ready() == [batch]
    assert book.unconfirmed == 0
    assert book.confirm("risk", QUOTE, ["1-0"]).matched == 0  # too late: already released


def test_what_the_oldest_waiting_batch_waits_for() -> None:
    book = ledger()
    book.add([entry(CANDLE, "1-0"), entry(QUOTE, "1-0")], now=0.0)
    book.add([entry(CANDLE, "2-0")], now=5.0)
    assert book.oldest_wait(now=7.0) == 7.0
    assert book.blocking() == {"risk": 2, "signals": 1}
    assert book.newest_streams(8) == [CANDLE, QUOTE]
    assert book.newest_streams(1) == [CANDLE]


def test_stream_ids() -> None:
    assert parse_id(b"1700000000000-3") == (1700000000000, 3)
    assert parse_id("5") == (5, 0)
    assert id_below((5, 3)) == "5-2"
    assert id_below((5, 0)) == f"4-{2**64 - 1}"
    assert id_below((0, 0)) == "0-0"


# -- random interleavings -------------------------------------------------------------------------

STREAMS = (CANDLE, QUOTE, "md:order", "md:{MSFT}:candle:1m")
GROUPS = ("risk", "signals")


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[list[Entry]], list[tuple[str, str, str]], list[str]]:
    """Batches of entries, every (group, stream, id) confirmation they need, and an
    interleaving of "store the next batch" and "confirmation j" steps. Stores keep their order
    (entry ids grow in stored order); confirmations go anywhere, before their store included."""
    batches: list[list[Entry]] = []
    position = itertools.count(1)
    for _ in range(draw(st.integers(1, 6))):
        size = draw(st.integers(1, 4))
        chosen = draw(st.lists(st.sampled_from(STREAMS), min_size=size, max_size=size))
        batches.append(
            [
                entry(key, f"{next(position)}-0", draw(st.sampled_from(["evt", None])))
                for key in chosen
            ]
        )
    confirmations = [
        (group, e.key or "", e.entry_id or "")
        for batch in batches
        for e in batch
        for group in GROUPS
    ]
    tokens = ["store"] * len(batches) + [f"confirm:{j}" for j in range(len(confirmations))]
    return batches, confirmations, draw(st.permutations(tokens))


def _needed(batch: Sequence[Entry]) -> set[tuple[str, str, str]]:
    return {
        (group, e.key or "", e.entry_id or "")
        for e in batch
        if e.event_id is not None
        for group in READERS.of(e.key or "")
    }


@settings(max_examples=300, deadline=None)
@given(runs())
def test_no_batch_is_released_early_and_batches_leave_in_order(
    run: tuple[list[list[Entry]], list[tuple[str, str, str]], list[str]],
) -> None:
    batches, confirmations, steps = run
    book = ledger()
    confirmed: set[tuple[str, str, str]] = set()
    stored: list[HeldBatch] = []
    released: list[HeldBatch] = []
    for step in steps:
        if step == "store":
            stored.append(book.add(batches[len(stored)], now=float(len(stored))))
        else:
            group, stream, entry_id = confirmations[int(step.split(":")[1])]
            book.confirm(group, stream, [entry_id])
            confirmed.add((group, stream, entry_id))
        for batch in book.ready():
            # Released only when every reading group confirmed every id-bearing entry of it...
            assert _needed(batch.entries) <= confirmed
            released.append(batch)
    # ...in stored order, and once everything is confirmed, everything is released.
    assert released == stored[: len(released)]
    assert released == stored
    assert book.empty
    assert book.unconfirmed == 0


@settings(max_examples=200, deadline=None)
@given(runs(), st.data())
def test_group_state_readings_keep_the_same_promises(
    run: tuple[list[list[Entry]], list[tuple[str, str, str]], list[str]], data: st.DataObject
) -> None:
    """The check path: instead of notifications, readings of a group's delivered position and
    pending set, taken at random moments of a consumer that reads in order and acks whatever."""
    batches, _, _ = run
    book = ledger()
    stored: list[HeldBatch] = []
    acked: set[tuple[str, str, str]] = set()
    for batch in batches:
        stored.append(book.add(batch, now=float(len(stored))))
        for e in batch:
            for group in GROUPS:
                if data.draw(st.booleans()):
                    acked.add((group, e.key or "", e.entry_id or ""))
        _read_state(book, stored, acked)
        for released in book.ready():
            assert _needed(released.entries) <= acked
    for batch in batches:  # finally everything is acknowledged
        acked |= {(g, e.key or "", e.entry_id or "") for e in batch for g in GROUPS}
    _read_state(book, stored, acked)
    book.ready()
    assert book.empty


def _read_state(book: Ledger, stored: list[HeldBatch], acked: set[tuple[str, str, str]]) -> None:
    """What XINFO GROUPS and XPENDING would say: everything stored was delivered, and the
    delivered entries not acked are pending."""
    for stream in STREAMS:
        ids = [parse_id(e.entry_id or "") for b in stored for e in b.entries if e.key == stream]
        if not ids:
            continue
        for group in GROUPS:
            pending = {
                parse_id(e.entry_id or "")
                for b in stored
                for e in b.entries
                if e.key == stream and (group, stream, e.entry_id) not in acked
            }
            book.apply_group_state(stream, group, max(ids), pending)
