"""Pydantic models for what the package returns and what the outbox stores.

Models are frozen (results are values, not handles) and ignore unknown fields, so a newer schema
that adds a column does not break an older client.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationInfo, field_validator

__all__ = [
    "AnalyzeResult",
    "ArchivalStats",
    "ArchiverStats",
    "Conversation",
    "ConversationPage",
    "ConversationSummary",
    "DailyCount",
    "DeadLetter",
    "EventsMoveResult",
    "FlushResult",
    "HourlyCount",
    "IdentityStats",
    "IndexStorage",
    "OutboxEvent",
    "OutboxStats",
    "RedisRedaction",
    "RemovedConversation",
    "SearchHit",
    "SearchPage",
    "ShopRedaction",
    "StorageStats",
    "TableStorage",
    "UnlinkedCleanupResult",
    "UserGrowthStats",
    "UserProfile",
    "UserStats",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class UserStats(_Model):
    """Conversation and event counts for one user, computed by ``identity.get_user_profile``."""

    total_conversations: int = 0
    total_messages: int = 0
    first_conversation: datetime | None = None
    last_conversation: datetime | None = None
    total_events: int = 0


class UserProfile(_Model):
    """A user (one Shopify shop) with its stats, as returned by ``get_user_profile``."""

    user_id: str
    shop_domain: str
    shopify_id: str | None = None
    email: str | None = None
    name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    last_seen: datetime
    stats: UserStats = Field(default_factory=UserStats)


class ConversationSummary(_Model):
    """One archived conversation without its messages (what a history list shows)."""

    id: uuid.UUID
    source_id: str | None = None
    """The agents service's own id when it was not a UUID (``id`` is then derived from it)."""
    user_id: str | None = Field(default=None, validate_default=True)
    """Filled from the validation context when the row omits it (a user's list filters on it)."""
    merchant_id: str | None = None
    workflow_name: str | None = None
    started_at: datetime
    ended_at: datetime | None = None
    message_count: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    archived_at: datetime | None = None

    @field_validator("user_id", mode="before")
    @classmethod
    def _user_id_from_context(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and isinstance(info.context, dict):
            return info.context.get("user_id")
        return value

    @property
    def conversation_id(self) -> str:
        """The id the agents service knows: ``source_id`` if set, else the UUID as text."""
        return self.source_id if self.source_id is not None else str(self.id)


class Conversation(ConversationSummary):
    """One archived conversation with its messages, oldest first."""

    messages: list[dict[str, Any]] = Field(default_factory=list)


#: A history page's rows, validated from the response bytes in one call.
SUMMARY_LIST: TypeAdapter[list[ConversationSummary]] = TypeAdapter(list[ConversationSummary])


class ConversationPage(_Model):
    """A page of a user's conversations, newest first.

    ``total`` is the number of conversations the user has (from PostgREST's ``Content-Range``)
    on offset pages, and ``None`` on keyset pages (counting every row would defeat the point of
    keyset paging). ``next_cursor`` continues after the last item with a keyset query; it is
    ``None`` when this page is the last.
    """

    items: list[ConversationSummary]
    total: int | None
    limit: int
    offset: int = 0
    next_cursor: str | None = None

    @property
    def has_more(self) -> bool:
        """Whether another page exists after this one."""
        return self.next_cursor is not None


class SearchHit(ConversationSummary):
    """A conversation a search found: the history list's fields plus ``rank`` and ``snippet``.

    ``snippet`` is a short excerpt of the first matching message, HTML-escaped, the matched
    words wrapped in ``<mark>…</mark>`` (safe to insert into a page as HTML). ``rank`` is the
    relevance (``ts_rank``, message contents weighted over the workflow name, normalized by
    length): higher is more relevant, comparable only within one search.
    """

    rank: float
    snippet: str | None = None


class SearchPage(_Model):
    """A page of search hits, most relevant first (ties: newest first).

    ``total`` counts every conversation the query matches that the caller may see; a query of
    stop words only matches nothing (an empty page, ``total == 0``).
    """

    items: list[SearchHit]
    total: int
    limit: int
    offset: int = 0

    @property
    def has_more(self) -> bool:
        """Whether another page of hits exists after this one."""
        return self.offset + len(self.items) < self.total


class SearchAnswer(_Model):
    """What ``identity.search_conversations`` returns (parsed in one call from its bytes)."""

    conversations: list[SearchHit]
    total: int
    limit: int
    offset: int


class OutboxEvent(_Model):
    """An event as queued in the outbox and sent to ``identity.record_events``.

    ``id`` is generated by the client once, when the event is logged, and reused by every
    delivery attempt: the database inserts each id once, so redelivery is harmless.
    """

    id: uuid.UUID
    user_id: str
    event_type: str
    event_data: dict[str, Any]
    created_at: datetime

    def to_wire(self) -> dict[str, Any]:
        """The JSON object ``record_events`` expects for this event."""
        return {
            "id": str(self.id),
            "user_id": self.user_id,
            "event_type": self.event_type,
            "event_data": self.event_data,
            "created_at": self.created_at.isoformat(),
        }


class DeadLetter(_Model):
    """An event that can never be delivered (e.g. its user does not exist), kept for inspection."""

    event: OutboxEvent
    reason: str
    dead_lettered_at: datetime


class FlushResult(_Model):
    """What one ``flush_events()`` call achieved.

    ``delivered`` counts events the database inserted now; ``duplicates`` events it already had
    (a previous delivery whose answer was lost); ``dead_lettered`` permanent failures moved to the
    dead-letter list; ``remaining`` events still waiting (the backend failed, or another process
    holds the flush lock). ``error`` describes why delivery stopped early, if it did.
    """

    delivered: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    remaining: int = 0
    error: str | None = None


class OutboxStats(_Model):
    """A snapshot of the outbox, for health checks and metrics."""

    backend: Literal["redis", "memory"]
    pending: int
    in_flight: int
    dead_lettered: int
    dropped: int = 0
    """Events lost because the bounded in-memory buffer was full (always 0 for Redis)."""


# --- compliance: shop redaction ----------------------------------------------------------------


class RedisRedaction(_Model):
    """What a shop redaction deleted from Redis (counts only)."""

    merchant_records: int = 0
    """``merchant:<shop>`` keys (0 or 1)."""
    conversations: int = 0
    """Live conversations that had a ``conversation:`` or ``session:`` key."""
    messages: int = 0
    """``message:<id>:<seq>`` keys."""
    keys: int = 0
    """Every key deleted, messages and the merchant record included."""
    outbox_entries: int = 0
    """Events of the shop's user removed from the outbox (pending or in flight)."""
    dead_letters: int = 0
    """Dead letters of the shop's user removed."""

    def __add__(self, other: RedisRedaction) -> RedisRedaction:
        return RedisRedaction(
            **{name: getattr(self, name) + getattr(other, name) for name in type(self).model_fields}
        )


class ShopRedaction(_Model):
    """What ``redact_shop`` deleted: database rows per table, and what Redis held.

    Every field is 0 when the shop was already gone: a redaction can be repeated safely.
    """

    users: int = 0
    conversations: int = 0
    """Archived conversations (the live ones are in ``redis``)."""
    events: int = 0
    events_archive: int = 0
    redis: RedisRedaction | None = None
    """``None`` when no Redis was given or configured (nothing there was touched)."""


# --- operations: stats and maintenance ------------------------------------------------------


class HourlyCount(_Model):
    """One hour of a per-hour series (``hour`` is the start of the UTC hour)."""

    hour: datetime
    count: int


class DailyCount(_Model):
    """One day of a per-day series (a UTC calendar day)."""

    day: date
    count: int


class ArchivalStats(_Model):
    """Archival health over the 24 hours up to ``IdentityStats.as_of``.

    A conversation counts once, in the hour of its latest archive. Latency runs from
    ``ended_at`` to ``archived_at`` or, for a conversation that did not end, from the expiry the
    archiver recorded when the archive came after it; ``latency_samples`` says how many
    conversations had either. ``before_expiry_*`` are how long before that recorded expiry each
    conversation was archived (average, and the closest call; negative: archived after it),
    over the ``expiry_samples`` conversations that carry one.
    """

    archived_per_hour: list[HourlyCount]
    archived_24h: int
    latency_samples: int
    latency_avg_seconds: float | None = None
    latency_p95_seconds: float | None = None
    unlinked_conversations: int = 0
    expiry_samples: int = 0
    before_expiry_avg_seconds: float | None = None
    before_expiry_min_seconds: float | None = None


class UserGrowthStats(_Model):
    """User growth: new users per day over 30 days, returning users, conversations per user.

    A user is *returning* when it was seen again (``last_seen``) at least a day after it was
    created. Conversations per user are taken over every user, those with none included.
    """

    total: int
    new_per_day: list[DailyCount]
    new_30d: int
    returning: int
    returning_rate: float | None = None
    conversations_per_user_median: float | None = None
    conversations_per_user_p95: float | None = None
    conversations_per_user_mean: float | None = None


class TableStorage(_Model):
    """One table: estimated rows, bytes (heap with TOAST, indexes, total) and scan counts."""

    name: str
    rows_estimate: int
    table_bytes: int
    index_bytes: int
    total_bytes: int
    seq_scans: int
    index_scans: int


class IndexStorage(_Model):
    """One index: its size and how often the planner used it (index effectiveness)."""

    name: str
    table: str
    bytes: int
    scans: int
    unique: bool


class StorageStats(_Model):
    """Every table and index of the ``identity`` schema."""

    tables: list[TableStorage]
    indexes: list[IndexStorage]


class IdentityStats(_Model):
    """What the database knows about archival, user growth and storage (``get_stats``)."""

    as_of: datetime
    archival: ArchivalStats
    users: UserGrowthStats
    storage: StorageStats


class ArchiverStats(_Model):
    """What the archivers keep in Redis: cumulative counters, dead letters, live heartbeats.

    ``counters`` holds ``archived``, ``rearchived``, ``unchanged``, ``unlinked``, ``linked``,
    ``failed`` (conversations a pass could not archive), ``passes`` and ``pass_errors`` since
    the counters were created; a counter never written is 0.
    """

    counters: dict[str, int]
    dead_letters: int
    unlinked_pending: int
    heartbeats: list[dict[str, Any]]

    @property
    def failed_attempts(self) -> int:
        """Conversations a pass failed to archive plus passes that crashed."""
        return self.counters.get("failed", 0) + self.counters.get("pass_errors", 0)


class EventsMoveResult(_Model):
    """One batch of ``archive_old_events``: events older than ``cutoff`` moved (or counted)."""

    cutoff: datetime
    dry_run: bool
    moved: int
    more: bool
    eligible: int | None = None
    """Dry run only: how many events are older than the cutoff."""


class RemovedConversation(_Model):
    """A conversation that ``delete_unlinked_conversations`` removed (or would remove)."""

    id: uuid.UUID
    source_id: str | None = None
    merchant_id: str | None = None
    pending_user_id: str | None = None
    started_at: datetime
    created_at: datetime
    message_count: int


class UnlinkedCleanupResult(_Model):
    """One batch of ``delete_unlinked_conversations``: what was removed, and whether more wait."""

    cutoff: datetime
    dry_run: bool
    deleted: int
    more: bool
    conversations: list[RemovedConversation]
    eligible: int | None = None
    """Dry run only: how many conversations are past the cutoff (``conversations`` lists a
    batch of them)."""


class AnalyzeResult(_Model):
    """``analyze_tables``: the tables whose planner statistics were refreshed."""

    dry_run: bool
    tables: list[str]
    analyzed_at: datetime | None = None
