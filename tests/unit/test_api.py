"""The history API router (``supabase_identity.api``) with PostgREST mocked by respx.

Requests go through httpx's ASGI transport on the test's event loop (the loop the
``AsyncIdentityClient`` belongs to); the lifespan tests enter the app's merged lifespan context
around those requests, as a server does at startup and shutdown. (Starlette's ``TestClient`` is
not used: it runs the app on another event loop, and with plain ``httpx`` it warns at import.)
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx
from fastapi import FastAPI, Header

from supabase_identity import AsyncIdentityClient, ConfigError
from supabase_identity._base_client import encode_cursor
from supabase_identity.api import history_router

from .conftest import ANON_KEY, BASE_URL, JWT_SECRET, OTHER_USER_ID, SERVICE_KEY, USER_ID

CONV_ID = "3f2b8c1e-0d4a-4b7e-9c61-2a5d8e9f0b13"


def header_user(x_user_id: str | None = Header(default=None)) -> dict[str, str] | None:
    """The test service's ``get_current_user``: the caller's id from ``X-User-Id``."""
    return None if x_user_id is None else {"user_id": x_user_id}


def make_app(client: Any, **kwargs: Any) -> FastAPI:
    app = FastAPI()
    options: dict[str, Any] = {"get_current_user": header_user, "client": client}
    options.update(kwargs)
    app.include_router(history_router(**options))
    return app


@pytest.fixture
async def http(aclient: AsyncIdentityClient) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app, authenticated as ``USER_ID``."""
    transport = httpx.ASGITransport(app=make_app(aclient))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"X-User-Id": USER_ID}
    ) as client:
        yield client


def summary_row(i: int = 0, **extra: Any) -> dict[str, Any]:
    started = datetime(2026, 1, 1, tzinfo=UTC) - timedelta(minutes=i)
    return {
        "id": str(uuid.uuid4()),
        "user_id": USER_ID,
        "started_at": started.isoformat(),
        "message_count": 2,
        "metadata": {},
        **extra,
    }


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


PATHS = [
    "/users/{uid}/conversations",
    "/users/{uid}/conversations?q=refund",
    f"/users/{{uid}}/conversations/{CONV_ID}",
    "/users/{uid}/profile",
]


# --- who may read ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
async def test_another_user_gets_403_without_any_backend_call(
    http: httpx.AsyncClient, api: respx.MockRouter, path: str
) -> None:
    response = await http.get(path.format(uid=OTHER_USER_ID))
    assert response.status_code == 403
    assert response.json() == {"detail": "Not allowed to read this history"}
    assert api.calls.call_count == 0


@pytest.mark.parametrize("path", PATHS)
async def test_no_caller_gets_401(
    http: httpx.AsyncClient, api: respx.MockRouter, path: str
) -> None:
    response = await http.get(path.format(uid=USER_ID), headers={"X-User-Id": ""})
    assert response.status_code == 403  # an empty id is a caller, just not this user
    del http.headers["X-User-Id"]
    response = await http.get(path.format(uid=USER_ID))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert api.calls.call_count == 0


async def test_caller_as_object_and_custom_user_id_of(
    aclient: AsyncIdentityClient, api: respx.MockRouter
) -> None:
    @dataclass
    class Caller:
        user_id: str

    @dataclass
    class Principal:
        subject: str

    api.post("/rpc/get_user_profile").respond(404, json={"code": "PGRST116", "message": "x"})
    for app in (
        make_app(aclient, get_current_user=lambda: Caller(USER_ID)),
        make_app(
            aclient,
            get_current_user=lambda: Principal(USER_ID),
            user_id_of=lambda p: p.subject,
        ),
    ):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get(f"/users/{USER_ID}/profile")).status_code == 404
            assert (await client.get(f"/users/{OTHER_USER_ID}/profile")).status_code == 403


async def test_a_caller_without_user_id_gets_401(
    aclient: AsyncIdentityClient, api: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(aclient, get_current_user=lambda: {"sub": "someone"})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get(f"/users/{USER_ID}/profile")).status_code == 401
    assert "has no string user_id" in caplog.text
    assert api.calls.call_count == 0


