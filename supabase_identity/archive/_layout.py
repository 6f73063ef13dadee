"""The Redis layout that conversations live in before they are archived, and its writer.

The key names are a contract with the agents service that already writes them; they are named
once, in :mod:`supabase_identity._redis_keys`::

    conversation:<id>        hash   metadata; `archived`, `archived_count` written by the archiver;
                                    its TTL is the deadline the archiver races
    session:<id>             hash   user_id, merchant_id, workflow_name, started_at, …
    message:<id>:<seq>       hash   sender, content, timestamp (ISO-8601), any other fields
    merchant:<shop_domain>   string JSON with user_id (written at OAuth completion)

:class:`ConversationStore` is the writer side. Besides the contract keys it maintains two
things the archiver uses to avoid scanning the keyspace:

    conversation:<id>.message_count   number of messages (seq 0 … n-1): a hint for the reader
    identity:archive:due              sorted set: conversation id -> the epoch second its keys
                                      expire (0 once ended): the archiver walks this (ZSCAN)
    identity:user:<user>:conversations  set: the user's live conversation ids, so a shop
                                      redaction finds them without scanning (same lifetime)

Conversations written without these (by the existing service) are still archived: the archiver
finds them with one ``SCAN`` per pass (never ``KEYS``) and probes their messages.

Works on one Redis and on a Redis Cluster: a conversation's keys hash to different slots, so
each write is a pipeline of single-key scripts (a hash and its TTL are always set together, so a
crash never leaves a key that never expires).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

from .._constants import (
    MAX_MERCHANT_ID_LENGTH,
    MAX_SHOP_DOMAIN_LENGTH,
    MAX_WORKFLOW_NAME_LENGTH,
)
from .._redis import RedisClient, queue_script
from .._redis_keys import (
    DUE_KEY,
    DUE_SCRIPT,
    END_SCRIPT,
    NEXT_SEQ_SCRIPT,
    PUT_HASH_SCRIPT,
    USER_INDEX_SCRIPT,
    conversation_key,
    merchant_key,
    message_key,
    session_key,
    user_conversations_key,
)
from .._sync._live import merchant_record, remember_merchant, set_conversation_user
from .._validation import (
    validate_conversation_id,
    validate_text,
    validate_text_map,
    validate_user_id,
)

__all__ = [
    "DUE_KEY",
    "ConversationStore",
    "conversation_key",
    "merchant_key",
    "merchant_record",
    "message_key",
    "session_key",
]

#: Workflow recorded when a session is created without one (what the agents service assumes).
DEFAULT_WORKFLOW: Final = "shopify_onboarding"
#: Default lifetime of a conversation's keys, refreshed on every write (the agents service's TTL).
DEFAULT_CONVERSATION_TTL: Final = timedelta(hours=24)


def _flatten(fields: Mapping[str, str]) -> list[str]:
    return [part for pair in fields.items() for part in pair]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class ConversationStore:
    """Writes conversations to Redis in the layout the archiver reads.

    Usage::

        store = ConversationStore(redis.Redis.from_url(os.environ["REDIS_URL"]))
        store.create_session(conv_id, user_id=user_id, merchant_id="merchant_cool-shop",
                             workflow_name="shopify_onboarding")
        store.append_message(conv_id, sender="user", content="Hi")
        store.end_conversation(conv_id)

    ``redis_client`` may be a ``redis.Redis`` or a ``redis.cluster.RedisCluster``. Each call is
    one or two pipelined round trips of single-key scripts: every key of a conversation is
    refreshed to one deadline, and a crash can at worst leave the counter one ahead of its
    messages (the archiver records the missing message) — never an immortal key.
    Arguments are checked before it (``ValidationError``): text must be valid Unicode ``str``,
    conversation ids at most 512 characters, merchant ids and workflow names at most 255.
    """

    def __init__(
        self,
        redis_client: RedisClient,
        *,
        ttl: timedelta = DEFAULT_CONVERSATION_TTL,
    ) -> None:
        if ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        self._redis = redis_client
        self._ttl = int(ttl.total_seconds())

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

        ``user_id`` and ``merchant_id`` are stored on the session (empty strings until known,
        as the agents service writes them) so the archiver can link the conversation without
        guessing. Resuming an existing conversation overwrites only what is given (a known user
        is never blanked, ``started_at`` is kept) and refreshes every key of it, messages
        included, to one deadline.
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
        conv_defaults = {**defaults, "id": conversation_id, "message_count": "0"}
        pipe = self._redis.pipeline(transaction=False)
        for key, fallback in (
            (conversation_key(conversation_id), conv_defaults),
            (session_key(conversation_id), defaults),
        ):
            args: list[str | int] = [self._ttl, len(given), *_flatten(given), *_flatten(fallback)]
            queue_script(pipe, PUT_HASH_SCRIPT, key, *args)
        queue_script(pipe, DUE_SCRIPT, DUE_KEY, self._expires_at(), conversation_id)
        if given.get("user_id"):
            index = user_conversations_key(given["user_id"])
            queue_script(pipe, USER_INDEX_SCRIPT, index, self._ttl, conversation_id)
        count = int(pipe.execute()[0])
        self._refresh_messages(conversation_id, count)

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
        return set_conversation_user(self._redis, conversation_id, user_id, merchant_id, self._ttl)

    def append_message(
        self,
        conversation_id: str,
        *,
        sender: str,
        content: str,
        timestamp: datetime | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> int:
        """Append one message; returns its sequence number (0-based).

        The sequence number is reserved first (the counter, with the conversation's TTL), then
        the message, the TTL of every key of the conversation and the due index are written
        in one pipeline, so an early message never expires before the conversation key.
        """
        validate_conversation_id(conversation_id)
        fields: dict[str, str] = {
            **validate_text_map(extra, field="extra"),
            "sender": validate_text(sender, field="sender"),
            "content": validate_text(content, field="content"),
            "timestamp": (timestamp or datetime.now(UTC)).isoformat(),
        }
        conv = conversation_key(conversation_id)
        seq = int(self._redis.eval(NEXT_SEQ_SCRIPT, 1, conv, self._ttl))
        pipe = self._redis.pipeline(transaction=False)
        queue_script(
            pipe,
            PUT_HASH_SCRIPT,
            message_key(conversation_id, seq),
            self._ttl,
            len(fields),
            *_flatten(fields),
        )
        pipe.expire(session_key(conversation_id), self._ttl)
        for earlier in range(seq):
            pipe.expire(message_key(conversation_id, earlier), self._ttl)
        queue_script(pipe, DUE_SCRIPT, DUE_KEY, self._expires_at(), conversation_id)
        pipe.execute()
        return seq

    def end_conversation(self, conversation_id: str, *, ended_at: datetime | None = None) -> bool:
        """Mark the conversation ended: the archiver picks it up on its next pass.

        Returns ``False`` (and writes nothing) when the conversation is no longer in Redis: an
        ``ended_at`` on a vanished key would create a hash that never expires.
        """
        validate_conversation_id(conversation_id)
        ended = (ended_at or datetime.now(UTC)).isoformat()
        if not int(self._redis.eval(END_SCRIPT, 1, conversation_key(conversation_id), ended)):
            return False
        self._redis.zadd(DUE_KEY, {conversation_id: 0})
        return True

    def remember_merchant(
        self, shop_domain: str, user_id: str, *, merchant_id: str | None = None
    ) -> None:
        """Write ``merchant:<shop>`` with ``user_id``, keeping the other fields already there.

        A read-modify-write under WATCH (one key, so also on a cluster): a concurrent writer of
        the same key (the auth service storing a token) makes the transaction retry instead of
        losing either update.
        """
        validate_text(
            shop_domain, field="shop_domain", max_length=MAX_SHOP_DOMAIN_LENGTH, required=True
        )
        validate_user_id(user_id)
        if merchant_id is not None:
            _merchant(merchant_id)
        remember_merchant(self._redis, shop_domain, user_id, merchant_id)

    def _refresh_messages(self, conversation_id: str, count: int) -> None:
        """Give the messages of a resumed conversation the same deadline as the rest."""
        if count <= 0:
            return
        pipe = self._redis.pipeline(transaction=False)
        for seq in range(count):
            pipe.expire(message_key(conversation_id, seq), self._ttl)
        pipe.execute()


def _merchant(merchant_id: str) -> str:
    return validate_text(merchant_id, field="merchant_id", max_length=MAX_MERCHANT_ID_LENGTH)
