"""The Redis client as the connector needs it: bounded timeouts, short retries, TLS, ACL auth, and
a cluster client when ``CONNECTOR_REDIS_CLUSTER`` is set.

redis-py retries a failed command (and re-sends whole pipelines) on its own. That is safe for our
writes (explicit entry ids make them idempotent, see :mod:`connector.streams.writer`), but its
default patience would hide an outage for seconds; the publisher has its own backoff, so keep this
short."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.credentials import CredentialProvider
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    NoPermissionError,
)

from connector.config import Settings, split_credentials
from connector.wire.errors import error_code

# What the connector and the consumer toolkit accept: a single node or a cluster.
RedisClient = Redis | RedisCluster


class FileCredentials(CredentialProvider):
    """Credentials read again for every new connection: a rotated CONNECTOR_REDIS_PASSWORD_FILE
    reaches every connection (redis-py's, and the write path's own, see connector.wire.resp) as each
    reconnects, instead of only those opened after a restart."""

    def __init__(self, settings: Settings, username: str | None) -> None:
        self._settings = settings
        self._username = username

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        password = self._settings.resolved_redis_password() or ""
        return (self._username, password) if self._username else (password,)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return self.get_credentials()


def redis_url_and_options(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The URL and keyword arguments for ``from_url`` derived from the settings."""
    url = settings.redis_url
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        "decode_responses": False,
    }
    if not settings.redis_cluster:
        options["health_check_interval"] = 10
    if settings.redis_password_file is not None:
        # redis-py refuses a provider beside credentials in the URL: the file wins anyway.
        scheme, user, _, rest = split_credentials(url)
        url = f"{scheme}://{rest}"
        username = settings.redis_username or (unquote(user) if user else None)
        options["credential_provider"] = FileCredentials(settings, username)
    else:
        if settings.redis_username is not None:
            options["username"] = settings.redis_username
        password = settings.resolved_redis_password()
        if password is not None:
            options["password"] = password
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = "required"
        if settings.redis_ca_file is not None:
            options["ssl_ca_certs"] = str(settings.redis_ca_file)
    return url, options


def make_redis(settings: Settings) -> RedisClient:
    url, options = redis_url_and_options(settings)
    if settings.redis_cluster:
        return RedisCluster.from_url(url, **options)
    return Redis.from_url(url, **options)


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, RedisCluster)


def configuration_problem(exc: BaseException) -> str | None:
    """What is wrong with the configuration when Redis refuses us for good (credentials, a
    database that does not exist, a user without the needed permission); None when the error
    may pass by itself (Redis not answering yet, loading, a failover)."""
    text = str(exc)
    code = error_code(exc)
    if (
        isinstance(exc, AuthenticationError | AuthenticationWrongNumberOfArgsError)
        or code in ("WRONGPASS", "NOAUTH")
        or text.startswith(("invalid password", "invalid username"))
    ):
        return (
            "Redis refused the credentials; check CONNECTOR_REDIS_USERNAME and "
            "CONNECTOR_REDIS_PASSWORD (or _FILE, or the URL's user:password)"
        )
    if "DB index is out of range" in text or "invalid DB index" in text:
        return "Redis has no such database; check the number at the end of CONNECTOR_REDIS_URL"
    if isinstance(exc, NoPermissionError) or code == "NOPERM":
        return (
            f"the Redis user may not run a command the connector needs ({text[:120]}); "
            "see docs/deploy.md, 'Redis access'"
        )
    return None
