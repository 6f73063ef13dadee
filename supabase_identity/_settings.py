"""Configuration from the environment and ``.env`` files, validated with pydantic.

Precedence, highest first: explicit constructor arguments (handled by the clients), real
environment variables, ``.env.tunnel``, ``.env.local``, ``.env``. The files are read with
:func:`dotenv.dotenv_values` and never written into ``os.environ``: loading settings has no side
effect on the process.

Variables (an ``IDENTITY_SUPABASE_*`` name, from any source, wins over the generic
``SUPABASE_*`` one, so a service that also holds another project's ``SUPABASE_*`` variables
keeps identity data in its own project)::

    IDENTITY_SUPABASE_URL / SUPABASE_URL
                                 https://<ref>.supabase.co (or http://127.0.0.1:54321 locally)
    IDENTITY_SUPABASE_SERVICE_ROLE_KEY / IDENTITY_SUPABASE_SECRET_KEY /
    SUPABASE_SERVICE_ROLE_KEY / SUPABASE_SECRET_KEY
                                 service key (legacy JWT or sb_secret_…)
    IDENTITY_SUPABASE_ANON_KEY / IDENTITY_SUPABASE_PUBLISHABLE_KEY /
    SUPABASE_ANON_KEY / SUPABASE_PUBLISHABLE_KEY
                                 public key (legacy JWT or sb_publishable_…)
    IDENTITY_SUPABASE_JWT_SECRET / SUPABASE_JWT_SECRET
                                 optional: mints user-scoped tokens (``for_user``)
    REDIS_URL                    optional: durable events outbox (one node or any node of a
                                 Redis Cluster)
    REDIS_CLUSTER                optional: true/false forces cluster mode (default: detected)

:attr:`Settings.sources` says where each value came from (``doctor`` prints it).

Nothing secret travels in a URL and no message repeats a setting's value: an API URL with a
``user:password@`` or query parameters is refused when the settings are read (keys belong in
the key variables, sent as headers), and every refusal names the variable and the rule only.
A Postgres connection string (what the original identity library kept in its URL variable) is
refused with the project's API URL derived from its host, never with its password.
The checks run on the validated fields, so they apply whichever variable (or argument) a value
came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import pydantic
from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
)

from ._exceptions import ConfigError

__all__ = ["Settings", "check_credential", "load_settings", "parse_cluster_flag"]

_POSTGRES_SCHEMES = ("postgres://", "postgresql://", "postgresql+")

#: Prefix of the names that keep identity apart from another project the service talks to.
IDENTITY_PREFIX = "IDENTITY_"
_SUPABASE_NAMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("supabase_url", ("SUPABASE_URL",)),
    ("service_role_key", ("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY")),
    ("anon_key", ("SUPABASE_ANON_KEY", "SUPABASE_PUBLISHABLE_KEY")),
    ("jwt_secret", ("SUPABASE_JWT_SECRET",)),
)
#: (setting name, tiers of environment variable names): the first tier set in any source wins;
#: within a tier the highest-precedence source wins, then the first name.
_VARIABLES: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    *(
        (setting, (tuple(IDENTITY_PREFIX + n for n in names), names))
        for setting, names in _SUPABASE_NAMES
    ),
    ("redis_url", (("REDIS_URL",),)),
    ("redis_cluster", (("REDIS_CLUSTER",),)),
    # The compliance audit's hash key; else the first of the Shopify app's secrets.
    ("audit_key", (("IDENTITY_AUDIT_KEY", "SHOPIFY_API_SECRET"),)),
)
#: The ``.env`` files read, highest precedence first (all below the real environment).
ENV_FILES: tuple[str, ...] = (".env.tunnel", ".env.local", ".env")
#: Constructor arguments that reach the settings as overrides, for messages about them.
_ARGUMENTS = {"supabase_url": "url", "jwt_secret": "jwt_secret", "redis_url": "redis_url"}
#: API keys and tokens travel in HTTP headers: printable ASCII, no spaces.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def _source(info: ValidationInfo) -> str:
    """The variable (or argument) a field's value came from, as :func:`load_settings` recorded."""
    field = info.field_name or ""
    sources: Mapping[str, str] = (info.context or {}).get("sources", {})
    return sources.get(field) or next((t[-1][0] for f, t in _VARIABLES if f == field), field)