async def test_reads_use_the_user_scoped_token_and_public_key(
    http: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    rows = [summary_row(0), summary_row(1)]
    route = api.get("/conversations").respond(200, json=rows, headers={"Content-Range": "0-1/7"})
    response = await http.get(f"/users/{USER_ID}/conversations", params={"limit": 2})
    assert response.status_code == 200
    request = route.calls.last.request
    assert request.headers["apikey"] == ANON_KEY  # never the service key
    assert SERVICE_KEY not in request.headers["authorization"]
    scheme, token = request.headers["authorization"].split(" ", 1)
    assert scheme == "Bearer"
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience="authenticated")
    assert claims["role"] == "authenticated"
    assert claims["app_metadata"] == {"user_id": USER_ID}
    assert request.url.params["user_id"] == f"eq.{USER_ID}"


# --- answers ---------------------------------------------------------------------------------


async def test_conversation_page(http: httpx.AsyncClient, api: respx.MockRouter) -> None:
    rows = [summary_row(0), summary_row(1)]
    route = api.get("/conversations").respond(200, json=rows, headers={"Content-Range": "2-3/7"})
    response = await http.get(f"/users/{USER_ID}/conversations?limit=2&offset=2")
    body = response.json()
    assert response.status_code == 200
    assert body["total"] == 7
    assert (body["limit"], body["offset"]) == (2, 2)
    assert [item["id"] for item in body["conversations"]] == [r["id"] for r in rows]
    assert body["next_cursor"]
    params = route.calls.last.request.url.params
    assert (params["limit"], params["offset"]) == ("2", "2")
    assert params["order"] == "started_at.desc,id.desc"


