"""The async SDK against the real local stack: every public coroutine, concurrency, outage."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis

from supabase_identity import (
    AsyncIdentityClient,
    IdentityClient,
    NotFoundError,
    PermissionDeniedError,
    Privilege,
    ValidationError,
)
from supabase_identity._redis_keys import outbox_keys

from .conftest import (
    PostgrestSwitch,
    SdkEnv,
    sdk_count,
    sdk_insert_conversations,
    sdk_shop,
)

pytestmark = pytest.mark.integration


async def test_get_or_create_user_new_then_returning(
    sdk_aservice: AsyncIdentityClient, sdk_service: IdentityClient
) -> None:
    shop = sdk_shop("async")
    user_id, is_new = await sdk_aservice.get_or_create_user(shop, shopify_id="123")
    again = await sdk_aservice.get_or_create_user(shop.upper(), email="later@example.com")
    assert is_new and again == (user_id, False)
    profile = await sdk_aservice.get_user_profile(user_id)
    assert (profile.shopify_id, profile.email) == ("123", "later@example.com")
    assert sdk_count(sdk_service, "users", shop_domain=shop) == 1
    with pytest.raises(ValidationError):
        await sdk_aservice.get_or_create_user("not a shop")


async def test_fifty_concurrent_calls_with_gather_make_one_user(
    sdk_aservice: AsyncIdentityClient, sdk_service: IdentityClient
) -> None:
    shop = sdk_shop("arace")
    results = await asyncio.gather(*(sdk_aservice.get_or_create_user(shop) for _ in range(50)))
    assert len({user_id for user_id, _ in results}) == 1
    assert sum(is_new for _, is_new in results) == 1
    assert sdk_count(sdk_service, "users", shop_domain=shop) == 1


async def test_events_profile_and_history(
    sdk_aservice: AsyncIdentityClient, sdk_service: IdentityClient
) -> None:
    user_id, _ = await sdk_aservice.get_or_create_user(sdk_shop("ahist"))
    rows = sdk_insert_conversations(sdk_service, user_id, 12, source_ids=True)
    event_type = f"async_{uuid.uuid4().hex[:12]}"
    await sdk_aservice.log_user_event(user_id, event_type, {"n": 1})

    assert sdk_count(sdk_service, "events", event_type=event_type) == 1
    profile = await sdk_aservice.get_user_profile(user_id)
    assert (profile.stats.total_conversations, profile.stats.total_events) == (12, 1)

    page = await sdk_aservice.get_user_conversations(user_id, limit=5, offset=5)
    assert page.total == 12
    assert [c.conversation_id for c in page.items] == [r["source_id"] for r in rows[::-1][5:10]]
    seen = []
    cursor = None
    while True:
        keyset = await sdk_aservice.get_user_conversations(user_id, limit=5, cursor=cursor)
        seen += [c.conversation_id for c in keyset.items]
        if (cursor := keyset.next_cursor) is None:
            break
    assert seen == [r["source_id"] for r in reversed(rows)]

    conv = await sdk_aservice.get_conversation(user_id, rows[0]["source_id"])
    assert conv.messages == rows[0]["messages"]
    with pytest.raises(NotFoundError):
        await sdk_aservice.get_conversation(user_id, "conv-does-not-exist")


async def test_user_scoped_async_client_cannot_read_another_user(
    sdk_aservice: AsyncIdentityClient, sdk_service: IdentityClient
) -> None:
    alice, _ = await sdk_aservice.get_or_create_user(sdk_shop("aalice"))
    bob, _ = await sdk_aservice.get_or_create_user(sdk_shop("abob"))
    (bob_conv,) = sdk_insert_conversations(sdk_service, bob, 1)
    sdk_insert_conversations(sdk_service, alice, 2)
    as_alice = sdk_aservice.for_user(alice)
    assert as_alice.privilege is Privilege.USER

    assert (await as_alice.get_user_conversations(alice)).total == 2
    assert (await as_alice.get_user_profile(alice)).user_id == alice
    with pytest.raises(NotFoundError):
        await as_alice.get_user_profile(bob)
    with pytest.raises(NotFoundError):
        await as_alice.get_conversation(bob, bob_conv["id"])
    assert (await as_alice.get_user_conversations(bob)).total == 0
    with pytest.raises(PermissionDeniedError):
        await as_alice.get_or_create_user(sdk_shop())


async def test_public_key_async_client_is_refused(sdk_env: SdkEnv) -> None:
    async with AsyncIdentityClient(key=sdk_env.gw.publishable_key, redis_url=None) as public:
        with pytest.raises(PermissionDeniedError):
            await public.get_user_profile("usr_" + "0" * 24)
        with pytest.raises(PermissionDeniedError):
            await public.log_user_event("usr_" + "0" * 24, "x", {})


async def test_event_logged_while_postgrest_is_down_is_delivered_once_after_restart(
    sdk_aservice: AsyncIdentityClient,
    sdk_service: IdentityClient,
    sdk_redis: redis.Redis,
    sdk_prefix: str,
    sdk_postgrest: PostgrestSwitch,
) -> None:
    user_id, _ = await sdk_aservice.get_or_create_user(sdk_shop("aoutage"))
    event_type = f"aoutage_{uuid.uuid4().hex[:12]}"
    sdk_postgrest.stop()

    await sdk_aservice.log_user_event(user_id, event_type, {"during": "outage"})

    assert sdk_redis.llen(outbox_keys(sdk_prefix)[0]) == 1
    assert (await sdk_aservice.flush_events()).remaining == 1
    await asyncio.to_thread(sdk_postgrest.start)
    result = await sdk_aservice.flush_events()
    assert (result.delivered, result.remaining, result.error) == (1, 0, None)
    assert (await sdk_aservice.flush_events()).delivered == 0
    assert sdk_count(sdk_service, "events", event_type=event_type) == 1
    assert (await sdk_aservice.outbox_stats()).pending == 0
