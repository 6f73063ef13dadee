"""The access model, proven with real HTTP through the gateway (nginx → PostgREST → Postgres).

Issue 2, "Must hold": the anon key (legacy JWT and ``sb_publishable_…``) reads no row of any
identity table and writes nothing; a token for a role that is not granted is refused (403); an
expired or forged token is refused (401); no or an unknown API key is refused (401); an
oversized body is refused (413); a user-scoped token for user A never sees user B's rows and
writes nothing; the service key (legacy JWT and ``sb_secret_…``) can do all the package needs.

Every test makes its own shops (``gw-<uuid4 hex>.myshopify.com``), so tests are independent,
rerunnable and never rely on an empty database. Refused writes are checked against a snapshot
read back with the service key.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from .conftest import GatewayEnv, GwMintToken

pytestmark = pytest.mark.integration

TABLES = ("users", "conversations", "events")
USER_ID_RE = re.compile(r"^usr_[a-z0-9]{16,}$")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def gw_headers(
    apikey: str | None,
    bearer: str | None = None,
    prefer: str | None = None,
) -> dict[str, str]:
    """Headers for the identity schema: Accept-Profile (reads) and Content-Profile (writes)."""
    headers = {"Accept-Profile": "identity", "Content-Profile": "identity"}
    if apikey is not None:
        headers["apikey"] = apikey
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    if prefer is not None:
        headers["Prefer"] = prefer
    return headers


def new_shop() -> str:
    return f"gw-{uuid.uuid4().hex}.myshopify.com"


def new_user_id() -> str:
    return f"usr_{uuid.uuid4().hex[:24]}"


def messages(n: int) -> list[dict[str, str]]:
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"} for i in range(n)
    ]


def ok_json(response: httpx.Response) -> Any:
    assert response.is_success, f"{response.request.method} {response.request.url}: " + (
        f"{response.status_code} {response.text}"
    )
    return response.json() if response.content else None


@dataclass
class Service:
    """The backend's view (legacy service_role key): creates fixtures and reads back state."""

    client: httpx.Client
    headers: dict[str, str]

    def rpc(self, fn: str, body: dict[str, Any]) -> Any:
        return ok_json(self.client.post(f"rpc/{fn}", headers=self.headers, json=body))

    def get(self, table: str, **params: str) -> list[dict[str, Any]]:
        rows = ok_json(self.client.get(table, headers=self.headers, params=params))
        assert isinstance(rows, list)
        return rows

    def create_user(self) -> str:
        [row] = self.rpc("get_or_create_user", {"shop_domain": new_shop()})
        assert row["is_new"] is True
        return str(row["user_id"])

    def create_conversation(self, user_id: str, n_messages: int, started_at: str) -> str:
        conversation_id = str(uuid.uuid4())
        ok_json(
            self.client.post(
                "conversations",
                headers=self.headers,
                json={
                    "id": conversation_id,
                    "user_id": user_id,
                    "workflow_name": "support",
                    "started_at": started_at,
                    "messages": messages(n_messages),
                },
            )
        )
        return conversation_id

    def record_event(self, user_id: str, event_type: str = "login") -> str:
        event_id = str(uuid.uuid4())
        [row] = self.rpc(
            "record_events",
            {"events": [{"id": event_id, "user_id": user_id, "event_type": event_type}]},
        )
        assert row == {"id": event_id, "status": "inserted"}
        return event_id


@dataclass
class World:
    """Two users, A and B, each with one conversation and one event."""

    a: str
    b: str
    a_conversation: str
    b_conversation: str
    a_event: str
    b_event: str

    def snapshot(self, svc: Service) -> dict[str, list[dict[str, Any]]]:
        """Every row the world owns, as the service key reads it."""
        ids = f"in.({self.a},{self.b})"
        return {
            "users": svc.get("users", id=ids, order="id"),
            "conversations": svc.get("conversations", user_id=ids, order="id"),
            "events": svc.get("events", user_id=ids, order="id"),
        }


@pytest.fixture(scope="module")
def gw_svc(gw_client: httpx.Client, gw_env: GatewayEnv) -> Service:
    return Service(gw_client, gw_headers(gw_env.service_role_key))


@pytest.fixture
def gw_world(gw_svc: Service) -> World:
    a, b = gw_svc.create_user(), gw_svc.create_user()
    return World(
        a=a,
        b=b,
        a_conversation=gw_svc.create_conversation(a, 2, "2026-01-01T10:00:00Z"),
        b_conversation=gw_svc.create_conversation(b, 3, "2026-01-02T10:00:00Z"),
        a_event=gw_svc.record_event(a),
        b_event=gw_svc.record_event(b),
    )


