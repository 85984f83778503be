"""The gateway's REST order surface, served next to the stream (``/v1/...``).

| Method and path | Answer |
|---|---|
| ``POST /v1/orders`` | 201 ``{"id", "client_order_id"?, "correlation_id", "status"}`` |
| ``GET /v1/orders`` | open orders; filters ``symbol status side client_order_id limit`` |
| ``GET /v1/orders/history`` | every order, same filters |
| ``GET /v1/orders/{id}`` | the order, or 404 ``ORDER_NOT_FOUND`` |
| ``DELETE /v1/orders/{id}`` | ``{"success": true, "order"}``; 404 unknown, 409 no longer open |
| ``DELETE /v1/orders`` | ``{"cancelled_count", "failed_count"}`` (``symbol`` to narrow it) |
| ``GET /v1/positions`` | open positions (``symbol``) |
| ``GET /v1/account`` | balance, equity, margin, unrealized P&L, currency |
| ``GET /v1/trades`` | fills (``symbol``, ``order_id``, ``limit``) |

Errors carry the gateway's body ``{"code", "message", "details"?}``. A body the JSON decoder
refuses, or one sent without ``Content-Type: application/json``, is 400 ``INVALID_REQUEST`` (the
gateway maps every JSON extraction failure to that). Authentication happens before this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from connector.sim.desk import Desk
from connector.sim.front import HttpRequest, HttpResponse
from connector.sim.orders import ApiError, invalid_request

ORDERS = "/v1/orders"
ORDER_PREFIX = "/v1/orders/"
HISTORY = "/v1/orders/history"

Route = Callable[[HttpRequest], HttpResponse]


class RestApi:
    """Routes ``/v1/`` requests to the desk and turns its answers and errors into responses."""

    def __init__(self, desk: Desk) -> None:
        self._desk = desk
        self._routes: dict[str, dict[str, Route]] = {
            ORDERS: {"GET": self._list_orders, "POST": self._submit, "DELETE": self._cancel_all},
            HISTORY: {"GET": self._history},
            "/v1/positions": {"GET": self._positions},
            "/v1/account": {"GET": self._account},
            "/v1/trades": {"GET": self._trades},
        }
        self._order_routes: dict[str, Route] = {"GET": self._order, "DELETE": self._cancel}

    def handle(self, request: HttpRequest) -> HttpResponse:
        methods = self._methods(request.path)
        if methods is None:
            return HttpResponse.text(404, "Not Found\n")
        route = methods.get(request.method)
        if route is None:
            response = HttpResponse.text(405, "Method Not Allowed\n")
            response.headers.append(("Allow", ", ".join(methods)))
            return response
        try:
            return route(request)
        except ApiError as error:
            return HttpResponse.json(error.status, error.body())

    def _methods(self, path: str) -> dict[str, Route] | None:
        if path in self._routes:
            return self._routes[path]
        order_id = path.removeprefix(ORDER_PREFIX)
        if path.startswith(ORDER_PREFIX) and order_id and "/" not in order_id:
            return self._order_routes
        return None

    # Orders --------------------------------------------------------------------------------

    def _submit(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(201, self._desk.submit(_json_body(request)))

    def _list_orders(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, self._desk.orders(request.query))

    def _history(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, self._desk.orders(request.query, history=True))

    def _order(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, self._desk.order(_order_id(request)))

    def _cancel(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, self._desk.cancel(_order_id(request)))

    def _cancel_all(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, self._desk.cancel_all(request.query.get("symbol")))

    # Account -------------------------------------------------------------------------------

    def _positions(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, self._desk.positions(request.query.get("symbol")))

    def _account(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, self._desk.account())

    def _trades(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, self._desk.trades(request.query))


def _order_id(request: HttpRequest) -> str:
    return request.path.removeprefix(ORDER_PREFIX)


def _json_body(request: HttpRequest) -> Any:
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise invalid_request(
            "Invalid JSON: Expected request with `Content-Type: application/json`"
        )
    try:
        return orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(f"Invalid JSON: {exc}") from None
