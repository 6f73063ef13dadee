"""Small shared types: the ``NOT_GIVEN`` sentinel and JSON aliases.

``None`` is a meaningful value for several options (``redis_url=None`` disables Redis,
``timeout=None`` disables timeouts), so "the caller did not pass this" needs its own sentinel,
as in the Stainless SDKs.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias, TypeVar

import httpx

__all__ = ["NOT_GIVEN", "JSONObject", "NotGiven", "TimeoutTypes"]

_T = TypeVar("_T")


class NotGiven:
    """Type of :data:`NOT_GIVEN`; falsy, and distinct from ``None``."""

    _instance: NotGiven | None = None

    def __new__(cls) -> NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven()

JSONObject: TypeAlias = dict[str, Any]
TimeoutTypes: TypeAlias = float | httpx.Timeout | None


def given(value: _T | NotGiven, default: _T) -> _T:
    """Return ``value`` unless it is :data:`NOT_GIVEN` (``None``/``0``/``False`` are kept)."""
    return default if isinstance(value, NotGiven) else value
