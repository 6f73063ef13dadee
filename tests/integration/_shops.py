"""A shop with data in every place ``redact_shop`` must reach, and checks that it is gone.

Used by the redaction and webhook tests: Postgres rows (user, archived conversations, events,
an archived event) and Redis keys (``merchant:<shop>``, a conversation written by
``ConversationStore``, one written in the seed's layout with no index, outbox entries, a dead
letter).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import redis

from supabase_identity import IdentityClient, OutboxEvent, RedisOutbox
from supabase_identity._models import DeadLetter
from supabase_identity._redis_keys import (
    conversation_key,
    merchant_key,
    message_key,
    session_key,
    user_conversations_key,
)
from supabase_identity.archive import ConversationStore

from .conftest import sdk_count, sdk_insert_conversations


@dataclass
class Shop:
    domain: str
    user_id: str
    live: list[str] = field(default_factory=list)
    """Live conversation ids (indexed ones first, then seed-layout ones)."""
    messages: int = 0

    def redis_keys(self) -> list[str]:
        keys = [merchant_key(self.domain), user_conversations_key(self.user_id)]
        for conversation_id in self.live:
            keys += [conversation_key(conversation_id), session_key(conversation_id)]
            keys += [message_key(conversation_id, seq) for seq in range(3)]
        return keys


def populate_shop(
    client: IdentityClient,
    r: redis.Redis,
    outbox: RedisOutbox,
    db: psycopg.Connection[object],
    domain: str,
    *,
    archived: int = 3,
    live: int = 2,
    seed_live: int = 1,
) -> Shop:
    """Create ``domain``'s user and its data everywhere; returns what was written."""
    user_id, _ = client.get_or_create_user(domain, email="owner@example.com")
    shop = Shop(domain, user_id)
    sdk_insert_conversations(client, user_id, archived)
    for i in range(2):
        client.log_user_event(user_id, "redaction.test", {"i": i})
    db.execute(
        "insert into identity.events_archive (id, user_id, event_type, created_at, received_at)"
        " values (gen_random_uuid(), %s, 'redaction.old', now(), now())",
        (user_id,),
    )
    store = ConversationStore(r)
    store.remember_merchant(domain, user_id)
    for _ in range(live):
        conversation_id = f"redact-{uuid.uuid4().hex}"
        store.create_session(conversation_id, user_id=user_id, merchant_id="m-1")
        for seq in range(3):
            store.append_message(conversation_id, sender="user", content=f"secret {seq}")
        shop.live.append(conversation_id)
    for _ in range(seed_live):  # the seed's layout: no counter, no index
        conversation_id = f"seed-{uuid.uuid4().hex}"
        r.hset(session_key(conversation_id), mapping={"user_id": user_id, "merchant_id": "m-1"})
        r.hset(conversation_key(conversation_id), mapping={"id": conversation_id})
        for seq in range(3):
            r.hset(message_key(conversation_id, seq), mapping={"sender": "user", "content": "x"})
        shop.live.append(conversation_id)
    shop.messages = 3 * (live + seed_live)
    event = OutboxEvent(
        id=uuid.uuid4(),
        user_id=user_id,
        event_type="redaction.pending",
        event_data={"secret": domain},
        created_at=datetime.now(UTC),
    )
    outbox.push([event])
    outbox.add_dead_letters(
        [DeadLetter(event=event, reason="test", dead_lettered_at=datetime.now(UTC))]
    )
    return shop


def outbox_mentions(outbox: RedisOutbox, user_id: str) -> int:
    """Entries of ``user_id`` in the outbox's pending list and dead letters."""
    pending = outbox.redis().lrange(outbox.pending_key, 0, -1)
    dead = outbox.redis().lrange(outbox.dead_key, 0, -1)
    return sum(user_id.encode() in raw for raw in [*pending, *dead])


def remaining(
    client: IdentityClient, r: redis.Redis, outbox: RedisOutbox, shop: Shop
) -> dict[str, int]:
    """How much of ``shop`` is still anywhere (all zeros once it is redacted)."""
    return {
        "users": sdk_count(client, "users", id=shop.user_id),
        "conversations": sdk_count(client, "conversations", user_id=shop.user_id),
        "events": sdk_count(client, "events", user_id=shop.user_id),
        "events_archive": sdk_count(client, "events_archive", user_id=shop.user_id),
        "redis_keys": int(r.exists(*shop.redis_keys())),
        "outbox": outbox_mentions(outbox, shop.user_id),
    }


def gone(client: IdentityClient, r: redis.Redis, outbox: RedisOutbox, shop: Shop) -> bool:
    return not any(remaining(client, r, outbox, shop).values())
