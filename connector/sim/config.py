"""Settings of one simulator run, validated once so the rest of the code can trust them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from connector.sim.decimals import SCALES, Scale

Mode = Literal["backtest", "live"]
IdField = Literal["event_id", "id"]
BarTime = Literal["minute", "emission"]
PositionTime = Literal["wall", "sim"]

#: Timeframes the real server accepts, with their length in seconds.
TIMEFRAMES: dict[str, int] = {
    "1m": 60,
    "2m": 120,
    "5m": 300,
    "10m": 600,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "12h": 43200,
    "1d": 86400,
    "1w": 604800,
}


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything a run needs; see docs/simulator.md for the meaning of each field.

    The defaults reproduce the real server: event ids in ``event_id``, engine frames with sorted
    keys, no JSON pings, a 1024-frame queue per client, 5 s per backtest step.
    """

    mode: Mode = "backtest"
    host: str = "127.0.0.1"
    port: int = 0
    symbols: tuple[str, ...] = ("AAPL", "MSFT", "BTCUSD")
    timeframe: str = "1m"
    seed: int = 1
    provider: str = "tektii"
    api_key: str | None = None
    id_field: IdField = "event_id"
    # Backtest.
    steps: int = 100
    step_timeout: float = 5.0
    halt_after_timeouts: int = 5
    halt_before_first_ack: int = 24
    complete_timeout: float = 10.0
    fill_every: int = 7
    other_every: int = 11
    backtest_quotes: bool = False
    complete_with_id: bool = True
    sort_keys: bool = True
    wait_for_client: bool = True
    min_clients: int = 1
    # Live.
    rate: float = 0.0
    count: int | None = None
    tick_interval: float = 2.0
    backpressure: bool = False
    json_ping_interval: float = 0.0
    queue_size: int = 1024
    # Data.
    data_file: Path | None = None
    decimal_scale: Scale = "plain"
    # Orders.
    position_time: PositionTime = "wall"
    fill_correlation_loss: float = 0.0
    live_fill_delay: float = 0.5
    live_fill_group: bool = False
    live_bar_time: BarTime = "minute"
    # Transport: serve wss:// with this certificate chain and key (PEM) when both are set.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Faults.
    answer_pings: bool = True
    malformed_every: int = 0
    drop_after: int = 0
    duplicate_every: int = 0
    relay_gap: float = 0.0
    close_frame_loss: float = 0.0
    # Lifecycle and bookkeeping.
    shutdown_grace: float = 0.5
    close_timeout: float = 2.0
    record_frames: bool = True

    def __post_init__(self) -> None:
        # Normalise the forgiving inputs (lists, str paths) before validating them.
        if not isinstance(self.symbols, tuple):
            object.__setattr__(self, "symbols", tuple(self.symbols))
        for name in ("data_file", "tls_cert", "tls_key"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        for problem in self._problems():
            raise ValueError(f"invalid simulator setting: {problem}")

    def _problems(self) -> list[str]:
        problems: list[str] = []
        if self.mode not in ("backtest", "live"):
            problems.append(f"mode must be 'backtest' or 'live', not {self.mode!r}")
        if self.id_field not in ("event_id", "id"):
            problems.append(f"id_field must be 'event_id' or 'id', not {self.id_field!r}")
        problems.extend(self._choice_problems())
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be 0..65535 (0 = any free port), not {self.port}")
        if not self.host:
            problems.append("host must not be empty")
        problems.extend(_symbol_problems(self.symbols))
        if self.timeframe not in TIMEFRAMES:
            problems.append(
                f"timeframe must be one of {' '.join(TIMEFRAMES)}, not {self.timeframe!r}"
            )
        if self.api_key is not None and not self.api_key.strip():
            problems.append("api_key must not be blank (use None for no auth)")
        if not self.provider:
            problems.append("provider must not be empty")
        problems.extend(self._number_problems())
        if self.data_file is not None and not self.data_file.is_file():
            problems.append(f"data_file {str(self.data_file)!r} is not a readable file")
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("tls_cert and tls_key go together")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                problems.append(f"{name} {str(path)!r} is not a readable file")
        return problems

    def _choice_problems(self) -> list[str]:
        choices: dict[str, tuple[object, tuple[str, ...]]] = {
            "decimal_scale": (self.decimal_scale, SCALES),
            "position_time": (self.position_time, ("wall", "sim")),
            "live_bar_time": (self.live_bar_time, ("minute", "emission")),
        }
        return [
            f"{name} must be one of {', '.join(allowed)}, not {value!r}"
            for name, (value, allowed) in choices.items()
            if value not in allowed
        ]

    def _number_problems(self) -> list[str]:
        problems: list[str] = []
        non_negative_ints = {
            "steps": self.steps,
            "fill_every": self.fill_every,
            "other_every": self.other_every,
            "malformed_every": self.malformed_every,
            "drop_after": self.drop_after,
            "duplicate_every": self.duplicate_every,
        }
        for name, value in non_negative_ints.items():
            if value < 0:
                problems.append(f"{name} must be >= 0, not {value}")
        positive_ints = {
            "halt_after_timeouts": self.halt_after_timeouts,
            "halt_before_first_ack": self.halt_before_first_ack,
            "queue_size": self.queue_size,
            "min_clients": self.min_clients,
        }
        for name, value in positive_ints.items():
            if value < 1:
                problems.append(f"{name} must be >= 1, not {value}")
        positive_floats = {
            "step_timeout": self.step_timeout,
            "complete_timeout": self.complete_timeout,
            "tick_interval": self.tick_interval,
            "close_timeout": self.close_timeout,
        }
        for name, number in positive_floats.items():
            if not (math.isfinite(number) and number > 0):
                problems.append(f"{name} must be a finite number > 0, not {number}")
        for name, number in {
            "json_ping_interval": self.json_ping_interval,
            "shutdown_grace": self.shutdown_grace,
            "live_fill_delay": self.live_fill_delay,
            "relay_gap": self.relay_gap,
        }.items():
            if not (math.isfinite(number) and number >= 0):
                problems.append(f"{name} must be a finite number >= 0, not {number}")
        for name, number in {
            "fill_correlation_loss": self.fill_correlation_loss,
            "close_frame_loss": self.close_frame_loss,
        }.items():
            if not 0 <= number <= 1:
                problems.append(f"{name} must be a probability in 0..1, not {number}")
        if math.isnan(self.rate) or self.rate < 0:
            problems.append(
                f"rate must be >= 0 (0 = mock-feed pacing, inf = as fast as possible), "
                f"not {self.rate}"
            )
        if self.count is not None and self.count < 0:
            problems.append(f"count must be >= 0 or None (no limit), not {self.count}")
        return problems

    @property
    def timeframe_seconds(self) -> int:
        """Length of one bar, which is also how far simulated time moves per backtest step."""
        return TIMEFRAMES[self.timeframe]

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def burst(self) -> bool:
        """True when the live feed sends as fast as it can (``rate=inf``)."""
        return math.isinf(self.rate)


def _symbol_problems(symbols: tuple[str, ...]) -> list[str]:
    if not symbols:
        return ["symbols must name at least one symbol"]
    problems: list[str] = []
    for symbol in symbols:
        if not isinstance(symbol, str) or not symbol or symbol != symbol.strip():
            problems.append(f"symbol {symbol!r} must be a non-empty string without spaces")
    if len(set(symbols)) != len(symbols):
        problems.append(f"symbols must be unique, got {', '.join(symbols)}")
    return problems
