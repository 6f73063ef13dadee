"""Shopify's compliance webhooks as a FastAPI router (``supabase-identity[api]``).

Served as :func:`supabase_identity.api.shopify_webhooks_router`::

    app.include_router(
        shopify_webhooks_router(
            client=lambda: app.state.identity,       # an AsyncIdentityClient (service key)
            redis_client=lambda: app.state.redis,    # redis.asyncio Redis or RedisCluster
        )
    )

``POST {prefix}`` (default ``/webhooks/shopify``), the topic in ``X-Shopify-Topic``:

* **401**, nothing done, unless ``X-Shopify-Hmac-Sha256`` is the base64 HMAC-SHA256 of the raw
  body under one of the secrets in ``SHOPIFY_API_SECRET`` (comma-separated, for rotation);
* ``shop/redact``: recorded in Redis, answered 200 at once, then carried out after the answer by
  this process (``redact_shop``); the archiver's loop finishes it if this process dies;
* ``customers/data_request``: audited and answered with what the package holds for the shop
  (counts); ``customers/redact``: audited. The package keeps no per-customer records;
* ``app/uninstalled``: an ``app_uninstalled`` event for the shop's user;
* any other topic: 200, ignored;
* a redelivery (same ``X-Shopify-Webhook-Id``): 200, nothing done again;
* **503** while Redis (or, for the topics answered at once, Supabase) is unreachable, so
  Shopify retries.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoint's annotations at runtime.

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

import redis
from fastapi import APIRouter, BackgroundTasks, HTTPException, Request

from ._async._client import AsyncIdentityClient
from ._async._compliance import forget_webhook, record_webhook, redact_pending
from ._compliance import shopify_secrets, verify_shopify_hmac
from ._exceptions import IdentityError, ValidationError
from ._redis import AsyncRedisClient
from ._validation import normalize_shop_domain

__all__ = ["COMPLIANCE_TOPICS", "shopify_webhooks_router"]

log = logging.getLogger("supabase_identity")

REDACT_TOPIC: Final = "shop/redact"
DATA_REQUEST_TOPIC: Final = "customers/data_request"
CUSTOMERS_REDACT_TOPIC: Final = "customers/redact"
UNINSTALLED_TOPIC: Final = "app/uninstalled"
COMPLIANCE_TOPICS: Final = (REDACT_TOPIC, DATA_REQUEST_TOPIC, CUSTOMERS_REDACT_TOPIC)
_HANDLED: Final = (*COMPLIANCE_TOPICS, UNINSTALLED_TOPIC)


def shopify_webhooks_router(
    *,
    client: Callable[[], AsyncIdentityClient],
    redis_client: Callable[[], AsyncRedisClient],
    prefix: str = "/webhooks/shopify",
    secrets: Callable[[], Sequence[str]] = shopify_secrets,
    audit_key: str | None = None,
) -> APIRouter:
    """The router serving ``POST {prefix}``; see the module docstring for what it answers.

    ``client`` and ``redis_client`` are called per request (e.g. ``lambda: app.state.x``).
    ``secrets`` returns the signing secrets (default: ``SHOPIFY_API_SECRET`` read on each
    request, so a rotation needs no restart). ``audit_key`` keys the audit's shop hash
    (default: ``IDENTITY_AUDIT_KEY``, else the first secret).
    """
    router = APIRouter(prefix=prefix, tags=["shopify webhooks"])

    @router.post("", status_code=200)
    async def shopify_webhook(request: Request, background: BackgroundTasks) -> dict[str, Any]:
        body = await request.body()
        if not verify_shopify_hmac(body, request.headers.get("x-shopify-hmac-sha256"), secrets()):
            raise HTTPException(status_code=401, detail="invalid webhook signature")
        topic = request.headers.get("x-shopify-topic", "")
        if topic not in _HANDLED:
            return {"status": "ignored", "topic": topic}
        shop = _shop_of(request, body)
        webhook_id = request.headers.get("x-shopify-webhook-id") or (
            "sha256:" + hashlib.sha256(body).hexdigest()
        )
        r = redis_client()
        try:
            taken = await record_webhook(
                r, webhook_id, redact_shop=shop if topic == REDACT_TOPIC else None
            )
        except redis.RedisError as err:
            log.error("Shopify webhook %s not recorded, Redis unavailable: %s", topic, err)
            raise HTTPException(503, "cannot record the webhook now", {"Retry-After": "5"}) from err
        if not taken:
            return {"status": "duplicate", "topic": topic}
        if topic == REDACT_TOPIC:
            background.add_task(_redact_after_answer, client(), r, shop, audit_key)
            return {"status": "accepted", "topic": topic}
        try:
            return await _answer_now(client(), topic, shop, audit_key)
        except (IdentityError, redis.RedisError) as err:
            await forget_webhook(r, webhook_id)  # Shopify's retry is then carried out
            log.warning("Shopify webhook %s not handled, retry expected: %s", topic, err)
            raise HTTPException(503, "backend unavailable", {"Retry-After": "5"}) from err

    return router


def _shop_of(request: Request, body: bytes) -> str:
    """The shop the webhook is about: ``X-Shopify-Shop-Domain``, else the payload's."""
    candidate = request.headers.get("x-shopify-shop-domain")
    if not candidate:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            candidate = payload.get("shop_domain") or payload.get("myshopify_domain")
    try:
        return normalize_shop_domain(candidate if isinstance(candidate, str) else "")
    except ValidationError as err:
        raise HTTPException(status_code=400, detail=str(err)) from err


async def _answer_now(
    client: AsyncIdentityClient, topic: str, shop: str, audit_key: str | None
) -> dict[str, Any]:
    if topic == UNINSTALLED_TOPIC:
        user_id = await client.get_shop_user_id(shop)
        if user_id is not None:
            await client.log_user_event(user_id, "app_uninstalled", {"shop": shop})
        return {"status": "recorded", "topic": topic}
    summary = await client.shop_data_summary(shop, topic, audit_key=audit_key)
    counts = {k: v for k, v in summary.items() if k != "user_id"}
    answer: dict[str, Any] = {"status": "recorded", "topic": topic, "customer_records": 0}
    if topic == DATA_REQUEST_TOPIC:
        answer["shop_data"] = counts
    return answer


async def _redact_after_answer(
    client: AsyncIdentityClient, r: AsyncRedisClient, shop: str, audit_key: str | None
) -> None:
    """Runs after the 200 went out; a failure leaves the entry pending for the archiver."""
    try:
        await redact_pending(client, r, shop, audit_key=audit_key)
    except (IdentityError, redis.RedisError) as err:
        log.warning("shop redaction deferred to the archiver's loop: %s", err)
