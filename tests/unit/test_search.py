"""search_conversations from the client side: one request, typed hits, bad queries refused.

The ranking, phrases, stemming and row-level security are the database's: the integration
tests (tests/integration/test_search_sdk.py) check those against the real stack.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx

import supabase_identity
from supabase_identity import (
    APIResponseValidationError,
    AsyncIdentityClient,
    IdentityClient,
    PermissionDeniedError,
    SearchHit,
    SearchPage,
    ValidationError,
)

from .conftest import ANON_KEY, JWT_SECRET, USER_ID, make_client

HIT: dict[str, Any] = {
    "id": "7d3f6a4e-1111-4c2b-9d7e-0123456789ab",
    "source_id": "conv-42",
    "workflow_name": "support",
    "started_at": "2026-01-02T03:04:05.123456+00:00",
    "ended_at": "2026-01-02T03:14:05+00:00",
    "message_count": 3,
    "metadata": {"channel": "chat"},
    "rank": 0.0759909,
    "snippet": "where is my <mark>refund</mark> &amp; the label",
}


def answer(hits: list[dict[str, Any]], total: int, limit: int = 20, offset: int = 0) -> Any:
    return {"conversations": hits, "total": total, "limit": limit, "offset": offset}


def test_search_is_one_rpc_and_returns_typed_hits(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    second = {**HIT, "id": str(uuid.uuid4()), "source_id": None, "rank": 0.01, "snippet": None}
    route = api.post("/rpc/search_conversations").respond(
        200, json=answer([HIT, second], total=7, limit=2, offset=4)
    )

    page = client.search_conversations(USER_ID, '"refund label" -shipping', limit=2, offset=4)

    assert route.call_count == 1 and api.calls.call_count == 1
    request = route.calls.last.request
    assert json.loads(request.content) == {
        "user_id": USER_ID,
        "query": '"refund label" -shipping',
        "max_results": 2,
        "skip": 4,
    }
    assert request.headers["content-profile"] == "identity"
    assert isinstance(page, SearchPage)
    assert (page.total, page.limit, page.offset) == (7, 2, 4)
    assert page.has_more  # 4 + 2 < 7
    first = page.items[0]
    assert isinstance(first, SearchHit)
    assert first.id == uuid.UUID(HIT["id"])
    assert first.user_id == USER_ID  # the answer omits it: the page belongs to one user
    assert first.conversation_id == "conv-42"
    assert first.rank == pytest.approx(0.0759909)
    assert first.snippet == HIT["snippet"]
    assert first.metadata == {"channel": "chat"}
    assert page.items[1].snippet is None and page.items[1].conversation_id == second["id"]


def test_last_page_and_empty_answer(client: IdentityClient, api: respx.MockRouter) -> None:
    api.post("/rpc/search_conversations").mock(
        side_effect=[
            httpx.Response(200, json=answer([HIT], total=21, offset=20)),
            httpx.Response(200, json=answer([], total=0)),
        ]
    )
    last = client.search_conversations(USER_ID, "refund", offset=20)
    assert not last.has_more and len(last.items) == 1
    # What the database answers for a query of stop words only: an empty page, no error.
    empty = client.search_conversations(USER_ID, "the and of")
    assert empty.items == [] and empty.total == 0 and not empty.has_more


@pytest.mark.parametrize(
    ("query", "rule"),
    [
        ("", "non_empty"),
        ("  \t\n ", "non_empty"),
        ("x" * 1001, "max_length"),
        ("refund\x00", "no_nul"),
        ("\ud800", "unicode"),
        (b"refund", "type"),
        (None, "type"),
    ],
)
def test_bad_queries_are_refused_before_any_request(
    client: IdentityClient, api: respx.MockRouter, query: Any, rule: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        client.search_conversations(USER_ID, query)
    assert (caught.value.field, caught.value.rule) == ("query", rule)
    assert api.calls.call_count == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"user_id": "usr_nope"}, "user_id"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 2**31}, "offset"),  # the database takes an integer
    ],
)
def test_bad_user_or_page_is_refused(
    client: IdentityClient, api: respx.MockRouter, kwargs: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {"user_id": USER_ID, "query": "refund", **kwargs}
    with pytest.raises(ValidationError) as caught:
        client.search_conversations(**args)
    assert caught.value.field == field
    assert api.calls.call_count == 0


def test_a_query_of_1000_characters_is_sent(client: IdentityClient, api: respx.MockRouter) -> None:
    route = api.post("/rpc/search_conversations").respond(200, json=answer([], total=0))
    client.search_conversations(USER_ID, "refund " * 142 + "refund")  # 1000 characters
    assert len(json.loads(route.calls.last.request.content)["query"]) == 1000


def test_a_user_scoped_client_searches_with_the_users_token(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    route = api.post("/rpc/search_conversations").respond(200, json=answer([], total=0))
    client.for_user(USER_ID).search_conversations(USER_ID, "refund")
    request = route.calls.last.request
    assert request.headers["apikey"] == ANON_KEY
    token = request.headers["authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience="authenticated")
    assert claims["role"] == "authenticated"


def test_anon_refused_is_permission_denied(api: respx.MockRouter, empty_env_dir: Path) -> None:
    api.post("/rpc/search_conversations").respond(
        401,
        json={"code": "42501", "message": "permission denied for function search_conversations"},
    )
    anon = make_client(empty_env_dir, key=ANON_KEY, max_retries=0)
    with anon, pytest.raises(PermissionDeniedError):
        anon.search_conversations(USER_ID, "refund")


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"conversations": [{"id": "not-a-uuid"}], "total": 1, "limit": 20, "offset": 0},
        {"conversations": [HIT]},
    ],
)
def test_an_unexpected_answer_names_the_migrations(
    client: IdentityClient, api: respx.MockRouter, body: Any
) -> None:
    api.post("/rpc/search_conversations").respond(200, json=body)
    with pytest.raises(APIResponseValidationError, match="migrations"):
        client.search_conversations(USER_ID, "refund")


async def test_async_client_sends_the_same_request(
    aclient: AsyncIdentityClient, api: respx.MockRouter
) -> None:
    route = api.post("/rpc/search_conversations").respond(200, json=answer([HIT], total=1))
    page = await aclient.search_conversations(USER_ID, "refund", limit=5)
    assert json.loads(route.calls.last.request.content) == {
        "user_id": USER_ID,
        "query": "refund",
        "max_results": 5,
        "skip": 0,
    }
    assert [hit.id for hit in page.items] == [uuid.UUID(HIT["id"])]
    assert page.items[0].snippet == HIT["snippet"] and page.total == 1
    with pytest.raises(ValidationError) as caught:
        await aclient.search_conversations(USER_ID, " ")
    assert caught.value.rule == "non_empty"


def test_module_function_uses_the_default_client(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    route = api.post("/rpc/search_conversations").respond(200, json=answer([HIT], total=1))
    supabase_identity.set_default_client(client)
    try:
        page = supabase_identity.search_conversations(USER_ID, "refund", 3, 1)
    finally:
        supabase_identity.set_default_client(None)
    assert page.total == 1
    body = json.loads(route.calls.last.request.content)
    assert (body["max_results"], body["skip"]) == (3, 1)
