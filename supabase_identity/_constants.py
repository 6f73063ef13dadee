"""Every default the package uses, in one place.

Timeouts, retry bounds, validation limits and Redis key names live here so that a reader (or an
operator tuning a deployment) finds them without reading the clients, and so that tests can patch
one value instead of hunting for literals.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import httpx

    # Built on first use by __getattr__ below: importing the constants (the command line does,
    # for its option defaults) must not import httpx.
    DEFAULT_TIMEOUT: httpx.Timeout
    DEFAULT_CONNECTION_LIMITS: httpx.Limits

#: The Postgres schema the package talks to (sent as ``Accept-Profile``/``Content-Profile``).
SCHEMA: Final = "identity"

#: Connect quickly or fail over to the outbox; a read may legitimately take longer (batch inserts).
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DEFAULT_READ_TIMEOUT: Final = 15.0
#: DEFAULT_TIMEOUT is ``httpx.Timeout(DEFAULT_READ_TIMEOUT, connect=DEFAULT_CONNECT_TIMEOUT,
#: pool=DEFAULT_CONNECT_TIMEOUT)`` (see ``__getattr__``).

#: Retries after the first attempt, for connection errors, 408, 429 and 5xx only.
DEFAULT_MAX_RETRIES: Final = 3
#: Exponential backoff: INITIAL * 2**n capped at MAX, multiplied by a jitter in [0.75, 1.0].
INITIAL_RETRY_DELAY: Final = 0.25
MAX_RETRY_DELAY: Final = 8.0
#: A server's ``Retry-After`` is honoured up to this many seconds; beyond it, backoff applies.
MAX_RETRY_AFTER: Final = 60.0

#: One pool per client instance, enough for a threaded web server without exhausting PostgREST:
#: DEFAULT_CONNECTION_LIMITS is ``httpx.Limits`` of these (see ``__getattr__``).
MAX_CONNECTIONS: Final = 100
MAX_KEEPALIVE_CONNECTIONS: Final = 20
KEEPALIVE_EXPIRY: Final = 30.0

#: Lifetime of a token minted by ``for_user``; short so a leaked token is soon useless.
DEFAULT_USER_TOKEN_TTL: Final = 300
#: A minted token is replaced when fewer than this many seconds of validity remain.
USER_TOKEN_REFRESH_MARGIN: Final = 30
#: HS256 wants a key of at least 32 bytes (RFC 7518 §3.2); Supabase's JWT secrets are that long.
MIN_JWT_SECRET_BYTES: Final = 32

#: Redis client settings for the archiver: fail fast when Redis is down, but leave a pipelined
#: read of a large batch time to answer.
ARCHIVER_REDIS_CONNECT_TIMEOUT: Final = 5.0
ARCHIVER_REDIS_SOCKET_TIMEOUT: Final = 60.0
#: ``ConversationArchiver.run_archival_loop``'s default time between passes (the original
#: archival service's cadence); ``run_forever`` uses ``ArchiverConfig.interval``.
ARCHIVAL_LOOP_INTERVAL: Final = timedelta(minutes=30)

# --- validation limits (mirror the CHECK constraints in supabase/migrations) ------------------
#: A user id is ``usr_`` + this many of ``[a-z0-9]``: 6 admits the ids written before this package
#: (``usr_test123``), 46 fills the original ``varchar(50)``. New ids are ``usr_`` + 24 hex.
USER_ID_BODY_MIN: Final = 6
USER_ID_BODY_MAX: Final = 46
USER_ID_PATTERN: Final = f"^usr_[a-z0-9]{{{USER_ID_BODY_MIN},{USER_ID_BODY_MAX}}}$"
SHOP_DOMAIN_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,62}\.myshopify\.com$"
EVENT_TYPE_PATTERN: Final = r"^[a-z][a-z0-9_.:-]{0,99}$"
MAX_EVENT_TYPE_LENGTH: Final = 100
MAX_EVENT_DATA_BYTES: Final = 32 * 1024
MAX_EMAIL_LENGTH: Final = 255
MAX_NAME_LENGTH: Final = 255
MAX_SHOPIFY_ID_LENGTH: Final = 100
MAX_CONVERSATION_ID_LENGTH: Final = 512
MAX_MERCHANT_ID_LENGTH: Final = 255
MAX_SHOP_DOMAIN_LENGTH: Final = 255
MAX_WORKFLOW_NAME_LENGTH: Final = 255
#: JSON arguments (event data, RPC parameters) nest objects and arrays at most this deep: far
#: beyond any real event, and far below the depth at which encoders run out of stack.
MAX_JSON_DEPTH: Final = 32
#: A keyset cursor is about 100 characters; anything longer was not made by this package.
MAX_CURSOR_LENGTH: Final = 512
MIN_PAGE_LIMIT: Final = 1
MAX_PAGE_LIMIT: Final = 100
DEFAULT_PAGE_LIMIT: Final = 20
#: identity.search_conversations refuses longer queries (websearch_to_tsquery syntax).
MAX_SEARCH_QUERY_LENGTH: Final = 1000
#: identity.search_conversations takes its offset as a Postgres integer.
MAX_SEARCH_OFFSET: Final = 2**31 - 1

#: Conversation list columns: what a history list shows, and no ``messages``, so a page never
#: ships message bodies. ``user_id`` is the filter (filled in by the client) and the
#: bookkeeping timestamps come with ``get_conversation``: measured through the gateway, each
#: extra column on a 20-row page costs more than the row lookup itself (scripts/bench identity).
CONVERSATION_LIST_COLUMNS: Final = (
    "id,source_id,workflow_name,started_at,ended_at,message_count,metadata"
)

#: One conversation with its messages: every column but ``search`` (the full-text vector is
#: about as large as the messages and only the database reads it).
CONVERSATION_COLUMNS: Final = (
    "id,source_id,user_id,merchant_id,workflow_name,started_at,ended_at,messages,"
    "message_count,metadata,created_at,updated_at,archived_at"
)

#: Namespace strings for deterministic UUIDv5 ids (shared with the archiver and the SQL tests).
CONVERSATION_UUID_PREFIX: Final = "supabase-identity:conversation:"
USER_SUBJECT_PREFIX: Final = "supabase-identity:user:"

# --- events outbox ----------------------------------------------------------------------------
#: Events per ``record_events`` call; bounded so one request stays well under the gateway limit.
EVENT_BATCH_SIZE: Final = 500
OUTBOX_KEY_PREFIX: Final = "identity:outbox:events"
#: The Redis flush lock expires on its own if a flusher dies; it is refreshed between batches.
OUTBOX_LOCK_TTL_MS: Final = 120_000
#: In-process buffer bound used when no Redis is configured (see ``MemoryOutbox``).
DEFAULT_MEMORY_OUTBOX_SIZE: Final = 10_000
DEFAULT_MEMORY_DEAD_LETTER_SIZE: Final = 10_000

#: Key prefixes and redaction: at most this many leading characters of a secret are ever shown.
REDACTED_KEY_PREFIX_LENGTH: Final = 12

#: Redis client built from REDIS_URL: fail fast, so a dead Redis (while Supabase is also down)
#: costs a caller well under a second before the event falls back to process memory.
REDIS_CONNECT_TIMEOUT: Final = 1.0
REDIS_SOCKET_TIMEOUT: Final = 5.0
REDIS_RETRIES: Final = 1

#: SQL functions the package calls; ``health()`` reports any that are missing.
REQUIRED_FUNCTIONS: Final = (
    "analyze_tables",
    "archive_conversations",
    "archive_old_events",
    "delete_unlinked_conversations",
    "get_or_create_user",
    "get_user_profile",
    "health",
    "link_conversations",
    "record_events",
    "search_conversations",
    "stats",
)
EVENT_COLUMNS: Final = "id,user_id,event_type,event_data,created_at,received_at"
RPC_NAME_PATTERN: Final = r"^[a-z_][a-z0-9_]{0,62}$"

# --- maintenance (identity.archive_old_events, identity.delete_unlinked_conversations) --------
#: Events older than this many days move to identity.events_archive (90 days of analytics).
DEFAULT_EVENT_RETENTION_DAYS: Final = 90
#: Conversations still unlinked this many days after their first archive are deleted.
DEFAULT_UNLINKED_RETENTION_DAYS: Final = 7
#: Rows per maintenance call: each call is one short transaction that locks only its batch.
DEFAULT_EVENTS_MOVE_BATCH: Final = 5000
DEFAULT_UNLINKED_DELETE_BATCH: Final = 1000
MAX_MAINTENANCE_BATCH: Final = 50_000


def __getattr__(name: str) -> Any:
    """``DEFAULT_TIMEOUT`` and ``DEFAULT_CONNECTION_LIMITS``, built (with httpx) on first use."""
    if name not in ("DEFAULT_TIMEOUT", "DEFAULT_CONNECTION_LIMITS"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import httpx

    value: Any
    if name == "DEFAULT_TIMEOUT":
        value = httpx.Timeout(
            DEFAULT_READ_TIMEOUT, connect=DEFAULT_CONNECT_TIMEOUT, pool=DEFAULT_CONNECT_TIMEOUT
        )
    else:
        value = httpx.Limits(
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_EXPIRY,
        )
    globals()[name] = value
    return value
