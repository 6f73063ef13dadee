"""Generate the blocking twins of the async modules with the `unasync` package.

The async code is the one source: every ``.py`` file under a rule's ``source`` folder is
rewritten into its ``target`` folder with ``async``/``await`` removed and each async name renamed
to its twin (``RENAMES`` below, then unasync's own ``AsyncX`` → ``SyncX``). Docstrings and
comments get the same renaming, the generated file a header naming its source, and then ruff's
import sorting and formatting, so the output is committed as it is.

    scripts/unasync           write the twins
    scripts/unasync --check   exit 1, naming the files, when a committed twin is stale

To put another module on it: move it under a ``_async`` folder listed in ``RULES`` (or add its
folder as one line there), name its async-only primitives so a renaming reaches their twins
(add a line to ``RENAMES`` when the default does not), and run this script.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tokenize_rt  # type: ignore[import-untyped]
import unasync  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent

#: (async source folder, generated folder), relative to the repository root.
RULES: list[tuple[str, str]] = [
    ("supabase_identity/_async", "supabase_identity/_sync"),
]

#: Async name -> blocking twin, where unasync's default (``AsyncX`` -> ``SyncX``) is not it.
RENAMES: dict[str, str] = {
    # unasync's own table, repeated so docstrings and comments get it too
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "asynccontextmanager": "contextmanager",
    "AsyncIterable": "Iterable",
    "AsyncIterator": "Iterator",
    "AsyncGenerator": "Generator",
    "StopAsyncIteration": "StopIteration",
    # this package
    "AsyncIdentityClient": "IdentityClient",
    "AsyncRedisOutbox": "RedisOutbox",
    "AsyncMemoryOutbox": "MemoryOutbox",
    "AsyncOutbox": "Outbox",
    # supabase_identity._io: primitives written twice
    "AsyncRedisClient": "RedisClient",
    "AsyncRedisConnector": "RedisConnector",
    "asleep": "sleep",
    "ashield": "shield",
    "async_memory_view": "memory_view",
    "async_redis_from_url": "redis_from_url",
    # libraries
    "AsyncClient": "Client",  # httpx.AsyncClient, supabase.AsyncClient
    "AsyncSupabaseClient": "SupabaseClient",
    "AsyncRetrying": "Retrying",  # tenacity
    "aclose": "close",  # httpx, redis
}

HEADER = "# Generated from {source} by scripts/unasync: do not edit.\n"

_WORD = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
_AWAIT = re.compile(r"\bawait\s+")
_ASYNC = re.compile(r"\basync\s+(?=(?:with|for|def)\b)")


def rename(name: str) -> str:
    """The blocking twin of one async name (the renaming unasync applies to code)."""
    if name in RENAMES:
        return RENAMES[name]
    if len(name) > 5 and name.startswith("Async") and name[5].isupper():
        return "Sync" + name[5:]
    return name


def _prose(text: str) -> str:
    """Docstrings and comments: the same renaming, and no ``await``/``async`` keywords."""
    text = _ASYNC.sub("", _AWAIT.sub("", text))
    return _WORD.sub(lambda m: rename(m.group(0)), text)


def _ruff(args: list[str], text: str, filename: Path) -> str:
    ruff = ROOT / ".venv" / "bin" / "ruff"
    done = subprocess.run(
        [str(ruff), *args, "--stdin-filename", str(filename), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"scripts/unasync: ruff {args[0]} failed on {filename}:\n{done.stderr}")
    return done.stdout


def _finish(raw: str, source: Path, target: Path) -> str:
    """Header, renamed prose, sorted imports, ruff's formatting."""
    tokens = tokenize_rt.src_to_tokens(raw)
    for i, token in enumerate(tokens):
        if token.name in ("STRING", "COMMENT"):
            tokens[i] = token._replace(src=_prose(token.src))
    text = HEADER.format(source=source.relative_to(ROOT)) + tokenize_rt.tokens_to_src(tokens)
    text = _ruff(["check", "--fix-only", "--unsafe-fixes", "--exit-zero", "--quiet"], text, target)
    return _ruff(["format", "--quiet"], text, target)


def generate() -> dict[Path, str]:
    """Every generated file's path and text, computed in a scratch folder."""
    rules = [
        unasync.Rule(f"/{src}/", f"/{dst}/", additional_replacements=RENAMES) for src, dst in RULES
    ]
    out: dict[Path, str] = {}
    with tempfile.TemporaryDirectory(prefix="unasync-") as scratch:
        for src, dst in RULES:
            for source in sorted((ROOT / src).rglob("*.py")):
                relative = source.relative_to(ROOT)
                copy = Path(scratch) / relative
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, copy)
                unasync.unasync_files([str(copy)], rules)
                made = Path(scratch) / dst / source.relative_to(ROOT / src)
                target = ROOT / dst / source.relative_to(ROOT / src)
                out[target] = _finish(made.read_text(encoding="utf-8"), source, target)
    return out


def _stale(expected: dict[Path, str]) -> list[Path]:
    stale = [p for p, text in expected.items() if not p.exists() or p.read_text("utf-8") != text]
    for _, dst in RULES:
        stale += [p for p in sorted((ROOT / dst).rglob("*.py")) if p not in expected]
    return stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 when a twin is stale"
    )
    args = parser.parse_args()
    expected = generate()
    stale = _stale(expected)
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)}", file=sys.stderr)
        if stale:
            print(
                "scripts/unasync: generated twins are stale; run scripts/unasync", file=sys.stderr
            )
            return 1
        print(f"scripts/unasync: {len(expected)} generated files up to date")
        return 0
    for path in stale:
        if path in expected:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(expected[path], encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
        else:
            path.unlink()
            print(f"removed {path.relative_to(ROOT)} (its async source is gone)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
