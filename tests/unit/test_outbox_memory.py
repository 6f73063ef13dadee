"""The in-memory outbox on its own, and the client's delivery/outbox behaviour over respx."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import respx

from supabase_identity import (
    AsyncIdentityClient,
    IdentityClient,
    MemoryOutbox,
    ValidationError,
)

from .conftest import (
    OTHER_USER_ID,
    USER_ID,
    make_async_client,
    make_client,
    make_event,
    record_events_answer,
)

# --- MemoryOutbox directly ---------------------------------------------------------------


def test_claim_ack_release_keep_order() -> None:
    box = MemoryOutbox(max_events=10)
    events = [make_event(i) for i in range(5)]
    box.push(events)
    assert box.try_lock()
    batch = box.claim(3)
    assert batch == events[:3]
    assert box.pending_count() == 5  # in flight still counts
    box.release()
    assert box.claim(2) == events[:2], "a released batch goes back to the head, in order"
    box.ack()
    assert box.claim(10) == events[2:]
    box.ack()
    assert box.pending_count() == 0
    box.unlock()


def test_claim_returns_the_unfinished_batch_first() -> None:
    box = MemoryOutbox()
    events = [make_event(i) for i in range(4)]
    box.push(events)
    first = box.claim(2)
    assert box.claim(2) == first, "an unacknowledged batch is handed out again, not skipped"


def test_flush_lock_is_exclusive() -> None:
    box = MemoryOutbox()
    assert box.try_lock()
    assert not box.try_lock()
    box.unlock()
    assert box.try_lock()
    box.unlock()


def test_full_buffer_keeps_newest_counts_and_logs_each_drop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    box = MemoryOutbox(max_events=3)
    events = [make_event(i) for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="supabase_identity"):
        box.push(events[:2])
        box.push(events[2:])
    assert box.claim(10) == events[2:]
    assert box.stats().dropped == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert str(events[0].id) in errors[0].getMessage()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "the 'buffering in memory' warning is logged once"
    assert "REDIS_URL" in warnings[0].getMessage()


def test_bad_bounds_are_rejected() -> None:
    with pytest.raises(ValueError):
        MemoryOutbox(max_events=0)


# --- client behaviour --------------------------------------------------------------------


def test_backend_down_event_is_queued_without_raising_then_flushed_once(
    client: IdentityClient, api: respx.MockRouter, outbox: MemoryOutbox
) -> None:
    route = api.post("/rpc/record_events").mock(
        side_effect=[httpx.ConnectError("down"), httpx.Response(503)]
    )
    client.log_user_event(USER_ID, "login", {"a": 1})
    client.log_user_event(USER_ID, "login", {"a": 2})
    assert route.call_count == 2, "one immediate attempt per event, no retries in the caller"
    assert outbox.pending_count() == 2

    route.mock(side_effect=record_events_answer)
    result = client.flush_events()

    assert (result.delivered, result.duplicates, result.remaining) == (2, 0, 0)
    assert result.error is None
    sent = json.loads(route.calls.last.request.content)["events"]
    assert [e["event_data"]["a"] for e in sent] == [1, 2]
    assert outbox.pending_count() == 0


def test_flush_with_backend_still_down_keeps_everything(
    client: IdentityClient, api: respx.MockRouter, outbox: MemoryOutbox
) -> None:
    api.post("/rpc/record_events").respond(503)
    client.log_user_event(USER_ID, "login", {})
    result = client.flush_events()
    assert result.remaining == 1
    assert result.delivered == 0
    assert result.error is not None and "503" in result.error
    assert outbox.pending_count() == 1
    api.post("/rpc/record_events").mock(side_effect=record_events_answer)
    assert client.flush_events().delivered == 1


def test_duplicates_are_counted_not_redelivered(
    client: IdentityClient, api: respx.MockRouter, outbox: MemoryOutbox
) -> None:
    outbox.push([make_event(1), make_event(2)])
    api.post("/rpc/record_events").mock(side_effect=lambda r: record_events_answer(r, "duplicate"))
    result = client.flush_events()
    assert (result.delivered, result.duplicates, result.remaining) == (0, 2, 0)


def test_unknown_user_is_dead_lettered_not_retried(
    client: IdentityClient,
    api: respx.MockRouter,
    outbox: MemoryOutbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    route = api.post("/rpc/record_events").mock(
        side_effect=lambda r: record_events_answer(r, "unknown_user")
    )
    with caplog.at_level(logging.WARNING, logger="supabase_identity"):
        client.log_user_event(OTHER_USER_ID, "login", {})
    assert route.call_count == 1
    assert outbox.pending_count() == 0
    (dead,) = client.dead_letters()
    assert dead.event.user_id == OTHER_USER_ID
    assert dead.reason.startswith("unknown_user")
    assert OTHER_USER_ID in caplog.text
    assert client.flush_events().delivered == 0
    assert route.call_count == 1, "a dead letter is never sent again"


def test_rejected_event_is_isolated_by_bisection(
    client: IdentityClient, api: respx.MockRouter, outbox: MemoryOutbox
) -> None:
    events = [make_event(i) for i in range(8)]
    poison = events[5].id

    def answer(request: httpx.Request) -> httpx.Response:
        batch = json.loads(request.content)["events"]
        if any(e["id"] == str(poison) for e in batch):
            return httpx.Response(400, json={"code": "22P02", "message": "invalid input"})
        return record_events_answer(request)

    outbox.push(events)
    api.post("/rpc/record_events").mock(side_effect=answer)
    result = client.flush_events()

    assert (result.delivered, result.dead_lettered, result.remaining) == (7, 1, 0)
    (dead,) = outbox.dead_letters()
    assert dead.event.id == poison
    assert "22P02" in dead.reason


def test_flush_sends_batches_of_at_most_500(
    client: IdentityClient, api: respx.MockRouter, empty_env_dir: Path
) -> None:
    big = MemoryOutbox(max_events=2000)
    big.push([make_event(i) for i in range(1201)])
    route = api.post("/rpc/record_events").mock(side_effect=record_events_answer)
    with make_client(empty_env_dir, outbox=big) as c:
        result = c.flush_events()
    sizes = [len(json.loads(call.request.content)["events"]) for call in route.calls]
    assert sizes == [500, 500, 201]
    assert result.delivered == 1201


def test_invalid_arguments_raise_before_any_request(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    route = api.post("/rpc/record_events")
    for args in [
        ("not-a-user", "login", {}),
        (USER_ID, "Bad Type", {}),
        (USER_ID, "login", {"x": float("nan")}),
    ]:
        with pytest.raises(ValidationError):
            client.log_user_event(*args)
    with pytest.raises(ValidationError, match="occurred_at"):
        client.log_user_event(USER_ID, "login", {}, occurred_at=datetime(2026, 1, 1))
    assert route.call_count == 0


def test_occurred_at_is_sent_as_created_at(client: IdentityClient, api: respx.MockRouter) -> None:
    route = api.post("/rpc/record_events").mock(side_effect=record_events_answer)
    when = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)
    client.log_user_event(USER_ID, "login", {}, occurred_at=when)
    (event,) = json.loads(route.calls.last.request.content)["events"]
    assert datetime.fromisoformat(event["created_at"]) == when


def test_close_makes_a_last_attempt_and_reports_loss(
    api: respx.MockRouter, empty_env_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    route = api.post("/rpc/record_events").respond(503)
    c = make_client(empty_env_dir)
    c.log_user_event(USER_ID, "login", {})
    with caplog.at_level(logging.ERROR, logger="supabase_identity"):
        c.close()
    assert route.call_count == 2, "immediate attempt, then one at close (no retries)"
    assert "undelivered events in process memory" in caplog.text


async def test_async_close_makes_the_same_last_attempt(
    api: respx.MockRouter, empty_env_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    route = api.post("/rpc/record_events").respond(503)
    c = make_async_client(empty_env_dir, outbox=MemoryOutbox())
    await c.log_user_event(USER_ID, "login", {})
    with caplog.at_level(logging.ERROR, logger="supabase_identity"):
        await c.close()
    assert route.call_count == 2, "immediate attempt, then one at close (no retries)"
    assert "1 undelivered events in process memory" in caplog.text


async def test_async_client_queues_and_flushes(
    aclient: AsyncIdentityClient, api: respx.MockRouter, outbox: MemoryOutbox
) -> None:
    route = api.post("/rpc/record_events").mock(side_effect=httpx.ConnectError("down"))
    await aclient.log_user_event(USER_ID, "login", {"a": 1})
    assert outbox.pending_count() == 1
    route.mock(side_effect=record_events_answer)
    result = await aclient.flush_events()
    assert (result.delivered, result.remaining) == (1, 0)
    stats = await aclient.outbox_stats()
    assert (stats.backend, stats.pending) == ("memory", 0)


async def test_async_log_user_event_keeps_the_event_when_its_task_is_cancelled(
    aclient: AsyncIdentityClient, api: respx.MockRouter, outbox: MemoryOutbox
) -> None:
    """A cancelled caller (client gone, a timeout) must not take the event down with it."""
    started = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        if not started.is_set():  # the first delivery hangs; later ones (close()) succeed
            started.set()
            await asyncio.sleep(30)
        return record_events_answer(request)

    api.post("/rpc/record_events").mock(side_effect=hang)
    task = asyncio.create_task(aclient.log_user_event(USER_ID, "page_view", {"n": 1}))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outbox.pending_count() == 1
    claimed = outbox.claim(10)
    assert claimed is not None
    [kept] = claimed
    assert (kept.user_id, kept.event_type, kept.event_data) == (USER_ID, "page_view", {"n": 1})
