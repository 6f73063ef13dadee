"""The Redis layout that conversations live in before they are archived, and its writer.

The key names are a contract with the agents service that already writes them (see the seed
spec and ``architecture.md``); this module names them once::

    conversation:<id>        hash   metadata; `archived`, `archived_count` written by the archiver;
                                    its TTL is the deadline the archiver races
    session:<id>             hash   user_id, merchant_id, workflow_name, started_at, …
    message:<id>:<seq>       hash   sender, content, timestamp (ISO-8601), any other fields
    merchant:<shop_domain>   string JSON with user_id (written at OAuth completion)

:class:`ConversationStore` is the writer side. Besides the contract keys it maintains, atomically
in one server-side script per call, two things the archiver uses to avoid scanning the keyspace:

    conversation:<id>.message_count   number of messages (seq 0 … n-1)
    identity:archive:due              sorted set: conversation id -> the epoch second its keys
                                      expire (0 once ended): the archiver walks this (ZSCAN)
                                      instead of the whole keyspace

Conversations written without these (by the existing service) are still archived: the archiver
finds them with ``SCAN`` (cursor, never ``KEYS``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import redis

from .._constants import (
    MAX_MERCHANT_ID_LENGTH,
    MAX_SHOP_DOMAIN_LENGTH,
    MAX_WORKFLOW_NAME_LENGTH,
)
from .._validation import (
    validate_conversation_id,
    validate_text,
    validate_text_map,
    validate_user_id,
)

__all__ = [
    "DUE_KEY",
    "SET_IF_EXISTS_SCRIPT",
    "ConversationStore",
    "conversation_key",
    "merchant_key",
    "merchant_record",
    "message_key",
    "session_key",
]

#: Sorted set of conversation ids scored by expiry (epoch seconds); 0 means "ended, archive now".
DUE_KEY: Final = "identity:archive:due"
#: Workflow recorded when a session is created without one (the seed's default).
DEFAULT_WORKFLOW: Final = "shopify_onboarding"
#: Default lifetime of a conversation's keys, refreshed on every write (the agents service's TTL).
DEFAULT_CONVERSATION_TTL: Final = timedelta(hours=24)


def conversation_key(conversation_id: str) -> str:
    """``conversation:<id>``: the conversation's metadata hash."""
    return f"conversation:{conversation_id}"


def session_key(conversation_id: str) -> str:
    """``session:<id>``: the session hash holding user_id and merchant_id."""
    return f"session:{conversation_id}"


def message_key(conversation_id: str, seq: int) -> str:
    """``message:<id>:<seq>``: one message hash."""
    return f"message:{conversation_id}:{seq}"


def merchant_key(shop_domain: str) -> str:
    """``merchant:<shop_domain>``: JSON string written at OAuth completion."""
    return f"merchant:{shop_domain}"


def _flatten(fields: Mapping[str, str]) -> list[str]:
    return [part for pair in fields.items() for part in pair]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


# Appends one message and refreshes every key of the conversation to the same deadline, so an
# early message can never expire before the conversation key the archiver watches.
# KEYS: conversation, session, due-index. ARGV: id, ttl_seconds, expires_at, field/value pairs…
_APPEND_SCRIPT: Final = """
local count = redis.call('HINCRBY', KEYS[1], 'message_count', 1)
local seq = count - 1
local prefix = 'message:' .. ARGV[1] .. ':'
local msg = prefix .. seq
redis.call('HSET', msg, unpack(ARGV, 4))
local ttl = tonumber(ARGV[2])
for i = 0, seq do
  redis.call('EXPIRE', prefix .. i, ttl)
end
redis.call('EXPIRE', KEYS[1], ttl)
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('EXPIRE', KEYS[2], ttl)
end
if tonumber(redis.call('ZSCORE', KEYS[3], ARGV[1]) or '1') ~= 0 then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
end
return seq
"""


