#!/usr/bin/env python3
"""Benchmark (not a test) for issue 14: what the request guards cost, against themselves off.

Run against the local stack (``scripts/bench guards``). Two ratios, each against a baseline
measured in the same run:

  pre-request   p50 of a trivial GET through the gateway with PostgREST's pre-request function
                (identity_guard.check_request) registered, over the same GET without it. Blocks
                of requests alternate (on, off, off, on, ...) so drift touches both alike; each
                switch waits until PostgREST has reloaded its configuration.
  planner guard time to plan and run a user's history query (the query PostgREST sends, run as
                ``authenticated`` through EXECUTE, so it is planned every time) with the
                restrictive policies, over the same without them (dropped inside a transaction
                that is rolled back: nothing changes for anyone else).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import httpx
import psycopg

PRE_REQUEST = "identity_guard.check_request"


def set_pre_request(db: psycopg.Connection[tuple[object, ...]], rest: str, on: bool) -> None:
    """Register or remove the pre-request function; return once PostgREST has reloaded."""
    if on:
        db.execute(f"alter role authenticator set pgrst.db_pre_request = '{PRE_REQUEST}'")
    else:
        db.execute("alter role authenticator reset pgrst.db_pre_request")
    db.execute("notify pgrst, 'reload config'")
    # The anon key gets the identity description exactly when the function is not registered.
    probe = {"apikey": os.environ["SUPABASE_ANON_KEY"], "Accept-Profile": "identity"}
    want = 401 if on else 200
    deadline = time.monotonic() + 30
    while httpx.get(rest, headers=probe).status_code != want:
        if time.monotonic() > deadline:
            raise SystemExit("PostgREST did not reload its configuration within 30 s")
        time.sleep(0.05)


def pre_request_ratio(db: psycopg.Connection[tuple[object, ...]], blocks: int, n: int) -> None:
    rest = os.environ["SUPABASE_URL"].rstrip("/") + "/rest/v1/"
    url = rest + "users?select=id&id=eq.usr_nobody0000000000000000&limit=1"
    headers = {"apikey": os.environ["SUPABASE_SERVICE_ROLE_KEY"], "Accept-Profile": "identity"}
    samples: dict[bool, list[float]] = {True: [], False: []}
    try:
        with httpx.Client() as client:
            for block in range(blocks):
                on = block % 4 in (0, 3)  # on, off, off, on, ...
                set_pre_request(db, rest, on)
                for _ in range(n // 10):  # new pool connections, prepared statements
                    client.get(url, headers=headers)
                for _ in range(n):
                    start = time.perf_counter()
                    client.get(url, headers=headers)
                    samples[on].append((time.perf_counter() - start) * 1000)
    finally:
        set_pre_request(db, rest, True)
    with_, without = statistics.median(samples[True]), statistics.median(samples[False])
    print(f"trivial GET p50 without pre-request: {without:.3f} ms  (n={len(samples[False])})")
    print(f"trivial GET p50 with pre-request:    {with_:.3f} ms  (n={len(samples[True])})")
    print(f"pre-request: p50 ratio {with_ / without:.3f}, +{with_ - without:.3f} ms a request")


PLAN_AND_RUN = """
do $$
declare
  started timestamptz;
begin
  perform set_config('role', 'authenticated', true);
  perform set_config('request.jwt.claims',
    '{"role":"authenticated","app_metadata":{"user_id":"usr_bench000000000000000000"}}', true);
  started := clock_timestamp();
  for i in 1..%(n)s loop
    execute 'select id, started_at from identity.conversations
             where user_id = $1 order by started_at desc, id desc limit 20'
      using 'usr_bench000000000000000000';
  end loop;
  perform set_config('bench.elapsed_ms',
    (extract(epoch from clock_timestamp() - started) * 1000)::text, true);
  reset role;
end
$$;
"""


def planner_guard_ratio(db: psycopg.Connection[tuple[object, ...]], rounds: int, n: int) -> None:
    timings: dict[bool, list[float]] = {True: [], False: []}
    for i in range(rounds):
        for with_guard in (True, False) if i % 2 == 0 else (False, True):
            with db.transaction(force_rollback=True):
                if not with_guard:
                    for table in ("users", "conversations", "events"):
                        db.execute(
                            'drop policy "Counts come from visible rows, never from planner '
                            f'estimates" on identity.{table}'
                        )
                db.execute(PLAN_AND_RUN % {"n": n})
                row = db.execute("select current_setting('bench.elapsed_ms')").fetchone()
                assert row is not None
                timings[with_guard].append(float(str(row[0])) / n * 1000)
    with_, without = statistics.median(timings[True]), statistics.median(timings[False])
    print(f"user history query, planned each time, without the guard: {without:.1f} µs")
    print(f"user history query, planned each time, with the guard:    {with_:.1f} µs")
    print(f"planner guard: ratio {with_ / without:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=8, help="on/off blocks of requests")
    parser.add_argument("--requests", type=int, default=1500, help="requests per block")
    parser.add_argument("--rounds", type=int, default=10, help="planner-guard rounds")
    parser.add_argument("--queries", type=int, default=5000, help="queries per round")
    args = parser.parse_args()
    with psycopg.connect(os.environ["SUPABASE_DB_URL"], autocommit=True) as db:
        pre_request_ratio(db, args.blocks, args.requests)
        planner_guard_ratio(db, args.rounds, args.queries)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
