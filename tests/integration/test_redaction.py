"""``redact_shop`` against the real stack: every copy of one shop goes, another shop stays.

Postgres through the gateway (the SQL function), Redis on the stack (one node here;
``test_cluster.py`` runs the Redis part on a cluster).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import redis.asyncio

from supabase_identity import AsyncIdentityClient, AsyncRedisOutbox, IdentityClient, RedisOutbox
from supabase_identity._redis_keys import (
    COMPLIANCE_PENDING_KEY,
    conversation_key,
    message_key,
    session_key,
)
from supabase_identity._sync._redaction import CONVERSATION_PAGE, redact_redis
from supabase_identity.archive import ArchiverConfig, ConversationArchiver

from .._wait import wait_until
from ._shops import gone, outbox_mentions, populate_shop, remaining
from .conftest import SdkEnv, sdk_count, sdk_shop

pytestmark = pytest.mark.integration

AUDIT_KEY = "test-audit-key"


@pytest.fixture
def outbox(sdk_redis: redis.Redis, sdk_prefix: str) -> RedisOutbox:
    return RedisOutbox(sdk_redis, key_prefix=sdk_prefix)


def test_redact_shop_erases_every_copy_and_nothing_else(
    sdk_service: IdentityClient,
    sdk_redis: redis.Redis,
    outbox: RedisOutbox,
    db: psycopg.Connection[Any],
) -> None:
    target = populate_shop(sdk_service, sdk_redis, outbox, db, sdk_shop("redact"))
    other = populate_shop(sdk_service, sdk_redis, outbox, db, sdk_shop("keep"))
    before_other = remaining(sdk_service, sdk_redis, outbox, other)

    result = sdk_service.redact_shop(target.domain.upper(), sdk_redis, audit_key=AUDIT_KEY)

    assert (result.users, result.conversations, result.events, result.events_archive) == (
        1,
        3,
        2,
        1,
    )
    assert result.redis is not None
    assert result.redis.merchant_records == 1
    assert result.redis.conversations == 3, "two indexed conversations and one found by SCAN"
    assert result.redis.messages == target.messages
    assert (result.redis.outbox_entries, result.redis.dead_letters) == (1, 1)
    assert remaining(sdk_service, sdk_redis, outbox, target) == dict.fromkeys(
        ("users", "conversations", "events", "events_archive", "redis_keys", "outbox"), 0
    )
    assert remaining(sdk_service, sdk_redis, outbox, other) == before_other
    assert outbox_mentions(outbox, other.user_id) == 2, "the other shop's outbox entries stay"


def test_redact_shop_twice_finds_nothing_and_audits_both(
    sdk_service: IdentityClient,
    sdk_redis: redis.Redis,
    outbox: RedisOutbox,
    db: psycopg.Connection[Any],
) -> None:
    shop = populate_shop(sdk_service, sdk_redis, outbox, db, sdk_shop("twice"), archived=1)
    sdk_service.redact_shop(shop.domain, sdk_redis, audit_key=AUDIT_KEY)

    again = sdk_service.redact_shop(shop.domain, sdk_redis, audit_key=AUDIT_KEY)

    assert (again.users, again.conversations, again.events, again.events_archive) == (0, 0, 0, 0)
    assert again.redis is not None
    assert again.redis.keys == 0
    rows = db.execute(
        "select shop_hash, counts from identity.compliance_audit where shop_hash = %s",
        (_hash(shop.domain),),
    ).fetchall()
    assert len(rows) == 2, "each call leaves an audit row"
    assert all(shop.domain not in str(row) for row in rows), "the audit never holds the domain"


async def test_async_redact_shop(
    sdk_env: SdkEnv,
    sdk_service: IdentityClient,
    sdk_redis: redis.Redis,
    outbox: RedisOutbox,
    sdk_prefix: str,
    db: psycopg.Connection[Any],
) -> None:
    shop = populate_shop(sdk_service, sdk_redis, outbox, db, sdk_shop("aredact"))
    r = redis.asyncio.Redis.from_url(sdk_env.redis_url)
    try:
        async with AsyncIdentityClient(outbox=AsyncRedisOutbox(r, key_prefix=sdk_prefix)) as aio:
            result = await aio.redact_shop(shop.domain, audit_key=AUDIT_KEY)
    finally:
        await r.aclose()

    assert result.users == 1
    assert result.redis is not None, "the client's own Redis outbox names the Redis to clear"
    assert result.redis.conversations == 3
    assert gone(sdk_service, sdk_redis, outbox, shop)


def _hash(domain: str) -> str:
    from supabase_identity._compliance import shop_hash

    return shop_hash(AUDIT_KEY.encode(), domain)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "supabase-identity"), *args],
        env={**os.environ, "IDENTITY_AUDIT_KEY": AUDIT_KEY},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_redact_shop_needs_yes_off_a_terminal_then_prints_counts(
    sdk_service: IdentityClient,
    sdk_redis: redis.Redis,
    outbox: RedisOutbox,
    db: psycopg.Connection[Any],
) -> None:
    shop = populate_shop(sdk_service, sdk_redis, outbox, db, sdk_shop("cli"), archived=2)

    refused = _cli("redact-shop", shop.domain)
    assert refused.returncode == 1
    assert "--yes" in refused.stderr
    assert sdk_count(sdk_service, "users", id=shop.user_id) == 1, "nothing deleted unconfirmed"

    done = _cli("redact-shop", shop.domain, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)
    assert (counts["users"], counts["conversations"], counts["events"]) == (1, 2, 2)
    assert counts["redis"]["conversations"] == 3
    assert counts["redis"]["merchant_records"] == 1

    again = json.loads(_cli("redact-shop", shop.domain, "--yes", "--json").stdout)
    assert (again["users"], again["conversations"], again["redis"]["keys"]) == (0, 0, 0)


def test_the_archiver_loop_finishes_a_redaction_a_dead_process_left(
    sdk_service: IdentityClient,
    sdk_redis: redis.Redis,
    outbox: RedisOutbox,
    db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDENTITY_AUDIT_KEY", AUDIT_KEY)
    shop = populate_shop(sdk_service, sdk_redis, outbox, db, sdk_shop("orphan"), archived=1)
    # What a webhook left when its process died right after answering (an hour ago).
    record = {"webhook_id": str(uuid.uuid4()), "received_at": time.time() - 3600}
    sdk_redis.hset(COMPLIANCE_PENDING_KEY, shop.domain, json.dumps(record))
    service = IdentityClient(outbox=outbox)  # reads IDENTITY_AUDIT_KEY, as a deployment would
    archiver = ConversationArchiver(
        service, sdk_redis, config=ArchiverConfig(interval=timedelta(seconds=1))
    )
    loop_thread = threading.Thread(target=lambda: asyncio.run(archiver.run_forever()))
    try:
        loop_thread.start()
        wait_until(
            lambda: (
                gone(sdk_service, sdk_redis, outbox, shop)
                and not sdk_redis.hexists(COMPLIANCE_PENDING_KEY, shop.domain)
            ),
            "the archiver's loop did not finish the pending redaction",
        )
    finally:
        archiver.stop()
        loop_thread.join(timeout=60)
        service.close()
    assert not loop_thread.is_alive(), "run_forever did not stop"


def test_redis_redaction_crosses_gaps_and_wrong_counters_page_by_page(
    sdk_redis: redis.Redis,
) -> None:
    # Messages past a wrong counter, a gap shorter than a block, no counter at all, a counter far
    # above the messages, and more conversations than one page: every message goes, a
    # bystander's stay.
    user, bystander = f"usr_{uuid.uuid4().hex[:24]}", f"usr_{uuid.uuid4().hex[:24]}"
    layouts: dict[str, tuple[str | None, list[int]]] = {
        "wrong-counter-and-gap": ("2", [*range(10), *range(60, 70)]),
        "no-counter": (None, list(range(1, 6))),
        "counter-too-high": ("500", [0, 1, 2]),
    }
    layouts.update(
        {f"page-{n}": ("1", [0]) for n in range(CONVERSATION_PAGE)}  # a second page is needed
    )
    ids = {name: f"redact-{name}-{uuid.uuid4().hex}" for name in layouts}
    kept = f"redact-kept-{uuid.uuid4().hex}"
    for owner, conversation, (counter, seqs) in [
        *((user, ids[name], layout) for name, layout in layouts.items()),
        (bystander, kept, ("3", [0, 1, 2])),
    ]:
        sdk_redis.hset(conversation_key(conversation), mapping={"status": "active"})
        if counter is not None:
            sdk_redis.hset(conversation_key(conversation), "message_count", counter)
        sdk_redis.hset(session_key(conversation), mapping={"user_id": owner})
        for seq in seqs:
            sdk_redis.hset(message_key(conversation, seq), mapping={"content": "hi"})

    try:
        result = redact_redis(sdk_redis, f"nobody-{uuid.uuid4().hex[:8]}.myshopify.com", [user])
        assert result.conversations == len(layouts)
        assert result.messages == sum(len(seqs) for _, seqs in layouts.values())
        for conversation in ids.values():
            assert list(sdk_redis.scan_iter(match=f"message:{conversation}:*")) == []
            assert sdk_redis.exists(conversation_key(conversation), session_key(conversation)) == 0
        assert sdk_redis.exists(*(message_key(kept, seq) for seq in range(3))) == 3
    finally:
        sdk_redis.delete(conversation_key(kept), session_key(kept))
        sdk_redis.delete(*(message_key(kept, seq) for seq in range(3)))
