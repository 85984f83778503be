"""Structured logs: JSON lines with fields, readable text, scrubbed secrets, rate limiting."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from connector.logs import RateLimitedLog, setup_logging


@pytest.fixture
def capture() -> io.StringIO:
    return io.StringIO()


def test_json_lines_carry_extra_fields(capture: io.StringIO) -> None:
    setup_logging("INFO", "json", stream=capture)
    logging.getLogger("connector.test").info("connected", extra={"url": "ws://x", "n": 3})
    line = orjson.loads(capture.getvalue().splitlines()[-1])
    assert line["msg"] == "connected"
    assert (line["url"], line["n"], line["level"]) == ("ws://x", 3, "info")
    assert line["ts"].endswith("Z")


def test_text_format_for_people(capture: io.StringIO) -> None:
    setup_logging("INFO", "text", stream=capture)
    logging.getLogger("connector.test").warning("missed pong", extra={"missed": 1})
    assert "WARNING connector.test: missed pong  missed=1" in capture.getvalue()


def test_auto_is_json_when_not_a_terminal(capture: io.StringIO) -> None:
    setup_logging("INFO", "auto", stream=capture)
    logging.getLogger("connector.test").info("hello")
    orjson.loads(capture.getvalue().splitlines()[-1])


def test_secrets_are_scrubbed_everywhere(capture: io.StringIO) -> None:
    setup_logging("INFO", "json", secrets=["topsecret"], stream=capture)
    log = logging.getLogger("connector.test")
    log.info("key is %s", "topsecret", extra={"header": "Bearer topsecret"})
    try:
        raise ValueError("bad topsecret")
    except ValueError:
        log.exception("failed")
    assert "topsecret" not in capture.getvalue()
    assert "***" in capture.getvalue()
    failed = orjson.loads(capture.getvalue().splitlines()[-1])
    assert "ValueError: bad ***" in failed["exc"]  # the traceback survives the scrubbing


def test_rate_limited_log_holds_repeats_and_reports_them(capture: io.StringIO) -> None:
    setup_logging("INFO", "json", stream=capture)
    limited = RateLimitedLog(logging.getLogger("connector.test"), interval=3600)
    for _ in range(50):
        limited.warning("bad_json", "rejected a frame")
    lines = capture.getvalue().splitlines()
    assert len(lines) == 1
    limited._interval = 0  # the next interval has started
    limited.warning("bad_json", "rejected a frame")
    assert orjson.loads(capture.getvalue().splitlines()[-1])["suppressed"] == 49


@pytest.fixture(autouse=True)
def restore_logging() -> None:
    yield  # type: ignore[misc]
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == "connector":
            root.removeHandler(handler)
