"""The sync SDK against the real local stack (gateway → PostgREST → Postgres, and Redis).

Every public function is exercised over real HTTP. Each test creates its own shops, so tests
are independent and rerunnable on a database that already holds data.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import redis

import supabase_identity
from supabase_identity import (
    AuthenticationError,
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


def test_get_or_create_user_creates_once_and_normalizes(sdk_service: IdentityClient) -> None:
    shop = sdk_shop()
    user_id, is_new = sdk_service.get_or_create_user(shop, email="owner@example.com")
    assert is_new is True
    assert user_id.startswith("usr_")
    first_seen = sdk_service.get_user_profile(user_id).last_seen

    again, is_new_again = sdk_service.get_or_create_user(f"  HTTPS://{shop.upper()}/ ", name="Ann")

    assert (again, is_new_again) == (user_id, False)
    profile = sdk_service.get_user_profile(user_id)
    assert profile.shop_domain == shop
    assert profile.email == "owner@example.com", "an omitted email keeps the stored one"
    assert profile.name == "Ann"
    assert profile.last_seen > first_seen
    assert sdk_count(sdk_service, "users", shop_domain=shop) == 1


def test_invalid_shop_is_refused_locally(sdk_service: IdentityClient) -> None:
    with pytest.raises(ValidationError) as info:
        sdk_service.get_or_create_user("shop.example.com")
    assert info.value.field == "shop_domain"


def test_fifty_concurrent_calls_for_one_shop_make_one_user(sdk_service: IdentityClient) -> None:
    shop = sdk_shop("race")
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: sdk_service.get_or_create_user(shop), range(50)))
    assert len({user_id for user_id, _ in results}) == 1
    assert sum(is_new for _, is_new in results) == 1
    assert sdk_count(sdk_service, "users", shop_domain=shop) == 1


def test_log_user_event_is_stored_once_with_its_data(sdk_service: IdentityClient) -> None:
    user_id, _ = sdk_service.get_or_create_user(sdk_shop())
    event_type = f"it_{uuid.uuid4().hex[:12]}"
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

    sdk_service.log_user_event(user_id, event_type, {"first_time": True}, occurred_at=when)

    rows = (
        sdk_service.supabase.postgrest.from_("events")
        .select("user_id,event_data,created_at")
        .eq("event_type", event_type)
        .execute()
        .data
    )
    assert len(rows) == 1
    [stored] = rows
    assert isinstance(stored, dict)
    assert stored["user_id"] == user_id
    assert stored["event_data"] == {"first_time": True}
    assert isinstance(stored["created_at"], str)
    assert datetime.fromisoformat(stored["created_at"]) == when
    assert sdk_service.get_user_profile(user_id).stats.total_events == 1
    assert sdk_service.outbox.pending_count() == 0


def test_event_for_unknown_user_is_dead_lettered(
    sdk_service: IdentityClient, sdk_redis: redis.Redis, sdk_prefix: str
) -> None:
    ghost = "usr_" + uuid.uuid4().hex[:24]
    sdk_service.log_user_event(ghost, "login", {})
    (raw,) = sdk_redis.lrange(outbox_keys(sdk_prefix)[2], 0, -1)
    assert json.loads(raw)["event"]["user_id"] == ghost
    assert sdk_count(sdk_service, "events", user_id=ghost) == 0


def test_profile_stats_count_conversations_messages_and_events(
    sdk_service: IdentityClient,
) -> None:
    user_id, _ = sdk_service.get_or_create_user(sdk_shop())
    rows = sdk_insert_conversations(sdk_service, user_id, 3)
    sdk_service.log_user_event(user_id, "a", {})
    sdk_service.log_user_event(user_id, "b", {})

    stats = sdk_service.get_user_profile(user_id).stats

    assert stats.total_conversations == 3
    assert stats.total_messages == sum(len(r["messages"]) for r in rows)
    assert stats.total_events == 2
    assert stats.first_conversation == datetime.fromisoformat(rows[0]["started_at"])
    assert stats.last_conversation == datetime.fromisoformat(rows[-1]["started_at"])


def test_missing_profile_is_not_found(sdk_service: IdentityClient) -> None:
    with pytest.raises(NotFoundError):
        sdk_service.get_user_profile("usr_" + uuid.uuid4().hex[:24])


def test_conversation_pages_offset_and_keyset(sdk_service: IdentityClient) -> None:
    user_id, _ = sdk_service.get_or_create_user(sdk_shop())
    rows = sdk_insert_conversations(sdk_service, user_id, 25)
    newest_first = [r["id"] for r in reversed(rows)]

    page = sdk_service.get_user_conversations(user_id, limit=10, offset=10)
    assert page.total == 25
    assert [str(c.id) for c in page.items] == newest_first[10:20]
    assert page.items[0].message_count == len(rows[14]["messages"])
    assert "messages" not in page.items[0].model_dump()

    seen: list[str] = []
    cursor = None
    while True:
        keyset = sdk_service.get_user_conversations(user_id, limit=7, cursor=cursor)
        seen += [str(c.id) for c in keyset.items]
        cursor = keyset.next_cursor
        if cursor is None:
            break
    assert seen == newest_first

    past_end = sdk_service.get_user_conversations(user_id, limit=5, offset=500)
    assert (past_end.items, past_end.total) == ([], 25)


def test_get_conversation_by_uuid_and_by_original_id(sdk_service: IdentityClient) -> None:
    user_id, _ = sdk_service.get_or_create_user(sdk_shop())
    (by_uuid,) = sdk_insert_conversations(sdk_service, user_id, 1)
    (legacy,) = sdk_insert_conversations(sdk_service, user_id, 1, source_ids=True)

    conv = sdk_service.get_conversation(user_id, by_uuid["id"])
    assert conv.messages == by_uuid["messages"]
    old = sdk_service.get_conversation(user_id, legacy["source_id"])
    assert old.conversation_id == legacy["source_id"]
    assert str(old.id) == legacy["id"]

    other_id, _ = sdk_service.get_or_create_user(sdk_shop())
    with pytest.raises(NotFoundError):
        sdk_service.get_conversation(other_id, by_uuid["id"])
    with pytest.raises(NotFoundError):
        sdk_service.get_conversation(user_id, str(uuid.uuid4()))


def test_user_scoped_client_reads_only_its_own_data(sdk_service: IdentityClient) -> None:
    alice, _ = sdk_service.get_or_create_user(sdk_shop("alice"))
    bob, _ = sdk_service.get_or_create_user(sdk_shop("bob"))
    (alice_conv,) = sdk_insert_conversations(sdk_service, alice, 1)
    (bob_conv,) = sdk_insert_conversations(sdk_service, bob, 1)
    as_alice = sdk_service.for_user(alice)
    assert as_alice.privilege is Privilege.USER

    assert as_alice.get_user_profile(alice).stats.total_conversations == 1
    assert as_alice.get_conversation(alice, alice_conv["id"]).user_id == alice
    assert as_alice.get_user_conversations(alice).total == 1

    with pytest.raises(NotFoundError):
        as_alice.get_user_profile(bob)
    with pytest.raises(NotFoundError):
        as_alice.get_conversation(bob, bob_conv["id"])
    bobs_page = as_alice.get_user_conversations(bob)
    assert (bobs_page.items, bobs_page.total) == ([], 0)
    with pytest.raises(PermissionDeniedError):
        as_alice.log_user_event(alice, "x", {})


def test_token_from_elsewhere_works_like_for_user(
    sdk_env: SdkEnv, sdk_service: IdentityClient
) -> None:
    user_id, _ = sdk_service.get_or_create_user(sdk_shop())
    token = supabase_identity.mint_user_token(user_id, sdk_env.gw.jwt_secret, ttl=60)
    with IdentityClient(access_token=token, redis_url=None) as as_user:
        assert as_user.get_user_profile(user_id).user_id == user_id


def test_new_style_keys(sdk_env: SdkEnv) -> None:
    with IdentityClient(key=sdk_env.gw.secret_key, redis_url=None) as secret:
        assert secret.privilege is Privilege.SERVICE
        user_id, is_new = secret.get_or_create_user(sdk_shop("newkeys"))
        assert is_new
    with IdentityClient(key=sdk_env.gw.publishable_key, redis_url=None) as public:
        assert public.privilege is Privilege.PUBLIC
        with pytest.raises(PermissionDeniedError):
            public.get_user_profile(user_id)  # the server refuses anon: no access to identity
        with pytest.raises(PermissionDeniedError):
            public.get_or_create_user(sdk_shop())  # refused locally, before any request


def test_forged_key_is_an_authentication_error(sdk_env: SdkEnv) -> None:
    import jwt

    forged = jwt.encode({"role": "service_role"}, "x" * 40, algorithm="HS256")
    with (
        IdentityClient(key=forged, redis_url=None) as client,
        pytest.raises(AuthenticationError),
    ):
        client.get_user_profile("usr_" + "0" * 24)


def test_module_level_functions(sdk_env: SdkEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    supabase_identity.close_default_client()
    try:
        shop = sdk_shop("module")
        user_id, is_new = supabase_identity.get_or_create_user(shop, email="m@example.com")
        assert is_new
        supabase_identity.log_user_event(user_id, "module_event", {"ok": True})
        assert supabase_identity.flush_events().remaining == 0
        client = supabase_identity.get_default_client()
        (row,) = sdk_insert_conversations(client, user_id, 1)
        assert supabase_identity.get_user_profile(user_id).stats.total_events == 1
        assert supabase_identity.get_user_conversations(user_id).total == 1
        assert supabase_identity.get_conversation(user_id, row["id"]).messages == row["messages"]
    finally:
        supabase_identity.close_default_client()


def test_event_logged_while_postgrest_is_down_is_delivered_once_after_restart(
    sdk_service: IdentityClient,
    sdk_redis: redis.Redis,
    sdk_prefix: str,
    sdk_postgrest: PostgrestSwitch,
) -> None:
    user_id, _ = sdk_service.get_or_create_user(sdk_shop("outage"))
    event_type = f"outage_{uuid.uuid4().hex[:12]}"
    sdk_postgrest.stop()

    sdk_service.log_user_event(user_id, event_type, {"during": "outage"})  # must not raise

    assert sdk_redis.llen(outbox_keys(sdk_prefix)[0]) == 1
    down = sdk_service.flush_events()
    assert (down.delivered, down.remaining) == (0, 1)
    assert down.error is not None

    sdk_postgrest.start()
    result = sdk_service.flush_events()
    assert (result.delivered, result.remaining, result.error) == (1, 0, None)
    assert sdk_service.flush_events().delivered == 0
    assert sdk_count(sdk_service, "events", event_type=event_type) == 1


def test_health_iterators_and_redis_ping(sdk_service: IdentityClient) -> None:
    report = sdk_service.health()
    assert {"users", "conversations", "events"} <= {t["name"] for t in report["tables"]}
    assert all(t["rls"] for t in report["tables"])
    assert "get_or_create_user" in report["functions"]
    assert sdk_service.ping_redis()

    user_id, _ = sdk_service.get_or_create_user(sdk_shop("iter"))
    rows = sdk_insert_conversations(sdk_service, user_id, 7)
    for i in range(5):
        sdk_service.log_user_event(user_id, "iter_event", {"i": i})
    assert [str(c.id) for c in sdk_service.iter_user_conversations(user_id, page_size=3)] == [
        r["id"] for r in reversed(rows)
    ]
    events = list(sdk_service.iter_user_events(user_id, page_size=2))
    assert [e["event_data"]["i"] for e in events] == [0, 1, 2, 3, 4]
