#!/usr/bin/env python3
"""Benchmark (not a test): each SDK call next to the same HTTP request made with bare httpx.

Run against the local stack (``scripts/bench identity`` sets the environment). Measured in one
run, on one pooled httpx client, interleaved (one call of each measurement per round, so drift on
a shared machine touches them alike; the order is shuffled every round):

  get_or_create_user, returning   SDK call vs the identical POST rpc/get_or_create_user
  get_or_create_user, new         the same, for a shop never seen
  history page (20, exact total)  SDK call vs the identical GET conversations?…&limit=20
  seed new / seed returning       the seed's two round trips (select, then insert/update)
  floor                           a trivial GET through the same gateway (no row)

The raw request is the SDK's own: its method, URL, query string, headers and JSON body are
captured from one SDK call and replayed with ``httpx.Client.request`` (a fresh ``new_id`` per
call, as the SDK makes), and its body is decoded with ``response.json()``. So ``sdk/raw`` is
what the SDK costs on top of HTTP: building and validating the request, retries, error mapping,
and typed results. Prints p50/p99 in milliseconds and each p50 as a multiple of its baseline.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from supabase_identity import IdentityClient

#: The issue's target: SDK p50 at most this multiple of the raw request's p50.
TARGET = 1.10


def measure_interleaved(
    measurements: dict[str, Callable[[int], object]], n: int, warmup: int = 30
) -> dict[str, list[float]]:
    """Time every measurement once per round, ``n`` rounds, in milliseconds.

    Each round runs the measurements in a new random order (seeded): on a shared machine a
    call is slower or faster depending on what ran just before it, and a fixed order would hand
    that bias to the same measurement every round.
    """
    order = random.Random(20261128)  # noqa: S311 - a shuffle, not cryptography
    names = list(measurements)
    for i in range(warmup):
        for fn in measurements.values():
            fn(-1 - i)
    out: dict[str, list[float]] = {name: [] for name in measurements}
    for i in range(n):
        order.shuffle(names)
        for name in names:
            fn = measurements[name]
            start = time.perf_counter()
            fn(i)
            out[name].append((time.perf_counter() - start) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Captured:
    """The requests an SDK call sent (event hook on the shared pool)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append(request)


