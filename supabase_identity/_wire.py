"""The history API's JSON: the field names and types the services' frontends already read.

The SDK's models (:mod:`supabase_identity._models`) keep their own names (``items``,
``workflow_name``); these are what :func:`supabase_identity.api.history_router` sends:

* list: ``{"conversations": [{"id", "workflow", "started_at", "ended_at", "message_count",
  "metadata"}], "total", "limit", "offset"}``, plus ``next_cursor``;
* search (the list with ``q``): the same, each item with ``rank`` and ``snippet`` too;
* detail: ``{"id", "workflow", "started_at", "ended_at", "messages", "metadata"}``, plus the
  row's other columns;
* profile: ``{"user_id", "shop_domain", "email", "name", "created_at", "last_seen", "stats":
  {"total_conversations", "first_conversation", "last_conversation"}}``, plus message and event
  counts.

Fields beyond those are additions a reader may ignore; none is ever renamed or dropped. A list
item is a plain model with optional extras, so an endpoint that ranks its results (a search)
subclasses :class:`ConversationListItem` with its own optional fields (and
:class:`ConversationList` with ``conversations`` of that type), building its items with
:meth:`ConversationListItem.from_summary`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from ._models import (
    Conversation,
    ConversationPage,
    ConversationSummary,
    SearchPage,
    UserProfile,
)

__all__ = [
    "ConversationDetail",
    "ConversationList",
    "ConversationListItem",
    "Profile",
    "ProfileStats",
    "SearchList",
    "SearchListItem",
    "conversation_list",
    "search_list",
]


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True)


class ConversationListItem(_Wire):
    """One conversation in a list, without its messages."""

    id: str = Field(description="The conversation's UUID.")
    workflow: str | None = Field(description="The workflow that ran it (`workflow_name`).")
    started_at: datetime
    ended_at: datetime | None
    message_count: int
    metadata: dict[str, Any]
    source_id: str | None = Field(
        default=None,
        description="The agents service's own id when it was not a UUID (also accepted by the "
        "detail endpoint).",
    )

    @classmethod
    def from_summary(cls, summary: ConversationSummary, **extra: Any) -> Self:
        """The wire form of an SDK summary; ``extra`` fills a subclass's own fields."""
        return cls(**_summary_fields(summary), **extra)


def _summary_fields(summary: ConversationSummary) -> dict[str, Any]:
    """The fields a list item and a detail share, under their wire names."""
    return {
        "id": str(summary.id),
        "workflow": summary.workflow_name,
        "started_at": summary.started_at,
        "ended_at": summary.ended_at,
        "message_count": summary.message_count,
        "metadata": summary.metadata,
        "source_id": summary.source_id,
    }


class ConversationList(_Wire):
    """A page of a user's conversations, newest first.

    A subclass may narrow ``conversations`` to a subclass of :class:`ConversationListItem`.
    """

    conversations: list[ConversationListItem]
    total: int | None = Field(
        description="How many conversations the user has; null on keyset (`cursor`) pages."
    )
    limit: int
    offset: int
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last one."
    )


def conversation_list(page: ConversationPage) -> ConversationList:
    """The wire form of an SDK page."""
    return ConversationList(
        conversations=[ConversationListItem.from_summary(item) for item in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
        next_cursor=page.next_cursor,
    )


class SearchListItem(ConversationListItem):
    """One conversation a search found: a list item plus its relevance and snippet.

    Both are required (``snippet`` may be null): a plain list's items, which have neither,
    are never taken for search hits.
    """

    rank: float = Field(
        description="Relevance (higher is better), comparable within one search only."
    )
    snippet: str | None = Field(
        description="A short excerpt of the first matching message, HTML-escaped, the matched "
        "words in <mark>…</mark>; null when the conversation has no text."
    )


class SearchList(ConversationList):
    """The conversations matching a search, most relevant first (ties: newest first).

    ``total`` counts every match the caller may see; ``next_cursor`` is always null (a search
    pages by ``offset``).
    """

    conversations: list[SearchListItem]  # type: ignore[assignment]


def search_list(page: SearchPage) -> SearchList:
    """The wire form of an SDK search page."""
    return SearchList(
        conversations=[
            SearchListItem.from_summary(hit, rank=hit.rank, snippet=hit.snippet)
            for hit in page.items
        ],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )


class ConversationDetail(_Wire):
    """One conversation with its messages, oldest first."""

    id: str = Field(description="The conversation's UUID.")
    workflow: str | None
    started_at: datetime
    ended_at: datetime | None
    messages: list[dict[str, Any]]
    metadata: dict[str, Any]
    source_id: str | None = None
    user_id: str | None = None
    merchant_id: str | None = None
    message_count: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    archived_at: datetime | None = None

    @classmethod
    def from_conversation(cls, conversation: Conversation) -> ConversationDetail:
        """The wire form of an SDK conversation."""
        # The other fields share their names with the SDK's; the renamed ones come after.
        return cls.model_validate({**conversation.model_dump(), **_summary_fields(conversation)})


class ProfileStats(_Wire):
    """Conversation and event counts of one user."""

    total_conversations: int
    first_conversation: datetime | None
    last_conversation: datetime | None
    total_messages: int = 0
    total_events: int = 0


class Profile(_Wire):
    """A user (one Shopify shop) with its stats."""

    user_id: str
    shop_domain: str
    email: str | None
    name: str | None
    created_at: datetime
    last_seen: datetime
    stats: ProfileStats
    shopify_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_profile(cls, profile: UserProfile) -> Profile:
        """The wire form of an SDK profile."""
        return cls.model_validate(profile, from_attributes=True)  # same names, stats too
