"""The OAuth helper against the stack: user, event, merchant record, session, redirect."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import redis.asyncio

from supabase_identity import AsyncIdentityClient, IdentityClient, ValidationError
from supabase_identity._redis_keys import merchant_key, user_conversations_key
from supabase_identity.archive import ConversationStore, conversation_key, session_key
from supabase_identity.oauth import acomplete_oauth, complete_oauth, merchant_id_for

pytestmark = pytest.mark.integration
OAUTH_REDIS_DB = 8


def _redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.fail('REDIS_URL is not set: run eval "$(scripts/stack env)"', pytrace=False)
    return url.rsplit("/", 1)[0] + f"/{OAUTH_REDIS_DB}"


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(_redis_url())
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def client() -> Iterator[IdentityClient]:
    if not os.environ.get("SUPABASE_URL"):
        pytest.fail('SUPABASE_URL is not set: run eval "$(scripts/stack env)"', pytrace=False)
    with IdentityClient(redis_url=None) as c:
        yield c


def new_shop() -> str:
    return f"oauth-{uuid.uuid4().hex[:12]}.myshopify.com"


def oauth_events(client: IdentityClient, user_id: str) -> list[dict[str, object]]:
    return [e for e in client.iter_user_events(user_id) if e["event_type"] == "oauth_complete"]


def test_first_and_returning_login(r: redis.Redis, client: IdentityClient) -> None:
    shop = new_shop()
    r.set(f"merchant:{shop}", json.dumps({"access_token_ref": "vault:123"}))

    first = complete_oauth(f" https://{shop.upper()}/ ", redis_client=r, client=client)
    again = complete_oauth(shop, redis_client=r, client=client, email="owner@example.com")

    assert first.is_new is True and again.is_new is False
    assert first.user_id == again.user_id
    assert first.shop_domain == shop
    assert first.merchant_id == merchant_id_for(shop) == "merchant_" + shop.split(".")[0]
    events = oauth_events(client, first.user_id)
    assert [e["event_data"] for e in events] == [
        {"shop": shop, "first_time": True},
        {"shop": shop, "first_time": False},
    ]
    record = json.loads(r.get(f"merchant:{shop}") or b"{}")
    assert record["user_id"] == first.user_id
    assert record["merchant_id"] == first.merchant_id
    assert record["access_token_ref"] == "vault:123"  # the auth service's own fields are kept
    assert client.get_user_profile(first.user_id).email == "owner@example.com"


def test_redirect_carries_the_seed_parameters(r: redis.Redis, client: IdentityClient) -> None:
    result = complete_oauth(new_shop(), redis_client=r, client=client)
    url = urlsplit(result.redirect_url("https://app.example.com/", path="/chat"))
    assert (url.scheme, url.netloc, url.path) == ("https", "app.example.com", "/chat")
    assert {k: v[0] for k, v in parse_qs(url.query).items()} == {
        "oauth": "complete",
        "is_new": "true",
        "merchant_id": result.merchant_id,
        "user_id": result.user_id,
        "shop": result.shop_domain,
    }


def test_links_the_live_conversation_but_never_creates_keys(
    r: redis.Redis, client: IdentityClient
) -> None:
    store = ConversationStore(r)
    live = str(uuid.uuid4())
    store.create_session(live)
    gone = str(uuid.uuid4())

    result = complete_oauth(new_shop(), redis_client=r, client=client, conversation_id=live)
    complete_oauth(new_shop(), redis_client=r, client=client, conversation_id=gone)

    assert r.hget(session_key(live), "user_id") == result.user_id.encode()
    assert r.hget(conversation_key(live), "merchant_id") == result.merchant_id.encode()
    assert r.exists(session_key(gone), conversation_key(gone)) == 0


def test_invalid_shop_is_refused_before_any_write(r: redis.Redis, client: IdentityClient) -> None:
    with pytest.raises(ValidationError, match="shop_domain"):
        complete_oauth("example.com", redis_client=r, client=client)
    assert r.dbsize() == 0


@pytest.fixture
async def ar() -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(_redis_url())
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def test_async_twin(ar: redis.asyncio.Redis, client: IdentityClient) -> None:
    shop = new_shop()
    store_conversation = str(uuid.uuid4())
    await ar.hset(session_key(store_conversation), mapping={"user_id": ""})
    async with AsyncIdentityClient(redis_url=None) as aclient:
        first = await acomplete_oauth(
            shop, redis_client=ar, client=aclient, conversation_id=store_conversation
        )
        again = await acomplete_oauth(shop, redis_client=ar, client=aclient)
    assert (first.is_new, again.is_new) == (True, False)
    assert first.user_id == again.user_id
    assert await ar.hget(session_key(store_conversation), "user_id") == first.user_id.encode()
    assert [e["event_data"]["first_time"] for e in oauth_events(client, first.user_id)] == [  # type: ignore[index]
        True,
        False,
    ]


async def test_both_twins_write_the_same_keys(
    r: redis.Redis, ar: redis.asyncio.Redis, client: IdentityClient
) -> None:
    # A login inside a chat, through each twin: the same merchant record, the same session and
    # conversation fields, and the conversation in the user's index of live conversations (which
    # redact_shop reads), with that index expiring like the conversation.
    written: list[dict[str, object]] = []
    async with AsyncIdentityClient(redis_url=None) as aclient:
        for twin in ("sync", "async"):
            live = str(uuid.uuid4())
            ConversationStore(r).create_session(live)
            if twin == "sync":
                result = complete_oauth(
                    new_shop(), redis_client=r, client=client, conversation_id=live
                )
            else:
                result = await acomplete_oauth(
                    new_shop(), redis_client=ar, client=aclient, conversation_id=live
                )
            index = user_conversations_key(result.user_id)
            merchant = json.loads(r.get(merchant_key(result.shop_domain)) or b"{}")
            written.append(
                {
                    "merchant": sorted(merchant),
                    "merchant_user": merchant["user_id"] == result.user_id,
                    "session": r.hget(session_key(live), "merchant_id")
                    == result.merchant_id.encode(),
                    "conversation": r.hget(conversation_key(live), "user_id")
                    == result.user_id.encode(),
                    "index": r.smembers(index) == {live.encode()},
                    "index_expires": r.ttl(index) > 0,
                }
            )
    assert written[0] == written[1]
    assert written[1]["index"] is True and written[1]["index_expires"] is True
