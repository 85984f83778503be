"""The Redis client as the connector needs it: bounded timeouts, short retries, TLS, ACL auth, and
a cluster client when ``CONNECTOR_REDIS_CLUSTER`` is set.

redis-py retries a failed command (and re-sends whole pipelines) on its own. That is safe for our
writes (explicit entry ids make them idempotent, see :mod:`connector.writer`), but its default
patience would hide an outage for seconds; the publisher has its own backoff, so keep this short.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from connector.config import Settings

# What the connector and the consumer toolkit accept: a single node or a cluster.
RedisClient = Redis | RedisCluster


def redis_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``from_url`` derived from the settings."""
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        "decode_responses": False,
    }
    if not settings.redis_cluster:
        options["health_check_interval"] = 10
    if settings.redis_username is not None:
        options["username"] = settings.redis_username
    password = settings.resolved_redis_password()
    if password is not None:
        options["password"] = password
    if settings.redis_url.startswith("rediss://"):
        options["ssl_cert_reqs"] = "required"
        if settings.redis_ca_file is not None:
            options["ssl_ca_certs"] = str(settings.redis_ca_file)
    return options


def make_redis(settings: Settings) -> RedisClient:
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, **redis_options(settings))
    return Redis.from_url(settings.redis_url, **redis_options(settings))


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, RedisCluster)