def replay(http: httpx.Client, request: httpx.Request) -> Callable[[bytes | None], Any]:
    """Send ``request`` again with bare httpx (optionally another body); decode the JSON."""
    method, url = request.method, str(request.url)
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}

    def send(body: bytes | None) -> Any:
        response = http.request(method, url, headers=headers, content=body)
        if not response.is_success:
            raise SystemExit(f"raw request failed: HTTP {response.status_code} {response.text}")
        return response.json()

    return send


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="rounds (samples per measurement)")
    args = parser.parse_args()
    n: int = args.n
    run = uuid.uuid4().hex[:8]

    with IdentityClient(redis_url=None) as client:
        http: httpx.Client = client._http
        captured = Captured()
        http.event_hooks["request"].append(captured)

        def shop(kind: str, i: int) -> str:
            return f"bench-{run}-{kind}-{i if i >= 0 else f'w{-i}'}.myshopify.com"

        # --- the SDK's own requests, captured once ----------------------------------------
        user_id, _ = client.get_or_create_user(shop("hist", 0))
        goc_request = captured.requests[-1]
        goc_body = json.loads(goc_request.content)
        base = datetime.now(UTC) - timedelta(days=30)
        rows = [
            {
                "id": str(uuid.uuid4()),
                "user_id": user_id,
                "started_at": (base + timedelta(minutes=i)).isoformat(),
                "messages": [{"sender": "user", "content": "x" * 200}] * 20,
                "metadata": {"channel": "web", "n": i},
                "workflow_name": "support",
            }
            for i in range(200)
        ]
        client.supabase.postgrest.from_("conversations").insert(rows).execute()
        page = client.get_user_conversations(user_id, limit=20)
        assert page.total == 200 and len(page.items) == 20, page
        page_request = captured.requests[-1]
        http.event_hooks["request"].remove(captured)

        raw_goc = replay(http, goc_request)
        raw_page = replay(http, page_request)

        def raw_get_or_create(kind: str, returning: bool) -> Callable[[int], object]:
            def go(i: int) -> object:
                body = {**goc_body, "shop_domain": shop(kind, i % n if returning else i)}
                body["new_id"] = "usr_" + secrets.token_hex(12)
                return raw_goc(json.dumps(body, separators=(",", ":")).encode())

            return go

        def sdk_get_or_create(kind: str, returning: bool) -> Callable[[int], object]:
            def go(i: int) -> object:
                return client.get_or_create_user(shop(kind, i % n if returning else i))

            return go

        headers = {k: v for k, v in goc_request.headers.items() if k.lower() != "content-length"}
        rest = client.base_url + "/rest/v1"

        def floor(_: int) -> None:
            http.get(
                f"{rest}/users",
                params={"select": "id", "id": "eq.usr_none0000000000000"},
                headers=headers,
            ).raise_for_status()

        def seed(kind: str, returning: bool) -> Callable[[int], None]:
            def go(i: int) -> None:
                domain = shop(kind, i % n if returning else i)
                found = http.get(
                    f"{rest}/users",
                    params={"select": "id", "shop_domain": f"eq.{domain}"},
                    headers=headers,
                )
                found.raise_for_status()
                if found.json():
                    http.patch(
                        f"{rest}/users",
                        params={"id": f"eq.{found.json()[0]['id']}"},
                        json={"last_seen": datetime.now(UTC).isoformat()},
                        headers={**headers, "Prefer": "return=minimal"},
                    ).raise_for_status()
                else:
                    http.post(
                        f"{rest}/users",
                        json={"id": "usr_" + secrets.token_hex(12), "shop_domain": domain},
                        headers={**headers, "Prefer": "return=minimal"},
                    ).raise_for_status()

            return go

        # The returning shops are the "new" ones of earlier rounds: create them all first.
        for i in range(n):
            client.get_or_create_user(shop("ret", i))
        measurements: dict[str, Callable[[int], object]] = {
            "returning raw": raw_get_or_create("ret", returning=True),
            "returning sdk": sdk_get_or_create("ret", returning=True),
            "new raw": raw_get_or_create("rawnew", returning=False),
            "new sdk": sdk_get_or_create("sdknew", returning=False),
            "history raw": lambda _: raw_page(None),
            "history sdk": lambda _: client.get_user_conversations(user_id, limit=20),
            "seed returning": seed("seedret", returning=True),
            "seed new": seed("seednew", returning=False),
            "floor": floor,
        }
        for i in range(n):  # the seed's returning shops exist before the rounds start
            seed("seedret", returning=False)(i)
        results = measure_interleaved(measurements, n)

    p50 = {name: statistics.median(values) for name, values in results.items()}
    print(f"{n} interleaved rounds; p50/p99 in ms; sdk/raw = SDK p50 / bare-httpx p50\n")
    print(
        f"{'call':<34} {'raw p50':>8} {'sdk p50':>8} {'sdk/raw':>8} {'raw p99':>8} {'sdk p99':>8}"
    )
    verdicts = []
    for label, key in (
        ("get_or_create_user, returning shop", "returning"),
        ("get_or_create_user, new shop", "new"),
        ("history page, 20 rows + exact total", "history"),
    ):
        raw, sdk = results[f"{key} raw"], results[f"{key} sdk"]
        ratio = p50[f"{key} sdk"] / p50[f"{key} raw"]
        print(
            f"{label:<34} {p50[f'{key} raw']:8.2f} {p50[f'{key} sdk']:8.2f} {ratio:7.2f}x "
            f"{pct(raw, 0.99):8.2f} {pct(sdk, 0.99):8.2f}"
        )
        verdicts.append((label, ratio))
    print()
    for name in ("floor", "seed returning", "seed new"):
        ratio = p50[name] / p50["floor"]
        print(f"{name:<34} {p50[name]:8.2f} ms p50 ({ratio:.2f}x the floor)")
    print()
    for label, ratio in verdicts:
        met = "met" if ratio <= TARGET else "NOT met"
        print(f"target sdk/raw <= {TARGET:.2f}x, {label}: {ratio:.2f}x, {met}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
