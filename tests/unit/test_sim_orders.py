"""Order requests as the gateway validates them, and the simulator's per-bar fill rule."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from connector.sim.orders import ApiError, Order, OrderRequest, fill_price, parse_order_request

SYMBOLS = ("AAPL", "F:EURUSD")


def order(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"symbol": "AAPL", "side": "BUY", "quantity": "10"}
    body["order_type"] = "MARKET"
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def refused(body: object) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_order_request(body, SYMBOLS)
    return caught.value


def test_a_market_order() -> None:
    request = parse_order_request(order(), SYMBOLS)
    assert request == OrderRequest("AAPL", "BUY", "MARKET", D("10"))
    assert request.time_in_force == "GTC"


def test_enums_in_any_case_as_the_sdk_sends_them() -> None:
    body = order(side="sell", order_type="limit", limit_price="1.0812", time_in_force="ioc")
    request = parse_order_request(body | {"symbol": "F:EURUSD"}, SYMBOLS)
    assert (request.side, request.order_type, request.time_in_force) == ("SELL", "LIMIT", "IOC")
    assert request.limit_price == D("1.0812")


def test_numbers_are_accepted_as_well_as_strings() -> None:
    assert parse_order_request(order(quantity=2.5), SYMBOLS).quantity == D("2.5")


@pytest.mark.parametrize("missing", ["symbol", "side", "quantity", "order_type"])
def test_a_missing_field_is_an_invalid_request(missing: str) -> None:
    error = refused(order(**{missing: None}))
    assert (error.status, error.code) == (400, "INVALID_REQUEST")
    assert f"missing field `{missing}`" in error.message
    assert error.details == {"field": missing}


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"side": "HOLD"}, "INVALID_REQUEST", "side"),
        ({"order_type": "ICEBERG"}, "INVALID_REQUEST", "order_type"),
        ({"time_in_force": "GTD"}, "INVALID_REQUEST", "time_in_force"),
        ({"quantity": "0"}, "VALIDATION_ERROR", "quantity"),
        ({"quantity": "-1"}, "VALIDATION_ERROR", "quantity"),
        ({"quantity": "ten"}, "INVALID_VALUE", "quantity"),
        ({"quantity": "NaN"}, "INVALID_VALUE", "quantity"),
        ({"quantity": True}, "INVALID_VALUE", "quantity"),
        ({"symbol": "TSLA"}, "INVALID_VALUE", "symbol"),
        ({"symbol": 7}, "INVALID_REQUEST", "symbol"),
        ({"order_type": "LIMIT"}, "INVALID_REQUEST", "limit_price"),
        ({"order_type": "STOP"}, "INVALID_REQUEST", "stop_price"),
        ({"limit_price": "150"}, "INVALID_VALUE", "limit_price"),
        ({"order_type": "LIMIT", "limit_price": "0"}, "INVALID_VALUE", "limit_price"),
        ({"stop_loss": "-5"}, "INVALID_VALUE", "stop_loss"),
        ({"client_order_id": "x" * 65}, "VALIDATION_ERROR", "client_order_id"),
        ({"reduce_only": "yes"}, "INVALID_REQUEST", "reduce_only"),
    ],
)
def test_bad_values_are_400_with_the_field(change: dict[str, Any], code: str, field: str) -> None:
    error = refused(order(**change))
    assert (error.status, error.code) == (400, code)
    assert error.details is not None
    assert error.details["field"] == field
    body = error.body()
    assert set(body) == {"code", "message", "details"}


def test_not_an_object() -> None:
    error = refused(["AAPL"])
    assert (error.status, error.code, error.details) == (400, "INVALID_REQUEST", None)
    assert error.body() == {"code": "INVALID_REQUEST", "message": error.message}


@pytest.mark.parametrize("kind", ["STOP_LIMIT", "trailing_stop"])
def test_order_types_the_simulator_lacks_are_501(kind: str) -> None:
    error = refused(order(order_type=kind))
    assert (error.status, error.code) == (501, "UNSUPPORTED_OPERATION")


def test_the_order_payload_has_every_field_the_sdk_requires() -> None:
    request = parse_order_request(
        order(order_type="LIMIT", limit_price="149.5", client_order_id="c-1"), SYMBOLS
    )
    state = Order("ord-1", request, "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z")
    state.correlation_id = "corr"
    payload = state.payload()
    assert {
        "id",
        "symbol",
        "side",
        "order_type",
        "quantity",
        "filled_quantity",
        "remaining_quantity",
        "status",
        "time_in_force",
        "created_at",
        "updated_at",
    } <= set(payload)
    assert payload["remaining_quantity"] == "10"
    assert payload["limit_price"] == "149.5"
    assert payload["client_order_id"] == "c-1"
    assert payload["correlation_id"] == "corr"
    assert "average_fill_price" not in payload  # optional fields are left out, not null
    assert "correlation_id" not in state.payload(with_correlation=False)


BAR = {"open_": D("100"), "high": D("103"), "low": D("98")}


@pytest.mark.parametrize(
    ("side", "kind", "level", "expected"),
    [
        ("BUY", "MARKET", None, "100"),
        ("SELL", "MARKET", None, "100"),
        ("BUY", "LIMIT", "99", "99"),  # traded down through the limit
        ("BUY", "LIMIT", "101", "100"),  # opened below the limit: the open is better
        ("BUY", "LIMIT", "97", None),  # never came down to it
        ("SELL", "LIMIT", "102", "102"),
        ("SELL", "LIMIT", "99", "100"),  # opened above the limit
        ("SELL", "LIMIT", "104", None),
        ("BUY", "STOP", "102", "102"),  # traded up through the stop
        ("BUY", "STOP", "99", "100"),  # gapped through it: filled at the open
        ("BUY", "STOP", "104", None),
        ("SELL", "STOP", "99", "99"),
        ("SELL", "STOP", "101", "100"),
        ("SELL", "STOP", "97", None),
    ],
)
def test_the_fill_rule(side: str, kind: str, level: str | None, expected: str | None) -> None:
    fields: dict[str, Any] = {}
    if kind == "LIMIT":
        fields["limit_price"] = level
    elif kind == "STOP":
        fields["stop_price"] = level
    request = parse_order_request(order(side=side, order_type=kind, **fields), SYMBOLS)
    price = fill_price(request, **BAR)
    assert price == (None if expected is None else D(expected))
