"""Settings: every knob of the service, read from ``CONNECTOR_*`` variables and validated once.

The settings model is the single source for the environment contract, for the ``connector run``
flags (generated from the same fields) and for ``--help``. A bad value stops start-up with one line
per problem that names the variable and what it accepts (see :func:`describe_errors`).
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
import socket
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from redis.connection import parse_url

from connector.logs import register_secret
from connector.streams.groups import GROUP_NAME, GROUP_NAME_RULE, GroupSpec, parse_groups, specs_of

ENV_PREFIX = "CONNECTOR_"
MASK = "***"

# Names that may appear inside a Redis key without breaking it or a Cluster hash tag.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.:\-/]{1,64}")


class Settings(BaseSettings):
    """Configuration of ``connector run``. Field descriptions are the user documentation."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="forbid",
        validate_default=True,
    )

    # -- Trading API session -------------------------------------------------------------------
    api_url: str = Field(
        "ws://localhost:8080/v1/ws",
        description="Trading API WebSocket URL (ws:// or wss://); older servers use /ws.",
    )
    mode: Literal["backtest", "live"] = Field(
        "live",
        description="backtest: acks drive simulated time, exit after backtest_complete; "
        "live: acks are informational.",
    )
    api_key: SecretStr | None = Field(
        None,
        description="API key sent on the upgrade request (as a flag it shows in process lists: "
        "prefer the variable or API_KEY_FILE).",
    )
    api_key_file: Path | None = Field(
        None, description="File holding the API key (e.g. a mounted secret); wins over API_KEY."
    )
    api_key_header: Literal["authorization", "x-api-key"] = Field(
        "authorization",
        description="How the key is sent: 'authorization' (Bearer) or 'x-api-key'.",
    )
    ws_ca_file: Path | None = Field(
        None, description="PEM bundle of CAs trusted for wss:// (default: the system store)."
    )
    open_timeout: float = Field(
        10.0,
        gt=0,
        le=600,
        allow_inf_nan=False,
        description="Seconds allowed for connect + upgrade.",
    )
    ping_interval: float = Field(
        5.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Seconds between WebSocket protocol pings (liveness check).",
    )
    ping_timeout: float = Field(
        5.0,
        gt=0,
        le=600,
        allow_inf_nan=False,
        description="Seconds a ping may wait for its pong before it counts as missed.",
    )
    max_missed_pongs: int = Field(
        2, ge=1, le=100, description="Consecutive missed pongs after which the session reconnects."
    )
    reconnect_min_delay: float = Field(
        0.1,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="First reconnect backoff step in seconds (doubles per attempt).",
    )
    reconnect_max_delay: float = Field(
        30.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Backoff cap in seconds; also the retry delay after HTTP 401/403.",
    )
    reconnect_reset_after: float = Field(
        30.0,
        ge=0,
        le=86400,
        allow_inf_nan=False,
        description="Seconds a connection must stay up before the backoff resets.",
    )
    max_frame_bytes: int = Field(
        1_048_576,
        ge=1024,
        le=512 * 1024 * 1024,
        description="Frames above this size are dead-lettered; 8x this closes the connection.",
    )
    ws_compression: bool = Field(False, description="Offer permessage-deflate to the server.")
    ack_live: bool = Field(True, description="Also acknowledge id-bearing events in live mode.")
    exit_on_complete: bool = Field(
        True,
        description="In backtest mode, exit once the run ended: 0 when backtest_complete was "
        "stored and acked, 3 when the run did not complete (halted, interrupted, unacknowledged).",
    )
    complete_ack_timeout: float = Field(
        10.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Backtest: seconds the engine waits for the ack of backtest_complete; a "
        "completion not acknowledged in time ends the run as unacknowledged.",
    )
    backtest_reconnect_window: float = Field(
        30.0,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description="Backtest: a session lost mid-run that is not back within this many seconds "
        "ends the run as interrupted (the engine halts without acks anyway).",
    )

    # -- Redis --------------------------------------------------------------------------------
    redis_url: str = Field(
        "redis://localhost:6379/0",
        description="Redis URL: redis://, rediss:// (TLS) or unix://; credentials are masked.",
    )
    redis_username: str | None = Field(None, description="Redis ACL user (overrides the URL).")
    redis_password: SecretStr | None = Field(
        None, description="Redis password (overrides the URL's; prefer REDIS_PASSWORD_FILE)."
    )
    redis_password_file: Path | None = Field(
        None, description="File holding the Redis password; wins over REDIS_PASSWORD."
    )
    redis_ca_file: Path | None = Field(None, description="PEM CA bundle for rediss://.")
    redis_timeout: float = Field(
        5.0, gt=0, le=600, allow_inf_nan=False, description="Seconds for one Redis round trip."
    )
    redis_cluster: bool = Field(
        False, description="REDIS_URL names a node of a Redis Cluster (use a cluster client)."
    )
    stream_prefix: str = Field(
        "md", description="Prefix of every stream key (e.g. md:{AAPL}:quote)."
    )
    stream_maxlen: int = Field(
        100_000, ge=0, le=10**12, description="Approximate MAXLEN per stream (0 keeps everything)."
    )
    batch_max_events: int = Field(
        1000, ge=1, le=100_000, description="Most events written in one pipelined round trip."
    )
    buffer_max_events: int = Field(
        100_000,
        ge=1,
        le=100_000_000,
        description="Events held while Redis is unavailable; oldest dropped beyond.",
    )
    buffer_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        le=64 * 1024**3,
        description="Bytes held while Redis is unavailable.",
    )
    session_id: str = Field(
        # The random part: two containers can share a hostname and both run as pid 1.
        default_factory=lambda: f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}",
        description="Names this connector in markers and in the prefix lease "
        "(default host-pid-random).",
    )
    prefix_lock: bool = Field(
        True,
        description="Hold a lease on STREAM_PREFIX so a second connector cannot interleave "
        "its session into the same streams (it waits instead).",
    )
    max_streams: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Most distinct candle/quote streams; frames for more are dead-lettered.",
    )
    dedupe_window: int = Field(
        100_000,
        ge=0,
        le=10_000_000,
        description="Recent event ids remembered to drop re-deliveries (0: off); about 180 bytes "
        "each (18 MB at the default, with 40-character ids).",
    )

    # -- Acknowledgement ----------------------------------------------------------------------
    ack_mode: Literal["immediate", "consumer"] = Field(
        "immediate",
        description="immediate: ack once Redis stored the event; consumer: once every group in "
        "CONSUMER_GROUPS confirmed it.",
    )
    consumer_groups: Annotated[tuple[GroupSpec, ...], NoDecode] = Field(
        default_factory=tuple,
        description="Consumer groups that must confirm, comma-separated; each may say what it "
        "reads, e.g. 'risk, signals[types=candle], strategy[types=candle,order; "
        "symbols=AAPL,MSFT]' (a group waits the engine only for entries it reads).",
    )
    consumer_ack_timeout: float = Field(
        0.0,
        ge=0,
        le=86400,
        allow_inf_nan=False,
        description="Seconds to wait for group confirmation before the policy (0: none).",
    )
    consumer_timeout_policy: Literal["hold", "release"] = Field(
        "hold", description="On timeout: hold (keep waiting, flagged) or release (ack, counted)."
    )
    consumer_stall_warning: float = Field(
        3.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Seconds a stored step may wait for its consumer groups before a warning "
        "(repeated every 10 s) names them and /readyz turns false until they confirm.",
    )
    consumer_check_interval: float = Field(
        0.05,
        gt=0,
        le=60,
        allow_inf_nan=False,
        description="Seconds between checks of group positions (plain XACK users).",
    )

    # -- Operations ---------------------------------------------------------------------------
    http_host: str = Field("0.0.0.0", description="Address for /metrics, /healthz, /readyz.")
    http_port: int = Field(9464, ge=0, le=65535, description="Port for HTTP (0: pick a free one).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="auto: text on a terminal, JSON otherwise."
    )
    metrics_symbol_labels: bool = Field(
        False, description="Add a per-symbol events counter (unbounded label values: opt in)."
    )
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto", description="auto: uvloop when installed (faster I/O), else asyncio's own."
    )
    shutdown_timeout: float = Field(
        10.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Seconds a graceful stop may take to flush and ack.",
    )

    @field_validator("api_key")
    @classmethod
    def _check_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                check_api_key(value.get_secret_value(), "the value")
            except ConfigError as exc:
                raise ValueError(str(exc).removeprefix("the value: ")) from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "mode", "ack_mode", "api_key_header", "log_format", "event_loop", mode="before"
    )
    @classmethod
    def _lower_choice(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("api_url")
    @classmethod
    def _check_api_url(cls, value: str) -> str:
        check_url_parts(value)
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError("must be a ws:// or wss:// URL with a host")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        check_url_parts(value)
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("must name a host, e.g. redis://localhost:6379/0")
        if parts.scheme == "unix" and not parts.path:
            raise ValueError("must name a socket path, e.g. unix:///run/redis.sock")
        # TLS is configured by the scheme and CONNECTOR_REDIS_CA_FILE only: a query such as
        # ?ssl_cert_reqs=none would turn verification off for redis-py's connections alone.
        settings = [key for key, _ in parse_qsl(parts.query, True) if key.lower().startswith("ssl")]
        if settings:
            raise ValueError(
                f"TLS settings in the URL ({settings[0]}) are not taken: use rediss:// and "
                "CONNECTOR_REDIS_CA_FILE (certificates are always verified)"
            )
        try:
            parse_url(value)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError) as exc:
            raise ValueError(f"cannot be read: {str(exc).split(':')[0][:80]}") from None
        return value

    @field_validator("stream_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _SAFE_NAME.fullmatch(value):
            raise ValueError("must be 1-64 characters of letters, digits and _ . : - /")
        return value

    @field_validator("session_id")
    @classmethod
    def _check_session_id(cls, value: str) -> str:
        if not GROUP_NAME.fullmatch(value):
            raise ValueError(GROUP_NAME_RULE)
        return value

    @field_validator("consumer_groups", mode="before")
    @classmethod
    def _parse_groups(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_groups(value)
        if isinstance(value, list | tuple):
            return specs_of(value)
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> Settings:
        if self.ack_mode == "consumer" and not self.consumer_groups:
            raise ValueError(
                "CONNECTOR_ACK_MODE=consumer needs CONNECTOR_CONSUMER_GROUPS (comma list of groups)"
            )
        if self.reconnect_min_delay > self.reconnect_max_delay:
            raise ValueError(
                "CONNECTOR_RECONNECT_MIN_DELAY must not exceed CONNECTOR_RECONNECT_MAX_DELAY"
            )
        if self.redis_cluster and self.redis_url.startswith("unix://"):
            raise ValueError("CONNECTOR_REDIS_CLUSTER needs a redis:// or rediss:// node URL")
        if self.ws_ca_file is not None and not self.api_url.startswith("wss://"):
            raise ValueError("CONNECTOR_WS_CA_FILE is only used with a wss:// CONNECTOR_API_URL")
        if self.redis_ca_file is not None and not self.redis_url.startswith("rediss://"):
            raise ValueError(
                "CONNECTOR_REDIS_CA_FILE is only used with a rediss:// CONNECTOR_REDIS_URL"
            )
        return self

    # -- derived values -----------------------------------------------------------------------

    @property
    def group_names(self) -> tuple[str, ...]:
        """The required consumer groups' names, in the order declared."""
        return tuple(spec.name for spec in self.consumer_groups)

    def resolved_api_key(self) -> str | None:
        """The API key, read from API_KEY_FILE when set (so a rotated secret is picked up)."""
        if self.api_key_file is not None:
            key = _read_secret_file(self.api_key_file, "CONNECTOR_API_KEY_FILE")
            check_api_key(key, "CONNECTOR_API_KEY_FILE")
            return key
        return self.api_key.get_secret_value() if self.api_key else None

    def resolved_redis_password(self) -> str | None:
        if self.redis_password_file is not None:
            return _read_secret_file(self.redis_password_file, "CONNECTOR_REDIS_PASSWORD_FILE")
        return self.redis_password.get_secret_value() if self.redis_password else None

    def secrets(self) -> list[str]:
        """Every secret value in use, so logs can scrub them wherever they appear."""
        found = [
            self.resolved_api_key(),
            self.resolved_redis_password(),
            *_url_secrets(self.redis_url),
            *_url_secrets(self.api_url),
        ]
        return [value for value in found if value]

    def describe(self) -> dict[str, Any]:
        """The settings as printable values, secrets masked."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = MASK
            elif isinstance(value, Path):
                value = str(value)
            elif name in ("redis_url", "api_url"):
                value = mask_url(value)
            elif name == "consumer_groups":
                value = ", ".join(str(spec) for spec in value)
            shown[name] = value
        return shown

    def __repr_args__(self) -> Any:
        # pydantic's default repr would show the Redis URL's password.
        return list(self.describe().items())


class ConfigError(Exception):
    """Start-up configuration problem; ``str()`` is the one-line user message."""


SECRET_FILE_MAX_BYTES = 64 * 1024


def _read_secret_file(path: Path, variable: str) -> str:
    """The secret in ``path``: a regular file of sane size (a FIFO would hang start-up, a
    device or a wrong path read whole could exhaust memory), read as UTF-8, stripped."""
    try:
        # Checked before opening: opening a FIFO would block until someone writes to it.
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{variable}: {path} is not a regular file")
        if info.st_size > SECRET_FILE_MAX_BYTES:
            raise ConfigError(
                f"{variable}: {path} is {info.st_size} bytes; a secret file holds at most "
                f"{SECRET_FILE_MAX_BYTES} (is it the right file?)"
            )
        with path.open("rb") as handle:
            data = handle.read(SECRET_FILE_MAX_BYTES + 1)
    except PermissionError:
        raise ConfigError(
            f"{variable}: cannot read {path}: permission denied; the connector runs as UID "
            f"{os.getuid()}: make the file readable by it (mode 0444, or owned by that user)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{variable}: {path} is not UTF-8 text") from None
    if not value:
        raise ConfigError(f"{variable}: {path} is empty")
    register_secret(value)  # a rotated value is as secret as the first
    return value


_HEADER_VALUE = re.compile(r"[\x21-\x7e]{1,4096}")


def check_api_key(key: str, source: str) -> None:
    """An API key travels in an HTTP header: visible ASCII only. The message never shows it
    (websockets' own error would: it quotes the header)."""
    if not _HEADER_VALUE.fullmatch(key):
        raise ConfigError(
            f"{source}: the API key holds characters an HTTP header cannot carry (spaces, "
            "control characters or non-ASCII, e.g. a dash from a word processor)"
        )


def split_credentials(url: str) -> tuple[str, str | None, str | None, str]:
    """``(scheme, user, password, rest)`` of ``scheme://user:password@rest``.

    The credentials are everything between ``://`` and the *last* ``@``, as SQLAlchemy and pip
    redact them: a generated password often holds ``/``, ``?`` or ``#``, which end the
    authority for a standard URL parser (and would leave the password in plain sight).
    """
    scheme, separator, remainder = url.partition("://")
    if not separator or "@" not in remainder:
        return scheme, None, None, remainder
    userinfo, _, rest = remainder.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return scheme, user or None, password if colon else None, rest


def mask_url(url: str) -> str:
    """``url`` with its password and query values replaced by ``***`` (user names, hosts and
    query keys stay visible): ``?token=...`` is as secret as a password."""
    scheme, user, password, rest = split_credentials(url)
    if password is not None:
        rest = f"{user}:{MASK}@{rest}" if user else f"{MASK}@{rest}"
    elif user is not None:
        rest = f"{user}@{rest}"
    try:
        parts = urlsplit(f"{scheme}://{rest}") if scheme else urlsplit(rest)
    except ValueError:  # not a URL at all (a redirect target, say): show nothing of it
        return f"{scheme}://{MASK}" if scheme else MASK
    query = "&".join(
        f"{key}={MASK}" if value else key for key, value in parse_qsl(parts.query, True)
    )
    masked = f"{scheme}://{rest}" if scheme else rest
    if query == parts.query:
        return masked
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


_SECRET_PARAMETER = re.compile(r"token|key|secret|pass|auth|sig|credential", re.IGNORECASE)


def _url_secrets(url: str) -> list[str]:
    """The password and secret-looking query values of ``url`` (for scrubbing logs; masking
    for display hides every query value anyway)."""
    scheme, _, password, rest = split_credentials(url)
    try:
        query = parse_qsl(urlsplit(f"{scheme}://{rest}").query)
    except ValueError:
        query = []
    return [password or "", *(v for k, v in query if _SECRET_PARAMETER.search(k))]


def check_url_parts(url: str) -> None:
    """A URL a connection can be made to: credentials that need escaping are escaped, and the
    port is a port. Raises ValueError whose message never repeats the URL (it may hold a
    password)."""
    _, _, password, _ = split_credentials(url)
    if password is not None and any(char in password for char in "/?#@"):
        raise ValueError(
            "the password holds '/', '?', '#' or '@': percent-encode them (%2F %3F %23 %40)"
        )
    try:
        port = urlsplit(url).port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535")


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def describe_errors(error: ValidationError, from_flags: frozenset[str] = frozenset()) -> str:
    """One line per problem, naming the variable (and flag) and what it accepts."""
    lines = []
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item.get("loc", ()) if isinstance(part, str)]
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        if not loc:
            lines.append(message)
            continue
        field = loc[0]
        name = flag_name(field) if field in from_flags else env_name(field)
        if item.get("type") == "extra_forbidden":
            lines.append(f"{name}: unknown setting")
            continue
        given = item.get("input")
        shown = "" if _is_secret(field) or isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"{name}: {_plain(message)}{shown}")
    return "; ".join(lines)


def _is_secret(field: str) -> bool:
    return field in ("api_key", "redis_password", "redis_url", "api_url")


def _plain(message: str) -> str:
    return message.replace("Input should be", "expected").replace("input should be", "expected")


def load_settings(overrides: dict[str, Any] | None = None, *, strict: bool = True) -> Settings:
    """Build settings from the environment plus ``overrides`` (command-line flags).

    Raises :class:`ConfigError` with a user-facing message on any invalid value, and (with
    ``strict``) on a ``CONNECTOR_*`` variable that names no setting: a misspelt variable is a
    mistake to report, not a default to run on (``CONNECTOR_REDIS_URI`` would otherwise leave
    the connector on whatever Redis answers on localhost).
    """
    overrides = overrides or {}
    if strict:
        unknown = unknown_variables()
        if unknown:
            raise ConfigError(describe_unknown(unknown))
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, frozenset(overrides))) from None
    # Read secret files now, so a missing file fails at start-up and not at first connect.
    settings.resolved_api_key()
    settings.resolved_redis_password()
    return settings


# Variables Kubernetes sets for a Service named "connector" (service links): not settings.
_SERVICE_LINK = re.compile(
    r"CONNECTOR_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?)"
)


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """``CONNECTOR_*`` variables that name no setting, each with the closest setting's name."""
    names = [env_name(field) for field in Settings.model_fields]
    found = []
    for variable in sorted(os.environ if environ is None else environ):
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper in names or _SERVICE_LINK.fullmatch(upper):
            continue
        close = difflib.get_close_matches(upper, names, n=1, cutoff=0.75)
        found.append((variable, close[0] if close else None))
    return found


def describe_unknown(unknown: list[tuple[str, str | None]]) -> str:
    return "; ".join(
        f"{variable}: unknown setting" + (f" (did you mean {close}?)" if close else "")
        for variable, close in unknown
    )


def setting_sources(
    overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Where each setting's value comes from: the flag, the variable, or ``default``."""
    present = {name.upper() for name in (os.environ if environ is None else environ)}
    return {
        field: "--" + field.replace("_", "-")
        if field in overrides
        else env_name(field)
        if env_name(field) in present
        else "default"
        for field in Settings.model_fields
    }
