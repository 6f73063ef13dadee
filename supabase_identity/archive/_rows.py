"""Turning what Redis holds into a row for ``identity.archive_conversations``: pure functions.

Redis data written by other services is not trusted. Everything here accepts what it finds (bytes
or str, missing fields, bad JSON, NUL characters Postgres rejects in ``jsonb``, huge values) and
returns the best row it can build plus a list of *issues*: human-readable notes of what was
repaired or left out. Issues are stored in the row's ``metadata.archive.issues`` and reported,
so nothing is dropped silently and nothing crashes the archiver's loop.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from .._constants import CONVERSATION_UUID_PREFIX, MAX_CONVERSATION_ID_LENGTH, MAX_JSON_DEPTH
from .._validation import is_canonical_uuid

__all__ = [
    "RawConversation",
    "build_row",
    "decode",
    "load_json",
    "parse_timestamp",
    "row_identity",
    "shop_from_merchant",
    "usable_user_id",
]

#: A message field longer than this (UTF-8 bytes) is truncated, with an issue recorded.
DEFAULT_MAX_FIELD_BYTES: Final = 256 * 1024
#: Longest text the ``merchant_id`` and ``workflow_name`` columns take (their CHECK constraints).
MAX_COLUMN_CHARS: Final = 255
#: What a user id from Redis must look like before it is sent (the database checks the rest).
_USABLE_USER_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
#: Timestamps are kept inside a range both Postgres and Python's datetime can read back (a UTC
#: instant near year 1 or 9999 can become year 0 or 10000 in another offset).
EARLIEST: Final = datetime(1, 1, 2, tzinfo=UTC)
LATEST: Final = datetime(9999, 12, 30, tzinfo=UTC)
_MAX_POSTGRES_OFFSET: Final = timedelta(hours=15, minutes=59, seconds=59)
#: Conversation fields that map to columns; the rest of the hash goes to metadata.redis.
_COLUMN_FIELDS: Final = frozenset(
    {
        "id",
        "user_id",
        "merchant_id",
        "workflow_name",
        "workflow",
        "started_at",
        "ended_at",
        "message_count",
        "archived",
        "archived_count",
        "archived_at",
    }
)


def decode(value: bytes | str, issues: list[str], where: str) -> str:
    """Return ``value`` as text; undecodable bytes become U+FFFD and an issue is recorded."""
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        issues.append(f"{where}: invalid UTF-8 replaced")
        return value.decode("utf-8", errors="replace")


def _clean(
    text: str, issues: list[str], where: str, max_bytes: int, *, from_json: bool = False
) -> str:
    """Make one string storable in jsonb: no NUL, at most ``max_bytes``, valid UTF-8.

    Hot path of the archiver (every field of every message): the common case costs two scans
    of the string and no encoding. Only strings from ``json.loads`` can hold lone surrogates
    (UTF-8 decoding never produces them), so only those are checked for them.
    """
    if "\x00" in text:
        issues.append(f"{where}: NUL characters removed (Postgres jsonb rejects them)")
        text = text.replace("\x00", "")
    if len(text) * 4 > max_bytes:  # a character is at most 4 bytes: only then can it be too long
        encoded = text.encode("utf-8", errors="surrogatepass")
        if len(encoded) > max_bytes:
            issues.append(f"{where}: {len(encoded)} bytes truncated to {max_bytes}")
            text = encoded[:max_bytes].decode("utf-8", errors="ignore")
    if from_json:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            issues.append(f"{where}: invalid surrogate characters replaced")
            text = text.encode("utf-8", errors="replace").decode("utf-8")
    return text


class _TooDeep(ValueError):
    """JSON nested deeper than :data:`MAX_JSON_DEPTH`."""


def load_json(text: str | bytes) -> Any:
    """``json.loads`` that refuses nesting deeper than :data:`MAX_JSON_DEPTH` with ``ValueError``.

    The depth is measured before parsing (brackets outside strings), so a value nested thousands
    deep never reaches the recursive parser (which would raise ``RecursionError``).
    """
    depth = 0
    in_string = escaped = False
    raw = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
    if raw.count("[") + raw.count("{") > MAX_JSON_DEPTH:  # cheap test first: most values pass
        for char in raw:
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char in "[{":
                depth += 1
                if depth > MAX_JSON_DEPTH:
                    raise _TooDeep(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            elif char in "]}":
                depth -= 1
    try:
        return json.loads(raw)
    except RecursionError as err:  # pragma: no cover - prevented by the depth check above
        raise _TooDeep(str(err)) from None


def _clean_json(value: Any, issues: list[str], where: str, max_bytes: int) -> Any:
    """Sanitize every string (keys included) inside a JSON value from :func:`load_json`."""
    if isinstance(value, str):
        return _clean(value, issues, where, max_bytes, from_json=True)
    if isinstance(value, list):
        return [_clean_json(item, issues, where, max_bytes) for item in value]
    if isinstance(value, dict):
        return {
            _clean(str(key), issues, where, max_bytes, from_json=True): _clean_json(
                item, issues, where, max_bytes
            )
            for key, item in value.items()
        }
    if isinstance(value, float) and not math.isfinite(value):  # NaN and ±Infinity are not JSON
        issues.append(f"{where}: {value} replaced by null")
        return None
    return value


def parse_timestamp(value: str | None) -> datetime | None:
    """Parse an ISO-8601 timestamp (naive ones are taken as UTC); ``None`` when unparseable."""
    if not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = datetime.fromtimestamp(float(text), tz=UTC)
        except (ValueError, OverflowError, OSError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def storable_timestamp(value: datetime, issues: list[str], where: str) -> datetime:
    """``value`` in UTC, brought inside [:data:`EARLIEST`, :data:`LATEST`] (an issue if moved).

    Postgres accepts ``9999-12-31T23:00-05:00`` (year 10000 in UTC) and ``0001-01-01+00:30``
    (1 BC), but neither reads back into Python; an offset beyond ±15:59 is refused outright.
    Every stored instant is therefore UTC and within the range both sides share.
    """
    try:
        utc = value.astimezone(UTC)
        clamped = min(max(utc, EARLIEST), LATEST)
        moved = clamped != utc
    except OverflowError:  # beyond what datetime holds once in UTC: year 0 or 10000
        clamped, moved = (LATEST if value.year > 5000 else EARLIEST), True
    offset = value.utcoffset()
    if moved or (offset is not None and abs(offset) > _MAX_POSTGRES_OFFSET):
        issues.append(f"{where} {value.isoformat()} out of range; stored as {clamped.isoformat()}")
    return clamped


def usable_user_id(value: str | None, issues: list[str], where: str) -> str | None:
    """``value`` when it can be a user id; else ``None`` with an issue (the value cut to 64)."""
    if not value:
        return None
    if _USABLE_USER_ID.fullmatch(value):
        return value
    shown = value[:64].replace("\x00", "\\x00")
    issues.append(f"{where} {shown!r} ({len(value)} characters) is not a user id; left unlinked")
    return None


def row_identity(conversation_id: str) -> tuple[str, str | None]:
    """(row id, source id) of a Redis conversation id: distinct ids never share a row.

    Only a canonical UUID (lowercase, hyphenated) is its own row id; any other id (an uppercase
    or braced UUID included) maps to ``uuid5(NAMESPACE_URL, prefix + id)`` and is kept in
    ``source_id``. An id longer than the column (512) is kept cut, with a digest of the whole id
    so two long ids that share a prefix still differ (the row id hashes the whole id).
    """
    if is_canonical_uuid(conversation_id):
        return conversation_id, None
    row_id = str(uuid.uuid5(uuid.NAMESPACE_URL, CONVERSATION_UUID_PREFIX + conversation_id))
    source = conversation_id
    if len(source) > MAX_CONVERSATION_ID_LENGTH:
        digest = hashlib.sha256(source.encode("utf-8", errors="surrogatepass")).hexdigest()[:32]
        suffix = "…#sha256:" + digest
        source = source[: MAX_CONVERSATION_ID_LENGTH - len(suffix)] + suffix
    return row_id, source


def shop_from_merchant(merchant_id: str | None) -> str | None:
    """The shop domain a merchant id names (``merchant_cool-shop`` → ``cool-shop.myshopify.com``).

    The agents service builds merchant ids as ``merchant_<shop name>``; a merchant id that
    already is a shop domain is taken as is.
    """
    if not merchant_id:
        return None
    merchant = merchant_id.strip().lower()
    if merchant.endswith(".myshopify.com"):
        return merchant
    if merchant.startswith("merchant_") and len(merchant) > len("merchant_"):
        return f"{merchant[len('merchant_') :]}.myshopify.com"
    return None


@dataclass
class RawConversation:
    """What the archiver read from Redis for one conversation (values still raw)."""

    conversation_id: str
    conversation: Mapping[bytes | str, bytes | str]
    session: Mapping[bytes | str, bytes | str]
    #: (seq, fields) pairs; fields is a hash, or a string value that should hold JSON.
    messages: list[tuple[int, Mapping[bytes | str, bytes | str] | bytes | str]]
    user_id: str | None = None
    issues: list[str] = field(default_factory=list)
    #: When the Redis copy would have expired, from the key's TTL at read time (None: no TTL).
    expires_at: datetime | None = None


def _text_map(
    raw: Mapping[bytes | str, bytes | str], issues: list[str], where: str, max_bytes: int
) -> dict[str, str]:
    """A Redis hash as ``{str: str}``, sanitized; fast when (as nearly always) nothing is wrong."""
    try:
        text = {
            (k if isinstance(k, str) else k.decode()): (v if isinstance(v, str) else v.decode())
            for k, v in raw.items()
        }
    except UnicodeDecodeError:
        text = {decode(k, issues, where): decode(v, issues, where) for k, v in raw.items()}
    limit = max_bytes // 4
    if all("\x00" not in k and "\x00" not in v and len(v) <= limit for k, v in text.items()):
        return text
    return {
        _clean(k, issues, where, max_bytes): _clean(v, issues, where, max_bytes)
        for k, v in text.items()
    }


def _message_fields(
    seq: int,
    raw: Mapping[bytes | str, bytes | str] | bytes | str,
    issues: list[str],
    max_bytes: int,
) -> dict[str, Any]:
    where = f"message {seq}"
    if isinstance(raw, bytes | str):
        # Some writers store a message as one JSON string instead of a hash.
        text = decode(raw, issues, where)
        try:
            loaded = load_json(text)
        except _TooDeep:
            issues.append(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH}, kept as raw text")
            return {"raw": _clean(text, issues, where, max_bytes)}
        except ValueError:
            issues.append(f"{where}: not JSON, kept as raw text")
            return {"raw": _clean(text, issues, where, max_bytes)}
        if not isinstance(loaded, dict):
            issues.append(f"{where}: JSON {type(loaded).__name__}, kept under 'value'")
            loaded = {"value": loaded}
        cleaned: dict[str, Any] = _clean_json(loaded, issues, where, max_bytes)
        return cleaned
    return _text_map(raw, issues, where, max_bytes)


def _column(value: str | None, issues: list[str], name: str) -> str | None:
    """A text column cut to :data:`MAX_COLUMN_CHARS` (its CHECK constraint), with an issue."""
    if value is None or len(value) <= MAX_COLUMN_CHARS:
        return value
    issues.append(f"{name} of {len(value)} characters cut to {MAX_COLUMN_CHARS}")
    return value[:MAX_COLUMN_CHARS]


def build_row(
    raw: RawConversation,
    *,
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
    now: datetime | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Build the ``archive_conversations`` row for one conversation.

    Messages are ordered by timestamp, then sequence number. A message without a parseable
    timestamp keeps its place after the message before it (it inherits that timestamp for
    ordering) and gets an issue. ``started_at`` comes from the session, the conversation, the
    first message, or now — the column is NOT NULL and a conversation is never skipped for it.
    """
    issues = list(raw.issues)
    conv = _text_map(raw.conversation, issues, "conversation", max_field_bytes)
    session = _text_map(raw.session, issues, "session", max_field_bytes)

    messages: list[tuple[datetime, int, dict[str, Any]]] = []
    previous = datetime.min.replace(tzinfo=UTC)
    for seq, fields in sorted(raw.messages, key=lambda pair: pair[0]):
        message = _message_fields(seq, fields, issues, max_field_bytes)
        timestamp = message.get("timestamp")
        stamp = parse_timestamp(timestamp if isinstance(timestamp, str) else None)
        if stamp is None:
            issues.append(f"message {seq}: missing or unparseable timestamp; ordered by sequence")
            stamp = previous
        previous = max(previous, stamp)
        message.setdefault("seq", seq)
        messages.append((stamp, seq, message))
    messages.sort(key=lambda item: (item[0], item[1]))

    def first(*values: str | None) -> str | None:
        return next((v for v in values if v), None)

    started = None
    for candidate in (session.get("started_at"), conv.get("started_at")):
        started = parse_timestamp(candidate)
        if started is not None:
            break
        if candidate:
            issues.append(f"started_at {candidate!r} is not a timestamp")
    if started is None:
        real = [m for m in messages if m[0].year > 1]
        started = real[0][0] if real else (now or datetime.now(UTC))
    ended_raw = first(conv.get("ended_at"), session.get("ended_at"))
    ended = parse_timestamp(ended_raw)
    if ended_raw and ended is None:
        issues.append(f"ended_at {ended_raw!r} is not a timestamp")
    started = storable_timestamp(started, issues, "started_at")
    if ended is not None:
        ended = storable_timestamp(ended, issues, "ended_at")

    row_id, source_id = row_identity(raw.conversation_id)
    if source_id is not None and len(source_id) != len(raw.conversation_id):
        issues.append(
            f"conversation id of {len(raw.conversation_id)} characters kept cut in source_id"
        )
    merchant_id = _column(
        first(session.get("merchant_id"), conv.get("merchant_id")), issues, "merchant_id"
    )
    workflow_name = _column(
        first(session.get("workflow_name"), conv.get("workflow_name"), conv.get("workflow")),
        issues,
        "workflow_name",
    )
    user_id = usable_user_id(raw.user_id, issues, "user_id")
    issues = list(dict.fromkeys(issues))  # one note per distinct problem
    extra = {k: v for k, v in conv.items() if k not in _COLUMN_FIELDS}
    metadata: dict[str, Any] = {
        "archive": {
            "source": "redis",
            "message_count": len(messages),
            "issues": issues,
        }
    }
    if raw.expires_at is not None:
        # ISO-8601 in UTC to the millisecond (PTTL's unit); identity.stats reads it to report
        # how long before its expiry each conversation was archived.
        metadata["archive"]["expires_at"] = raw.expires_at.astimezone(UTC).isoformat(
            timespec="milliseconds"
        )
    if extra:
        metadata["redis"] = extra
    row = {
        "id": row_id,
        # The original id is kept unless it is a canonical UUID: nothing is lost.
        "source_id": source_id,
        "user_id": user_id,
        "merchant_id": merchant_id,
        "workflow_name": workflow_name,
        "started_at": started.isoformat(),
        "ended_at": ended.isoformat() if ended else None,
        "messages": [m[2] for m in messages],
        "metadata": metadata,
    }
    return row, issues


def user_id_candidates(
    conversation: Mapping[bytes | str, bytes | str], session: Mapping[bytes | str, bytes | str]
) -> Iterable[str]:
    """User ids written on the session, then on the conversation hash (non-empty only)."""
    for source in (session, conversation):
        for key in ("user_id", b"user_id"):
            value = source.get(key)
            if value:
                yield value.decode() if isinstance(value, bytes) else value
