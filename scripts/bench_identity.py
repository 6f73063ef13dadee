#!/usr/bin/env python3
"""Benchmark (not a test) for issue 3: SDK latency next to the floor and the seed's approach.

Run against the local stack (``eval "$(scripts/stack env)"`` first; ``scripts/bench identity``
is meant to call this). Measured in one run, on one pooled httpx client:

  floor           a trivial GET through the same gateway (indexed lookup returning no row)
  sdk new         get_or_create_user for a shop never seen (one RPC)
  sdk returning   get_or_create_user for a known shop (same RPC, update branch)
  seed new        the seed's approach: SELECT by shop, then INSERT (two round trips)
  seed returning  SELECT by shop, then UPDATE last_seen (two round trips)
  history page    get_user_conversations(limit=20) with the exact total, 200 conversations

The measurements are interleaved (one call of each per round) so that drift affects them alike.
Prints p50/p99 in milliseconds and each p50 as a multiple of the floor's p50.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from supabase_identity import IdentityClient


def measure_interleaved(
    measurements: dict[str, Callable[[int], object]], n: int, warmup: int = 20
) -> dict[str, list[float]]:
    """Time every measurement once per round, ``n`` rounds: drift on a shared 2-core machine
    (other processes, CPU frequency) then touches the floor and the rest alike."""
    for i in range(warmup):
        for fn in measurements.values():
            fn(-1 - i)
    out: dict[str, list[float]] = {name: [] for name in measurements}
    for i in range(n):
        for name, fn in measurements.items():
            start = time.perf_counter()
            fn(i)
            out[name].append((time.perf_counter() - start) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="samples per measurement")
    args = parser.parse_args()
    n = args.n
    run = uuid.uuid4().hex[:8]

    with IdentityClient(redis_url=None) as client:
        http: httpx.Client = client.supabase.postgrest.session
        rest = client.base_url + "/rest/v1"
        key = client._api_key  # the bench, like the SDK, sends the service key
        headers = {
            "apikey": key,
            "Authorization": f"Bearer {key}",
            "Accept-Profile": "identity",
            "Content-Profile": "identity",
        }

        def floor(_: int) -> None:
            r = http.get(
                f"{rest}/users",
                params={"select": "id", "id": "eq.usr_none0000000000000"},
                headers=headers,
            )
            r.raise_for_status()

        def shop(kind: str, i: int) -> str:
            return f"bench-{run}-{kind}-{i if i >= 0 else f'w{-i}'}.myshopify.com"

        def sdk_new(i: int) -> None:
            client.get_or_create_user(shop("sdk", i))

        def sdk_returning(i: int) -> None:
            client.get_or_create_user(shop("sdk", i % n))

        def seed_get_or_create(returning: bool) -> Callable[[int], None]:
            def go(i: int) -> None:
                domain = shop("seed", i % n if returning else i)
                found = http.get(
                    f"{rest}/users",
                    params={"select": "id", "shop_domain": f"eq.{domain}"},
                    headers=headers,
                )
                found.raise_for_status()
                rows = found.json()
                if rows:
                    upd = http.patch(
                        f"{rest}/users",
                        params={"id": f"eq.{rows[0]['id']}"},
                        json={"last_seen": datetime.now(UTC).isoformat()},
                        headers={**headers, "Prefer": "return=minimal"},
                    )
                    upd.raise_for_status()
                else:
                    ins = http.post(
                        f"{rest}/users",
                        json={"id": "usr_" + secrets.token_hex(12), "shop_domain": domain},
                        headers={**headers, "Prefer": "return=minimal"},
                    )
                    ins.raise_for_status()

            return go

        user_id, _ = client.get_or_create_user(shop("hist", 0))
        base = datetime.now(UTC) - timedelta(days=30)
        rows = [
            {
                "id": str(uuid.uuid4()),
                "user_id": user_id,
                "started_at": (base + timedelta(minutes=i)).isoformat(),
                "messages": [{"sender": "user", "content": "x" * 200}] * 20,
            }
            for i in range(200)
        ]
        client.supabase.postgrest.from_("conversations").insert(rows).execute()

        measurements: dict[str, Callable[[int], object]] = {
            "floor": floor,
            "sdk new": sdk_new,
            "sdk returning": sdk_returning,
            "seed new": seed_get_or_create(returning=False),
            "seed returning": seed_get_or_create(returning=True),
            "history page": lambda _: client.get_user_conversations(user_id, limit=20),
        }
        results = measure_interleaved(measurements, n)

    base_p50 = statistics.median(results["floor"])
    print(f"{'measurement':<16} {'p50 ms':>8} {'p99 ms':>8} {'p50/floor':>10}")
    for name, values in results.items():
        p50 = statistics.median(values)
        print(f"{name:<16} {p50:8.2f} {pct(values, 0.99):8.2f} {p50 / base_p50:9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