def _require_unicode(value: str, name: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"{name} is not valid Unicode text (it holds a lone surrogate character)"
        ) from None


def check_credential(value: str, *, name: str) -> str:
    """Check an API key or token without ever showing it: printable ASCII, no whitespace.

    Keys and tokens are sent in HTTP headers, which carry nothing else; a key that fails this
    was mangled on its way into the configuration (a stray quote or line break, say).
    """
    if not isinstance(value, str) or not _HEADER_SAFE.fullmatch(value):
        raise ConfigError(
            f"{name} is not a usable API key or token: keys are printable ASCII without spaces "
            "or line breaks. Copy it again from Dashboard → Project Settings → API keys."
        )
    return value


class Settings(BaseModel):
    """Validated configuration. Secrets are :class:`~pydantic.SecretStr` (masked in ``repr``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    _generic_url_set: bool = PrivateAttr(default=False)

    @property
    def sources(self) -> Mapping[str, str]:
        """Where each set value came from, e.g. ``{"supabase_url": "IDENTITY_SUPABASE_URL
        (.env.local)"}``; an explicit argument reads ``"the url argument"``."""
        return dict(self._sources)

    supabase_url: str | None = None
    service_role_key: SecretStr | None = None
    anon_key: SecretStr | None = None
    jwt_secret: SecretStr | None = None
    redis_url: SecretStr | None = None
    #: ``REDIS_CLUSTER``: force cluster mode on or off; ``None`` detects it from the node.
    redis_cluster: bool | None = None
    #: ``IDENTITY_AUDIT_KEY``, else the first secret of ``SHOPIFY_API_SECRET``: the key of the
    #: compliance audit's shop hash.
    audit_key: SecretStr | None = None

    @field_validator("audit_key")
    @classmethod
    def _first_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        first = next((p.strip() for p in value.get_secret_value().split(",") if p.strip()), "")
        return SecretStr(first) if first else None

    def check_one_project(self, *, ignore: Collection[str] = ()) -> None:
        """Refuse keys of another project: the URL from ``IDENTITY_SUPABASE_URL``, a key from a
        generic ``SUPABASE_*`` name, and ``SUPABASE_URL`` set too (so those name another one).

        ``ignore`` lists settings an explicit argument replaces.
        """
        if not self._generic_url_set or not self._sources.get("supabase_url", "").startswith(
            IDENTITY_PREFIX
        ):
            return
        for setting in ("service_role_key", "anon_key", "jwt_secret"):
            origin = self._sources.get(setting)
            if setting in ignore or origin is None or origin.startswith((IDENTITY_PREFIX, "the ")):
                continue
            name = origin.split(" ", 1)[0]
            raise ConfigError(
                f"{origin} belongs with SUPABASE_URL's project, but the URL in use comes from "
                f"IDENTITY_SUPABASE_URL: that key would be sent to another project. Set "
                f"{IDENTITY_PREFIX}{name} to the identity project's value."
            )

    @field_validator("supabase_url")
    @classmethod
    def _check_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else normalize_supabase_url(value, name=_source(info))

    @field_validator("redis_cluster", mode="before")
    @classmethod
    def _cluster_flag(cls, value: object) -> bool | None:
        if value is None or isinstance(value, bool | str):
            return parse_cluster_flag(value)
        raise ValueError("must be true or false")

    @field_validator("service_role_key", "anon_key", "jwt_secret", "redis_url")
    @classmethod
    def _check_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None:
            return None
        stripped = value.get_secret_value().strip()
        if not stripped:
            return None
        name = _source(info)
        if info.field_name in ("service_role_key", "anon_key"):
            check_credential(stripped, name=name)
        elif info.field_name == "redis_url":
            check_redis_url(stripped, name=name)
        else:
            _require_unicode(stripped, name)
        return SecretStr(stripped)


def _split_url(value: str, name: str, shape: str) -> SplitResult:
    """``urlsplit`` plus the port, as ``ConfigError`` naming ``name`` (never the value)."""
    _require_unicode(value, name)
    if any(char.isspace() or not char.isprintable() for char in value):
        raise ConfigError(f"{name} contains spaces or control characters; expected {shape}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ConfigError(
            f"{name} is not a valid URL (its host or port cannot be read); expected {shape}"
        ) from None
    return parts


def check_redis_url(url: str, *, name: str = "REDIS_URL") -> str:
    """Check that ``url`` is a Redis URL ``redis-py`` can open, without repeating it (it may hold
    the Redis password)."""
    shape = "redis://[:password@]host:port/db, rediss://… or unix://…"
    parts = _split_url(url, name, shape)
    if parts.scheme.lower() not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{name} must be a Redis URL: {shape}")
    return url


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_cluster_flag(value: str | bool | None) -> bool | None:
    """``REDIS_CLUSTER``: true/false (also 1/0, yes/no, on/off); unset or empty means detect."""
    if value is None or isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if not lowered:
        return None
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("REDIS_CLUSTER must be true or false (or 1/0, yes/no, on/off)")


def normalize_supabase_url(url: str, *, name: str = "SUPABASE_URL") -> str:
    """Validate the API URL and return it without a trailing ``/`` or ``/rest/v1``.

    ``name`` is the variable (or argument) the URL came from; messages name it and never repeat
    the URL, which may hold a secret. Raises ``ConfigError`` for a Postgres connection string
    (this package never connects to Postgres directly, everything goes through the HTTP API),
    and for a URL carrying credentials: a ``user:password@`` or query parameters (``?apikey=…``).
    Keys travel in headers; a URL is printed, logged and proxied.
    """
    value = url.strip()
    lowered = value.lower()
    if lowered.startswith(_POSTGRES_SCHEMES):
        raise _postgres_url_error(value, name)
    if not lowered.startswith(("http://", "https://")):
        raise ConfigError(
            f"{name} must be an http:// or https:// URL such as https://<project-ref>.supabase.co"
        )
    shape = "https://<project-ref>.supabase.co"
    parts = _split_url(value, name, shape)
    if "@" in parts.netloc:
        raise ConfigError(
            f"{name} contains a user name or password (user:password@host). supabase-identity "
            "authenticates with the API key, sent in a header, never with credentials in the "
            f"URL. Remove them from {name}; put the key in SUPABASE_SERVICE_ROLE_KEY (or "
            "SUPABASE_SECRET_KEY), and rotate that password if the URL was shared or logged.",
            hint=f"expected {shape}",
        )
    if "?" in value or "#" in value:
        raise ConfigError(
            f"{name} carries query parameters or a fragment (?… or #…). The project's API URL "
            "has none, and a key there would be written to every log that records the URL. "
            f"Remove them from {name}; keys belong in SUPABASE_SERVICE_ROLE_KEY (or "
            "SUPABASE_SECRET_KEY) and SUPABASE_ANON_KEY (or SUPABASE_PUBLISHABLE_KEY).",
            hint=f"expected {shape}",
        )
    if not parts.hostname:
        raise ConfigError(f"{name} has no host: expected {shape}")
    value = value.rstrip("/")
    if value.endswith("/rest/v1"):
        value = value[: -len("/rest/v1")]
    return value


#: ``db.<ref>.supabase.co`` (direct) or ``postgres.<ref>@…pooler.supabase.com`` (pooler).
_DIRECT_HOST = re.compile(r"db\.([a-z0-9][a-z0-9-]*)\.supabase\.(?:co|com|in)", re.IGNORECASE)
_POOLER_USER = re.compile(r"postgres\.([a-z0-9][a-z0-9-]*)", re.IGNORECASE)


def project_url_from_postgres(url: str) -> str | None:
    """``https://<ref>.supabase.co`` for a Supabase Postgres URL, else ``None``.

    Reads only the host (``db.<ref>.supabase.co``) or the pooler's user name
    (``postgres.<ref>``); the password, which may hold any character, is never parsed out.
    """
    rest = url.split("://", 1)[-1]
    userinfo, _, hostpart = rest.rpartition("@")
    host = hostpart.split("/", 1)[0].split("?", 1)[0].rsplit(":", 1)[0]
    direct = _DIRECT_HOST.fullmatch(host)
    pooler = _POOLER_USER.fullmatch(userinfo.split(":", 1)[0]) if userinfo else None
    match = direct or (pooler if host.lower().endswith(".pooler.supabase.com") else None)
    return f"https://{match.group(1).lower()}.supabase.co" if match else None


def _postgres_url_error(value: str, name: str) -> ConfigError:
    """The refusal of a Postgres URL in ``name``: the API URL to use and the key to add."""
    prefix = IDENTITY_PREFIX if name.startswith(IDENTITY_PREFIX) else ""
    project = project_url_from_postgres(value)
    use = (
        f"Set {name}={project} (the API URL of the project this connection string points at)"
        if project
        else f"Set {name} to the project's API URL, https://<project-ref>.supabase.co "
        "(locally http://127.0.0.1:54321)"
    )
    return ConfigError(
        f"{name} is a PostgreSQL connection string, but supabase-identity speaks HTTP to the "
        f"Supabase API (PostgREST), never to Postgres directly. {use}, and add the project's "
        f"service key as {prefix}SUPABASE_SECRET_KEY (sb_secret_…) or "
        f"{prefix}SUPABASE_SERVICE_ROLE_KEY (legacy JWT); the public key "
        f"({prefix}SUPABASE_ANON_KEY) cannot write. The database password is not needed: "
        "keep the postgres:// URL in SUPABASE_DB_URL if other tools need it.",
        hint="Dashboard → Project Settings → API keys shows the service key.",
    )


def _layer(values: Mapping[str, str | None]) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None and v.strip() != ""}


