"""The events outbox: where an event waits when the backend could not take it at once.

``log_user_event`` must never raise because Supabase is down, and must never lose the event. It
tries one delivery; if that fails, the event goes here, and ``flush_events()`` (called by the
service, the CLI or the archiver's loop) delivers it later in batches. Every event carries its
client-generated id, and ``identity.record_events`` inserts each id once, so delivering an event
twice (after a crash, or when an answer was lost) is harmless.

Two implementations:

* :class:`RedisOutbox` / :class:`AsyncRedisOutbox` (when ``REDIS_URL`` or a Redis client is
  configured) — durable across restarts and shared by every process of a service. Keys::

      identity:outbox:events             list, pending events (JSON), oldest first
      identity:outbox:events:processing  list, the batch being delivered right now
      identity:outbox:events:dead        list, dead letters (JSON: event, reason, time)
      identity:outbox:events:lock        flush lock (SET NX PX, owner token, refreshed)

  A flusher holds the lock, moves a batch from pending to processing atomically (Lua), delivers
  it, then deletes it from processing (Lua, still holding the lock). A flusher that crashes
  leaves its batch in processing; the next lock holder delivers that batch first. Nothing is
  lost between the two lists; the worst case is a redelivery, which the database deduplicates.

* :class:`MemoryOutbox` — a bounded in-process buffer used when no Redis is configured. It warns
  once when it is first used (events in it die with the process). When it is full it keeps the
  *newest* events: the oldest are dropped, each drop is logged as an error and counted in
  ``stats().dropped``. Raising instead would break the "never raises" contract of
  ``log_user_event``, and blocking would stall request handlers while the backend is down.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

import redis
import redis.asyncio

from ._constants import (
    DEFAULT_MEMORY_DEAD_LETTER_SIZE,
    DEFAULT_MEMORY_OUTBOX_SIZE,
    OUTBOX_KEY_PREFIX,
    OUTBOX_LOCK_TTL_MS,
)
from ._models import DeadLetter, OutboxEvent, OutboxStats

__all__ = ["AsyncRedisOutbox", "MemoryOutbox", "RedisOutbox"]

log = logging.getLogger("supabase_identity")


def make_dead_letter(event: OutboxEvent, reason: str) -> DeadLetter:
    """A dead letter for ``event`` stamped now."""
    return DeadLetter(event=event, reason=reason, dead_lettered_at=datetime.now(UTC))


class MemoryOutbox:
    """Bounded, thread-safe in-process outbox (see the module docstring for its trade-offs).

    Usage::

        outbox = MemoryOutbox(max_events=10_000)
        client = IdentityClient(outbox=outbox)

    Args:
        max_events: most events kept waiting; beyond it the oldest are dropped (logged, counted).
        max_dead_letters: most dead letters kept; beyond it the oldest are dropped (logged).
    """

    backend: Literal["memory"] = "memory"

    def __init__(
        self,
        *,
        max_events: int = DEFAULT_MEMORY_OUTBOX_SIZE,
        max_dead_letters: int = DEFAULT_MEMORY_DEAD_LETTER_SIZE,
    ) -> None:
        if max_events < 1 or max_dead_letters < 1:
            raise ValueError("max_events and max_dead_letters must be at least 1")
        self.max_events = max_events
        self.max_dead_letters = max_dead_letters
        self._pending: collections.deque[OutboxEvent] = collections.deque()
        self._in_flight: list[OutboxEvent] = []
        self._dead: collections.deque[DeadLetter] = collections.deque()
        self._dropped = 0
        self._warned = False
        self._mutex = threading.Lock()
        self._flush_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryOutbox(pending={len(self._pending)}, max_events={self.max_events})"

    def push(self, events: Sequence[OutboxEvent]) -> None:
        """Queue ``events`` for a later flush; never raises, never blocks."""
        with self._mutex:
            if not self._warned:
                self._warned = True
                log.warning(
                    "Buffering undelivered events in process memory (no Redis outbox "
                    "configured): they are lost if this process exits before flush_events() "
                    "delivers them. Set REDIS_URL for a durable outbox."
                )
            self._pending.extend(events)
            overflow = len(self._pending) - self.max_events
            for _ in range(max(overflow, 0)):
                lost = self._pending.popleft()
                self._dropped += 1
                log.error(
                    "In-memory events outbox is full (%d events): dropped the oldest event "
                    "%s (%s for %s); %d events lost so far",
                    self.max_events,
                    lost.id,
                    lost.event_type,
                    lost.user_id,
                    self._dropped,
                )

    def try_lock(self) -> bool:
        """Take the flush lock without waiting; ``False`` if another flush is running."""
        return self._flush_lock.acquire(blocking=False)

    def refresh_lock(self) -> bool:
        """Nothing to refresh in process; always ``True``."""
        return True

    def unlock(self) -> None:
        """Release the flush lock."""
        self._flush_lock.release()

    def claim(self, max_items: int) -> list[OutboxEvent] | None:
        """Move up to ``max_items`` oldest events in flight and return them (caller holds lock)."""
        with self._mutex:
            if not self._in_flight:
                count = min(max_items, len(self._pending))
                self._in_flight = [self._pending.popleft() for _ in range(count)]
            return list(self._in_flight)

    def ack(self, dead: Sequence[DeadLetter] = ()) -> None:
        """Forget the in-flight batch (delivered) and keep its permanent failures."""
        with self._mutex:
            self._in_flight = []
            self._add_dead(dead)

    def release(self) -> None:
        """Put the in-flight batch back at the head of the queue, in order (delivery failed)."""
        with self._mutex:
            self._pending.extendleft(reversed(self._in_flight))
            self._in_flight = []

    def add_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        """Keep dead letters produced outside a flush (the immediate delivery attempt)."""
        with self._mutex:
            self._add_dead(dead)

    def _add_dead(self, dead: Sequence[DeadLetter]) -> None:
        self._dead.extend(dead)
        while len(self._dead) > self.max_dead_letters:
            lost = self._dead.popleft()
            log.error("In-memory dead-letter list is full: forgot dead letter %s", lost.event.id)

    def pending_count(self) -> int:
        """Events waiting, including an in-flight batch."""
        with self._mutex:
            return len(self._pending) + len(self._in_flight)

    def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter kept, oldest first."""
        with self._mutex:
            return list(self._dead)

    def stats(self) -> OutboxStats:
        """Counts for monitoring."""
        with self._mutex:
            return OutboxStats(
                backend="memory",
                pending=len(self._pending),
                in_flight=len(self._in_flight),
                dead_lettered=len(self._dead),
                dropped=self._dropped,
            )


