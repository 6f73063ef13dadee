"""No credentials in any message (issue 14, item 2).

A Supabase URL that carries a user name, a password, query parameters or a fragment is refused
when the settings are read, naming the variable it came from and not the secret; the same for a
key or a Redis URL that cannot be used. No error, log line or ``doctor`` line repeats a key, a
JWT or a password, including text a server or a library wrote (a proxy's error page echoing a
token, say). Property tests draw the secrets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from supabase_identity import (
    BackendUnavailableError,
    ConfigError,
    IdentityClient,
    MemoryOutbox,
    cli,
    load_settings,
)
from supabase_identity._settings import build_settings

from .conftest import ANON_KEY, BASE_URL, JWT_SECRET, REST, SERVICE_KEY, USER_ID, make_client

SECRET = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=16, max_size=40)
#: The ways a secret ends up in a URL: as the user, the password, a query parameter, a fragment.
PLACES: dict[str, Callable[[str], str]] = {
    "user": lambda s: f"https://{s}@ref.supabase.co",
    "password": lambda s: f"https://postgres:{s}@ref.supabase.co",
    "query": lambda s: f"https://ref.supabase.co/?apikey={s}",
    "bare query": lambda s: f"https://ref.supabase.co?{s}",
    "path and query": lambda s: f"https://ref.supabase.co/rest/v1/?token={s}&x=1",
    "fragment": lambda s: f"https://ref.supabase.co/#access_token={s}",
    "local stack": lambda s: f"http://user:{s}@127.0.0.1:54321",
}
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def _cli(env_dir: Path, *args: str, url: str = BASE_URL) -> Result:
    """The CLI in-process, with the service key and ``url`` as SUPABASE_URL, no Redis."""
    return CliRunner().invoke(
        cli.app,
        ["--env-dir", str(env_dir), *args],
        env={
            "SUPABASE_URL": url,
            "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
            "SUPABASE_ANON_KEY": ANON_KEY,
            "SUPABASE_JWT_SECRET": JWT_SECRET,
            "REDIS_URL": None,
        },
    )


def _shows(error: BaseException, secret: str) -> bool:
    texts = [str(error), getattr(error, "message", ""), getattr(error, "hint", None) or ""]
    return any(secret in text for text in texts)


@PROPERTY
@given(secret=SECRET, place=st.sampled_from(sorted(PLACES)))
def test_a_url_carrying_credentials_is_refused_without_repeating_them(
    tmp_path: Path, secret: str, place: str
) -> None:
    url = PLACES[place](secret)

    with pytest.raises(ConfigError) as from_env:
        load_settings(env_dir=tmp_path, environ={"SUPABASE_URL": url})
    assert "SUPABASE_URL" in str(from_env.value)
    assert not _shows(from_env.value, secret)

    with pytest.raises(ConfigError) as from_argument:
        IdentityClient(url=url, key=SERVICE_KEY, redis_url=None, environ={}, env_dir=tmp_path)
    assert "the url argument" in str(from_argument.value)
    assert not _shows(from_argument.value, secret)

    # The check belongs to the setting, whichever variable fed it (IDENTITY_SUPABASE_URL, …).
    with pytest.raises(ConfigError) as other_name:
        build_settings({"supabase_url": url}, sources={"supabase_url": "IDENTITY_SUPABASE_URL"})
    assert "IDENTITY_SUPABASE_URL" in str(other_name.value)
    assert not _shows(other_name.value, secret)


@PROPERTY
@given(secret=SECRET, place=st.sampled_from(sorted(PLACES)))
def test_doctor_refuses_such_a_url_and_prints_no_secret(
    empty_env_dir: Path, secret: str, place: str
) -> None:
    result = _cli(empty_env_dir, "doctor", "--json", url=PLACES[place](secret))
    assert result.exit_code == 1
    assert '"name": "configuration"' in result.stdout
    assert '"status": "fail"' in result.stdout
    assert secret not in result.stdout + result.stderr


@PROPERTY
@given(secret=SECRET)
def test_a_redis_url_that_cannot_be_read_is_refused_without_its_password(
    tmp_path: Path, secret: str
) -> None:
    for url in (f"redis://:{secret}@host:notaport/0", f"http://:{secret}@host:6379/0"):
        with pytest.raises(ConfigError) as info:
            IdentityClient(
                url=BASE_URL, key=SERVICE_KEY, environ={"REDIS_URL": url}, env_dir=tmp_path
            )
        assert "REDIS_URL" in str(info.value)
        assert not _shows(info.value, secret)


@pytest.mark.parametrize(
    "key", [SERVICE_KEY + "\ud800", SERVICE_KEY + "\n", "sb_secret_with a space", "ключ"]
)
def test_a_key_that_cannot_travel_in_a_header_is_refused_without_echo(
    tmp_path: Path, key: str
) -> None:
    with pytest.raises(ConfigError) as from_env:
        IdentityClient(
            environ={"SUPABASE_URL": BASE_URL, "SUPABASE_SERVICE_ROLE_KEY": f" {key}x"},
            env_dir=tmp_path,
            redis_url=None,
        )
    assert "SUPABASE_SERVICE_ROLE_KEY" in str(from_env.value)
    assert key.strip() not in str(from_env.value)
    with pytest.raises(ConfigError) as from_argument:
        IdentityClient(url=BASE_URL, key=key + "x", environ={}, env_dir=tmp_path, redis_url=None)
    assert "the key argument" in str(from_argument.value)


def _foreign_jwt(secret: str) -> str:
    """A token this client does not hold (another project's, a user's), so only its shape shows it
    is one."""
    import jwt

    return jwt.encode({"role": "service_role", "x": secret}, "other" * 8, algorithm="HS256")


@PROPERTY
@given(secret=SECRET)
def test_errors_and_logs_never_repeat_a_token_or_password_from_the_server(
    empty_env_dir: Path, secret: str
) -> None:
    token = _foreign_jwt(secret)
    echoed = (
        f"upstream said: bad token {token} for postgres://app:{secret}@db:5432 "
        f"(password={secret}) sb_secret_{secret}"
    )
    handler = _Capture()
    logger = logging.getLogger("supabase_identity")
    logger.addHandler(handler)
    try:
        with respx.mock(base_url=REST, assert_all_called=False) as gateway:
            gateway.post("/rpc/get_user_profile").mock(
                return_value=httpx.Response(
                    500, json={"code": "XX000", "message": echoed, "details": echoed}
                )
            )
            gateway.post("/rpc/record_events").mock(
                side_effect=httpx.ConnectError(f"proxy https://u:{secret}@proxy:3128 refused")
            )
            with make_client(empty_env_dir, outbox=MemoryOutbox(), max_retries=0) as client:
                with pytest.raises(BackendUnavailableError) as read:
                    client.get_user_profile(USER_ID)
                client.log_user_event(USER_ID, "chat.started", {"n": 1})  # kept, logged
                flushed = client.flush_events()
    finally:
        logger.removeHandler(handler)
    assert flushed.remaining == 1
    error_texts = [str(read.value), read.value.details or "", flushed.error or ""]
    assert "upstream said" in error_texts[0]  # the message itself is kept
    for text in [*error_texts, *handler.lines]:
        assert secret not in text, text
        assert token not in text, text
    assert handler.lines, "the undelivered event was logged"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@PROPERTY
@given(secret=SECRET)
def test_the_cli_prints_no_token_from_an_error(empty_env_dir: Path, secret: str) -> None:
    token = _foreign_jwt(secret)
    with respx.mock(base_url=REST, assert_all_called=False) as gateway:
        gateway.post("/rpc/get_user_profile").mock(
            return_value=httpx.Response(
                400, json={"code": "22023", "message": f"token {token} and key={secret}"}
            )
        )
        result = _cli(empty_env_dir, "user", "show", USER_ID)
    assert result.exit_code == 1
    assert "error:" in result.stderr
    assert secret not in result.stdout + result.stderr
    assert token not in result.stdout + result.stderr
