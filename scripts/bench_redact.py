#!/usr/bin/env python3
"""Benchmark (not a test): a ``shop/redact`` webhook for a large shop, answered within 5 s.

Run against the local stack (``scripts/bench redact``). One shop with ``--archived`` archived
conversations (and as many events) in Postgres and ``--live`` live conversations of
``--messages`` messages in Redis; the compliance router served by uvicorn on a loopback socket.

  baseline   p50 of a signed webhook of an ignored topic to the same server (signature check,
             routing, the answer: the router's floor), measured in the same run
  answer     time until the shop/redact answer arrived; its ratio to the baseline; Shopify's
             limit is 5 s
  erased     time from the request until no row and no key of the shop was left
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import socket
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import psycopg
import redis
import redis.asyncio
import uvicorn
from fastapi import FastAPI

from supabase_identity import AsyncIdentityClient, IdentityClient
from supabase_identity._redis_keys import session_key
from supabase_identity.api import shopify_webhooks_router
from supabase_identity.archive import ConversationStore

SECRET = f"bench-{uuid.uuid4().hex}"


def build_app(redis_url: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        r = redis.asyncio.Redis.from_url(redis_url)
        async with AsyncIdentityClient(redis_client=r) as identity:
            app.state.identity, app.state.redis = identity, r
            yield
        await r.aclose()

    app = FastAPI(lifespan=lifespan)
    app.include_router(
        shopify_webhooks_router(
            client=lambda: app.state.identity,
            redis_client=lambda: app.state.redis,
            audit_key="bench-audit-key",
        )
    )
    return app


def post(http: httpx.Client, url: str, topic: str, shop: str) -> httpx.Response:
    body = json.dumps({"shop_id": 1, "shop_domain": shop}).encode()
    signature = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest())
    headers = {
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Hmac-Sha256": signature.decode(),
    }
    return http.post(url, content=body, headers=headers, timeout=30)


def populate(
    db: psycopg.Connection[tuple[object, ...]],
    r: redis.Redis,
    shop: str,
    archived: int,
    live: int,
    messages: int,
) -> tuple[str, list[str]]:
    with IdentityClient(redis_url=None) as client:
        user_id, _ = client.get_or_create_user(shop)
    db.execute(
        "insert into identity.conversations (id, user_id, workflow_name, started_at, messages)"
        " select gen_random_uuid(), %s, 'bench', now() - make_interval(mins => g),"
        " jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'hello ' || g))"
        " from generate_series(1, %s) as g",
        (user_id, archived),
    )
    db.execute(
        "insert into identity.events (id, user_id, event_type, created_at)"
        " select gen_random_uuid(), %s, 'bench', now() from generate_series(1, %s)",
        (user_id, archived),
    )
    store = ConversationStore(r)
    ids = [f"bench-{uuid.uuid4().hex}" for _ in range(live)]
    for conversation_id in ids:
        store.create_session(conversation_id, user_id=user_id)
        for seq in range(messages):
            store.append_message(conversation_id, sender="user", content=f"message {seq}")
    return user_id, ids


def erased(
    db: psycopg.Connection[tuple[object, ...]], r: redis.Redis, user: str, ids: list[str]
) -> bool:
    row = db.execute(
        "select (select count(*) from identity.users where id = %s)"
        " + (select count(*) from identity.conversations where user_id = %s)"
        " + (select count(*) from identity.events where user_id = %s)",
        (user, user, user),
    ).fetchone()
    return row is not None and row[0] == 0 and not r.exists(*(session_key(i) for i in ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archived", type=int, default=10_000)
    parser.add_argument("--live", type=int, default=100)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--baseline-requests", type=int, default=100)
    args = parser.parse_args()
    os.environ["SHOPIFY_API_SECRET"] = SECRET
    redis_url = os.environ["REDIS_URL"]
    r = redis.Redis.from_url(redis_url)
    db = psycopg.connect(os.environ["SUPABASE_DB_URL"], autocommit=True)
    shop = f"bench-{uuid.uuid4().hex[:12]}.myshopify.com"
    print(
        f"populating {shop}: {args.archived:,} archived conversations and events, "
        f"{args.live} live conversations x {args.messages} messages"
    )
    user, ids = populate(db, r, shop, args.archived, args.live, args.messages)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/webhooks/shopify"
    server = uvicorn.Server(uvicorn.Config(build_app(redis_url), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    http = httpx.Client()  # one pooled connection, as Shopify's deliveries reuse theirs
    try:
        floor = []
        for _ in range(args.baseline_requests):
            began = time.perf_counter()
            post(http, url, "orders/create", shop).raise_for_status()
            floor.append(time.perf_counter() - began)
        began = time.perf_counter()
        answer = post(http, url, "shop/redact", shop)
        answered = time.perf_counter() - began
        answer.raise_for_status()
        while not erased(db, r, user, ids):
            if time.perf_counter() - began > 300:
                raise SystemExit("bench: the shop was not erased within 300 s")
            time.sleep(0.05)
        done = time.perf_counter() - began
    finally:
        http.close()
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
    base = statistics.median(floor)
    load = os.getloadavg()[0]
    print(f"load average {load:.1f}")
    print(f"baseline (ignored topic, p50 of {len(floor)}): {base * 1000:.1f} ms")
    print(
        f"shop/redact answered in {answered * 1000:.1f} ms = {answered / base:.1f}x the "
        f"baseline; Shopify's limit 5 s: {'met' if answered < 5 else 'MISSED'}"
    )
    print(f"every copy erased {done:.2f} s after the request ({done / answered:.0f}x the answer)")
    db.close()
    r.close()


if __name__ == "__main__":
    main()
