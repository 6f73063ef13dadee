"""Retry policy: which failures are retried, how long we wait, and what is raised at the end."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from supabase_identity import (
    APIConnectionError,
    APITimeoutError,
    AsyncIdentityClient,
    AuthenticationError,
    BackendUnavailableError,
    DataRejectedError,
    IdentityClient,
    InternalServerError,
)
from supabase_identity._base_client import backoff_delay, parse_retry_after
from supabase_identity._constants import DEFAULT_MAX_RETRIES, MAX_RETRY_DELAY

from .conftest import USER_ID, SleepRecorder, make_async_client

OK = httpx.Response(200, json=[{"user_id": USER_ID, "is_new": False}])
SHOP = "cool-shop.myshopify.com"


def test_5xx_then_success_is_retried(
    client: IdentityClient, api: respx.MockRouter, sleeps: SleepRecorder
) -> None:
    route = api.post("/rpc/get_or_create_user").mock(
        side_effect=[httpx.Response(503), httpx.Response(502, text="<html>bad gateway</html>"), OK]
    )
    assert client.get_or_create_user(SHOP) == (USER_ID, False)
    assert route.call_count == 3
    assert len(sleeps.delays) == 2
    bodies = {c.request.content for c in route.calls}
    assert len(bodies) == 1, "every attempt must send the identical (idempotent) request"


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(
    client: IdentityClient, api: respx.MockRouter, status: int
) -> None:
    route = api.post("/rpc/get_or_create_user").mock(side_effect=[httpx.Response(status), OK])
    assert client.get_or_create_user(SHOP)[0] == USER_ID
    assert route.call_count == 2


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"code": "22P02", "message": "invalid input syntax"}, DataRejectedError),
        (401, {"code": "PGRST301", "message": "JWSError"}, AuthenticationError),
        (409, {"code": "23505", "message": "duplicate key"}, Exception),
    ],
)
def test_4xx_is_not_retried(
    client: IdentityClient,
    api: respx.MockRouter,
    sleeps: SleepRecorder,
    status: int,
    body: dict[str, str],
    error: type[Exception],
) -> None:
    route = api.post("/rpc/get_or_create_user").respond(status, json=body)
    with pytest.raises(error):
        client.get_or_create_user(SHOP)
    assert route.call_count == 1
    assert sleeps.delays == []


def test_retry_after_seconds_is_honoured(
    client: IdentityClient, api: respx.MockRouter, sleeps: SleepRecorder
) -> None:
    api.post("/rpc/get_or_create_user").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "2.5"}), OK]
    )
    client.get_or_create_user(SHOP)
    assert sleeps.delays == [2.5]


def test_absurd_retry_after_falls_back_to_backoff(
    client: IdentityClient, api: respx.MockRouter, sleeps: SleepRecorder
) -> None:
    api.post("/rpc/get_or_create_user").mock(
        side_effect=[httpx.Response(503, headers={"Retry-After": "86400"}), OK]
    )
    client.get_or_create_user(SHOP)
    assert 0 < sleeps.delays[0] <= MAX_RETRY_DELAY


def test_exhausted_retries_raise_backend_unavailable_with_the_status(
    client: IdentityClient, api: respx.MockRouter, sleeps: SleepRecorder
) -> None:
    route = api.post("/rpc/get_or_create_user").respond(
        503, json={"code": "PGRST002", "message": "schema cache not ready"}
    )
    with pytest.raises(InternalServerError) as info:
        client.get_or_create_user(SHOP)
    assert isinstance(info.value, BackendUnavailableError)
    assert route.call_count == DEFAULT_MAX_RETRIES + 1
    assert info.value.status_code == 503
    assert info.value.code == "PGRST002"
    assert info.value.__cause__ is not None
    delays = sleeps.delays
    assert len(delays) == DEFAULT_MAX_RETRIES
    assert delays[0] < delays[1] < delays[2], "backoff grows exponentially"


def test_connection_errors_are_retried_then_reported(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    route = api.post("/rpc/get_or_create_user").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(BackendUnavailableError, match="Could not reach Supabase") as info:
        client.get_or_create_user(SHOP)
    assert route.call_count == DEFAULT_MAX_RETRIES + 1
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert type(info.value) is APIConnectionError


def test_timeouts_raise_api_timeout_error(client: IdentityClient, api: respx.MockRouter) -> None:
    api.post("/rpc/get_or_create_user").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(APITimeoutError) as info:
        client.get_or_create_user(SHOP)
    assert isinstance(info.value, APIConnectionError)
    assert isinstance(info.value, BackendUnavailableError)


def test_connection_error_then_success(client: IdentityClient, api: respx.MockRouter) -> None:
    api.post("/rpc/get_or_create_user").mock(side_effect=[httpx.ReadTimeout("slow"), OK])
    assert client.get_or_create_user(SHOP) == (USER_ID, False)


def test_with_options_max_retries_zero_makes_one_attempt(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    route = api.post("/rpc/get_or_create_user").respond(500)
    with pytest.raises(BackendUnavailableError):
        client.with_options(max_retries=0).get_or_create_user(SHOP)
    assert route.call_count == 1
    assert client.max_retries == DEFAULT_MAX_RETRIES, "with_options must not change the original"


def test_backoff_is_exponential_with_bounded_jitter() -> None:
    for retries_done in range(8):
        nominal = min(0.25 * 2**retries_done, MAX_RETRY_DELAY)
        samples = [backoff_delay(retries_done) for _ in range(200)]
        assert all(0.75 * nominal <= s <= nominal for s in samples)
        assert len(set(samples)) > 1, "jitter must vary the delay"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    now = 1445412480.0  # 2015-10-21T07:28:00Z
    assert parse_retry_after(httpx.Headers(headers), now=now) == expected


async def test_async_retries_and_honours_retry_after(
    aclient: AsyncIdentityClient, api: respx.MockRouter, sleeps: SleepRecorder
) -> None:
    route = api.post("/rpc/get_or_create_user").mock(
        side_effect=[httpx.Response(503, headers={"Retry-After": "1"}), httpx.Response(500), OK]
    )
    assert await aclient.get_or_create_user(SHOP) == (USER_ID, False)
    assert route.call_count == 3
    assert sleeps.delays[0] == 1.0


async def test_async_backoff_does_not_block_the_event_loop(empty_env_dir: Path) -> None:
    """A real (unpatched) backoff sleep must let other tasks run meanwhile.

    The server asks for a 30 s pause. This test's own task gets to run while the client waits:
    it sees the first answer given and no retry sent yet. A blocking sleep would keep the event
    loop (and this task) frozen until the retry had gone out.
    """
    first_answered = asyncio.Event()

    def first(request: httpx.Request) -> httpx.Response:
        first_answered.set()
        return httpx.Response(503, headers={"Retry-After": "30"})

    with respx.mock(base_url="http://127.0.0.1:54321/rest/v1") as api:
        answers: list[Any] = [
            first,
            OK,
        ]  # a callable answers its call; a Response is returned as is
        route = api.post("/rpc/get_or_create_user").mock(side_effect=answers)
        client = make_async_client(empty_env_dir)
        call = asyncio.create_task(client.get_or_create_user(SHOP))
        try:
            await asyncio.wait_for(first_answered.wait(), timeout=60)
            await asyncio.sleep(0)  # one more turn of the loop for the client's task
            assert route.call_count == 1, "the retry went out without the backoff pause"
            assert not call.done()
        finally:
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
            await client.close()
    assert call.cancelled(), "cancelling during the backoff ends the call at once"


def test_request_body_is_identical_json_across_retries(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    route = api.post("/rpc/get_or_create_user").mock(side_effect=[httpx.Response(500), OK])
    client.get_or_create_user(SHOP, email="x@y.z")
    first, second = (json.loads(c.request.content) for c in route.calls)
    # The candidate id is part of the body and the same on the retry: that is what lets the
    # retry of a call whose first attempt created the user still report is_new = true.
    assert first == second
    assert first == {
        "shop_domain": SHOP,
        "email": "x@y.z",
        "name": None,
        "shopify_id": None,
        "new_id": first["new_id"],
    }
    assert first["new_id"].startswith("usr_")
