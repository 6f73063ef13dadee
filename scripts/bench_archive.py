"""Benchmark (not a test): the archiver against the seed's algorithm and a straight COPY.

One run, one data set for all three measurements:
  N conversations x M messages (about B bytes per conversation) written in the Redis layout, among
  K unrelated keys, in a dedicated Redis database of the local stack.

  (a) this archiver end to end: ConversationArchiver.run_once() in a fresh process (peak RSS
      measured there), Redis -> PostgREST -> Postgres;
  (b) the seed's algorithm reproduced faithfully: scan_iter("conversation:*") + HGET + TTL per
      key, then per conversation KEYS *id*, HGETALL per key, and one supabase-py insert per
      conversation (ON CONFLICT DO NOTHING). Timed on a sample (KEYS is O(keyspace) per call);
  (c) the limit: the same rows read from Redis and built exactly as the archiver does, then
      COPY'd into identity.conversations with psycopg — the archiver with its HTTP hop replaced
      by the fastest way into Postgres. The COPY alone is also timed and reported.

Reports conversations/s and the ratios (a)/(c) and (a)/(b); peak RSS of (a) for N and for a
larger N (memory must follow the batch, not the number of conversations).
Rows are written under a benchmark user and deleted between phases; other data is untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import redis
from redis.typing import EncodableT

from supabase import ClientOptions, create_client
from supabase_identity import IdentityClient
from supabase_identity.archive import DUE_KEY, ArchiverConfig, ConversationArchiver
from supabase_identity.archive._reader import ConversationReader
from supabase_identity.archive._rows import build_row
from supabase_identity.archive._types import Candidate

BENCH_DB = 9
BENCH_SHOP = "bench-archiver.myshopify.com"


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url.rsplit("/", 1)[0] + f"/{BENCH_DB}")


def write_data(
    r: redis.Redis, *, conversations: int, messages: int, conv_bytes: int, noise: int, user_id: str
) -> list[str]:
    """The ConversationStore layout, written with large pipelines to keep setup short."""
    r.flushdb(asynchronous=True)
    pipe = r.pipeline(transaction=False)
    for i in range(noise):
        pipe.set(f"cache:product:{i}", "x" * 32)
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    body = "m" * max(1, conv_bytes // messages - 90)
    expires = int(time.time()) + 3600
    base = datetime(2026, 1, 1, tzinfo=UTC)
    ids = []
    for n in range(conversations):
        cid = str(uuid.uuid4())
        ids.append(cid)
        fields: dict[EncodableT, EncodableT] = {
            "user_id": user_id,
            "merchant_id": "merchant_bench-archiver",
            "workflow_name": "shopify_onboarding",
            "started_at": base.isoformat(),
        }
        pipe.hset(f"session:{cid}", mapping=fields)
        conversation: dict[EncodableT, EncodableT] = {
            "id": cid,
            **fields,
            "message_count": messages,
        }
        pipe.hset(f"conversation:{cid}", mapping=conversation)
        for seq in range(messages):
            pipe.hset(
                f"message:{cid}:{seq}",
                mapping={
                    "sender": "user" if seq % 2 == 0 else "cj",
                    "content": body,
                    "timestamp": (base + timedelta(seconds=seq)).isoformat(),
                },
            )
            pipe.expire(f"message:{cid}:{seq}", 3600)
        pipe.expire(f"session:{cid}", 3600)
        pipe.expire(f"conversation:{cid}", 3600)
        pipe.zadd(DUE_KEY, {cid: expires})
        if n % 200 == 199:
            pipe.execute()
    pipe.execute()
    return ids


def delete_rows(db: psycopg.Connection[Any], user_id: str) -> None:
    db.execute("delete from identity.conversations where user_id = %s", (user_id,))
    db.execute("vacuum analyze identity.conversations")


def run_worker(args: argparse.Namespace) -> None:
    """(a), in this fresh process: one archiver pass; prints seconds, counts and peak RSS."""
    r = redis_client(os.environ["REDIS_URL"])
    with IdentityClient(redis_url=None) as client:
        archiver = ConversationArchiver(
            client, r, config=ArchiverConfig(batch_rows=args.batch_rows, scan_legacy=False)
        )
        started = time.perf_counter()
        report = archiver.run_once()
        seconds = time.perf_counter() - started
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "archived": report.archived,
                "failed": len(report.failed),
                "rss_mib": rss_kib / 1024,
            }
        )
    )


def measure_archiver(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", "--batch-rows", str(args.batch_rows)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def seed_algorithm(sample: int, user_id: str) -> tuple[int, float]:
    """(b) the seed's ConversationArchiver, as written, on `sample` conversations."""
    rs_text = redis.Redis.from_url(
        os.environ["REDIS_URL"].rsplit("/", 1)[0] + f"/{BENCH_DB}", decode_responses=True
    )
    url = os.environ["SUPABASE_URL"]
    supabase = create_client(
        url,
        os.environ["SUPABASE_SERVICE_ROLE_KEY"],
        ClientOptions(schema="identity", auto_refresh_token=False, persist_session=False),
    )
    started = time.perf_counter()
    # find_conversations_to_archive(): scan_iter + HGET archived + TTL, one call each
    found = []
    window = timedelta(hours=2).total_seconds()
    for key in rs_text.scan_iter("conversation:*"):
        if rs_text.hget(key, "archived") == "true":
            continue
        ttl = rs_text.ttl(key)
        if 0 < ttl < window:
            found.append(key.split(":")[-1])
        if len(found) >= sample:
            break
    archived = 0
    for conversation_id in found:
        keys = rs_text.keys(f"*{conversation_id}*")
        data: dict[str, Any] = {"messages": [], "metadata": {}}
        for key in keys:
            if "message:" in key:
                msg = rs_text.hgetall(key)
                if msg:
                    data["messages"].append(msg)
            elif "session:" in key:
                session = rs_text.hgetall(key)
                if session:
                    data.update({str(k): v for k, v in session.items()})
        data["messages"].sort(key=lambda m: m.get("timestamp", ""))
        supabase.schema("identity").table("conversations").upsert(
            {
                "id": conversation_id,
                "user_id": data.get("user_id") or user_id,
                "merchant_id": data.get("merchant_id"),
                "workflow_name": data.get("workflow_name", "unknown"),
                "started_at": data.get("started_at"),
                "ended_at": datetime.now(UTC).isoformat(),
                "messages": data["messages"],
                "metadata": data["metadata"],
            },
            ignore_duplicates=True,
        ).execute()
        rs_text.hset(f"conversation:{conversation_id}", "archived", "true")
        archived += 1
    seconds = time.perf_counter() - started
    rs_text.close()
    return archived, seconds


