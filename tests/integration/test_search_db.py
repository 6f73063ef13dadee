"""Conversation search in the database, over real HTTP: archived by the archiver, searched
through the gateway with ``rpc/search_conversations`` as the service key, a user's token and
the anon key.

Each test writes its own users and conversations (unique shops, unique words), in its own
Redis database; nothing depends on another test's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis

from supabase_identity import IdentityClient, conversation_uuid
from supabase_identity.archive import ConversationArchiver, ConversationStore

from .conftest import GatewayEnv, GwMintToken

pytestmark = pytest.mark.integration
SEARCH_REDIS_DB = 12


@pytest.fixture
def r(gw_env: GatewayEnv) -> Iterator[redis.Redis]:
    url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + f"/{SEARCH_REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def service(gw_env: GatewayEnv) -> Iterator[IdentityClient]:
    with IdentityClient(url=gw_env.url, key=gw_env.service_role_key, redis_url=None) as c:
        yield c


def word() -> str:
    """A word no other conversation contains (letters only, so the parser keeps it whole)."""
    return "zq" + "".join(chr(ord("a") + int(d, 16) % 26) for d in uuid.uuid4().hex[:10])


def archive(r: redis.Redis, client: IdentityClient, user_id: str, *contents: str) -> str:
    store = ConversationStore(r)
    cid = str(uuid.uuid4())
    store.create_session(cid, user_id=user_id, merchant_id="merchant_test")
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i, content in enumerate(contents):
        store.append_message(
            cid, sender="user", content=content, timestamp=base + timedelta(seconds=i)
        )
    store.end_conversation(cid)
    report = ConversationArchiver(client, r).run_once()
    assert report.archived + report.rearchived >= 1 and not report.failed, report
    return cid


def search(
    gw_client: httpx.Client, apikey: str, bearer: str, user_id: str, query: str
) -> httpx.Response:
    return gw_client.post(
        "rpc/search_conversations",
        json={"user_id": user_id, "query": query},
        headers={
            "apikey": apikey,
            "Authorization": f"Bearer {bearer}",
            "Content-Profile": "identity",
        },
    )


def found(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["total"] == len(body["conversations"]), body
    hits: list[dict[str, Any]] = body["conversations"]
    return hits


def test_nul_and_emoji_in_contents_are_archived_and_found(
    r: redis.Redis, service: IdentityClient, gw_client: httpx.Client, gw_env: GatewayEnv
) -> None:
    user_id, _ = service.get_or_create_user(f"srch-{uuid.uuid4().hex[:10]}.myshopify.com")
    term = word()
    cid = archive(r, service, user_id, f"🎉{term}🎉 ship\x00ped today 👍", "thanks")

    key = gw_env.service_role_key
    by_term = found(search(gw_client, key, key, user_id, term))
    assert [h["id"] for h in by_term] == [str(conversation_uuid(cid))]
    assert by_term[0]["snippet"] == f"🎉<mark>{term}</mark>🎉 shipped today 👍"
    # The NUL was removed by the archiver: the two halves are one word again, and stemmed.
    assert [h["id"] for h in found(search(gw_client, key, key, user_id, "shipping"))] == [
        str(conversation_uuid(cid))
    ]
    assert found(search(gw_client, key, key, user_id, "🎉")) == []


def test_a_rearchived_conversation_is_found_by_its_new_words(
    r: redis.Redis, service: IdentityClient, gw_client: httpx.Client, gw_env: GatewayEnv
) -> None:
    user_id, _ = service.get_or_create_user(f"srch-{uuid.uuid4().hex[:10]}.myshopify.com")
    first, later = word(), word()
    cid = archive(r, service, user_id, f"about {first}")
    key = gw_env.service_role_key
    assert found(search(gw_client, key, key, user_id, later)) == []

    store = ConversationStore(r)
    store.append_message(cid, sender="cj", content=f"and now {later}")
    store.end_conversation(cid)
    report = ConversationArchiver(service, r).run_once()
    assert report.rearchived == 1, report

    hits = found(search(gw_client, key, key, user_id, later))
    assert [h["id"] for h in hits] == [str(conversation_uuid(cid))]
    assert hits[0]["message_count"] == 2
    assert hits[0]["snippet"] == f"and now <mark>{later}</mark>"
    assert len(found(search(gw_client, key, key, user_id, first))) == 1


def test_who_finds_what_through_the_gateway(
    r: redis.Redis,
    service: IdentityClient,
    gw_client: httpx.Client,
    gw_env: GatewayEnv,
    gw_mint_token: GwMintToken,
) -> None:
    owner, _ = service.get_or_create_user(f"srch-{uuid.uuid4().hex[:10]}.myshopify.com")
    other, _ = service.get_or_create_user(f"srch-{uuid.uuid4().hex[:10]}.myshopify.com")
    term = word()
    cid = archive(r, service, owner, f"the {term} refund")
    archive(r, service, other, f"another {term} refund")
    anon = gw_env.anon_key

    owner_token = gw_mint_token(role="authenticated", user_id=owner)
    mine = found(search(gw_client, anon, owner_token, owner, term))
    assert [h["id"] for h in mine] == [str(conversation_uuid(cid))]

    # A user's token never finds another user's conversation, even when it asks for them.
    other_token = gw_mint_token(role="authenticated", user_id=other)
    assert found(search(gw_client, anon, other_token, owner, term)) == []

    # anon: no access to the schema at all.
    refused = search(gw_client, anon, anon, owner, term)
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] == "42501"

    # service_role: any user.
    key = gw_env.service_role_key
    assert len(found(search(gw_client, key, key, owner, term))) == 1
    assert len(found(search(gw_client, key, key, other, term))) == 1


def test_bad_arguments_are_400_and_stop_words_an_empty_page(
    service: IdentityClient, gw_client: httpx.Client, gw_env: GatewayEnv
) -> None:
    user_id, _ = service.get_or_create_user(f"srch-{uuid.uuid4().hex[:10]}.myshopify.com")
    key = gw_env.service_role_key

    empty = search(gw_client, key, key, user_id, "   ")
    assert empty.status_code == 400, empty.text
    assert empty.json()["code"] == "22023"
    assert empty.json()["message"] == "query must not be empty"
    long = search(gw_client, key, key, user_id, "a" * 1001)
    assert long.status_code == 400, long.text
    assert long.json()["message"] == "query must be at most 1000 characters"

    stop = search(gw_client, key, key, user_id, "the and of")
    assert stop.status_code == 200, stop.text
    assert stop.json() == {"conversations": [], "total": 0, "limit": 20, "offset": 0}
