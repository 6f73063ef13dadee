"""Argument validation and normalization, shared by both clients and the archiver.

Everything here is pure and raises :class:`~supabase_identity.ValidationError` naming the field
and the rule, so that bad input fails in the caller's process with a useful message instead of
as an opaque 400 from PostgREST (or, worse, as an event that poisons the outbox later). The rules
mirror the CHECK constraints in ``supabase/migrations``.

Input that the encoders below would choke on is refused here too, never passed on to fail as a
foreign exception: strings that are not valid Unicode (a lone surrogate such as ``"\\ud800"``,
which ``json.loads`` and ``os.fsdecode`` produce, cannot be encoded as UTF-8), JSON nested deeper
than ``MAX_JSON_DEPTH`` (walked iteratively, so no ``RecursionError``), values of the wrong type,
and sizes over the limits in ``_constants``.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

from ._constants import (
    CONVERSATION_UUID_PREFIX,
    EVENT_TYPE_PATTERN,
    MAX_CONVERSATION_ID_LENGTH,
    MAX_EVENT_DATA_BYTES,
    MAX_EVENT_TYPE_LENGTH,
    MAX_JSON_DEPTH,
    MAX_PAGE_LIMIT,
    MAX_SEARCH_QUERY_LENGTH,
    MIN_PAGE_LIMIT,
    SHOP_DOMAIN_PATTERN,
    USER_ID_BODY_MAX,
    USER_ID_BODY_MIN,
    USER_ID_PATTERN,
)
from ._exceptions import ValidationError
from ._types import JSONObject

__all__ = [
    "conversation_uuid",
    "exceeds_json_depth",
    "is_canonical_uuid",
    "normalize_shop_domain",
    "validate_conversation_id",
    "validate_event_data",
    "validate_event_type",
    "validate_json",
    "validate_optional_text",
    "validate_page",
    "validate_search_query",
    "validate_text",
    "validate_text_map",
    "validate_user_id",
]

_USER_ID_RE = re.compile(USER_ID_PATTERN)
_SHOP_RE = re.compile(SHOP_DOMAIN_PATTERN)
_EVENT_TYPE_RE = re.compile(EVENT_TYPE_PATTERN)
#: UTF-16 surrogate code points: valid in a Python str, never in UTF-8 (so never in Postgres).
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
#: Key types ``json.dumps`` turns into strings in nested objects (and that were always accepted).
_JSON_SCALAR_KEYS = (str, int, float, bool, type(None))


def _show(value: object, limit: int = 80) -> str:
    text = repr(value[: limit * 2] if isinstance(value, str) else value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_unicode(value: str, *, field: str) -> None:
    found = _SURROGATE_RE.search(value)
    if found is not None:
        raise ValidationError(
            f"{field} is not valid Unicode: it holds the lone surrogate "
            f"U+{ord(found.group()):04X} at index {found.start()}, which no UTF-8 text (and so "
            "no request or database row) can carry",
            field=field,
            rule="unicode",
        )


def validate_text(
    value: str, *, field: str, max_length: int | None = None, required: bool = False
) -> str:
    """Check a free-text argument: a ``str``, valid Unicode, at most ``max_length`` characters.

    ``required`` also refuses an empty or all-whitespace string. The value is returned as given.
    """
    if not isinstance(value, str):
        raise ValidationError(
            f"{field} must be a string, got {type(value).__name__}", field=field, rule="type"
        )
    if max_length is not None and len(value) > max_length:
        raise ValidationError(
            f"{field} is {len(value)} characters long; the limit is {max_length}",
            field=field,
            rule="max_length",
        )
    _check_unicode(value, field=field)
    if required and not value.strip():
        raise ValidationError(f"{field} must not be empty", field=field, rule="non_empty")
    return value


def validate_text_map(values: Mapping[str, str] | None, *, field: str) -> dict[str, str]:
    """Check a mapping of extra text fields (Redis hash fields): ``str`` keys and values."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ValidationError(
            f"{field} must be a mapping of strings, got {type(values).__name__}",
            field=field,
            rule="type",
        )
    for key, item in values.items():
        validate_text(key, field=f"{field} key")
        validate_text(item, field=f"{field}[{_show(key, 40)}]")
    return dict(values)


