"""Redis connections for one node or a Redis Cluster, chosen from ``REDIS_URL``.

Usage::

    client = connect_redis("redis://10.0.0.5:6379/0")             # detects cluster mode
    client = connect_redis(url, cluster=True)                      # or REDIS_CLUSTER=true
    for keys in scan_pages(client, "conversation:*", count=1000):  # every primary of a cluster
        ...

``REDIS_URL`` may name a single Redis or any node of a cluster. Unless ``REDIS_CLUSTER`` (or the
``cluster`` argument) says which, one ``INFO cluster`` on the named node decides. The package
only uses commands that both topologies route by key: single-key commands, non-transactional
pipelines (a cluster pipeline splits itself by node) and scripts whose keys share one slot.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeAlias

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

__all__ = [
    "AsyncRedisClient",
    "RedisClient",
    "aconnect_redis",
    "as_int",
    "connect_redis",
    "hash_field",
    "is_cluster",
    "queue_script",
    "scan_pages",
    "text",
]

RedisClient: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"
AsyncRedisClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"


def _detect(url: str, options: dict[str, Any]) -> bool:
    probe = redis.Redis.from_url(url, **options)
    try:
        info = probe.info("cluster")
    finally:
        probe.close()
    return bool(info.get("cluster_enabled"))


def _cluster_url(url: str) -> str:
    """A cluster has one database: drop a ``/0`` path that ``RedisCluster`` would reject."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    if slash and path.split("?", 1)[0] not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0; REDIS_URL names another")
    query = path.split("?", 1)[1] if "?" in path else ""
    return f"{scheme}{sep}{host}" + (f"?{query}" if query else "")


def connect_redis(url: str, *, cluster: bool | None = None, **options: Any) -> RedisClient:
    """A ``redis.Redis`` or a ``RedisCluster`` for ``url`` (any node of a cluster will do).

    ``cluster=None`` asks the node (one ``INFO cluster``); ``options`` go to the client
    (timeouts, ``retry``, ``decode_responses``…).
    """
    if cluster is None:
        cluster = _detect(url, options)
    if cluster:
        return redis.cluster.RedisCluster.from_url(_cluster_url(url), **options)
    return redis.Redis.from_url(url, **options)


def aconnect_redis(url: str, *, cluster: bool | None = None, **options: Any) -> AsyncRedisClient:
    """The ``redis.asyncio`` twin of :func:`connect_redis`.

    Detection (``cluster=None``) is one blocking ``INFO`` at construction, before any event
    loop work; set ``REDIS_CLUSTER`` to skip it.
    """
    if cluster is None:
        sync_options = {k: v for k, v in options.items() if k != "retry"}
        cluster = _detect(url, sync_options)
    if cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(_cluster_url(url), **options)
    return redis.asyncio.Redis.from_url(url, **options)


def is_cluster(client: object) -> bool:
    """Whether ``client`` (sync or async) talks to a Redis Cluster."""
    return isinstance(client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster)


def text(value: bytes | str | None) -> str | None:
    """A Redis reply as text, whether the client decodes responses or not."""
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def queue_script(pipe: Any, script: str, key: str, *args: str | int | float) -> None:
    """Queue a one-key Lua script on a pipeline of either topology.

    Cluster pipelines refuse ``pipe.eval`` (EVAL is blocked there), but route an ``EVAL`` sent
    as a raw command by its key like any other command; plain pipelines take it the same way.
    """
    pipe.execute_command("EVAL", script, 1, key, *args)


def as_int(value: bytes | str | None) -> int | None:
    """A Redis reply as an integer; ``None`` when absent or not a number."""
    found = text(value)
    if found is None:
        return None
    try:
        return int(found)
    except ValueError:
        return None


def hash_field(source: Mapping[bytes | str, bytes | str], name: str) -> bytes | str | None:
    """A field of an ``HGETALL`` reply, whether the client decodes responses or not."""
    value = source.get(name)
    return value if value is not None else source.get(name.encode())


def scan_pages(client: RedisClient, match: str, *, count: int = 1000) -> Iterator[list[str]]:
    """``SCAN`` pages of the keys matching ``match``, on every primary of a cluster.

    A cursor walk (never ``KEYS``); a key may appear twice, as SCAN allows. Each page is what one
    SCAN call returned, so memory is bounded by ``count``.
    """
    nodes: list[redis.Redis]
    if isinstance(client, redis.cluster.RedisCluster):
        primaries = client.get_primaries()  # type: ignore[no-untyped-call]  # untyped upstream
        nodes = [client.get_redis_connection(node) for node in primaries]
    else:
        nodes = [client]
    for node in nodes:
        cursor = 0
        while True:
            cursor, keys = node.scan(cursor, match=match, count=count)
            if keys:
                yield [text(key) or "" for key in keys]
            if cursor == 0:
                break
