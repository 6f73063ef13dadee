"""The seed's end-to-end flows (Phase 4.5.6) on the local stack, for real, in a few lines.

1. A new shop completes Shopify OAuth: user created, `oauth_complete` logged with first_time.
2. The agents side writes conversations to Redis under that user (ConversationStore).
3. The archiver archives them into Supabase (through PostgREST).
4. Profile and history, read over HTTP from the history router (mounted at /api/v1 as the
   seed's agents service mounts its own, served by uvicorn), as the seed's frontend reads
   them; another shop gets 403.
5. The same shop returns: same usr_ id, is_new false, previous conversations visible.

Each run uses a new shop, so it can run any number of times; it uses its own Redis database.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import redis
import uvicorn
from fastapi import FastAPI, Header, HTTPException

from supabase_identity import (
    ArchiverConfig,
    AsyncIdentityClient,
    ConversationArchiver,
    ConversationStore,
    IdentityClient,
    complete_oauth,
)
from supabase_identity.api import history_router

DEMO_REDIS_DB = 2
SCRIPT = [
    ("shopify_onboarding", ["Hi, I just installed the app", "Welcome! Let's connect your store."]),
    ("ad_hoc_support", ["Why did my sales drop yesterday?", "Two products went out of stock."]),
    ("weekly_review", ["Show me last week", "Revenue is up 12% week over week."]),
]


def step(text: str) -> None:
    print(f"\n> {text}")


def current_user(authorization: str = Header(default="")) -> dict[str, Any]:
    """The demo service's auth: a bearer token signed with the project's JWT secret."""
    try:
        claims = jwt.decode(
            authorization.removeprefix("Bearer "),
            os.environ["SUPABASE_JWT_SECRET"],
            algorithms=["HS256"],
            audience="authenticated",
        )
    except jwt.PyJWTError as err:
        raise HTTPException(status_code=401, detail="Not authenticated") from err
    return {"user_id": claims["app_metadata"]["user_id"]}


def token_for(user_id: str) -> dict[str, str]:
    """What the auth service hands the frontend after login (here: a 5-minute token)."""
    claims = {
        "sub": user_id,
        "role": "authenticated",
        "aud": "authenticated",
        "app_metadata": {"user_id": user_id},
        "exp": int(time.time()) + 300,
    }
    return {"Authorization": f"Bearer {jwt.encode(claims, os.environ['SUPABASE_JWT_SECRET'])}"}


def agents_service() -> FastAPI:
    """The agents service's history API: the package's router, mounted as the seed mounts it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncIdentityClient(redis_url=None) as identity:
            app.state.identity = identity
            yield

    app = FastAPI(lifespan=lifespan)
    router = history_router(get_current_user=current_user, client=lambda: app.state.identity)
    app.include_router(router, prefix="/api/v1")
    return app


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """uvicorn on a free loopback port, in a thread; stopped on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start the demo's history API")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def show(http: httpx.Client, user_id: str, path: str) -> httpx.Response:
    """GET ``path`` as ``user_id`` and print the request line and status."""
    response = http.get(path, headers=token_for(user_id))
    print(f"  GET {http.base_url.path.rstrip('/')}{path} -> {response.status_code}")
    return response


def main() -> int:
    redis_url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + f"/{DEMO_REDIS_DB}"
    r = redis.Redis.from_url(redis_url)
    shop = f"demo-{uuid.uuid4().hex[:6]}.myshopify.com"
    with IdentityClient(redis_url=redis_url) as identity:
        step(f"{shop} completes Shopify OAuth")
        login = complete_oauth(shop, redis_client=r, client=identity, email="owner@example.com")
        print(f"  user {login.user_id}  is_new={login.is_new}  merchant {login.merchant_id}")
        event = [e for e in identity.iter_user_events(login.user_id)][-1]
        print(f"  event {event['event_type']} {event['event_data']}")

        step("the agents service writes 3 conversations to Redis")
        store = ConversationStore(r)
        started = datetime.now(UTC) - timedelta(hours=3)
        for n, (workflow, lines) in enumerate(SCRIPT):
            conversation_id = str(uuid.uuid4())
            store.create_session(
                conversation_id,
                user_id=login.user_id,
                merchant_id=login.merchant_id,
                workflow_name=workflow,
                started_at=started + timedelta(hours=n),
            )
            for i, line in enumerate(lines):
                store.append_message(
                    conversation_id,
                    sender="merchant" if i % 2 == 0 else "cj",
                    content=line,
                    timestamp=started + timedelta(hours=n, minutes=i),
                )
            store.end_conversation(conversation_id)
            print(f"  {conversation_id}  {workflow}  {len(lines)} messages")

        step("the archiver runs one pass")
        report = ConversationArchiver(identity, r, config=ArchiverConfig()).run_once()
        print(f"  found {report.found}, archived {report.archived}, failed {report.failed_count}")

        step("the frontend reads profile and history over HTTP (the router, RLS behind it)")
        with serving(agents_service()) as base, httpx.Client(base_url=f"{base}/api/v1") as http:
            user = login.user_id
            profile = show(http, user, f"/users/{user}/profile").json()
            stats = profile["stats"]
            print(
                f"    {profile['shop_domain']} {profile['email']}: "
                f"{stats['total_conversations']} conversations, {stats['total_messages']} "
                f"messages, {stats['total_events']} events"
            )
            listing = show(http, user, f"/users/{user}/conversations?limit=10").json()
            for item in listing["conversations"]:
                started_at = datetime.fromisoformat(item["started_at"])
                print(
                    f"    {started_at:%H:%M}  {item['workflow']:<20} "
                    f"{item['message_count']} messages"
                )
            newest = listing["conversations"][0]["id"]
            detail = show(http, user, f"/users/{user}/conversations/{newest}").json()
            for message in detail["messages"]:
                print(f"    {message['sender']:>8}: {message['content']}")
            stranger = complete_oauth(f"other-{shop}", redis_client=r, client=identity)
            denied = show(http, stranger.user_id, f"/users/{user}/conversations")
            print(f"    (as {stranger.shop_domain}: {denied.json()['detail']})")

        step(f"{shop} logs in again")
        back = complete_oauth(shop, redis_client=r, client=identity)
        same = back.user_id == login.user_id
        print(f"  user {back.user_id}  is_new={back.is_new}  same id: {same}")
        with serving(agents_service()) as base, httpx.Client(base_url=f"{base}/api/v1") as http:
            page = show(http, back.user_id, f"/users/{back.user_id}/conversations").json()
        print(f"  previous conversations visible: {page['total']}")

    ok = (
        login.is_new
        and not back.is_new
        and same
        and report.archived == len(SCRIPT)
        and page["total"] == len(SCRIPT)
        and denied.status_code == 403
    )
    print("\ndemo: OK" if ok else "\ndemo: FAILED")
    r.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