def write_attempts(world: World) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, json) for an insert, upsert, update and delete on every table."""
    return [
        ("POST", "users", {"id": new_user_id(), "shop_domain": new_shop()}),
        ("POST", "users?on_conflict=id", {"id": world.b, "shop_domain": new_shop()}),
        ("PATCH", f"users?id=eq.{world.b}", {"name": "pwned", "email": "x@evil.test"}),
        ("DELETE", f"users?id=eq.{world.b}", {}),
        (
            "POST",
            "conversations",
            {"id": str(uuid.uuid4()), "user_id": world.a, "started_at": "2026-01-01T00:00:00Z"},
        ),
        (
            "POST",
            "conversations?on_conflict=id",
            {"id": world.b_conversation, "started_at": "2026-01-01T00:00:00Z", "messages": []},
        ),
        ("PATCH", f"conversations?id=eq.{world.b_conversation}", {"messages": []}),
        ("PATCH", f"conversations?id=eq.{world.a_conversation}", {"user_id": world.b}),
        ("DELETE", f"conversations?user_id=eq.{world.b}", {}),
        ("POST", "events", {"id": str(uuid.uuid4()), "user_id": world.a, "event_type": "login"}),
        ("PATCH", f"events?id=eq.{world.b_event}", {"event_data": {"pwned": True}}),
        ("DELETE", f"events?user_id=eq.{world.a}", {}),
    ]


def rpc_attempts(world: World, shop: str) -> list[tuple[str, dict[str, Any]]]:
    """Every identity function with an argument that would change or reveal something."""
    return [
        ("get_or_create_user", {"shop_domain": shop}),
        (
            "record_events",
            {"events": [{"id": str(uuid.uuid4()), "user_id": world.b, "event_type": "login"}]},
        ),
        ("get_user_profile", {"user_id": world.b}),
        (
            "archive_conversations",
            {"conversations": [{"id": world.b_conversation, "messages": messages(9)}]},
        ),
        ("link_conversations", {"links": [{"id": world.b_conversation, "user_id": world.a}]}),
        ("health", {}),
    ]


def send(
    client: httpx.Client, method: str, path: str, headers: dict[str, str], body: dict[str, Any]
) -> httpx.Response:
    prefer = "resolution=merge-duplicates" if "on_conflict" in path else None
    if prefer:
        headers = {**headers, "Prefer": prefer}
    if method == "DELETE":
        return client.request(method, path, headers=headers)
    return client.request(method, path, headers=headers, json=body)


# ---------------------------------------------------------------------------------------------
# Gateway key handling
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("table", TABLES)
def test_request_without_apikey_is_401(
    gw_client: httpx.Client, gw_env: GatewayEnv, table: str
) -> None:
    # Like Kong's key-auth: no apikey, no entry, even with a valid service JWT as bearer.
    for bearer in (None, gw_env.service_role_key):
        response = gw_client.get(table, headers=gw_headers(None, bearer))
        assert response.status_code == 401, response.text
    response = gw_client.post(
        "rpc/get_or_create_user",
        headers=gw_headers(None, gw_env.service_role_key),
        json={"shop_domain": new_shop()},
    )
    assert response.status_code == 401, response.text


@pytest.mark.parametrize(
    "apikey",
    [
        "sb_publishable_" + "x" * 32,
        "sb_secret_" + "y" * 32,
        "sb_secret_",
    ],
)
def test_unknown_sb_key_is_401(
    gw_client: httpx.Client, gw_env: GatewayEnv, gw_svc: Service, apikey: str
) -> None:
    shop = new_shop()
    for bearer in (None, gw_env.service_role_key):
        response = gw_client.get("users", headers=gw_headers(apikey, bearer))
        assert response.status_code == 401, response.text
        response = gw_client.post(
            "rpc/get_or_create_user",
            headers=gw_headers(apikey, bearer),
            json={"shop_domain": shop},
        )
        assert response.status_code == 401, response.text
    assert gw_svc.get("users", shop_domain=f"eq.{shop}") == []


def _case_variants(key: str) -> list[str]:
    """Near misses of a key: other letter case, one character more or less."""
    return [key.swapcase(), key.upper(), key.lower(), key + "x", key[:-1]]


@pytest.mark.parametrize(
    "key_name", ["anon_key", "service_role_key", "publishable_key", "secret_key"]
)
def test_apikey_is_compared_exactly(
    gw_client: httpx.Client, gw_env: GatewayEnv, gw_svc: Service, key_name: str
) -> None:
    # Kong's key-auth compares keys byte for byte; nginx's `map` ignores case unless told not to.
    key = getattr(gw_env, key_name)
    shop = new_shop()
    for variant in _case_variants(key):
        if variant == key:
            continue
        response = gw_client.get("users", headers=gw_headers(variant))
        assert response.status_code == 401, (variant[:12], response.text)
        assert response.json() == {"message": "Invalid API key"}
        response = gw_client.post(
            "rpc/get_or_create_user", headers=gw_headers(variant), json={"shop_domain": shop}
        )
        assert response.status_code == 401, response.text
    assert gw_svc.get("users", shop_domain=f"eq.{shop}") == []


def _ids_filter_url(length: int) -> str:
    """A ``users`` query whose path and query string are ``length`` bytes long."""
    base = "/rest/v1/users?select=id&id=in.("
    ids: list[str] = []
    while len(base) + len(",".join(ids)) + 1 + 29 <= length:
        ids.append(new_user_id())
    url = base + ",".join(ids) + ")"
    pad = length - len(url)
    assert pad >= 0
    # Pad with a harmless extra filter value so the length is exact.
    return url + "&shop_domain=neq." + "x" * max(pad - len("&shop_domain=neq."), 1)


@pytest.mark.parametrize("length", [4_500, 6_000, 8_000])
def test_urls_up_to_8_kib_are_served(
    gw_env: GatewayEnv, gw_client: httpx.Client, gw_svc: Service, length: int
) -> None:
    # PostgREST echoes the query in Content-Location: the gateway must have room for it.
    user_id = gw_svc.create_user()
    url = _ids_filter_url(length).replace("in.(", f"in.({user_id},", 1)
    response = gw_client.get(
        gw_env.url.rstrip("/") + url, headers=gw_headers(gw_env.service_role_key)
    )
    assert response.status_code == 200, response.text[:200]
    assert response.json() == [{"id": user_id}]


def test_url_over_the_limit_is_414_not_502(gw_env: GatewayEnv, gw_client: httpx.Client) -> None:
    # A clear refusal that no client retries, as Supabase's gateway gives, never a 502.
    url = _ids_filter_url(9_000)
    response = gw_client.get(
        gw_env.url.rstrip("/") + url, headers=gw_headers(gw_env.service_role_key)
    )
    assert response.status_code == 414


def _create_user_on_a_pooled_connection(gw_client: httpx.Client, gw_env: GatewayEnv) -> None:
    """A POST nginx will not resend: it fails with 502 if it lands on a connection being dropped."""
    [row] = ok_json(
        gw_client.post(
            "rpc/get_or_create_user",
            headers=gw_headers(gw_env.secret_key),
            json={"shop_domain": new_shop()},
        )
    )
    assert row["is_new"] is True


def test_head_requests_never_break_the_next_request(
    gw_client: httpx.Client, gw_env: GatewayEnv
) -> None:
    # PostgREST ends the connection after every HEAD reply (it carries no length), without
    # saying so: the POST after it (which nginx never resends) must not land on that connection.
    for _ in range(50):
        counted = gw_client.head(
            "users",
            headers=gw_headers(gw_env.secret_key, prefer="count=exact"),
            params={"select": "id", "limit": "1"},
        )
        assert counted.status_code in (200, 206), counted.text
        _create_user_on_a_pooled_connection(gw_client, gw_env)


def test_unread_request_bodies_never_break_the_next_request(
    gw_client: httpx.Client, gw_env: GatewayEnv, gw_mint_token: GwMintToken
) -> None:
    # PostgREST answers a rejected token without reading the body, then drops the connection;
    # the requests after it (POSTs, which nginx never retries) must not land on that connection.
    expired = gw_mint_token(role="service_role", expires_in=-60)
    body = b'{"events": []}' + b" " * 10_000  # past Warp's 8 KiB drain, within socket buffers
    for _ in range(50):
        refused = gw_client.post(
            "rpc/record_events",
            headers={**gw_headers(gw_env.secret_key, expired), "Content-Type": "application/json"},
            content=body,
        )
        assert refused.status_code == 401, refused.text
        _create_user_on_a_pooled_connection(gw_client, gw_env)


@pytest.mark.parametrize("role", ["service_role", "authenticated"])
def test_expired_token_is_401(
    gw_client: httpx.Client, gw_env: GatewayEnv, gw_mint_token: GwMintToken, role: str
) -> None:
    token = gw_mint_token(role=role, user_id=new_user_id(), expires_in=-120)
    for apikey in (gw_env.anon_key, gw_env.publishable_key):
        response = gw_client.get("users", headers=gw_headers(apikey, token))
        assert response.status_code == 401, response.text
        assert "expired" in response.text.lower()


@pytest.mark.parametrize("role", ["service_role", "authenticated", "anon"])
def test_token_signed_with_wrong_secret_is_401(
    gw_client: httpx.Client,
    gw_env: GatewayEnv,
    gw_mint_token: GwMintToken,
    gw_svc: Service,
    role: str,
) -> None:
    forged = gw_mint_token(role=role, user_id=new_user_id(), secret="not-the-secret-" * 4)
    for apikey in (gw_env.anon_key, gw_env.publishable_key, gw_env.secret_key):
        response = gw_client.get("users", headers=gw_headers(apikey, forged))
        assert response.status_code == 401, response.text
    # As the apikey itself (no Authorization header), too.
    shop = new_shop()
    response = gw_client.post(
        "rpc/get_or_create_user", headers=gw_headers(forged), json={"shop_domain": shop}
    )
    assert response.status_code == 401, response.text
    assert gw_svc.get("users", shop_domain=f"eq.{shop}") == []


def test_unsigned_token_is_401(gw_client: httpx.Client, gw_env: GatewayEnv) -> None:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    unsigned = b64({"alg": "none", "typ": "JWT"}) + "." + b64({"role": "service_role"}) + "."
    for apikey in (gw_env.anon_key, gw_env.publishable_key):
        response = gw_client.get("users", headers=gw_headers(apikey, unsigned))
        assert response.status_code == 401, response.text


def test_sb_secret_as_bearer_does_not_escalate(gw_client: httpx.Client, gw_env: GatewayEnv) -> None:
    # The gateway swaps only the apikey; a secret key smuggled into Authorization next to a
    # public key must not turn the request into a service_role request.
    for apikey in (gw_env.publishable_key, gw_env.anon_key):
        response = gw_client.get("users", headers=gw_headers(apikey, gw_env.secret_key))
        assert response.status_code == 401, response.text


@pytest.mark.parametrize("role", ["postgres", "pg_read_all_data", "authenticator"])
def test_token_for_ungranted_role_is_403(
    gw_client: httpx.Client,
    gw_env: GatewayEnv,
    gw_mint_token: GwMintToken,
    gw_svc: Service,
    gw_world: World,
    role: str,
) -> None:
    token = gw_mint_token(role=role)
    before = gw_world.snapshot(gw_svc)
    for apikey in (gw_env.anon_key, gw_env.publishable_key):
        headers = gw_headers(apikey, token)
        for table in TABLES:
            response = gw_client.get(table, headers=headers)
            assert response.status_code == 403, f"{table}: {response.text}"
        for method, path, body in write_attempts(gw_world):
            response = send(gw_client, method, path, headers, body)
            assert response.status_code == 403, f"{method} {path}: {response.text}"
        shop = new_shop()
        for fn, body in rpc_attempts(gw_world, shop):
            response = gw_client.post(f"rpc/{fn}", headers=headers, json=body)
            assert response.status_code == 403, f"rpc/{fn}: {response.text}"
        assert gw_svc.get("users", shop_domain=f"eq.{shop}") == []
    assert gw_world.snapshot(gw_svc) == before


def test_token_for_nonexistent_role_is_refused(
    gw_client: httpx.Client, gw_env: GatewayEnv, gw_mint_token: GwMintToken
) -> None:
    # supabase_admin exists on hosted Supabase (there: 403, as for postgres); the local stack
    # does not create it, and PostgREST answers 400 "role does not exist". Refused either way.
    token = gw_mint_token(role="supabase_admin")
    for table in TABLES:
        response = gw_client.get(table, headers=gw_headers(gw_env.publishable_key, token))
        assert response.status_code in (400, 403), response.text
        assert response.json()["code"] in ("22023", "42501")


def test_body_over_gateway_limit_is_413(gw_client: httpx.Client, gw_env: GatewayEnv) -> None:
    padding = b" " * (17 * 1024 * 1024)  # the gateway allows 16m
    response = gw_client.post(
        "rpc/record_events",
        headers={**gw_headers(gw_env.secret_key), "Content-Type": "application/json"},
        content=b'{"events": []}' + padding,
    )
    assert response.status_code == 413
    # The refusal leaves the gateway healthy: the next request on the same client is served.
    after = gw_client.post(
        "rpc/record_events", headers=gw_headers(gw_env.secret_key), json={"events": []}
    )
    assert after.status_code == 200, after.text


def test_body_under_gateway_limit_passes(gw_client: httpx.Client, gw_env: GatewayEnv) -> None:
    padding = b" " * (15 * 1024 * 1024)
    response = gw_client.post(
        "rpc/record_events",
        headers={**gw_headers(gw_env.secret_key), "Content-Type": "application/json"},
        content=b'{"events": []}' + padding,
    )
    assert response.status_code == 200, response.text
    assert response.json() == []


# ---------------------------------------------------------------------------------------------
# anon: the public key reads nothing and writes nothing
# ---------------------------------------------------------------------------------------------
@pytest.fixture(params=["legacy-anon-jwt", "sb-publishable"])
def gw_anon_key(request: pytest.FixtureRequest, gw_env: GatewayEnv) -> str:
    return gw_env.anon_key if request.param == "legacy-anon-jwt" else gw_env.publishable_key


@pytest.mark.parametrize("table", TABLES)
def test_anon_reads_no_row(
    gw_client: httpx.Client, gw_anon_key: str, gw_world: World, table: str
) -> None:
    for params in (
        {},
        {"select": "*"},
        {"id": f"eq.{gw_world.a}"} if table == "users" else {"user_id": f"eq.{gw_world.a}"},
    ):
        response = gw_client.get(table, headers=gw_headers(gw_anon_key), params=params)
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "42501"
    response = gw_client.head(table, headers=gw_headers(gw_anon_key, prefer="count=exact"))
    assert response.status_code == 401
    assert "content-range" not in response.headers


def test_anon_writes_nothing(
    gw_client: httpx.Client, gw_anon_key: str, gw_svc: Service, gw_world: World
) -> None:
    before = gw_world.snapshot(gw_svc)
    attempts = write_attempts(gw_world)
    for method, path, body in attempts:
        response = send(gw_client, method, path, gw_headers(gw_anon_key), body)
        assert response.status_code == 401, f"{method} {path}: {response.text}"
    assert gw_world.snapshot(gw_svc) == before
    inserted_user = attempts[0][2]["id"]
    assert gw_svc.get("users", id=f"eq.{inserted_user}") == []


def test_anon_calls_no_function(
    gw_client: httpx.Client, gw_anon_key: str, gw_svc: Service, gw_world: World
) -> None:
    before = gw_world.snapshot(gw_svc)
    shop = new_shop()
    for fn, body in rpc_attempts(gw_world, shop):
        response = gw_client.post(f"rpc/{fn}", headers=gw_headers(gw_anon_key), json=body)
        assert response.status_code == 401, f"rpc/{fn}: {response.text}"
    response = gw_client.get(
        "rpc/get_user_profile", headers=gw_headers(gw_anon_key), params={"user_id": gw_world.a}
    )
    assert response.status_code == 401, response.text
    assert gw_svc.get("users", shop_domain=f"eq.{shop}") == []
    assert gw_world.snapshot(gw_svc) == before


# ---------------------------------------------------------------------------------------------
# A user-scoped token: own rows only, no writes
# ---------------------------------------------------------------------------------------------
@pytest.fixture(params=["legacy-anon-jwt", "sb-publishable"])
def gw_user_headers(
    request: pytest.FixtureRequest,
    gw_env: GatewayEnv,
    gw_mint_token: GwMintToken,
) -> Callable[..., dict[str, str]]:
    """``headers(user_id, prefer=None)``: the public key plus a user-scoped bearer token."""
    apikey = gw_env.anon_key if request.param == "legacy-anon-jwt" else gw_env.publishable_key

    def headers(user_id: str, prefer: str | None = None) -> dict[str, str]:
        token = gw_mint_token(role="authenticated", user_id=user_id)
        return gw_headers(apikey, token, prefer=prefer)

    return headers


def test_user_reads_only_own_rows(
    gw_client: httpx.Client, gw_user_headers: Callable[..., dict[str, str]], gw_world: World
) -> None:
    headers = gw_user_headers(gw_world.a)

    users = ok_json(gw_client.get("users", headers=headers))
    assert [row["id"] for row in users] == [gw_world.a]

    conversations = ok_json(gw_client.get("conversations", headers=headers))
    assert [row["id"] for row in conversations] == [gw_world.a_conversation]
    assert conversations[0]["message_count"] == 2

    events = ok_json(gw_client.get("events", headers=headers))
    assert [row["id"] for row in events] == [gw_world.a_event]


def test_user_never_sees_other_users_rows(
    gw_client: httpx.Client, gw_user_headers: Callable[..., dict[str, str]], gw_world: World
) -> None:
    headers = gw_user_headers(gw_world.a)
    b = gw_world.b
    for table, params in [
        ("users", {"id": f"eq.{b}"}),
        ("users", {"shop_domain": "like.gw-*"}),
        ("conversations", {"user_id": f"eq.{b}"}),
        ("conversations", {"id": f"eq.{gw_world.b_conversation}"}),
        ("conversations", {"user_id": "is.null"}),
        ("events", {"user_id": f"eq.{b}"}),
        ("events", {"id": f"eq.{gw_world.b_event}"}),
    ]:
        rows = ok_json(gw_client.get(table, headers=headers, params=params))
        assert all(row.get("user_id", row.get("id")) == gw_world.a for row in rows), (table, rows)
        assert b not in json.dumps(rows)

    # Counts are filtered by RLS too: nothing leaks through Content-Range.
    response = gw_client.get(
        "conversations", headers=gw_user_headers(gw_world.a, prefer="count=exact")
    )
    assert response.headers["content-range"] == "0-0/1"
    response = gw_client.head("users", headers=gw_user_headers(gw_world.a, prefer="count=exact"))
    assert response.headers["content-range"].endswith("/1")


def test_user_gets_own_profile_but_not_another(
    gw_client: httpx.Client, gw_user_headers: Callable[..., dict[str, str]], gw_world: World
) -> None:
    headers = gw_user_headers(gw_world.a)
    own = ok_json(
        gw_client.post("rpc/get_user_profile", headers=headers, json={"user_id": gw_world.a})
    )
    assert own["user_id"] == gw_world.a
    assert own["stats"]["total_conversations"] == 1
    assert own["stats"]["total_messages"] == 2
    assert own["stats"]["total_events"] == 1

    response = gw_client.post("rpc/get_user_profile", headers=headers, json={"user_id": gw_world.b})
    assert response.status_code == 200, response.text
    assert response.json() is None
    response = gw_client.get(
        "rpc/get_user_profile", headers=headers, params={"user_id": gw_world.b}
    )
    assert response.status_code == 200, response.text
    assert response.json() is None


def test_user_writes_nothing(
    gw_client: httpx.Client,
    gw_user_headers: Callable[..., dict[str, str]],
    gw_svc: Service,
    gw_world: World,
) -> None:
    before = gw_world.snapshot(gw_svc)
    headers = gw_user_headers(gw_world.a)
    attempts = [
        *write_attempts(gw_world),
        # Its own rows too: a user token is read-only.
        ("PATCH", f"users?id=eq.{gw_world.a}", {"name": "renamed"}),
        ("DELETE", f"conversations?id=eq.{gw_world.a_conversation}", {}),
        ("PATCH", f"events?id=eq.{gw_world.a_event}", {"event_type": "edited"}),
    ]
    for method, path, body in attempts:
        response = send(gw_client, method, path, headers, body)
        assert response.status_code == 403, f"{method} {path}: {response.text}"
    assert gw_world.snapshot(gw_svc) == before


def test_user_calls_no_write_function(
    gw_client: httpx.Client,
    gw_user_headers: Callable[..., dict[str, str]],
    gw_svc: Service,
    gw_world: World,
) -> None:
    before = gw_world.snapshot(gw_svc)
    headers = gw_user_headers(gw_world.a)
    shop = new_shop()
    for fn, body in rpc_attempts(gw_world, shop):
        if fn == "get_user_profile":
            continue  # allowed (own profile only), covered above
        response = gw_client.post(f"rpc/{fn}", headers=headers, json=body)
        assert response.status_code == 403, f"rpc/{fn}: {response.text}"
    # Not even for its own user id.
    response = gw_client.post(
        "rpc/record_events",
        headers=headers,
        json={"events": [{"id": str(uuid.uuid4()), "user_id": gw_world.a, "event_type": "x"}]},
    )
    assert response.status_code == 403, response.text
    assert gw_svc.get("users", shop_domain=f"eq.{shop}") == []
    assert gw_world.snapshot(gw_svc) == before


def test_user_b_sees_only_b(
    gw_client: httpx.Client, gw_user_headers: Callable[..., dict[str, str]], gw_world: World
) -> None:
    headers = gw_user_headers(gw_world.b)
    assert [r["id"] for r in ok_json(gw_client.get("users", headers=headers))] == [gw_world.b]
    conversations = ok_json(gw_client.get("conversations", headers=headers))
    assert [r["id"] for r in conversations] == [gw_world.b_conversation]
    events = ok_json(gw_client.get("events", headers=headers))
    assert [r["id"] for r in events] == [gw_world.b_event]
    profile = ok_json(
        gw_client.post("rpc/get_user_profile", headers=headers, json={"user_id": gw_world.a})
    )
    assert profile is None


@pytest.mark.parametrize(
    "claims",
    [
        {},  # authenticated, but no user id at all
        {"user_metadata": {"user_id": "<A>"}},  # user-editable in Supabase Auth: not trusted
        {"user_id": "<A>"},  # top-level claim: not the one the policies read
        {"app_metadata": {"user_id": None}},
    ],
    ids=["no-user-id", "user-metadata", "top-level", "null-user-id"],
)
def test_authenticated_without_app_metadata_user_id_sees_nothing(
    gw_client: httpx.Client,
    gw_env: GatewayEnv,
    gw_mint_token: GwMintToken,
    gw_world: World,
    claims: dict[str, Any],
) -> None:
    resolved = json.loads(json.dumps(claims).replace("<A>", gw_world.a))
    token = gw_mint_token(role="authenticated", claims=resolved)
    headers = gw_headers(gw_env.publishable_key, token)
    for table in TABLES:
        assert ok_json(gw_client.get(table, headers=headers)) == []
    profile = ok_json(
        gw_client.post("rpc/get_user_profile", headers=headers, json={"user_id": gw_world.a})
    )
    assert profile is None


# ---------------------------------------------------------------------------------------------
# service_role: everything the package needs
# ---------------------------------------------------------------------------------------------
@pytest.fixture(params=["legacy-service-jwt", "sb-secret"])
def gw_service_headers(request: pytest.FixtureRequest, gw_env: GatewayEnv) -> dict[str, str]:
    key = gw_env.service_role_key if request.param == "legacy-service-jwt" else gw_env.secret_key
    return gw_headers(key)


def test_service_get_or_create_user(
    gw_client: httpx.Client, gw_service_headers: dict[str, str]
) -> None:
    shop = new_shop()
    [first] = ok_json(
        gw_client.post(
            "rpc/get_or_create_user",
            headers=gw_service_headers,
            json={"shop_domain": shop, "email": "owner@example.com"},
        )
    )
    assert first["is_new"] is True
    assert USER_ID_RE.match(first["user_id"])
    assert shop.split(".")[0] not in first["user_id"]

    [again] = ok_json(
        gw_client.post(
            "rpc/get_or_create_user",
            headers=gw_service_headers,
            json={"shop_domain": f"  {shop.upper()} ", "email": None},
        )
    )
    assert again == {"user_id": first["user_id"], "is_new": False}

    [other] = ok_json(
        gw_client.post(
            "rpc/get_or_create_user", headers=gw_service_headers, json={"shop_domain": new_shop()}
        )
    )
    assert other["user_id"] != first["user_id"]

    [row] = ok_json(
        gw_client.get("users", headers=gw_service_headers, params={"id": f"eq.{first['user_id']}"})
    )
    assert row["shop_domain"] == shop
    assert row["email"] == "owner@example.com"

    response = gw_client.post(
        "rpc/get_or_create_user", headers=gw_service_headers, json={"shop_domain": "evil.com"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "23514"


def test_service_get_or_create_user_is_race_free(gw_env: GatewayEnv) -> None:
    shop = new_shop()

    def call(_: int) -> dict[str, Any]:
        with httpx.Client(base_url=gw_env.rest_url + "/", timeout=30.0) as client:
            response = client.post(
                "rpc/get_or_create_user",
                headers=gw_headers(gw_env.secret_key),
                json={"shop_domain": shop},
            )
            [row] = ok_json(response)
            return dict(row)

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(call, range(24)))
    assert len({r["user_id"] for r in results}) == 1
    assert sum(r["is_new"] for r in results) == 1


def test_service_record_events(
    gw_client: httpx.Client, gw_service_headers: dict[str, str], gw_svc: Service
) -> None:
    user = gw_svc.create_user()
    known, unknown = str(uuid.uuid4()), str(uuid.uuid4())
    batch = {
        "events": [
            {
                "id": known,
                "user_id": user,
                "event_type": "chat.started",
                "event_data": {"workflow": "support"},
                "created_at": "2026-01-10T08:00:00Z",
            },
            {"id": unknown, "user_id": new_user_id(), "event_type": "login"},
        ]
    }
    first = ok_json(gw_client.post("rpc/record_events", headers=gw_service_headers, json=batch))
    assert sorted((r["id"], r["status"]) for r in first) == sorted(
        [(known, "inserted"), (unknown, "unknown_user")]
    )
    replay = ok_json(gw_client.post("rpc/record_events", headers=gw_service_headers, json=batch))
    assert sorted((r["id"], r["status"]) for r in replay) == sorted(
        [(known, "duplicate"), (unknown, "unknown_user")]
    )
    response = gw_client.get(
        "events",
        headers={**gw_service_headers, "Prefer": "count=exact"},
        params={"id": f"in.({known},{unknown})"},
    )
    assert response.headers["content-range"] == "0-0/1"
    [row] = ok_json(response)
    assert row["user_id"] == user
    assert row["event_data"] == {"workflow": "support"}


def test_service_get_user_profile(
    gw_client: httpx.Client, gw_service_headers: dict[str, str], gw_svc: Service
) -> None:
    user = gw_svc.create_user()
    gw_svc.create_conversation(user, 2, "2026-01-01T10:00:00Z")
    gw_svc.create_conversation(user, 3, "2026-01-05T10:00:00Z")
    gw_svc.record_event(user)
    profile = ok_json(
        gw_client.post("rpc/get_user_profile", headers=gw_service_headers, json={"user_id": user})
    )
    assert profile["user_id"] == user
    stats = profile["stats"]
    assert stats["total_conversations"] == 2
    assert stats["total_messages"] == 5
    assert stats["total_events"] == 1
    assert stats["first_conversation"].startswith("2026-01-01T10:00:00")
    assert stats["last_conversation"].startswith("2026-01-05T10:00:00")
    unknown = ok_json(
        gw_client.post(
            "rpc/get_user_profile", headers=gw_service_headers, json={"user_id": new_user_id()}
        )
    )
    assert unknown is None


def test_service_upserts_conversations_replacing_messages(
    gw_client: httpx.Client, gw_service_headers: dict[str, str], gw_svc: Service
) -> None:
    user = gw_svc.create_user()
    conversation_id = str(uuid.uuid4())
    upsert_headers = {
        **gw_service_headers,
        "Prefer": "resolution=merge-duplicates,return=representation",
    }
    row = {
        "id": conversation_id,
        "user_id": user,
        "workflow_name": "support",
        "started_at": "2026-01-01T10:00:00Z",
        "messages": messages(2),
    }
    [created] = ok_json(gw_client.post("conversations", headers=upsert_headers, json=[row]))
    assert created["message_count"] == 2

    row["messages"] = messages(5)
    row["ended_at"] = "2026-01-01T11:00:00Z"
    response = gw_client.post(
        "conversations", headers=upsert_headers, params={"on_conflict": "id"}, json=[row]
    )
    [updated] = ok_json(response)
    assert updated["message_count"] == 5
    assert updated["messages"] == messages(5)
    assert updated["ended_at"].startswith("2026-01-01T11:00:00")

    rows = ok_json(
        gw_client.get(
            "conversations",
            headers=gw_service_headers,
            params={"id": f"eq.{conversation_id}", "select": "id,message_count"},
        )
    )
    assert rows == [{"id": conversation_id, "message_count": 5}]


def test_service_selects_with_exact_count(
    gw_client: httpx.Client, gw_service_headers: dict[str, str], gw_svc: Service
) -> None:
    user = gw_svc.create_user()
    ids = [gw_svc.create_conversation(user, n, f"2026-01-0{n}T10:00:00Z") for n in range(1, 4)]
    response = gw_client.get(
        "conversations",
        headers={**gw_service_headers, "Prefer": "count=exact"},
        params={
            "user_id": f"eq.{user}",
            "select": "id,started_at,message_count",
            "order": "started_at.desc,id.desc",
            "limit": "2",
        },
    )
    assert response.status_code in (200, 206), response.text
    assert response.headers["content-range"] == "0-1/3"
    assert [r["id"] for r in response.json()] == [ids[2], ids[1]]
    assert [r["message_count"] for r in response.json()] == [3, 2]

    response = gw_client.head(
        "conversations",
        headers={**gw_service_headers, "Prefer": "count=exact"},
        params={"user_id": f"eq.{user}"},
    )
    assert response.headers["content-range"].endswith("/3")


def test_service_updates_and_deletes(
    gw_client: httpx.Client, gw_service_headers: dict[str, str], gw_svc: Service
) -> None:
    user = gw_svc.create_user()
    conversation_id = gw_svc.create_conversation(user, 1, "2026-01-01T10:00:00Z")
    event_id = gw_svc.record_event(user)

    response = gw_client.patch(
        "users",
        headers={**gw_service_headers, "Prefer": "return=representation"},
        params={"id": f"eq.{user}"},
        json={"metadata": {"plan": "pro"}},
    )
    [row] = ok_json(response)
    assert row["metadata"] == {"plan": "pro"}

    response = gw_client.delete(
        "events", headers=gw_service_headers, params={"id": f"eq.{event_id}"}
    )
    assert response.status_code == 204, response.text
    assert gw_svc.get("events", id=f"eq.{event_id}") == []

    response = gw_client.delete(
        "conversations", headers=gw_service_headers, params={"id": f"eq.{conversation_id}"}
    )
    assert response.status_code == 204, response.text
    assert gw_svc.get("conversations", id=f"eq.{conversation_id}") == []


def test_service_archives_and_links_conversations(
    gw_client: httpx.Client, gw_service_headers: dict[str, str], gw_svc: Service
) -> None:
    user = gw_svc.create_user()
    linked, pending = str(uuid.uuid4()), str(uuid.uuid4())
    future_user = new_user_id()
    started = "2026-01-01T10:00:00Z"
    batch = [
        {"id": linked, "user_id": user, "started_at": started, "messages": messages(2)},
        {"id": pending, "user_id": future_user, "started_at": started, "messages": messages(1)},
    ]
    result = ok_json(
        gw_client.post(
            "rpc/archive_conversations", headers=gw_service_headers, json={"conversations": batch}
        )
    )
    assert {r["id"]: r["status"] for r in result} == {linked: "inserted", pending: "inserted"}

    [row] = gw_svc.get("conversations", id=f"eq.{pending}")
    assert row["user_id"] is None
    assert row["metadata"]["pending_user_id"] == future_user

    linked_rows = ok_json(
        gw_client.post(
            "rpc/link_conversations",
            headers=gw_service_headers,
            json={"links": [{"id": pending, "user_id": user}]},
        )
    )
    assert linked_rows == [{"id": pending, "user_id": user}]
    [row] = gw_svc.get("conversations", id=f"eq.{pending}")
    assert row["user_id"] == user
    assert "pending_user_id" not in row["metadata"]


def test_service_health_reports_rls_on_every_table(
    gw_client: httpx.Client, gw_service_headers: dict[str, str]
) -> None:
    health = ok_json(gw_client.post("rpc/health", headers=gw_service_headers, json={}))
    tables = {t["name"]: t["rls"] for t in health["tables"]}
    assert set(TABLES) <= set(tables)
    assert all(tables.values()), tables
    assert {"get_or_create_user", "get_user_profile", "record_events"} <= set(health["functions"])
