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
                                      expire (0 once ended), so "near expiry" is one ZRANGEBYSCORE

Conversations written without these (by the existing service) are still archived: the archiver
finds them with ``SCAN`` (cursor, never ``KEYS``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import redis
from redis.typing import EncodableT, FieldT

from .._validation import validate_user_id

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

    def _expires_at(self) -> int:
        return int(datetime.now(UTC).timestamp()) + self._ttl

    def create_session(
        self,
        conversation_id: str,
        *,
        user_id: str | None = None,
        merchant_id: str | None = None,
        workflow_name: str = "shopify_onboarding",
        started_at: datetime | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """Create (or refresh) ``session:<id>`` and ``conversation:<id>`` with their user.

        This is the seed's ``create_session`` change: ``user_id`` and ``merchant_id`` are stored
        on the session (empty strings when unknown, as the agents service writes them) so the
        archiver can link the conversation without guessing.
        """
        if user_id is not None:
            user_id = validate_user_id(user_id)
        started = (started_at or datetime.now(UTC)).isoformat()
        fields: dict[FieldT, EncodableT] = {
            "user_id": user_id or "",
            "merchant_id": merchant_id or "",
            "workflow_name": workflow_name,
            "started_at": started,
        }
        fields.update(extra or {})
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(session_key(conversation_id), mapping=fields)
        conversation_fields: dict[FieldT, EncodableT] = {"id": conversation_id, **fields}
        pipe.hset(conversation_key(conversation_id), mapping=conversation_fields)
        pipe.hsetnx(conversation_key(conversation_id), "message_count", 0)
        pipe.expire(session_key(conversation_id), self._ttl)
        pipe.expire(conversation_key(conversation_id), self._ttl)
        pipe.zadd(DUE_KEY, {conversation_id: self._expires_at()})
        pipe.execute()

    def set_user(
        self, conversation_id: str, user_id: str, *, merchant_id: str | None = None
    ) -> bool:
        """Attach a user (and merchant) to a live conversation, e.g. after OAuth completes.

        Only keys that exist are touched (a write to an expired conversation would create a
        hash that never expires); returns whether the conversation was there.
        """
        user_id = validate_user_id(user_id)
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
        fields: dict[str, str] = {
            **(extra or {}),
            "sender": sender,
            "content": content,
            "timestamp": (timestamp or datetime.now(UTC)).isoformat(),
        }
        flat: list[str] = []
        for name, value in fields.items():
            flat += [name, value]
        seq = self._append(
            keys=[conversation_key(conversation_id), session_key(conversation_id), DUE_KEY],
            args=[conversation_id, self._ttl, self._expires_at(), *flat],
        )
        return int(seq)

    def end_conversation(self, conversation_id: str, *, ended_at: datetime | None = None) -> None:
        """Mark the conversation ended: the archiver picks it up on its next pass."""
        ended = (ended_at or datetime.now(UTC)).isoformat()
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(conversation_key(conversation_id), "ended_at", ended)
        pipe.zadd(DUE_KEY, {conversation_id: 0})
        pipe.execute()

    def remember_merchant(
        self, shop_domain: str, user_id: str, *, merchant_id: str | None = None
    ) -> None:
        """Write ``merchant:<shop>`` with ``user_id``, keeping the other fields already there."""
        key = merchant_key(shop_domain)
        self._redis.set(
            key,
            merchant_record(
                self._redis.get(key),
                shop_domain=shop_domain,
                user_id=user_id,
                merchant_id=merchant_id,
            ),
        )


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
