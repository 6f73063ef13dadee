"""Benchmark (not a test): the archiver against baselines measured in the same run.

Data: N conversations x M messages (about B bytes per conversation) among K unrelated keys, in
one of two layouts, on one of two topologies:

  layout seed    what the agents service writes: conversation:<id>, session:<id>,
                 message:<id>:<seq>; no message counter, no due index (found by SCAN)
  layout store   what ConversationStore writes: the same keys plus message_count and the due index
  topology single   a dedicated database of the stack's Redis
  topology cluster  the stack's Redis Cluster (scripts/stack cluster), 3 primaries + 3 replicas

Measurements:
  archiver   ConversationArchiver.run_once() in a fresh process (peak RSS measured there),
             Redis -> PostgREST -> Postgres, marked in Redis;
  cli        `supabase-identity archive --once` timed from spawn to exit (process start included);
  direct     the baseline: the same Redis reads pipelined (message keys known in advance), rows
             built the same way, then a psycopg COPY into a scratch table: no HTTP, no search.

With no option, every target of the archiver is measured and reported as a ratio:
  1. seed layout through the CLI vs the direct path, at 200,000 unrelated keys   >= 0.5 (0.7)
  2. store layout (the archiver) vs the direct path                            >= 0.5
  3. seed layout with 1,000,000 unrelated keys vs with none                   >= 0.85
  4. Redis Cluster vs a single node (seed layout, same data)                  >= 0.7
  5. peak RSS, 5,000 vs 50,000 conversations                                  flat
  6. the archiver with conversation search vs without it (English-like text,  >= 0.9
     store layout, no unrelated keys)
--layout/--noise/--topology measure one configuration instead (archiver and cli vs direct).
Rows are written under a benchmark user and deleted between measurements.

Target 6's baseline is the same archiver on the same database, alternated round by round, with
the search work switched off (SearchSwitch): the GIN index dropped and
identity.conversation_search_vector replaced by one returning an empty vector, so neither
tokenizing nor index maintenance happens. Both are restored exactly (their definitions are read
from the catalog first) after every round and whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
import redis
import redis.cluster
from bench_text import TextGenerator
from psycopg import sql
from redis.typing import EncodableT, FieldT

from supabase_identity import IdentityClient
from supabase_identity._redis import RedisClient, connect_redis
from supabase_identity._redis_keys import (
    DUE_KEY,
    conversation_key,
    message_key,
    session_key,
)
from supabase_identity.archive import ArchiverConfig, ConversationArchiver
from supabase_identity.archive._rows import RawConversation, build_row

BENCH_DB = 9
BENCH_SHOP = "bench-archiver.myshopify.com"
CLI = Path(sys.executable).parent / "supabase-identity"
COLUMNS = (
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


@dataclass(frozen=True)
class Shape:
    conversations: int
    messages: int
    conv_bytes: int
    noise: int
    layout: str
    topology: str
    #: Database of the single node (the cluster has only 0).
    database: int = BENCH_DB
    #: English-like message text (tokenizing it is what search costs), else one repeated letter.
    english: bool = False


def redis_url(topology: str, database: int = BENCH_DB) -> str:
    if topology == "cluster":
        url = os.environ.get("REDIS_CLUSTER_URL")
        if not url:
            sys.exit("bench: REDIS_CLUSTER_URL is not set (scripts/bench starts the cluster)")
        return url
    return os.environ["REDIS_URL"].rsplit("/", 1)[0] + f"/{database}"


def connect(topology: str, database: int = BENCH_DB) -> RedisClient:
    return connect_redis(redis_url(topology, database), cluster=topology == "cluster")


def flush(r: RedisClient) -> None:
    if isinstance(r, redis.cluster.RedisCluster):
        for node in r.get_primaries():  # type: ignore[no-untyped-call]
            r.get_redis_connection(node).flushall()
    else:
        r.flushdb()


def write_data(r: RedisClient, shape: Shape, user_id: str, *, noise: bool = True) -> list[str]:
    """The chosen layout, written with large pipelines to keep setup short.

    ``noise=False`` keeps the keyspace as it is (unrelated keys written before) and only adds
    the conversations.
    """
    pipe = r.pipeline(transaction=False)
    if noise:
        flush(r)
        for i in range(shape.noise):
            pipe.set(f"cache:product:{i}", "x" * 32)
            if i % 10_000 == 9_999:
                pipe.execute()
        pipe.execute()
    size = max(1, shape.conv_bytes // shape.messages - 90)
    # English-like bodies are drawn once into a pool and reused: generating 100,000 of them
    # would take longer than the measurement, and Postgres caches no tokenizing between rows.
    bodies = (
        itertools.cycle([TextGenerator(seed=6).text(size) for _ in range(997)])
        if shape.english
        else itertools.repeat("m" * size)
    )
    expires = int(time.time()) + 3600
    base = datetime(2026, 1, 1, tzinfo=UTC)
    ids = []
    for n in range(shape.conversations):
        cid = str(uuid.uuid4())
        ids.append(cid)
        fields: dict[FieldT, EncodableT] = {
            "user_id": user_id,
            "merchant_id": "merchant_bench-archiver",
            "workflow_name": "shopify_onboarding",
            "started_at": base.isoformat(),
        }
        conv: dict[FieldT, EncodableT] = {"id": cid, **fields}
        if shape.layout == "store":
            conv["message_count"] = shape.messages
            pipe.zadd(DUE_KEY, {cid: expires})
        pipe.hset(session_key(cid), mapping=fields)
        pipe.hset(conversation_key(cid), mapping=conv)
        for seq in range(shape.messages):
            pipe.hset(
                message_key(cid, seq),
                mapping={
                    "sender": "user" if seq % 2 == 0 else "cj",
                    "content": next(bodies),
                    "timestamp": (base + timedelta(seconds=seq)).isoformat(),
                },
            )
            pipe.expire(message_key(cid, seq), 3600)
        pipe.expire(session_key(cid), 3600)
        pipe.expire(conversation_key(cid), 3600)
        if n % 200 == 199:
            pipe.execute()
    pipe.execute()
    return ids


def settle(r: RedisClient) -> None:
    """Wait until no node rewrites its append-only file or saves in the background.

    Writing a million keys makes Redis rewrite its AOF in a forked child; on a two-core machine
    that child would otherwise run during the next measurement and tilt it.
    """
    clients = (
        [r.get_redis_connection(n) for n in r.get_nodes()]  # type: ignore[no-untyped-call]
        if isinstance(r, redis.cluster.RedisCluster)
        else [r]
    )
    for node in clients:
        while True:
            info = node.info("persistence")
            if not (info.get("aof_rewrite_in_progress") or info.get("rdb_bgsave_in_progress")):
                break
            time.sleep(0.2)


def remove_conversations(r: RedisClient, ids: list[str], messages: int) -> None:
    """Delete a measurement's conversations, leaving the unrelated keys in place."""
    keys = [k for cid in ids for k in (conversation_key(cid), session_key(cid))]
    keys += [message_key(cid, seq) for cid in ids for seq in range(messages)]
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.delete(key)
    pipe.zrem(DUE_KEY, *ids)
    pipe.execute()


