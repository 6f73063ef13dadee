"""The events outbox: where an event waits when the backend could not take it at once.

``log_user_event`` must never raise because Supabase is down, and must never lose the event. It
tries one delivery; if that fails, the event goes here, and ``flush_events()`` (called by the
service, the CLI or the archiver's loop) delivers it later in batches. Every event carries its
client-generated id, and ``identity.record_events`` inserts each id once, so delivering an event
twice (after a crash, or when an answer was lost) is harmless.

Two implementations:

* :class:`RedisOutbox` / :class:`AsyncRedisOutbox` (when ``REDIS_URL`` or a Redis client is
  configured) — durable across restarts and shared by every process of a service, on one
  Redis or a Redis Cluster (the keys share a hash tag, so each script stays in one slot)::

      {identity:outbox:events}             list, pending events (JSON), oldest first
      {identity:outbox:events}:processing  list, the batch being delivered right now
      {identity:outbox:events}:dead        list, dead letters (JSON: event, reason, time)
      {identity:outbox:events}:lock        flush lock (SET NX PX, owner token, refreshed)

  Events left in the lists named before the hash tag (``identity:outbox:events``,
  ``…:processing``, ``…:dead``) are moved into these on the first flush.

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

from ._constants import (
    DEFAULT_MEMORY_DEAD_LETTER_SIZE,
    DEFAULT_MEMORY_OUTBOX_SIZE,
)
from ._models import DeadLetter, OutboxEvent, OutboxStats
from ._redis_keys import (
    legacy_outbox_keys,
    outbox_keys,
)

__all__ = ["AsyncMemoryOutbox", "MemoryOutbox", "RedisOutboxBase", "make_dead_letter"]

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
# Key names and scripts live in _redis_keys (the outbox's keys share one hash tag, so its
# scripts run on a Redis Cluster too).

#: Entries moved per round trip when draining the lists written before the hash tag.
DRAIN_CHUNK = 500


def decode(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def dead_json(dead: DeadLetter) -> str:
    return dead.model_dump_json()


class RedisOutboxBase:
    """What the Redis outbox twins share without I/O: key names, the lock token, (de)serialization.

    The twins themselves (:class:`~supabase_identity.RedisOutbox` and
    :class:`~supabase_identity.AsyncRedisOutbox`) are written once, as async code, and the blocking
    one is generated from it.
    """

    backend: Literal["redis"] = "redis"

    def __init__(self, key_prefix: str, lock_ttl_ms: int) -> None:
        self.key_prefix = key_prefix
        self.pending_key, self.processing_key, self.dead_key, self.lock_key = outbox_keys(
            key_prefix
        )
        legacy_pending, legacy_processing = legacy_outbox_keys(key_prefix)
        #: (old list, new list) pairs drained before the first claim; the dead list is kept.
        self._legacy = [
            (legacy_processing, self.pending_key),
            (legacy_pending, self.pending_key),
            (legacy_pending + ":dead", self.dead_key),
        ]
        self._legacy_drained = False
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
            text = decode(raw)
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
        return [self._token, *(dead_json(d) for d in dead), *extra]

    @staticmethod
    def _parse_dead(raws: Sequence[bytes | str]) -> list[DeadLetter]:
        out: list[DeadLetter] = []
        for raw in raws:
            try:
                out.append(DeadLetter.model_validate_json(decode(raw)))
            except ValueError:
                continue  # raw unparseable entries stay in Redis for a human to look at
        return out
