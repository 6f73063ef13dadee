"""Key classification, token minting, and that no key ever shows up in repr, errors or logs."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import jwt
import pytest
import respx

from supabase_identity import (
    IdentityClient,
    PermissionDeniedError,
    Privilege,
    classify_key,
    mint_user_token,
    redact,
)
from supabase_identity._keys import token_expiry

from .conftest import (
    ANON_KEY,
    JWT_SECRET,
    PUBLISHABLE_KEY,
    SECRET_KEY,
    SERVICE_KEY,
    USER_ID,
    make_client,
)


@pytest.mark.parametrize(
    ("key", "kind", "privilege"),
    [
        (SERVICE_KEY, "jwt", Privilege.SERVICE),
        (ANON_KEY, "jwt", Privilege.PUBLIC),
        (SECRET_KEY, "secret", Privilege.SERVICE),
        (PUBLISHABLE_KEY, "publishable", Privilege.PUBLIC),
        (jwt.encode({"role": "authenticated"}, "k" * 32, algorithm="HS256"), "jwt", Privilege.USER),
        (jwt.encode({"role": "postgres"}, "k" * 32, algorithm="HS256"), "jwt", Privilege.UNKNOWN),
        ("a.b.c", "opaque", Privilege.UNKNOWN),
        ("plain-opaque-key", "opaque", Privilege.UNKNOWN),
    ],
)
def test_classify_key(key: str, kind: str, privilege: Privilege) -> None:
    info = classify_key(key)
    assert (info.kind, info.privilege) == (kind, privilege)


def test_minted_token_verifies_with_the_secret_and_expires() -> None:
    token = mint_user_token(USER_ID, JWT_SECRET, ttl=300, now=1_000_000)
    claims = jwt.decode(
        token,
        JWT_SECRET,
        algorithms=["HS256"],
        audience="authenticated",
        options={"verify_exp": False},
    )
    assert claims["exp"] == 1_000_300
    assert claims["app_metadata"]["user_id"] == USER_ID
    assert token_expiry(token) == 1_000_300.0
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            token,
            "another-secret-of-enough-length-123",
            algorithms=["HS256"],
            audience="authenticated",
            options={"verify_exp": False},
        )


def test_redact_keeps_at_most_twelve_characters() -> None:
    assert redact(SECRET_KEY) == SECRET_KEY[:12] + "…"
    assert redact("short") == "…"
    assert redact(None) == "<none>"


@pytest.mark.parametrize("key", [PUBLISHABLE_KEY, ANON_KEY])
def test_public_key_client_refuses_writes_before_any_request(empty_env_dir: Path, key: str) -> None:
    with respx.mock(base_url="http://127.0.0.1:54321/rest/v1", assert_all_called=False) as api:
        route = api.route()
        with make_client(empty_env_dir, key=key) as client:
            assert client.privilege is Privilege.PUBLIC
            for call in (
                lambda: client.get_or_create_user("cool-shop.myshopify.com"),
                lambda: client.log_user_event(USER_ID, "x", {}),
                lambda: client.flush_events(),
            ):
                with pytest.raises(PermissionDeniedError) as info:
                    call()
                assert "SUPABASE_SERVICE_ROLE_KEY" in str(info.value)
                assert key not in str(info.value)
        assert route.call_count == 0


def test_user_scoped_client_refuses_writes(client: IdentityClient, api: respx.MockRouter) -> None:
    with pytest.raises(PermissionDeniedError, match="user-scoped"):
        client.for_user(USER_ID).get_or_create_user("cool-shop.myshopify.com")


def test_repr_shows_no_key(client: IdentityClient) -> None:
    for obj in (client, client.for_user(USER_ID), client.with_options(timeout=1)):
        text = repr(obj) + str(obj)
        for secret in (SERVICE_KEY, ANON_KEY, JWT_SECRET):
            assert secret not in text
        assert SERVICE_KEY[:12] + "…" in repr(client)


def test_errors_and_logs_never_contain_keys(
    client: IdentityClient, api: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    # A hostile/buggy gateway echoing the key back must not make us print it.
    echo = f"invalid api key {SERVICE_KEY} and {ANON_KEY}"
    api.post("/rpc/get_user_profile").respond(
        401, json={"code": "PGRST301", "message": echo, "hint": SERVICE_KEY}
    )
    api.post("/rpc/record_events").mock(side_effect=httpx.ConnectError(f"boom {SERVICE_KEY}"))
    caplog.set_level(logging.DEBUG, logger="supabase_identity")

    with pytest.raises(Exception) as info:
        client.get_user_profile(USER_ID)
    client.log_user_event(USER_ID, "login", {"k": "v"})

    texts = [str(info.value), repr(info.value), caplog.text]
    for text in texts:
        assert SERVICE_KEY not in text
        assert ANON_KEY not in text
    assert SERVICE_KEY[:12] + "…" in str(info.value)
    client.outbox.claim(10)
    client.outbox.ack()


def test_config_errors_do_not_echo_keys(tmp_path: Path) -> None:
    with pytest.raises(Exception) as info:
        IdentityClient(
            env_dir=tmp_path,
            environ={"SUPABASE_URL": "http://127.0.0.1:54321"},
            key=SECRET_KEY,
            access_token="user-token",
        )
    assert SECRET_KEY not in str(info.value)
    assert "SUPABASE_ANON_KEY" in str(info.value)
