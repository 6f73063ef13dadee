"""Client lifecycle: pools closed on close(), closed clients refuse, derived clients share."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import respx

import supabase_identity
from supabase_identity import (
    AsyncIdentityClient,
    ClientClosedError,
    ConfigError,
    IdentityClient,
)

from .conftest import USER_ID, make_async_client, make_client

OK = httpx.Response(200, json=[{"user_id": USER_ID, "is_new": True}])


def test_close_closes_the_pool_and_later_calls_refuse(
    api: respx.MockRouter, empty_env_dir: Path
) -> None:
    api.post("/rpc/get_or_create_user").mock(return_value=OK)
    client = make_client(empty_env_dir)
    derived = client.with_options(timeout=3.0)
    client.get_or_create_user("cool-shop.myshopify.com")
    http = client.supabase.postgrest.session
    client.close()
    client.close()  # idempotent
    assert http.is_closed
    assert client.is_closed and derived.is_closed
    for c in (client, derived):
        with pytest.raises(ClientClosedError, match="create a new client"):
            c.get_or_create_user("cool-shop.myshopify.com")
    with pytest.raises(ClientClosedError):
        client.__enter__()


def test_closing_a_derived_client_leaves_the_owner_working(
    api: respx.MockRouter, empty_env_dir: Path
) -> None:
    api.post("/rpc/get_or_create_user").mock(return_value=OK)
    with make_client(empty_env_dir) as client:
        client.for_user(USER_ID).close()
        client.with_options(max_retries=1).close()
        assert not client.is_closed
        assert client.get_or_create_user("cool-shop.myshopify.com")[1] is True


def test_a_given_http_client_is_not_closed(empty_env_dir: Path) -> None:
    mine = httpx.Client()
    with make_client(empty_env_dir, http_client=mine) as client:
        assert client.supabase.postgrest.session is mine
    assert not mine.is_closed
    mine.close()


async def test_async_close_closes_the_pool(api: respx.MockRouter, empty_env_dir: Path) -> None:
    api.post("/rpc/get_or_create_user").mock(return_value=OK)
    async with make_async_client(empty_env_dir) as client:
        await client.get_or_create_user("cool-shop.myshopify.com")
        http = client.supabase.postgrest.session
    assert http.is_closed
    with pytest.raises(ClientClosedError):
        await client.get_or_create_user("cool-shop.myshopify.com")


def test_for_user_needs_the_jwt_secret_and_a_public_key(empty_env_dir: Path) -> None:
    with (
        make_client(empty_env_dir, jwt_secret=None) as client,
        pytest.raises(ConfigError, match="SUPABASE_JWT_SECRET"),
    ):
        client.for_user(USER_ID)
    with (
        make_client(empty_env_dir, public_key=None) as client,
        pytest.raises(ConfigError, match="SUPABASE_ANON_KEY"),
    ):
        client.for_user(USER_ID)


def test_negative_max_retries_is_rejected(empty_env_dir: Path) -> None:
    with pytest.raises(ValueError):
        make_client(empty_env_dir, max_retries=-1)


def test_import_creates_no_client_and_reads_no_env() -> None:
    code = (
        "import os, httpx\n"
        "created = []\n"
        "orig = httpx.Client.__init__\n"
        "def spy(self, *a, **k):\n"
        "    created.append(1); orig(self, *a, **k)\n"
        "httpx.Client.__init__ = spy\n"
        "os.environ['SUPABASE_URL'] = 'postgresql://would-fail-if-read'\n"
        "import supabase_identity\n"
        "supabase_identity.get_or_create_user  # a public name, imported on first use\n"
        "import supabase_identity._default\n"
        "assert supabase_identity._default._client is None\n"
        "assert created == [], created\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_import_loads_none_of_the_client_libraries() -> None:
    """``import supabase_identity`` (and the CLI's module) stays cheap: each public name is
    imported on first use, so --help and --version never load the HTTP or Redis stack."""
    heavy = ("httpx", "redis", "postgrest", "supabase", "pydantic", "rich")
    code = (
        "import sys\n"
        "import supabase_identity, supabase_identity.cli\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
        "supabase_identity.IdentityClient\n"
        "print('httpx' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "True"]


def test_module_functions_use_one_lazily_built_default_client(
    api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from .conftest import ANON_KEY, SERVICE_KEY

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUPABASE_URL", "http://127.0.0.1:54321")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", SERVICE_KEY)
    monkeypatch.setenv("SUPABASE_ANON_KEY", ANON_KEY)
    monkeypatch.delenv("REDIS_URL", raising=False)
    api.post("/rpc/get_or_create_user").mock(return_value=OK)
    supabase_identity.close_default_client()
    try:
        assert supabase_identity.get_or_create_user("cool-shop.myshopify.com") == (USER_ID, True)
        first = supabase_identity.get_default_client()
        supabase_identity.get_or_create_user("cool-shop.myshopify.com")
        assert supabase_identity.get_default_client() is first
    finally:
        supabase_identity.close_default_client()
    assert first.is_closed


def test_set_default_client_is_used(api: respx.MockRouter, empty_env_dir: Path) -> None:
    api.post("/rpc/get_or_create_user").mock(return_value=OK)
    with make_client(empty_env_dir) as mine:
        supabase_identity.set_default_client(mine)
        try:
            assert supabase_identity.get_default_client() is mine
            supabase_identity.get_or_create_user("cool-shop.myshopify.com")
        finally:
            supabase_identity.set_default_client(None)
    assert api.calls.call_count == 1


def test_public_api_is_exported() -> None:
    module = importlib.import_module("supabase_identity")
    for name in module.__all__:
        assert hasattr(module, name), name
    for name in (
        "IdentityClient",
        "AsyncIdentityClient",
        "get_or_create_user",
        "log_user_event",
        "get_user_profile",
        "get_user_conversations",
        "get_conversation",
        "flush_events",
        "conversation_uuid",
        "ValidationError",
        "NotFoundError",
    ):
        assert name in module.__all__
    assert module.__file__ is not None
    assert (Path(module.__file__).parent / "py.typed").exists()
    assert issubclass(supabase_identity.ValidationError, ValueError)
    assert isinstance(AsyncIdentityClient, type) and isinstance(IdentityClient, type)