def delete_rows(db: psycopg.Connection[Any], user_id: str) -> None:
    db.execute("delete from identity.conversations where user_id = %s", (user_id,))
    db.execute("vacuum analyze identity.conversations")


# ------------------------------------------------------------------ measurements


def peak_rss_kib() -> int:
    """This process's own peak RSS (KiB): ``VmHWM``, the high-water mark of its memory map.

    Not ``getrusage().ru_maxrss``: Linux carries the parent's peak into a child across
    ``fork``/``execve``, so a worker spawned by a bench that had just written 50,000
    conversations reported the bench's memory, not the archiver's.
    """
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: no such inheritance


def run_worker(args: argparse.Namespace) -> None:
    """(archiver), in this fresh process: one pass; prints seconds, counts and peak RSS."""
    r = connect(args.topology, args.database)
    with IdentityClient(redis_url=None) as client:
        archiver = ConversationArchiver(
            client, r, config=ArchiverConfig(scan_legacy=args.layout == "seed")
        )
        started = time.perf_counter()
        report = archiver.run_once()
        seconds = time.perf_counter() - started
    rss_kib = peak_rss_kib()
    result = {
        "seconds": seconds,
        "archived": report.archived,
        "failed": report.failed_count,
        "rss_mib": rss_kib / 1024,
    }
    print(json.dumps(result))


