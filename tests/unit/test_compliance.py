"""Webhook signatures and the audit's keyed hash (no I/O)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from supabase_identity import ConfigError
from supabase_identity._compliance import (
    audit_key,
    shop_hash,
    shopify_secrets,
    verify_shopify_hmac,
)

BODY = b'{"shop_id":1,"shop_domain":"a.myshopify.com"}'


def signature(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_only_a_signature_of_this_body_under_a_listed_secret_verifies() -> None:
    secrets = shopify_secrets({"SHOPIFY_API_SECRET": " new , old ,"})
    assert secrets == ["new", "old"]
    assert verify_shopify_hmac(BODY, signature(BODY, "new"), secrets)
    assert verify_shopify_hmac(BODY, signature(BODY, "old"), secrets), "rotation: old secret"
    assert not verify_shopify_hmac(BODY, signature(BODY, "other"), secrets)
    assert not verify_shopify_hmac(BODY + b" ", signature(BODY, "new"), secrets)
    assert not verify_shopify_hmac(BODY, "", secrets)
    assert not verify_shopify_hmac(BODY, None, secrets)
    assert not verify_shopify_hmac(BODY, "%%%not base64%%%", secrets)
    assert not verify_shopify_hmac(BODY, signature(BODY, "new"), []), "no secret: nothing passes"


def test_audit_key_prefers_its_own_variable_then_the_first_secret() -> None:
    assert audit_key({"IDENTITY_AUDIT_KEY": "k", "SHOPIFY_API_SECRET": "s"}) == b"k"
    assert audit_key({"SHOPIFY_API_SECRET": "s1,s2"}) == b"s1"
    with pytest.raises(ConfigError, match="IDENTITY_AUDIT_KEY"):
        audit_key({})


def test_shop_hash_is_keyed_and_never_the_domain() -> None:
    hashed = shop_hash(b"k", "a.myshopify.com")
    assert len(hashed) == 64 and "myshopify" not in hashed
    assert hashed != shop_hash(b"other", "a.myshopify.com")
    assert hashed != hashlib.sha256(b"a.myshopify.com").hexdigest(), "unkeyed would be guessable"
