"""API keys and user-scoped tokens: what privilege a key carries, how to show it, how to mint.

Supabase has two families of keys:

* legacy JWT keys (``eyJ…``), whose ``role`` claim (``anon`` or ``service_role``) says what they
  may do. The claim is read *without* verifying the signature: the server verifies; the client
  only needs to know which privilege it holds to refuse writes early with a clear message.
* new opaque keys: ``sb_publishable_…`` (public, anon privilege) and ``sb_secret_…`` (service
  privilege). The gateway swaps them for the matching JWT.

A key or token is never shown in full: :func:`redact` keeps at most the first 12 characters,
and :func:`scrub` redacts anything in a message that looks like a key, a token or a URL password,
for text the package did not write itself (server errors, exception messages).
"""

from __future__ import annotations

import enum
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from ._constants import MIN_JWT_SECRET_BYTES, REDACTED_KEY_PREFIX_LENGTH, USER_SUBJECT_PREFIX
from ._exceptions import ValidationError
from ._validation import validate_text, validate_user_id

__all__ = [
    "KeyInfo",
    "Privilege",
    "classify_key",
    "mint_user_token",
    "redact",
    "scrub",
    "user_subject",
]


class Privilege(enum.StrEnum):
    """What a key or token may do against the ``identity`` schema."""

    SERVICE = "service"
    """service_role: every read and write the package performs."""
    PUBLIC = "public"
    """anon / publishable: nothing in ``identity`` (the key ships in browsers and apps)."""
    USER = "user"
    """authenticated: reads of one user's own rows, no writes."""
    UNKNOWN = "unknown"
    """A key this package cannot classify; the server decides."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """Classification of a key: its family, its privilege and, for JWTs, its claims' role."""

    kind: str
    """``"jwt"``, ``"publishable"``, ``"secret"`` or ``"opaque"``."""
    privilege: Privilege
    role: str | None = None


_ROLE_PRIVILEGE = {
    "service_role": Privilege.SERVICE,
    "anon": Privilege.PUBLIC,
    "authenticated": Privilege.USER,
}


def classify_key(key: str) -> KeyInfo:
    """Tell which privilege ``key`` (an API key or an access token) carries, without a request."""
    if not isinstance(key, str):
        raise ValidationError(
            f"key must be a string, got {type(key).__name__}", field="key", rule="type"
        )
    if key.startswith("sb_secret_"):
        return KeyInfo("secret", Privilege.SERVICE)
    if key.startswith("sb_publishable_"):
        return KeyInfo("publishable", Privilege.PUBLIC)
    if key.count(".") == 2:
        try:
            claims: dict[str, Any] = jwt.decode(key, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError):  # ValueError: text that is not even ASCII
            return KeyInfo("opaque", Privilege.UNKNOWN)
        role = claims.get("role")
        role_str = role if isinstance(role, str) else None
        return KeyInfo("jwt", _ROLE_PRIVILEGE.get(role_str or "", Privilege.UNKNOWN), role_str)
    return KeyInfo("opaque", Privilege.UNKNOWN)


def redact(secret: str | None) -> str:
    """Return a form of ``secret`` that is safe to print: its first 12 characters and ``…``."""
    if not secret:
        return "<none>"
    if len(secret) <= REDACTED_KEY_PREFIX_LENGTH:
        return "…"
    return secret[:REDACTED_KEY_PREFIX_LENGTH] + "…"


def user_subject(user_id: str) -> str:
    """The JWT ``sub`` for a ``usr_…`` id: a deterministic UUIDv5 (Supabase expects a UUID)."""
    validate_user_id(user_id)
    return str(uuid.uuid5(uuid.NAMESPACE_URL, USER_SUBJECT_PREFIX + user_id))


def mint_user_token(user_id: str, jwt_secret: str, *, ttl: int, now: float | None = None) -> str:
    """Sign a short-lived ``authenticated`` token for ``user_id`` with the project's JWT secret.

    The claims are what the RLS policies read: ``app_metadata.user_id`` (server-controlled in
    Supabase Auth, unlike ``user_metadata``), plus ``role``/``aud`` for PostgREST.
    """
    validate_user_id(user_id)
    validate_text(jwt_secret, field="jwt_secret", required=True)
    if len(jwt_secret.encode("utf-8")) < MIN_JWT_SECRET_BYTES:
        raise ValidationError(
            f"jwt_secret is shorter than {MIN_JWT_SECRET_BYTES} bytes; a Supabase project's JWT "
            "secret is at least that long (Dashboard → Project Settings → API → JWT secret)",
            field="jwt_secret",
            rule="min_length",
        )
    issued = int(time.time() if now is None else now)
    claims = {
        "role": "authenticated",
        "aud": "authenticated",
        "sub": user_subject(user_id),
        "app_metadata": {"user_id": user_id},
        "iat": issued,
        "exp": issued + ttl,
    }
    return jwt.encode(claims, jwt_secret, algorithm="HS256")


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of ``token`` (unverified), or ``None`` if it has none."""
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError):
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else None


#: What a secret looks like inside arbitrary text: a JWT (its header always starts ``eyJ``,
#: base64 of ``{"``), a new-style API key, a ``user:password@`` in a URL, a secret query
#: parameter. Matching errs on the side of redacting.
_SECRET_SHAPES = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
    r"|sb_(?:secret|publishable)_[A-Za-z0-9_-]+"
)
_URL_USERINFO = re.compile(r"(?<=://)[^/\s@]*@")
_SECRET_PARAMETER = re.compile(
    r"(?i)\b(apikey|api_key|key|token|access_token|refresh_token|password|secret)=[^&\s#]+"
)


def scrub(text: str) -> str:
    """Redact every key, JWT, URL password and secret query parameter found in ``text``."""
    text = _SECRET_SHAPES.sub(lambda found: redact(found.group()), text)
    text = _URL_USERINFO.sub("***@", text)
    return _SECRET_PARAMETER.sub(lambda found: found.group(1) + "=***", text)
