"""Orders as the gateway's REST surface takes them: validation, state, and the fill rule.

Validation follows the gateway's order of checks and its error shapes (``{"code", "message",
"details"}``): a body that is not a JSON object, a missing field or an unknown enum value is
``INVALID_REQUEST``; a value that is present but wrong (a non-positive quantity, a price where
the order type forbids one, a symbol the run does not trade) is ``INVALID_VALUE`` or
``VALIDATION_ERROR``; all are HTTP 400. Enum values are accepted in any case (the official SDK
sends ``"buy"`` and ``"market"``). ``STOP_LIMIT`` and ``TRAILING_STOP`` are answered 501, as a
provider that lacks them does.

The fill rule (:func:`fill_price`) is the simulator's own, stated once here and in
docs/simulator.md: a bar fills a market order at its open; a limit order when the bar trades
through the limit (buy: low <= limit, sell: high >= limit), at the limit, or at the open when
the bar opens beyond it; a stop order when the bar trades through the stop (buy: high >= stop,
sell: low <= stop), at the stop, or at the open when the bar gaps through it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from connector.sim.decimals import dec_str
from connector.sim.portfolio import Side

OrderType = Literal["MARKET", "LIMIT", "STOP"]
Status = Literal["OPEN", "FILLED", "CANCELLED", "EXPIRED", "REJECTED"]

SIDES = ("BUY", "SELL")
ORDER_TYPES = ("MARKET", "LIMIT", "STOP", "STOP_LIMIT", "TRAILING_STOP")
SUPPORTED_TYPES: tuple[OrderType, ...] = ("MARKET", "LIMIT", "STOP")
TIMES_IN_FORCE = ("GTC", "DAY", "IOC", "FOK")
OPEN_STATUSES = frozenset({"OPEN"})
_REQUIRED = ("symbol", "side", "quantity", "order_type")
_PRICE_FIELDS = ("limit_price", "stop_price", "stop_loss", "take_profit")
_FLAGS = ("reduce_only", "post_only", "hidden")
_MAX_SYMBOL = 20
_MAX_CLIENT_ID = 64
#: Which price fields each order type needs, and which it must not have.
_NEEDS: dict[str, tuple[str, ...]] = {
    "MARKET": (),
    "LIMIT": ("limit_price",),
    "STOP": ("stop_price",),
}
_FORBIDS: dict[str, tuple[str, ...]] = {
    "MARKET": ("limit_price", "stop_price"),
    "LIMIT": ("stop_price",),
    "STOP": ("limit_price",),
}


class ApiError(Exception):
    """An error answer of the REST surface: HTTP status plus the gateway's error body."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


def invalid_request(message: str, field_name: str | None = None) -> ApiError:
    details = {"field": field_name} if field_name is not None else None
    return ApiError(400, "INVALID_REQUEST", f"Invalid request: {message}", details)


def invalid_value(field_name: str, message: str, provided: object) -> ApiError:
    return ApiError(
        400,
        "INVALID_VALUE",
        f"Invalid value for {field_name}: {message}",
        {"field": field_name, "provided": None if provided is None else str(provided)},
    )


