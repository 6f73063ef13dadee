"""supabase-identity: user identity, event logging and conversation history over Supabase HTTP.

Public surface (everything else is private and may change)::

    from supabase_identity import IdentityClient, AsyncIdentityClient
    from supabase_identity import get_or_create_user, log_user_event, get_user_profile
    from supabase_identity import get_user_conversations, get_conversation, flush_events
    from supabase_identity import IdentityError, ValidationError, NotFoundError, ...
    from supabase_identity import IdentityStats, read_archiver_stats, run_maintenance

Importing this package reads no file and opens no connection; the module-level functions build
a default client from the environment on first use.
"""

from ._client import AsyncIdentityClient, IdentityClient
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
    set_default_client,
)
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
    RemovedConversation,
    StorageStats,
    TableStorage,
    UnlinkedCleanupResult,
    UserGrowthStats,
    UserProfile,
    UserStats,
)
from ._monitoring import MaintenanceRun, read_archiver_stats, run_maintenance
from ._outbox import AsyncRedisOutbox, MemoryOutbox, RedisOutbox
from ._settings import Settings, load_settings
from ._types import NOT_GIVEN, NotGiven
from ._validation import (
    conversation_uuid,
    normalize_shop_domain,
    validate_event_data,
    validate_event_type,
    validate_user_id,
)
from ._version import __version__
from .archive import (
    ArchiverConfig,
    ArchiveReport,
    ConversationArchiver,
    ConversationStore,
    archive_conversation,
)
from .oauth import OAuthResult, acomplete_oauth, complete_oauth

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
    "RemovedConversation",
    "SchemaNotExposedError",
    "Settings",
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
    "run_maintenance",
    "set_default_client",
    "user_subject",
    "validate_event_data",
    "validate_event_type",
    "validate_user_id",
]