async def test_keyset_page_passes_the_cursor(
    http: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    cursor = encode_cursor(datetime(2026, 1, 1, tzinfo=UTC), uuid.UUID(CONV_ID))
    route = api.get("/conversations").respond(200, json=[summary_row(5)])
    response = await http.get(f"/users/{USER_ID}/conversations", params={"cursor": cursor})
    assert response.status_code == 200
    assert response.json()["total"] is None
    assert response.json()["next_cursor"] is None
    assert CONV_ID in route.calls.last.request.url.params["or"]


async def test_conversation_detail(http: httpx.AsyncClient, api: respx.MockRouter) -> None:
    messages = [{"sender": "user", "content": "hi"}, {"sender": "agent", "content": "hello"}]
    row = summary_row(0, id=CONV_ID, messages=messages)
    route = api.get("/conversations").respond(200, json=[row])
    response = await http.get(f"/users/{USER_ID}/conversations/{CONV_ID}")
    assert response.status_code == 200
    assert response.json()["messages"] == messages
    assert route.calls.last.request.url.params["or"] == f"(id.eq.{CONV_ID},source_id.eq.{CONV_ID})"


async def test_profile(http: httpx.AsyncClient, api: respx.MockRouter) -> None:
    profile = {
        "user_id": USER_ID,
        "shop_domain": "cool-shop.myshopify.com",
        "created_at": "2026-01-01T00:00:00+00:00",
        "last_seen": "2026-01-02T00:00:00+00:00",
        "metadata": {},
        "stats": {"total_conversations": 3, "total_messages": 9, "total_events": 1},
    }
    route = api.post("/rpc/get_user_profile").respond(200, json=profile)
    response = await http.get(f"/users/{USER_ID}/profile")
    assert response.status_code == 200
    assert response.json()["stats"]["total_messages"] == 9
    assert json.loads(route.calls.last.request.content) == {"user_id": USER_ID}


@pytest.mark.parametrize(
    ("method", "path", "answer", "detail"),
    [
        ("GET", f"/conversations/{CONV_ID}", httpx.Response(200, json=[]), "No such conversation"),
        (
            "GET",
            "/conversations/agent-conv-1",
            httpx.Response(200, json=[]),
            "No such conversation",
        ),
        ("POST", "/profile", httpx.Response(200, content=b"null"), "No such user"),
        ("POST", "/profile", httpx.Response(200, content=b""), "No such user"),
        (
            "POST",
            "/profile",
            httpx.Response(406, json={"code": "PGRST116", "message": "0 rows"}),
            "No such user",
        ),
    ],
)
async def test_absent_is_404(
    http: httpx.AsyncClient,
    api: respx.MockRouter,
    method: str,
    path: str,
    answer: httpx.Response,
    detail: str,
) -> None:
    if method == "POST":
        api.post("/rpc/get_user_profile").mock(return_value=answer)
    else:
        api.get("/conversations").mock(return_value=answer)
    response = await http.get(f"/users/{USER_ID}{path}")
    assert response.status_code == 404
    assert response.json() == {"detail": detail}


# --- bad parameters: 422, never a 500 -------------------------------------------------------

INT_UUID_CURSOR = b64(json.dumps(["2026-01-01T00:00:00+00:00", 5]).encode())
GOOD_CURSOR = encode_cursor(datetime(2026, 1, 1, tzinfo=UTC), uuid.UUID(CONV_ID))


@pytest.mark.parametrize(
    ("path", "loc"),
    [
        ("/conversations?limit=0", ["query", "limit"]),
        ("/conversations?limit=101", ["query", "limit"]),
        ("/conversations?limit=ten", ["query", "limit"]),
        ("/conversations?limit=2.5", ["query", "limit"]),
        ("/conversations?offset=-1", ["query", "offset"]),
        (f"/conversations?offset={2**63}", ["query", "offset"]),
        ("/conversations?cursor=", ["query", "cursor"]),
        ("/conversations?cursor=not%20base64", ["query", "cursor"]),
        ("/conversations?cursor=" + "A" * 513, ["query", "cursor"]),
        ("/conversations?cursor=" + b64(b"not json"), ["query", "cursor"]),
        ("/conversations?cursor=" + b64(b'{"a": 1}'), ["query", "cursor"]),
        ("/conversations?cursor=" + INT_UUID_CURSOR, ["query", "cursor"]),
        ("/conversations?cursor=" + b64(b'["yesterday", "x"]'), ["query", "cursor"]),
        # both paging styles at once: rejected by the SDK (its ValidationError becomes a 422)
        (f"/conversations?offset=3&cursor={GOOD_CURSOR}", ["query", "cursor"]),
        ("/conversations/" + "c" * 513, ["path", "conversation_id"]),
        # whitespace only: passes the schema, rejected by the SDK
        ("/conversations/%20%20", ["path", "conversation_id"]),
    ],
)
async def test_bad_parameters_are_422(
    http: httpx.AsyncClient, api: respx.MockRouter, path: str, loc: list[str]
) -> None:
    response = await http.get(f"/users/{USER_ID}{path}")
    assert response.status_code == 422, response.text
    assert loc in [error["loc"] for error in response.json()["detail"]]
    assert api.calls.call_count == 0


@pytest.mark.parametrize(
    "user_id",
    ["usr_SHOUTING0123456789", "usr_short", "user_0123456789abcdef", "usr_" + "a" * 47, "%20"],
)
@pytest.mark.parametrize("suffix", ["/conversations", f"/conversations/{CONV_ID}", "/profile"])
async def test_malformed_user_id_is_422_even_for_oneself(
    http: httpx.AsyncClient, api: respx.MockRouter, user_id: str, suffix: str
) -> None:
    response = await http.get(f"/users/{user_id}{suffix}", headers={"X-User-Id": user_id})
    assert response.status_code == 422
    assert ["path", "user_id"] in [error["loc"] for error in response.json()["detail"]]
    assert api.calls.call_count == 0


async def test_value_the_database_rejects_is_422(
    http: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    api.get("/conversations").respond(
        400, json={"code": "22009", "message": "time zone displacement out of range"}
    )
    cursor = b64(b'["0001-01-01T00:00:00-23:59","00000000-0000-0000-0000-000000000000"]')
    response = await http.get(f"/users/{USER_ID}/conversations", params={"cursor": cursor})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "cursor"]
    assert "time zone displacement" in error["msg"]


# --- backend failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(503, text="upstream down"),
        httpx.Response(429, json={"message": "slow down"}),
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
    ],
    ids=["503", "429", "connect-error", "timeout"],
)
async def test_backend_unavailable_is_503_with_retry_after(
    http: httpx.AsyncClient, api: respx.MockRouter, failure: httpx.Response | Exception
) -> None:
    route = api.post("/rpc/get_user_profile")
    if isinstance(failure, Exception):
        route.mock(side_effect=failure)
    else:
        route.mock(return_value=failure)
    response = await http.get(f"/users/{USER_ID}/profile")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json() == {"detail": "The history store is unavailable; retry later"}
    assert route.call_count == 4  # the SDK retried first (its sleeps are patched out)


