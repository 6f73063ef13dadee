"""Shopify compliance without I/O: webhook signatures and the audit's keyed shop hash.

Shopify signs each webhook with the app's API secret: ``X-Shopify-Hmac-Sha256`` is the base64
HMAC-SHA256 of the raw request body. ``SHOPIFY_API_SECRET`` may hold several secrets separated
by commas, so a secret can be rotated without refusing the webhooks signed with the old one.

The compliance audit names a shop by a keyed hash (HMAC-SHA256 of the normalized domain), so
the audit table holds no personal data and the hash cannot be reversed by hashing guessed
domains without the key. The key is ``IDENTITY_AUDIT_KEY``, or else the first secret of
``SHOPIFY_API_SECRET`` (set ``IDENTITY_AUDIT_KEY`` to keep hashes stable across rotations).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from typing import Final

__all__ = [
    "SHOPIFY_SECRET_ENV",
    "shop_hash",
    "shopify_secrets",
    "verify_shopify_hmac",
]

SHOPIFY_SECRET_ENV: Final = "SHOPIFY_API_SECRET"  # noqa: S105  # a variable name


def shopify_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The secrets in ``SHOPIFY_API_SECRET`` (comma-separated, blanks ignored), in order."""
    env = os.environ if environ is None else environ
    return [part.strip() for part in env.get(SHOPIFY_SECRET_ENV, "").split(",") if part.strip()]


def shop_hash(key: bytes, shop_domain: str) -> str:
    """Hex HMAC-SHA256 of a normalized shop domain under ``key`` (what the audit stores)."""
    return hmac.new(key, shop_domain.encode("utf-8"), hashlib.sha256).hexdigest()


def verify_shopify_hmac(body: bytes, header: str | None, secrets: Sequence[str]) -> bool:
    """Whether ``header`` is the base64 HMAC-SHA256 of ``body`` under one of ``secrets``.

    Each comparison is constant-time (``hmac.compare_digest``) and every secret is tried, so the
    time taken does not say which one matched. A missing, empty or non-base64 header is False.
    """
    if not header or not secrets:
        return False
    try:
        given = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    matched = False
    for secret in secrets:
        expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
        matched |= hmac.compare_digest(expected, given)
    return matched
