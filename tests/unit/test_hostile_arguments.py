"""Every public function answers bad text and JSON with the package's own error (issue 14).

A property test drives each public entry point with arbitrary strings (lone surrogates
included, which ``json.loads`` and ``os.fsdecode`` produce), values of the wrong type, oversized
text and JSON nested far deeper than ``MAX_JSON_DEPTH``. Each call either succeeds (the gateway is
respx, answering as PostgREST does; Redis is the session's real server) or raises
``ValidationError`` naming a field and a rule. Anything else, ``UnicodeEncodeError``,
``RecursionError`` and ``TypeError`` from below included, fails the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import supabase_identity
from supabase_identity import (
    ConversationStore,
    IdentityClient,
    MemoryOutbox,
    NotFoundError,
    ValidationError,
    archive_conversation,
    complete_oauth,
    conversation_uuid,
    normalize_shop_domain,
    validate_event_data,
    validate_event_type,
    validate_user_id,
)
from supabase_identity._base_client import decode_cursor
from supabase_identity._constants import MAX_CURSOR_LENGTH, MAX_JSON_DEPTH

from .conftest import REST, USER_ID, make_async_client, make_client, record_events_answer

SHOP = "cool-shop.myshopify.com"
PROFILE = {
    "user_id": USER_ID,
    "shop_domain": SHOP,
    "created_at": "2026-01-01T00:00:00+00:00",
    "last_seen": "2026-01-01T00:00:00+00:00",
    "stats": {"total_conversations": 0, "total_messages": 0, "total_events": 0},
}

# --- strategies -------------------------------------------------------------------------------
LONE_SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
#: Any text, surrogates included, plus text that surely holds one and some sure troublemakers.
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),
    st.tuples(st.text(max_size=20), LONE_SURROGATES, st.text(max_size=20)).map("".join),
    st.sampled_from(["", " ", "\x00", "usr_0123456789abcdef01234567", SHOP]),
    st.integers(256, 20_000).map(lambda n: "a" * n),  # over every length limit
)
#: What a caller might pass where a string belongs (``KEY``: the hashable ones).
KEY = st.one_of(TEXT, st.none(), st.integers(), st.binary(max_size=8))
STRING_ARG = st.one_of(KEY, st.just([1]))
SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), TEXT, st.binary(max_size=4)
)


def _nest(depth: int, leaf: Any, as_object: bool) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value} if as_object else [value]
    return value


#: JSON-ish values: ordinary trees, and chains nested up to 50,000 deep.
JSON = st.one_of(
    st.recursive(
        SCALAR,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
        ),
        max_leaves=12,
    ),
    st.builds(_nest, st.integers(1, 50_000), SCALAR, st.booleans()),
)
JSON_OBJECT = st.one_of(st.dictionaries(TEXT, JSON, max_size=4), JSON)


def own_error_or_success(call: Callable[[], Any]) -> None:
    """Run ``call``: it succeeds (or finds no row), or raises a ``ValidationError`` naming its
    field and rule. Any other exception escapes and fails the test."""
    try:
        call()
    except ValidationError as err:
        assert err.field, err
        assert err.rule, err
    except NotFoundError:
        pass  # a well-formed id the mocked gateway has no row for


# --- fixtures (module-scoped: hypothesis runs many examples per test) -------------------------
def _answer_rpc(request: httpx.Request) -> httpx.Response:
    name = request.url.path.rsplit("/", 1)[1]
    if name == "get_or_create_user":
        return httpx.Response(200, json=[{"user_id": USER_ID, "is_new": False}])
    if name == "record_events":
        return record_events_answer(request)
    if name == "get_user_profile":
        return httpx.Response(200, json=PROFILE)
    if name == "search_conversations":
        return httpx.Response(200, json={"conversations": [], "total": 0, "limit": 20, "offset": 0})
    return httpx.Response(200, json={})


@pytest.fixture(scope="module")
def gateway() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=REST, assert_all_called=False) as router:
        router.post(path__regex=r"/rpc/.+").mock(side_effect=_answer_rpc)
        router.get("/conversations").mock(
            return_value=httpx.Response(200, json=[], headers={"Content-Range": "*/0"})
        )
        yield router


@pytest.fixture(scope="module")
def service(
    gateway: respx.MockRouter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IdentityClient]:
    folder = tmp_path_factory.mktemp("noenv")
    client = make_client(folder, outbox=MemoryOutbox(max_events=100_000), max_retries=0)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def store_redis(redis_server: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server)
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- the properties ---------------------------------------------------------------------------
@PROPERTY
@given(shop=STRING_ARG, email=STRING_ARG, name=STRING_ARG, shopify_id=STRING_ARG)
def test_get_or_create_user(
    service: IdentityClient, shop: Any, email: Any, name: Any, shopify_id: Any
) -> None:
    own_error_or_success(lambda: service.get_or_create_user(shop, email, name, shopify_id))
    own_error_or_success(lambda: service.get_or_create_user(SHOP, email, name, shopify_id))


@PROPERTY
@given(user_id=STRING_ARG, event_type=STRING_ARG, event_data=JSON_OBJECT)
def test_log_user_event(
    service: IdentityClient, user_id: Any, event_type: Any, event_data: Any
) -> None:
    own_error_or_success(lambda: service.log_user_event(user_id, event_type, event_data))
    own_error_or_success(lambda: service.log_user_event(USER_ID, "chat.started", event_data))
    own_error_or_success(lambda: validate_event_data(event_data))


@PROPERTY
@given(user_id=STRING_ARG, conversation_id=STRING_ARG, cursor=STRING_ARG)
def test_reads(service: IdentityClient, user_id: Any, conversation_id: Any, cursor: Any) -> None:
    own_error_or_success(lambda: service.get_user_profile(user_id))
    own_error_or_success(lambda: service.get_conversation(USER_ID, conversation_id))
    own_error_or_success(lambda: service.get_conversation(user_id, conversation_id))
    own_error_or_success(lambda: service.get_user_conversations(USER_ID, cursor=cursor))
    own_error_or_success(lambda: service.get_user_conversations(user_id, limit=5))
    own_error_or_success(lambda: service.search_conversations(USER_ID, cursor))
    own_error_or_success(lambda: service.search_conversations(user_id, "refund"))
    own_error_or_success(lambda: list(service.iter_user_conversations(user_id)))
    own_error_or_success(lambda: service.for_user(user_id))


@PROPERTY
@given(function=STRING_ARG, params=JSON_OBJECT)
def test_rpc(service: IdentityClient, function: Any, params: Any) -> None:
    own_error_or_success(lambda: service.rpc(function, params))
    own_error_or_success(lambda: service.rpc("link_conversations", params))


@PROPERTY
@given(value=STRING_ARG, secret=STRING_ARG)
def test_pure_helpers(value: Any, secret: Any) -> None:
    for helper in (
        conversation_uuid,
        normalize_shop_domain,
        validate_event_type,
        validate_user_id,
        supabase_identity.user_subject,
        supabase_identity.classify_key,
        decode_cursor,
    ):
        own_error_or_success(lambda helper=helper: helper(value))  # type: ignore[misc]
    own_error_or_success(lambda: supabase_identity.mint_user_token(value, "s" * 32, ttl=60))
    own_error_or_success(lambda: supabase_identity.mint_user_token(USER_ID, secret, ttl=60))


@PROPERTY
@given(
    conversation_id=STRING_ARG,
    user_id=st.one_of(st.none(), STRING_ARG),
    text=STRING_ARG,
    extra=st.one_of(st.none(), st.dictionaries(KEY, STRING_ARG, max_size=3)),
)
def test_conversation_store(
    store_redis: redis.Redis, conversation_id: Any, user_id: Any, text: Any, extra: Any
) -> None:
    store = ConversationStore(store_redis)
    own_error_or_success(
        lambda: store.create_session(
            conversation_id, user_id=user_id, merchant_id=text, workflow_name=text, extra=extra
        )
    )
    own_error_or_success(
        lambda: store.append_message(conversation_id, sender=text, content=text, extra=extra)
    )
    own_error_or_success(lambda: store.set_user(conversation_id, USER_ID, merchant_id=text))
    own_error_or_success(lambda: store.end_conversation(conversation_id))
    own_error_or_success(lambda: store.remember_merchant(text, USER_ID, merchant_id=text))


@PROPERTY
@given(conversation_id=STRING_ARG, user_id=st.one_of(st.none(), STRING_ARG), text=STRING_ARG)
def test_archive_and_oauth(
    service: IdentityClient,
    store_redis: redis.Redis,
    conversation_id: Any,
    user_id: Any,
    text: Any,
) -> None:
    store_redis.flushdb()  # nothing to archive: the arguments are what is under test
    own_error_or_success(
        lambda: archive_conversation(conversation_id, store_redis, user_id, client=service)
    )
    own_error_or_success(
        lambda: complete_oauth(
            SHOP,
            redis_client=store_redis,
            client=service,
            email=text,
            name=text,
            merchant_id=text,
            conversation_id=conversation_id,
        )
    )


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(user_id=STRING_ARG, event_data=JSON_OBJECT, cursor=STRING_ARG)
def test_async_client(
    gateway: respx.MockRouter, tmp_path: Path, user_id: Any, event_data: Any, cursor: Any
) -> None:
    async def run() -> None:
        client = make_async_client(tmp_path, outbox=MemoryOutbox(), max_retries=0)
        try:
            for call in (
                lambda: client.log_user_event(user_id, "chat.started", event_data),
                lambda: client.get_user_conversations(USER_ID, cursor=cursor),
                lambda: client.get_or_create_user(SHOP, email=user_id),
            ):
                try:
                    await call()
                except ValidationError as err:
                    assert err.field and err.rule, err
                except NotFoundError:
                    pass
        finally:
            await client.close()

    asyncio.run(run())


# --- the limits, stated -----------------------------------------------------------------------
def test_json_deeper_than_the_limit_names_the_rule(service: IdentityClient) -> None:
    at_limit = _nest(MAX_JSON_DEPTH - 1, 1, as_object=True)  # the event object itself is level 1
    service.log_user_event(USER_ID, "deep.ok", at_limit)
    for deep in (_nest(MAX_JSON_DEPTH, 1, True), _nest(100_000, "x", False)):
        with pytest.raises(ValidationError) as info:
            service.log_user_event(USER_ID, "deep.too", {"v": deep})
        assert (info.value.field, info.value.rule) == ("event_data", "max_depth")
    with pytest.raises(ValidationError) as info:
        service.rpc("link_conversations", {"p": _nest(100_000, None, True)})
    assert (info.value.field, info.value.rule) == ("params", "max_depth")


def test_a_cursor_that_decodes_to_deep_json_is_refused_by_its_length() -> None:
    import base64

    nested = base64.urlsafe_b64encode(("[" * 50_000 + "]" * 50_000).encode()).decode()
    with pytest.raises(ValidationError) as info:
        decode_cursor(nested)
    assert (info.value.field, info.value.rule) == ("cursor", "max_length")
    with pytest.raises(ValidationError) as info:
        decode_cursor("A" * (MAX_CURSOR_LENGTH + 1))
    assert info.value.rule == "max_length"


@pytest.mark.parametrize(
    ("field", "call"),
    [
        ("email", lambda c: c.get_or_create_user(SHOP, email="owner\ud800@example.com")),
        ("name", lambda c: c.get_or_create_user(SHOP, name="\udfff")),
        ("shopify_id", lambda c: c.get_or_create_user(SHOP, shopify_id="id-\ud83d")),
        ("conversation_id", lambda c: c.get_conversation(USER_ID, "conv-\ud800")),
        ("event_data", lambda c: c.log_user_event(USER_ID, "x", {"k\ud800": 1})),
        ("params", lambda c: c.rpc("link_conversations", {"p": ["\ud800"]})),
    ],
)
def test_a_lone_surrogate_is_refused_with_the_field_named(
    service: IdentityClient, field: str, call: Callable[[IdentityClient], Any]
) -> None:
    with pytest.raises(ValidationError) as info:
        call(service)
    assert (info.value.field, info.value.rule) == (field, "unicode")
    assert "U+D" in str(info.value)
