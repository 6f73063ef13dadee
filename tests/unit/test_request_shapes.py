"""What goes on the wire: paths, query strings, headers and bodies, sync and async.

These pin the database contract (supabase/migrations) from the client side: a renamed RPC
argument or a missing profile header would break production silently without them.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx

from supabase_identity import (
    AsyncIdentityClient,
    IdentityClient,
    NotFoundError,
    conversation_uuid,
    user_subject,
)

from .conftest import ANON_KEY, JWT_SECRET, SERVICE_KEY, USER_ID, make_client

CONV_ROW: dict[str, Any] = {
    "id": "7d3f6a4e-1111-4c2b-9d7e-0123456789ab",
    "source_id": None,
    "user_id": USER_ID,
    "merchant_id": "m1",
    "workflow_name": "support",
    "started_at": "2026-01-02T03:04:05.123456+00:00",
    "ended_at": None,
    "message_count": 3,
    "metadata": {},
    "created_at": "2026-01-02T03:04:06+00:00",
    "updated_at": "2026-01-02T03:04:06+00:00",
    "archived_at": "2026-01-02T03:04:06+00:00",
}
PROFILE = {
    "user_id": USER_ID,
    "shop_domain": "cool-shop.myshopify.com",
    "shopify_id": None,
    "email": "owner@example.com",
    "name": None,
    "metadata": {},
    "created_at": "2026-01-01T00:00:00+00:00",
    "last_seen": "2026-01-02T00:00:00+00:00",
    "stats": {
        "total_conversations": 2,
        "total_messages": 9,
        "first_conversation": "2026-01-01T10:00:00+00:00",
        "last_conversation": None,
        "total_events": 4,
    },
}


def _profile_headers(request: httpx.Request) -> None:
    assert request.headers["accept-profile"] == "identity"
    assert request.headers["content-profile"] == "identity"


def test_get_or_create_user_is_one_rpc_with_normalized_domain(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    route = api.post("/rpc/get_or_create_user").respond(
        200, json=[{"user_id": USER_ID, "is_new": True}]
    )

    result = client.get_or_create_user(
        "  HTTPS://Cool-Shop.MyShopify.com/ ", email=" a@b.co ", name="", shopify_id="42"
    )

    assert result == (USER_ID, True)
    assert route.call_count == 1
    request = route.calls.last.request
    _profile_headers(request)
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers.get_list("authorization") == [f"Bearer {SERVICE_KEY}"]
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.content)
    new_id = body.pop("new_id")
    assert body == {
        "shop_domain": "cool-shop.myshopify.com",
        "email": "a@b.co",
        "name": None,
        "shopify_id": "42",
    }
    assert re.fullmatch(r"usr_[0-9a-f]{24}", new_id)
    assert "cool" not in new_id  # never derived from the shop domain


def test_get_or_create_user_candidate_id_is_new_per_call(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    route = api.post("/rpc/get_or_create_user").respond(
        200, json=[{"user_id": USER_ID, "is_new": False}]
    )
    client.get_or_create_user("cool-shop.myshopify.com")
    client.get_or_create_user("cool-shop.myshopify.com")
    first, second = (json.loads(c.request.content)["new_id"] for c in route.calls)
    assert first != second


def test_get_or_create_user_accepts_a_single_object_answer(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    api.post("/rpc/get_or_create_user").respond(200, json={"user_id": USER_ID, "is_new": False})
    assert client.get_or_create_user("cool-shop.myshopify.com") == (USER_ID, False)


def test_get_user_profile_posts_user_id_and_parses_stats(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    route = api.post("/rpc/get_user_profile").respond(200, json=PROFILE)

    profile = client.get_user_profile(USER_ID)

    assert json.loads(route.calls.last.request.content) == {"user_id": USER_ID}
    _profile_headers(route.calls.last.request)
    assert profile.stats.total_messages == 9
    assert profile.stats.first_conversation == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert profile.email == "owner@example.com"


def test_get_user_profile_null_is_not_found(client: IdentityClient, api: respx.MockRouter) -> None:
    api.post("/rpc/get_user_profile").respond(200, content=b"null")
    with pytest.raises(NotFoundError, match=USER_ID):
        client.get_user_profile(USER_ID)


def test_conversation_list_offset_page_counts_exactly_without_messages(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    route = api.get("/conversations").respond(
        200, json=[CONV_ROW] * 2, headers={"Content-Range": "40-41/57"}
    )

    page = client.get_user_conversations(USER_ID, limit=2, offset=40)

    request = route.calls.last.request
    _profile_headers(request)
    assert request.headers["prefer"] == "count=exact"
    params = request.url.params
    assert "messages" not in params["select"].split(",")
    assert "message_count" in params["select"].split(",")
    assert params["user_id"] == f"eq.{USER_ID}"
    assert params["order"] == "started_at.desc,id.desc"
    assert (params["limit"], params["offset"]) == ("2", "40")
    assert page.total == 57
    assert len(page.items) == 2
    assert page.items[0].message_count == 3
    assert page.next_cursor is not None


def test_conversation_list_last_page_has_no_cursor(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    api.get("/conversations").respond(200, json=[CONV_ROW], headers={"Content-Range": "0-0/1"})
    page = client.get_user_conversations(USER_ID, limit=1)
    assert page.total == 1
    assert page.next_cursor is None
    assert not page.has_more


def test_conversation_list_offset_past_end_is_an_empty_page(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    api.get("/conversations").respond(
        416,
        json={"code": "PGRST103", "message": "Requested range not satisfiable"},
        headers={"Content-Range": "*/5"},
    )
    page = client.get_user_conversations(USER_ID, limit=10, offset=100)
    assert page.items == []
    assert page.total == 5


def test_keyset_page_uses_the_cursor_filter_and_no_offset_or_count(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    route = api.get("/conversations").mock(
        side_effect=[
            httpx.Response(200, json=[CONV_ROW], headers={"Content-Range": "0-0/9"}),
            httpx.Response(200, json=[], headers={"Content-Range": "*/*"}),
        ]
    )
    first = client.get_user_conversations(USER_ID, limit=1)
    assert first.next_cursor is not None

    second = client.get_user_conversations(USER_ID, limit=1, cursor=first.next_cursor)

    request = route.calls.last.request
    params = request.url.params
    ts = "2026-01-02T03:04:05.123456+00:00"
    assert params["or"] == f"(started_at.lt.{ts},and(started_at.eq.{ts},id.lt.{CONV_ROW['id']}))"
    assert "offset" not in params
    assert "prefer" not in request.headers
    assert params["order"] == "started_at.desc,id.desc"
    assert second.total is None
    assert second.items == []


def test_get_conversation_filters_by_id_and_user(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    route = api.get("/conversations").respond(
        200, json=[{**CONV_ROW, "messages": [{"sender": "user", "content": "hi"}]}]
    )

    conv = client.get_conversation(USER_ID, CONV_ROW["id"])

    params = route.calls.last.request.url.params
    # every column but the full-text vector, which would double the transfer
    assert "search" not in params["select"].split(",")
    assert {"messages", "metadata", "archived_at"} <= set(params["select"].split(","))
    assert params["or"] == f"(id.eq.{CONV_ROW['id']},source_id.eq.{CONV_ROW['id']})"
    assert params["user_id"] == f"eq.{USER_ID}"
    assert conv.messages == [{"sender": "user", "content": "hi"}]


def test_get_conversation_finds_non_uuid_ids_by_source_id_and_raises_not_found_when_empty(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    route = api.get("/conversations").respond(200, json=[])
    with pytest.raises(NotFoundError):
        client.get_conversation(USER_ID, "conv-legacy-42")
    expected = uuid.uuid5(uuid.NAMESPACE_URL, "supabase-identity:conversation:conv-legacy-42")
    assert conversation_uuid("conv-legacy-42") == expected
    assert route.calls.last.request.url.params["source_id"] == "eq.conv-legacy-42"


@pytest.mark.parametrize(
    "spelling",
    [
        CONV_ROW["id"].upper(),
        "{" + CONV_ROW["id"] + "}",
        "urn:uuid:" + CONV_ROW["id"],
        CONV_ROW["id"].replace("-", ""),
    ],
)
def test_only_the_canonical_uuid_spelling_maps_to_itself(spelling: str) -> None:
    assert conversation_uuid(CONV_ROW["id"]) == uuid.UUID(CONV_ROW["id"])
    assert conversation_uuid(spelling) != uuid.UUID(CONV_ROW["id"])
    assert conversation_uuid(spelling).version == 5


def test_get_conversation_prefers_the_row_that_keeps_a_canonical_id_as_its_source(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    cid = CONV_ROW["id"]
    taken = {**CONV_ROW, "source_id": "another-id"}  # another id's row that took this UUID
    own = {**CONV_ROW, "id": str(uuid.uuid4()), "source_id": cid, "messages": [{"n": 1}]}
    api.get("/conversations").respond(200, json=[taken, own])

    assert client.get_conversation(USER_ID, cid).messages == [{"n": 1}]


def test_log_user_event_sends_one_record_events_call_with_client_id(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        events = json.loads(request.content)["events"]
        return httpx.Response(200, json=[{"id": e["id"], "status": "inserted"} for e in events])

    route = api.post("/rpc/record_events").mock(side_effect=answer)

    client.log_user_event(USER_ID, "oauth_complete", {"first_time": True})

    assert route.call_count == 1
    (event,) = json.loads(route.calls.last.request.content)["events"]
    assert uuid.UUID(event["id"]).version == 4
    assert event["user_id"] == USER_ID
    assert event["event_type"] == "oauth_complete"
    assert event["event_data"] == {"first_time": True}
    assert datetime.fromisoformat(event["created_at"]).tzinfo is not None
    assert client.outbox.pending_count() == 0


def test_for_user_sends_public_key_and_a_short_lived_user_token(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    route = api.post("/rpc/get_user_profile").respond(200, json=PROFILE)

    client.for_user(USER_ID, ttl=120).get_user_profile(USER_ID)

    request = route.calls.last.request
    assert request.headers["apikey"] == ANON_KEY
    (auth,) = request.headers.get_list("authorization")
    token = auth.removeprefix("Bearer ")
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience="authenticated")
    assert claims["role"] == "authenticated"
    assert claims["app_metadata"] == {"user_id": USER_ID}
    assert claims["sub"] == user_subject(USER_ID)
    assert claims["exp"] - claims["iat"] == 120


def test_for_user_reuses_the_same_connection_pool(client: IdentityClient) -> None:
    user_client = client.for_user(USER_ID)
    assert user_client.supabase.postgrest.session is client.supabase.postgrest.session
    assert user_client.supabase is not client.supabase, "each has its own credentials"
    for derived in (user_client, client.with_options(timeout=1.0)):
        assert derived._http is client._http
        assert derived._shared is client._shared


def test_for_user_builds_nothing_per_call(
    client: IdentityClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request handler calls for_user per request: no new builder, pool or supabase client."""
    import postgrest

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("for_user built a client")

    monkeypatch.setattr(postgrest.SyncPostgrestClient, "__init__", refuse)
    monkeypatch.setattr(httpx.Client, "__init__", refuse)
    user_client = client.for_user(USER_ID)
    assert user_client._rest is client._rest
    assert user_client._supabase is None


