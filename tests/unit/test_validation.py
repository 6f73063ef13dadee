"""Argument validation: every rule, table-driven, with the field and rule reported."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from supabase_identity import (
    ValidationError,
    conversation_uuid,
    normalize_shop_domain,
    validate_event_data,
    validate_event_type,
    validate_user_id,
)
from supabase_identity._base_client import decode_cursor, encode_cursor
from supabase_identity._validation import validate_optional_text, validate_page


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("cool-shop.myshopify.com", "cool-shop.myshopify.com"),
        ("  Cool-Shop.MYSHOPIFY.com  ", "cool-shop.myshopify.com"),
        ("https://cool-shop.myshopify.com/", "cool-shop.myshopify.com"),
        ("HTTP://cool-shop.myshopify.com//", "cool-shop.myshopify.com"),
        ("a.myshopify.com", "a.myshopify.com"),
        ("0shop.myshopify.com", "0shop.myshopify.com"),
        ("x" * 63 + ".myshopify.com", "x" * 63 + ".myshopify.com"),
    ],
)
def test_shop_domain_normalization(raw: str, expected: str) -> None:
    assert normalize_shop_domain(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "cool-shop",
        "cool-shop.com",
        "-shop.myshopify.com",
        "shop.myshopify.com.evil.com",
        "evil.com/shop.myshopify.com",
        "shop.myshopify.com/admin",
        "shop.myshopify.com:443",
        "sub.shop.myshopify.com",
        "sh op.myshopify.com",
        "shop_1.myshopify.com",
        "ftp://shop.myshopify.com",
        "x" * 64 + ".myshopify.com",
        ".myshopify.com",
    ],
)
def test_invalid_shop_domains_name_value_and_rule(raw: str) -> None:
    with pytest.raises(ValidationError) as info:
        normalize_shop_domain(raw)
    assert info.value.field == "shop_domain"
    assert info.value.rule == "myshopify_domain"
    assert "<name>.myshopify.com" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_shop_domain_must_be_a_string() -> None:
    with pytest.raises(ValidationError) as info:
        normalize_shop_domain(42)  # type: ignore[arg-type]
    assert info.value.rule == "type"


@pytest.mark.parametrize("good", ["usr_0123456789abcdef", "usr_" + "a" * 46])
def test_valid_user_ids(good: str) -> None:
    assert validate_user_id(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "usr_",
        "usr_short",
        "USR_0123456789abcdef",
        "usr_0123456789ABCDEF",
        "usr_" + "a" * 47,
        "user_0123456789abcdef",
        "usr_0123456789abcde-",
        None,
        12,
    ],
)
def test_invalid_user_ids(bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        validate_user_id(bad)
    assert (info.value.field, info.value.rule) == ("user_id", "usr_id_format")


@pytest.mark.parametrize("good", ["oauth_complete", "a", "page.view:v2-x", "a" + "b" * 99])
def test_valid_event_types(good: str) -> None:
    assert validate_event_type(good) == good


@pytest.mark.parametrize(
    ("bad", "rule"),
    [
        ("", "event_type_format"),
        ("OAuth", "event_type_format"),
        ("1st", "event_type_format"),
        ("with space", "event_type_format"),
        ("emoji_😀", "event_type_format"),
        ("a" * 101, "max_length"),
        (None, "type"),
    ],
)
def test_invalid_event_types(bad: Any, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_event_type(bad)
    assert (info.value.field, info.value.rule) == ("event_type", rule)


class _Unserializable:
    pass


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        ({"x": float("nan")}, "json_serializable"),
        ({"x": float("inf")}, "json_serializable"),
        ({"x": _Unserializable()}, "json_serializable"),
        ({"when": datetime.now(UTC)}, "json_serializable"),
        ({"x": "\ud800"}, "unicode"),
        ({"x": "nul\x00byte"}, "no_nul"),
        ({"nul\x00key": 1}, "no_nul"),
        ({1: "int key"}, "string_keys"),
        (["not", "an", "object"], "json_object"),
        ({"big": "x" * (32 * 1024)}, "max_bytes"),
    ],
)
def test_invalid_event_data(data: Any, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_event_data(data)
    assert (info.value.field, info.value.rule) == ("event_data", rule)


def test_event_data_is_detached_and_size_counts_utf8_bytes() -> None:
    original: dict[str, Any] = {"nested": {"n": 1}, "list": [1, 2]}
    copy = validate_event_data(original)
    original["nested"]["n"] = 2
    assert copy == {"nested": {"n": 1}, "list": [1, 2]}
    assert validate_event_data(None) == {}
    # 16,000 two-byte characters are 32,000 bytes plus the JSON wrapper: within the limit
    assert validate_event_data({"s": "é" * 16_000})["s"] == "é" * 16_000
    with pytest.raises(ValidationError):
        validate_event_data({"s": "é" * 16_400})


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("  ", None), (" a@b.c ", "a@b.c")])
def test_optional_text(value: str | None, expected: str | None) -> None:
    assert validate_optional_text(value, field="email", max_length=10) == expected


@pytest.mark.parametrize(
    ("value", "rule"), [("x" * 11, "max_length"), ("a\x00b", "no_nul"), (5, "type")]
)
def test_optional_text_rejects(value: Any, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_optional_text(value, field="email", max_length=10)
    assert (info.value.field, info.value.rule) == ("email", rule)


@pytest.mark.parametrize(
    ("limit", "offset", "field"),
    [
        (0, 0, "limit"),
        (101, 0, "limit"),
        (True, 0, "limit"),
        (10, -1, "offset"),
        (1, 1.5, "offset"),
    ],
)
def test_page_bounds(limit: Any, offset: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_page(limit, offset)
    assert info.value.field == field


def test_page_bounds_accept_the_edges() -> None:
    assert validate_page(1, 0) == (1, 0)
    assert validate_page(100, 10**6) == (100, 10**6)


def test_conversation_uuid_keeps_uuids_and_derives_the_rest() -> None:
    real = uuid.uuid4()
    assert conversation_uuid(real) is real
    assert conversation_uuid(str(real)) == real
    derived = conversation_uuid("conv_123")
    assert derived == uuid.uuid5(uuid.NAMESPACE_URL, "supabase-identity:conversation:conv_123")
    assert derived.version == 5
    assert conversation_uuid("conv_123") == derived
    assert conversation_uuid("conv_124") != derived
    with pytest.raises(ValidationError):
        conversation_uuid("")


def test_cursor_round_trip_and_garbage() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    conv = uuid.uuid4()
    assert decode_cursor(encode_cursor(when, conv)) == (when, conv)
    # The last one decodes to ["2026-01-01T00:00:00+00:00", 5]: well-formed JSON, wrong types.
    wrong_types = base64.urlsafe_b64encode(b'["2026-01-01T00:00:00+00:00", 5]').decode()
    for bad in ["", "not-base64!", "WzEsMl0", encode_cursor(when, conv)[:-3], wrong_types]:
        with pytest.raises(ValidationError) as info:
            decode_cursor(bad)
        assert info.value.field == "cursor"