class AsyncMemoryOutbox:
    """Awaitable facade over a :class:`MemoryOutbox` for the async client (no I/O, no blocking)."""

    backend: Literal["memory"] = "memory"

    def __init__(self, inner: MemoryOutbox) -> None:
        self.inner = inner

    async def push(self, events: Sequence[OutboxEvent]) -> None:
        self.inner.push(events)

    async def try_lock(self) -> bool:
        return self.inner.try_lock()

    async def refresh_lock(self) -> bool:
        return True

    async def unlock(self) -> None:
        self.inner.unlock()

    async def claim(self, max_items: int) -> list[OutboxEvent] | None:
        return self.inner.claim(max_items)

    async def ack(self, dead: Sequence[DeadLetter] = ()) -> None:
        self.inner.ack(dead)

    async def release(self) -> None:
        self.inner.release()

    async def add_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        self.inner.add_dead_letters(dead)

    async def pending_count(self) -> int:
        return self.inner.pending_count()

    async def dead_letters(self) -> list[DeadLetter]:
        return self.inner.dead_letters()

    async def stats(self) -> OutboxStats:
        return self.inner.stats()


# --- Redis ------------------------------------------------------------------------------------

# KEYS: pending, processing, lock. ARGV: token, n. Returns the batch (an unfinished batch left
# by a crashed flusher first), or false when the caller no longer holds the lock.
_CLAIM_LUA = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return false end
local inflight = redis.call('LRANGE', KEYS[2], 0, -1)
if #inflight > 0 then return inflight end
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
if #items > 0 then
  redis.call('LTRIM', KEYS[1], #items, -1)
  redis.call('RPUSH', KEYS[2], unpack(items))
end
return items
"""

# KEYS: processing, dead, lock. ARGV: token, dead letters... Deletes the delivered batch.
_ACK_LUA = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if #ARGV > 1 then redis.call('RPUSH', KEYS[2], unpack(ARGV, 2)) end
return 1
"""

# KEYS: pending, processing, lock. ARGV: token. Puts the batch back at the head, in order.
_RELEASE_LUA = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
local items = redis.call('LRANGE', KEYS[2], 0, -1)
for i = #items, 1, -1 do redis.call('LPUSH', KEYS[1], items[i]) end
redis.call('DEL', KEYS[2])
return #items
"""

# KEYS: lock. ARGV: token, ttl_ms (ttl_ms = 0 deletes). Only the owner may extend or release.
_LOCK_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) == 0 then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""


def _decode(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _dead_json(dead: DeadLetter) -> str:
    return dead.model_dump_json()


class _RedisKeys:
    """Key names and (de)serialization shared by the sync and async Redis outboxes."""

    backend: Literal["redis"] = "redis"

    def __init__(self, key_prefix: str, lock_ttl_ms: int) -> None:
        self.key_prefix = key_prefix
        self.pending_key = key_prefix
        self.processing_key = f"{key_prefix}:processing"
        self.dead_key = f"{key_prefix}:dead"
        self.lock_key = f"{key_prefix}:lock"
        self.lock_ttl_ms = lock_ttl_ms
        self._token = uuid.uuid4().hex
        self._local = threading.Lock()
        self._unparseable: list[str] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_prefix={self.key_prefix!r})"

    def _parse_batch(self, raws: Sequence[bytes | str]) -> list[OutboxEvent]:
        events: list[OutboxEvent] = []
        self._unparseable = []
        for raw in raws:
            text = _decode(raw)
            try:
                events.append(OutboxEvent.model_validate_json(text))
            except ValueError as err:
                log.error("Unparseable entry in the events outbox moved to dead letters: %s", err)
                self._unparseable.append(text)
        return events

    def _ack_args(self, dead: Sequence[DeadLetter]) -> list[str]:
        now = datetime.now(UTC).isoformat()
        extra = [
            json.dumps({"raw": raw, "reason": "unparseable outbox entry", "dead_lettered_at": now})
            for raw in self._unparseable
        ]
        self._unparseable = []
        return [self._token, *(_dead_json(d) for d in dead), *extra]

    @staticmethod
    def _parse_dead(raws: Sequence[bytes | str]) -> list[DeadLetter]:
        out: list[DeadLetter] = []
        for raw in raws:
            try:
                out.append(DeadLetter.model_validate_json(_decode(raw)))
            except ValueError:
                continue  # raw unparseable entries stay in Redis for a human to look at
        return out


class RedisOutbox(_RedisKeys):
    """Durable outbox in Redis (sync client). See the module docstring for the key layout.

    Usage::

        outbox = RedisOutbox(redis.Redis.from_url("redis://localhost:6379/0"))
        client = IdentityClient(outbox=outbox)

    The Redis client is not closed by the outbox: whoever created it closes it.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        key_prefix: str = OUTBOX_KEY_PREFIX,
        lock_ttl_ms: int = OUTBOX_LOCK_TTL_MS,
    ) -> None:
        super().__init__(key_prefix, lock_ttl_ms)
        self.redis = client
        self._claim = client.register_script(_CLAIM_LUA)
        self._ack = client.register_script(_ACK_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._lock = client.register_script(_LOCK_LUA)

    def push(self, events: Sequence[OutboxEvent]) -> None:
        """Append ``events`` to the pending list (raises ``redis.RedisError`` if Redis is down)."""
        if events:
            self.redis.rpush(self.pending_key, *(e.model_dump_json() for e in events))

    def try_lock(self) -> bool:
        """Take the flush lock (in this process and in Redis) without waiting."""
        if not self._local.acquire(blocking=False):
            return False
        try:
            taken = self.redis.set(self.lock_key, self._token, nx=True, px=self.lock_ttl_ms)
        except BaseException:
            self._local.release()
            raise
        if not taken:
            self._local.release()
        return bool(taken)

    def refresh_lock(self) -> bool:
        """Extend the lock; ``False`` if it expired and someone else may hold it."""
        return bool(self._lock(keys=[self.lock_key], args=[self._token, self.lock_ttl_ms]))

    def unlock(self) -> None:
        """Release the lock if this outbox still owns it."""
        try:
            self._lock(keys=[self.lock_key], args=[self._token, 0])
        finally:
            self._local.release()

    def claim(self, max_items: int) -> list[OutboxEvent] | None:
        """Move the next batch to the processing list and return it; ``None`` if lock lost."""
        raws = self._claim(
            keys=[self.pending_key, self.processing_key, self.lock_key],
            args=[self._token, max_items],
        )
        if raws is None:
            return None
        return self._parse_batch(raws)

    def ack(self, dead: Sequence[DeadLetter] = ()) -> None:
        """Delete the delivered batch and append its dead letters, atomically."""
        done = self._ack(
            keys=[self.processing_key, self.dead_key, self.lock_key], args=self._ack_args(dead)
        )
        if not done:
            log.warning("Lost the outbox flush lock before acknowledging; batch will be resent")

    def release(self) -> None:
        """Return the batch to the head of the pending list (delivery failed)."""
        self._release(
            keys=[self.pending_key, self.processing_key, self.lock_key], args=[self._token]
        )

    def add_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        """Append dead letters produced outside a flush."""
        if dead:
            self.redis.rpush(self.dead_key, *(_dead_json(d) for d in dead))

    def pending_count(self) -> int:
        """Events waiting, including a batch in processing."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.pending_key)
        pipe.llen(self.processing_key)
        pending, processing = pipe.execute()
        return int(pending) + int(processing)

    def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter kept, oldest first."""
        return self._parse_dead(self.redis.lrange(self.dead_key, 0, -1))

    def stats(self) -> OutboxStats:
        """Counts for monitoring."""
        pipe = self.redis.pipeline(transaction=False)
        for key in (self.pending_key, self.processing_key, self.dead_key):
            pipe.llen(key)
        pending, processing, dead = pipe.execute()
        return OutboxStats(
            backend="redis",
            pending=int(pending),
            in_flight=int(processing),
            dead_lettered=int(dead),
        )


class AsyncRedisOutbox(_RedisKeys):
    """Durable outbox in Redis for the async client (``redis.asyncio``; never blocks the loop)."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        key_prefix: str = OUTBOX_KEY_PREFIX,
        lock_ttl_ms: int = OUTBOX_LOCK_TTL_MS,
    ) -> None:
        super().__init__(key_prefix, lock_ttl_ms)
        self.redis = client
        self._claim = client.register_script(_CLAIM_LUA)
        self._ack = client.register_script(_ACK_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._lock = client.register_script(_LOCK_LUA)

    async def push(self, events: Sequence[OutboxEvent]) -> None:
        if events:
            await self.redis.rpush(self.pending_key, *(e.model_dump_json() for e in events))

    async def try_lock(self) -> bool:
        if not self._local.acquire(blocking=False):
            return False
        try:
            taken = await self.redis.set(self.lock_key, self._token, nx=True, px=self.lock_ttl_ms)
        except BaseException:
            self._local.release()
            raise
        if not taken:
            self._local.release()
        return bool(taken)

    async def refresh_lock(self) -> bool:
        return bool(await self._lock(keys=[self.lock_key], args=[self._token, self.lock_ttl_ms]))

    async def unlock(self) -> None:
        try:
            await self._lock(keys=[self.lock_key], args=[self._token, 0])
        finally:
            self._local.release()

    async def claim(self, max_items: int) -> list[OutboxEvent] | None:
        raws = await self._claim(
            keys=[self.pending_key, self.processing_key, self.lock_key],
            args=[self._token, max_items],
        )
        if raws is None:
            return None
        return self._parse_batch(raws)

    async def ack(self, dead: Sequence[DeadLetter] = ()) -> None:
        done = await self._ack(
            keys=[self.processing_key, self.dead_key, self.lock_key], args=self._ack_args(dead)
        )
        if not done:
            log.warning("Lost the outbox flush lock before acknowledging; batch will be resent")

    async def release(self) -> None:
        await self._release(
            keys=[self.pending_key, self.processing_key, self.lock_key], args=[self._token]
        )

    async def add_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        if dead:
            await self.redis.rpush(self.dead_key, *(_dead_json(d) for d in dead))

    async def pending_count(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.pending_key)
        pipe.llen(self.processing_key)
        pending, processing = await pipe.execute()
        return int(pending) + int(processing)

    async def dead_letters(self) -> list[DeadLetter]:
        return self._parse_dead(await self.redis.lrange(self.dead_key, 0, -1))

    async def stats(self) -> OutboxStats:
        pipe = self.redis.pipeline(transaction=False)
        for key in (self.pending_key, self.processing_key, self.dead_key):
            pipe.llen(key)
        pending, processing, dead = await pipe.execute()
        return OutboxStats(
            backend="redis",
            pending=int(pending),
            in_flight=int(processing),
            dead_lettered=int(dead),
        )