def exceeds_json_depth(value: Any, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests objects or arrays more than ``max_depth`` deep (iteratively)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping | list | tuple):
            if depth > max_depth:
                return True
            children = item.values() if isinstance(item, Mapping) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def validate_json(value: Any, *, field: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Check that ``value`` is JSON the package can send, or raise ``ValidationError``.

    JSON types only (dict, list/tuple, str, int, float, bool, None), finite numbers, strings
    (keys included) that are valid Unicode, and objects/arrays nested at most ``max_depth``
    deep (the top level is depth 1). The walk is iterative and depth-first, so neither a deep
    nor a self-referencing value can exhaust the stack: the depth limit stops both.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_unicode(item, field=field)
        elif item is None or isinstance(item, int):  # bool is an int
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValidationError(
                    f"{field} is not JSON-serializable: it holds {item}, which JSON cannot "
                    "represent",
                    field=field,
                    rule="json_serializable",
                )
        elif isinstance(item, Mapping | list | tuple):
            if depth > max_depth:
                raise ValidationError(
                    f"{field} nests objects or arrays more than {max_depth} levels deep",
                    field=field,
                    rule="max_depth",
                )
            if isinstance(item, Mapping):
                for key, child in item.items():
                    if not isinstance(key, _JSON_SCALAR_KEYS):
                        raise ValidationError(
                            f"{field} keys must be strings, got {_show(key)}",
                            field=field,
                            rule="string_keys",
                        )
                    if isinstance(key, str):
                        _check_unicode(key, field=field)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
        else:
            raise ValidationError(
                f"{field} is not JSON-serializable: it holds a {type(item).__name__}",
                field=field,
                rule="json_serializable",
            )


def normalize_shop_domain(shop_domain: str) -> str:
    """Return the canonical form of a Shopify shop domain, or raise ``ValidationError``.

    Accepts what callers actually pass around (``" HTTPS://Cool-Shop.myshopify.com/ "``): strips
    whitespace, lowercases, drops an ``http(s)://`` scheme and trailing slashes, then requires
    ``<name>.myshopify.com`` with a DNS-label name. Anything else (custom domains, paths, ports)
    is rejected, because the shop domain is the user's natural key: two spellings of one shop
    must never become two users.
    """
    if not isinstance(shop_domain, str):
        raise ValidationError(
            f"shop_domain must be a string, got {type(shop_domain).__name__}",
            field="shop_domain",
            rule="type",
        )
    domain = shop_domain.strip().lower()
    for scheme in ("https://", "http://"):
        if domain.startswith(scheme):
            domain = domain[len(scheme) :]
            break
    domain = domain.rstrip("/")
    if not _SHOP_RE.fullmatch(domain):
        raise ValidationError(
            f"shop_domain {_show(shop_domain)} is not a Shopify shop domain: expected "
            "'<name>.myshopify.com' (letters, digits and '-', at most 63 characters in <name>)",
            field="shop_domain",
            rule="myshopify_domain",
        )
    return domain


def validate_user_id(user_id: str, *, field: str = "user_id") -> str:
    """Check that ``user_id`` is ``usr_`` + 6-46 lowercase letters/digits (``USER_ID_PATTERN``)."""
    if not isinstance(user_id, str) or not _USER_ID_RE.fullmatch(user_id):
        raise ValidationError(
            f"{field} {_show(user_id)} is not a user id: expected 'usr_' followed by "
            f"{USER_ID_BODY_MIN}-{USER_ID_BODY_MAX} lowercase letters or digits",
            field=field,
            rule="usr_id_format",
        )
    return user_id


def validate_event_type(event_type: str) -> str:
    """Check the event type: lowercase start, then ``[a-z0-9_.:-]``, at most 100 characters."""
    if not isinstance(event_type, str):
        raise ValidationError(
            f"event_type must be a string, got {type(event_type).__name__}",
            field="event_type",
            rule="type",
        )
    if len(event_type) > MAX_EVENT_TYPE_LENGTH:
        raise ValidationError(
            f"event_type is {len(event_type)} characters long; the limit is "
            f"{MAX_EVENT_TYPE_LENGTH}",
            field="event_type",
            rule="max_length",
        )
    if not _EVENT_TYPE_RE.fullmatch(event_type):
        raise ValidationError(
            f"event_type {_show(event_type)} must start with a lowercase letter and contain "
            "only lowercase letters, digits, '_', '.', ':' and '-'",
            field="event_type",
            rule="event_type_format",
        )
    return event_type


def _reject_nan(value: str) -> float:
    raise ValueError(f"{value} is not valid JSON")


def validate_event_data(event_data: Mapping[str, Any] | None) -> JSONObject:
    """Return a detached, JSON-clean copy of ``event_data`` or raise ``ValidationError``.

    Rules: a mapping with string keys; JSON types only (see :func:`validate_json`: valid Unicode,
    no NaN/Infinity, at most ``MAX_JSON_DEPTH`` levels); no NUL characters (Postgres ``jsonb``
    rejects ``\\u0000``, which would make the whole delivery batch fail); at most 32 KiB once
    serialized as UTF-8. The copy is round-tripped through JSON, so a
    caller mutating its dict afterwards cannot change an event waiting in the outbox.
    """
    if event_data is None:
        return {}
    if not isinstance(event_data, Mapping):
        raise ValidationError(
            f"event_data must be a mapping (a JSON object), got {type(event_data).__name__}",
            field="event_data",
            rule="json_object",
        )
    bad_key = next((k for k in event_data if not isinstance(k, str)), None)
    if bad_key is not None:
        raise ValidationError(
            f"event_data keys must be strings, got {_show(bad_key)}",
            field="event_data",
            rule="string_keys",
        )
    validate_json(event_data, field="event_data")
    try:
        text = json.dumps(
            dict(event_data), allow_nan=False, ensure_ascii=False, separators=(",", ":")
        )
        encoded = text.encode("utf-8")
    except (TypeError, ValueError) as err:  # e.g. a nested Mapping that is not a dict
        raise ValidationError(
            f"event_data is not JSON-serializable: {err}",
            field="event_data",
            rule="json_serializable",
        ) from err
    if "\\u0000" in text or "\x00" in text:
        raise ValidationError(
            "event_data contains a NUL character (\\u0000), which Postgres jsonb rejects",
            field="event_data",
            rule="no_nul",
        )
    if len(encoded) > MAX_EVENT_DATA_BYTES:
        raise ValidationError(
            f"event_data is {len(encoded)} bytes serialized; the limit is "
            f"{MAX_EVENT_DATA_BYTES} bytes",
            field="event_data",
            rule="max_bytes",
        )
    copy: JSONObject = json.loads(text, parse_constant=_reject_nan)
    return copy


def validate_optional_text(value: str | None, *, field: str, max_length: int) -> str | None:
    """Strip an optional text argument; empty becomes ``None``; NULs, lone surrogates and overlong
    values fail."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(
            f"{field} must be a string or None, got {type(value).__name__}",
            field=field,
            rule="type",
        )
    value = value.strip()
    if not value:
        return None
    if "\x00" in value:
        raise ValidationError(
            f"{field} contains a NUL character, which Postgres text rejects",
            field=field,
            rule="no_nul",
        )
    return validate_text(value, field=field, max_length=max_length)


def validate_search_query(query: str) -> str:
    """Check a search query: a string with a non-space character, at most 1000 characters.

    The same rules as ``identity.search_conversations``, checked before any request so the
    error names the field and the rule. A query of stop words only (``"the"``) is valid: it
    finds nothing.
    """
    validate_text(query, field="query", max_length=MAX_SEARCH_QUERY_LENGTH, required=True)
    if "\x00" in query:
        raise ValidationError(
            "query contains a NUL character, which Postgres text rejects",
            field="query",
            rule="no_nul",
        )
    return query


def validate_page(limit: int, offset: int) -> tuple[int, int]:
    """Check ``1 <= limit <= 100`` and ``offset >= 0`` (booleans are not integers here)."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ValidationError("limit must be an integer", field="limit", rule="type")
    if not MIN_PAGE_LIMIT <= limit <= MAX_PAGE_LIMIT:
        raise ValidationError(
            f"limit must be between {MIN_PAGE_LIMIT} and {MAX_PAGE_LIMIT}, got {limit}",
            field="limit",
            rule="range",
        )
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise ValidationError("offset must be an integer", field="offset", rule="type")
    if offset < 0:
        raise ValidationError(
            f"offset must be 0 or more, got {offset}", field="offset", rule="range"
        )
    return limit, offset


_CANONICAL_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_canonical_uuid(value: str) -> bool:
    """Whether ``value`` is a UUID spelled canonically (lowercase, hyphenated, no braces)."""
    return len(value) == 36 and _CANONICAL_UUID_RE.fullmatch(value) is not None


def conversation_uuid(conversation_id: str | uuid.UUID) -> uuid.UUID:
    """Map a conversation id to the UUID it is stored under in ``identity.conversations``.

    A canonical UUID (lowercase, hyphenated) is itself. Any other id, an uppercase, braced,
    ``urn:uuid:`` or 32-hex spelling of a UUID included, is a different Redis key and so a
    different conversation: it maps to ``uuid5(NAMESPACE_URL, "supabase-identity:conversation:"
    + id)``, and the archiver keeps the original in ``source_id``. Deterministic, so re-archiving
    the same conversation updates one row, and readers can find it by the id they know.
    """
    if isinstance(conversation_id, uuid.UUID):
        return conversation_id
    if not isinstance(conversation_id, str):
        raise ValidationError(
            "conversation_id must be a non-empty string or UUID",
            field="conversation_id",
            rule="non_empty",
        )
    validate_conversation_id(conversation_id)
    if is_canonical_uuid(conversation_id):
        return uuid.UUID(conversation_id)
    return uuid.uuid5(uuid.NAMESPACE_URL, CONVERSATION_UUID_PREFIX + conversation_id)


def validate_conversation_id(conversation_id: str, *, field: str = "conversation_id") -> str:
    """Check a conversation id as the agents service writes it in Redis keys (returned as is).

    A non-empty string of valid Unicode, at most 512 characters (the ``source_id`` column).
    """
    return validate_text(
        conversation_id, field=field, max_length=MAX_CONVERSATION_ID_LENGTH, required=True
    )
