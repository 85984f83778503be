"""One reading of a Redis error reply, whichever client parsed it.

The same refusal reaches the connector in two shapes. On its own connections
(``connector.wire.resp``) hiredis keeps the reply whole: ``ResponseError("OOM command not allowed
...")``. redis-py turns the error code into a type and strips it from the text:
``OutOfMemoryError("command not allowed ...")``, with ``status_code = "OOM"`` (older releases have
the type only). Every decision about an error (retry, reconnect, follow a redirection, ignore) is
made here on the code, so both paths decide the same."""

from __future__ import annotations

from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    ExecAbortError,
    MasterDownError,
    MovedError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

__all__ = [
    "error_code",
    "is_busygroup",
    "is_id_too_small",
    "is_redirect",
    "is_transient",
    "needs_reconnect",
]

#: Refusals that pass by themselves (memory freed, failover done, loading finished, a password
#: or an ACL fixed): the batch is retried, never dead-lettered.
TRANSIENT = frozenset(
    {
        "LOADING",
        "READONLY",
        "OOM",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "MASTERDOWN",
        "BUSY",
        "MOVED",
        "ASK",
        "MISCONF",
        "NOREPLICAS",
        "NOAUTH",
        "NOPERM",
        "WRONGPASS",
    }
)
#: Replies that say this connection talks to the wrong server, or as the wrong user: a primary
#: that became a replica (failover behind a stable address), one still loading, a user whose
#: password was rotated. Only a new connection can get past them.
RECONNECT = frozenset({"READONLY", "MASTERDOWN", "LOADING", "NOAUTH", "WRONGPASS", "EXECABORT"})

# redis-py releases without ``status_code``: the type says which code it stripped.
_TYPED: tuple[tuple[type[BaseException], str], ...] = (
    (OutOfMemoryError, "OOM"),
    (ReadOnlyError, "READONLY"),
    (NoPermissionError, "NOPERM"),
    (TryAgainError, "TRYAGAIN"),
    (MasterDownError, "MASTERDOWN"),
    (BusyLoadingError, "LOADING"),
    (ExecAbortError, "EXECABORT"),
    (ClusterDownError, "CLUSTERDOWN"),
    (AskError, "ASK"),
    (MovedError, "MOVED"),
)


def error_code(exc: object) -> str | None:
    """The reply's error code (``OOM``, ``READONLY``, ``BUSYGROUP``, ``ERR``...), or None when
    ``exc`` is not an error reply with one (a lost connection, a timeout)."""
    if not isinstance(exc, BaseException):
        return None
    code = getattr(exc, "status_code", None)
    if isinstance(code, str) and code:
        return code
    for kind, typed_code in _TYPED:
        if isinstance(exc, kind):
            return typed_code
    if isinstance(exc, AuthenticationError):
        return "WRONGPASS" if "WRONGPASS" in str(exc) else "NOAUTH"
    first = str(exc).split(" ", 1)[0]
    return first if first.isalpha() and first.isupper() else None


def is_transient(exc: object) -> bool:
    return error_code(exc) in TRANSIENT


def needs_reconnect(reply: object) -> bool:
    return error_code(reply) in RECONNECT


def is_redirect(reply: object) -> bool:
    """MOVED or ASK: the key's slot is served elsewhere."""
    return error_code(reply) in ("MOVED", "ASK")


def is_busygroup(exc: object) -> bool:
    """XGROUP CREATE on a group that exists: the wanted state, not a failure."""
    return error_code(exc) == "BUSYGROUP" or "BUSYGROUP" in str(exc)


def is_id_too_small(exc: object) -> bool:
    """XADD with an id at or below the stream's last: stored before (ours) or a clash."""
    return isinstance(exc, ResponseError) and "equal or smaller" in str(exc)
