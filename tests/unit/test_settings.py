"""Settings precedence (explicit > env > .env.local > .env) and URL validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supabase_identity import ConfigError, IdentityClient, Privilege, load_settings

from .conftest import ANON_KEY, PUBLISHABLE_KEY, SECRET_KEY, SERVICE_KEY


def _write(folder: Path, name: str, **values: str) -> None:
    (folder / name).write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def test_env_local_overrides_env_file_and_real_env_overrides_both(tmp_path: Path) -> None:
    _write(
        tmp_path,
        ".env",
        SUPABASE_URL="http://from-dotenv:1",
        SUPABASE_ANON_KEY="anon-dotenv",
        SUPABASE_JWT_SECRET="secret-dotenv",
        REDIS_URL="redis://dotenv:6379/0",
    )
    _write(
        tmp_path,
        ".env.local",
        SUPABASE_URL="http://from-local:2",
        SUPABASE_ANON_KEY="anon-local",
    )
    environ = {"SUPABASE_URL": "https://real.supabase.co"}

    settings = load_settings(env_dir=tmp_path, environ=environ)

    assert settings.supabase_url == "https://real.supabase.co"
    assert settings.anon_key is not None
    assert settings.anon_key.get_secret_value() == "anon-local"
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == "secret-dotenv"
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://dotenv:6379/0"


def test_explicit_arguments_beat_everything(tmp_path: Path) -> None:
    _write(tmp_path, ".env.local", SUPABASE_URL="http://from-local:2", SUPABASE_JWT_SECRET="x")
    settings = load_settings(
        env_dir=tmp_path,
        environ={"SUPABASE_URL": "http://from-env:3"},
        overrides={"supabase_url": "http://explicit:4", "jwt_secret": None},
    )
    assert settings.supabase_url == "http://explicit:4"
    assert settings.jwt_secret is not None  # None override means "not given"


def test_real_environment_alias_beats_dotenv_alias(tmp_path: Path) -> None:
    """SUPABASE_SECRET_KEY in the real env wins over SUPABASE_SERVICE_ROLE_KEY in .env."""
    _write(tmp_path, ".env", SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY)
    settings = load_settings(env_dir=tmp_path, environ={"SUPABASE_SECRET_KEY": SECRET_KEY})
    assert settings.service_role_key is not None
    assert settings.service_role_key.get_secret_value() == SECRET_KEY


def test_within_one_source_the_legacy_name_wins(tmp_path: Path) -> None:
    settings = load_settings(
        env_dir=tmp_path,
        environ={"SUPABASE_ANON_KEY": ANON_KEY, "SUPABASE_PUBLISHABLE_KEY": PUBLISHABLE_KEY},
    )
    assert settings.anon_key is not None
    assert settings.anon_key.get_secret_value() == ANON_KEY


def test_empty_values_count_as_unset(tmp_path: Path) -> None:
    _write(tmp_path, ".env", SUPABASE_URL="http://from-dotenv:1")
    settings = load_settings(env_dir=tmp_path, environ={"SUPABASE_URL": "  "})
    assert settings.supabase_url == "http://from-dotenv:1"


def test_loading_does_not_touch_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPABASE_JWT_SECRET", raising=False)
    _write(tmp_path, ".env", SUPABASE_URL="http://x:1", SUPABASE_JWT_SECRET="dotenv-only")
    load_settings(env_dir=tmp_path)
    assert "SUPABASE_JWT_SECRET" not in os.environ


def test_process_environment_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://ref.supabase.co/")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", SERVICE_KEY)
    monkeypatch.delenv("REDIS_URL", raising=False)
    client = IdentityClient.from_env(env_dir=tmp_path)
    try:
        assert client.base_url == "https://ref.supabase.co"
        assert client.privilege is Privilege.SERVICE
    finally:
        client.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:pw@db.ref.supabase.co:5432/postgres",
        "postgres://postgres@127.0.0.1:54322/postgres",
        "postgresql+psycopg://u@h/db",
    ],
)
def test_postgres_url_is_refused_with_an_explanation(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env_dir=tmp_path, environ={"SUPABASE_URL": url})
    text = str(info.value)
    assert "speaks HTTP" in text
    expected = "https://ref.supabase.co" if "supabase.co" in url else "https://<project-ref>"
    assert expected in text
    assert "pw" not in text


@pytest.mark.parametrize("url", ["ftp://x", "127.0.0.1:54321", "http://", "https:///path"])
def test_non_http_urls_are_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="SUPABASE_URL"):
        load_settings(env_dir=tmp_path, environ={"SUPABASE_URL": url})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://ref.supabase.co/", "https://ref.supabase.co"),
        ("http://127.0.0.1:54321/rest/v1/", "http://127.0.0.1:54321"),
        (" HTTPS://ref.supabase.co ", "HTTPS://ref.supabase.co"),
    ],
)
def test_url_is_normalized(tmp_path: Path, url: str, expected: str) -> None:
    assert load_settings(env_dir=tmp_path, environ={"SUPABASE_URL": url}).supabase_url == expected


def test_missing_url_and_key_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SUPABASE_URL is not set"):
        IdentityClient(env_dir=tmp_path, environ={})
    with pytest.raises(ConfigError, match="SUPABASE_SERVICE_ROLE_KEY"):
        IdentityClient(env_dir=tmp_path, environ={"SUPABASE_URL": "http://127.0.0.1:54321"})


def test_service_key_is_preferred_and_public_only_client_is_public(tmp_path: Path) -> None:
    both = {
        "SUPABASE_URL": "http://127.0.0.1:54321",
        "SUPABASE_SECRET_KEY": SECRET_KEY,
        "SUPABASE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
    }
    with IdentityClient(env_dir=tmp_path, environ=both, redis_url=None) as client:
        assert client.privilege is Privilege.SERVICE
    public_only = {k: v for k, v in both.items() if k != "SUPABASE_SECRET_KEY"}
    with IdentityClient(env_dir=tmp_path, environ=public_only, redis_url=None) as client:
        assert client.privilege is Privilege.PUBLIC


def test_settings_repr_masks_secrets(tmp_path: Path) -> None:
    settings = load_settings(
        env_dir=tmp_path,
        environ={
            "SUPABASE_URL": "http://x:1",
            "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
            "SUPABASE_JWT_SECRET": "super-secret-value",
            "REDIS_URL": "redis://:hunter2@host:6379/0",
        },
    )
    text = repr(settings) + str(settings)
    assert SERVICE_KEY not in text
    assert "super-secret-value" not in text
    assert "hunter2" not in text


# --- the seed's variables: IDENTITY_SUPABASE_* first, .env.tunnel, where each value came from --


ETL = {  # what a service that also talks to another project holds in its real environment
    "SUPABASE_URL": "https://etl.supabase.co",
    "SUPABASE_SERVICE_ROLE_KEY": "etl-service-key",
    "SUPABASE_ANON_KEY": "etl-anon-key",
    "SUPABASE_JWT_SECRET": "etl-jwt-secret",
}


@pytest.mark.parametrize(
    ("identity_names", "where"),
    [
        (
            {
                "IDENTITY_SUPABASE_URL": "https://ident.supabase.co",
                "IDENTITY_SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
                "IDENTITY_SUPABASE_ANON_KEY": ANON_KEY,
                "IDENTITY_SUPABASE_JWT_SECRET": "identity-jwt-secret",
            },
            ".env.local",
        ),
        (
            {
                "IDENTITY_SUPABASE_URL": "https://ident.supabase.co",
                "IDENTITY_SUPABASE_SECRET_KEY": SECRET_KEY,
                "IDENTITY_SUPABASE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
                "IDENTITY_SUPABASE_JWT_SECRET": "identity-jwt-secret",
            },
            "environment",
        ),
    ],
)
def test_identity_names_win_over_the_generic_ones_from_any_source(
    tmp_path: Path, identity_names: dict[str, str], where: str
) -> None:
    """The ETL project's SUPABASE_* in the real environment never reach identity data."""
    environ = dict(ETL)
    if where == "environment":
        environ.update(identity_names)
    else:
        _write(tmp_path, where, **identity_names)
    settings = load_settings(env_dir=tmp_path, environ=environ)
    assert settings.supabase_url == "https://ident.supabase.co"
    secrets = {
        name: value.get_secret_value()
        for name, value in (
            ("service", settings.service_role_key),
            ("anon", settings.anon_key),
            ("jwt", settings.jwt_secret),
        )
        if value is not None
    }
    assert secrets == {
        "service": identity_names.get("IDENTITY_SUPABASE_SERVICE_ROLE_KEY", SECRET_KEY),
        "anon": identity_names.get("IDENTITY_SUPABASE_ANON_KEY", PUBLISHABLE_KEY),
        "jwt": "identity-jwt-secret",
    }
    service_name = next(n for n in identity_names if "SERVICE" in n or "SECRET_KEY" in n)
    assert settings.sources["supabase_url"] == f"IDENTITY_SUPABASE_URL ({where})"
    assert settings.sources["service_role_key"] == f"{service_name} ({where})"


