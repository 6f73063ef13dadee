"""Shopify's compliance webhooks over real HTTP: uvicorn serving the router, the stack behind it.

A module fixture serves a FastAPI app mounting ``shopify_webhooks_router`` on a loopback socket
in a thread (stopped and joined at the end). Its client holds each redaction at a gate the test
opens, so "the answer came before the redaction finished" is decided by the test, not by
timing; "everything is gone" is then waited for with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
import redis
import redis.asyncio
from fastapi import FastAPI

from supabase_identity import (
    AsyncIdentityClient,
    AsyncRedisOutbox,
    IdentityClient,
    RedisOutbox,
    ShopRedaction,
)
from supabase_identity._compliance import shop_hash
from supabase_identity._redis import AsyncRedisClient
from supabase_identity._redis_keys import (
    COMPLIANCE_PENDING_KEY,
    compliance_seen_key,
    outbox_keys,
)
from supabase_identity._sync._compliance import finish_pending_redactions
from supabase_identity.api import shopify_webhooks_router

from .._wait import wait_until
from ._shops import Shop, gone, populate_shop
from ._uvicorn import serve
from .conftest import PostgrestSwitch, SdkEnv, sdk_count, sdk_shop

pytestmark = pytest.mark.integration

SECRET = "shpss_current_secret"
OLD_SECRET = "shpss_previous_secret"
AUDIT_KEY = "webhook-test-audit-key"


@dataclass
class Gate:
    """Holds redactions until :meth:`open`; counts the attempts that ended."""

    opened: threading.Event = field(default_factory=threading.Event)
    ended: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    def open(self) -> None:
        self.opened.set()

    def reset(self) -> None:
        self.opened = threading.Event()
        self.ended = threading.Semaphore(0)


class HeldClient(AsyncIdentityClient):
    """The real client, with each redaction waiting at the test's gate first."""

    gate: Gate

    async def redact_shop(
        self,
        shop_domain: str,
        redis_client: AsyncRedisClient | None = None,
        *,
        audit_key: str | None = None,
    ) -> ShopRedaction:
        try:
            if not await asyncio.to_thread(self.gate.opened.wait, 60):
                raise RuntimeError("the test never opened the gate")
            return await super().redact_shop(shop_domain, redis_client, audit_key=audit_key)
        finally:
            self.gate.ended.release()


@dataclass
class Service:
    url: str
    gate: Gate
    client: IdentityClient
    outbox: RedisOutbox
    redis: redis.Redis


def build_app(redis_url: str, prefix: str, gate: Gate) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        r = redis.asyncio.Redis.from_url(redis_url)
        identity = HeldClient(outbox=AsyncRedisOutbox(r, key_prefix=prefix))
        identity.gate = gate
        app.state.identity, app.state.redis = identity, r
        try:
            yield
        finally:
            await identity.close()
            await r.aclose()

    app = FastAPI(title="webhooks-under-test", lifespan=lifespan)
    app.include_router(
        shopify_webhooks_router(
            client=lambda: app.state.identity,
            redis_client=lambda: app.state.redis,
            audit_key=AUDIT_KEY,
        )
    )
    return app


@pytest.fixture(scope="module")
def service(sdk_env: SdkEnv) -> Iterator[Service]:
    prefix = f"test:identity:outbox:{uuid.uuid4().hex}"
    gate = Gate()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SHOPIFY_API_SECRET", f"{SECRET}, {OLD_SECRET}")
        r = redis.Redis.from_url(sdk_env.redis_url)
        outbox = RedisOutbox(r, key_prefix=prefix)
        try:
            with (
                serve(build_app(sdk_env.redis_url, prefix, gate), "webhooks") as url,
                IdentityClient(outbox=outbox) as client,
            ):
                try:
                    yield Service(url, gate, client, outbox, r)
                finally:
                    gate.open()  # nothing stays held at the gate, so the server can stop
        finally:
            r.delete(*outbox_keys(prefix))
            r.close()


@pytest.fixture
def svc(service: Service) -> Iterator[Service]:
    service.gate.reset()
    yield service
    service.gate.open()


