"""Unit-test fixtures: respx on the local gateway URL, test keys, clients with zero backoff.

No network: respx intercepts every request the clients make (it refuses unmatched ones).
Retry sleeps are replaced by a recorder, so tests run instantly *and* can assert the delays.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import pytest
import respx

from supabase_identity import AsyncIdentityClient, IdentityClient, MemoryOutbox, OutboxEvent

BASE_URL = "http://127.0.0.1:54321"
REST = f"{BASE_URL}/rest/v1"
JWT_SECRET = "unit-test-jwt-secret-with-at-least-32-chars"
SERVICE_KEY = jwt.encode({"role": "service_role", "iss": "supabase"}, JWT_SECRET, algorithm="HS256")
ANON_KEY = jwt.encode({"role": "anon", "iss": "supabase"}, JWT_SECRET, algorithm="HS256")
SECRET_KEY = "sb_secret_unit0test0secret0key0value0abcdef"
PUBLISHABLE_KEY = "sb_publishable_unit0test0publishable0key0abc"
USER_ID = "usr_0123456789abcdef01234567"
#: The environment a CLI test runs the app with: a service key on the respx-mocked gateway, no
#: Redis, and nothing of the caller's own (``None`` unsets a variable).
CLI_ENV: dict[str, str | None] = {
    "SUPABASE_URL": BASE_URL,
    "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
    "SUPABASE_SECRET_KEY": None,
    "SUPABASE_ANON_KEY": ANON_KEY,
    "SUPABASE_PUBLISHABLE_KEY": None,
    "SUPABASE_JWT_SECRET": JWT_SECRET,
    "REDIS_URL": None,
    "SUPABASE_IDENTITY_DEBUG": None,
}
OTHER_USER_ID = "usr_fedcba9876543210fedcba98"


class SleepRecorder:
    """Stands in for ``time.sleep``/``asyncio.sleep`` in the retry loop; records delays."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> SleepRecorder:
    recorder = SleepRecorder()
    monkeypatch.setattr(IdentityClient, "_sleep", staticmethod(recorder))
    monkeypatch.setattr(AsyncIdentityClient, "_sleep", staticmethod(recorder.asleep))
    return recorder


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """respx router for the gateway's /rest/v1; asserts nothing unmatched was sent."""
    with respx.mock(base_url=REST, assert_all_called=False) as router:
        yield router


@pytest.fixture
def empty_env_dir(tmp_path: Path) -> Path:
    """A folder without .env files, so the developer's own .env never leaks into a test."""
    folder = tmp_path / "noenv"
    folder.mkdir()
    return folder


def make_client(env_dir: Path, **kwargs: object) -> IdentityClient:
    options: dict[str, object] = {
        "url": BASE_URL,
        "key": SERVICE_KEY,
        "public_key": ANON_KEY,
        "jwt_secret": JWT_SECRET,
        "redis_url": None,
        "environ": {},
        "env_dir": env_dir,
    }
    options.update(kwargs)
    return IdentityClient(**options)  # type: ignore[arg-type]


def make_async_client(env_dir: Path, **kwargs: object) -> AsyncIdentityClient:
    options: dict[str, object] = {
        "url": BASE_URL,
        "key": SERVICE_KEY,
        "public_key": ANON_KEY,
        "jwt_secret": JWT_SECRET,
        "redis_url": None,
        "environ": {},
        "env_dir": env_dir,
    }
    options.update(kwargs)
    return AsyncIdentityClient(**options)  # type: ignore[arg-type]


@pytest.fixture
def outbox() -> MemoryOutbox:
    return MemoryOutbox(max_events=100)


@pytest.fixture
def client(
    api: respx.MockRouter, empty_env_dir: Path, sleeps: SleepRecorder, outbox: MemoryOutbox
) -> Iterator[IdentityClient]:
    c = make_client(empty_env_dir, outbox=outbox)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
async def aclient(
    api: respx.MockRouter, empty_env_dir: Path, sleeps: SleepRecorder, outbox: MemoryOutbox
) -> AsyncIterator[AsyncIdentityClient]:
    c = make_async_client(empty_env_dir, outbox=outbox)
    try:
        yield c
    finally:
        await c.close()


def make_event(n: int = 0, user_id: str = USER_ID) -> OutboxEvent:
    """An outbox event for ``user_id``; ``n`` makes its type and data distinct."""
    return OutboxEvent(
        id=uuid.uuid4(),
        user_id=user_id,
        event_type=f"e{n}",
        event_data={"n": n},
        created_at=datetime.now(UTC),
    )


def record_events_answer(request: httpx.Request, status: str = "inserted") -> httpx.Response:
    """What ``rpc/record_events`` answers: ``status`` for every event in the request."""
    events = json.loads(request.content)["events"]
    return httpx.Response(200, json=[{"id": e["id"], "status": status} for e in events])
