# Generated from supabase_identity/_async/_redaction.py by scripts/unasync: do not edit.
"""Erasing a shop's live data from Redis: what a ``shop/redact`` must reach besides Postgres.

Written once, as async code: ``scripts/unasync`` generates the blocking twin under ``_sync/``.

What belongs to a shop in Redis (key names in :mod:`supabase_identity._redis_keys`):

* ``merchant:<shop>``, whose ``user_id`` also names the shop's user;
* every live conversation of that user: ``conversation:<id>``, ``session:<id>`` and
  ``message:<id>:<seq>``, plus the conversation's entries in the archiver's own keys (due
  index, lease, unlinked and dead hashes). They are found in the user's index
  (``identity:user:<user>:conversations``, kept by ``ConversationStore``) and, for
  conversations written without it, by a ``SCAN`` over ``session:*`` pages of bounded size
  (never ``KEYS``) reading each session's ``user_id``;
* the user's events waiting in the outbox, and its dead letters.

Every delete names one key (or one list, by a one-key script), so the same code runs on one
Redis and on a Redis Cluster, where a conversation's keys live in different slots. Running it
twice deletes nothing the second time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Final

from .._constants import OUTBOX_KEY_PREFIX
from .._io import RedisClient
from .._models import RedisRedaction
from .._redis import as_int, text
from .._redis_keys import (
    DEAD_LETTER_KEY,
    DUE_KEY,
    OUTBOX_PURGE_SCRIPT,
    SESSION_PATTERN,
    SESSION_PREFIX,
    UNLINKED_KEY,
    conversation_key,
    lease_key,
    legacy_outbox_keys,
    merchant_key,
    message_key,
    outbox_keys,
    session_key,
    user_conversations_key,
)

__all__ = ["merchant_user_id", "redact_redis"]

#: Session keys read per pipelined round trip while scanning (bounds memory and request size).
SCAN_PAGE: Final = 1000
#: Message numbers deleted per round trip past a conversation's counter; the walk stops at the
#: first block in which nothing existed (a gap shorter than this is crossed).
MESSAGE_BLOCK: Final = 64
#: Conversations whose keys are deleted in the same pipelined round trips.
CONVERSATION_PAGE: Final = 200


def merchant_user_id(redis_client: RedisClient, shop_domain: str) -> str | None:
    """The ``user_id`` in ``merchant:<shop>``, or ``None`` (absent, or not JSON with one)."""
    raw = text(redis_client.get(merchant_key(shop_domain)))
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    found = data.get("user_id") if isinstance(data, dict) else None
    return found if isinstance(found, str) and found else None


def redact_redis(
    redis_client: RedisClient,
    shop_domain: str,
    user_ids: Iterable[str],
    *,
    outbox_names: Sequence[str] = (OUTBOX_KEY_PREFIX,),
) -> RedisRedaction:
    """Delete everything Redis holds for ``shop_domain`` and its users; return what went.

    ``shop_domain`` must already be normalized; ``user_ids`` are the shop's user ids known
    elsewhere (the database), to which the one in ``merchant:<shop>`` is added.
    """
    users = {u for u in user_ids if u}
    from_merchant = merchant_user_id(redis_client, shop_domain)
    if from_merchant:
        users.add(from_merchant)
    merchants = int(redis_client.delete(merchant_key(shop_domain)))
    conversations, keys, messages = 0, 0, 0
    if users:
        found = sorted(_indexed(redis_client, users) | _scanned(redis_client, users))
        for start in range(0, len(found), CONVERSATION_PAGE):
            page = found[start : start + CONVERSATION_PAGE]
            gone, gone_keys, gone_messages = _delete_conversations(redis_client, page)
            conversations += gone
            keys += gone_keys + gone_messages
            messages += gone_messages
        keys += int(redis_client.delete(*(user_conversations_key(u) for u in users)))
    outbox_entries, dead_letters = _purge_outboxes(redis_client, users, outbox_names)
    return RedisRedaction(
        merchant_records=merchants,
        conversations=conversations,
        messages=messages,
        keys=keys + merchants,
        outbox_entries=outbox_entries,
        dead_letters=dead_letters,
    )


def _indexed(redis_client: RedisClient, users: set[str]) -> set[str]:
    found: set[str] = set()
    for user_id in sorted(users):
        members = redis_client.smembers(user_conversations_key(user_id))
        found.update(text(m) or "" for m in members)
    found.discard("")
    return found


def _scanned(redis_client: RedisClient, users: set[str]) -> set[str]:
    """Conversations whose ``session:<id>`` names one of ``users`` (one SCAN, bounded pages)."""
    found: set[str] = set()
    page: list[str] = []
    for key in redis_client.scan_iter(match=SESSION_PATTERN, count=SCAN_PAGE):
        page.append(text(key) or "")
        if len(page) >= SCAN_PAGE:
            found |= _sessions_of(redis_client, page, users)
            page = []
    if page:
        found |= _sessions_of(redis_client, page, users)
    return found


def _sessions_of(redis_client: RedisClient, session_keys: list[str], users: set[str]) -> set[str]:
    pipe = redis_client.pipeline(transaction=False)
    for key in session_keys:
        pipe.hget(key, "user_id")
    replies = pipe.execute(raise_on_error=False)
    return {
        key[len(SESSION_PREFIX) :]
        for key, reply in zip(session_keys, replies, strict=True)
        if not isinstance(reply, Exception) and text(reply) in users
    }


#: The keys and archiver entries :func:`_delete_conversations` removes per conversation, after
#: reading its message counter; the first two are the contract keys it counts.
_PER_CONVERSATION: Final = 7


def _delete_conversations(
    redis_client: RedisClient, conversation_ids: Sequence[str]
) -> tuple[int, int, int]:
    """Delete a page of conversations' keys in a few round trips for the whole page.

    Returns (conversations that had a key, contract keys deleted, messages deleted). One
    pipeline reads each message counter and deletes the conversation's own keys and archiver
    entries; then the messages are walked for every conversation of the page at once.
    """
    pipe = redis_client.pipeline(transaction=False)
    for conversation_id in conversation_ids:
        pipe.hget(conversation_key(conversation_id), "message_count")  # read before the delete
        pipe.delete(conversation_key(conversation_id))
        pipe.delete(session_key(conversation_id))
        pipe.delete(lease_key(conversation_id))
        pipe.zrem(DUE_KEY, conversation_id)
        pipe.hdel(UNLINKED_KEY, conversation_id)
        pipe.hdel(DEAD_LETTER_KEY, conversation_id)
    replies: list[Any] = pipe.execute()
    conversations, keys = 0, 0
    counters: dict[str, int] = {}
    for n, conversation_id in enumerate(conversation_ids):
        counter, conversation, session = replies[n * _PER_CONVERSATION : n * _PER_CONVERSATION + 3]
        gone = int(conversation) + int(session)
        conversations += gone > 0
        keys += gone
        counters[conversation_id] = max(as_int(counter) or 0, 0)
    return conversations, keys, _delete_messages(redis_client, counters)


def _delete_messages(redis_client: RedisClient, counters: dict[str, int]) -> int:
    """Delete ``message:<id>:<seq>`` for each conversation, all walked in the same round trips.

    A conversation's first block runs from 0 past its counter by :data:`MESSAGE_BLOCK`, each
    next block :data:`MESSAGE_BLOCK` further; its walk ends at the first block that deleted
    nothing, so gaps shorter than a block are crossed and a wrong counter costs no message.
    """
    deleted = 0
    walks = {cid: range(counter + MESSAGE_BLOCK) for cid, counter in counters.items()}
    while walks:
        pipe = redis_client.pipeline(transaction=False)
        for conversation_id, seqs in walks.items():
            for seq in seqs:
                pipe.delete(message_key(conversation_id, seq))
        replies = iter(pipe.execute())
        following: dict[str, range] = {}
        for conversation_id, seqs in walks.items():
            found = sum(int(next(replies)) for _ in seqs)
            if found:
                deleted += found
                following[conversation_id] = range(seqs.stop, seqs.stop + MESSAGE_BLOCK)
        walks = following
    return deleted


def _purge_outboxes(
    redis_client: RedisClient, users: set[str], outbox_names: Sequence[str]
) -> tuple[int, int]:
    """Remove the users' events from each outbox (pending, in flight, legacy) and dead letters."""
    if not users:
        return 0, 0
    entries, dead = 0, 0
    args = sorted(users)
    for name in dict.fromkeys(outbox_names):
        pending, processing, dead_key, _lock = outbox_keys(name)
        for key in (pending, processing, *legacy_outbox_keys(name)):
            entries += int(redis_client.eval(OUTBOX_PURGE_SCRIPT, 1, key, *args))
        dead += int(redis_client.eval(OUTBOX_PURGE_SCRIPT, 1, dead_key, *args))
    return entries, dead