def rejected(reason: str, message: str) -> ApiError:
    """HTTP 422: the request was valid but the venue refused the order."""
    return ApiError(422, "ORDER_REJECTED", f"Order rejected: {message}", {"reject_reason": reason})


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A validated ``POST /v1/orders`` body."""

    symbol: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    time_in_force: str = "GTC"
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    client_order_id: str | None = None
    flags: Mapping[str, bool] = field(default_factory=dict)


def parse_order_request(body: object, symbols: Collection[str]) -> OrderRequest:
    """Validate a decoded JSON body; raises :class:`ApiError` (400 or 501) on the first problem."""
    if not isinstance(body, dict):
        raise invalid_request("Invalid JSON: expected an object")
    for name in _REQUIRED:
        if name not in body or body[name] is None:
            raise invalid_request(f"Invalid JSON: missing field `{name}`", name)
    symbol = _symbol(body["symbol"], symbols)
    side: Side = "BUY" if _choice(body, "side", SIDES) == "BUY" else "SELL"
    order_type = _order_type(body)
    time_in_force = "GTC"
    if body.get("time_in_force") is not None:
        time_in_force = _choice(body, "time_in_force", TIMES_IN_FORCE)
    quantity = _decimal(body, "quantity")
    if quantity is None or quantity <= 0:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            "Validation failed: quantity: must be positive",
            {"field": "quantity", "provided": str(body["quantity"])},
        )
    prices = {name: _decimal(body, name) for name in _PRICE_FIELDS}
    _check_prices(order_type, prices)
    return OrderRequest(
        symbol=symbol,
        side=side,
        order_type=order_type,
        quantity=quantity,
        time_in_force=time_in_force,
        limit_price=prices["limit_price"],
        stop_price=prices["stop_price"],
        stop_loss=prices["stop_loss"],
        take_profit=prices["take_profit"],
        client_order_id=_client_order_id(body.get("client_order_id")),
        flags=_flags(body),
    )


def _symbol(value: object, symbols: Collection[str]) -> str:
    if not isinstance(value, str):
        raise invalid_request("Invalid JSON: `symbol` must be a string", "symbol")
    if not 1 <= len(value) <= _MAX_SYMBOL:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"Validation failed: symbol: length must be 1..{_MAX_SYMBOL}",
            {"field": "symbol", "provided": value},
        )
    if value not in symbols:
        raise invalid_value("symbol", "not a symbol this server trades", value)
    return value


def _choice(body: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = body[name]
    if isinstance(value, str) and value.upper() in allowed:
        return value.upper()
    raise invalid_request(
        f"Invalid JSON: unknown variant `{value}` for `{name}`, expected one of "
        + ", ".join(allowed),
        name,
    )


def _order_type(body: dict[str, Any]) -> OrderType:
    order_type = _choice(body, "order_type", ORDER_TYPES)
    for supported in SUPPORTED_TYPES:
        if order_type == supported:
            return supported
    raise ApiError(
        501,
        "UNSUPPORTED_OPERATION",
        f"{order_type} orders not supported on the simulator",
        {"operation": f"{order_type} orders", "provider": "simulator"},
    )


def _decimal(body: dict[str, Any], name: str) -> Decimal | None:
    """A decimal field: a string (the protocol's form) or a JSON number; None when absent."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise invalid_value(name, "expected a decimal string", value)
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise invalid_value(name, "not a decimal number", value) from None
    if not number.is_finite():
        raise invalid_value(name, "not a finite number", value)
    return number


def _check_prices(order_type: str, prices: dict[str, Decimal | None]) -> None:
    label = order_type.capitalize()
    for name in _NEEDS[order_type]:
        if prices[name] is None:
            raise invalid_request(f"{label} orders require {name}", name)
    for name in _FORBIDS[order_type]:
        if prices[name] is not None:
            raise invalid_value(name, f"{label} orders should not have {name}", prices[name])
    for name, price in prices.items():
        if price is not None and price <= 0:
            raise invalid_value(name, "must be positive", price)


def _client_order_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _MAX_CLIENT_ID:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"Validation failed: client_order_id: a string of at most {_MAX_CLIENT_ID} characters",
            {"field": "client_order_id", "provided": str(value)},
        )
    return value


def _flags(body: dict[str, Any]) -> dict[str, bool]:
    flags: dict[str, bool] = {}
    for name in _FLAGS:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, bool):
            raise invalid_request(f"Invalid JSON: `{name}` must be true or false", name)
        flags[name] = value
    return flags


# Order state ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Order:
    """One order's state, as ``GET /v1/orders/{id}`` and the ``order`` frames report it."""

    id: str
    request: OrderRequest
    created_at: str
    updated_at: str
    status: Status = "OPEN"
    filled_quantity: Decimal = Decimal(0)
    average_fill_price: Decimal | None = None
    correlation_id: str | None = None
    #: Backtest: the first bar that may fill it (last emitted bar + 1 when it arrived).
    first_bar: int = 0

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def payload(self, *, with_correlation: bool = True) -> dict[str, Any]:
        """The wire ``Order`` object; optional fields are left out when absent."""
        request = self.request
        order: dict[str, Any] = {"id": self.id}
        if request.client_order_id is not None:
            order["client_order_id"] = request.client_order_id
        order.update(
            symbol=request.symbol,
            side=request.side,
            order_type=request.order_type,
            quantity=dec_str(request.quantity),
            filled_quantity=dec_str(self.filled_quantity),
            remaining_quantity=dec_str(request.quantity - self.filled_quantity),
        )
        for name in _PRICE_FIELDS:
            value = getattr(request, name)
            if value is not None:
                order[name] = dec_str(value)
        if self.average_fill_price is not None:
            order["average_fill_price"] = dec_str(self.average_fill_price)
        order["status"] = self.status
        order.update(request.flags)
        if with_correlation and self.correlation_id is not None:
            order["correlation_id"] = self.correlation_id
        order.update(
            time_in_force=request.time_in_force,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )
        return order


# The fill rule -------------------------------------------------------------------------------


def fill_price(
    request: OrderRequest, open_: Decimal, high: Decimal, low: Decimal
) -> Decimal | None:
    """The price a bar (open, high, low) fills ``request`` at, or None if it does not."""
    if request.order_type == "MARKET":
        return open_
    buy = request.side == "BUY"
    if request.order_type == "LIMIT":
        limit = request.limit_price
        assert limit is not None  # validated: LIMIT orders carry a limit price
        if buy:
            return open_ if open_ <= limit else limit if low <= limit else None
        return open_ if open_ >= limit else limit if high >= limit else None
    stop = request.stop_price
    assert stop is not None  # validated: STOP orders carry a stop price
    if buy:
        return open_ if open_ >= stop else stop if high >= stop else None
    return open_ if open_ <= stop else stop if low <= stop else None


def fill_price_at(request: OrderRequest, price: Decimal) -> Decimal | None:
    """The live rule: the current price fills ``request`` when it is at or through its level."""
    return fill_price(request, price, price, price)