def sign(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def post(
    svc: Service,
    topic: str,
    shop: str,
    *,
    webhook_id: str | None = None,
    hmac_header: str | None = "sign",
    body: bytes | None = None,
) -> httpx.Response:
    raw = body if body is not None else json.dumps({"shop_id": 1, "shop_domain": shop}).encode()
    headers = {
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "Content-Type": "application/json",
    }
    if hmac_header == "sign":
        headers["X-Shopify-Hmac-Sha256"] = sign(raw)
    elif hmac_header is not None:
        headers["X-Shopify-Hmac-Sha256"] = hmac_header
    return httpx.post(f"{svc.url}/webhooks/shopify", content=raw, headers=headers, timeout=10)


def audit_rows(db: psycopg.Connection[Any], shop: str) -> list[str]:
    rows = db.execute(
        "select topic from identity.compliance_audit where shop_hash = %s order by created_at",
        (shop_hash(AUDIT_KEY.encode(), shop),),
    ).fetchall()
    return [str(row[0]) for row in rows]


def new_shop(svc: Service, db: psycopg.Connection[Any], tag: str) -> Shop:
    return populate_shop(svc.client, svc.redis, svc.outbox, db, sdk_shop(tag), archived=2)


# --------------------------------------------------------------------------- signatures


@pytest.mark.parametrize(
    "case", ["garbage", "empty", "missing", "another secret", "body altered by one byte"]
)
def test_a_bad_signature_gets_401_and_nothing_is_done(
    svc: Service, db: psycopg.Connection[Any], case: str
) -> None:
    shop = new_shop(svc, db, "hmac")
    webhook_id = str(uuid.uuid4())
    body = json.dumps({"shop_id": 1, "shop_domain": shop.domain}).encode()
    header: str | None = {
        "garbage": "not-a-signature",
        "empty": "",
        "missing": None,
        "another secret": sign(body, "shpss_someone_else"),
        "body altered by one byte": sign(body[:-2] + b"X" + body[-1:]),
    }[case]

    response = post(
        svc, "shop/redact", shop.domain, webhook_id=webhook_id, hmac_header=header, body=body
    )

    assert response.status_code == 401, case
    assert svc.redis.hexists(COMPLIANCE_PENDING_KEY, shop.domain) is False
    assert svc.redis.exists(compliance_seen_key(webhook_id)) == 0
    assert sdk_count(svc.client, "users", id=shop.user_id) == 1
    assert audit_rows(db, shop.domain) == []


@pytest.mark.parametrize("secret", [SECRET, OLD_SECRET])
def test_a_valid_signature_from_any_secret_of_the_rotation_list_is_taken(
    svc: Service, db: psycopg.Connection[Any], secret: str
) -> None:
    shop = new_shop(svc, db, "rot")
    body = json.dumps({"shop_domain": shop.domain, "customer": {"id": 7}}).encode()

    response = post(svc, "customers/redact", shop.domain, body=body, hmac_header=sign(body, secret))

    assert response.status_code == 200
    assert response.json() == {
        "status": "recorded",
        "topic": "customers/redact",
        "customer_records": 0,
    }
    assert audit_rows(db, shop.domain) == ["customers/redact"]


# --------------------------------------------------------------------------- topics


def test_redelivery_of_a_webhook_id_has_no_second_effect(
    svc: Service, db: psycopg.Connection[Any]
) -> None:
    shop = new_shop(svc, db, "redeliver")
    webhook_id = str(uuid.uuid4())

    first = post(svc, "customers/data_request", shop.domain, webhook_id=webhook_id)
    second = post(svc, "customers/data_request", shop.domain, webhook_id=webhook_id)

    assert first.status_code == second.status_code == 200
    assert first.json()["shop_data"] == {
        "users": 1,
        "conversations": 2,
        "events": 2,
        "events_archive": 1,
    }
    assert second.json()["status"] == "duplicate"
    assert audit_rows(db, shop.domain) == ["customers/data_request"]


def test_uninstall_logs_an_event_and_unknown_topics_are_ignored(
    svc: Service, db: psycopg.Connection[Any]
) -> None:
    shop = new_shop(svc, db, "uninstall")

    ignored = post(svc, "orders/create", shop.domain)
    uninstalled = post(svc, "app/uninstalled", shop.domain)

    assert (ignored.status_code, ignored.json()["status"]) == (200, "ignored")
    assert (uninstalled.status_code, uninstalled.json()["status"]) == (200, "recorded")
    assert sdk_count(svc.client, "events", user_id=shop.user_id, event_type="app_uninstalled") == 1


def test_shop_redact_answers_first_then_erases_every_copy(
    svc: Service, db: psycopg.Connection[Any]
) -> None:
    shop = new_shop(svc, db, "redact")
    other = new_shop(svc, db, "bystander")
    webhook_id = str(uuid.uuid4())

    response = post(svc, "shop/redact", shop.domain, webhook_id=webhook_id)

    assert (response.status_code, response.json()["status"]) == (200, "accepted")
    # The redaction is held at the gate: the answer came before it, and it is recorded.
    assert svc.redis.hexists(COMPLIANCE_PENDING_KEY, shop.domain)
    assert sdk_count(svc.client, "users", id=shop.user_id) == 1
    again = post(svc, "shop/redact", shop.domain, webhook_id=webhook_id)
    assert again.json()["status"] == "duplicate"

    svc.gate.open()
    wait_until(
        lambda: (
            gone(svc.client, svc.redis, svc.outbox, shop)
            and not svc.redis.hexists(COMPLIANCE_PENDING_KEY, shop.domain)
        ),
        "the shop's data was not all gone after the answer",
    )
    assert not gone(svc.client, svc.redis, svc.outbox, other), "another shop was touched"
    assert sdk_count(svc.client, "users", id=other.user_id) == 1
    assert audit_rows(db, shop.domain) == ["shop/redact"], "one redaction for two deliveries"


def test_a_redaction_taken_while_postgrest_is_down_finishes_once_it_is_back(
    svc: Service, db: psycopg.Connection[Any], sdk_postgrest: PostgrestSwitch
) -> None:
    shop = new_shop(svc, db, "outage")
    sdk_postgrest.stop()

    response = post(svc, "shop/redact", shop.domain)
    svc.gate.open()
    assert svc.gate.ended.acquire(timeout=60), "the in-process attempt never ended"

    assert response.status_code == 200, "recorded in Redis, answered although Supabase is down"
    assert svc.redis.hexists(COMPLIANCE_PENDING_KEY, shop.domain), "kept for a later attempt"
    sdk_postgrest.start()
    # What the archiver's loop runs on each pass (without waiting out the grace period).
    finished = finish_pending_redactions(svc.client, svc.redis, grace=timedelta(0))

    assert finished >= 1
    assert gone(svc.client, svc.redis, svc.outbox, shop)
    assert not svc.redis.hexists(COMPLIANCE_PENDING_KEY, shop.domain)
