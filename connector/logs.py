"""Structured logging: JSON lines for machines, readable text on a terminal, secrets scrubbed.

Fields are passed the standard way, ``log.info("connected", extra={"url": url})``; both formats
print them. :class:`RateLimitedLog` keeps a flood of identical problems (a burst of malformed
frames, a Redis outage) to one line per interval with a count of what it held back.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

import orjson

# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extra_fields(record))
        traceback = _traceback(self, record)
        if traceback:
            entry["exc"] = traceback
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``HH:MM:SS.mmm LEVEL logger: message key=value ...`` for people."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _extra_fields(record).items())
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{clock}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: "
        line += record.getMessage() + (f"  {fields}" if fields else "")
        traceback = _traceback(self, record)
        if traceback:
            line += "\n" + traceback
        return line


def _traceback(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The record's traceback: live, or already rendered (and scrubbed) by SecretScrubber."""
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return record.exc_text or ""


class SecretScrubber(logging.Filter):
    """Replaces any known secret value in a formatted record (defence in depth).

    Secrets read again later (a rotated key file) are added with :func:`register_secret`."""

    MAX_SECRETS = 64

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets: list[str] = []
        for value in secrets:
            self.add(value)

    def add(self, secret: str) -> None:
        if len(secret) >= 4 and secret not in self._secrets:
            if len(self._secrets) >= self.MAX_SECRETS:
                self._secrets.pop(0)
            self._secrets.append(secret)
            # Longest first: a secret that contains another must be replaced whole.
            self._secrets.sort(key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        scrubbed = self._scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        for key, value in _extra_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, self._scrub(value))
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self._scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _iso_time(created: float) -> str:
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


_scrubber: SecretScrubber | None = None  # the handler's, once logging is set up


def register_secret(secret: str) -> None:
    """A secret that appeared after start-up (a rotated key file): scrub it from logs too."""
    if _scrubber is not None:
        _scrubber.add(secret)


def setup_logging(
    level: str = "INFO",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure the root logger once for the process (idempotent: replaces our handler)."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    global _scrubber
    _scrubber = SecretScrubber(secrets)
    handler.addFilter(_scrubber)
    handler.set_name("connector")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "connector":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter (every reconnect attempt, every handshake) is ours to report, once.
    quiet = max(logging.WARNING, logging.getLevelName(level))
    logging.getLogger("websockets").setLevel(quiet)
    logging.getLogger("redis").setLevel(quiet)


class RateLimitedLog:
    """At most one line per ``key`` per ``interval``; the next line says how many were held."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._state: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, message: str, **fields: Any) -> None:
        self._emit(logging.WARNING, key, message, fields)

    def error(self, key: str, message: str, **fields: Any) -> None:
        self._emit(logging.ERROR, key, message, fields)

    def _emit(self, level: int, key: str, message: str, fields: dict[str, Any]) -> None:
        now = time.monotonic()
        last, held = self._state.get(key, (float("-inf"), 0))
        if now - last < self._interval:
            self._state[key] = (last, held + 1)
            return
        if held:
            fields["suppressed"] = held
        self._state[key] = (now, 0)
        # A field named like a LogRecord attribute ("name", "msg") would make logging raise.
        safe = {(k + "_" if k in _STANDARD else k): v for k, v in fields.items()}
        self._logger.log(level, message, extra=safe)
