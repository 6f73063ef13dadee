"""The agents service's archiver API: ``ConversationArchiver()`` from the environment.

What it stores on the real stack is in tests/integration/test_archiver.py; here: what it needs
from the environment, and that an outage is a ``False`` that keeps the conversation in Redis.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
import respx

from supabase_identity import ConfigError, ConversationArchiver, ConversationStore
from supabase_identity._redis_keys import conversation_key

from .conftest import BASE_URL, SERVICE_KEY, SleepRecorder


@pytest.fixture
def seed_env(monkeypatch: pytest.MonkeyPatch, empty_env_dir: Path) -> None:
    """The agents service's environment: identity project under IDENTITY_*, no .env files."""
    for name in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_SUPABASE_URL", BASE_URL)
    monkeypatch.setenv("IDENTITY_SUPABASE_SERVICE_ROLE_KEY", SERVICE_KEY)
    monkeypatch.chdir(empty_env_dir)


@pytest.mark.usefixtures("seed_env")
def test_without_redis_url_the_error_names_it() -> None:
    with pytest.raises(ConfigError, match="REDIS_URL is not set"):
        ConversationArchiver()


@pytest.mark.usefixtures("seed_env")
def test_an_outage_is_false_and_the_conversation_stays_in_redis(
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
    redis_server: str,
    api: respx.MockRouter,
    sleeps: SleepRecorder,
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server)
    store = ConversationStore(redis_client)
    store.create_session("conv-1", workflow_name="support")
    store.append_message("conv-1", sender="user", content="hello")
    store.end_conversation("conv-1")
    upsert = api.post("/rpc/archive_conversations").respond(503)

    async def as_the_agents_service_does() -> tuple[list[str], bool]:
        with ConversationArchiver() as archiver:
            return (
                await archiver.find_conversations_to_archive(),
                await archiver.archive_conversation("conv-1"),
            )

    due, stored = asyncio.run(as_the_agents_service_does())
    assert due == ["conv-1"]
    assert stored is False
    assert upsert.called  # the IDENTITY_* project was asked, and it was down
    assert redis_client.hget(conversation_key("conv-1"), "archived") is None
    assert sleeps.delays, "the client retried the 503 before giving up"