async def test_retry_after_is_configurable(
    aclient: AsyncIdentityClient, api: respx.MockRouter
) -> None:
    api.get("/conversations").respond(502)
    transport = httpx.ASGITransport(app=make_app(aclient, retry_after=30))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers={"X-User-Id": USER_ID}
    ) as client:
        response = await client.get(f"/users/{USER_ID}/conversations")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"


async def test_a_closed_client_is_503(aclient: AsyncIdentityClient, api: respx.MockRouter) -> None:
    transport = httpx.ASGITransport(app=make_app(lambda: aclient))
    await aclient.close()
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers={"X-User-Id": USER_ID}
    ) as client:
        response = await client.get(f"/users/{USER_ID}/profile")
    assert response.status_code == 503
    assert api.calls.call_count == 0


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"not": "a list"}),
        httpx.Response(200, json=[{"id": "not-a-uuid"}]),
        httpx.Response(400, json={"code": "PGRST100", "message": "parse error"}),
    ],
)
async def test_unexpected_backend_answer_is_502(
    http: httpx.AsyncClient, api: respx.MockRouter, answer: httpx.Response
) -> None:
    api.get("/conversations").mock(return_value=answer)
    response = await http.get(f"/users/{USER_ID}/conversations")
    assert response.status_code == 502
    assert response.json() == {"detail": "The history store gave an unexpected answer"}


async def test_rls_denial_is_403(http: httpx.AsyncClient, api: respx.MockRouter) -> None:
    api.post("/rpc/get_user_profile").respond(
        403, json={"code": "42501", "message": "permission denied for function"}
    )
    response = await http.get(f"/users/{USER_ID}/profile")
    assert response.status_code == 403


# --- client sources and lifecycle ------------------------------------------------------------


def test_an_instance_that_cannot_mint_user_tokens_fails_at_construction(
    empty_env_dir: Path,
) -> None:
    client = AsyncIdentityClient(
        url=BASE_URL, key=SERVICE_KEY, public_key=ANON_KEY, environ={}, env_dir=empty_env_dir
    )
    with pytest.raises(ConfigError, match="SUPABASE_JWT_SECRET"):
        history_router(get_current_user=header_user, client=client)


@pytest.fixture
def stack_env(monkeypatch: pytest.MonkeyPatch, empty_env_dir: Path) -> Callable[..., None]:
    """Replace the process environment's Supabase settings (and hide any .env file)."""
    import os

    for name in list(os.environ):
        if name.startswith("SUPABASE_") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(empty_env_dir)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


async def test_owned_client_is_built_at_startup_and_closed_at_shutdown(
    api: respx.MockRouter,
    stack_env: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack_env(
        SUPABASE_URL=BASE_URL,
        SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY,
        SUPABASE_ANON_KEY=ANON_KEY,
        SUPABASE_JWT_SECRET=JWT_SECRET,
        REDIS_URL="redis://127.0.0.1:1/0",  # ignored: the router's client needs no outbox
    )
    built: list[AsyncIdentityClient] = []

    class Recorded(AsyncIdentityClient):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            built.append(self)

    monkeypatch.setattr("supabase_identity.api.AsyncIdentityClient", Recorded)
    api.post("/rpc/get_user_profile").respond(200, content=b"null")
    app = make_app(None)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://t",
            headers={"X-User-Id": USER_ID},
        ) as client,
    ):
        assert len(built) == 1  # at startup, before any request
        assert (await client.get(f"/users/{USER_ID}/profile")).status_code == 404
        assert (await client.get(f"/users/{USER_ID}/profile")).status_code == 404
        assert len(built) == 1
        assert built[0].redis_url is None
        assert not built[0].is_closed
    assert built[0].is_closed


