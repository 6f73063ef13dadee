"""The durable events outbox in Redis: one source for the async and the blocking twin.

The key layout, the lock and the delivery protocol are described in the package's outbox module
(``supabase_identity._outbox``), which also holds what the twins share without I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._constants import OUTBOX_KEY_PREFIX, OUTBOX_LOCK_TTL_MS
from .._models import DeadLetter, OutboxEvent, OutboxStats
from .._outbox import DRAIN_CHUNK, RedisOutboxBase, dead_json, log
from .._redis import AsyncRedisClient, AsyncRedisConnector
from .._redis_keys import (
    OUTBOX_ACK_SCRIPT,
    OUTBOX_CLAIM_SCRIPT,
    OUTBOX_LOCK_SCRIPT,
    OUTBOX_RELEASE_SCRIPT,
)

__all__ = ["AsyncRedisOutbox"]


class AsyncRedisOutbox(RedisOutboxBase):
    """Durable outbox in Redis, shared by every process of a service.

    Usage::

        outbox = AsyncRedisOutbox(redis_client)  # e.g. Redis.from_url("redis://localhost:6379/0")
        client = AsyncIdentityClient(outbox=outbox)

    ``redis_client`` is a Redis client (one node or a cluster) of the same kind as the outbox
    (``redis.asyncio`` for the async twin, ``redis`` for the blocking one), or an
    :class:`AsyncRedisConnector` (built on first use). A client passed in is not closed by the
    outbox: whoever created it closes it.
    """

    def __init__(
        self,
        client: AsyncRedisClient | AsyncRedisConnector,
        *,
        key_prefix: str = OUTBOX_KEY_PREFIX,
        lock_ttl_ms: int = OUTBOX_LOCK_TTL_MS,
    ) -> None:
        super().__init__(key_prefix, lock_ttl_ms)
        self._source = client

    async def redis(self) -> AsyncRedisClient:
        """The Redis client (built on first use when the outbox was given a connector).

        A method on both twins (the blocking one was a property before both were generated
        from one source): ``outbox.redis()``.
        """
        if isinstance(self._source, AsyncRedisConnector):
            return await self._source.client()
        return self._source

    async def aclose(self) -> None:
        """Close the client if the outbox built it (from a connector)."""
        if isinstance(self._source, AsyncRedisConnector):
            await self._source.aclose()

    async def _drain_legacy(self) -> None:
        """Move events left in the lists written before the hash tag (see ``_redis_keys``)."""
        if self._legacy_drained:
            return
        r = await self.redis()
        for old, new in self._legacy:
            while items := await r.lrange(old, 0, DRAIN_CHUNK - 1):
                await r.rpush(new, *items)  # a crash here redelivers; ids deduplicate
                await r.ltrim(old, len(items), -1)
        self._legacy_drained = True

    async def push(self, events: Sequence[OutboxEvent]) -> None:
        """Append ``events`` to the pending list (raises ``redis.RedisError`` if Redis is down)."""
        if events:
            r = await self.redis()
            await r.rpush(self.pending_key, *(e.model_dump_json() for e in events))

    async def try_lock(self) -> bool:
        """Take the flush lock (in this process and in Redis) without waiting."""
        if not self._local.acquire(blocking=False):
            return False
        try:
            r = await self.redis()
            taken = await r.set(self.lock_key, self._token, nx=True, px=self.lock_ttl_ms)
        except BaseException:
            self._local.release()
            raise
        if not taken:
            self._local.release()
        return bool(taken)

    async def refresh_lock(self) -> bool:
        """Extend the lock; ``False`` if it expired and someone else may hold it."""
        r = await self.redis()
        return bool(
            await r.eval(OUTBOX_LOCK_SCRIPT, 1, self.lock_key, self._token, self.lock_ttl_ms)
        )

    async def unlock(self) -> None:
        """Release the lock if this outbox still owns it."""
        try:
            r = await self.redis()
            await r.eval(OUTBOX_LOCK_SCRIPT, 1, self.lock_key, self._token, 0)
        finally:
            self._local.release()

    async def claim(self, max_items: int) -> list[OutboxEvent] | None:
        """Move the next batch to the processing list and return it; ``None`` if lock lost."""
        await self._drain_legacy()
        keys = (self.pending_key, self.processing_key, self.lock_key)
        r = await self.redis()
        raws = await r.eval(OUTBOX_CLAIM_SCRIPT, 3, *keys, self._token, max_items)
        if raws is None:
            return None
        return self._parse_batch(raws)

    async def ack(self, dead: Sequence[DeadLetter] = ()) -> None:
        """Delete the delivered batch and append its dead letters, atomically."""
        keys = (self.processing_key, self.dead_key, self.lock_key)
        r = await self.redis()
        done = await r.eval(OUTBOX_ACK_SCRIPT, 3, *keys, *self._ack_args(dead))
        if not done:
            log.warning("Lost the outbox flush lock before acknowledging; batch will be resent")

    async def release(self) -> None:
        """Return the batch to the head of the pending list (delivery failed)."""
        keys = (self.pending_key, self.processing_key, self.lock_key)
        r = await self.redis()
        await r.eval(OUTBOX_RELEASE_SCRIPT, 3, *keys, self._token)

    async def add_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        """Append dead letters produced outside a flush."""
        if dead:
            r = await self.redis()
            await r.rpush(self.dead_key, *(dead_json(d) for d in dead))

    async def pending_count(self) -> int:
        """Events waiting, including a batch in processing."""
        pipe = (await self.redis()).pipeline(transaction=False)
        pipe.llen(self.pending_key)
        pipe.llen(self.processing_key)
        pending, processing = await pipe.execute()
        return int(pending) + int(processing)

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter kept, oldest first."""
        r = await self.redis()
        return self._parse_dead(await r.lrange(self.dead_key, 0, -1))

    async def stats(self) -> OutboxStats:
        """Counts for monitoring."""
        pipe = (await self.redis()).pipeline(transaction=False)
        for key in (self.pending_key, self.processing_key, self.dead_key):
            pipe.llen(key)
        pending, processing, dead = await pipe.execute()
        return OutboxStats(
            backend="redis",
            pending=int(pending),
            in_flight=int(processing),
            dead_lettered=int(dead),
        )