# Creates or resumes a conversation. KEYS: conversation, session, due index. ARGV: id, ttl,
# expires_at, n, then n field/value pairs to set, then default pairs set only where absent.
# Every key of the conversation, messages included, gets the same deadline.
_CREATE_SCRIPT: Final = """
local ttl = tonumber(ARGV[2])
local n = tonumber(ARGV[4])
local i = 5
while i < 5 + 2 * n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i < #ARGV do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSETNX', KEYS[1], 'id', ARGV[1])
redis.call('HSETNX', KEYS[1], 'message_count', 0)
local count = tonumber(redis.call('HGET', KEYS[1], 'message_count')) or 0
local prefix = 'message:' .. ARGV[1] .. ':'
for seq = 0, count - 1 do
  redis.call('EXPIRE', prefix .. seq, ttl)
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
if tonumber(redis.call('ZSCORE', KEYS[3], ARGV[1]) or '1') ~= 0 then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
end
return count
"""
# Ends a conversation that still exists. KEYS: conversation, due index. ARGV: id, ended_at.
_END_SCRIPT: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'ended_at', ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
"""
# HSET the field/value pairs in ARGV on each key in KEYS that exists; returns how many existed.
SET_IF_EXISTS_SCRIPT: Final = """
local touched = 0
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, unpack(ARGV))
    touched = touched + 1
  end