async def test_owned_client_without_jwt_secret_fails_at_startup(
    stack_env: Callable[..., None],
) -> None:
    stack_env(
        SUPABASE_URL=BASE_URL, SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY, SUPABASE_ANON_KEY=ANON_KEY
    )
    app = make_app(None)
    with pytest.raises(ConfigError, match="SUPABASE_JWT_SECRET"):
        async with app.router.lifespan_context(app):
            pass  # pragma: no cover - startup fails


async def test_callable_client_is_called_per_request(
    aclient: AsyncIdentityClient, api: respx.MockRouter
) -> None:
    calls: list[int] = []

    def provide() -> AsyncIdentityClient:
        calls.append(1)
        return aclient

    api.post("/rpc/get_user_profile").respond(200, content=b"null")
    transport = httpx.ASGITransport(app=make_app(provide))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers={"X-User-Id": USER_ID}
    ) as client:
        await client.get(f"/users/{USER_ID}/profile")
        await client.get(f"/users/{USER_ID}/profile")
        await client.get(f"/users/{OTHER_USER_ID}/profile")  # 403: no client needed
    assert len(calls) == 2


# --- OpenAPI and packaging --------------------------------------------------------------------


def test_openapi_schema_is_exact(aclient: AsyncIdentityClient) -> None:
    app = make_app(aclient, prefix="/v1/users", tags=("history",))
    schema = app.openapi()
    paths = schema["paths"]
    assert set(paths) == {
        "/v1/users/{user_id}/conversations",
        "/v1/users/{user_id}/conversations/{conversation_id}",
        "/v1/users/{user_id}/profile",
    }
    listing = paths["/v1/users/{user_id}/conversations"]["get"]
    assert listing["operationId"] == "list_user_conversations"
    assert listing["tags"] == ["history"]
    ok = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["anyOf"] == [
        {"$ref": "#/components/schemas/ConversationList"},
        {"$ref": "#/components/schemas/SearchList"},
    ]
    assert set(listing["responses"]) >= {"200", "401", "403", "422", "502", "503"}
    assert "Retry-After" in listing["responses"]["503"]["headers"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert params["user_id"]["schema"]["pattern"] == "^usr_[a-z0-9]{6,46}$"
    q_schema = params["q"]["schema"]["anyOf"][0]
    assert (q_schema["minLength"], q_schema["maxLength"]) == (1, 1000)
    assert params["limit"]["schema"] | {"default": 20} == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 20,
        "description": "Page size.",
        "title": "Limit",
    }
    assert params["offset"]["schema"]["minimum"] == 0
    detail = paths["/v1/users/{user_id}/conversations/{conversation_id}"]["get"]
    conv_param = next(p for p in detail["parameters"] if p["name"] == "conversation_id")
    assert conv_param["schema"]["maxLength"] == 512
    assert "404" in detail["responses"]
    components = schema["components"]["schemas"]
    assert "messages" in components["ConversationDetail"]["properties"]
    assert "messages" not in components["ConversationListItem"]["properties"]
    hit = components["SearchListItem"]
    assert {"rank", "snippet"} <= set(hit["required"])
    assert set(components["ConversationListItem"]["properties"]) < set(hit["properties"])


