"""Compliance webhooks taken once and redactions carried to their end, even across a crash.

Written once, as async code: ``scripts/unasync`` generates the blocking twin under ``_sync/``
(which the archiver's loop uses).

Shopify wants an answer within 5 s, and a redaction may take longer. So a ``shop/redact`` is
first recorded in Redis (one script: the webhook id marked seen and the shop added to the
pending hash, together), then answered, then carried out by the process that took it; the
archiver's loop finishes any entry still pending after :data:`PENDING_GRACE` (its process died,
or the database was down). Redis rather than a Postgres row: the record must be writable while
PostgREST is down (then the redaction simply waits), and the archiver already polls Redis; a
Redis that keeps its data across restarts (AOF or RDB, as for the events outbox) is required.

Keys (``_redis_keys``): ``{identity:compliance}:pending`` (shop -> JSON), ``…:seen:<webhook
id>`` (redelivery guard, :data:`SEEN_TTL`), ``…:lease:<shop>`` (one process at a time).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import timedelta
from typing import Final

import redis

from .._exceptions import IdentityError
from .._io import AsyncRedisClient
from .._models import ShopRedaction
from .._redis import text
from .._redis_keys import (
    COMPLIANCE_PENDING_KEY,
    COMPLIANCE_RECORD_SCRIPT,
    RELEASE_SCRIPT,
    compliance_lease_key,
    compliance_seen_key,
)
from ._client import AsyncIdentityClient

__all__ = [
    "finish_pending_redactions",
    "forget_webhook",
    "record_webhook",
    "redact_pending",
]

log = logging.getLogger("supabase_identity")

#: How long a webhook id is remembered (Shopify retries a delivery for up to 48 hours).
SEEN_TTL: Final = timedelta(days=7)
#: The archiver leaves a pending redaction this long to the process that recorded it.
PENDING_GRACE: Final = timedelta(seconds=60)
#: How long one process may hold a shop's redaction before another may take it over.
LEASE: Final = timedelta(minutes=10)


async def record_webhook(
    redis_client: AsyncRedisClient, webhook_id: str, *, redact_shop: str | None = None
) -> bool:
    """Take webhook ``webhook_id`` once; with ``redact_shop``, record that shop as pending.

    Returns ``False`` for a redelivery (the id was already taken: nothing is written).
    Raises ``redis.RedisError`` when Redis is down (the caller answers 503; Shopify retries).
    """
    record = json.dumps({"webhook_id": webhook_id, "received_at": time.time()})
    taken = await redis_client.eval(
        COMPLIANCE_RECORD_SCRIPT,
        2,
        compliance_seen_key(webhook_id),
        COMPLIANCE_PENDING_KEY,
        int(SEEN_TTL.total_seconds()),
        redact_shop or "",
        record,
    )
    return bool(int(taken))


async def forget_webhook(redis_client: AsyncRedisClient, webhook_id: str) -> None:
    """Un-take a webhook whose work failed, so Shopify's retry is carried out."""
    await redis_client.delete(compliance_seen_key(webhook_id))


async def redact_pending(
    client: AsyncIdentityClient,
    redis_client: AsyncRedisClient,
    shop_domain: str,
    *,
    audit_key: str | None = None,
) -> ShopRedaction | None:
    """Carry out the pending redaction of ``shop_domain``; ``None`` if another process holds it.

    The entry leaves the pending hash only after the redaction succeeded; a failure (the
    database down) leaves it for the archiver's loop, and raises.
    """
    lease = compliance_lease_key(shop_domain)
    token = uuid.uuid4().hex
    ms = int(LEASE.total_seconds() * 1000)
    if not await redis_client.set(lease, token, nx=True, px=ms):
        return None
    try:
        result = await client.redact_shop(shop_domain, redis_client, audit_key=audit_key)
        await redis_client.hdel(COMPLIANCE_PENDING_KEY, shop_domain)
        log.info("shop redaction done: %s", result.model_dump_json())
        return result
    finally:
        await redis_client.eval(RELEASE_SCRIPT, 1, lease, token)


async def finish_pending_redactions(
    client: AsyncIdentityClient,
    redis_client: AsyncRedisClient,
    *,
    grace: timedelta = PENDING_GRACE,
    audit_key: str | None = None,
) -> int:
    """Carry out every redaction recorded more than ``grace`` ago; returns how many finished.

    Never raises for an outage: an entry that fails stays pending for the next call.
    """
    now = time.time()
    done = 0
    async for raw_shop, raw_record in redis_client.hscan_iter(COMPLIANCE_PENDING_KEY):
        shop = text(raw_shop) or ""
        try:
            received = float(json.loads(text(raw_record) or "{}").get("received_at", 0))
        except (ValueError, AttributeError):
            received = 0.0  # unreadable: old enough, the redaction itself is what matters
        if now - received < grace.total_seconds():
            continue
        try:
            if await redact_pending(client, redis_client, shop, audit_key=audit_key):
                done += 1
        except (IdentityError, redis.RedisError) as err:
            log.warning("pending shop redaction not finished yet, kept: %s", err)
    return done