def load_settings(
    *,
    env_dir: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read settings from ``overrides`` > ``environ`` > ``.env.tunnel`` > ``.env.local`` > ``.env``.

    Args:
        env_dir: folder holding ``.env``/``.env.local``; defaults to the current directory.
        environ: the process environment to use; defaults to ``os.environ`` (not modified).
        overrides: values given explicitly (e.g. constructor arguments); ``None`` entries are
            ignored.

    An ``IDENTITY_SUPABASE_*`` name set in any source beats the generic ``SUPABASE_*`` one in
    every source. For a variable with two names (``SUPABASE_SERVICE_ROLE_KEY``/
    ``SUPABASE_SECRET_KEY``), the highest-precedence *source* that sets either name wins, so a
    real environment variable beats a ``.env`` file whichever spelling each uses.
    """
    folder = Path(env_dir) if env_dir is not None else Path.cwd()
    layers: Sequence[tuple[str, dict[str, str]]] = (
        ("environment", _layer(os.environ if environ is None else environ)),
        *((file, _layer(dotenv_values(folder / file))) for file in ENV_FILES),
    )
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    origins: dict[str, str] = {}
    for setting, tiers in _VARIABLES:
        found = next(
            (
                (name, origin, layer[name])
                for names in tiers
                for origin, layer in layers
                for name in names
                if name in layer
            ),
            None,
        )
        if found is not None:
            name, origin, data[setting] = found
            sources[setting] = name
            origins[setting] = f"{name} ({origin})"
    for setting, value in (overrides or {}).items():
        if value is not None:
            data[setting] = value
            sources[setting] = origins[setting] = f"the {_ARGUMENTS.get(setting, setting)} argument"
    settings = build_settings(data, sources=sources)
    settings._sources.update(origins)
    settings._generic_url_set = any("SUPABASE_URL" in layer for _, layer in layers)
    return settings


def build_settings(
    data: Mapping[str, Any], *, sources: Mapping[str, str] | None = None
) -> Settings:
    """Validate a mapping into :class:`Settings`, turning pydantic errors into ``ConfigError``.

    ``sources`` maps a setting to the variable or argument it came from, for messages.
    """
    try:
        return Settings.model_validate(dict(data), context={"sources": dict(sources or {})})
    except pydantic.ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        # ``from None`` on purpose: pydantic's own message repeats the input values, which may be
        # keys; the summary above names the fields and rules without them.
        raise ConfigError(f"Invalid supabase-identity settings: {problems}") from None
