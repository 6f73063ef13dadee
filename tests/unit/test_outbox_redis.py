"""The Redis outbox against a real redis-server (Lua scripts, lists, the flush lock)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio
import respx

from supabase_identity import AsyncRedisOutbox, FlushResult, RedisOutbox
from supabase_identity._constants import REDIS_CONNECT_TIMEOUT, REDIS_RETRIES
from supabase_identity._redis_keys import outbox_keys

from .._wait import wait_until
from .conftest import USER_ID, make_async_client, make_client, make_event, record_events_answer

PREFIX = "test:outbox"
PENDING, PROCESSING, DEAD, LOCK = outbox_keys(PREFIX)


def _ids(r: redis.Redis, key: str) -> list[str]:
    return [json.loads(raw)["id"] for raw in r.lrange(key, 0, -1)]


def test_claim_moves_atomically_and_ack_deletes(redis_client: redis.Redis) -> None:
    box = RedisOutbox(redis_client, key_prefix=PREFIX)
    events = [make_event(i) for i in range(5)]
    box.push(events)
    assert box.try_lock()

    batch = box.claim(3)

    assert batch == events[:3]
    assert redis_client.llen(PENDING) == 2
    assert _ids(redis_client, PROCESSING) == [str(e.id) for e in events[:3]]
    assert box.pending_count() == 5
    box.ack()
    assert redis_client.llen(PROCESSING) == 0
    assert box.pending_count() == 2
    box.unlock()
    assert redis_client.get(LOCK) is None


def test_release_puts_the_batch_back_at_the_head_in_order(redis_client: redis.Redis) -> None:
    box = RedisOutbox(redis_client, key_prefix=PREFIX)
    events = [make_event(i) for i in range(4)]
    box.push(events)
    assert box.try_lock()
    box.claim(2)
    box.release()
    assert _ids(redis_client, PENDING) == [str(e.id) for e in events]
    box.unlock()


def test_lock_is_exclusive_between_processes(redis_client: redis.Redis) -> None:
    first = RedisOutbox(redis_client, key_prefix=PREFIX)
    second = RedisOutbox(redis_client, key_prefix=PREFIX)
    assert first.try_lock()
    assert not second.try_lock()
    first.unlock()
    assert second.try_lock()
    second.unlock()


def test_crashed_flusher_batch_is_redelivered_first_and_nothing_is_lost(
    redis_client: redis.Redis,
) -> None:
    crashed = RedisOutbox(redis_client, key_prefix=PREFIX, lock_ttl_ms=100)
    events = [make_event(i) for i in range(5)]
    crashed.push(events)
    assert crashed.try_lock()
    in_flight = crashed.claim(2)
    # ... the process dies here: no ack, no release, no unlock (the lock expires by itself)
    wait_until(lambda: not redis_client.exists(LOCK), "the dead flusher's lock never expired")

    survivor = RedisOutbox(redis_client, key_prefix=PREFIX)
    assert survivor.try_lock()
    assert survivor.claim(10) == in_flight, "the orphaned batch comes back before new work"
    survivor.ack()
    assert survivor.claim(10) == events[2:]
    survivor.ack()
    assert survivor.pending_count() == 0
    survivor.unlock()


def test_a_flusher_that_lost_its_lock_cannot_ack_or_claim(redis_client: redis.Redis) -> None:
    slow = RedisOutbox(redis_client, key_prefix=PREFIX, lock_ttl_ms=100)
    slow.push([make_event(1)])
    assert slow.try_lock()
    slow.claim(10)
    wait_until(lambda: not redis_client.exists(LOCK), "the slow flusher's lock stayed")
    other = RedisOutbox(redis_client, key_prefix=PREFIX)
    assert other.try_lock()

    slow.ack()  # must not delete the batch the new owner is responsible for
    assert redis_client.llen(PROCESSING) == 1
    assert slow.claim(10) is None
    assert not slow.refresh_lock()
    slow.unlock()  # releases only the local lock; the other owner's key stays
    assert redis_client.get(LOCK) is not None
    other.unlock()


def test_client_queues_in_redis_and_flush_delivers_exactly_once(
    redis_client: redis.Redis, api: respx.MockRouter, empty_env_dir: Path, sleeps: object
) -> None:
    route = api.post("/rpc/record_events").mock(side_effect=httpx.ConnectError("down"))
    with make_client(empty_env_dir, outbox=RedisOutbox(redis_client, key_prefix=PREFIX)) as c:
        c.log_user_event(USER_ID, "login", {"n": 1})
        c.log_user_event(USER_ID, "login", {"n": 2})
        assert redis_client.llen(PENDING) == 2
        (stored,) = [json.loads(r) for r in redis_client.lrange(PENDING, 0, 0)]
        assert stored["event_data"] == {"n": 1}

        route.mock(side_effect=record_events_answer)
        result = c.flush_events()

        assert (result.delivered, result.remaining) == (2, 0)
        assert redis_client.llen(PENDING) == 0
        sent_ids = [
            e["id"] for call in route.calls[2:] for e in json.loads(call.request.content)["events"]
        ]
        assert len(sent_ids) == len(set(sent_ids)) == 2


def test_unknown_user_goes_to_the_redis_dead_letter_list(
    redis_client: redis.Redis, api: respx.MockRouter, empty_env_dir: Path
) -> None:
    box = RedisOutbox(redis_client, key_prefix=PREFIX)
    box.push([make_event(1), make_event(2)])
    api.post("/rpc/record_events").mock(
        side_effect=lambda r: record_events_answer(r, "unknown_user")
    )
    with make_client(empty_env_dir, outbox=box) as c:
        result = c.flush_events()
        assert (result.dead_lettered, result.remaining) == (2, 0)
        assert redis_client.llen(DEAD) == 2
        assert all(d.reason.startswith("unknown_user") for d in c.dead_letters())
        assert c.outbox_stats().dead_lettered == 2


def test_unparseable_entries_are_dead_lettered_and_do_not_block(
    redis_client: redis.Redis, api: respx.MockRouter, empty_env_dir: Path
) -> None:
    box = RedisOutbox(redis_client, key_prefix=PREFIX)
    redis_client.rpush(PENDING, "{not json")
    box.push([make_event(1)])
    api.post("/rpc/record_events").mock(side_effect=record_events_answer)
    with make_client(empty_env_dir, outbox=box) as c:
        result = c.flush_events()
    assert (result.delivered, result.remaining) == (1, 0)
    (dead,) = [json.loads(r) for r in redis_client.lrange(DEAD, 0, -1)]
    assert dead["raw"] == "{not json"


def test_a_second_flusher_waits_out_the_first_and_each_event_is_delivered_once(
    redis_client: redis.Redis, api: respx.MockRouter, empty_env_dir: Path, sleeps: object
) -> None:
    RedisOutbox(redis_client, key_prefix=PREFIX).push([make_event(i) for i in range(1200)])
    seen: list[str] = []
    first_batch_arrived = threading.Event()
    second_flusher_done = threading.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        seen.extend(e["id"] for e in json.loads(request.content)["events"])
        # The first flusher holds the outbox, mid-batch, while the second one tries its flush.
        first_batch_arrived.set()
        assert second_flusher_done.wait(timeout=60), "the second flusher never finished"
        return record_events_answer(request)

    api.post("/rpc/record_events").mock(side_effect=answer)
    first, second = (
        make_client(empty_env_dir, outbox=RedisOutbox(redis_client, key_prefix=PREFIX))
        for _ in range(2)
    )
    results: dict[str, FlushResult] = {}
    holder = threading.Thread(target=lambda: results.setdefault("first", first.flush_events()))
    holder.start()
    try:
        assert first_batch_arrived.wait(timeout=60), "the first flush never sent a batch"
        results["second"] = second.flush_events()
    finally:
        second_flusher_done.set()
        holder.join(timeout=60)
        first.close()
        second.close()
    assert not holder.is_alive()

    assert results["second"].delivered == 0, "the outbox was locked by the first flusher"
    assert results["first"].delivered == 1200
    assert len(seen) == len(set(seen)) == 1200


def test_redis_down_falls_back_to_memory_without_raising(
    api: respx.MockRouter, empty_env_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    route = api.post("/rpc/record_events").mock(side_effect=httpx.ConnectError("down"))
    with make_client(empty_env_dir, redis_url="redis://127.0.0.1:1/0") as c:
        # Fails fast: one short connect timeout and a single retry, not redis-py's defaults.
        assert isinstance(c.outbox, RedisOutbox)
        node = c.outbox.redis()
        assert isinstance(node, redis.Redis)  # down: not yet known to be a cluster
        pool_kwargs = node.connection_pool.connection_kwargs
        assert pool_kwargs["socket_connect_timeout"] == REDIS_CONNECT_TIMEOUT
        retry = pool_kwargs["retry"]
        # redis-py 6 added get_retries(); 5.x, which the floor allows, keeps the count private.
        retries = retry.get_retries() if hasattr(retry, "get_retries") else retry._retries
        assert retries == REDIS_RETRIES
        with caplog.at_level(logging.ERROR, logger="supabase_identity"):
            c.log_user_event(USER_ID, "login", {})
        assert "Redis outbox unavailable" in caplog.text
        assert c._fallback.pending_count() == 1
        route.mock(side_effect=record_events_answer)
        result = c.flush_events()
        assert result.delivered == 1, "events buffered in memory are delivered by flush"
        assert result.error is not None and "Redis" in result.error


def test_client_builds_its_own_redis_from_redis_url_and_closes_it(
    redis_server: str, redis_client: redis.Redis, empty_env_dir: Path
) -> None:
    before = len(redis_client.client_list())
    c = make_client(empty_env_dir, redis_url=redis_server)
    assert isinstance(c.outbox, RedisOutbox)
    assert c.outbox.redis().ping()
    assert len(redis_client.client_list()) == before + 1
    c.close()
    wait_until(
        lambda: len(redis_client.client_list()) == before, "close() left its Redis connection open"
    )


@pytest.fixture
async def aredis(redis_server: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_server)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


async def test_async_redis_outbox_queue_flush_and_dead_letters(
    aredis: redis.asyncio.Redis, api: respx.MockRouter, empty_env_dir: Path, sleeps: object
) -> None:
    route = api.post("/rpc/record_events").mock(side_effect=httpx.ConnectError("down"))
    client = make_async_client(empty_env_dir, outbox=AsyncRedisOutbox(aredis, key_prefix=PREFIX))
    try:
        assert await client.ping_redis() == "Redis answered PING"
        await client.log_user_event(USER_ID, "login", {"n": 1})
        await client.log_user_event(USER_ID, "logout", {"n": 2})
        assert await aredis.llen(PENDING) == 2

        def answer(request: httpx.Request) -> httpx.Response:
            events = json.loads(request.content)["events"]
            return httpx.Response(
                200,
                json=[
                    {
                        "id": e["id"],
                        "status": "inserted" if e["event_type"] == "login" else "unknown_user",
                    }
                    for e in events
                ],
            )

        route.mock(side_effect=answer)
        result = await client.flush_events()
        assert (result.delivered, result.dead_lettered, result.remaining) == (1, 1, 0)
        stats = await client.outbox_stats()
        assert (stats.backend, stats.pending, stats.dead_lettered) == ("redis", 0, 1)
        (dead,) = await client.dead_letters()
        assert dead.event.event_type == "logout"
    finally:
        await client.close()


def test_events_in_the_lists_named_before_the_hash_tag_are_delivered(
    redis_client: redis.Redis,
) -> None:
    """An outbox written by an earlier version (no hash tag) loses nothing on upgrade."""
    old = [make_event(i) for i in range(3)]
    redis_client.rpush(PREFIX + ":processing", old[0].model_dump_json())  # a crashed flush
    redis_client.rpush(PREFIX, *(e.model_dump_json() for e in old[1:]))
    box = RedisOutbox(redis_client, key_prefix=PREFIX)
    new = make_event(3)
    box.push([new])
    assert box.try_lock()

    batch = box.claim(10)

    assert batch is not None
    assert sorted(str(e.id) for e in batch) == sorted(str(e.id) for e in [*old, new])
    assert redis_client.exists(PREFIX, PREFIX + ":processing") == 0
    box.ack()
    box.unlock()
