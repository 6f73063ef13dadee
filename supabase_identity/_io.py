"""The few I/O primitives that differ between the async and the blocking code, side by side.

The clients are written once, as async code under ``_async/``; ``scripts/unasync`` writes their
blocking twins under ``_sync/`` by deleting ``async``/``await`` and renaming each async name to
its twin (``AsyncRedis`` → ``Redis``, ``asleep`` → ``sleep``, ``aclose`` → ``close``, …). What a
renaming cannot express lives here instead, written twice, each async primitive next to its
blocking twin, so the two can be compared in one glance (the habit of httpcore's
``_synchronization.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final, ParamSpec, TypeVar

import redis.asyncio.retry
import redis.retry
from redis.backoff import EqualJitterBackoff

from ._async._redis_outbox import AsyncRedisOutbox
from ._constants import REDIS_CONNECT_TIMEOUT, REDIS_RETRIES, REDIS_SOCKET_TIMEOUT
from ._outbox import AsyncMemoryOutbox, MemoryOutbox
from ._redis import AsyncRedisClient, AsyncRedisConnector, RedisClient, RedisConnector
from ._sync._redis_outbox import RedisOutbox

__all__ = [
    "AsyncOutbox",
    "AsyncRedisClient",
    "Outbox",
    "RedisClient",
    "ashield",
    "asleep",
    "async_memory_view",
    "async_redis_from_url",
    "memory_view",
    "redis_from_url",
    "shield",
    "sleep",
]

_T = TypeVar("_T")
_P = ParamSpec("_P")

#: Where a client keeps events it could not deliver at once.
AsyncOutbox = AsyncMemoryOutbox | AsyncRedisOutbox
Outbox = MemoryOutbox | RedisOutbox

#: Wait between retries: awaited (the event loop runs meanwhile) or blocking.
asleep: Final[Callable[[float], Awaitable[None]]] = asyncio.sleep
sleep: Final[Callable[[float], None]] = time.sleep


async def ashield(work: Callable[_P, Awaitable[_T]], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run ``work(*args, **kwargs)`` to its end even if the calling task is cancelled meanwhile."""
    return await asyncio.shield(work(*args, **kwargs))


def shield(work: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run ``work(*args, **kwargs)``: blocking code is not cancelled half-way."""
    return work(*args, **kwargs)


def async_memory_view(memory: MemoryOutbox) -> AsyncMemoryOutbox:
    """``memory`` as the awaitable outbox the async client calls (no I/O, no blocking)."""
    return AsyncMemoryOutbox(memory)


def memory_view(memory: MemoryOutbox) -> MemoryOutbox:
    """The blocking client calls ``memory`` itself."""
    return memory


def _backoff() -> EqualJitterBackoff:
    return EqualJitterBackoff(cap=0.5, base=0.05)


def _options(retry: object) -> dict[str, object]:
    return {
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
        "socket_timeout": REDIS_SOCKET_TIMEOUT,
        "retry": retry,
    }


def async_redis_from_url(url: str, cluster: bool | None) -> AsyncRedisConnector:
    """The outbox's ``redis.asyncio`` (one node or a cluster, found on first use; no I/O here)
    that fails fast (``REDIS_*`` in ``_constants``)."""
    return AsyncRedisConnector(
        url, cluster=cluster, **_options(redis.asyncio.retry.Retry(_backoff(), REDIS_RETRIES))
    )


def redis_from_url(url: str, cluster: bool | None) -> RedisConnector:
    """The blocking twin of :func:`async_redis_from_url`."""
    return RedisConnector(
        url, cluster=cluster, **_options(redis.retry.Retry(_backoff(), REDIS_RETRIES))
    )
