"""build_row: what the archiver makes of the Redis data it finds, malformed cases included."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone

import pytest

from supabase_identity._constants import MAX_JSON_DEPTH
from supabase_identity.archive._rows import (
    RawConversation,
    build_row,
    load_json,
    parse_timestamp,
    row_identity,
    shop_from_merchant,
)
from supabase_identity.archive._types import MAX_NAMED, ArchiveReport

CID = "6f1c1f4e-2b7a-4c55-9a55-0c2b3b1f4d10"


Fields = Mapping[bytes | str, bytes | str]


def raw(
    messages: list[tuple[int, Fields | bytes | str]],
    conversation: Fields | None = None,
    session: Fields | None = None,
    cid: str = CID,
    user_id: str | None = None,
) -> RawConversation:
    return RawConversation(cid, conversation or {}, session or {}, messages, user_id=user_id)


def msg(content: str, ts: str, **extra: str) -> Fields:
    fields: dict[bytes | str, bytes | str] = {"sender": "user", "content": content, "timestamp": ts}
    fields.update(extra)
    return fields


def test_messages_ordered_by_timestamp_then_sequence() -> None:
    row, issues = build_row(
        raw(
            [
                (0, msg("b", "2026-01-01T10:00:02+00:00")),
                (1, msg("a", "2026-01-01T10:00:01+00:00")),
                (2, msg("c", "2026-01-01T10:00:02+00:00")),
            ]
        )
    )
    assert [m["content"] for m in row["messages"]] == ["a", "b", "c"]
    assert [m["seq"] for m in row["messages"]] == [1, 0, 2]
    assert issues == []


def test_missing_timestamp_keeps_its_place_after_predecessor_and_is_reported() -> None:
    row, issues = build_row(
        raw(
            [
                (0, msg("first", "2026-01-01T10:00:00Z")),
                (1, {"sender": "cj", "content": "no stamp"}),
                (2, msg("third", "2026-01-01T10:00:05Z")),
            ]
        )
    )
    assert [m["content"] for m in row["messages"]] == ["first", "no stamp", "third"]
    assert any("message 1" in i and "timestamp" in i for i in issues)
    assert row["metadata"]["archive"]["issues"] == issues


def test_nul_characters_are_removed_everywhere_and_reported() -> None:
    row, issues = build_row(
        raw([(0, msg("he\x00llo", "2026-01-01T10:00:00Z", **{"ke\x00y": "v"}))])
    )
    text = json.dumps(row)
    assert "\\u0000" not in text
    assert row["messages"][0]["content"] == "hello"
    assert "key" in row["messages"][0]
    assert any("NUL" in i for i in issues)


def test_bad_json_message_string_is_kept_raw() -> None:
    row, issues = build_row(
        raw([(0, '{"content": "cut off'), (1, json.dumps(msg("ok", "2026-01-01T00:00:00Z")))])
    )
    contents = [m.get("content", m.get("raw")) for m in row["messages"]]
    assert '{"content": "cut off' in contents and "ok" in contents
    assert any("not JSON" in i for i in issues)


def test_invalid_utf8_bytes_are_replaced_not_fatal() -> None:
    row, issues = build_row(
        raw([(0, {b"content": b"caf\xe9", b"timestamp": b"2026-01-01T00:00:00Z"})])
    )
    assert row["messages"][0]["content"] == "caf\ufffd"
    assert any("UTF-8" in i for i in issues)


def test_huge_field_is_truncated_to_limit() -> None:
    big = "x" * 5000
    row, issues = build_row(raw([(0, msg(big, "2026-01-01T00:00:00Z"))]), max_field_bytes=1000)
    assert len(row["messages"][0]["content"].encode()) == 1000
    assert any("truncated" in i for i in issues)


def test_non_uuid_id_maps_to_deterministic_uuid_and_keeps_source_id() -> None:
    first, _ = build_row(raw([], cid="conv-123"))
    second, _ = build_row(raw([], cid="conv-123"))
    assert first["id"] == second["id"]
    assert uuid.UUID(first["id"]).version == 5
    assert first["source_id"] == "conv-123"
    canonical, _ = build_row(raw([], cid=CID))
    assert canonical["id"] == CID and canonical["source_id"] is None


def test_started_at_falls_back_to_first_message_and_never_missing() -> None:
    row, _ = build_row(raw([(0, msg("a", "2026-02-03T04:05:06Z"))]))
    assert row["started_at"] == "2026-02-03T04:05:06+00:00"
    fixed = datetime(2026, 5, 5, tzinfo=UTC)
    empty, _ = build_row(raw([]), now=fixed)
    assert empty["started_at"] == fixed.isoformat()


def test_session_fields_win_and_unknown_conversation_fields_go_to_metadata() -> None:
    row, _ = build_row(
        raw(
            [],
            conversation={"workflow": "w-conv", "merchant_id": "m-conv", "custom": "1"},
            session={"workflow_name": "w-sess", "merchant_id": "m-sess", "started_at": "bad"},
        )
    )
    assert row["workflow_name"] == "w-sess"
    assert row["merchant_id"] == "m-sess"
    assert row["metadata"]["redis"] == {"custom": "1"}
    assert any("started_at" in i for i in row["metadata"]["archive"]["issues"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00", datetime(2026, 1, 1, tzinfo=UTC)),
        ("1767225600", datetime(2026, 1, 1, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_timestamp(value: str | None, expected: datetime | None) -> None:
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize(
    ("merchant", "shop"),
    [
        ("merchant_cool-shop", "cool-shop.myshopify.com"),
        ("Cool-Shop.myshopify.com", "cool-shop.myshopify.com"),
        ("merchant_", None),
        ("someone", None),
        (None, None),
    ],
)
def test_shop_from_merchant(merchant: str | None, shop: str | None) -> None:
    assert shop_from_merchant(merchant) == shop


def test_non_finite_numbers_in_json_messages_become_null() -> None:
    row, issues = build_row(raw([(0, '{"content": "x", "score": 1e999, "low": -1e999}')]))
    assert row["messages"][0]["score"] is None and row["messages"][0]["low"] is None
    json.dumps(row, allow_nan=False)  # what the client sends: must not raise
    assert any("inf replaced by null" in i for i in issues)


@pytest.mark.parametrize("rows", [0, 1001])
def test_batch_rows_is_bounded_by_postgrest_max_rows(rows: int) -> None:
    from supabase_identity import ArchiverConfig, ValidationError

    with pytest.raises(ValidationError, match="batch_rows"):
        ArchiverConfig(batch_rows=rows)


@pytest.mark.parametrize("depth", [33, 900, 100_000])
def test_a_message_of_deeply_nested_json_is_kept_as_raw_text(depth: int) -> None:
    """Hostile JSON in Redis is set aside within its message; the row still builds and encodes."""
    deep = "[" * depth + "]" * depth
    row, issues = build_row(
        raw(
            [
                (0, msg("ok", "2026-01-01T10:00:00Z")),
                (1, json.dumps({"x": 1})[:-1] + f',"d":{deep}}}'),
            ]
        )
    )
    assert row["messages"][1]["raw"].endswith("]" * 10 + "}")
    assert any("message 1" in issue and "kept as raw text" in issue for issue in issues)
    assert json.dumps(row)  # nothing left that the encoder cannot handle


# --- hostile values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["[" * 498 + "]" * 498, '{"a":' * 1000 + "1" + "}" * 1000, "[" * 100_000]
)
def test_json_nested_too_deep_is_kept_as_text_not_a_recursion_error(text: str) -> None:
    row, issues = build_row(raw([(0, text)]))
    assert row["messages"][0]["raw"] == text
    assert any(f"nested deeper than {MAX_JSON_DEPTH}" in issue for issue in issues)
    with pytest.raises(ValueError, match="nested deeper"):
        load_json(text)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"content": "[" * 500 + "\\" + '"'})
    assert load_json(text) == {"content": "[" * 500 + "\\" + '"'}


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("9999-12-31T23:00:00-05:00", "9999-12-30T00:00:00+00:00"),
        ("0001-01-01T00:00:00+00:30", "0001-01-02T00:00:00+00:00"),
        ("2026-01-01T00:00:00-23:59", "2026-01-01T23:59:00+00:00"),
    ],
)
def test_timestamps_are_stored_in_utc_within_years_1_to_9999(given: str, stored: str) -> None:
    row, issues = build_row(raw([], session={"started_at": given}))
    assert row["started_at"] == stored
    assert any(issue.startswith("started_at") for issue in issues)


def test_an_ordinary_offset_is_converted_to_utc_without_an_issue() -> None:
    row, issues = build_row(raw([], session={"started_at": "2026-05-01T10:00:00+02:00"}))
    assert row["started_at"] == "2026-05-01T08:00:00+00:00"
    assert issues == []


def test_columns_are_cut_to_their_limits_with_an_issue() -> None:
    row, issues = build_row(raw([], session={"workflow_name": "w" * 300, "merchant_id": "m" * 256}))
    assert row["workflow_name"] == "w" * 255 and row["merchant_id"] == "m" * 255
    assert "workflow_name of 300 characters cut to 255" in issues
    assert "merchant_id of 256 characters cut to 255" in issues


@pytest.mark.parametrize("user_id", ["usr_\x00abc", "usr_" + "a" * (4 * 1024 * 1024), "a b"])
def test_a_value_that_cannot_be_a_user_id_is_left_unlinked_with_an_issue(user_id: str) -> None:
    row, issues = build_row(raw([], user_id=user_id))
    assert row["user_id"] is None
    assert any("is not a user id" in issue for issue in issues)
    assert all(len(issue) < 200 for issue in issues)


def test_only_a_canonical_uuid_is_its_own_row_id() -> None:
    assert row_identity(CID) == (CID, None)
    spellings = [CID.upper(), "{" + CID + "}", "urn:uuid:" + CID, CID.replace("-", "")]
    ids = {row_identity(s)[0] for s in spellings}
    assert len(ids) == len(spellings) and CID not in ids
    assert [row_identity(s)[1] for s in spellings] == spellings


def test_an_id_longer_than_the_column_keeps_a_distinct_cut_source_id() -> None:
    first, second = "c" * 600 + "1", "c" * 600 + "2"
    (id1, src1), (id2, src2) = row_identity(first), row_identity(second)
    assert id1 != id2 and src1 != src2
    assert src1 is not None and len(src1) <= 512 and src1.startswith("c" * 400)
    row, issues = build_row(raw([], cid=first))
    assert row["source_id"] == src1
    assert "conversation id of 601 characters kept cut in source_id" in issues


def test_the_expiry_read_from_redis_is_kept_in_metadata_as_utc_iso() -> None:
    conversation = raw([(0, msg("hi", "2026-01-01T10:00:00Z"))])
    paris = datetime(2026, 1, 1, 13, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=1)))
    conversation.expires_at = paris
    row, _ = build_row(conversation)
    stored = row["metadata"]["archive"]["expires_at"]
    assert stored == "2026-01-01T12:00:00.250+00:00"
    assert datetime.fromisoformat(stored) == paris


def test_a_key_without_ttl_records_no_expiry() -> None:
    row, _ = build_row(raw([(0, msg("hi", "2026-01-01T10:00:00Z"))]))
    assert "expires_at" not in row["metadata"]["archive"]


def test_a_report_names_at_most_max_named_conversations_and_counts_all() -> None:
    first, second = ArchiveReport(), ArchiveReport()
    for n in range(MAX_NAMED + 500):
        first.add_failure(f"f{n}", "rejected")
        first.add_issues(f"i{n}", ["cut"])
    first.add_failure("f0", "rejected again")  # the same conversation counts once
    second.add_failure("other", "rejected")
    second.archived = 3

    first.merge(second)

    assert first.failed_count == MAX_NAMED + 501 and len(first.failed) == MAX_NAMED
    assert first.failed["f0"] == "rejected again"
    assert first.repaired_count == MAX_NAMED + 500 and len(first.issues) == MAX_NAMED
    assert first.done == 3 + MAX_NAMED + 501
    assert "other" not in first.failed  # full: counted, not named
