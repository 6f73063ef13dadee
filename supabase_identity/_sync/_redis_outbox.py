# Generated from supabase_identity/_async/_redis_outbox.py by scripts/unasync: do not edit.
"""The durable events outbox in Redis: one source for the async and the blocking twin.

The key layout, the lock and the delivery protocol are described in the package's outbox module
(``supabase_identity._outbox``), which also holds what the twins share without I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._constants import OUTBOX_KEY_PREFIX, OUTBOX_LOCK_TTL_MS
from .._models import DeadLetter, OutboxEvent, OutboxStats
from .._outbox import DRAIN_CHUNK, RedisOutboxBase, dead_json, log
from .._redis import RedisClient, RedisConnector
from .._redis_keys import (
    OUTBOX_ACK_SCRIPT,
    OUTBOX_CLAIM_SCRIPT,
    OUTBOX_LOCK_SCRIPT,
    OUTBOX_RELEASE_SCRIPT,
)

__all__ = ["RedisOutbox"]


class RedisOutbox(RedisOutboxBase):
    """Durable outbox in Redis, shared by every process of a service.

    Usage::

        outbox = RedisOutbox(redis_client)  # e.g. Redis.from_url("redis://localhost:6379/0")
        client = IdentityClient(outbox=outbox)

    ``redis_client`` is a Redis client (one node or a cluster) of the same kind as the outbox
    (``redis.asyncio`` for the async twin, ``redis`` for the blocking one), or an
    :class:`RedisConnector` (built on first use). A client passed in is not closed by the
    outbox: whoever created it closes it.
    """

    def __init__(
        self,
        client: RedisClient | RedisConnector,
        *,
        key_prefix: str = OUTBOX_KEY_PREFIX,
        lock_ttl_ms: int = OUTBOX_LOCK_TTL_MS,
    ) -> None:
        super().__init__(key_prefix, lock_ttl_ms)
        self._source = client

    def redis(self) -> RedisClient:
        """The Redis client (built on first use when the outbox was given a connector).

        A method on both twins (the blocking one was a property before both were generated
        from one source): ``outbox.redis()``.
        """
        if isinstance(self._source, RedisConnector):
            return self._source.client()
        return self._source

    def close(self) -> None:
        """Close the client if the outbox built it (from a connector)."""
        if isinstance(self._source, RedisConnector):
            self._source.close()

    def _drain_legacy(self) -> None:
        """Move events left in the lists written before the hash tag (see ``_redis_keys``)."""
        if self._legacy_drained:
            return
        r = self.redis()
        for old, new in self._legacy:
            while items := r.lrange(old, 0, DRAIN_CHUNK - 1):
                r.rpush(new, *items)  # a crash here redelivers; ids deduplicate
                r.ltrim(old, len(items), -1)
        self._legacy_drained = True

    def push(self, events: Sequence[OutboxEvent]) -> None:
        """Append ``events`` to the pending list (raises ``redis.RedisError`` if Redis is down)."""
        if events:
            r = self.redis()
            r.rpush(self.pending_key, *(e.model_dump_json() for e in events))

    def try_lock(self) -> bool:
        """Take the flush lock (in this process and in Redis) without waiting."""
        if not self._local.acquire(blocking=False):
            return False
        try:
            r = self.redis()
            taken = r.set(self.lock_key, self._token, nx=True, px=self.lock_ttl_ms)
        except BaseException:
            self._local.release()
            raise
        if not taken:
            self._local.release()
        return bool(taken)

    def refresh_lock(self) -> bool:
        """Extend the lock; ``False`` if it expired and someone else may hold it."""
        r = self.redis()
        return bool(r.eval(OUTBOX_LOCK_SCRIPT, 1, self.lock_key, self._token, self.lock_ttl_ms))

    def unlock(self) -> None:
        """Release the lock if this outbox still owns it."""
        try:
            r = self.redis()
            r.eval(OUTBOX_LOCK_SCRIPT, 1, self.lock_key, self._token, 0)
        finally:
            self._local.release()

    def claim(self, max_items: int) -> list[OutboxEvent] | None:
        """Move the next batch to the processing list and return it; ``None`` if lock lost."""
        self._drain_legacy()
        keys = (self.pending_key, self.processing_key, self.lock_key)
        r = self.redis()
        raws = r.eval(OUTBOX_CLAIM_SCRIPT, 3, *keys, self._token, max_items)
        if raws is None:
            return None
        return self._parse_batch(raws)

    def ack(self, dead: Sequence[DeadLetter] = ()) -> None:
        """Delete the delivered batch and append its dead letters, atomically."""
        keys = (self.processing_key, self.dead_key, self.lock_key)
        r = self.redis()
        done = r.eval(OUTBOX_ACK_SCRIPT, 3, *keys, *self._ack_args(dead))
        if not done:
            log.warning("Lost the outbox flush lock before acknowledging; batch will be resent")

    def release(self) -> None:
        """Return the batch to the head of the pending list (delivery failed)."""
        keys = (self.pending_key, self.processing_key, self.lock_key)
        r = self.redis()
        r.eval(OUTBOX_RELEASE_SCRIPT, 3, *keys, self._token)

    def add_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        """Append dead letters produced outside a flush."""
        if dead:
            r = self.redis()
            r.rpush(self.dead_key, *(dead_json(d) for d in dead))

    def pending_count(self) -> int:
        """Events waiting, including a batch in processing."""
        pipe = (self.redis()).pipeline(transaction=False)
        pipe.llen(self.pending_key)
        pipe.llen(self.processing_key)
        pending, processing = pipe.execute()
        return int(pending) + int(processing)

    def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter kept, oldest first."""
        r = self.redis()
        return self._parse_dead(r.lrange(self.dead_key, 0, -1))

    def stats(self) -> OutboxStats:
        """Counts for monitoring."""
        pipe = (self.redis()).pipeline(transaction=False)
        for key in (self.pending_key, self.processing_key, self.dead_key):
            pipe.llen(key)
        pending, processing, dead = pipe.execute()
        return OutboxStats(
            backend="redis",
            pending=int(pending),
            in_flight=int(processing),
            dead_lettered=int(dead),
        )
