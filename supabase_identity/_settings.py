"""Configuration from the environment and ``.env`` files, validated with pydantic.

Precedence, highest first: explicit constructor arguments (handled by the clients), real
environment variables, ``.env.local``, ``.env``. The files are read with
:func:`dotenv.dotenv_values` and never written into ``os.environ``: loading settings has no side
effect on the process.

Variables::

    SUPABASE_URL                 https://<ref>.supabase.co (or http://127.0.0.1:54321 locally)
    SUPABASE_SERVICE_ROLE_KEY    service key (legacy JWT)    ─┐ either; the first name wins
    SUPABASE_SECRET_KEY          service key (sb_secret_…)  ─┘ within one source
    SUPABASE_ANON_KEY            public key (legacy JWT)     ─┐ either
    SUPABASE_PUBLISHABLE_KEY     public key (sb_publishable_…)┘
    SUPABASE_JWT_SECRET          optional: mints user-scoped tokens (``for_user``)
    REDIS_URL                    optional: durable events outbox
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic
from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from ._exceptions import ConfigError

__all__ = ["Settings", "load_settings"]

_POSTGRES_SCHEMES = ("postgres://", "postgresql://", "postgresql+")

#: (setting name, environment variable names in order of preference)
_VARIABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("supabase_url", ("SUPABASE_URL",)),
    ("service_role_key", ("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY")),
    ("anon_key", ("SUPABASE_ANON_KEY", "SUPABASE_PUBLISHABLE_KEY")),
    ("jwt_secret", ("SUPABASE_JWT_SECRET",)),
    ("redis_url", ("REDIS_URL",)),
)


class Settings(BaseModel):
    """Validated configuration. Secrets are :class:`~pydantic.SecretStr` (masked in ``repr``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    supabase_url: str | None = None
    service_role_key: SecretStr | None = None
    anon_key: SecretStr | None = None
    jwt_secret: SecretStr | None = None
    redis_url: SecretStr | None = None

    @field_validator("supabase_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else normalize_supabase_url(value)

    @field_validator("service_role_key", "anon_key", "jwt_secret", "redis_url")
    @classmethod
    def _strip_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        stripped = value.get_secret_value().strip()
        return SecretStr(stripped) if stripped else None


def normalize_supabase_url(url: str) -> str:
    """Validate the API URL and return it without a trailing ``/`` or ``/rest/v1``.

    Raises ``ConfigError`` for a Postgres connection string: this package never connects to
    Postgres directly, everything goes through the HTTP API (PostgREST behind the gateway).
    """
    value = url.strip()
    lowered = value.lower()
    if lowered.startswith(_POSTGRES_SCHEMES):
        raise ConfigError(
            "SUPABASE_URL is a PostgreSQL connection string, but supabase-identity speaks HTTP "
            "to the Supabase API (PostgREST), never to Postgres directly. Set SUPABASE_URL to "
            "the project's API URL, https://<project-ref>.supabase.co (locally "
            "http://127.0.0.1:54321); keep the postgres:// URL in SUPABASE_DB_URL if other "
            "tools need it.",
            hint="Dashboard → Project Settings → API shows the project URL.",
        )
    if not lowered.startswith(("http://", "https://")):
        raise ConfigError(
            "SUPABASE_URL must be an http:// or https:// URL such as "
            "https://<project-ref>.supabase.co"
        )
    rest = value.split("://", 1)[1]
    if not rest or rest.startswith("/"):
        raise ConfigError("SUPABASE_URL has no host: expected https://<project-ref>.supabase.co")
    value = value.rstrip("/")
    if value.endswith("/rest/v1"):
        value = value[: -len("/rest/v1")]
    return value


def _layer(values: Mapping[str, str | None]) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None and v.strip() != ""}


def load_settings(
    *,
    env_dir: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read settings from ``overrides`` > ``environ`` > ``.env.local`` > ``.env``.

    Args:
        env_dir: folder holding ``.env``/``.env.local``; defaults to the current directory.
        environ: the process environment to use; defaults to ``os.environ`` (not modified).
        overrides: values given explicitly (e.g. constructor arguments); ``None`` entries are
            ignored.

    For a variable with two names (``SUPABASE_SERVICE_ROLE_KEY``/``SUPABASE_SECRET_KEY``), the
    highest-precedence *source* that sets either name wins, so a real environment variable always
    beats a ``.env`` file whichever spelling each uses.
    """
    folder = Path(env_dir) if env_dir is not None else Path.cwd()
    layers: Sequence[dict[str, str]] = (
        _layer(os.environ if environ is None else environ),
        _layer(dotenv_values(folder / ".env.local")),
        _layer(dotenv_values(folder / ".env")),
    )
    data: dict[str, Any] = {}
    for setting, names in _VARIABLES:
        for layer in layers:
            found = next((layer[n] for n in names if n in layer), None)
            if found is not None:
                data[setting] = found
                break
    for setting, value in (overrides or {}).items():
        if value is not None:
            data[setting] = value
    return build_settings(data)


def build_settings(data: Mapping[str, Any]) -> Settings:
    """Validate a mapping into :class:`Settings`, turning pydantic errors into ``ConfigError``."""
    try:
        return Settings.model_validate(dict(data))
    except pydantic.ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        # ``from None`` on purpose: pydantic's own message repeats the input values, which may be
        # keys; the summary above names the fields and rules without them.
        raise ConfigError(f"Invalid supabase-identity settings: {problems}") from None
