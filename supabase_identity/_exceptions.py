"""One error hierarchy for everything the package raises.

Callers catch :class:`IdentityError` for "anything from supabase-identity" and a subclass when they
can act on it. Every error raised because of an HTTP response carries ``status_code`` and the
PostgREST/Postgres ``code``; errors raised before any request (bad input, configuration, a public
key asked to write) have ``status_code = None``::

    IdentityError
    ├── ConfigError                    settings are missing or wrong
    │   ├── SchemaNotExposedError      PGRST106: `identity` not in the exposed schemas
    │   └── MigrationsNotAppliedError  PGRST202/PGRST205: SQL functions or tables missing
    ├── ValidationError (ValueError)   bad argument, or Postgres rejected a value (22xxx/23514)
    ├── AuthenticationError            401: key/token invalid or expired (PGRST301-303)
    ├── PermissionDeniedError          403/42501, or a write attempted with the public key
    ├── NotFoundError (LookupError)    the user/conversation does not exist or is not visible
    ├── ConflictError                  409/23505
    ├── APIStatusError                 any other non-2xx answer
    ├── APIResponseValidationError     a 2xx answer whose body does not have the expected shape
    ├── BackendUnavailableError        connection errors, timeouts, 408/429/5xx after retries
    └── ClientClosedError              the client was closed and cannot be reused

Messages never contain API keys or tokens: :func:`make_api_error` runs every server-provided string
through the client's redactor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "APIResponseValidationError",
    "APIStatusError",
    "AuthenticationError",
    "BackendUnavailableError",
    "ClientClosedError",
    "ConfigError",
    "ConflictError",
    "IdentityError",
    "MigrationsNotAppliedError",
    "NotFoundError",
    "PermissionDeniedError",
    "SchemaNotExposedError",
    "ValidationError",
]


class IdentityError(Exception):
    """Base class of every error raised by supabase-identity.

    Attributes:
        message: human-readable explanation, safe to log (no secrets).
        status_code: HTTP status of the response that caused it, or ``None``.
        code: PostgREST (``PGRST…``) or Postgres SQLSTATE code from the response body, or ``None``.
        hint: PostgREST's hint, or a fix suggested by this package.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        hint: str | None = None,
        details: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        parts = [self.message]
        if self.status_code is not None or self.code:
            where = ", ".join(
                p for p in (f"HTTP {self.status_code}" if self.status_code else "", self.code) if p
            )
            parts.append(f"({where})")
        if self.hint:
            parts.append(f"Hint: {self.hint}")
        return " ".join(parts)


class ConfigError(IdentityError):
    """The package is configured wrongly (missing URL or key, postgres:// URL, hidden schema)."""


class SchemaNotExposedError(ConfigError):
    """PostgREST does not expose the ``identity`` schema (PGRST106)."""


class MigrationsNotAppliedError(ConfigError):
    """A table or SQL function the package needs is missing (PGRST202/PGRST205)."""


class ValidationError(IdentityError, ValueError):
    """An argument is invalid, or the database rejected a value.

    Also a :class:`ValueError`, so code written against plain Python conventions catches it.
    ``field`` and ``rule`` say which argument broke which rule (``None`` when the database found
    the problem and did not say).
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        rule: str | None = None,
        status_code: int | None = None,
        code: str | None = None,
        hint: str | None = None,
        details: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, code=code, hint=hint, details=details)
        self.field = field
        self.rule = rule


class AuthenticationError(IdentityError):
    """The key or token was rejected (invalid signature, expired, missing)."""


class PermissionDeniedError(IdentityError):
    """The caller's role may not do this (RLS/grants, or a public key asked to write)."""


class NotFoundError(IdentityError, LookupError):
    """The requested user or conversation does not exist, or the caller cannot see it."""


class ConflictError(IdentityError):
    """The request conflicts with existing data (HTTP 409, SQLSTATE 23505)."""


class APIStatusError(IdentityError):
    """A non-2xx response that no more specific class describes."""


class APIResponseValidationError(IdentityError):
    """A 2xx response whose body does not match the database contract this version expects."""


class BackendUnavailableError(IdentityError):
    """Supabase could not be reached or kept failing (connection error, timeout, 408/429/5xx)."""


class ClientClosedError(IdentityError):
    """The client was closed; create a new one instead of reusing it."""


# --- mapping from responses to errors ---------------------------------------------------------

_SCHEMA_HINT = (
    "Expose the `identity` schema: add it to `schemas` under [api] in supabase/config.toml "
    "(local stack) or in Dashboard → Project Settings → API → Exposed schemas (hosted project)."
)
_MIGRATIONS_HINT = (
    "The identity migrations are not applied to this database: run `supabase db push` "
    "(or `scripts/stack up` locally)."
)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def make_api_error(
    status_code: int,
    body: Any,
    *,
    redact: Callable[[str], str] = lambda s: s,
    fallback_text: str = "",
) -> IdentityError:
    """Build the error for a non-2xx, non-retryable (or retries exhausted) response.

    ``body`` is the decoded JSON body (PostgREST's ``{"code","message","details","hint"}``) or
    anything else; ``fallback_text`` is the raw body used when it is not PostgREST JSON (e.g. an
    HTML page from the gateway). The PostgREST/Postgres code decides first, the status second.
    """
    fields: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    code = _text(fields.get("code"))
    message = redact(
        _text(fields.get("message")) or fallback_text.strip()[:200] or f"HTTP {status_code}"
    )
    hint = _text(fields.get("hint"))
    details = _text(fields.get("details"))
    hint = redact(hint) if hint else None
    details = redact(details) if details else None
    kw: dict[str, Any] = {
        "status_code": status_code,
        "code": code,
        "hint": hint,
        "details": details,
    }

    if code == "PGRST106":
        kw["hint"] = _SCHEMA_HINT
        return SchemaNotExposedError(f"The `identity` schema is not exposed: {message}", **kw)
    if code in {"PGRST202", "PGRST205", "42883", "42P01"}:
        kw["hint"] = _MIGRATIONS_HINT
        return MigrationsNotAppliedError(message, **kw)
    if code in {"PGRST301", "PGRST302", "PGRST303"}:
        return AuthenticationError(message, **kw)
    if code == "42501":
        return PermissionDeniedError(message, **kw)
    if code == "PGRST116":
        return NotFoundError(message, **kw)
    if code == "23505":
        return ConflictError(message, **kw)
    if code is not None and (code.startswith("22") or code in {"23502", "23503", "23514"}):
        return ValidationError(message, **kw)
    if status_code == 401:
        return AuthenticationError(message, **kw)
    if status_code == 403:
        return PermissionDeniedError(message, **kw)
    if status_code == 404:
        if code is None:
            kw["hint"] = (
                "The gateway answered 404 without a PostgREST error: check that SUPABASE_URL is "
                "the project's API URL (https://<ref>.supabase.co, or http://127.0.0.1:54321)."
            )
            return ConfigError(message, **kw)
        return NotFoundError(message, **kw)
    if status_code == 409:
        return ConflictError(message, **kw)
    if status_code == 413:
        return ValidationError(f"Request body too large: {message}", **kw)
    if status_code in {408, 429} or status_code >= 500:
        return BackendUnavailableError(message, **kw)
    return APIStatusError(message, **kw)
