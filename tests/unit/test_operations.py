"""Operator/internal calls: generic rpc(), health(), and the paging iterators used by export."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx

from supabase_identity import AsyncIdentityClient, ConfigError, IdentityClient, ValidationError

from .conftest import USER_ID


def test_rpc_posts_params_with_retries(client: IdentityClient, api: respx.MockRouter) -> None:
    route = api.post("/rpc/archive_conversations").mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json=[{"ok": True}])]
    )
    assert client.rpc("archive_conversations", {"conversations": []}) == [{"ok": True}]
    assert route.call_count == 2
    assert json.loads(route.calls.last.request.content) == {"conversations": []}
    assert route.calls.last.request.headers["content-profile"] == "identity"


@pytest.mark.parametrize("name", ["", "drop table", "../x", "Upper", "a" * 64])
def test_rpc_rejects_non_identifiers(client: IdentityClient, name: str) -> None:
    with pytest.raises(ValidationError):
        client.rpc(name)


def test_health_reports_missing_functions(client: IdentityClient, api: respx.MockRouter) -> None:
    api.post("/rpc/health").respond(
        200,
        json={
            "tables": [{"name": "users", "rls": True}],
            "functions": ["get_or_create_user", "health", "record_events"],
        },
    )
    report = client.health()
    assert report["missing_functions"] == [
        "analyze_tables",
        "archive_conversations",
        "archive_old_events",
        "delete_unlinked_conversations",
        "get_user_profile",
        "link_conversations",
        "search_conversations",
        "stats",
    ]
    assert report["tables"] == [{"name": "users", "rls": True}]


def test_ping_redis_without_redis_is_a_config_error(client: IdentityClient) -> None:
    assert client.redis_url is None
    with pytest.raises(ConfigError, match="REDIS_URL"):
        client.ping_redis()


def _rows(n: int) -> list[dict[str, object]]:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        {
            "id": str(uuid.uuid4()),
            "user_id": USER_ID,
            "started_at": (base - timedelta(minutes=i)).isoformat(),
            "message_count": 1,
        }
        for i in range(n)
    ]


def test_iter_user_conversations_walks_keyset_pages(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    rows = _rows(5)
    route = api.get("/conversations").mock(
        side_effect=[
            httpx.Response(200, json=rows[:2], headers={"Content-Range": "0-1/5"}),
            httpx.Response(200, json=rows[2:4]),
            httpx.Response(200, json=rows[4:]),
        ]
    )
    ids = [str(c.id) for c in client.iter_user_conversations(USER_ID, page_size=2)]
    assert ids == [r["id"] for r in rows]
    assert route.call_count == 3
    assert "or" in route.calls[1].request.url.params


def _two_event_pages(api: respx.MockRouter) -> tuple[list[dict[str, str]], respx.Route]:
    """Three events served as a page of two, then a page of one."""
    events = [
        {"id": str(uuid.uuid4()), "created_at": f"2026-01-01T00:00:0{i}+00:00"} for i in range(3)
    ]
    route = api.get("/events").mock(
        side_effect=[httpx.Response(200, json=events[:2]), httpx.Response(200, json=events[2:])]
    )
    return events, route


def test_iter_user_events_pages_by_created_at_and_id(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    events, route = _two_event_pages(api)
    assert list(client.iter_user_events(USER_ID, page_size=2)) == events
    second = route.calls[1].request.url.params
    last = events[1]
    assert second["or"] == (
        f"(created_at.gt.{last['created_at']},and(created_at.eq.{last['created_at']},"
        f"id.gt.{last['id']}))"
    )
    assert second["order"] == "created_at.asc,id.asc"
    assert second["user_id"] == f"eq.{USER_ID}"


async def test_async_iter_user_events_and_ping_redis_match_the_sync_twin(
    aclient: AsyncIdentityClient, api: respx.MockRouter
) -> None:
    events, route = _two_event_pages(api)
    assert [e async for e in aclient.iter_user_events(USER_ID, page_size=2)] == events
    assert route.calls[1].request.url.params["order"] == "created_at.asc,id.asc"
    with pytest.raises(ConfigError, match="REDIS_URL"):
        await aclient.ping_redis()


async def test_async_rpc_and_iterator(aclient: AsyncIdentityClient, api: respx.MockRouter) -> None:
    api.post("/rpc/health").respond(200, json={"tables": [], "functions": []})
    assert len((await aclient.health())["missing_functions"]) == 11
    rows = _rows(1)
    api.get("/conversations").respond(200, json=rows, headers={"Content-Range": "0-0/1"})
    got = [c async for c in aclient.iter_user_conversations(USER_ID)]
    assert [str(c.id) for c in got] == [rows[0]["id"]]
