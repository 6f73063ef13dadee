"""Logic shared by the sync and async clients: no I/O and no sleeping happen here.

The split follows the Stainless SDKs: :class:`BaseIdentityClient` owns configuration, request
construction, retry decisions, backoff computation, response parsing and error mapping; the
clients (``_async/_client.py``, and its generated twin ``_sync/_client.py``) only send requests
and sleep (awaiting or blocking).

Requests are *built* by the official PostgREST client, postgrest-py (the URL, the query string
and the ``Accept-Profile``/``Content-Profile: identity`` headers), once per call and with no I/O,
and *sent* by this package on its pooled ``httpx`` client with the client's own ``apikey`` and
``Authorization``. postgrest-py's ``execute()`` is not used because it hides what a service SDK
needs: the HTTP status and ``Retry-After`` (its errors carry neither), per-call timeouts,
``Content-Range`` next to the data, and retries beyond "GET on 503/520".
"""

from __future__ import annotations

import base64
import binascii
import copy
import email.utils
import json
import logging
import os
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, Self, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import httpx
import pydantic
from postgrest import AsyncPostgrestClient, SyncPostgrestClient
from postgrest.types import CountMethod
from tenacity import RetryCallState

from ._compliance import shop_hash
from ._constants import (
    CONVERSATION_COLUMNS,
    CONVERSATION_LIST_COLUMNS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    EVENT_COLUMNS,
    INITIAL_RETRY_DELAY,
    MAX_CURSOR_LENGTH,
    MAX_EMAIL_LENGTH,
    MAX_MAINTENANCE_BATCH,
    MAX_NAME_LENGTH,
    MAX_RETRY_AFTER,
    MAX_RETRY_DELAY,
    MAX_SEARCH_OFFSET,
    MAX_SHOPIFY_ID_LENGTH,
    REQUIRED_FUNCTIONS,
    RPC_NAME_PATTERN,
    USER_TOKEN_REFRESH_MARGIN,
)
from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    ClientClosedError,
    ConfigError,
    IdentityError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
    make_api_error,
)
from ._keys import Privilege, classify_key, mint_user_token, redact, scrub, token_expiry
from ._models import (
    SUMMARY_LIST,
    AnalyzeResult,
    Conversation,
    ConversationPage,
    ConversationSummary,
    DeadLetter,
    EventsMoveResult,
    IdentityStats,
    OutboxEvent,
    SearchAnswer,
    SearchPage,
    ShopRedaction,
    UnlinkedCleanupResult,
    UserProfile,
)
from ._outbox import make_dead_letter
from ._settings import Settings, check_credential, load_settings
from ._types import NotGiven, TimeoutTypes, given
from ._validation import (
    conversation_uuid,
    normalize_shop_domain,
    validate_event_data,
    validate_event_type,
    validate_json,
    validate_optional_text,
    validate_page,
    validate_search_query,
    validate_text,
    validate_user_id,
)

log = logging.getLogger("supabase_identity")

RestClient = SyncPostgrestClient | AsyncPostgrestClient
_ModelT = TypeVar("_ModelT", bound=pydantic.BaseModel)


class PostgrestRequest(Protocol):
    """What this package reads from a postgrest-py request builder's ``request``."""

    @property
    def http_method(self) -> str: ...

    @property
    def path(self) -> object: ...  # a ``yarl.URL`` (or ``str``): only its text is used

    @property
    def params(self) -> httpx.QueryParams: ...

    @property
    def headers(self) -> httpx.Headers: ...

    @property
    def json(self) -> Any: ...


class RequestBuilder(Protocol):
    """A postgrest-py request builder (``rpc(...)``, ``from_(...).select(...)...``)."""

    @property
    def request(self) -> PostgrestRequest: ...


#: Characters PostgREST's query grammar uses that a query string may carry as they are (RFC 3986
#: sub-delims and ":"); leaving them unescaped keeps URLs readable and their encoding cheap.
QUERY_SAFE = ",.:()*"

#: Only these transport failures are retried; a bad URL scheme or a local protocol error is not.
RETRYABLE_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


def encode_query(items: Iterable[tuple[str, str]]) -> str:
    """A query string; PostgREST's own punctuation (``QUERY_SAFE``) is left as it is."""
    return "&".join(f"{quote(k, safe=QUERY_SAFE)}={quote(v, safe=QUERY_SAFE)}" for k, v in items)


@dataclass(frozen=True, slots=True)
class RequestTemplate:
    """A request shape as postgrest-py builds it: method, path with the static query, headers.

    Built once per shape and client (``BaseIdentityClient._template``), then reused by every call
    of that shape, which only adds its own filter values (``column=op.value``), body and
    credentials. Building the whole request with postgrest-py on every call cost about as much
    as everything else the SDK does per call together (``scripts/bench identity``).
    """

    method: str
    url: str
    headers: Mapping[str, str]

    @classmethod
    def of(cls, builder: RequestBuilder) -> RequestTemplate:
        req = builder.request
        query = encode_query(req.params.multi_items())
        headers = {k: v for k, v in req.headers.items() if k not in _CALL_HEADERS}
        return cls(str(req.http_method), f"{req.path}?{query}" if query else str(req.path), headers)