def test_generic_names_stay_the_fallback(tmp_path: Path) -> None:
    settings = load_settings(env_dir=tmp_path, environ=ETL)
    assert settings.supabase_url == "https://etl.supabase.co"
    assert settings.sources["supabase_url"] == "SUPABASE_URL (environment)"


def test_env_tunnel_sits_between_the_environment_and_env_local(tmp_path: Path) -> None:
    _write(tmp_path, ".env", SUPABASE_URL="http://dotenv:1", REDIS_URL="redis://dotenv:1/0")
    _write(
        tmp_path,
        ".env.local",
        SUPABASE_URL="http://local:2",
        REDIS_URL="redis://local:2/0",
        SUPABASE_JWT_SECRET="local-secret",
    )
    _write(tmp_path, ".env.tunnel", SUPABASE_URL="http://tunnel:3", REDIS_URL="redis://tunnel:3/0")
    settings = load_settings(env_dir=tmp_path, environ={"SUPABASE_URL": "http://real:4"})
    assert settings.supabase_url == "http://real:4"
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://tunnel:3/0"
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == "local-secret"
    assert dict(settings.sources) == {
        "supabase_url": "SUPABASE_URL (environment)",
        "redis_url": "REDIS_URL (.env.tunnel)",
        "jwt_secret": "SUPABASE_JWT_SECRET (.env.local)",
    }


