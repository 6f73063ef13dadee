"""The history API router over real HTTP: uvicorn serving it, the local stack behind it.

A session fixture starts uvicorn on a loopback socket in a thread, serving a small FastAPI app:
the router, a test ``get_current_user`` that trusts an ``X-User-Id`` header, and one
``AsyncIdentityClient`` opened and closed by the app's lifespan. Users and conversations are
created through the SDK's service client (``archive_conversations``, as the archiver does), then
the three endpoints are exercised with httpx, and their OpenAPI schema is fuzzed with
schemathesis (no 5xx; every response matches the schema).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

import httpx
import psycopg
import pytest
import schemathesis
from fastapi import FastAPI, Request
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from supabase_identity import (
    AsyncIdentityClient,
    ConversationArchiver,
    ConversationStore,
    IdentityClient,
    complete_oauth,
    conversation_uuid,
)
from supabase_identity._constants import USER_ID_PATTERN
from supabase_identity._exceptions import ValidationError
from supabase_identity._redis import connect_redis
from supabase_identity._validation import validate_user_id
from supabase_identity.api import history_router

from ._uvicorn import serve
from .conftest import GatewayEnv, sdk_shop

pytestmark = pytest.mark.integration

USER_ID_RE = re.compile(USER_ID_PATTERN)
CONVERSATIONS = 25


# --- the service under test ------------------------------------------------------------------


def caller_from_header(request: Request) -> dict[str, str] | None:
    """The test service's ``get_current_user``: trusts ``X-User-Id`` (tests only!).

    It reads the request rather than declaring a ``Header`` parameter, so the header is not part
    of the OpenAPI schema that schemathesis fuzzes (a real service declares its security scheme).
    """
    user_id = request.headers.get("x-user-id")
    return None if user_id is None else {"user_id": user_id}


def build_app(*, prefix: str = "") -> FastAPI:
    """A FastAPI app the way a service mounts the router (client owned by the app's lifespan);
    ``prefix`` as given to ``include_router`` (the seed's agents service uses ``/api/v1``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncIdentityClient(redis_url=None) as identity:
            app.state.identity = identity
            yield

    app = FastAPI(title="history-api-under-test", lifespan=lifespan)
    app.include_router(
        history_router(get_current_user=caller_from_header, client=lambda: app.state.identity),
        prefix=prefix,
    )
    return app


@pytest.fixture(scope="session")
def api_url(gw_env: GatewayEnv, gw_client: httpx.Client) -> Iterator[str]:
    """Serve :func:`build_app` with uvicorn; yield its base URL.

    ``gw_env``/``gw_client`` fail the session with a clear message when the stack's variables
    are missing or the gateway does not answer.
    """
    with serve(build_app(), "history-api") as url:
        yield url


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    """Users and conversations created for this session."""

    user: str
    """Has :data:`CONVERSATIONS` conversations."""
    other: str
    """Has two conversations of its own."""
    lonely: str
    """Has none."""
    rows: list[dict[str, Any]]
    """``user``'s conversations as archived, oldest first."""
    other_rows: list[dict[str, Any]]
    agent_id: str
    """The agents service's own id of one of ``user``'s conversations."""


def _rows(user_id: str, count: int, *, agent_id: str | None = None) -> list[dict[str, Any]]:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    rows: list[dict[str, Any]] = []
    for i in range(count):
        source = agent_id if (agent_id and i == count // 2) else None
        rows.append(
            {
                "id": str(conversation_uuid(source) if source else uuid.uuid4()),
                "source_id": source,
                "user_id": user_id,
                "started_at": (base + timedelta(minutes=i)).isoformat(),
                "messages": [
                    {
                        "sender": "user" if j % 2 == 0 else "agent",
                        "content": f"conversation {i} message {j}",
                        "timestamp": (base + timedelta(minutes=i, seconds=j)).isoformat(),
                    }
                    for j in range(i % 4 + 1)
                ],
                "metadata": {},
            }
        )
    return rows


@pytest.fixture(scope="session")
def seeded(gw_env: GatewayEnv, gw_client: httpx.Client) -> Iterator[Seeded]:
    with IdentityClient(redis_url=None) as service:
        user, _ = service.get_or_create_user(sdk_shop("api"))
        other, _ = service.get_or_create_user(sdk_shop("api-other"))
        lonely, _ = service.get_or_create_user(sdk_shop("api-lonely"))
        agent_id = f"agent-conv-{uuid.uuid4().hex}"
        rows = _rows(user, CONVERSATIONS, agent_id=agent_id)
        other_rows = _rows(other, 2)
        result = service.rpc("archive_conversations", {"conversations": rows + other_rows})
        assert {r["status"] for r in result} == {"inserted"}, result
        yield Seeded(user, other, lonely, rows, other_rows, agent_id)


@pytest.fixture(scope="session")
def http(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=30) as client:
        yield client


def get(http: httpx.Client, caller: str, path: str, **params: Any) -> httpx.Response:
    return http.get(path, params=params, headers={"X-User-Id": caller})


# --- the endpoints ---------------------------------------------------------------------------


def test_offset_pages_newest_first_with_total(http: httpx.Client, seeded: Seeded) -> None:
    newest_first = [r["id"] for r in reversed(seeded.rows)]
    seen: list[str] = []
    for offset in range(0, CONVERSATIONS, 10):
        response = get(
            http, seeded.user, f"/users/{seeded.user}/conversations", limit=10, offset=offset
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert (page["total"], page["limit"], page["offset"]) == (CONVERSATIONS, 10, offset)
        assert all("messages" not in item for item in page["conversations"])
        assert (page["next_cursor"] is None) == (offset + 10 >= CONVERSATIONS)
        seen += [item["id"] for item in page["conversations"]]
    assert seen == newest_first
    started = [
        datetime.fromisoformat(item["started_at"])
        for item in get(http, seeded.user, f"/users/{seeded.user}/conversations").json()[
            "conversations"
        ]
    ]
    assert started == sorted(started, reverse=True)
    past_the_end = get(http, seeded.user, f"/users/{seeded.user}/conversations", offset=1000)
    assert past_the_end.status_code == 200
    assert past_the_end.json()["conversations"] == []
    assert past_the_end.json()["total"] == CONVERSATIONS


def test_default_page_is_twenty(http: httpx.Client, seeded: Seeded) -> None:
    page = get(http, seeded.user, f"/users/{seeded.user}/conversations").json()
    assert (len(page["conversations"]), page["limit"], page["offset"]) == (20, 20, 0)


def test_cursor_pages_walk_the_same_order(http: httpx.Client, seeded: Seeded) -> None:
    path = f"/users/{seeded.user}/conversations"
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor is not None:
            params["cursor"] = cursor
        response = get(http, seeded.user, path, **params)
        assert response.status_code == 200, response.text
        page = response.json()
        if cursor is not None:
            assert page["total"] is None  # keyset pages do not count
        seen += [item["id"] for item in page["conversations"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 4
    assert seen == [r["id"] for r in reversed(seeded.rows)]


def test_conversation_detail_with_messages(http: httpx.Client, seeded: Seeded) -> None:
    row = seeded.rows[7]
    response = get(http, seeded.user, f"/users/{seeded.user}/conversations/{row['id']}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == row["id"]
    assert body["user_id"] == seeded.user
    assert body["messages"] == row["messages"]
    assert body["message_count"] == len(row["messages"])


def test_conversation_detail_by_the_agents_own_id(http: httpx.Client, seeded: Seeded) -> None:
    response = get(http, seeded.user, f"/users/{seeded.user}/conversations/{seeded.agent_id}")
    assert response.status_code == 200, response.text
    assert response.json()["source_id"] == seeded.agent_id
    assert response.json()["id"] == str(conversation_uuid(seeded.agent_id))


def test_profile_with_stats(http: httpx.Client, seeded: Seeded) -> None:
    response = get(http, seeded.user, f"/users/{seeded.user}/profile")
    assert response.status_code == 200, response.text
    profile = response.json()
    assert profile["user_id"] == seeded.user
    assert profile["shop_domain"].endswith(".myshopify.com")
    stats = profile["stats"]
    assert stats["total_conversations"] == CONVERSATIONS
    assert stats["total_messages"] == sum(len(r["messages"]) for r in seeded.rows)
    first, last = (datetime.fromisoformat(seeded.rows[i]["started_at"]) for i in (0, -1))
    assert datetime.fromisoformat(stats["first_conversation"]) == first
    assert datetime.fromisoformat(stats["last_conversation"]) == last

    lonely = get(http, seeded.lonely, f"/users/{seeded.lonely}/profile").json()
    assert lonely["stats"]["total_conversations"] == 0
    assert lonely["stats"]["first_conversation"] is None
    empty = get(http, seeded.lonely, f"/users/{seeded.lonely}/conversations").json()
    assert (empty["conversations"], empty["total"], empty["next_cursor"]) == ([], 0, None)


def test_another_user_is_403(http: httpx.Client, seeded: Seeded) -> None:
    theirs = seeded.other_rows[0]["id"]
    for path in (
        f"/users/{seeded.other}/conversations",
        f"/users/{seeded.other}/conversations?q=conversation",
        f"/users/{seeded.other}/conversations/{theirs}",
        f"/users/{seeded.other}/profile",
    ):
        response = get(http, seeded.user, path)
        assert response.status_code == 403, path
        assert response.json() == {"detail": "Not allowed to read this history"}
    assert http.get(f"/users/{seeded.user}/profile").status_code == 401  # no caller at all


def test_search_with_q(http: httpx.Client, seeded: Seeded) -> None:
    path = f"/users/{seeded.user}/conversations"
    response = get(http, seeded.user, path, q='"conversation 7"')
    assert response.status_code == 200, response.text
    page = response.json()
    assert [item["id"] for item in page["conversations"]] == [seeded.rows[7]["id"]]
    assert (page["total"], page["limit"], page["offset"]) == (1, 20, 0)
    hit = page["conversations"][0]
    assert hit["snippet"].startswith("<mark>conversation</mark> <mark>7</mark>")
    assert hit["rank"] > 0 and hit["message_count"] == 4 and "messages" not in hit
    assert "workflow" in hit and "workflow_name" not in hit  # the list's field names
    # The other user's "conversation 0" is not the caller's: RLS and the filter agree.
    everything = get(http, seeded.user, path, q="conversations", limit=10, offset=20).json()
    assert everything["total"] == CONVERSATIONS and len(everything["conversations"]) == 5
    nothing = get(http, seeded.lonely, f"/users/{seeded.lonely}/conversations", q="conversation")
    assert nothing.status_code == 200
    assert (nothing.json()["conversations"], nothing.json()["total"]) == ([], 0)
    stop_words = get(http, seeded.user, path, q="the of").json()
    assert (stop_words["conversations"], stop_words["total"]) == ([], 0)


def test_absent_is_404(http: httpx.Client, seeded: Seeded) -> None:
    # Another user's conversation under one's own path: invisible (filter and RLS), not 403.
    theirs = seeded.other_rows[0]["id"]
    response = get(http, seeded.user, f"/users/{seeded.user}/conversations/{theirs}")
    assert response.status_code == 404
    assert response.json() == {"detail": "No such conversation"}
    unknown = get(http, seeded.user, f"/users/{seeded.user}/conversations/{uuid.uuid4()}")
    assert unknown.status_code == 404
    nobody = "usr_" + uuid.uuid4().hex[:20]
    response = get(http, nobody, f"/users/{nobody}/profile")
    assert response.status_code == 404
    assert response.json() == {"detail": "No such user"}


@pytest.mark.parametrize(
    ("suffix", "params", "loc"),
    [
        ("/conversations", {"limit": 0}, ["query", "limit"]),
        ("/conversations", {"limit": 101}, ["query", "limit"]),
        ("/conversations", {"offset": -1}, ["query", "offset"]),
        ("/conversations", {"offset": 2**63}, ["query", "offset"]),
        ("/conversations", {"cursor": "bm90IGEgY3Vyc29y"}, ["query", "cursor"]),
        # well-formed, but a time zone Postgres refuses: rejected by the database itself
        (
            "/conversations",
            {
                "cursor": "WyIwMDAxLTAxLTAxVDAwOjAwOjAwLTIzOjU5IiwiMDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAt"
                "MDAwMDAwMDAwMDAwIl0"
            },
            ["query", "cursor"],
        ),
        ("/conversations/" + "x" * 513, {}, ["path", "conversation_id"]),
        ("/conversations/%20", {}, ["path", "conversation_id"]),
        ("/conversations", {"q": ""}, ["query", "q"]),
        ("/conversations", {"q": " \t "}, ["query", "q"]),
        ("/conversations", {"q": "x" * 1001}, ["query", "q"]),
        (
            "/conversations",
            {"q": "conversation", "cursor": "bm90IGEgY3Vyc29y"},
            ["query", "cursor"],
        ),
    ],
)
def test_bad_parameters_are_422(
    http: httpx.Client, seeded: Seeded, suffix: str, params: dict[str, Any], loc: list[str]
) -> None:
    response = get(http, seeded.user, f"/users/{seeded.user}{suffix}", **params)
    assert response.status_code == 422, response.text
    assert loc in [error["loc"] for error in response.json()["detail"]]


def test_malformed_user_id_is_422(http: httpx.Client) -> None:
    for user_id in ("usr_UPPER0123456789ab", "usr_short", "usr_" + "a" * 47):
        response = get(http, user_id, f"/users/{user_id}/profile")
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["path", "user_id"]


def test_openapi_schema_is_served(http: httpx.Client) -> None:
    served = http.get("/openapi.json").json()
    assert served == schema.raw_schema  # what test_openapi_schema_fuzzed fuzzes
    assert set(served["paths"]) == {
        "/users/{user_id}/conversations",
        "/users/{user_id}/conversations/{conversation_id}",
        "/users/{user_id}/profile",
    }


# --- schemathesis ----------------------------------------------------------------------------


# The schema is taken from the app object at import (building the app does no I/O) rather than
# from the live server with ``schemathesis.pytest.from_fixture``: schemathesis 4.32's lazy
# loader reads ``request.node._nodeid``, which pytest 9 no longer has. The test below checks
# that the live server serves this very schema, and every fuzzed request goes to that server.
schema = schemathesis.openapi.from_dict(build_app().openapi())
CHECKS = [not_a_server_error, response_schema_conformance]


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_openapi_schema_fuzzed(case: Any, api_url: str, seeded: Seeded) -> None:
    """No 5xx and schema-conformant answers, with callers that reach the handlers.

    Each generated request is sent three ways: as generated, by the user it names (so it passes
    the caller check); with the path's user replaced by the seeded user (real rows behind the
    fuzzed query); and, for the detail endpoint, also with a real conversation id.
    """
    path = case.path_parameters
    generated = path.get("user_id") if path else None
    caller = generated if isinstance(generated, str) and USER_ID_RE.match(generated) else None
    case.call_and_validate(
        base_url=api_url, headers={"X-User-Id": caller or seeded.user}, checks=CHECKS
    )
    if path is None:
        return
    path["user_id"] = seeded.user
    case.call_and_validate(base_url=api_url, headers={"X-User-Id": seeded.user}, checks=CHECKS)
    if "conversation_id" in path:
        path["conversation_id"] = seeded.rows[3]["id"]
        case.call_and_validate(base_url=api_url, headers={"X-User-Id": seeded.user}, checks=CHECKS)


# --- one user id format: Python, the SQL CHECK and the router agree ---------------------------

ID_SAMPLES: Final = (
    "usr_test123",  # the seed's SQL-editor rows
    "usr_12345678",  # the seed's curl examples
    "usr_abcdef",  # 6: the shortest
    "usr_" + "a" * 46,  # the longest (the seed's varchar(50))
    "usr_0123456789abcdef01234567",  # today's new ids
    "usr_abcde",  # 5: too short
    "usr_" + "a" * 47,  # too long
    "usr_Test123",  # upper case
    "usr_test-123",  # punctuation
    "usr_test123\n",  # a trailing newline ($ must not let it through)
    "user_test123",  # another prefix
    "usr_",
)


def _sql_accepts(db: psycopg.Connection[Any], user_id: str) -> bool:
    """Whether ``identity.users``' CHECK takes ``user_id`` (the insert is rolled back)."""
    try:
        with db.transaction(force_rollback=True):
            db.execute(
                "insert into identity.users (id, shop_domain) values (%s, %s)",
                (user_id, sdk_shop("ids")),
            )
    except psycopg.errors.CheckViolation as err:
        assert err.diag.constraint_name == "users_id_format", err
        return False
    return True


def _python_accepts(user_id: str) -> bool:
    try:
        validate_user_id(user_id)
    except ValidationError as err:
        assert (err.field, err.rule) == ("user_id", "usr_id_format")
        return False
    return True


def _router_accepts(http: httpx.Client, user_id: str) -> bool:
    """The router's path pattern: 422 naming ``user_id`` when refused, else the caller's 403."""
    response = get(http, "usr_somebodyelse", f"/users/{quote(user_id, safe='')}/profile")
    if response.status_code == 422:
        assert [e["loc"] for e in response.json()["detail"]] == [["path", "user_id"]]
        return False
    assert response.status_code == 403, response.text
    return True


def test_user_id_format_agrees_everywhere(
    http: httpx.Client, db: psycopg.Connection[Any], gw_env: GatewayEnv
) -> None:
    """Python's validation, the database's CHECK and the router's path take the same ids."""
    verdicts = {
        user_id: (
            _python_accepts(user_id),
            _sql_accepts(db, user_id),
            _router_accepts(http, user_id),
        )
        for user_id in ID_SAMPLES
    }
    disagreements = {k: v for k, v in verdicts.items() if len(set(v)) != 1}
    assert not disagreements, f"(python, sql, router) disagree: {disagreements}"
    accepted = {k for k, v in verdicts.items() if v[0]}
    assert accepted == set(ID_SAMPLES[:5])
    with IdentityClient(redis_url=None) as service:  # new ids keep their format
        new_id, is_new = service.get_or_create_user(sdk_shop("ids-new"))
    assert is_new and re.fullmatch(r"usr_[0-9a-f]{24}", new_id), new_id


# --- the seed's end-to-end flows (6.1-6.3) over HTTP ------------------------------------------

#: A Redis database of its own for the chats of the end-to-end flow.
E2E_REDIS_DB = 14


def _anonymous_chat(store: ConversationStore, words: str) -> str:
    """A chat started before the merchant logged in: no user, no merchant on its session."""
    conversation_id = str(uuid.uuid4())
    store.create_session(conversation_id, workflow_name="shopify_onboarding")
    for i, content in enumerate((f"hello, {words}", "let me connect your shop", "done")):
        store.append_message(
            conversation_id, sender="user" if i % 2 == 0 else "cj", content=content
        )
    return conversation_id


def test_the_seeds_flows_end_to_end_over_http(
    gw_env: GatewayEnv, db: psycopg.Connection[Any]
) -> None:
    """6.1 new user, 6.2 returning user, 6.3 archival, read over HTTP as the seed's frontend."""
    url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + f"/{E2E_REDIS_DB}"
    r = connect_redis(url, cluster=False)
    r.flushdb()
    shop = sdk_shop("e2e")
    try:
        with (
            IdentityClient(redis_url=None) as service,
            serve(build_app(prefix="/api/v1"), "agents-service") as base,
            httpx.Client(base_url=f"{base}/api/v1", timeout=30) as http,
        ):
            store = ConversationStore(r)
            archiver = ConversationArchiver(service, r)

            # 6.1: an anonymous chat, then the merchant completes OAuth inside it.
            first = _anonymous_chat(store, "first visit")
            login = complete_oauth(
                shop,
                redis_client=r,
                client=service,
                email="owner@example.com",
                conversation_id=first,
            )
            assert login.is_new
            user = login.user_id
            store.end_conversation(first)
            # 6.3: the archiver stores it, linked to the user the login put on its session.
            assert archiver.run_once().archived == 1
            service.flush_events()
            events = db.execute(
                "select event_data from identity.events"
                " where user_id = %s and event_type = 'oauth_complete'",
                (user,),
            ).fetchall()
            assert [e[0]["first_time"] for e in events] == [True]

            listing = get(http, user, f"/users/{user}/conversations").json()
            assert (listing["total"], listing["limit"], listing["offset"]) == (1, 20, 0)
            (item,) = listing["conversations"]
            assert (item["id"], item["workflow"], item["message_count"]) == (
                first,
                "shopify_onboarding",
                3,
            )
            detail = get(http, user, f"/users/{user}/conversations/{first}").json()
            assert [m["content"] for m in detail["messages"]] == [
                "hello, first visit",
                "let me connect your shop",
                "done",
            ]
            profile = get(http, user, f"/users/{user}/profile").json()
            assert (profile["user_id"], profile["shop_domain"], profile["email"]) == (
                user,
                shop,
                "owner@example.com",
            )
            assert profile["stats"]["total_conversations"] == 1

            # 6.2: the same shop comes back in a new chat: same id, earlier history visible.
            second = _anonymous_chat(store, "second visit")
            again = complete_oauth(shop, redis_client=r, client=service, conversation_id=second)
            assert (again.user_id, again.is_new) == (user, False)
            store.end_conversation(second)
            assert archiver.run_once().archived == 1
            listing = get(http, user, f"/users/{user}/conversations").json()
            assert [c["id"] for c in listing["conversations"]] == [second, first]
            assert (
                get(http, user, f"/users/{user}/profile").json()["stats"]["total_conversations"]
                == 2
            )

            # Another merchant reads nothing of it.
            other = complete_oauth(sdk_shop("e2e-other"), redis_client=r, client=service)
            for path in ("conversations", f"conversations/{first}", "profile"):
                answer = get(http, other.user_id, f"/users/{user}/{path}")
                assert answer.status_code == 403, (path, answer.text)
            assert (
                get(http, other.user_id, f"/users/{other.user_id}/conversations").json()[
                    "conversations"
                ]
                == []
            )
    finally:
        r.flushdb()
        r.close()