#: Headers each call sets itself (credentials, body type), never taken from a template.
_CALL_HEADERS = frozenset({"apikey", "authorization", "content-type"})


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One HTTP request, fully built, ready to be sent (possibly several times)."""

    operation: str
    method: str
    url: str  # with the query string: httpx then parses it once, merges nothing
    headers: dict[str, str]
    body: bytes | None = None


@dataclass(slots=True)
class Delivery:
    """Outcome of delivering some events: counts plus the dead letters to keep."""

    delivered: int = 0
    duplicates: int = 0
    dead: list[DeadLetter] = field(default_factory=list)

    def __add__(self, other: Delivery) -> Delivery:
        return Delivery(
            self.delivered + other.delivered,
            self.duplicates + other.duplicates,
            [*self.dead, *other.dead],
        )


class RetryableResponse(Exception):
    """Internal: a response worth retrying (408/429/5xx); carries it to the backoff logic."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def is_retryable_status(status_code: int) -> bool:
    """408, 429 and 5xx are transient; every other status is an answer."""
    return status_code in (408, 429) or status_code >= 500


def is_retryable_exception(exc: BaseException) -> bool:
    """Whether tenacity should try again after ``exc``."""
    return isinstance(exc, (RetryableResponse, *RETRYABLE_TRANSPORT_ERRORS))


def parse_retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, ``Retry-After`` secs or date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return float(raw_ms) / 1000.0
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - (time.time() if now is None else now)


def backoff_delay(retries_done: int, retry_after: float | None = None) -> float:
    """Delay before the next attempt: ``Retry-After`` if sane, else exponential with jitter.

    ``INITIAL * 2**retries_done`` capped at ``MAX_RETRY_DELAY``, times a jitter in
    ``[0.75, 1.0]`` so that many clients failing together do not retry in lockstep.
    """
    if retry_after is not None and 0 <= retry_after <= MAX_RETRY_AFTER:
        return retry_after
    delay = min(INITIAL_RETRY_DELAY * (2.0**retries_done), MAX_RETRY_DELAY)
    return delay * (1 - 0.25 * random.random())  # noqa: S311 - jitter, not cryptography


def encode_cursor(started_at: datetime, conversation_id: uuid.UUID) -> str:
    """Opaque keyset cursor for "after this conversation" (base64url of a JSON pair)."""
    # The JSON of the pair, written directly (neither part has a character JSON escapes).
    raw = f'["{started_at.isoformat()}","{conversation_id}"]'
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Inverse of :func:`encode_cursor`; ``ValidationError`` for anything it did not produce.

    A cursor longer than ``MAX_CURSOR_LENGTH`` is refused before it is decoded: it cannot be
    one of ours, and the bound also bounds how deeply its JSON can nest.
    """
    validate_text(cursor, field="cursor", max_length=MAX_CURSOR_LENGTH)
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        started, conv_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(started, str) or not isinstance(conv_id, str):
            raise TypeError("cursor parts must be strings")
        when = datetime.fromisoformat(started)
        if when.tzinfo is None:
            raise ValueError("naive timestamp")
        return when, uuid.UUID(conv_id)
    # ValueError covers UnicodeEncodeError (a lone surrogate) and JSONDecodeError; RecursionError
    # cannot happen within the length bound, but nothing from the decoder may escape as itself.
    except (ValueError, TypeError, binascii.Error, RecursionError) as err:
        raise ValidationError(
            "cursor is not a cursor returned by get_user_conversations",
            field="cursor",
            rule="opaque_cursor",
        ) from err


def new_user_id() -> str:
    """A fresh ``usr_`` id: 24 random lowercase hex characters, never derived from the shop."""
    return "usr_" + secrets.token_hex(12)


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON; NaN is refused (PostgREST would reject it anyway).

    Public entry points validate their arguments first (``_validation``); whatever still cannot
    be encoded is reported as a ``ValidationError`` of the request body, never as the encoder's
    own exception.
    """
    try:
        return json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()
    except (TypeError, ValueError, RecursionError) as err:  # ValueError: UnicodeEncodeError too
        raise ValidationError(
            f"the request body is not JSON that can be sent: {type(err).__name__}",
            field="body",
            rule="json_serializable",
        ) from err


@dataclass(slots=True)
class SharedState:
    """State shared by a client and every client derived from it (for_user/with_options).

    Only the client that created the connections (the owner) closes them; once closed, every
    client sharing them refuses to send with :class:`ClientClosedError`.
    """

    closed: bool = False


@dataclass(frozen=True, slots=True)
class Credentials:
    base_url: str
    api_key: str
    access_token: str | None
    public_key: str | None
    jwt_secret: str | None
    redis_url: str | None
    redis_cluster: bool | None = None
    audit_key: str | None = None


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())