def test_importing_the_package_does_not_import_fastapi() -> None:
    code = (
        "import sys, supabase_identity; "
        "assert 'fastapi' not in sys.modules and 'starlette' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- the seed's JSON on the wire ---------------------------------------------------------------

#: The fields (and JSON types) the seed's services send and their frontends read.
SEED_LIST = {"conversations": "array", "total": "integer", "limit": "integer", "offset": "integer"}
SEED_LIST_ITEM = {
    "id": "string",
    "workflow": "string",
    "started_at": "string",
    "ended_at": "string",
    "message_count": "integer",
    "metadata": "object",
}
SEED_DETAIL = {
    "id": "string",
    "workflow": "string",
    "started_at": "string",
    "ended_at": "string",
    "messages": "array",
    "metadata": "object",
}
SEED_PROFILE = {
    "user_id": "string",
    "shop_domain": "string",
    "email": "string",
    "name": "string",
    "created_at": "string",
    "last_seen": "string",
    "stats": "object",
}
SEED_STATS = {
    "total_conversations": "integer",
    "first_conversation": "string",
    "last_conversation": "string",
}
_JSON_TYPES = {"string": str, "integer": int, "array": list, "object": dict}


def _has_seed_fields(body: dict[str, Any], fields: dict[str, str]) -> None:
    missing = set(fields) - set(body)
    assert not missing, f"missing {missing} in {body}"
    wrong = {k: body[k] for k, t in fields.items() if not isinstance(body[k], _JSON_TYPES[t])}
    assert not wrong, f"not of the seed's type: {wrong}"


async def test_the_seeds_json_on_the_wire(http: httpx.AsyncClient, api: respx.MockRouter) -> None:
    ended = datetime(2026, 1, 1, 1, tzinfo=UTC).isoformat()
    messages = [{"sender": "user", "content": "hi", "timestamp": ended}]
    row = summary_row(0, workflow_name="support", ended_at=ended, metadata={"k": "v"})
    api.get("/conversations").respond(200, json=[row], headers={"Content-Range": "0-0/1"})
    listing = (await http.get(f"/users/{USER_ID}/conversations")).json()
    _has_seed_fields(listing, SEED_LIST)
    (item,) = listing["conversations"]
    _has_seed_fields(item, SEED_LIST_ITEM)
    assert (item["id"], item["workflow"], item["metadata"]) == (row["id"], "support", {"k": "v"})
    assert datetime.fromisoformat(item["ended_at"]) == datetime.fromisoformat(ended)
    assert "items" not in listing and "workflow_name" not in item

    api.get("/conversations").respond(200, json=[{**row, "messages": messages}])
    detail = (await http.get(f"/users/{USER_ID}/conversations/{row['id']}")).json()
    _has_seed_fields(detail, SEED_DETAIL)
    assert (detail["workflow"], detail["messages"]) == ("support", messages)

    api.post("/rpc/get_user_profile").respond(
        200,
        json={
            "user_id": USER_ID,
            "shop_domain": "cool-shop.myshopify.com",
            "email": "owner@example.com",
            "name": "Ada",
            "created_at": "2026-01-01T00:00:00+00:00",
            "last_seen": "2026-01-02T00:00:00+00:00",
            "stats": {
                "total_conversations": 1,
                "first_conversation": row["started_at"],
                "last_conversation": row["started_at"],
            },
        },
    )
    profile = (await http.get(f"/users/{USER_ID}/profile")).json()
    _has_seed_fields(profile, SEED_PROFILE)
    _has_seed_fields(profile["stats"], SEED_STATS)


def test_the_openapi_schema_describes_the_seeds_json(aclient: AsyncIdentityClient) -> None:
    app = FastAPI()
    app.include_router(
        history_router(get_current_user=header_user, client=aclient), prefix="/api/v1"
    )
    schema = app.openapi()
    assert set(schema["paths"]) == {  # the seed's paths
        "/api/v1/users/{user_id}/conversations",
        "/api/v1/users/{user_id}/conversations/{conversation_id}",
        "/api/v1/users/{user_id}/profile",
    }
    components = schema["components"]["schemas"]

    def described(name: str, fields: dict[str, str]) -> None:
        component = components[name]
        assert set(fields) <= set(component["required"]), name
        for field, json_type in fields.items():
            prop = component["properties"][field]
            types = {v.get("type") for v in prop.get("anyOf", [prop])} | (
                {"object"} if "$ref" in prop or "additionalProperties" in prop else set()
            )
            assert json_type in types, (name, field, prop)

    def response_of(path: str) -> str:
        ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        first = ok["schema"]["anyOf"][0] if "anyOf" in ok["schema"] else ok["schema"]
        return str(first["$ref"]).rsplit("/", 1)[-1]

    described(response_of("/api/v1/users/{user_id}/conversations"), SEED_LIST)
    described("ConversationListItem", SEED_LIST_ITEM)
    described("SearchList", SEED_LIST)  # ?q= keeps the list's names
    described("SearchListItem", SEED_LIST_ITEM)
    described(response_of("/api/v1/users/{user_id}/conversations/{conversation_id}"), SEED_DETAIL)
    described(response_of("/api/v1/users/{user_id}/profile"), SEED_PROFILE)
    described("ProfileStats", SEED_STATS)


# --- search: ?q= -------------------------------------------------------------------------------


def search_answer(hits: list[dict[str, Any]], total: int, **page: int) -> dict[str, Any]:
    return {"conversations": hits, "total": total, "limit": 20, "offset": 0, **page}


async def test_search_keeps_the_list_fields_plus_snippet_and_rank(
    http: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    ended = datetime(2026, 1, 1, 1, tzinfo=UTC).isoformat()
    hits = [
        summary_row(0, workflow_name="support", ended_at=ended, rank=0.5, snippet="<mark>a</mark>"),
        summary_row(1, rank=0.25, snippet=None),
    ]
    for hit in hits:
        del hit["user_id"]  # the database omits it: the page is one user's
    route = api.post("/rpc/search_conversations").respond(
        200, json=search_answer(hits, total=9, limit=2, offset=4)
    )
    response = await http.get(
        f"/users/{USER_ID}/conversations", params={"q": '"refund" -label', "limit": 2, "offset": 4}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    _has_seed_fields(body, SEED_LIST)
    assert (body["total"], body["limit"], body["offset"]) == (9, 2, 4)
    assert body["next_cursor"] is None
    assert [item["id"] for item in body["conversations"]] == [h["id"] for h in hits]
    first, second = body["conversations"]
    _has_seed_fields(first, SEED_LIST_ITEM)
    assert first["workflow"] == "support" and "workflow_name" not in first
    assert (first["rank"], first["snippet"]) == (0.5, "<mark>a</mark>")
    assert (second["rank"], second["snippet"]) == (0.25, None)
    request = route.calls.last.request
    assert json.loads(request.content) == {
        "user_id": USER_ID,
        "query": '"refund" -label',
        "max_results": 2,
        "skip": 4,
    }
    # user-scoped, like every read of the router
    assert request.headers["apikey"] == ANON_KEY
    claims = jwt.decode(
        request.headers["authorization"].removeprefix("Bearer "),
        JWT_SECRET,
        algorithms=["HS256"],
        audience="authenticated",
    )
    assert claims["app_metadata"] == {"user_id": USER_ID}


async def test_a_plain_list_gets_no_search_fields(
    http: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    api.get("/conversations").respond(
        200, json=[summary_row(0)], headers={"Content-Range": "0-0/1"}
    )
    (item,) = (await http.get(f"/users/{USER_ID}/conversations")).json()["conversations"]
    assert "rank" not in item and "snippet" not in item


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ({"q": ""}, ["query", "q"]),
        ({"q": "   "}, ["query", "q"]),  # passes the schema, refused by the SDK
        ({"q": "x" * 1001}, ["query", "q"]),
        ({"q": "refund\x00"}, ["query", "q"]),
        ({"q": "refund", "cursor": GOOD_CURSOR}, ["query", "cursor"]),
        ({"q": "refund", "offset": 2**31}, ["query", "offset"]),
        ({"q": "refund", "limit": 0}, ["query", "limit"]),
    ],
)
async def test_bad_search_parameters_are_422(
    http: httpx.AsyncClient, api: respx.MockRouter, query: dict[str, Any], loc: list[str]
) -> None:
    response = await http.get(f"/users/{USER_ID}/conversations", params=query)
    assert response.status_code == 422, response.text
    assert loc in [error["loc"] for error in response.json()["detail"]]
    assert api.calls.call_count == 0


async def test_search_rejected_by_the_database_is_422_and_denied_is_403(
    http: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    route = api.post("/rpc/search_conversations").respond(
        400, json={"code": "22023", "message": "query must not be empty"}
    )
    response = await http.get(f"/users/{USER_ID}/conversations", params={"q": "refund"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "q"]
    route.respond(401, json={"code": "42501", "message": "permission denied for function"})
    response = await http.get(f"/users/{USER_ID}/conversations", params={"q": "refund"})
    assert response.status_code == 403
    route.respond(200, json=search_answer([], total=0))
    response = await http.get(f"/users/{USER_ID}/conversations", params={"q": "the"})
    assert response.status_code == 200
    assert response.json() == {
        "conversations": [],
        "total": 0,
        "limit": 20,
        "offset": 0,
        "next_cursor": None,
    }