def _copy_value(row: dict[str, Any], column: str) -> Any:
    return json.dumps(row[column]) if column in ("messages", "metadata") else row[column]


def copy_limit(
    client: IdentityClient, db: psycopg.Connection[Any], ids: list[str], user_id: str
) -> tuple[float, float]:
    """(c) the same rows read from Redis and COPY'd into Postgres: (total seconds, COPY only).

    The total is the archiver's own work with the HTTP hop replaced by a direct COPY: the same
    scripted Redis reads and row building, in pages of the same size, then COPY. That is the
    ceiling for any archiver of this data; the COPY-only figure is printed beside it.
    """
    r = redis_client(os.environ["REDIS_URL"])
    reader = ConversationReader(r, ArchiverConfig())
    columns = (
        "id",
        "source_id",
        "user_id",
        "merchant_id",
        "workflow_name",
        "started_at",
        "ended_at",
        "messages",
        "metadata",
    )
    sql = f"copy identity.conversations ({', '.join(columns)}) from stdin"
    copying = 0.0
    started = time.perf_counter()
    for start in range(0, len(ids), 200):
        page = [Candidate(cid, None, -1, False, True) for cid in ids[start : start + 200]]
        raws = reader.read(page, user_id=user_id)
        rows = [build_row(raw)[0] for raw in raws.values()]
        copy_started = time.perf_counter()
        with db.cursor() as cur, cur.copy(sql) as copy:
            for row in rows:
                copy.write_row(
                    [
                        json.dumps(row[c]) if c in ("messages", "metadata") else row[c]
                        for c in columns
                    ]
                )
        copying += time.perf_counter() - copy_started
    total = time.perf_counter() - started
    r.close()
    return total, copying


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument(
        "--conversation-bytes",
        type=int,
        default=5 * 1024,
        help="approximate size of one conversation's messages",
    )
    parser.add_argument("--noise", type=int, default=200_000, help="unrelated Redis keys")
    parser.add_argument(
        "--seed-sample",
        type=int,
        default=200,
        help="conversations timed for the seed's algorithm (b)",
    )
    parser.add_argument(
        "--large",
        type=int,
        default=50_000,
        help="second size for the peak-RSS comparison (0 to skip)",
    )
    parser.add_argument("--batch-rows", type=int, default=200)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return

    r = redis_client(os.environ["REDIS_URL"])
    with IdentityClient(redis_url=None) as client:
        user_id, _ = client.get_or_create_user(BENCH_SHOP)
    db = psycopg.connect(os.environ["SUPABASE_DB_URL"], autocommit=True)
    print(
        f"data: {args.conversations} conversations x {args.messages} messages "
        f"(~{args.conversation_bytes} B each) among {args.noise} unrelated keys"
    )
    ids = write_data(
        r,
        conversations=args.conversations,
        messages=args.messages,
        conv_bytes=args.conversation_bytes,
        noise=args.noise,
        user_id=user_id,
    )
    delete_rows(db, user_id)

    a = measure_archiver(args)
    assert a["archived"] == args.conversations and a["failed"] == 0, a
    rate_a = args.conversations / a["seconds"]

    delete_rows(db, user_id)
    pipe = r.pipeline(transaction=False)
    for cid in ids:
        pipe.hdel(f"conversation:{cid}", "archived", "archived_count", "archived_at")
    pipe.execute()
    b_count, b_seconds = seed_algorithm(args.seed_sample, user_id)
    rate_b = b_count / b_seconds

    delete_rows(db, user_id)
    with IdentityClient(redis_url=None) as client:
        c_seconds, copy_seconds = copy_limit(client, db, ids, user_id)
    rate_c = args.conversations / c_seconds
    rate_copy = args.conversations / copy_seconds
    delete_rows(db, user_id)

    print(
        f"(a) this archiver, end to end : {rate_a:9.0f} conversations/s "
        f"({args.conversations} in {a['seconds']:.2f} s, peak RSS {a['rss_mib']:.0f} MiB)"
    )
    print(
        f"(b) seed's algorithm          : {rate_b:9.1f} conversations/s "
        f"({b_count} sampled in {b_seconds:.2f} s)"
    )
    print(
        f"(c) Redis read + psycopg COPY : {rate_c:9.0f} conversations/s "
        f"({args.conversations} in {c_seconds:.2f} s; the COPY alone: {rate_copy:.0f}/s)"
    )
    print(
        f"(a)/(c) = {rate_a / rate_c:.2f}   (target >= 0.5; "
        f"against the COPY alone: {rate_a / rate_copy:.2f})"
    )
    print(f"(a)/(b) = {rate_a / rate_b:.0f}   (target >= 20)")

    if args.large:
        write_data(
            r,
            conversations=args.large,
            messages=args.messages,
            conv_bytes=args.conversation_bytes,
            noise=args.noise,
            user_id=user_id,
        )
        big = measure_archiver(args)
        delete_rows(db, user_id)
        print(
            f"peak RSS of (a): {a['rss_mib']:.0f} MiB for {args.conversations} conversations, "
            f"{big['rss_mib']:.0f} MiB for {args.large} "
            f"({args.large / big['seconds']:.0f} conversations/s)"
        )
    r.flushdb(asynchronous=True)  # a million keys: let Redis free them in the background
    db.close()


if __name__ == "__main__":
    main()