class CredentialSources(TypedDict):
    """The constructor arguments that say where the URL, keys and Redis come from."""

    url: str | None
    key: str | None
    public_key: str | None
    access_token: str | None
    jwt_secret: str | None
    redis_url: str | NotGiven | None
    env_dir: str | os.PathLike[str] | None
    environ: Mapping[str, str] | None


def resolve_credentials(**sources: Unpack[CredentialSources]) -> Credentials:
    """Apply the precedence explicit argument > environment > .env.local > .env."""
    key, access_token = sources["key"], sources["access_token"]
    for value, name in (
        (key, "key"),
        (sources["public_key"], "public_key"),
        (access_token, "access_token"),
    ):
        if value is not None:
            check_credential(value, name=f"the {name} argument")
    redis_url = sources["redis_url"]
    given_redis = None if isinstance(redis_url, NotGiven) else redis_url
    settings: Settings = load_settings(
        env_dir=sources["env_dir"],
        environ=sources["environ"],
        overrides={
            "supabase_url": sources["url"],
            "jwt_secret": sources["jwt_secret"],
            "redis_url": given_redis,
        },
    )
    if settings.supabase_url is None:
        raise ConfigError(
            "SUPABASE_URL is not set. Set it (or IDENTITY_SUPABASE_URL: environment, .env.tunnel, "
            ".env.local or .env) to the project's "
            "API URL, https://<project-ref>.supabase.co, or http://127.0.0.1:54321 for the "
            "local stack (`scripts/stack env` prints it)."
        )
    replaced = {"anon_key"} if sources["public_key"] is not None else set()
    if key is not None:
        replaced |= {"service_role_key", "anon_key"}
    settings.check_one_project(ignore=replaced)
    service = _secret(settings.service_role_key)
    anon = sources["public_key"] or _secret(settings.anon_key)
    if access_token is not None:
        # A user token travels with the public key; the service key never accompanies it
        # unless it is a legacy JWT (then the gateway ignores it for authorization).
        api_key = key or anon or service
        if api_key is not None and classify_key(api_key).kind == "secret":
            raise ConfigError(
                "A user access token must be sent with the public key: set SUPABASE_ANON_KEY "
                "(or SUPABASE_PUBLISHABLE_KEY), not only the sb_secret_ key."
            )
    else:
        api_key = key or service or anon
    if not api_key:
        raise ConfigError(
            "No Supabase API key: set SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SECRET_KEY) for a "
            "backend service, or SUPABASE_ANON_KEY (or SUPABASE_PUBLISHABLE_KEY); "
            "IDENTITY_SUPABASE_… when the URL is IDENTITY_SUPABASE_URL."
        )
    resolved_redis = _secret(settings.redis_url) if isinstance(redis_url, NotGiven) else redis_url
    return Credentials(
        base_url=settings.supabase_url,
        api_key=api_key.strip(),
        access_token=access_token,
        public_key=anon,
        jwt_secret=_secret(settings.jwt_secret),
        redis_url=resolved_redis,
        redis_cluster=settings.redis_cluster,
        audit_key=_secret(settings.audit_key),
    )


def _check_retries(max_retries: int) -> None:
    if max_retries < 0:
        raise ValidationError("max_retries must be 0 or more", field="max_retries", rule="range")


