"""One error hierarchy for everything the package raises, shaped like the Stainless SDKs'.

Callers catch :class:`IdentityError` for "anything from supabase-identity" and a subclass when they
can act on it: a class, never a status code. Every error raised because of an HTTP answer is an
:class:`APIStatusError` carrying ``status_code`` and the PostgREST/Postgres ``code``; errors raised
before any request (bad input, configuration) have ``status_code = None``::

    IdentityError
    ├── ConfigError                          settings are missing or wrong
    ├── ValidationError (ValueError)         a bad argument, refused before any request
    ├── APIError                             talking to Supabase went wrong
    │   ├── APIStatusError                   Supabase answered with an error
    │   │   ├── DataRejectedError            400, 413, 22xxx/23502/23503/23514, PGRST102
    │   │   ├── AuthenticationError          401, PGRST301-303: key or token invalid/expired
    │   │   ├── PermissionDeniedError        403, 42501 (or a write refused for a public key)
    │   │   ├── NotFoundError (LookupError)  404, PGRST116, or the user/conversation is absent
    │   │   ├── ConflictError                409, 23505
    │   │   ├── RateLimitError               429
    │   │   ├── InternalServerError          5xx
    │   │   ├── SchemaNotExposedError        PGRST106: `identity` not exposed (a ConfigError)
    │   │   ├── MigrationsNotAppliedError    PGRST202/205: tables/functions missing (ConfigError)
    │   │   └── EndpointNotFoundError        404 from a URL that is no PostgREST (a ConfigError)
    │   ├── APIConnectionError               no answer: refused, reset, DNS, protocol error
    │   │   └── APITimeoutError              no answer in time (or the gateway's 408)
    │   └── APIResponseValidationError       a 2xx answer without the expected shape
    └── ClientClosedError                    the client was closed and cannot be reused

The names of earlier versions keep working, as categories that cut across the tree:

* :class:`BackendUnavailableError` — "retry later": the parent of :class:`APIConnectionError`
  (so of :class:`APITimeoutError`), :class:`RateLimitError` and :class:`InternalServerError`,
  the failures the clients retry. ``except BackendUnavailableError`` catches what it always did.
* :class:`ValidationError` — "the input is bad, whoever found it": a bad argument raises it
  directly (``field`` and ``rule`` say which and why); a value the database rejected raises its
  subclass :class:`DataRejectedError`, which is also an :class:`APIStatusError`. Catch
  ``DataRejectedError`` first where the two need different handling.
* :class:`SchemaNotExposedError`, :class:`MigrationsNotAppliedError` and
  :class:`EndpointNotFoundError` are also :class:`ConfigError`: the fix is in the deployment.

Messages never contain API keys or tokens: :func:`make_api_error` runs every server-provided string
through the client's redactor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BackendUnavailableError",
    "ClientClosedError",
    "ConfigError",
    "ConflictError",
    "DataRejectedError",
    "EndpointNotFoundError",
    "IdentityError",
    "InternalServerError",
    "MigrationsNotAppliedError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
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


# --- categories kept from earlier versions ----------------------------------------------------


class ConfigError(IdentityError):
    """The package is configured wrongly (missing URL or key, postgres:// URL, hidden schema)."""


class ValidationError(IdentityError, ValueError):
    """An input is invalid: a bad argument, or (as :class:`DataRejectedError`) a rejected value.

    Raised directly, before any request, for a bad argument; ``field`` and ``rule`` then say
    which argument broke which rule. Also a :class:`ValueError`, so code written against plain
    Python conventions catches it.
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


class BackendUnavailableError(IdentityError):
    """Supabase could not be reached or kept failing: worth retrying later.

    The category of :class:`APIConnectionError`, :class:`APITimeoutError`,
    :class:`RateLimitError` and :class:`InternalServerError`: what the clients retry, raised once
    their retries are spent.
    """


class ClientClosedError(IdentityError):
    """The client was closed; create a new one instead of reusing it."""


# --- the Stainless tree -----------------------------------------------------------------------


class APIError(IdentityError):
    """Talking to Supabase went wrong: an error answer, no answer, or an unexpected answer."""


class APIStatusError(APIError):
    """Supabase answered with an error; ``status_code`` and ``code`` say which.

    Raised for any non-2xx answer that no subclass describes more precisely.
    """


class DataRejectedError(APIStatusError, ValidationError):
    """The database rejected a value (HTTP 400 or 413, SQLSTATE 22xxx, 23502, 23503, 23514)."""


class AuthenticationError(APIStatusError):
    """The key or token was rejected (invalid signature, expired, missing)."""


class PermissionDeniedError(APIStatusError):
    """The caller's role may not do this (RLS or grants).

    Also raised before any request (``status_code`` ``None``) when the client holds a public or
    user-scoped key and is asked to write: the answer is known in advance.
    """


class NotFoundError(APIStatusError, LookupError):
    """The requested user or conversation does not exist, or the caller cannot see it."""


class ConflictError(APIStatusError):
    """The request conflicts with existing data (HTTP 409, SQLSTATE 23505)."""


class RateLimitError(APIStatusError, BackendUnavailableError):
    """HTTP 429: too many requests; retried with backoff before it is raised."""


class InternalServerError(APIStatusError, BackendUnavailableError):
    """HTTP 5xx: the gateway, PostgREST or Postgres failed; retried before it is raised."""


class SchemaNotExposedError(APIStatusError, ConfigError):
    """PostgREST does not expose the ``identity`` schema (PGRST106)."""


class MigrationsNotAppliedError(APIStatusError, ConfigError):
    """A table or SQL function the package needs is missing (PGRST202/PGRST205)."""


class EndpointNotFoundError(APIStatusError, ConfigError):
    """A 404 without a PostgREST error: the URL does not lead to a Supabase API."""


class APIConnectionError(APIError, BackendUnavailableError):
    """No answer: the connection was refused or reset, DNS failed, or the protocol broke."""


class APITimeoutError(APIConnectionError):
    """No answer in time (the client's timeout), or the gateway answered 408."""


class APIResponseValidationError(APIError):
    """A 2xx response whose body does not match the database contract this version expects."""


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
) -> APIError:
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
    by_code = _BY_CODE.get(code or "")
    if by_code is not None:
        return by_code(message, **kw)
    if code is not None and code.startswith("22"):
        return DataRejectedError(message, **kw)
    if status_code == 404 and code is None:
        kw["hint"] = (
            "The gateway answered 404 without a PostgREST error: check that SUPABASE_URL is "
            "the project's API URL (https://<ref>.supabase.co, or http://127.0.0.1:54321)."
        )
        return EndpointNotFoundError(message, **kw)
    if status_code == 413:
        return DataRejectedError(f"Request body too large: {message}", **kw)
    cls = _BY_STATUS.get(status_code)
    if cls is DataRejectedError and code is not None and code.startswith("PGRST"):
        # A 400 with another PostgREST code (e.g. PGRST100, a query it cannot parse): the request
        # was built wrong, which says nothing about the data.
        cls = APIStatusError
    if cls is None:
        cls = InternalServerError if status_code >= 500 else APIStatusError
    return cls(message, **kw)


#: PostgREST and SQLSTATE codes that decide the class whatever the HTTP status.
_BY_CODE: dict[str, type[APIStatusError]] = {
    "PGRST301": AuthenticationError,
    "PGRST302": AuthenticationError,
    "PGRST303": AuthenticationError,
    "42501": PermissionDeniedError,
    "PGRST116": NotFoundError,
    "23505": ConflictError,
    "23502": DataRejectedError,
    "23503": DataRejectedError,
    "23514": DataRejectedError,
    "PGRST102": DataRejectedError,  # the request body is not valid JSON
}

_BY_STATUS: dict[int, type[APIError]] = {
    400: DataRejectedError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: APITimeoutError,
    409: ConflictError,
    429: RateLimitError,
}