end
return touched
"""


class ConversationStore:
    """Writes conversations to Redis in the layout the archiver reads.

    Usage::

        store = ConversationStore(redis.Redis.from_url(os.environ["REDIS_URL"]))
        store.create_session(conv_id, user_id=user_id, merchant_id="merchant_cool-shop",
                             workflow_name="shopify_onboarding")
        store.append_message(conv_id, sender="user", content="Hi")
        store.end_conversation(conv_id)

    Every call is one atomic round trip (a MULTI pipeline or a server-side script), so a crash
    never leaves a message without its counter or a conversation without its expiry entry.
    Arguments are checked before it (``ValidationError``): text must be valid Unicode ``str``,
    conversation ids at most 512 characters, merchant ids and workflow names at most 255.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        ttl: timedelta = DEFAULT_CONVERSATION_TTL,
    ) -> None:
        if ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        self._redis = redis_client
        self._ttl = int(ttl.total_seconds())
        self._append = redis_client.register_script(_APPEND_SCRIPT)
        self._set_fields = redis_client.register_script(SET_IF_EXISTS_SCRIPT)
        self._create = redis_client.register_script(_CREATE_SCRIPT)
        self._end = redis_client.register_script(_END_SCRIPT)

    def _expires_at(self) -> int:
        return int(datetime.now(UTC).timestamp()) + self._ttl

    def create_session(
        self,
        conversation_id: str,
        *,
        user_id: str | None = None,
        merchant_id: str | None = None,
        workflow_name: str | None = None,
        started_at: datetime | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """Create (or resume) ``session:<id>`` and ``conversation:<id>`` with their user.

        This is the seed's ``create_session`` change: ``user_id`` and ``merchant_id`` are stored
        on the session (empty strings until known, as the agents service writes them) so the
        archiver can link the conversation without guessing. Resuming an existing conversation
        overwrites only what is given (a known user is never blanked, ``started_at`` is kept)
        and refreshes every key of it, messages included, to one deadline.
        """
        validate_conversation_id(conversation_id)
        given: dict[str, str] = {}
        if user_id is not None:
            given["user_id"] = validate_user_id(user_id)
        if merchant_id is not None:
            given["merchant_id"] = _merchant(merchant_id)
        if workflow_name is not None:
            given["workflow_name"] = validate_text(
                workflow_name, field="workflow_name", max_length=MAX_WORKFLOW_NAME_LENGTH
            )
        if started_at is not None:
            given["started_at"] = started_at.isoformat()
        given.update(validate_text_map(extra, field="extra"))
        defaults = {
            "user_id": "",
            "merchant_id": "",
            "workflow_name": DEFAULT_WORKFLOW,
            "started_at": datetime.now(UTC).isoformat(),
        }
        self._create(
            keys=[conversation_key(conversation_id), session_key(conversation_id), DUE_KEY],
            args=[
                conversation_id,
                self._ttl,
                self._expires_at(),
                len(given),
                *_flatten(given),
                *_flatten(defaults),
            ],
        )

    def set_user(
        self, conversation_id: str, user_id: str, *, merchant_id: str | None = None
    ) -> bool:
        """Attach a user (and merchant) to a live conversation, e.g. after OAuth completes.

        Only keys that exist are touched (a write to an expired conversation would create a
        hash that never expires); returns whether the conversation was there.
        """
        validate_conversation_id(conversation_id)
        user_id = validate_user_id(user_id)
        if merchant_id is not None:
            _merchant(merchant_id)
        args = ["user_id", user_id] + (["merchant_id", merchant_id] if merchant_id else [])
        keys = [session_key(conversation_id), conversation_key(conversation_id)]
        return bool(self._set_fields(keys=keys, args=args))

    def append_message(
        self,
        conversation_id: str,
        *,
        sender: str,
        content: str,
        timestamp: datetime | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> int:
        """Append one message; returns its sequence number (0-based)."""
        validate_conversation_id(conversation_id)
        fields: dict[str, str] = {
            **validate_text_map(extra, field="extra"),
            "sender": validate_text(sender, field="sender"),
            "content": validate_text(content, field="content"),
            "timestamp": (timestamp or datetime.now(UTC)).isoformat(),
        }
        flat = _flatten(fields)
        seq = self._append(
            keys=[conversation_key(conversation_id), session_key(conversation_id), DUE_KEY],
            args=[conversation_id, self._ttl, self._expires_at(), *flat],
        )
        return int(seq)

    def end_conversation(self, conversation_id: str, *, ended_at: datetime | None = None) -> bool:
        """Mark the conversation ended: the archiver picks it up on its next pass.

        Returns ``False`` (and writes nothing) when the conversation is no longer in Redis: an
        ``ended_at`` on a vanished key would create a hash that never expires.
        """
        validate_conversation_id(conversation_id)
        ended = (ended_at or datetime.now(UTC)).isoformat()
        return bool(
            self._end(
                keys=[conversation_key(conversation_id), DUE_KEY], args=[conversation_id, ended]
            )
        )

    def remember_merchant(
        self, shop_domain: str, user_id: str, *, merchant_id: str | None = None
    ) -> None:
        """Write ``merchant:<shop>`` with ``user_id``, keeping the other fields already there.

        A read-modify-write under WATCH: a concurrent writer of the same key (the auth service
        storing a token) makes the transaction retry instead of losing either update.
        """
        validate_text(
            shop_domain, field="shop_domain", max_length=MAX_SHOP_DOMAIN_LENGTH, required=True
        )
        validate_user_id(user_id)
        if merchant_id is not None:
            _merchant(merchant_id)
        key = merchant_key(shop_domain)

        def merge(pipe: redis.client.Pipeline) -> None:
            current = pipe.get(key)
            pipe.multi()
            pipe.set(
                key,
                merchant_record(
                    current, shop_domain=shop_domain, user_id=user_id, merchant_id=merchant_id
                ),
            )

        self._redis.transaction(merge, key)


def _merchant(merchant_id: str) -> str:
    return validate_text(merchant_id, field="merchant_id", max_length=MAX_MERCHANT_ID_LENGTH)


def merchant_record(
    current: bytes | str | None, *, shop_domain: str, user_id: str, merchant_id: str | None
) -> str:
    """The new ``merchant:<shop>`` JSON: what was there (if a JSON object) plus the user.

    Existing fields (the auth service's token data, say) are kept; ``user_id`` is set and
    ``merchant_id`` when given; unreadable content is replaced rather than failing a login.
    """
    data: dict[str, Any] = {}
    if current:
        try:
            loaded = json.loads(current)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            data = loaded
    data["shop_domain"] = shop_domain
    data["user_id"] = validate_user_id(user_id)
    if merchant_id is not None:
        data["merchant_id"] = merchant_id
    data["updated_at"] = _now_iso()
    return json.dumps(data)