class BaseIdentityClient:
    """State and pure logic of :class:`IdentityClient` and :class:`AsyncIdentityClient`."""

    base_url: str
    privilege: Privilege
    max_retries: int
    timeout: TimeoutTypes
    _shared: SharedState
    _owner: bool
    _templates: dict[str, RequestTemplate]

    def _init_auth(
        self,
        *,
        base_url: str,
        api_key: str,
        access_token: str | None,
        public_key: str | None,
        jwt_secret: str | None,
        user_id: str | None = None,
        token_ttl: int = 0,
    ) -> None:
        """Record the credentials and derive the privilege (called by subclass constructors)."""
        self.base_url = base_url
        self._api_key = api_key
        self._public_key = public_key
        self._jwt_secret = jwt_secret
        self._static_token = access_token
        self._user_id = user_id
        self._token_ttl = token_ttl
        self._minted: tuple[str, float] | None = None
        self._mint_lock = threading.Lock()
        self.privilege = (
            Privilege.USER
            if user_id is not None
            else classify_key(access_token or api_key).privilege
        )

    # --- configuration and lifecycle (identical in both clients) ----------------------------

    def _configure(
        self,
        *,
        timeout: TimeoutTypes | NotGiven,
        max_retries: int | NotGiven,
        **sources: Unpack[CredentialSources],
    ) -> Credentials:
        """Constructor work shared by both clients: settings, credentials, timeout, retries."""
        creds = resolve_credentials(**sources)
        self._init_auth(
            base_url=creds.base_url,
            api_key=creds.api_key,
            access_token=creds.access_token,
            public_key=creds.public_key,
            jwt_secret=creds.jwt_secret,
        )
        self._redis_url = creds.redis_url
        self._redis_cluster = creds.redis_cluster
        self._audit_key = creds.audit_key
        self._templates = {}  # request shapes, shared with derived clients (no credentials)
        self.timeout = given(timeout, DEFAULT_TIMEOUT)
        self.max_retries = given(max_retries, DEFAULT_MAX_RETRIES)
        _check_retries(self.max_retries)
        return creds

    def _check_open(self) -> None:
        if self._shared.closed:
            raise ClientClosedError(
                f"This {type(self).__name__} is closed; create a new client instead of reusing it."
            )

    @property
    def is_closed(self) -> bool:
        """Whether the client's connections were closed (it then refuses every call)."""
        return self._shared.closed

    def _timeout(self, timeout: TimeoutTypes | NotGiven) -> TimeoutTypes:
        return given(timeout, self.timeout)

    def _derive(self, *, timeout: TimeoutTypes | NotGiven, max_retries: int | NotGiven) -> Self:
        clone = copy.copy(self)
        clone._owner = False
        clone.timeout = given(timeout, self.timeout)
        clone.max_retries = given(max_retries, self.max_retries)
        _check_retries(clone.max_retries)
        return clone

    def _scoped(self, user_id: str, ttl: int) -> Self:
        """A clone acting as ``user_id`` (what ``for_user`` returns): no I/O, nothing built.

        It shares the connection pool and the request builder; only its credentials differ:
        the public key, and a token for ``user_id`` minted on first use.
        """
        self._check_open()
        public = self._user_credentials(user_id)
        clone = self._derive(timeout=self.timeout, max_retries=self.max_retries)
        clone._init_auth(
            base_url=self.base_url,
            api_key=public,
            access_token=None,
            public_key=public,
            jwt_secret=self._jwt_secret,
            user_id=user_id,
            token_ttl=ttl,
        )
        return clone

    @property
    def redis_url(self) -> str | None:
        """The resolved ``REDIS_URL`` (may hold a password: do not log it)."""
        return self._redis_url

    def _user_credentials(self, user_id: str) -> str:
        validate_user_id(user_id)
        if not self._jwt_secret:
            raise ConfigError(
                "for_user() mints a token with the project's JWT secret: set SUPABASE_JWT_SECRET "
                "(Dashboard → Project Settings → API → JWT secret), or build a client with "
                "access_token= from a token you already have."
            )
        public = self._public_key
        if not public:
            raise ConfigError(
                "for_user() sends the user token with the public key: set SUPABASE_ANON_KEY "
                "(or SUPABASE_PUBLISHABLE_KEY)."
            )
        return public

    # --- secrets --------------------------------------------------------------------------

    def _secrets(self) -> list[str]:
        found = [self._api_key, self._public_key, self._jwt_secret, self._static_token]
        if self._minted is not None:
            found.append(self._minted[0])
        return [s for s in found if s]

    def _redact(self, text: str) -> str:
        """Replace any secret this client holds, and anything shaped like one, by its redaction."""
        for secret in sorted(self._secrets(), key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, redact(secret))
        return scrub(text)

    def _bearer(self) -> str:
        """The token to send as ``Authorization: Bearer``, minting a fresh one when needed."""
        if self._user_id is None:
            return self._static_token or self._api_key
        assert self._jwt_secret is not None
        now = time.time()
        with self._mint_lock:
            if self._minted is None or self._minted[1] - now < USER_TOKEN_REFRESH_MARGIN:
                token = mint_user_token(self._user_id, self._jwt_secret, ttl=self._token_ttl)
                self._minted = (token, token_expiry(token) or now + self._token_ttl)
            return self._minted[0]

    def __repr__(self) -> str:
        who = f", user_id={self._user_id!r}" if self._user_id else ""
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, key={redact(self._api_key)!r}, "
            f"privilege={self.privilege.value!r}{who})"
        )

    # --- permission checks ----------------------------------------------------------------

    def _require_write(self, operation: str) -> None:
        """Refuse a write before any request when this client cannot possibly be allowed it."""
        if self.privilege in (Privilege.PUBLIC, Privilege.USER):
            what = "a user-scoped token" if self.privilege is Privilege.USER else "the public key"
            raise PermissionDeniedError(
                f"{operation} needs the service key, but this client holds {what} "
                f"({redact(self._api_key)}). Set SUPABASE_SERVICE_ROLE_KEY (or "
                "SUPABASE_SECRET_KEY) for backend services; public keys ship to browsers and "
                "can write nothing in the identity schema.",
            )

    # --- request construction -------------------------------------------------------------

    def _template(self, key: str, build: Callable[[], RequestBuilder]) -> RequestTemplate:
        """The request shape ``key``, built by postgrest-py on its first use in this client."""
        found = self._templates.get(key)
        if found is None:
            found = self._templates[key] = RequestTemplate.of(build())
        return found

    def _spec(
        self,
        operation: str,
        template: RequestTemplate,
        query: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> RequestSpec:
        """One request of shape ``template``: this call's query values, body and credentials."""
        headers = {**template.headers, "apikey": self._api_key}
        headers["authorization"] = f"Bearer {self._bearer()}"
        if body is not None:
            headers["content-type"] = "application/json"
        url = template.url
        if query:
            url += ("&" if "?" in url else "?") + encode_query(query)
        return RequestSpec(operation, template.method, url, headers, body)

    def _spec_call(self, rest: RestClient, function: str, body: bytes) -> RequestSpec:
        """``POST rpc/<function>`` with a JSON body (every call here is a POST)."""
        template = self._template(f"rpc/{function}", lambda: rest.rpc(function, {}))
        return self._spec(f"rpc/{function}", template, body=body)

    def _spec_get_or_create_user(
        self,
        rest: RestClient,
        shop_domain: str,
        email: str | None,
        name: str | None,
        shopify_id: str | None,
    ) -> RequestSpec:
        params: dict[str, Any] = {
            "shop_domain": normalize_shop_domain(shop_domain),
            "email": validate_optional_text(email, field="email", max_length=MAX_EMAIL_LENGTH),
            "name": validate_optional_text(name, field="name", max_length=MAX_NAME_LENGTH),
            "shopify_id": validate_optional_text(
                shopify_id, field="shopify_id", max_length=MAX_SHOPIFY_ID_LENGTH
            ),
            # One candidate id per logical call, reused by its retries: if the first attempt
            # created the user but its response was lost, the retry still gets is_new = true.
            "new_id": new_user_id(),
        }
        self._require_write("get_or_create_user")
        return self._spec_call(rest, "get_or_create_user", encode_json(params))

    def _spec_record_events(self, rest: RestClient, events: Sequence[OutboxEvent]) -> RequestSpec:
        body = encode_json({"events": [e.to_wire() for e in events]})
        return self._spec_call(rest, "record_events", body)

    def _spec_get_user_profile(self, rest: RestClient, user_id: str) -> RequestSpec:
        body = encode_json({"user_id": validate_user_id(user_id)})
        return self._spec_call(rest, "get_user_profile", body)

    def _spec_list_conversations(
        self, rest: RestClient, user_id: str, limit: int, offset: int, cursor: str | None
    ) -> RequestSpec:
        validate_user_id(user_id)
        validate_page(limit, offset)
        after = decode_cursor(cursor) if cursor is not None else None
        if after is not None and offset:
            raise ValidationError(
                "pass either offset or cursor, not both", field="cursor", rule="exclusive"
            )
        query = [("user_id", f"eq.{user_id}"), ("limit", str(limit))]
        if after is None:  # an offset page carries the exact total (Content-Range)
            template = self._template(
                "conversations.page",
                lambda: (
                    rest.from_("conversations")
                    .select(CONVERSATION_LIST_COLUMNS, count=CountMethod.exact)
                    .order("started_at", desc=True)
                    .order("id", desc=True)
                ),
            )
            query.append(("offset", str(offset)))
        else:  # a keyset page counts nothing: its cost does not grow with depth
            template = self._template(
                "conversations.keyset",
                lambda: (
                    rest.from_("conversations")
                    .select(CONVERSATION_LIST_COLUMNS)
                    .order("started_at", desc=True)
                    .order("id", desc=True)
                ),
            )
            started, conv_id = after
            ts = started.isoformat()
            query.append(("or", f"(started_at.lt.{ts},and(started_at.eq.{ts},id.lt.{conv_id}))"))
        return self._spec("conversations", template, query)

    def _spec_search_conversations(
        self, rest: RestClient, user_id: str, query: str, limit: int, offset: int
    ) -> RequestSpec:
        params = {
            "user_id": validate_user_id(user_id),
            "query": validate_search_query(query),
            "max_results": validate_page(limit, offset)[0],
            "skip": offset,
        }
        if offset > MAX_SEARCH_OFFSET:
            raise ValidationError(
                f"offset must be at most {MAX_SEARCH_OFFSET} for a search, got {offset}",
                field="offset",
                rule="range",
            )
        return self._spec_call(rest, "search_conversations", encode_json(params))

    def _spec_get_conversation(
        self, rest: RestClient, user_id: str, conversation_id: str | uuid.UUID
    ) -> RequestSpec:
        validate_user_id(user_id)
        conv = str(conversation_uuid(conversation_id))
        # Every column but the full-text vector, which is about as large as the messages.
        template = self._template(
            "conversations.one",
            lambda: rest.from_("conversations").select(CONVERSATION_COLUMNS),
        )
        query = [("user_id", f"eq.{user_id}")]
        if isinstance(conversation_id, str) and conv != conversation_id:
            # Any id but a canonical UUID is a Redis id: its row is the one that keeps it.
            query.append(("source_id", f"eq.{conversation_id}"))
        else:
            # A canonical UUID: its own row, or (when another id's row took that UUID first)
            # the row that keeps it in source_id; _parse_conversation prefers the former.
            query += [("or", f"(id.eq.{conv},source_id.eq.{conv})"), ("limit", "2")]
        return self._spec("conversations", template, query)

    def _spec_rpc(
        self,
        rest: RestClient,
        function: str,
        params: Mapping[str, Any] | None,
        encoded: bytes | None = None,
    ) -> RequestSpec:
        if not isinstance(function, str) or not re.fullmatch(RPC_NAME_PATTERN, function):
            raise ValidationError(
                f"function {function!r} is not a SQL function name",
                field="function",
                rule="identifier",
            )
        if encoded is None and params is not None:
            if not isinstance(params, Mapping):
                raise ValidationError(
                    f"params must be a mapping of argument names to JSON values, got "
                    f"{type(params).__name__}",
                    field="params",
                    rule="json_object",
                )
            validate_json(params, field="params")
        # A caller that already serialized the body (the archiver measures every row's size
        # to bound its batches) sends those bytes: the same JSON is not encoded twice.
        body = encoded if encoded is not None else encode_json(dict(params or {}))
        return self._spec_call(rest, function, body)

    def _spec_events_page(
        self, rest: RestClient, user_id: str, limit: int, after: tuple[str, str] | None
    ) -> RequestSpec:
        validate_user_id(user_id)
        template = self._template(
            "events.page",
            lambda: rest.from_("events").select(EVENT_COLUMNS).order("created_at").order("id"),
        )
        query = [("user_id", f"eq.{user_id}"), ("limit", str(limit))]
        if after is not None:
            ts, event_id = after
            query.append(("or", f"(created_at.gt.{ts},and(created_at.eq.{ts},id.gt.{event_id}))"))
        return self._spec("events", template, query)

    # --- compliance (service key only) -----------------------------------------------------

    def _shop_and_hash(self, shop_domain: str, key: str | None) -> tuple[str, str]:
        """The normalized shop and its audit hash (``key``, else the configured audit key)."""
        shop = normalize_shop_domain(shop_domain)
        key = key or self._audit_key
        if not key:
            raise ConfigError(
                "IDENTITY_AUDIT_KEY (or SHOPIFY_API_SECRET) is not set: the compliance audit "
                "needs a key to hash shop domains with"
            )
        return shop, shop_hash(key.encode("utf-8"), shop)

    def _spec_shop_users(self, rest: RestClient, shop_domain: str) -> RequestSpec:
        """The id of the user of a (normalized) shop: ``[]`` or ``[{"id": …}]``."""
        template = self._template("users.by_shop", lambda: rest.from_("users").select("id"))
        return self._spec("users", template, [("shop_domain", f"eq.{shop_domain}")])

    def _spec_redact_shop(self, rest: RestClient, shop_domain: str, hashed: str) -> RequestSpec:
        body = encode_json({"shop_domain": shop_domain, "shop_hash": hashed})
        return self._spec_call(rest, "redact_shop", body)

    def _spec_shop_data_summary(
        self, rest: RestClient, shop_domain: str, hashed: str, topic: str
    ) -> RequestSpec:
        body = encode_json({"shop_domain": shop_domain, "shop_hash": hashed, "topic": topic})
        return self._spec_call(rest, "shop_data_summary", body)

    def _parse_shop_users(self, data: Any) -> list[str]:
        if not isinstance(data, list) or not all(
            isinstance(row, dict) and isinstance(row.get("id"), str) for row in data
        ):
            raise self._shape_error("users", data)
        return [row["id"] for row in data]

    def _parse_redaction(self, data: Any) -> tuple[ShopRedaction, str | None]:
        """The database part of a redaction, and the user id it deleted (if any)."""
        result = self._parse_model("redact_shop", ShopRedaction, data)
        user_id = data.get("user_id")
        return result, user_id if isinstance(user_id, str) else None

    # --- operations: stats and maintenance (service key only) ------------------------------

    def _spec_stats(self, rest: RestClient, as_of: datetime | None) -> RequestSpec:
        params: dict[str, Any] = {}
        if as_of is not None:
            if not isinstance(as_of, datetime) or as_of.tzinfo is None:
                raise ValidationError(
                    "as_of must be a timezone-aware datetime", field="as_of", rule="aware_datetime"
                )
            params["as_of"] = as_of.isoformat()
        self._require_write("get_stats")
        return self._spec_call(rest, "stats", encode_json(params))

    def _spec_archive_old_events(
        self, rest: RestClient, older_than_days: int, batch_size: int, dry_run: bool
    ) -> RequestSpec:
        params = _maintenance_params(older_than_days, batch_size, dry_run)
        self._require_write("archive_old_events")
        return self._spec_call(rest, "archive_old_events", encode_json(params))

    def _spec_delete_unlinked_conversations(
        self, rest: RestClient, older_than_days: int, batch_size: int, dry_run: bool
    ) -> RequestSpec:
        params = _maintenance_params(older_than_days, batch_size, dry_run)
        self._require_write("delete_unlinked_conversations")
        return self._spec_call(rest, "delete_unlinked_conversations", encode_json(params))

    def _spec_analyze_tables(self, rest: RestClient, dry_run: bool) -> RequestSpec:
        params: dict[str, Any] = {"dry_run": _flag(dry_run, "dry_run")}
        self._require_write("analyze_tables")
        return self._spec_call(rest, "analyze_tables", encode_json(params))

    def _parse_stats(self, data: Any) -> IdentityStats:
        return self._parse_model("stats", IdentityStats, data)

    def _parse_events_move(self, data: Any) -> EventsMoveResult:
        return self._parse_model("archive_old_events", EventsMoveResult, data)

    def _parse_unlinked_cleanup(self, data: Any) -> UnlinkedCleanupResult:
        return self._parse_model("delete_unlinked_conversations", UnlinkedCleanupResult, data)

    def _parse_analyze(self, data: Any) -> AnalyzeResult:
        return self._parse_model("analyze_tables", AnalyzeResult, data)

    @staticmethod
    def _parse_model(operation: str, model: type[_ModelT], data: Any) -> _ModelT:
        """A function's JSON object as ``model``; a shape error names the migrations."""
        if not isinstance(data, dict):
            raise BaseIdentityClient._shape_error(operation, data)
        try:
            return model.model_validate(data)
        except pydantic.ValidationError as err:
            raise BaseIdentityClient._shape_error(operation, data, err) from err

    @staticmethod
    def _health_report(data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise BaseIdentityClient._shape_error("health", data)
        present = set(data.get("functions") or [])
        return {**data, "missing_functions": [f for f in REQUIRED_FUNCTIONS if f not in present]}

    @staticmethod
    def _build_event(
        user_id: str,
        event_type: str,
        event_data: Mapping[str, Any] | None,
        occurred_at: datetime | None,
    ) -> OutboxEvent:
        validate_user_id(user_id)
        validate_event_type(event_type)
        data = validate_event_data(event_data)
        if occurred_at is not None and (
            not isinstance(occurred_at, datetime) or occurred_at.tzinfo is None
        ):
            raise ValidationError(
                "occurred_at must be a timezone-aware datetime",
                field="occurred_at",
                rule="aware_datetime",
            )
        return OutboxEvent(
            id=uuid.uuid4(),
            user_id=user_id,
            event_type=event_type,
            event_data=data,
            created_at=occurred_at or datetime.now(UTC),
        )

    # --- retries ---------------------------------------------------------------------------

    def _retry_wait(self, state: RetryCallState) -> float:
        """tenacity ``wait`` callback: honour ``Retry-After``, else exponential with jitter."""
        exc = state.outcome.exception() if state.outcome is not None else None
        retry_after = (
            parse_retry_after(exc.response.headers) if isinstance(exc, RetryableResponse) else None
        )
        return backoff_delay(state.attempt_number - 1, retry_after)

    def _log_retry(self, spec: RequestSpec) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            what = type(exc).__name__ if not isinstance(exc, RetryableResponse) else str(exc)
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            log.info(
                "Retrying %s %s in %.2fs (attempt %d failed: %s)",
                spec.method,
                spec.operation,
                wait,
                state.attempt_number,
                what,
            )

        return before_sleep

    # --- responses -------------------------------------------------------------------------

    def _error_from_response(self, response: httpx.Response) -> IdentityError:
        try:
            body: Any = response.json()
            text = ""
        except ValueError:
            body, text = None, response.text
        return make_api_error(response.status_code, body, redact=self._redact, fallback_text=text)

    def _transport_error(self, spec: RequestSpec, err: Exception) -> APIConnectionError:
        cls = APITimeoutError if isinstance(err, httpx.TimeoutException) else APIConnectionError
        return cls(
            self._redact(
                f"Could not reach Supabase at {self.base_url} for {spec.operation} "
                f"({type(err).__name__}: {err})"
            ),
            hint="Check SUPABASE_URL and that the project (or `scripts/stack up`) is running.",
        )

    def _json(self, spec: RequestSpec, response: httpx.Response) -> Any:
        if not response.content.strip():
            return None  # e.g. a scalar function returning SQL NULL
        try:
            return response.json()
        except ValueError as err:
            raise APIResponseValidationError(
                f"{spec.operation} answered HTTP {response.status_code} with a non-JSON body",
                status_code=response.status_code,
            ) from err

    @staticmethod
    def _shape_error(operation: str, data: Any, err: Exception | None = None) -> IdentityError:
        snippet = json.dumps(data, default=str)[:200]
        return APIResponseValidationError(
            f"Unexpected answer from {operation}: {snippet}. Are the identity migrations "
            "up to date with this package version?" + (f" ({err})" if err is not None else "")
        )

    def _parse_get_or_create_user(self, data: Any) -> tuple[str, bool]:
        row = data[0] if isinstance(data, list) and len(data) == 1 else data
        if not isinstance(row, dict):
            raise self._shape_error("get_or_create_user", data)
        user_id, is_new = row.get("user_id"), row.get("is_new")
        if not isinstance(user_id, str) or not isinstance(is_new, bool):
            raise self._shape_error("get_or_create_user", data)
        return user_id, is_new

    def _parse_profile(self, user_id: str, data: Any) -> UserProfile:
        if data is None or data == []:
            raise NotFoundError(f"No user {user_id!r} (or it is not visible to this key)")
        try:
            return UserProfile.model_validate(data)
        except pydantic.ValidationError as err:
            raise self._shape_error("get_user_profile", data, err) from err

    def _parse_page(
        self,
        spec: RequestSpec,
        response: httpx.Response,
        user_id: str,
        limit: int,
        offset: int,
        keyset: bool,
    ) -> ConversationPage:
        total = None if keyset else parse_content_range_total(response.headers)
        items: list[ConversationSummary] = []
        if response.status_code != 416:  # 416: offset past the end, an empty page
            try:  # straight from the bytes: no intermediate dicts (the list omits user_id)
                items = SUMMARY_LIST.validate_json(response.content, context={"user_id": user_id})
            except pydantic.ValidationError as err:
                text = response.content[:200].decode("utf-8", "replace")
                raise self._shape_error(spec.operation, text, err) from err
        more = len(items) == limit and (total is None or offset + len(items) < total)
        cursor = encode_cursor(items[-1].started_at, items[-1].id) if items and more else None
        return ConversationPage.model_construct(  # every field is built right here
            items=items, total=total, limit=limit, offset=offset, next_cursor=cursor
        )

    def _parse_search(
        self, spec: RequestSpec, response: httpx.Response, user_id: str
    ) -> SearchPage:
        try:  # straight from the bytes, like a history page (the hits omit user_id)
            answer = SearchAnswer.model_validate_json(
                response.content, context={"user_id": user_id}
            )
        except pydantic.ValidationError as err:
            text = response.content[:200].decode("utf-8", "replace")
            raise self._shape_error(spec.operation, text, err) from err
        return SearchPage.model_construct(  # every field is built right here
            items=answer.conversations,
            total=answer.total,
            limit=answer.limit,
            offset=answer.offset,
        )

    def _parse_conversation(self, user_id: str, conversation_id: str, data: Any) -> Conversation:
        if not isinstance(data, list):
            raise self._shape_error("conversations", data)
        if not data:
            raise NotFoundError(
                f"No conversation {conversation_id!r} for user {user_id!r} "
                "(or it is not visible to this key)"
            )
        # Two rows only for a canonical UUID that another id's row took first: the row that
        # keeps the UUID as its own source_id is that conversation; the other is the row's id.
        wanted = str(conversation_id)
        row = next(
            (r for r in data if isinstance(r, dict) and r.get("source_id") == wanted), data[0]
        )
        try:
            return Conversation.model_validate(row)
        except pydantic.ValidationError as err:
            raise self._shape_error("conversations", row, err) from err

    def _parse_record_events(self, events: Sequence[OutboxEvent], data: Any) -> Delivery:
        if not isinstance(data, list):
            raise self._shape_error("record_events", data)
        statuses: dict[str, str] = {}
        for row in data:
            if not isinstance(row, dict) or not isinstance(row.get("status"), str):
                raise self._shape_error("record_events", data)
            statuses[str(row.get("id"))] = row["status"]
        result = Delivery()
        for event in events:
            status = statuses.get(str(event.id))
            if status == "inserted":
                result.delivered += 1
            elif status == "duplicate":
                result.duplicates += 1
            elif status == "unknown_user":
                log.warning(
                    "Event %s (%s) refers to unknown user %s: kept as a dead letter, not retried",
                    event.id,
                    event.event_type,
                    event.user_id,
                )
                result.dead.append(
                    make_dead_letter(event, f"unknown_user: no user {event.user_id} exists")
                )
            else:
                raise self._shape_error("record_events", data)
        return result

    @staticmethod
    def _dead_for_rejected(event: OutboxEvent, err: IdentityError) -> DeadLetter:
        log.warning(
            "Event %s (%s for %s) rejected by the database, kept as a dead letter: %s",
            event.id,
            event.event_type,
            event.user_id,
            err,
        )
        return make_dead_letter(event, f"rejected: {err}")


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{name} must be True or False", field=name, rule="boolean")
    return value


def _maintenance_params(older_than_days: int, batch_size: int, dry_run: bool) -> dict[str, Any]:
    """Arguments of the batch maintenance functions, checked before any request."""
    for name, value, low, high in (
        ("older_than_days", older_than_days, 1, None),
        ("batch_size", batch_size, 1, MAX_MAINTENANCE_BATCH),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValidationError(
                f"{name} must be a whole number, at least {low}", field=name, rule="min"
            )
        if high is not None and value > high:
            raise ValidationError(f"{name} must be at most {high}", field=name, rule="max")
    return {
        "older_than_days": older_than_days,
        "batch_size": batch_size,
        "dry_run": _flag(dry_run, "dry_run"),
    }


def parse_content_range_total(headers: httpx.Headers) -> int | None:
    """The total from ``Content-Range: 0-19/57`` (or ``*/0``); ``None`` if absent or ``*``."""
    value = headers.get("content-range")
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def dedupe_events(events: Sequence[OutboxEvent]) -> list[OutboxEvent]:
    """Drop repeated ids (keeping the first): ``record_events`` reports one status per id."""
    seen: set[uuid.UUID] = set()
    out: list[OutboxEvent] = []
    for event in events:
        if event.id not in seen:
            seen.add(event.id)
            out.append(event)
    return out
