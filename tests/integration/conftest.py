"""Integration-test fixtures: the local stack (``scripts/stack up``) reached over real HTTP.

The stack's coordinates come from the environment that ``eval "$(scripts/stack env)"`` sets.
When they are missing the tests FAIL with a message saying so; they never skip, so a CI run
without a stack cannot pass by testing nothing.

Fixtures prefixed ``gw_`` serve the gateway/RLS tests (tests/integration/test_gateway_rls.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest

GW_REQUIRED_ENV = (
    "SUPABASE_URL",
    "SUPABASE_ANON_KEY",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_PUBLISHABLE_KEY",
    "SUPABASE_SECRET_KEY",
    "SUPABASE_JWT_SECRET",
)


@dataclass(frozen=True)
class GatewayEnv:
    """The stack's URL and keys, as ``scripts/stack env`` prints them."""

    url: str
    anon_key: str
    service_role_key: str
    publishable_key: str
    secret_key: str
    jwt_secret: str

    @property
    def rest_url(self) -> str:
        return self.url.rstrip("/") + "/rest/v1"


def stack_variable(name: str) -> str:
    """A variable ``scripts/stack env`` sets; the test fails, saying how to set it, when unset."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f'{name} is not set: run `scripts/stack up && eval "$(scripts/stack env)"` first.',
            pytrace=False,
        )
    return value


@pytest.fixture(scope="session")
def gw_env() -> GatewayEnv:
    missing = [name for name in GW_REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        pytest.fail(
            "integration tests need the local stack, but these variables are not set: "
            + ", ".join(missing)
            + '. Run `scripts/stack up && eval "$(scripts/stack env)"` first '
            "(or point them at a `supabase start` stack).",
            pytrace=False,
        )
    env = os.environ
    return GatewayEnv(
        url=env["SUPABASE_URL"],
        anon_key=env["SUPABASE_ANON_KEY"],
        service_role_key=env["SUPABASE_SERVICE_ROLE_KEY"],
        publishable_key=env["SUPABASE_PUBLISHABLE_KEY"],
        secret_key=env["SUPABASE_SECRET_KEY"],
        jwt_secret=env["SUPABASE_JWT_SECRET"],
    )


@pytest.fixture(scope="session")
def gw_client(gw_env: GatewayEnv) -> Iterator[httpx.Client]:
    """One keep-alive client on ``<SUPABASE_URL>/rest/v1``; fails clearly if nothing listens."""
    with httpx.Client(base_url=gw_env.rest_url + "/", timeout=30.0) as client:
        problem: str | None = None
        try:
            client.get(gw_env.url.rstrip("/") + "/health")
        except httpx.TransportError as exc:
            problem = repr(exc)
        if problem is not None:
            pytest.fail(
                f"the gateway at {gw_env.url} is not reachable ({problem}); "
                "is the stack up? Run `scripts/stack up` (and `scripts/stack status`).",
                pytrace=False,
            )
        yield client


GwMintToken = Callable[..., str]


@pytest.fixture(scope="session")
def gw_mint_token(gw_env: GatewayEnv) -> GwMintToken:
    """Sign an HS256 JWT the way Supabase Auth does.

    ``gw_mint_token(role="authenticated", user_id="usr_…")`` gives a user-scoped token
    (aud=authenticated, app_metadata.user_id). ``expires_in`` may be negative (expired token),
    ``secret`` overrides the stack's secret (a forged token), ``claims`` adds or replaces claims.
    """

    def mint(
        *,
        role: str,
        user_id: str | None = None,
        expires_in: int = 3600,
        secret: str | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": "supabase",
            "role": role,
            "iat": now - 60 if expires_in > 0 else now + expires_in - 60,
            "exp": now + expires_in,
        }
        if role == "authenticated":
            payload["aud"] = "authenticated"
            payload["sub"] = "00000000-0000-4000-8000-000000000000"
        if user_id is not None:
            payload["app_metadata"] = {"provider": "shopify", "user_id": user_id}
        payload.update(claims or {})
        return jwt.encode(payload, secret or gw_env.jwt_secret, algorithm="HS256")

    return mint


# ---------------------------------------------------------------------------------------------
# SDK fixtures (tests/integration/test_sdk.py, test_sdk_async.py), prefixed ``sdk_``.
# ---------------------------------------------------------------------------------------------
import subprocess  # noqa: E402
import uuid  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402

import psycopg  # noqa: E402
import redis  # noqa: E402
import redis.asyncio  # noqa: E402

from supabase_identity import (  # noqa: E402
    AsyncIdentityClient,
    AsyncRedisOutbox,
    IdentityClient,
    RedisOutbox,
    conversation_uuid,
)
from supabase_identity._redis_keys import outbox_keys  # noqa: E402

from .._wait import wait_until  # noqa: E402

SDK_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SdkEnv:
    """The stack as the SDK sees it (``gw_env`` plus Redis)."""

    gw: GatewayEnv
    redis_url: str


@pytest.fixture(scope="session")
def sdk_env(gw_env: GatewayEnv, gw_client: httpx.Client) -> SdkEnv:
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.fail(
            'REDIS_URL is not set: run `eval "$(scripts/stack env)"` (scripts/test does).',
            pytrace=False,
        )
    return SdkEnv(gw=gw_env, redis_url=redis_url)


def sdk_shop(tag: str = "sdk") -> str:
    """A fresh shop domain, so every test owns its users."""
    return f"{tag}-{uuid.uuid4().hex[:16]}.myshopify.com"


@pytest.fixture
def sdk_prefix(sdk_env: SdkEnv) -> Iterator[str]:
    """A private outbox key prefix on the stack's Redis; its keys are deleted afterwards."""
    prefix = f"test:identity:outbox:{uuid.uuid4().hex}"
    yield prefix
    r = redis.Redis.from_url(sdk_env.redis_url)
    r.delete(*outbox_keys(prefix))
    r.close()