def test_per_call_timeout_reaches_httpx(client: IdentityClient, api: respx.MockRouter) -> None:
    route = api.post("/rpc/get_user_profile").respond(200, json=PROFILE)
    client.with_options(timeout=httpx.Timeout(2.5)).get_user_profile(USER_ID)
    client.get_user_profile(USER_ID, timeout=7.0)
    first, second = (c.request.extensions["timeout"] for c in route.calls)
    assert first["read"] == 2.5
    assert second["read"] == 7.0


def test_access_token_client_sends_the_given_token(empty_env_dir: Path, sleeps: object) -> None:
    token = jwt.encode({"role": "authenticated", "exp": 4102444800}, JWT_SECRET, algorithm="HS256")
    with respx.mock(base_url="http://127.0.0.1:54321/rest/v1") as api:
        route = api.post("/rpc/get_user_profile").respond(200, json=PROFILE)
        with make_client(empty_env_dir, key=None, access_token=token) as c:
            c.get_user_profile(USER_ID)
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {token}"
    assert request.headers["apikey"] == ANON_KEY


async def test_async_client_sends_the_same_shapes(
    aclient: AsyncIdentityClient, api: respx.MockRouter
) -> None:
    rpc = api.post("/rpc/get_or_create_user").respond(
        200, json=[{"user_id": USER_ID, "is_new": False}]
    )
    listing = api.get("/conversations").respond(
        200, json=[CONV_ROW], headers={"Content-Range": "0-0/1"}
    )
    profile = api.post("/rpc/get_user_profile").respond(200, json=PROFILE)

    assert await aclient.get_or_create_user("cool-shop.myshopify.com") == (USER_ID, False)
    page = await aclient.get_user_conversations(USER_ID, limit=5)
    got = await aclient.for_user(USER_ID).get_user_profile(USER_ID)

    _profile_headers(rpc.calls.last.request)
    assert json.loads(rpc.calls.last.request.content)["shop_domain"] == "cool-shop.myshopify.com"
    assert listing.calls.last.request.headers["prefer"] == "count=exact"
    assert page.total == 1
    assert profile.calls.last.request.headers["apikey"] == ANON_KEY
    assert got.user_id == USER_ID


def test_rpc_sends_an_already_encoded_body_verbatim(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    route = api.post("/rpc/archive_conversations").respond(200, json=[])
    body = b'{"conversations":[{"id":"x"}]}'
    assert client.rpc("archive_conversations", {"ignored": True}, encoded=body) == []
    request = route.calls.last.request
    assert request.content == body
    assert request.headers["content-type"] == "application/json"
    _profile_headers(request)
