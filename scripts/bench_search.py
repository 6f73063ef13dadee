"""Benchmark (not a test): conversation search against a plain history page, and its size.

Run against the local stack (``scripts/bench search`` sets the environment). One user with N
archived conversations (default 10,000) of M messages (default 20) of English-like text
(``bench_text``); 1 % of them contain the phrase "chargeback dispute" in one message.

Latency, interleaved (one call of each per round, so drift touches all alike), one pooled
client, through the gateway, p50/p99 in ms and each p50 as a multiple of the baseline's:

  history page      get_user_conversations(limit=20) with the exact total   (the baseline)
  keyset page       the second page by cursor: no total counted (for information: counting
                    the user's 10,000 rows is much of the baseline)
  search 1%         search_conversations("chargeback") (the SDK's, typed hits): 1 % match,
                    page of 20 with snippets
  phrase 1%         search_conversations('"chargeback dispute"')
  search common     a word in most conversations (ranking many rows; for information)

Size: the user's rows copied into two scratch tables with the same indexes, one without the
search column and its GIN index, one with both; what the search adds, in % of the first.
Target (issue 15): search 1% p50 <= 2.5x the history page; the search adds <= 60 % on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from bench_identity import measure_interleaved, pct
from bench_text import TextGenerator

from supabase_identity import IdentityClient, SearchPage

MARKER = "chargeback dispute"


def load(db: psycopg.Connection[Any], user_id: str, conversations: int, messages: int) -> None:
    """COPY the user's conversations; the insert trigger computes each search vector."""
    text = TextGenerator(seed=15, exclude=frozenset({"chargeback"}))
    marked = set(range(0, conversations, 100))  # 1 %
    base = datetime(2026, 1, 1, tzinfo=UTC)
    sql = (
        "copy identity.conversations (id, user_id, workflow_name, started_at, ended_at, messages)"
        " from stdin"
    )
    with db.cursor() as cur, cur.copy(sql) as copy:
        for n in range(conversations):
            started = base + timedelta(minutes=n)
            msgs = [
                {
                    "sender": "user" if m % 2 == 0 else "cj",
                    "content": text.text(250),
                    "timestamp": (started + timedelta(seconds=m)).isoformat(),
                }
                for m in range(messages)
            ]
            if n in marked:
                victim = msgs[text.randrange(messages)]
                words = victim["content"].split(" ")
                words.insert(text.randrange(len(words)), MARKER)
                victim["content"] = " ".join(words)
            copy.write_row(
                [
                    str(uuid.uuid4()),
                    user_id,
                    "shopify_onboarding",
                    started,
                    started + timedelta(minutes=5),
                    json.dumps(msgs),
                ]
            )
    # Steady state: the GIN pending list merged, statistics current.
    db.execute("vacuum analyze identity.conversations")


def sizes(db: psycopg.Connection[Any], user_id: str) -> dict[str, int]:
    """On-disk bytes of the user's rows without and with the search column and its index."""
    columns = (
        "id, source_id, user_id, merchant_id, workflow_name, started_at, ended_at, messages,"
        " message_count, metadata, created_at, updated_at, archived_at"
    )
    out: dict[str, int] = {}
    try:
        db.execute("create schema bench_search_size")
        for name, extra in (("without", ""), ("with", ", search")):
            table = f"bench_search_size.{name}"
            db.execute(
                f"create table {table} as select {columns}{extra} from identity.conversations"
                " where user_id = %s",
                (user_id,),
            )
            db.execute(f"alter table {table} add primary key (id)")
            db.execute(f"create index on {table} (user_id, started_at desc, id desc)")
            if extra:
                db.execute(f"create index {name}_search on {table} using gin (user_id, search)")
            db.execute(f"vacuum analyze {table}")
            out[name] = db.execute("select pg_total_relation_size(%s)", (table,)).fetchone()[0]  # type: ignore[index]
        out["gin"] = db.execute(
            "select pg_relation_size('bench_search_size.with_search')"
        ).fetchone()[0]  # type: ignore[index]
    finally:
        db.execute("drop schema if exists bench_search_size cascade")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("-n", type=int, default=300, help="samples per measurement")
    args = parser.parse_args()

    db = psycopg.connect(os.environ["SUPABASE_DB_URL"], autocommit=True)
    with IdentityClient(redis_url=None) as client:
        user_id, _ = client.get_or_create_user(f"bench-search-{uuid.uuid4().hex[:8]}.myshopify.com")
        try:
            started = time.perf_counter()
            load(db, user_id, args.conversations, args.messages)
            print(
                f"data: {args.conversations} conversations x {args.messages} messages "
                f"(~{args.messages * 250 // 1000} KB of text each), 1 % with {MARKER!r}; "
                f"loaded and indexed in {time.perf_counter() - started:.0f} s"
            )

            def search(query: str) -> SearchPage:
                return client.search_conversations(user_id, query, limit=20)

            found = search("chargeback")
            expected = len(range(0, args.conversations, 100))
            assert found.total == expected, (found.total, expected)
            assert "<mark>" in (found.items[0].snippet or ""), found.items[0]
            assert search(f'"{MARKER}"').total == expected
            common = search("time").total

            second = client.get_user_conversations(user_id, limit=20).next_cursor
            results = measure_interleaved(
                {
                    "history page": lambda _: client.get_user_conversations(user_id, limit=20),
                    "keyset page": lambda _: client.get_user_conversations(
                        user_id, limit=20, cursor=second
                    ),
                    "search 1%": lambda _: search("chargeback"),
                    "phrase 1%": lambda _: search(f'"{MARKER}"'),
                    f"search common ({100 * common // args.conversations}%)": lambda _: search(
                        "time"
                    ),
                },
                args.n,
            )
            size = sizes(db, user_id)
        finally:
            db.execute("delete from identity.conversations where user_id = %s", (user_id,))
            db.execute("delete from identity.users where id = %s", (user_id,))
            db.execute("vacuum analyze identity.conversations")
        db.close()

    base = statistics.median(results["history page"])
    print(f"{'measurement':<22} {'p50 ms':>8} {'p99 ms':>8} {'p50/page':>9}")
    for name, values in results.items():
        p50 = statistics.median(values)
        print(f"{name:<22} {p50:8.2f} {pct(values, 0.99):8.2f} {p50 / base:8.2f}x")
    ratio = statistics.median(results["search 1%"]) / base
    print(
        f"search 1% / history page = {ratio:.2f}x  "
        f"(target <= 2.5x: {'met' if ratio <= 2.5 else 'MISSED'})"
    )

    mib = 1024 * 1024
    added = (size["with"] - size["without"]) / size["without"] * 100
    print(
        f"on disk: {size['without'] / mib:.1f} MiB without search, {size['with'] / mib:.1f} MiB "
        f"with (search column + GIN index {size['gin'] / mib:.1f} MiB)"
    )
    print(
        f"search adds {added:.0f} % (target <= 60 %: {'met' if added <= 60 else 'MISSED'}); "
        f"the GIN index alone adds {size['gin'] / size['without'] * 100:.0f} %"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
