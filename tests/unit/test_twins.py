"""Every sync/async twin pair has the same public names and signatures.

The clients are generated from one async source by ``scripts/unasync`` (``--check`` in
``scripts/test`` catches a stale twin); hand-written twins (the Redis outbox) are compared too.
Annotations are compared after the generator's own renaming (``AsyncRedis`` → ``Redis``, …), so
"the same signature" means exactly what the generator would have written.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from supabase_identity import AsyncIdentityClient, IdentityClient

ROOT = Path(__file__).resolve().parents[2]


def _load_generator() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("run_unasync", ROOT / "scripts/run_unasync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _load_generator()
rename: Callable[[str], str] = GENERATOR.rename
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _generated_pairs() -> list[tuple[Any, Any]]:
    """Each public name of each module under a ``_async`` folder, with its generated twin."""
    pairs: list[tuple[Any, Any]] = []
    for source_dir, target_dir in GENERATOR.RULES:
        for source in sorted((ROOT / source_dir).rglob("*.py")):
            relative = source.relative_to(ROOT / source_dir).with_suffix("")
            if relative.name == "__init__":
                continue
            dotted = ".".join(relative.parts)
            async_mod = importlib.import_module(f"{source_dir.replace('/', '.')}.{dotted}")
            sync_mod = importlib.import_module(f"{target_dir.replace('/', '.')}.{dotted}")
            assert [rename(n) for n in async_mod.__all__] == list(sync_mod.__all__)
            pairs += [
                (getattr(async_mod, n), getattr(sync_mod, rename(n))) for n in async_mod.__all__
            ]
    return pairs


#: Twins written by hand, held to the same rule. None today: every I/O twin is generated (the
#: in-memory outbox's awaitable view wraps the blocking buffer, so its constructor differs).
HAND_WRITTEN: list[tuple[Any, Any]] = []

PAIRS = _generated_pairs() + HAND_WRITTEN


def _annotation(value: Any) -> str:
    text = value if isinstance(value, str) else inspect.formatannotation(value)
    # Hand-written twins may spell the async module instead of an ``Async`` name.
    text = text.replace("redis.asyncio.", "redis.")
    return _WORD.sub(lambda m: rename(m.group(0)), text)


def _shape(fn: Any) -> list[tuple[str, str, str, str]]:
    """Parameters (name, kind, default, annotation in sync names) plus the return annotation."""
    signature = inspect.signature(fn)
    params = [
        (
            p.name,
            p.kind.name,
            repr(p.default),
            _annotation(p.annotation) if p.annotation is not p.empty else "",
        )
        for p in signature.parameters.values()
    ]
    ret = signature.return_annotation
    return [*params, ("return", "", "", _annotation(ret) if ret is not signature.empty else "")]


def _public(cls: type) -> dict[str, Any]:
    return {
        name: value
        for klass in reversed(cls.__mro__[:-1])
        for name, value in vars(klass).items()
        if not name.startswith("_")
        or name in {"__init__", "__enter__", "__exit__", "__aenter__", "__aexit__"}
    }


def differences(async_obj: Any, sync_obj: Any) -> list[str]:
    """What differs between an async object and its blocking twin (empty when they match)."""
    if inspect.isfunction(async_obj):
        return _function_differences(async_obj.__name__, async_obj, sync_obj)
    found: list[str] = []
    async_members = {rename(n): v for n, v in _public(async_obj).items()}
    sync_members = _public(sync_obj)
    for name in sorted(set(async_members) ^ set(sync_members)):
        where = async_obj.__name__ if name in async_members else sync_obj.__name__
        found.append(f"{name} only on {where}")
    for name in sorted(set(async_members) & set(sync_members)):
        a, s = async_members[name], sync_members[name]
        if isinstance(a, property) != isinstance(s, property):
            found.append(f"{name}: property on one side only")
        elif isinstance(a, property):
            found += _function_differences(name, a.fget, s.fget)
        elif callable(a) and callable(s):
            found += _function_differences(name, _unwrap(a), _unwrap(s))
    return found


def _unwrap(member: Any) -> Any:
    return member.__func__ if isinstance(member, (staticmethod, classmethod)) else member


def _function_differences(name: str, a: Any, s: Any) -> list[str]:
    found = []
    if inspect.iscoroutinefunction(s) or inspect.isasyncgenfunction(s):
        found.append(f"{name}: the blocking twin is async")
    if inspect.isasyncgenfunction(a) != inspect.isgeneratorfunction(s):
        found.append(f"{name}: an iterator on one side only")
    if _shape(a) != _shape(s):
        found.append(f"{name}: {_shape(a)} != {_shape(s)}")
    return found


@pytest.mark.parametrize(
    ("async_obj", "sync_obj"), PAIRS, ids=[f"{a.__name__}/{s.__name__}" for a, s in PAIRS]
)
def test_twins_have_the_same_public_names_and_signatures(async_obj: Any, sync_obj: Any) -> None:
    assert differences(async_obj, sync_obj) == []


def test_the_clients_are_a_generated_pair() -> None:
    assert (AsyncIdentityClient, IdentityClient) in PAIRS
    assert IdentityClient.__module__ == "supabase_identity._sync._client"
    for method in ("iter_user_events", "ping_redis", "close", "iter_user_conversations"):
        assert hasattr(AsyncIdentityClient, method) and hasattr(IdentityClient, method)


def test_the_comparison_sees_drift() -> None:
    """The checker itself: a twin with a renamed parameter or a missing method is reported."""

    class Drifted(IdentityClient):
        def get_user_profile(self, user: str, *, timeout: Any = None) -> Any:
            raise NotImplementedError

        def extra(self) -> None:
            raise NotImplementedError

    found = differences(AsyncIdentityClient, Drifted)
    assert any(line.startswith("get_user_profile:") for line in found)
    assert "extra only on Drifted" in found
