"""What the API tells a caller about rows and schema it may not see, through the gateway.

Issue 14, items 3 and 4: planned and estimated counts (``Prefer: count=planned|estimated``)
must not reveal rows that row level security hides, for a user with no rows next to one with
5,000; the service role's counts stay as they are. Nobody but the service role gets the OpenAPI
description of ``identity``, other schemas keep theirs, and the description names the public
gateway, not PostgREST's own address. Both hold in the database (restrictive policies and a
PostgREST pre-request function), so they hold on hosted Supabase, where this gateway does not
run.

Rows are created and removed in Postgres directly (SUPABASE_DB_URL, tests only) so that 10,000
of them take one statement each, and ``ANALYZE`` gives the planner the statistics that leaked.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from .conftest import GatewayEnv, GwMintToken

pytestmark = pytest.mark.integration

HEAVY_ROWS = 5_000
SCHEMA_COMMENT = "User identity, archived conversations"


@dataclass(frozen=True)
class Neighbours:
    """User ``empty`` has no rows; ``heavy`` has 5,000 conversations, events, archived events."""

    empty: str
    heavy: str
    heavy_shop: str
    rare_event: str


@pytest.fixture(scope="module")
def neighbours(gw_env: GatewayEnv) -> Iterator[Neighbours]:
    db_url = os.environ.get("SUPABASE_DB_URL")
    if not db_url:
        pytest.fail('SUPABASE_DB_URL is not set: run `eval "$(scripts/stack env)"` first.')
    tag = uuid.uuid4().hex
    found = Neighbours(
        empty=f"usr_{tag[:24]}",
        heavy=f"usr_{tag[8:32]}",
        heavy_shop=f"guard-{tag[:20]}.myshopify.com",
        rare_event=f"rare.{tag[:12]}",
    )
    with psycopg.connect(db_url, autocommit=True) as db:
        db.execute(
            "insert into identity.users (id, shop_domain) values (%s, %s), (%s, %s)",
            (found.empty, f"guard-{tag[12:32]}.myshopify.com", found.heavy, found.heavy_shop),
        )
        try:
            db.execute(
                "insert into identity.conversations (id, user_id, started_at) "
                "select gen_random_uuid(), %s, now() - make_interval(secs => g) "
                "from generate_series(1, %s) as g",
                (found.heavy, HEAVY_ROWS),
            )
            db.execute(
                "insert into identity.events (user_id, event_type) "
                "select %s, %s from generate_series(1, %s)",
                (found.heavy, found.rare_event, HEAVY_ROWS),
            )
            db.execute(
                "insert into identity.events_archive "
                "(id, user_id, event_type, created_at, received_at) "
                "select gen_random_uuid(), %s, %s, now(), now() from generate_series(1, %s)",
                (found.heavy, found.rare_event, HEAVY_ROWS),
            )
            # The statistics the planner estimates from, as autovacuum would soon compute them.
            db.execute(
                "analyze identity.users, identity.conversations, identity.events, "
                "identity.events_archive"
            )
            yield found
        finally:
            db.execute(
                "delete from identity.users where id in (%s, %s)", (found.empty, found.heavy)
            )


def headers(
    apikey: str, bearer: str | None = None, *, prefer: Sequence[str] = (), profile: str = "identity"
) -> list[tuple[str, str]]:
    """Request headers as a list, so that a header may be sent twice."""
    sent = [("apikey", apikey), ("Accept-Profile", profile)]
    if bearer is not None:
        sent.append(("Authorization", f"Bearer {bearer}"))
    sent.extend(("Prefer", value) for value in prefer)
    return sent


def total(response: httpx.Response) -> int:
    """The count after the ``/`` of Content-Range (``0-0/5000``, ``*/0``)."""
    assert response.is_success, f"{response.status_code} {response.text}"
    value = response.headers["content-range"].rsplit("/", 1)[1]
    assert value.isdigit(), response.headers["content-range"]
    return int(value)


def refused_estimate(response: httpx.Response) -> None:
    """403, no count anywhere; the body (not on HEAD) says to ask for an exact count."""
    assert response.status_code == 403, f"{response.status_code} {response.headers} {response.text}"
    assert "content-range" not in response.headers
    if response.request.method != "HEAD":
        body = response.json()
        assert body["code"] == "42501"
        assert "count=exact" in body["hint"]


@pytest.mark.parametrize(
    ("table", "column", "value_of", "service_floor"),
    [
        ("conversations", "user_id", lambda n: n.heavy, 1_000),
        ("events", "event_type", lambda n: n.rare_event, 1_000),
        ("events_archive", "event_type", lambda n: n.rare_event, 1_000),
        ("users", "shop_domain", lambda n: n.heavy_shop, 1),
    ],
    ids=[
        "conversations-of-another-user",
        "events-of-a-rare-type",
        "archived-events-of-a-rare-type",
        "users-by-shop",
    ],
)
def test_a_user_without_rows_learns_no_count_of_a_neighbours_rows(
    gw_client: httpx.Client,
    gw_env: GatewayEnv,
    gw_mint_token: GwMintToken,
    neighbours: Neighbours,
    table: str,
    column: str,
    value_of: Any,
    service_floor: int,
) -> None:
    path = f"{table}?{column}=eq.{value_of(neighbours)}&select={column}&limit=1"
    token = gw_mint_token(role="authenticated", user_id=neighbours.empty)

    def as_user(*prefer: str) -> httpx.Response:
        return gw_client.get(path, headers=headers(gw_env.anon_key, token, prefer=prefer))

    # What the user may see is counted exactly: nothing.
    assert total(as_user("count=exact")) == 0
    # Estimates would count the neighbour's rows: refused, however the preference is sent.
    refused_estimate(as_user("count=planned"))
    refused_estimate(as_user("count=planned", "return=representation"))
    refused_estimate(as_user("return=representation", "count=planned"))
    refused_estimate(
        gw_client.head(path, headers=headers(gw_env.anon_key, token, prefer=["count=planned"]))
    )
    # `estimated` is exact up to db-max-rows (0 here); it may only ever consult the planner
    # above that, where the guard refuses it (PostgREST 12 explains only then, later ones always).
    estimated = as_user("count=estimated")
    if estimated.status_code == 403:
        refused_estimate(estimated)
    else:
        assert total(estimated) == 0
    # The publishable key carries the same user token to the same answer.
    refused_estimate(
        gw_client.get(
            path, headers=headers(gw_env.publishable_key, token, prefer=["count=planned"])
        )
    )

    # The service role's counts stay as they are, the planner's estimate included.
    service = headers(gw_env.service_role_key)
    expected = 1 if table == "users" else HEAVY_ROWS
    assert total(gw_client.get(path, headers=[*service, ("Prefer", "count=exact")])) == expected
    planned = total(gw_client.get(path, headers=[*service, ("Prefer", "count=planned")]))
    assert planned >= service_floor


def test_the_neighbour_with_5000_rows_counts_its_own_rows_exactly(
    gw_client: httpx.Client,
    gw_env: GatewayEnv,
    gw_mint_token: GwMintToken,
    neighbours: Neighbours,
) -> None:
    token = gw_mint_token(role="authenticated", user_id=neighbours.heavy)
    path = "conversations?select=id&limit=1"
    exact = gw_client.get(path, headers=headers(gw_env.anon_key, token, prefer=["count=exact"]))
    assert total(exact) == HEAVY_ROWS
    # Above db-max-rows (1,000) `estimated` asks the planner, whose statistics cover every
    # user's rows: refused too.
    refused_estimate(
        gw_client.get(path, headers=headers(gw_env.anon_key, token, prefer=["count=estimated"]))
    )


def openapi(client: httpx.Client, sent: list[tuple[str, str]]) -> httpx.Response:
    # The root of the API, `<SUPABASE_URL>/rest/v1/`.
    return client.get("", headers=sent)


def assert_no_description(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, f"{response.status_code} {response.text[:300]}"
    assert response.json()["code"] == "42501"
    for leaked in (SCHEMA_COMMENT, "swagger", "/conversations", "get_user_profile", "host"):
        assert leaked not in response.text


def test_only_the_service_role_gets_the_api_description_of_identity(
    gw_client: httpx.Client, gw_env: GatewayEnv, gw_mint_token: GwMintToken
) -> None:
    user = gw_mint_token(role="authenticated", user_id=f"usr_{uuid.uuid4().hex[:24]}")

    assert_no_description(openapi(gw_client, headers(gw_env.anon_key)), 401)
    assert_no_description(openapi(gw_client, headers(gw_env.publishable_key)), 401)
    assert_no_description(openapi(gw_client, headers(gw_env.anon_key, user)), 403)
    head = gw_client.head("", headers=headers(gw_env.anon_key))
    assert head.status_code == 401
    # A second Accept-Profile header does not fool the check: PostgREST serves the first.
    twice = [*headers(gw_env.anon_key), ("Accept-Profile", "public")]
    assert_no_description(openapi(gw_client, twice), 401)

    service = openapi(gw_client, headers(gw_env.service_role_key))
    assert service.status_code == 200, service.text[:300]
    document = service.json()
    assert document["info"]["title"].startswith(SCHEMA_COMMENT)
    assert {"/users", "/conversations", "/events"} <= set(document["paths"])
    secret = openapi(gw_client, headers(gw_env.secret_key))
    assert secret.status_code == 200
    assert secret.json()["paths"] == document["paths"]

    # Other schemas keep their description: the pre-request function is project-wide.
    public = openapi(gw_client, headers(gw_env.anon_key, profile="public"))
    assert public.status_code == 200, public.text[:300]
    assert public.json()["swagger"] == "2.0"


def test_the_api_description_names_the_gateway_not_postgrest(
    gw_client: httpx.Client, gw_env: GatewayEnv
) -> None:
    gateway = urlsplit(gw_env.url)
    for sent in (
        headers(gw_env.service_role_key),
        headers(gw_env.anon_key, profile="public"),
    ):
        document = openapi(gw_client, sent).json()
        assert document["host"] == gateway.netloc
        assert document["basePath"] == "/rest/v1/"