SEED_PASSWORD = "s3cr3t-P@ss/word[1]"


@pytest.mark.parametrize(
    ("url", "project"),
    [
        (
            f"postgresql://postgres:{SEED_PASSWORD}@db.hire-cj-dev-amir.supabase.co:5432/postgres",
            "https://hire-cj-dev-amir.supabase.co",
        ),
        (
            f"postgresql://postgres.abcdefghijklmnopqrst:{SEED_PASSWORD}"
            "@aws-0-us-east-1.pooler.supabase.com:6543/postgres",
            "https://abcdefghijklmnopqrst.supabase.co",
        ),
    ],
)
def test_the_seeds_postgres_url_says_what_to_set_instead(
    tmp_path: Path, url: str, project: str
) -> None:
    _write(tmp_path, ".env.local", IDENTITY_SUPABASE_URL=url, IDENTITY_SUPABASE_ANON_KEY=ANON_KEY)
    with pytest.raises(ConfigError) as info:
        IdentityClient.from_env(env_dir=tmp_path, environ={})
    text = f"{info.value} {info.value.hint}"
    assert f"Set IDENTITY_SUPABASE_URL={project} " in text
    assert "IDENTITY_SUPABASE_SECRET_KEY" in text
    assert "IDENTITY_SUPABASE_SERVICE_ROLE_KEY" in text
    for part in (SEED_PASSWORD, "s3cr3t", "P@ss", "word[1]"):
        assert part not in text


def test_a_key_of_the_other_project_is_refused(tmp_path: Path) -> None:
    """IDENTITY_SUPABASE_URL with only the generic service key, while SUPABASE_URL names
    another project: that key belongs to the other project and must not be sent."""
    _write(tmp_path, ".env.local", IDENTITY_SUPABASE_URL="https://ident.supabase.co")
    with pytest.raises(ConfigError) as info:
        IdentityClient.from_env(env_dir=tmp_path, environ=ETL)
    text = str(info.value)
    assert "SUPABASE_SERVICE_ROLE_KEY (environment) belongs with SUPABASE_URL's project" in text
    assert "Set IDENTITY_SUPABASE_SERVICE_ROLE_KEY" in text
    assert "etl-service-key" not in text
    # Without a second project the generic names are the fallback, as `supabase status` has them.
    alone = {k: v for k, v in ETL.items() if k != "SUPABASE_URL"} | {
        "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY
    }
    with IdentityClient.from_env(env_dir=tmp_path, environ=alone) as client:
        assert client.base_url == "https://ident.supabase.co"
    # An explicit key argument replaces the other project's.
    etl_url_and_key = {n: ETL[n] for n in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY")}
    with IdentityClient.from_env(
        env_dir=tmp_path, environ=etl_url_and_key, key=SERVICE_KEY
    ) as client:
        assert client.base_url == "https://ident.supabase.co"