def measure_archiver(shape: Shape) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--layout",
        shape.layout,
        "--topology",
        shape.topology,
        "--database",
        str(shape.database),
    ]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["archived"] != shape.conversations or result["failed"]:
        sys.exit(f"bench: the archiver did not archive everything: {result}")
    return result


def measure_cli(shape: Shape) -> float:
    """Seconds for `supabase-identity archive --once`, from spawn to exit."""
    env = {**os.environ, "REDIS_URL": redis_url(shape.topology, shape.database)}
    started = time.perf_counter()
    done = subprocess.run(
        [str(CLI), "archive", "--once", "--json"], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    report = json.loads(done.stdout) if done.stdout else {}
    if done.returncode != 0 or report.get("archived") != shape.conversations:
        sys.exit(f"bench: archive --once failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return seconds


def pages(ids: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def measure_direct(
    r: RedisClient, db: psycopg.Connection[Any], ids: list[str], shape: Shape
) -> float:
    """The baseline: pipelined reads of known keys, the same rows, COPY to a scratch table."""
    db.execute(
        "create temp table if not exists bench_scratch (id uuid, source_id text, user_id text,"
        " merchant_id text, workflow_name text, started_at timestamptz, ended_at timestamptz,"
        " messages jsonb, metadata jsonb)"
    )
    db.execute("truncate bench_scratch")
    copy_sql = f"copy bench_scratch ({', '.join(COLUMNS)}) from stdin"
    started = time.perf_counter()
    for page in pages(ids, 200):
        pipe = r.pipeline(transaction=False)
        for cid in page:
            pipe.hgetall(conversation_key(cid))
            pipe.hgetall(session_key(cid))
            for seq in range(shape.messages):
                pipe.hgetall(message_key(cid, seq))
        replies = pipe.execute()
        step = 2 + shape.messages
        rows = []
        for index, cid in enumerate(page):
            at = index * step
            raw = RawConversation(
                cid,
                replies[at],
                replies[at + 1],
                list(enumerate(replies[at + 2 : at + step])),
            )
            raw.user_id = (replies[at + 1].get(b"user_id") or b"").decode() or None
            rows.append(build_row(raw)[0])
        with db.cursor() as cur, cur.copy(copy_sql) as copy:
            for row in rows:
                copy.write_row(
                    [
                        json.dumps(row[c]) if c in ("messages", "metadata") else row[c]
                        for c in COLUMNS
                    ]
                )
    seconds = time.perf_counter() - started
    db.execute("truncate bench_scratch")
    return seconds


class SearchSwitch:
    """Switches conversation search's write-side work off and on, in the live schema.

    ``off()`` drops the GIN index and replaces identity.conversation_search_vector (which
    archive_conversations and the triggers call) by a function returning an empty vector.
    ``on()`` puts back exactly what was there: the definitions are read from the catalog at
    construction. For the benchmark's baseline only; use as a context manager so the schema is
    restored whatever happens.
    """

    FUNCTION = "identity.conversation_search_vector(jsonb, text)"
    INDEX = "identity.conversations_user_id_search_idx"

    def __init__(self, db: psycopg.Connection[Any]) -> None:
        self.db = db
        row = db.execute(
            "select pg_get_functiondef(%s::regprocedure), pg_get_indexdef(%s::regclass),"
            " obj_description(%s::regclass, 'pg_class')",
            (self.FUNCTION, self.INDEX, self.INDEX),
        ).fetchone()
        assert row is not None
        self.function_def, self.index_def, self.index_comment = row
        self.is_off = False

    def __enter__(self) -> SearchSwitch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.on()

    def off(self) -> None:
        with self.db.transaction():
            self.db.execute(f"drop index {self.INDEX}")
            self.db.execute(
                "create or replace function identity.conversation_search_vector("
                "messages jsonb, workflow_name text) returns tsvector language sql immutable"
                " parallel safe security invoker set search_path = '' as $$ select"
                " ''::pg_catalog.tsvector $$"
            )
        self.is_off = True

    def on(self) -> None:
        if not self.is_off:
            return
        with self.db.transaction():
            self.db.execute(self.function_def)
            self.db.execute(self.index_def)
            self.db.execute(
                sql.SQL("comment on index {} is {}").format(
                    sql.SQL(self.INDEX), sql.Literal(self.index_comment)
                )
            )
        self.is_off = False


# ------------------------------------------------------------------ the suite


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        with IdentityClient(redis_url=None) as client:
            self.user_id, _ = client.get_or_create_user(BENCH_SHOP)
        self.db = psycopg.connect(os.environ["SUPABASE_DB_URL"], autocommit=True)
        self.lines: list[str] = []

    def shape(self, **changes: Any) -> Shape:
        base = {
            "conversations": self.args.conversations,
            "messages": self.args.messages,
            "conv_bytes": self.args.conversation_bytes,
            "noise": 200_000,
            "layout": "seed",
            "topology": "single",
        }
        base.update(changes)
        return Shape(**base)

    def archiver_rate(self, shape: Shape, *, noise: bool = True) -> tuple[float, dict[str, Any]]:
        """One archiver pass over fresh conversations; ``noise=False`` keeps the unrelated keys
        already there (the conversations of the previous measurement are removed)."""
        r = connect(shape.topology, shape.database)
        ids = write_data(r, shape, self.user_id, noise=noise)
        delete_rows(self.db, self.user_id)
        settle(r)
        result = measure_archiver(shape)
        delete_rows(self.db, self.user_id)
        remove_conversations(r, ids, shape.messages)
        r.close()
        return shape.conversations / result["seconds"], result

    def alternate(self, first: Shape, second: Shape, rounds: int) -> tuple[float, float]:
        """Median rates of two shapes measured in turn (drift on a shared machine hits both)."""
        rates: tuple[list[float], list[float]] = ([], [])
        for _ in range(rounds):
            for index, shape in enumerate((first, second)):
                rates[index].append(self.archiver_rate(shape)[0])
        return statistics.median(rates[0]), statistics.median(rates[1])

    def against_direct(self, shape: Shape, how: str, rounds: int) -> tuple[float, float]:
        """Median rates of ``how`` ("cli" or "archiver") and of the direct path, measured in
        turn on the same conversations; the unrelated keys are written once."""
        r = connect(shape.topology, shape.database)
        ours: list[float] = []
        direct: list[float] = []
        for round_ in range(rounds):
            ids = write_data(r, shape, self.user_id, noise=round_ == 0)
            delete_rows(self.db, self.user_id)
            settle(r)
            direct.append(shape.conversations / measure_direct(r, self.db, ids, shape))
            if how == "cli":
                ours.append(shape.conversations / measure_cli(shape))
            else:
                ours.append(shape.conversations / measure_archiver(shape)["seconds"])
            delete_rows(self.db, self.user_id)
            remove_conversations(r, ids, shape.messages)
        r.close()
        return statistics.median(ours), statistics.median(direct)

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def describe(self, shape: Shape) -> str:
        return (
            f"{shape.conversations} conversations x {shape.messages} messages "
            f"(~{shape.conv_bytes} B), {shape.layout} layout, {shape.noise} unrelated keys, "
            f"{shape.topology}"
        )

    def one(self) -> None:
        shape = self.shape(
            noise=self.args.noise, layout=self.args.layout, topology=self.args.topology
        )
        self.say(f"data: {self.describe(shape)}")
        cli, direct = self.against_direct(shape, "cli", 1)
        rate, result = self.archiver_rate(shape)
        self.say(f"direct path (pipelined reads + COPY) : {direct:8.0f} conversations/s")
        self.say(f"archiver, one pass in a process      : {rate:8.0f} conversations/s")
        self.say(f"supabase-identity archive --once     : {cli:8.0f} conversations/s")
        self.say(f"archiver / direct = {rate / direct:.2f}   cli / direct = {cli / direct:.2f}")
        self.say(f"peak RSS of the archiver: {result['rss_mib']:.0f} MiB")

    def suite(self) -> None:
        n = self.args.conversations
        self.say(f"data: {n} conversations x {self.args.messages} messages per measurement")
        rounds = self.args.rounds
        wanted = {int(t) for t in self.args.targets.split(",")}
        if 1 in wanted:
            self.target_1(rounds)
        if 2 in wanted:
            self.target_2(rounds)
        if 3 in wanted:
            self.target_3()
        if 4 in wanted:
            self.target_4()
        if 5 in wanted and self.args.large:
            self.target_5()
        if 6 in wanted:
            self.target_6(rounds)

    def target_1(self, rounds: int) -> None:
        cli, direct = self.against_direct(self.shape(), "cli", rounds)
        self.say(
            f"1. seed layout, 200k unrelated keys: CLI {cli:.0f}/s, direct {direct:.0f}/s -> "
            f"{cli / direct:.2f} (target >= 0.5, stretch 0.7; medians of {rounds} rounds)"
        )

    def target_2(self, rounds: int) -> None:
        store, direct_store = self.against_direct(self.shape(layout="store"), "archiver", rounds)
        self.say(
            f"2. store layout, 200k unrelated keys: archiver {store:.0f}/s, direct "
            f"{direct_store:.0f}/s -> {store / direct_store:.2f} (target >= 0.5; medians of "
            f"{rounds} rounds)"
        )

    def target_3(self) -> None:
        # 1M unrelated keys are written once; runs without them alternate on another database.
        none_shape = self.shape(noise=0, database=BENCH_DB + 1)
        million_shape = self.shape(noise=1_000_000)
        nones, millions = [], []
        self.archiver_rate(million_shape)  # writes the 1M keys once (and warms up)
        for _ in range(self.args.rounds):
            millions.append(self.archiver_rate(million_shape, noise=False)[0])
            nones.append(self.archiver_rate(none_shape)[0])
        none, million = statistics.median(nones), statistics.median(millions)
        self.say(
            f"3. seed layout, 1,000,000 unrelated keys {million:.0f}/s vs none {none:.0f}/s -> "
            f"{million / none:.2f} (target >= 0.85; medians of {self.args.rounds} alternated runs)"
        )

    def target_4(self) -> None:
        single, cluster = self.alternate(
            self.shape(noise=0), self.shape(noise=0, topology="cluster"), self.args.rounds
        )
        self.say(
            f"4. Redis Cluster {cluster:.0f}/s vs single node {single:.0f}/s -> "
            f"{cluster / single:.2f} (target >= 0.7; medians of {self.args.rounds} alternated runs)"
        )

    def target_5(self) -> None:
        n = self.args.conversations
        if self.args.large:
            _, small = self.archiver_rate(self.shape(layout="store"))
            big_rate, big = self.archiver_rate(
                self.shape(layout="store", conversations=self.args.large)
            )
            self.say(
                f"5. peak RSS: {small['rss_mib']:.0f} MiB for {n} conversations, "
                f"{big['rss_mib']:.0f} MiB for {self.args.large} ({big_rate:.0f}/s) -> "
                f"{big['rss_mib'] / small['rss_mib']:.2f} (target: flat)"
            )

    def target_6(self, rounds: int) -> None:
        shape = self.shape(layout="store", noise=0, english=True)
        with_search: list[float] = []
        without: list[float] = []
        with SearchSwitch(self.db) as switch:
            for _ in range(rounds):
                with_search.append(self.archiver_rate(shape)[0])
                switch.off()
                without.append(self.archiver_rate(shape)[0])
                switch.on()
        on, off = statistics.median(with_search), statistics.median(without)
        self.say(
            f"6. search index: archiver {on:.0f}/s with it vs {off:.0f}/s without -> "
            f"{on / off:.2f} (target >= 0.9; English-like text, store layout; medians of "
            f"{rounds} alternated runs)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--conversations", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument(
        "--conversation-bytes",
        type=int,
        default=5 * 1024,
        help="approximate size of one conversation's messages",
    )
    parser.add_argument(
        "--layout", choices=["seed", "store"], help="measure one configuration: the key layout"
    )
    parser.add_argument("--noise", type=int, default=200_000, help="unrelated Redis keys")
    parser.add_argument("--topology", choices=["single", "cluster"], default="single")
    parser.add_argument(
        "--large",
        type=int,
        default=50_000,
        help="second size for the peak-RSS comparison (0 to skip)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternated runs per target (medians reported)"
    )
    parser.add_argument(
        "--targets", default="1,2,3,4,5,6", help="which targets to measure (comma-separated)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database", type=int, default=BENCH_DB, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    bench = Bench(args)
    try:
        if args.layout:
            bench.one()
        else:
            bench.suite()
    finally:
        bench.db.close()
        for topology, database in (("single", BENCH_DB), ("single", BENCH_DB + 1)):
            flush(connect(topology, database))
        if os.environ.get("REDIS_CLUSTER_URL"):
            flush(connect("cluster"))


if __name__ == "__main__":
    main()
