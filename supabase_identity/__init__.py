"""supabase-identity: user identity, event logging and conversation history over Supabase HTTP.

Public surface (everything else is private and may change)::

    from supabase_identity import IdentityClient, AsyncIdentityClient
    from supabase_identity import get_or_create_user, log_user_event, get_user_profile
    from supabase_identity import get_user_conversations, get_conversation, flush_events
    from supabase_identity import search_conversations
    from supabase_identity import IdentityError, ValidationError, NotFoundError, ...
    from supabase_identity import IdentityStats, read_archiver_stats, run_maintenance

Importing this package reads no file, opens no connection, and imports none of the libraries
behind the clients (httpx, postgrest, redis, pydantic): each public name is imported on its
first use (PEP 562), so a command line or a service that needs only part of the package pays
only for that part. The module-level functions build a default client from the environment on
first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BackendUnavailableError,
    ClientClosedError,
    ConfigError,
    ConflictError,
    DataRejectedError,
    EndpointNotFoundError,
    IdentityError,
    InternalServerError,
    MigrationsNotAppliedError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SchemaNotExposedError,
    ValidationError,
)
from ._version import __version__

if TYPE_CHECKING:
    from ._async._client import AsyncIdentityClient
    from ._async._redis_outbox import AsyncRedisOutbox
    from ._constants import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT
    from ._default import (
        close_default_client,
        flush_events,
        get_conversation,
        get_default_client,
        get_or_create_user,
        get_user_conversations,
        get_user_profile,
        log_user_event,
        redact_shop,
        search_conversations,
        set_default_client,
    )
    from ._keys import KeyInfo, Privilege, classify_key, mint_user_token, redact, user_subject
    from ._models import (
        AnalyzeResult,
        ArchivalStats,
        ArchiverStats,
        Conversation,
        ConversationPage,
        ConversationSummary,
        DailyCount,
        DeadLetter,
        EventsMoveResult,
        FlushResult,
        HourlyCount,
        IdentityStats,
        IndexStorage,
        OutboxEvent,
        OutboxStats,
        RedisRedaction,
        RemovedConversation,
        SearchHit,
        SearchPage,
        ShopRedaction,
        StorageStats,
        TableStorage,
        UnlinkedCleanupResult,
        UserGrowthStats,
        UserProfile,
        UserStats,
    )
    from ._monitoring import MaintenanceRun, read_archiver_stats, run_maintenance
    from ._outbox import MemoryOutbox
    from ._settings import Settings, load_settings
    from ._sync._client import IdentityClient
    from ._sync._redis_outbox import RedisOutbox
    from ._types import NOT_GIVEN, NotGiven
    from ._validation import (
        conversation_uuid,
        normalize_shop_domain,
        validate_event_data,
        validate_event_type,
        validate_user_id,
    )
    from .archive import (
        ArchiverConfig,
        ArchiveReport,
        ConversationArchiver,
        ConversationStore,
        archive_conversation,
    )
    from .oauth import OAuthResult, acomplete_oauth, complete_oauth

#: Where each public name that is imported on first use lives.
_LAZY: dict[str, str] = {
    "AnalyzeResult": "._models",
    "ArchivalStats": "._models",
    "ArchiveReport": ".archive",
    "ArchiverConfig": ".archive",
    "ArchiverStats": "._models",
    "AsyncIdentityClient": "._async._client",
    "AsyncRedisOutbox": "._async._redis_outbox",
    "Conversation": "._models",
    "ConversationArchiver": ".archive",
    "ConversationPage": "._models",
    "ConversationStore": ".archive",
    "ConversationSummary": "._models",
    "DEFAULT_MAX_RETRIES": "._constants",
    "DEFAULT_TIMEOUT": "._constants",
    "DailyCount": "._models",
    "DeadLetter": "._models",
    "EventsMoveResult": "._models",
    "FlushResult": "._models",
    "HourlyCount": "._models",
    "IdentityClient": "._sync._client",
    "IdentityStats": "._models",
    "IndexStorage": "._models",
    "KeyInfo": "._keys",
    "MaintenanceRun": "._monitoring",
    "MemoryOutbox": "._outbox",
    "NOT_GIVEN": "._types",
    "NotGiven": "._types",
    "OAuthResult": ".oauth",
    "OutboxEvent": "._models",
    "OutboxStats": "._models",
    "Privilege": "._keys",
    "RedisOutbox": "._sync._redis_outbox",
    "RedisRedaction": "._models",
    "RemovedConversation": "._models",
    "SearchHit": "._models",
    "SearchPage": "._models",
    "Settings": "._settings",
    "ShopRedaction": "._models",
    "StorageStats": "._models",
    "TableStorage": "._models",
    "UnlinkedCleanupResult": "._models",
    "UserGrowthStats": "._models",
    "UserProfile": "._models",
    "UserStats": "._models",
    "acomplete_oauth": ".oauth",
    "archive_conversation": ".archive",
    "classify_key": "._keys",
    "close_default_client": "._default",
    "complete_oauth": ".oauth",
    "conversation_uuid": "._validation",
    "flush_events": "._default",
    "get_conversation": "._default",
    "get_default_client": "._default",
    "get_or_create_user": "._default",
    "get_user_conversations": "._default",
    "get_user_profile": "._default",
    "load_settings": "._settings",
    "log_user_event": "._default",
    "mint_user_token": "._keys",
    "normalize_shop_domain": "._validation",
    "read_archiver_stats": "._monitoring",
    "redact": "._keys",
    "redact_shop": "._default",
    "run_maintenance": "._monitoring",
    "search_conversations": "._default",
    "set_default_client": "._default",
    "user_subject": "._keys",
    "validate_event_data": "._validation",
    "validate_event_type": "._validation",
    "validate_user_id": "._validation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "NOT_GIVEN",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AnalyzeResult",
    "ArchivalStats",
    "ArchiveReport",
    "ArchiverConfig",
    "ArchiverStats",
    "AsyncIdentityClient",
    "AsyncRedisOutbox",
    "AuthenticationError",
    "BackendUnavailableError",
    "ClientClosedError",
    "ConfigError",
    "ConflictError",
    "Conversation",
    "ConversationArchiver",
    "ConversationPage",
    "ConversationStore",
    "ConversationSummary",
    "DailyCount",
    "DataRejectedError",
    "DeadLetter",
    "EndpointNotFoundError",
    "EventsMoveResult",
    "FlushResult",
    "HourlyCount",
    "IdentityClient",
    "IdentityError",
    "IdentityStats",
    "IndexStorage",
    "InternalServerError",
    "KeyInfo",
    "MaintenanceRun",
    "MemoryOutbox",
    "MigrationsNotAppliedError",
    "NotFoundError",
    "NotGiven",
    "OAuthResult",
    "OutboxEvent",
    "OutboxStats",
    "PermissionDeniedError",
    "Privilege",
    "RateLimitError",
    "RedisOutbox",
    "RedisRedaction",
    "RemovedConversation",
    "SchemaNotExposedError",
    "SearchHit",
    "SearchPage",
    "Settings",
    "ShopRedaction",
    "StorageStats",
    "TableStorage",
    "UnlinkedCleanupResult",
    "UserGrowthStats",
    "UserProfile",
    "UserStats",
    "ValidationError",
    "__version__",
    "acomplete_oauth",
    "archive_conversation",
    "classify_key",
    "close_default_client",
    "complete_oauth",
    "conversation_uuid",
    "flush_events",
    "get_conversation",
    "get_default_client",
    "get_or_create_user",
    "get_user_conversations",
    "get_user_profile",
    "load_settings",
    "log_user_event",
    "mint_user_token",
    "normalize_shop_domain",
    "read_archiver_stats",
    "redact",
    "redact_shop",
    "run_maintenance",
    "search_conversations",
    "set_default_client",
    "user_subject",
    "validate_event_data",
    "validate_event_type",
    "validate_user_id",
]
