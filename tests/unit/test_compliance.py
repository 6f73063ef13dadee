"""Webhook signatures and the audit's keyed hash (no I/O)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from supabase_identity import ConfigError, IdentityClient, Settings, load_settings
from supabase_identity._compliance import (
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


def test_the_audit_key_is_its_own_variable_else_the_first_shopify_secret() -> None:
    both = {"IDENTITY_AUDIT_KEY": "k", "SHOPIFY_API_SECRET": "s"}
    assert _key(load_settings(environ=both, env_dir="/nonexistent")) == "k"
    rotation = {"SHOPIFY_API_SECRET": " s1 , s2"}
    assert _key(load_settings(environ=rotation, env_dir="/nonexistent")) == "s1"
    assert load_settings(environ={}, env_dir="/nonexistent").audit_key is None


def test_redact_shop_without_an_audit_key_is_a_config_error_before_any_request() -> None:
    env = {"SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_SERVICE_ROLE_KEY": "sb_secret_x"}
    with (
        IdentityClient(environ=env, env_dir="/nonexistent", redis_url=None) as client,
        pytest.raises(ConfigError, match="IDENTITY_AUDIT_KEY"),
    ):
        client.redact_shop("a.myshopify.com")


def _key(settings: Settings) -> str | None:
    return None if settings.audit_key is None else settings.audit_key.get_secret_value()


def test_shop_hash_is_keyed_and_never_the_domain() -> None:
    hashed = shop_hash(b"k", "a.myshopify.com")
    assert len(hashed) == 64 and "myshopify" not in hashed
    assert hashed != shop_hash(b"other", "a.myshopify.com")
    assert hashed != hashlib.sha256(b"a.myshopify.com").hexdigest(), "unkeyed would be guessable"
