"""Module-level functions backed by one lazily built default client.

They are the API the services were first written against, kept as functions, so a service can
write::

    from supabase_identity import get_or_create_user, log_user_event

    user_id, is_new = get_or_create_user(shop)

The default :class:`IdentityClient` is built from the environment on first use (never at import:
importing must not read files or open connections) and reused afterwards, so every call shares
one connection pool. It is closed at interpreter exit, which also makes one last attempt to
deliver events buffered in memory.
"""

from __future__ import annotations

import atexit
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from ._models import (
    Conversation,
    ConversationPage,
    FlushResult,
    SearchPage,
    ShopRedaction,
    UserProfile,
)
from ._redis import RedisClient
from ._sync._client import IdentityClient

__all__ = [
    "close_default_client",
    "flush_events",
    "get_conversation",
    "get_default_client",
    "get_or_create_user",
    "get_user_conversations",
    "get_user_profile",
    "log_user_event",
    "redact_shop",
    "search_conversations",
    "set_default_client",
]

_lock = threading.Lock()
_client: IdentityClient | None = None
_atexit_registered = False


def get_default_client() -> IdentityClient:
    """The process-wide client, created from the environment on first call (thread-safe)."""
    global _client, _atexit_registered
    client = _client
    if client is not None and not client.is_closed:
        return client
    with _lock:
        if _client is None or _client.is_closed:
            _client = IdentityClient.from_env()
            if not _atexit_registered:
                atexit.register(close_default_client)
                _atexit_registered = True
        return _client


def set_default_client(client: IdentityClient | None) -> None:
    """Use ``client`` for the module-level functions (``None``: build from env on next use).

    The previous default client is not closed: whoever created it owns it.
    """
    global _client
    with _lock:
        _client = client


def close_default_client() -> None:
    """Close the default client if one was built; the next call builds a fresh one."""
    global _client
    with _lock:
        client, _client = _client, None
    if client is not None:
        client.close()


def get_or_create_user(
    shop_domain: str,
    email: str | None = None,
    name: str | None = None,
    shopify_id: str | None = None,
) -> tuple[str, bool]:
    """``(user_id, is_new)`` for a shop; see :meth:`IdentityClient.get_or_create_user`."""
    return get_default_client().get_or_create_user(shop_domain, email, name, shopify_id)


def log_user_event(
    user_id: str, event_type: str, event_data: Mapping[str, Any] | None = None
) -> None:
    """Record an event, never raising for backend failures; see the client method."""
    get_default_client().log_user_event(user_id, event_type, event_data)


def flush_events() -> FlushResult:
    """Deliver events waiting in the default client's outbox."""
    return get_default_client().flush_events()


def get_user_profile(user_id: str) -> UserProfile:
    """The user with stats; raises ``NotFoundError`` when absent."""
    return get_default_client().get_user_profile(user_id)


def get_user_conversations(user_id: str, limit: int = 20, offset: int = 0) -> ConversationPage:
    """A page of the user's conversations (newest first, with the total)."""
    return get_default_client().get_user_conversations(user_id, limit, offset)


def get_conversation(user_id: str, conversation_id: str | uuid.UUID) -> Conversation:
    """One conversation with messages; raises ``NotFoundError`` when absent or not the user's."""
    return get_default_client().get_conversation(user_id, conversation_id)


def search_conversations(user_id: str, query: str, limit: int = 20, offset: int = 0) -> SearchPage:
    """The user's conversations matching ``query`` (web-search syntax), most relevant first.

    See :meth:`IdentityClient.search_conversations`.
    """
    return get_default_client().search_conversations(user_id, query, limit, offset)


def redact_shop(shop_domain: str, redis_client: RedisClient | None = None) -> ShopRedaction:
    """Erase every copy of a shop's data; see :meth:`IdentityClient.redact_shop`."""
    return get_default_client().redact_shop(shop_domain, redis_client)
