"""What a login writes into Redis: the shop's merchant record and the live conversation's user.

One source for the blocking writer side (``ConversationStore.remember_merchant`` and
``set_user``, which ``complete_oauth`` calls) and for ``acomplete_oauth``, so the two cannot
drift: both keep the per-user index of live conversations, and both merge the merchant record
under WATCH. Callers check the arguments first.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast

from .._redis import AsyncRedisClient, queue_script
from .._redis_keys import (
    SET_IF_EXISTS_SCRIPT,
    USER_INDEX_SCRIPT,
    conversation_key,
    merchant_key,
    session_key,
    user_conversations_key,
)
from .._validation import validate_user_id

__all__ = ["merchant_record", "remember_merchant", "set_conversation_user"]


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
    data["updated_at"] = datetime.now(UTC).isoformat()
    return json.dumps(data)


async def remember_merchant(
    redis_client: AsyncRedisClient, shop_domain: str, user_id: str, merchant_id: str | None
) -> None:
    """Write ``merchant:<shop>`` with ``user_id``, keeping the other fields already there.

    A read-modify-write under WATCH (one key, so also on a cluster): a concurrent writer of the
    same key (the auth service storing a token) makes the transaction retry instead of losing
    either update.
    """
    key = merchant_key(shop_domain)

    async def merge(pipe: Any) -> None:
        current = await pipe.get(key)
        pipe.multi()
        pipe.set(
            key,
            merchant_record(
                current, shop_domain=shop_domain, user_id=user_id, merchant_id=merchant_id
            ),
        )

    # Cast: redis-py's cluster clients annotate ``func`` differently from the single-node ones.
    await redis_client.transaction(cast(Any, merge), key)


async def set_conversation_user(
    redis_client: AsyncRedisClient,
    conversation_id: str,
    user_id: str,
    merchant_id: str | None,
    ttl_seconds: int,
) -> bool:
    """Attach a user (and merchant) to a live conversation; return whether it was there.

    Only keys that exist are touched (a write to an expired conversation would create a hash
    that never expires). A conversation found is added to the user's index of live
    conversations, which expires ``ttl_seconds`` after its last addition.
    """
    args = ["user_id", user_id] + (["merchant_id", merchant_id] if merchant_id else [])
    pipe = redis_client.pipeline(transaction=False)
    for key in (session_key(conversation_id), conversation_key(conversation_id)):
        queue_script(pipe, SET_IF_EXISTS_SCRIPT, key, *args)
    touched = any(int(done) for done in await pipe.execute())
    if touched:
        index = user_conversations_key(user_id)
        await redis_client.eval(USER_INDEX_SCRIPT, 1, index, ttl_seconds, conversation_id)
    return touched