@pytest.fixture
def sdk_redis(sdk_env: SdkEnv) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(sdk_env.redis_url)
    yield r
    r.close()


@pytest.fixture
def sdk_service(
    sdk_env: SdkEnv, sdk_redis: redis.Redis, sdk_prefix: str
) -> Iterator[IdentityClient]:
    """Service-key client from the environment, with a private Redis outbox."""
    with IdentityClient(outbox=RedisOutbox(sdk_redis, key_prefix=sdk_prefix)) as client:
        yield client


@pytest.fixture
async def sdk_aservice(sdk_env: SdkEnv, sdk_prefix: str) -> AsyncIterator[AsyncIdentityClient]:
    r = redis.asyncio.Redis.from_url(sdk_env.redis_url)
    client = AsyncIdentityClient(outbox=AsyncRedisOutbox(r, key_prefix=sdk_prefix))
    try:
        yield client
    finally:
        await client.close()
        await r.aclose()


def sdk_stack(*args: str) -> None:
    """Run ``scripts/stack`` (e.g. ``down postgrest``); fail the test if it fails."""
    done = subprocess.run(
        [str(SDK_ROOT / "scripts" / "stack"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/stack {' '.join(args)} failed: {done.stdout}{done.stderr}")


class PostgrestSwitch:
    """Stops and starts the stack's PostgREST (``scripts/stack down|up postgrest``)."""

    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        sdk_stack("down", "postgrest")
        self.stopped = True

    def start(self) -> None:
        sdk_stack("up", "postgrest")
        self.stopped = False
        _wait_for_postgrest()


@pytest.fixture
def sdk_postgrest(sdk_env: SdkEnv) -> Iterator[PostgrestSwitch]:
    """A PostgREST switch; whatever the test does, PostgREST is running again afterwards."""
    switch = PostgrestSwitch()
    try:
        yield switch
    finally:
        if switch.stopped:
            switch.start()


def _postgrest_answers() -> bool:
    env = os.environ
    headers = {
        "apikey": env["SUPABASE_SERVICE_ROLE_KEY"],
        "Authorization": f"Bearer {env['SUPABASE_SERVICE_ROLE_KEY']}",
        "Accept-Profile": "identity",
    }
    url = env["SUPABASE_URL"].rstrip("/") + "/rest/v1/users?select=id&limit=1"
    try:
        return httpx.get(url, headers=headers, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _wait_for_postgrest() -> None:
    wait_until(_postgrest_answers, "PostgREST did not answer through the gateway after `stack up`")


def sdk_insert_conversations(
    client: IdentityClient, user_id: str | None, count: int, *, source_ids: bool = False
) -> list[dict[str, Any]]:
    """Insert ``count`` conversations (1 min apart, newest last) with the service key."""
    base = datetime.now(UTC).replace(microsecond=123456) - timedelta(days=1)
    rows = []
    for i in range(count):
        source = f"conv-{uuid.uuid4().hex}" if source_ids else None
        conv_id = conversation_uuid(source) if source else uuid.uuid4()
        rows.append(
            {
                "id": str(conv_id),
                "source_id": source,
                "user_id": user_id,
                "merchant_id": "m-1",
                "workflow_name": "support",
                "started_at": (base + timedelta(minutes=i)).isoformat(),
                "messages": [
                    {"sender": "user", "content": f"hello {i}", "seq": j} for j in range(i % 4 + 1)
                ],
                "metadata": {"i": i},
            }
        )
    client.supabase.postgrest.from_("conversations").insert(rows).execute()
    return rows


def sdk_count(client: IdentityClient, table: str, **filters: str) -> int:
    """Exact row count in ``identity.<table>`` matching ``column=value`` filters (service key)."""
    query = client.supabase.postgrest.from_(table).select("id", count="exact")  # type: ignore[arg-type]
    for column, value in filters.items():
        query = query.eq(column, value)
    result = query.limit(1).execute()
    assert result.count is not None
    return result.count


@pytest.fixture(scope="module")
def db() -> Iterator[psycopg.Connection[Any]]:
    """Postgres itself (SUPABASE_DB_URL, tests only: the package never connects to it)."""
    url = os.environ.get("SUPABASE_DB_URL")
    if not url:
        pytest.fail('SUPABASE_DB_URL is not set: run `eval "$(scripts/stack env)"`', pytrace=False)
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn
