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

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeAlias

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.crc import key_slot

__all__ = [
    "AsyncRedisClient",
    "AsyncRedisConnector",
    "RedisClient",
    "RedisConnector",
    "as_int",
    "connect_redis",
    "hash_field",
    "is_cluster",
    "queue_script",
    "run_batch",
    "scan_pages",
    "script_command",
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


class RedisConnector:
    """A Redis client built on first use, its topology detected then (no I/O before that).

    Until one ``INFO cluster`` succeeds (``cluster=None``), :meth:`client` returns a
    single-node client and asks again next time, so a Redis that is down when a service starts
    is still recognised as a cluster once it answers.
    """

    def __init__(self, url: str, *, cluster: bool | None = None, **options: Any) -> None:
        self._url = url
        self._cluster = cluster
        self._options = options
        self._client: RedisClient | None = None
        self._single: redis.Redis | None = None
        self._mutex = threading.Lock()

    def client(self) -> RedisClient:
        with self._mutex:
            if self._client is not None:
                return self._client
            if self._cluster is True:
                self._client = connect_redis(self._url, cluster=True, **self._options)
                return self._client
            if self._single is None:
                self._single = redis.Redis.from_url(self._url, **self._options)
            if self._cluster is False:
                self._client = self._single
                return self._client
            try:
                info = self._single.info("cluster")
            except redis.ConnectionError:
                return self._single  # down: decide when it answers
            if info.get("cluster_enabled"):
                self._single.close()
                self._single = None
                self._client = connect_redis(self._url, cluster=True, **self._options)
            else:
                self._client = self._single
            return self._client

    def close(self) -> None:
        with self._mutex:
            for client in {id(c): c for c in (self._client, self._single) if c}.values():
                client.close()
            self._client = self._single = None


class AsyncRedisConnector:
    """The ``redis.asyncio`` twin of :class:`RedisConnector` (detection never blocks the loop)."""

    def __init__(self, url: str, *, cluster: bool | None = None, **options: Any) -> None:
        self._url = url
        self._cluster = cluster
        self._options = options
        self._client: AsyncRedisClient | None = None
        self._single: redis.asyncio.Redis | None = None

    async def client(self) -> AsyncRedisClient:
        if self._client is not None:
            return self._client
        if self._cluster is True:
            self._client = redis.asyncio.cluster.RedisCluster.from_url(
                _cluster_url(self._url), **self._options
            )
            return self._client
        if self._single is None:
            self._single = redis.asyncio.Redis.from_url(self._url, **self._options)
        if self._cluster is False:
            self._client = self._single
            return self._client
        try:
            info = await self._single.info("cluster")
        except redis.ConnectionError:
            return self._single
        if info.get("cluster_enabled"):
            await self._single.aclose()
            self._single = None
            self._client = redis.asyncio.cluster.RedisCluster.from_url(
                _cluster_url(self._url), **self._options
            )
        else:
            self._client = self._single
        return self._client

    async def aclose(self) -> None:
        for client in {id(c): c for c in (self._client, self._single) if c}.values():
            await client.aclose()
        self._client = self._single = None


def is_cluster(client: object) -> bool:
    """Whether ``client`` (sync or async) talks to a Redis Cluster."""
    return isinstance(client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster)


def text(value: bytes | str | None) -> str | None:
    """A Redis reply as text, whether the client decodes responses or not."""
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def script_command(script: str, key: str, *args: str | int | float) -> tuple[Any, ...]:
    """A one-key Lua script as a raw ``EVAL`` command, for a pipeline of either topology.

    Cluster pipelines refuse ``pipe.eval`` (EVAL is blocked there), but route an ``EVAL`` sent
    as a raw command by its key like any other command; plain pipelines take it the same way.
    """
    return ("EVAL", script, 1, key, *args)


def queue_script(pipe: Any, script: str, key: str, *args: str | int | float) -> None:
    """Queue a one-key Lua script on a pipeline of either topology (see :func:`script_command`)."""
    pipe.execute_command(*script_command(script, key, *args))


#: Replies that mean "ask another node" (a failover or a resharding under way).
_REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


def run_batch(client: RedisClient, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Run ``(NAME, key, *args)`` commands pipelined; replies in order, errors as values.

    One-key scripts go as ``("EVAL", script, 1, key, *args)`` (see :func:`script_command`).

    On one node: one pipeline. On a cluster: one plain pipeline per primary, grouped here by
    slot (redis-py's cluster pipeline routes each command through several layers, which costs
    more than the round trip for the thousands of small reads a page makes). Commands that meet
    a redirection or a node that is down are sent again through the cluster pipeline, which
    refreshes the topology and follows redirections.
    """
    if not isinstance(client, redis.cluster.RedisCluster):
        single = client.pipeline(transaction=False)
        for command in commands:
            single.execute_command(*command)  # type: ignore[no-untyped-call]  # untyped upstream
        return list(single.execute(raise_on_error=False))
    slots = client.nodes_manager.slots_cache
    groups: dict[str, list[int]] = {}
    nodes: dict[str, Any] = {}
    for index, command in enumerate(commands):
        key = command[3] if command[0] == "EVAL" else command[1]  # EVAL script 1 key …
        owners = slots.get(key_slot(key.encode() if isinstance(key, str) else key))
        node = owners[0] if owners else client.get_default_node()  # type: ignore[no-untyped-call]
        groups.setdefault(node.name, []).append(index)
        nodes[node.name] = node
    results: list[Any] = [None] * len(commands)
    again: list[int] = []
    for name, indexes in groups.items():
        pipe = client.get_redis_connection(nodes[name]).pipeline(transaction=False)
        for index in indexes:
            pipe.execute_command(*commands[index])  # type: ignore[no-untyped-call]
        try:
            replies = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError):
            again.extend(indexes)
            continue
        for index, reply in zip(indexes, replies, strict=True):
            if isinstance(reply, redis.ResponseError) and str(reply).startswith(_REDIRECTS):
                again.append(index)
            else:
                results[index] = reply
    if again:
        cluster_pipe = client.pipeline(transaction=False)  # type: ignore[no-untyped-call]
        for index in again:
            cluster_pipe.execute_command(*commands[index])
        replies = cluster_pipe.execute(raise_on_error=False)
        for index, reply in zip(again, replies, strict=True):
            results[index] = reply
    return results


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
