"""Chaos run (not a test): load, two archivers and events under scheduled faults; what was lost.

Load, for ``--duration`` seconds:
  * writers append messages to conversations in the seed's layout (conversation:<id>,
    session:<id>, message:<id>:<seq>; no counter, no due index) and end most of them;
  * two `supabase-identity archive --loop` processes archive them;
  * events are logged throughout with `log_user_event` (Redis outbox behind it).

Faults, spread over the run: PostgREST stopped then started; Postgres restarted; Redis
restarted (append-only) or, on the cluster, a primary killed (its replica takes over) and
restarted; an archiver SIGKILLed and started again.

Check: the writers stop, one final `archive --once` runs, the events outbox is flushed, and every
conversation and event is compared with what was written. Report: a table of messages written,
faults, conversations and messages lost (goal 0), rows merged (goal 0), events delivered exactly
once, archive lag p50/p99 (end -> archived, from the rows' ended_at and archived_at), and the
recovery time after each fault (until a conversation ended once it is over is archived).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis
import redis.cluster

from supabase_identity import IdentityClient
from supabase_identity._redis import RedisClient, connect_redis
from supabase_identity._redis_keys import conversation_key, message_key, session_key

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "supabase-identity"
STACK = ROOT / "scripts" / "stack"
TTL = 3600


@dataclass
class Written:
    """What the writers got Redis to acknowledge, per conversation."""

    messages: dict[str, int] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Fault:
    name: str
    started: float = 0.0
    ended: float = 0.0
    recovery: float | None = None


def nothing() -> None:
    """A fault that ends by itself (the replica takes over; the archiver was restarted)."""


def stack(*args: str) -> None:
    subprocess.run([str(STACK), *args], check=True, capture_output=True, text=True)


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cluster = args.topology == "cluster"
        self.url = os.environ["REDIS_CLUSTER_URL"] if self.cluster else os.environ["REDIS_URL"]
        self.env = {**os.environ, "REDIS_URL": self.url}
        self.stop = threading.Event()
        self.written = Written()
        self.events_sent: list[int] = []
        self.faults: list[Fault] = []
        self.archivers: list[subprocess.Popen[bytes] | None] = [None, None]
        #: Writers, events and the fault schedule: joined by ``shutdown`` whatever happens.
        self.threads: list[threading.Thread] = []
        self.tag = uuid.uuid4().hex[:8]
        with IdentityClient(redis_url=None) as client:
            self.user_id, _ = client.get_or_create_user(f"chaos-{self.tag}.myshopify.com")

    def redis(self) -> RedisClient:
        return connect_redis(
            self.url, cluster=self.cluster, socket_connect_timeout=2, socket_timeout=5
        )

    # ------------------------------------------------------------------ load

    def writer(self, seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 - load shape, not security
        r = self.redis()
        live: dict[str, int] = {}
        while not self.stop.is_set():
            try:
                if len(live) < 20:
                    cid = f"chaos-{self.tag}-{uuid.uuid4().hex[:12]}"
                    r.hset(conversation_key(cid), mapping={"id": cid, "workflow": "chaos"})
                    r.expire(conversation_key(cid), TTL)
                    r.hset(session_key(cid), mapping={"user_id": self.user_id})
                    r.expire(session_key(cid), TTL)
                    live[cid] = 0
                    with self.written.lock:
                        self.written.messages[cid] = 0
                cid = rng.choice(list(live))
                seq = live[cid]
                key = message_key(cid, seq)
                stamp = datetime.now(UTC).isoformat()
                r.hset(
                    key, mapping={"sender": "user", "content": f"{cid}/{seq}", "timestamp": stamp}
                )
                r.expire(key, TTL)
                live[cid] = seq + 1
                with self.written.lock:
                    self.written.messages[cid] = seq + 1
                if seq + 1 >= rng.randint(3, 30):
                    r.hset(conversation_key(cid), "ended_at", datetime.now(UTC).isoformat())
                    with self.written.lock:
                        self.written.ended.add(cid)
                    del live[cid]
            except redis.RedisError:
                time.sleep(0.2)  # Redis is down (a fault): the write is retried
            time.sleep(0.005)
        r.close()

    def events(self) -> None:
        with IdentityClient(redis_url=self.url) as client:
            n = 0
            while not self.stop.is_set():
                client.log_user_event(self.user_id, "chaos", {"n": n, "tag": self.tag})
                self.events_sent.append(n)
                n += 1
                time.sleep(0.02)

    def start_archiver(self, index: int) -> None:
        self.archivers[index] = subprocess.Popen(
            [str(CLI), "archive", "--loop", "--interval", "1", "--window", "1440"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    # ------------------------------------------------------------------ faults

    def probe_recovery(self, fault: Fault) -> None:
        """Time from the end of a fault until a conversation ended then is archived."""
        cid = f"chaos-{self.tag}-probe-{len(self.faults)}"
        deadline = time.monotonic() + 120
        r: RedisClient | None = None
        while time.monotonic() < deadline:
            try:
                r = r or self.redis()
                if not r.exists(conversation_key(cid)):
                    r.hset(conversation_key(cid), mapping={"id": cid})
                    r.expire(conversation_key(cid), TTL)
                    r.hset(session_key(cid), mapping={"user_id": self.user_id})
                    r.expire(session_key(cid), TTL)
                    stamp = datetime.now(UTC).isoformat()
                    r.hset(
                        message_key(cid, 0),
                        mapping={"sender": "probe", "content": f"{cid}/0", "timestamp": stamp},
                    )
                    r.expire(message_key(cid, 0), TTL)
                    r.hset(conversation_key(cid), "ended_at", datetime.now(UTC).isoformat())
                    with self.written.lock:
                        self.written.messages[cid] = 1
                        self.written.ended.add(cid)
                if r.hget(conversation_key(cid), "archived_count") == b"1":
                    fault.recovery = time.monotonic() - fault.ended
                    return
            except redis.RedisError:
                r = None
            time.sleep(0.1)

    def fault(self, name: str, begin: Callable[[], None], end: Callable[[], None]) -> None:
        fault = Fault(name, started=time.monotonic())
        self.faults.append(fault)
        print(f"chaos: {name}", flush=True)
        try:
            begin()
        finally:
            end()  # a fault that failed half-way still ends: nothing stays down
        fault.ended = time.monotonic()
        threading.Thread(target=self.probe_recovery, args=(fault,), daemon=True).start()

    def stop_postgrest(self) -> None:
        stack("down", "postgrest")
        time.sleep(5)

    def kill_primary(self) -> None:
        rc = redis.cluster.RedisCluster.from_url(self.url.rsplit("/", 1)[0])
        node = rc.get_primaries()[0]  # type: ignore[no-untyped-call]
        with contextlib.suppress(redis.RedisError):
            rc.get_redis_connection(node).shutdown(nosave=True)
        rc.close()
        time.sleep(4)  # the replica takes over after the 2 s node timeout
        stack("cluster", "up")

    def kill_archiver(self) -> None:
        proc = self.archivers[0]
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(3)
        self.start_archiver(0)

    def schedule(self) -> None:
        plan: list[tuple[str, Callable[[], None], Callable[[], None]]] = [
            ("PostgREST stopped for 5 s", self.stop_postgrest, lambda: stack("up", "postgrest")),
            ("Postgres restarted", lambda: stack("down", "postgres"), lambda: stack("up")),
            (
                ("primary killed, replica promoted" if self.cluster else "Redis restarted"),
                (self.kill_primary if self.cluster else lambda: stack("down", "redis")),
                (nothing if self.cluster else lambda: stack("up", "redis")),
            ),
            ("archiver SIGKILLed", self.kill_archiver, nothing),
        ]
        step = self.args.duration / (len(plan) + 1)
        for name, begin, end in plan:
            if self.stop.wait(step):
                return
            self.fault(name, begin, end)

    # ------------------------------------------------------------------ run and check

    def run(self) -> None:
        started = time.monotonic()
        for index in range(2):
            self.start_archiver(index)
        threads = [threading.Thread(target=self.writer, args=(i,)) for i in range(2)]
        threads.append(threading.Thread(target=self.events))
        faults = threading.Thread(target=self.schedule)
        self.threads = [*threads, faults]
        for thread in self.threads:
            thread.start()
        remaining = self.args.duration - (time.monotonic() - started)
        time.sleep(max(0.0, remaining))
        faults.join()
        self.stop.set()
        for thread in threads:
            thread.join()
        deadline = time.monotonic() + 120
        while any(f.recovery is None for f in self.faults) and time.monotonic() < deadline:
            time.sleep(0.5)
        for proc in self.archivers:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
        final = subprocess.run(
            [str(CLI), "archive", "--once", "--window", "1440"],
            env=self.env,
            capture_output=True,
            text=True,
        )
        print(f"chaos: final pass: {final.stdout.strip()} {final.stderr.strip()[-300:]}")
        with IdentityClient(redis_url=self.url) as client:
            for _ in range(20):
                if client.flush_events().remaining == 0:
                    break
                time.sleep(1)
        self.report()

    def shutdown(self) -> None:
        """Whatever happened: stop the load, kill the archivers, bring every service back.

        Runs after a failed run too (an exception, Ctrl-C), so no archiver process and no
        writer thread outlives the benchmark, and no service stays down after a fault that
        was cut short.
        """
        self.stop.set()
        for proc in self.archivers:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        for thread in self.threads:
            thread.join()
        stack("up")
        if self.cluster:
            stack("cluster", "up")

    def report(self) -> None:
        # A connection opened now: Postgres was restarted during the run.
        with psycopg.connect(os.environ["SUPABASE_DB_URL"], autocommit=True) as db:
            self.table(db)

    def table(self, db: psycopg.Connection[Any]) -> None:
        written = self.written.messages
        rows = db.execute(
            "select source_id, message_count, messages, "
            "extract(epoch from archived_at - ended_at) from identity.conversations "
            "where user_id = %s",
            (self.user_id,),
        ).fetchall()
        stored = {str(r[0]): r for r in rows}
        lost_conversations = [cid for cid in written if cid not in stored]
        lost_messages = sum(
            max(0, count - (stored[cid][1] if cid in stored else 0))
            for cid, count in written.items()
        )
        wrong = [
            cid
            for cid, count in written.items()
            if cid in stored
            and [m.get("content") for m in stored[cid][2]][:count]
            != [f"{cid}/{seq}" for seq in range(count)]
            and not cid.startswith(f"chaos-{self.tag}-probe")
        ]
        lags = sorted(
            float(r[3]) for cid, r in stored.items() if cid in self.written.ended and r[3]
        )
        counts: dict[int, int] = {
            int(n): int(c)
            for n, c in db.execute(
                "select (event_data->>'n')::int, count(*) from identity.events "
                "where user_id = %s and event_type = 'chaos' group by 1",
                (self.user_id,),
            ).fetchall()
        }
        once = len([n for n in self.events_sent if counts.get(n) == 1])
        duplicated = len([c for c in counts.values() if c > 1])

        def pct(q: float) -> str:
            if not lags:
                return "n/a"
            return f"{lags[min(len(lags) - 1, int(q * len(lags)))]:.1f} s"

        print()
        print(f"chaos run: {self.args.duration:.0f} s, {self.args.topology} Redis")
        print()
        print("| measure | value | goal |")
        print("|---|---|---|")
        print(f"| conversations written | {len(written)} ({len(self.written.ended)} ended) | |")
        print(f"| messages written | {sum(written.values())} | |")
        print(f"| faults | {len(self.faults)}: {'; '.join(f.name for f in self.faults)} | |")
        print(f"| conversations lost | {len(lost_conversations)} | 0 |")
        print(f"| messages lost | {lost_messages} | 0 |")
        print(f"| rows merged (another's messages, or out of order) | {len(wrong)} | 0 |")
        print(
            f"| events delivered exactly once | {once} of {len(self.events_sent)} "
            f"({duplicated} duplicated) | all |"
        )
        print(f"| archive lag, end -> archived, p50 / p99 | {pct(0.5)} / {pct(0.99)} | |")
        for fault in self.faults:
            value = f"{fault.recovery:.1f} s" if fault.recovery is not None else "not recovered"
            print(f"| recovery after: {fault.name} | {value} | |")
        if lost_conversations:
            print(f"lost (first 5): {lost_conversations[:5]}")


def main() -> None:
    # The faults make the library warn about every event it keeps for later: that is the
    # expected behaviour here, not news. Errors still print.
    logging.getLogger("supabase_identity").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    parser.add_argument("--topology", choices=["single", "cluster"], default="single")
    args = parser.parse_args()
    chaos = Chaos(args)
    try:
        chaos.run()
    finally:
        chaos.shutdown()


if __name__ == "__main__":
    main()
