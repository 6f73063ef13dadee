"""The clients services import: :class:`IdentityClient` (sync) and :class:`AsyncIdentityClient`.

Both wrap the official ``supabase`` client (PostgREST, schema ``identity``) over one pooled
``httpx`` client per instance, created in the constructor (never at import) and closed by
``close()`` or the context manager. They differ only in I/O: the async client awaits every
request, every Redis call and every backoff sleep, so it never blocks the event loop.

Usage::

    from supabase_identity import IdentityClient

    with IdentityClient() as identity:                     # SUPABASE_URL, keys from env/.env
        user_id, is_new = identity.get_or_create_user("cool-shop.myshopify.com")
        identity.log_user_event(user_id, "oauth_complete", {"first_time": is_new})
        page = identity.for_user(user_id).get_user_conversations(user_id, limit=20)
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import httpx
import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
import tenacity
from redis.backoff import ExponentialWithJitterBackoff
from supabase.lib.client_options import DEFAULT_HEADERS, AsyncClientOptions, SyncClientOptions

from supabase import AsyncClient as SupabaseAsyncClient
from supabase import create_client

from ._base_client import (
    RETRYABLE_TRANSPORT_ERRORS,
    BaseIdentityClient,
    Delivery,
    RequestSpec,
    RetryableResponse,
    dedupe_events,
    is_retryable_exception,
    is_retryable_status,
)
from ._constants import (
    DEFAULT_CONNECTION_LIMITS,
    DEFAULT_EVENT_RETENTION_DAYS,
    DEFAULT_EVENTS_MOVE_BATCH,
    DEFAULT_MAX_RETRIES,
    DEFAULT_PAGE_LIMIT,
    DEFAULT_TIMEOUT,
    DEFAULT_UNLINKED_DELETE_BATCH,
    DEFAULT_UNLINKED_RETENTION_DAYS,
    DEFAULT_USER_TOKEN_TTL,
    EVENT_BATCH_SIZE,
    REDIS_CONNECT_TIMEOUT,
    REDIS_RETRIES,
    REDIS_SOCKET_TIMEOUT,
    SCHEMA,
)
from ._exceptions import (
    ClientClosedError,
    ConfigError,
    DataRejectedError,
    IdentityError,
    ValidationError,
)
from ._keys import classify_key
from ._models import (
    AnalyzeResult,
    Conversation,
    ConversationPage,
    ConversationSummary,
    DeadLetter,
    EventsMoveResult,
    FlushResult,
    IdentityStats,
    OutboxEvent,
    OutboxStats,
    UnlinkedCleanupResult,
    UserProfile,
)
from ._outbox import AsyncMemoryOutbox, AsyncRedisOutbox, MemoryOutbox, RedisOutbox
from ._redis import AsyncRedisClient, AsyncRedisConnector, RedisClient, RedisConnector
from ._settings import Settings, check_credential, load_settings
from ._types import NOT_GIVEN, NotGiven, TimeoutTypes, given
from ._validation import validate_user_id
from ._version import __version__

__all__ = ["AsyncIdentityClient", "IdentityClient"]

log = logging.getLogger("supabase_identity")

_USER_AGENT = f"supabase-identity/{__version__}"

SyncOutbox = MemoryOutbox | RedisOutbox
AsyncOutbox = AsyncMemoryOutbox | AsyncRedisOutbox


@dataclass(slots=True)
class _Resources:
    """Connections shared by a client and every client derived from it (for_user/with_options).

    Only the client that created them (the owner) closes them; once closed, every client sharing
    them refuses to send with :class:`ClientClosedError`.
    """

    http: httpx.Client | httpx.AsyncClient
    owns_http: bool
    redis: RedisOutbox | AsyncRedisOutbox | None = None
    closed: bool = False


@dataclass(frozen=True, slots=True)
class _Credentials:
    base_url: str
    api_key: str
    access_token: str | None
    public_key: str | None
    jwt_secret: str | None
    redis_url: str | None
    redis_cluster: bool | None = None


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())


def _resolve(
    *,
    url: str | None,
    key: str | None,
    public_key: str | None,
    access_token: str | None,
    jwt_secret: str | None,
    redis_url: str | NotGiven | None,
    env_dir: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None,
) -> _Credentials:
    """Apply the precedence explicit argument > environment > .env.local > .env."""
    for value, name in ((key, "key"), (public_key, "public_key"), (access_token, "access_token")):
        if value is not None:
            check_credential(value, name=f"the {name} argument")
    given_redis = None if isinstance(redis_url, NotGiven) else redis_url
    settings: Settings = load_settings(
        env_dir=env_dir,
        environ=environ,
        overrides={"supabase_url": url, "jwt_secret": jwt_secret, "redis_url": given_redis},
    )
    if settings.supabase_url is None:
        raise ConfigError(
            "SUPABASE_URL is not set. Set it (environment, .env.local or .env) to the project's "
            "API URL, https://<project-ref>.supabase.co, or http://127.0.0.1:54321 for the "
            "local stack (`scripts/stack env` prints it)."
        )
    service = _secret(settings.service_role_key)
    anon = public_key or _secret(settings.anon_key)
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
            "backend service, or SUPABASE_ANON_KEY (or SUPABASE_PUBLISHABLE_KEY)."
        )
    resolved_redis = _secret(settings.redis_url) if isinstance(redis_url, NotGiven) else redis_url
    return _Credentials(
        base_url=settings.supabase_url,
        api_key=api_key.strip(),
        access_token=access_token,
        public_key=anon,
        jwt_secret=_secret(settings.jwt_secret),
        redis_url=resolved_redis,
        redis_cluster=settings.redis_cluster,
    )


def _redis_backoff() -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(cap=0.5, base=0.05)


def _redis_options(retry: object) -> dict[str, object]:
    """Client options for the outbox's Redis: fail fast (see ``REDIS_*`` in ``_constants``)."""
    return {
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
        "socket_timeout": REDIS_SOCKET_TIMEOUT,
        "retry": retry,
    }


def _sync_redis(url: str, cluster: bool | None) -> RedisConnector:
    """The outbox's Redis (one node or a cluster, detected on first use; no I/O here)."""
    retry = redis.retry.Retry(_redis_backoff(), REDIS_RETRIES)
    return RedisConnector(url, cluster=cluster, **_redis_options(retry))


def _async_redis(url: str, cluster: bool | None) -> AsyncRedisConnector:
    """The ``redis.asyncio`` twin of :func:`_sync_redis`."""
    retry = redis.asyncio.retry.Retry(_redis_backoff(), REDIS_RETRIES)
    return AsyncRedisConnector(url, cluster=cluster, **_redis_options(retry))


def _client_headers(bearer: str) -> dict[str, str]:
    return {**DEFAULT_HEADERS, "Authorization": f"Bearer {bearer}"}


def _check_retries(max_retries: int) -> None:
    if max_retries < 0:
        raise ValidationError("max_retries must be 0 or more", field="max_retries", rule="range")


class _ClientCommon(BaseIdentityClient):
    """Lifecycle and derivation helpers identical in both clients."""

    _res: _Resources
    _owner: bool

    def _configure(
        self,
        *,
        url: str | None,
        key: str | None,
        public_key: str | None,
        access_token: str | None,
        jwt_secret: str | None,
        redis_url: str | NotGiven | None,
        env_dir: str | os.PathLike[str] | None,
        environ: Mapping[str, str] | None,
        timeout: TimeoutTypes | NotGiven,
        max_retries: int | NotGiven,
    ) -> _Credentials:
        """Constructor work shared by both clients: settings, credentials, timeout, retries."""
        creds = _resolve(
            url=url,
            key=key,
            public_key=public_key,
            access_token=access_token,
            jwt_secret=jwt_secret,
            redis_url=redis_url,
            env_dir=env_dir,
            environ=environ,
        )
        self._init_auth(
            base_url=creds.base_url,
            api_key=creds.api_key,
            access_token=creds.access_token,
            public_key=creds.public_key,
            jwt_secret=creds.jwt_secret,
        )
        self._redis_url = creds.redis_url
        self.timeout = given(timeout, DEFAULT_TIMEOUT)
        self.max_retries = given(max_retries, DEFAULT_MAX_RETRIES)
        _check_retries(self.max_retries)
        return creds

    def _check_open(self) -> None:
        if self._res.closed:
            raise ClientClosedError(
                f"This {type(self).__name__} is closed; create a new client instead of reusing it."
            )

    @property
    def is_closed(self) -> bool:
        """Whether the client's connections were closed (it then refuses every call)."""
        return self._res.closed

    def _timeout(self, timeout: TimeoutTypes | NotGiven) -> TimeoutTypes:
        return given(timeout, self.timeout)

    def _derive(self, *, timeout: TimeoutTypes | NotGiven, max_retries: int | NotGiven) -> Self:
        clone = copy.copy(self)
        clone._owner = False
        clone.timeout = given(timeout, self.timeout)
        clone.max_retries = given(max_retries, self.max_retries)
        _check_retries(clone.max_retries)
        return clone

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


class IdentityClient(_ClientCommon):
    """Synchronous client for users, events and conversation history.

    Usage::

        with IdentityClient() as identity:
            user_id, is_new = identity.get_or_create_user("cool-shop.myshopify.com")

    Every argument is keyword-only; each one not given is read from the environment (real
    variables, then ``.env.local``, then ``.env`` in ``env_dir`` or the working directory), then
    falls back to the defaults in ``_constants.py``.

    Args:
        url: API URL (``SUPABASE_URL``), e.g. ``https://<ref>.supabase.co``.
        key: API key sent as ``apikey``. Default: the service key (``SUPABASE_SERVICE_ROLE_KEY``
            or ``SUPABASE_SECRET_KEY``), else the public key.
        public_key: the public key (``SUPABASE_ANON_KEY``/``SUPABASE_PUBLISHABLE_KEY``), sent with
            user tokens by :meth:`for_user`.
        access_token: a user's JWT to send as ``Authorization`` (a user-scoped client).
        jwt_secret: ``SUPABASE_JWT_SECRET``, lets :meth:`for_user` mint user tokens.
        redis_url: Redis for the durable events outbox (``REDIS_URL``); ``None`` disables it.
        redis_client: an existing ``redis.Redis`` for the outbox (not closed by this client).
        outbox: an outbox object, overriding ``redis_url``/``redis_client``.
        timeout: seconds or an ``httpx.Timeout`` (default 5 s connect, 15 s read).
        max_retries: retries after the first attempt for transient failures (default 3).
        http_client: an ``httpx.Client`` to use instead of creating one (not closed by us).
        env_dir: folder holding ``.env``/``.env.local`` (default: the working directory).
        environ: mapping used instead of ``os.environ`` (tests, embedding).
    """

    _sleep = staticmethod(time.sleep)

    def __init__(
        self,
        *,
        url: str | None = None,
        key: str | None = None,
        public_key: str | None = None,
        access_token: str | None = None,
        jwt_secret: str | None = None,
        redis_url: str | NotGiven | None = NOT_GIVEN,
        redis_client: RedisClient | None = None,
        outbox: SyncOutbox | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        http_client: httpx.Client | None = None,
        env_dir: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        creds = self._configure(
            url=url,
            key=key,
            public_key=public_key,
            access_token=access_token,
            jwt_secret=jwt_secret,
            redis_url=redis_url,
            env_dir=env_dir,
            environ=environ,
            timeout=timeout,
            max_retries=max_retries,
        )
        http = http_client or httpx.Client(
            timeout=DEFAULT_TIMEOUT,
            limits=DEFAULT_CONNECTION_LIMITS,
            headers={"User-Agent": _USER_AGENT},
        )
        self._res = _Resources(http=http, owns_http=http_client is None)
        self._owner = True
        self._fallback = MemoryOutbox()
        self._outbox: SyncOutbox
        if outbox is not None:
            self._outbox = outbox
        elif redis_client is not None:
            self._outbox = RedisOutbox(redis_client)
        elif creds.redis_url:
            owned = RedisOutbox(_sync_redis(creds.redis_url, creds.redis_cluster))
            self._res.redis = owned
            self._outbox = owned
        else:
            self._outbox = self._fallback
        self._connect(self._api_key)

    def _connect(self, api_key: str) -> None:
        """Build the supabase client (no I/O) on the shared pool; keep its PostgREST client."""
        http = self._res.http
        assert isinstance(http, httpx.Client)
        options = SyncClientOptions(
            schema=SCHEMA,
            headers=_client_headers(self._bearer()),
            auto_refresh_token=False,
            persist_session=False,
            httpx_client=http,
            postgrest_client_retry=False,
        )
        self.supabase = create_client(self.base_url, api_key, options)
        self._rest = self.supabase.postgrest

    @classmethod
    def from_env(
        cls,
        *,
        env_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> IdentityClient:
        """Build a client from the environment and ``.env``/``.env.local`` in ``env_dir``.

        Equivalent to ``IdentityClient(env_dir=env_dir, **kwargs)``; spelled out for readers.
        """
        return cls(env_dir=env_dir, **kwargs)

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP pool (and a Redis client this client created). Idempotent.

        Events still buffered in process memory get one last delivery attempt; any that remain
        are reported as lost in an error log. Clients derived with :meth:`for_user` or
        :meth:`with_options` share the owner's connections: closing them does nothing.
        """
        if not self._owner or self._res.closed:
            return
        if self._fallback.pending_count():
            result = self.with_options(max_retries=0).flush_events()
            if result.remaining:
                log.error(
                    "Closing with %d undelivered events in process memory: they are lost. "
                    "Configure REDIS_URL for a durable outbox.",
                    self._fallback.pending_count(),
                )
        self._res.closed = True
        http = self._res.http
        if self._res.owns_http and isinstance(http, httpx.Client):
            http.close()
        if isinstance(self._res.redis, RedisOutbox):
            self._res.redis.close()

    def with_options(
        self,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
    ) -> IdentityClient:
        """A client sharing this one's connections and outbox, with other timeout/retries."""
        self._check_open()
        return self._derive(timeout=timeout, max_retries=max_retries)

    def for_user(self, user_id: str, *, ttl: int = DEFAULT_USER_TOKEN_TTL) -> IdentityClient:
        """A read-only client acting as ``user_id``: RLS limits it to that user's rows.

        It sends the public key plus a short-lived token (``ttl`` seconds, re-minted before it
        expires) signed with ``SUPABASE_JWT_SECRET``, over this client's connection pool.
        """
        self._check_open()
        public = self._user_credentials(user_id)
        clone = self._derive(timeout=NOT_GIVEN, max_retries=NOT_GIVEN)
        clone._init_auth(
            base_url=self.base_url,
            api_key=public,
            access_token=None,
            public_key=public,
            jwt_secret=self._jwt_secret,
            user_id=user_id,
            token_ttl=ttl,
        )
        clone._connect(public)
        return clone

    @property
    def outbox(self) -> SyncOutbox:
        """Where undeliverable-now events wait (Redis when configured, else process memory)."""
        return self._outbox

    # --- transport -------------------------------------------------------------------------

    def _send_once(self, spec: RequestSpec, timeout: TimeoutTypes) -> httpx.Response:
        http = self._res.http
        assert isinstance(http, httpx.Client)
        response = http.request(
            spec.method,
            spec.url,
            params=spec.params,
            headers=spec.headers,
            content=spec.body,
            timeout=timeout,
        )
        if is_retryable_status(response.status_code):
            raise RetryableResponse(response)
        return response

    def _request(
        self,
        spec: RequestSpec,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send ``spec`` with retries; return a 2xx response or raise the mapped error."""
        self._check_open()
        retries = self.max_retries if max_retries is None else max_retries
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(retries + 1),
            wait=self._retry_wait,
            retry=tenacity.retry_if_exception(is_retryable_exception),
            before_sleep=self._log_retry(spec),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            response: httpx.Response = retrying(self._send_once, spec, self._timeout(timeout))
        except RetryableResponse as err:
            raise self._error_from_response(err.response) from err
        except RETRYABLE_TRANSPORT_ERRORS as err:
            raise self._transport_error(spec, err) from err
        except httpx.HTTPError as err:
            raise self._transport_error(spec, err) from err
        if response.is_success or response.status_code in ok_statuses:
            return response
        raise self._error_from_response(response)

    # --- users -----------------------------------------------------------------------------

    def get_or_create_user(
        self,
        shop_domain: str,
        email: str | None = None,
        name: str | None = None,
        shopify_id: str | None = None,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> tuple[str, bool]:
        """Return ``(user_id, is_new)`` for a shop, creating the user on first sight.

        One HTTP round trip (``identity.get_or_create_user``), race-free: concurrent calls for one
        shop yield one user and exactly one ``is_new=True``. A returning shop gets ``last_seen``
        bumped and keeps its email/name/shopify_id unless new non-empty values are given.

        Raises:
            ValidationError: ``shop_domain`` is not ``<name>.myshopify.com`` after normalization.
            PermissionDeniedError: this client holds only a public or user-scoped key.
        """
        spec = self._spec_get_or_create_user(self._rest, shop_domain, email, name, shopify_id)
        response = self._request(spec, timeout=timeout)
        return self._parse_get_or_create_user(self._json(spec, response))

    def get_user_profile(
        self, user_id: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> UserProfile:
        """The user with conversation/event stats, in one call.

        Raises:
            NotFoundError: no such user, or the caller (a user-scoped client) cannot see it.
        """
        spec = self._spec_get_user_profile(self._rest, user_id)
        response = self._request(spec, timeout=timeout)
        return self._parse_profile(user_id, self._json(spec, response))

    # --- history ---------------------------------------------------------------------------

    def get_user_conversations(
        self,
        user_id: str,
        limit: int = DEFAULT_PAGE_LIMIT,
        offset: int = 0,
        *,
        cursor: str | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> ConversationPage:
        """A page of the user's conversations, newest first, without messages.

        With ``offset`` the page carries ``total`` (one request: PostgREST's exact count in
        ``Content-Range``). For deep paging pass ``cursor=page.next_cursor`` instead: a keyset
        query whose cost does not grow with depth (``total`` is then ``None``).
        """
        spec = self._spec_list_conversations(self._rest, user_id, limit, offset, cursor)
        response = self._request(spec, timeout=timeout, ok_statuses=(416,))
        return self._parse_page(spec, response, user_id, limit, offset, keyset=cursor is not None)

    def get_conversation(
        self,
        user_id: str,
        conversation_id: str | uuid.UUID,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> Conversation:
        """One conversation with its messages.

        ``conversation_id`` may be the UUID or the agents service's original id (mapped with
        :func:`conversation_uuid`).

        Raises:
            NotFoundError: it does not exist, or it belongs to another user.
        """
        spec = self._spec_get_conversation(self._rest, user_id, conversation_id)
        response = self._request(spec, timeout=timeout)
        return self._parse_conversation(user_id, str(conversation_id), self._json(spec, response))

    def iter_user_conversations(
        self, user_id: str, *, page_size: int = 100
    ) -> Iterator[ConversationSummary]:
        """Every conversation of the user, newest first, fetched page by page (keyset).

        Memory stays bounded by ``page_size`` whatever the history length (used by exports).
        """
        cursor: str | None = None
        while True:
            page = self.get_user_conversations(user_id, limit=page_size, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def iter_user_events(self, user_id: str, *, page_size: int = 500) -> Iterator[dict[str, Any]]:
        """Every event of the user, oldest first, as JSON objects (keyset over created_at, id)."""
        after: tuple[str, str] | None = None
        while True:
            spec = self._spec_events_page(self._rest, user_id, page_size, after)
            rows = self._json(spec, self._request(spec))
            if not isinstance(rows, list):
                raise self._shape_error("events", rows)
            yield from rows
            if len(rows) < page_size:
                return
            after = (str(rows[-1]["created_at"]), str(rows[-1]["id"]))

    # --- operations -----------------------------------------------------------------------

    def rpc(
        self,
        function: str,
        params: Mapping[str, Any] | None = None,
        *,
        encoded: bytes | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> Any:
        """Call ``identity.<function>`` with the client's retries; return the decoded JSON.

        For package internals (the archiver) and operators. Retried like every call here, so
        only call functions that are idempotent. ``encoded``: the JSON body, already
        serialized, sent instead of ``params``.
        """
        spec = self._spec_rpc(self._rest, function, params, encoded)
        return self._json(spec, self._request(spec, timeout=timeout))

    def health(self) -> dict[str, Any]:
        """``identity.health()`` plus ``missing_functions`` (for ``supabase-identity doctor``)."""
        return self._health_report(self.rpc("health"))

    # --- monitoring and maintenance (service key) -------------------------------------------

    def get_stats(
        self, *, as_of: datetime | None = None, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> IdentityStats:
        """Archival health, user growth and storage, from ``identity.stats`` in one call.

        Per-hour and per-day series are UTC buckets ending at ``as_of`` (default: now), with
        empty buckets included. The archivers' Redis counters are separate:
        :func:`supabase_identity.read_archiver_stats`.
        """
        spec = self._spec_stats(self._rest, as_of)
        return self._parse_stats(self._json(spec, self._request(spec, timeout=timeout)))

    def archive_old_events(
        self,
        older_than_days: int = DEFAULT_EVENT_RETENTION_DAYS,
        *,
        batch_size: int = DEFAULT_EVENTS_MOVE_BATCH,
        dry_run: bool = False,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> EventsMoveResult:
        """Move one batch of events older than ``older_than_days`` to ``events_archive``.

        One short transaction per call; call again while ``result.more``. A retry after a lost
        answer moves the next batch, never an event twice. ``dry_run`` only counts.
        """
        spec = self._spec_archive_old_events(self._rest, older_than_days, batch_size, dry_run)
        return self._parse_events_move(self._json(spec, self._request(spec, timeout=timeout)))

    def delete_unlinked_conversations(
        self,
        older_than_days: int = DEFAULT_UNLINKED_RETENTION_DAYS,
        *,
        batch_size: int = DEFAULT_UNLINKED_DELETE_BATCH,
        dry_run: bool = False,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> UnlinkedCleanupResult:
        """Delete one batch of conversations still unlinked ``older_than_days`` after archiving.

        Conversations with a user are never touched. The result lists what was removed; call
        again while ``result.more``. ``dry_run`` lists what would go, changing nothing.
        """
        spec = self._spec_delete_unlinked_conversations(
            self._rest, older_than_days, batch_size, dry_run
        )
        return self._parse_unlinked_cleanup(self._json(spec, self._request(spec, timeout=timeout)))

    def analyze_tables(
        self, *, dry_run: bool = False, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> AnalyzeResult:
        """Refresh the planner statistics of the identity tables (``ANALYZE``)."""
        spec = self._spec_analyze_tables(self._rest, dry_run)
        return self._parse_analyze(self._json(spec, self._request(spec, timeout=timeout)))

    @property
    def redis_url(self) -> str | None:
        """The resolved ``REDIS_URL`` (may hold a password: do not log it)."""
        return self._redis_url

    def ping_redis(self) -> str:
        """Check the Redis outbox answers; raises ``ConfigError`` when none is configured."""
        if not isinstance(self._outbox, RedisOutbox):
            raise ConfigError("REDIS_URL is not set: events are buffered in process memory")
        self._outbox.redis.ping()
        return "Redis answered PING"

    # --- events ----------------------------------------------------------------------------

    def log_user_event(
        self,
        user_id: str,
        event_type: str,
        event_data: Mapping[str, Any] | None = None,
        *,
        occurred_at: datetime | None = None,
    ) -> None:
        """Record an analytics event; never raises because the backend is down.

        The arguments are validated first (bad ones raise :class:`ValidationError`). Then one
        delivery attempt is made; if it fails the event waits in the outbox for
        :meth:`flush_events`. An event for a user that does not exist is kept as a dead letter
        (logged), never silently dropped.

        Raises:
            ValidationError: bad ``user_id``, ``event_type`` or ``event_data``.
            PermissionDeniedError: this client holds only a public or user-scoped key.
        """
        event = self._build_event(user_id, event_type, event_data, occurred_at)
        self._require_write("log_user_event")
        self._check_open()
        try:
            delivery = self._deliver([event], max_retries=0)
        except IdentityError as err:
            log.warning(
                "Event %s (%s) not delivered now, kept in the %s outbox for flush_events(): %s",
                event.id,
                event.event_type,
                self._outbox.backend,
                err,
            )
            self._enqueue([event])
            return
        if delivery.dead:
            self._keep_dead(delivery.dead)

    def flush_events(self, *, max_batches: int | None = None) -> FlushResult:
        """Deliver waiting events in batches of up to 500; never raises for backend failures.

        Stops at the first batch the backend does not take (it stays queued, in order) and
        reports why in ``FlushResult.error``. When another process is flushing the same Redis
        outbox, returns at once with ``remaining`` set.
        """
        self._require_write("flush_events")
        self._check_open()
        totals = Delivery()
        remaining = 0
        error: str | None = None
        for outbox in self._outboxes():
            try:
                problem = self._flush_outbox(outbox, totals, max_batches)
                remaining += outbox.pending_count()
            except redis.RedisError as err:
                problem = f"Redis outbox unavailable: {err}"
                log.error("Could not flush the events outbox: %s", problem)
            error = error or problem
        return FlushResult(
            delivered=totals.delivered,
            duplicates=totals.duplicates,
            dead_lettered=len(totals.dead),
            remaining=remaining,
            error=error,
        )

    def outbox_stats(self) -> OutboxStats:
        """Counts of the primary outbox (pending, in flight, dead letters, dropped)."""
        return self._outbox.stats()

    def dead_letters(self) -> list[DeadLetter]:
        """Events that can never be delivered, kept for inspection (oldest first)."""
        found = self._outbox.dead_letters()
        if self._fallback is not self._outbox:
            found += self._fallback.dead_letters()
        return found

    def _outboxes(self) -> list[SyncOutbox]:
        if self._fallback is self._outbox:
            return [self._outbox]
        return [self._outbox, self._fallback]

    def _flush_outbox(
        self, outbox: SyncOutbox, totals: Delivery, max_batches: int | None
    ) -> str | None:
        if not outbox.try_lock():
            return None  # another flusher holds it; it will deliver these events
        try:
            batches = 0
            while max_batches is None or batches < max_batches:
                batch = outbox.claim(EVENT_BATCH_SIZE)
                if batch is None:
                    return "lost the outbox flush lock"
                if not batch:
                    outbox.ack()  # clears unparseable leftovers into dead letters, if any
                    if outbox.pending_count() == 0:
                        return None
                    continue
                try:
                    delivery = self._deliver(dedupe_events(batch))
                except IdentityError as err:
                    outbox.release()
                    log.warning("Events outbox flush stopped, %d events kept: %s", len(batch), err)
                    return str(err)
                outbox.ack(delivery.dead)
                totals.delivered += delivery.delivered
                totals.duplicates += delivery.duplicates
                totals.dead.extend(delivery.dead)
                batches += 1
                if not outbox.refresh_lock():
                    return "lost the outbox flush lock"
            return None
        finally:
            outbox.unlock()

    def _deliver(
        self, events: Sequence[OutboxEvent], *, max_retries: int | None = None
    ) -> Delivery:
        """Send ``events`` to ``record_events``; isolate events the database rejects.

        A batch rejected as invalid (SQLSTATE 22xxx/23xxx, 413) is split in halves until the
        offending events are alone; those become dead letters, the rest are delivered. Without
        this, one bad event would block every event queued behind it forever.
        """
        spec = self._spec_record_events(self._rest, events)
        try:
            response = self._request(spec, max_retries=max_retries)
        except DataRejectedError as err:
            if len(events) == 1:
                return Delivery(dead=[self._dead_for_rejected(events[0], err)])
            mid = len(events) // 2
            return self._deliver(events[:mid], max_retries=max_retries) + self._deliver(
                events[mid:], max_retries=max_retries
            )
        return self._parse_record_events(events, self._json(spec, response))

    def _enqueue(self, events: Sequence[OutboxEvent]) -> None:
        try:
            self._outbox.push(events)
        except redis.RedisError as err:
            log.error(
                "Redis outbox unavailable (%s): buffering %d events in process memory",
                err,
                len(events),
            )
            self._fallback.push(events)

    def _keep_dead(self, dead: Sequence[DeadLetter]) -> None:
        try:
            self._outbox.add_dead_letters(dead)
        except redis.RedisError as err:
            log.error("Redis outbox unavailable (%s): keeping dead letters in memory", err)
            self._fallback.add_dead_letters(dead)


class AsyncIdentityClient(_ClientCommon):
    """Asynchronous twin of :class:`IdentityClient`; every call is awaited, nothing blocks.

    Usage::

        async with AsyncIdentityClient() as identity:
            user_id, is_new = await identity.get_or_create_user("cool-shop.myshopify.com")

    Takes the same arguments as :class:`IdentityClient` (with ``redis.asyncio.Redis`` and
    ``httpx.AsyncClient`` where those take clients). The constructor does no I/O, so it may be
    called outside a running loop; use the instance from one event loop only.
    """

    _sleep = staticmethod(asyncio.sleep)

    def __init__(
        self,
        *,
        url: str | None = None,
        key: str | None = None,
        public_key: str | None = None,
        access_token: str | None = None,
        jwt_secret: str | None = None,
        redis_url: str | NotGiven | None = NOT_GIVEN,
        redis_client: AsyncRedisClient | None = None,
        outbox: AsyncRedisOutbox | MemoryOutbox | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        http_client: httpx.AsyncClient | None = None,
        env_dir: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        creds = self._configure(
            url=url,
            key=key,
            public_key=public_key,
            access_token=access_token,
            jwt_secret=jwt_secret,
            redis_url=redis_url,
            env_dir=env_dir,
            environ=environ,
            timeout=timeout,
            max_retries=max_retries,
        )
        http = http_client or httpx.AsyncClient(
            timeout=DEFAULT_TIMEOUT,
            limits=DEFAULT_CONNECTION_LIMITS,
            headers={"User-Agent": _USER_AGENT},
        )
        self._res = _Resources(http=http, owns_http=http_client is None)
        self._owner = True
        self._memory = MemoryOutbox()
        self._fallback = AsyncMemoryOutbox(self._memory)
        self._outbox: AsyncOutbox
        if isinstance(outbox, MemoryOutbox):
            self._memory = outbox
            self._fallback = AsyncMemoryOutbox(outbox)
            self._outbox = self._fallback
        elif outbox is not None:
            self._outbox = outbox
        elif redis_client is not None:
            self._outbox = AsyncRedisOutbox(redis_client)
        elif creds.redis_url:
            owned_async = AsyncRedisOutbox(_async_redis(creds.redis_url, creds.redis_cluster))
            self._res.redis = owned_async
            self._outbox = owned_async
        else:
            self._outbox = self._fallback
        self._connect(self._api_key)

    def _connect(self, api_key: str) -> None:
        """Build the supabase async client on the shared pool (no I/O, like ``acreate_client``).

        ``acreate_client`` only awaits a session lookup when no ``Authorization`` header is
        given; we always give one, so constructing ``AsyncClient`` directly is equivalent and
        keeps this constructor synchronous.
        """
        http = self._res.http
        assert isinstance(http, httpx.AsyncClient)
        options = AsyncClientOptions(
            schema=SCHEMA,
            headers=_client_headers(self._bearer()),
            auto_refresh_token=False,
            persist_session=False,
            httpx_client=http,
            postgrest_client_retry=False,
        )
        self.supabase = SupabaseAsyncClient(self.base_url, api_key, options)
        self._rest = self.supabase.postgrest

    @classmethod
    def from_env(
        cls,
        *,
        env_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIdentityClient:
        """Build a client from the environment and ``.env``/``.env.local`` in ``env_dir``."""
        return cls(env_dir=env_dir, **kwargs)

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP pool (and a Redis client this client created). Idempotent.

        Same rules as :meth:`IdentityClient.close`.
        """
        if not self._owner or self._res.closed:
            return
        if self._memory.pending_count():
            result = await self.with_options(max_retries=0).flush_events()
            if result.remaining:
                log.error(
                    "Closing with %d undelivered events in process memory: they are lost. "
                    "Configure REDIS_URL for a durable outbox.",
                    self._memory.pending_count(),
                )
        self._res.closed = True
        http = self._res.http
        if self._res.owns_http and isinstance(http, httpx.AsyncClient):
            await http.aclose()
        if isinstance(self._res.redis, AsyncRedisOutbox):
            await self._res.redis.aclose()

    def with_options(
        self,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
    ) -> AsyncIdentityClient:
        """A client sharing this one's connections and outbox, with other timeout/retries."""
        self._check_open()
        return self._derive(timeout=timeout, max_retries=max_retries)

    def for_user(self, user_id: str, *, ttl: int = DEFAULT_USER_TOKEN_TTL) -> AsyncIdentityClient:
        """A read-only client acting as ``user_id`` (see :meth:`IdentityClient.for_user`)."""
        self._check_open()
        public = self._user_credentials(user_id)
        clone = self._derive(timeout=NOT_GIVEN, max_retries=NOT_GIVEN)
        clone._init_auth(
            base_url=self.base_url,
            api_key=public,
            access_token=None,
            public_key=public,
            jwt_secret=self._jwt_secret,
            user_id=user_id,
            token_ttl=ttl,
        )
        clone._connect(public)
        return clone

    @property
    def outbox(self) -> AsyncOutbox:
        """Where undeliverable-now events wait (Redis when configured, else process memory)."""
        return self._outbox

    async def _send_once(
        self,
        spec: RequestSpec,
        timeout: TimeoutTypes,  # noqa: ASYNC109 - an httpx timeout per request
    ) -> httpx.Response:
        http = self._res.http
        assert isinstance(http, httpx.AsyncClient)
        response = await http.request(
            spec.method,
            spec.url,
            params=spec.params,
            headers=spec.headers,
            content=spec.body,
            timeout=timeout,
        )
        if is_retryable_status(response.status_code):
            raise RetryableResponse(response)
        return response

    async def _request(
        self,
        spec: RequestSpec,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,  # noqa: ASYNC109 - httpx timeout
        max_retries: int | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send ``spec`` with retries (awaited sleeps); return 2xx or raise the mapped error."""
        self._check_open()
        retries = self.max_retries if max_retries is None else max_retries
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(retries + 1),
            wait=self._retry_wait,
            retry=tenacity.retry_if_exception(is_retryable_exception),
            before_sleep=self._log_retry(spec),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            response: httpx.Response = await retrying(self._send_once, spec, self._timeout(timeout))
        except RetryableResponse as err:
            raise self._error_from_response(err.response) from err
        except RETRYABLE_TRANSPORT_ERRORS as err:
            raise self._transport_error(spec, err) from err
        except httpx.HTTPError as err:
            raise self._transport_error(spec, err) from err
        if response.is_success or response.status_code in ok_statuses:
            return response
        raise self._error_from_response(response)

    async def get_or_create_user(
        self,
        shop_domain: str,
        email: str | None = None,
        name: str | None = None,
        shopify_id: str | None = None,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,  # noqa: ASYNC109 - httpx timeout
    ) -> tuple[str, bool]:
        """Return ``(user_id, is_new)``; see :meth:`IdentityClient.get_or_create_user`."""
        spec = self._spec_get_or_create_user(self._rest, shop_domain, email, name, shopify_id)
        response = await self._request(spec, timeout=timeout)
        return self._parse_get_or_create_user(self._json(spec, response))

    async def get_user_profile(
        self,
        user_id: str,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,  # noqa: ASYNC109 - httpx timeout
    ) -> UserProfile:
        """The user with stats; see :meth:`IdentityClient.get_user_profile`."""
        spec = self._spec_get_user_profile(self._rest, user_id)
        response = await self._request(spec, timeout=timeout)
        return self._parse_profile(user_id, self._json(spec, response))

    async def get_user_conversations(
        self,
        user_id: str,
        limit: int = DEFAULT_PAGE_LIMIT,
        offset: int = 0,
        *,
        cursor: str | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,  # noqa: ASYNC109 - httpx timeout
    ) -> ConversationPage:
        """A page of conversations; see :meth:`IdentityClient.get_user_conversations`."""
        spec = self._spec_list_conversations(self._rest, user_id, limit, offset, cursor)
        response = await self._request(spec, timeout=timeout, ok_statuses=(416,))
        return self._parse_page(spec, response, user_id, limit, offset, keyset=cursor is not None)

    async def get_conversation(
        self,
        user_id: str,
        conversation_id: str | uuid.UUID,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,  # noqa: ASYNC109 - httpx timeout
    ) -> Conversation:
        """One conversation with messages; see :meth:`IdentityClient.get_conversation`."""
        spec = self._spec_get_conversation(self._rest, user_id, conversation_id)
        response = await self._request(spec, timeout=timeout)
        return self._parse_conversation(user_id, str(conversation_id), self._json(spec, response))

    async def rpc(
        self,
        function: str,
        params: Mapping[str, Any] | None = None,
        *,
        encoded: bytes | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,  # noqa: ASYNC109 - httpx timeout
    ) -> Any:
        """Call ``identity.<function>`` with retries; see :meth:`IdentityClient.rpc`."""
        spec = self._spec_rpc(self._rest, function, params, encoded)
        return self._json(spec, await self._request(spec, timeout=timeout))

    async def health(self) -> dict[str, Any]:
        """``identity.health()`` plus ``missing_functions``."""
        return self._health_report(await self.rpc("health"))

    async def get_stats(
        self,
        *,
        as_of: datetime | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,  # noqa: ASYNC109 - httpx timeout
    ) -> IdentityStats:
        """Archival, user-growth and storage metrics; see :meth:`IdentityClient.get_stats`."""
        spec = self._spec_stats(self._rest, as_of)
        return self._parse_stats(self._json(spec, await self._request(spec, timeout=timeout)))

    async def archive_old_events(
        self,
        older_than_days: int = DEFAULT_EVENT_RETENTION_DAYS,
        *,
        batch_size: int = DEFAULT_EVENTS_MOVE_BATCH,
        dry_run: bool = False,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,  # noqa: ASYNC109 - httpx timeout
    ) -> EventsMoveResult:
        """One batch of old events to the archive; see :meth:`IdentityClient.archive_old_events`."""
        spec = self._spec_archive_old_events(self._rest, older_than_days, batch_size, dry_run)
        return self._parse_events_move(self._json(spec, await self._request(spec, timeout=timeout)))

    async def delete_unlinked_conversations(
        self,
        older_than_days: int = DEFAULT_UNLINKED_RETENTION_DAYS,
        *,
        batch_size: int = DEFAULT_UNLINKED_DELETE_BATCH,
        dry_run: bool = False,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,  # noqa: ASYNC109 - httpx timeout
    ) -> UnlinkedCleanupResult:
        """One batch of stale unlinked conversations; see
        :meth:`IdentityClient.delete_unlinked_conversations`."""
        spec = self._spec_delete_unlinked_conversations(
            self._rest, older_than_days, batch_size, dry_run
        )
        response = await self._request(spec, timeout=timeout)
        return self._parse_unlinked_cleanup(self._json(spec, response))

    async def analyze_tables(
        self,
        *,
        dry_run: bool = False,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,  # noqa: ASYNC109 - httpx timeout
    ) -> AnalyzeResult:
        """``ANALYZE`` the identity tables; see :meth:`IdentityClient.analyze_tables`."""
        spec = self._spec_analyze_tables(self._rest, dry_run)
        return self._parse_analyze(self._json(spec, await self._request(spec, timeout=timeout)))

    async def iter_user_conversations(
        self, user_id: str, *, page_size: int = 100
    ) -> AsyncIterator[ConversationSummary]:
        """Every conversation of the user, newest first (keyset pages)."""
        cursor: str | None = None
        while True:
            page = await self.get_user_conversations(user_id, limit=page_size, cursor=cursor)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    @property
    def redis_url(self) -> str | None:
        """The resolved ``REDIS_URL`` (may hold a password: do not log it)."""
        return self._redis_url

    async def log_user_event(
        self,
        user_id: str,
        event_type: str,
        event_data: Mapping[str, Any] | None = None,
        *,
        occurred_at: datetime | None = None,
    ) -> None:
        """Record an event; never raises for backend failures (see the sync twin)."""
        event = self._build_event(user_id, event_type, event_data, occurred_at)
        self._require_write("log_user_event")
        self._check_open()
        try:
            delivery = await self._deliver([event], max_retries=0)
        except IdentityError as err:
            log.warning(
                "Event %s (%s) not delivered now, kept in the %s outbox for flush_events(): %s",
                event.id,
                event.event_type,
                self._outbox.backend,
                err,
            )
            await self._enqueue([event])
            return
        except asyncio.CancelledError:
            # The caller's task was cancelled mid-request (client gone, a timeout): the event
            # may or may not have arrived. Keep it (shielded from the cancellation); a second
            # delivery is harmless, the database deduplicates by event id.
            await asyncio.shield(self._enqueue([event]))
            raise
        if delivery.dead:
            await self._keep_dead(delivery.dead)

    async def flush_events(self, *, max_batches: int | None = None) -> FlushResult:
        """Deliver waiting events in batches; see :meth:`IdentityClient.flush_events`."""
        self._require_write("flush_events")
        self._check_open()
        totals = Delivery()
        remaining = 0
        error: str | None = None
        for outbox in self._outboxes():
            try:
                problem = await self._flush_outbox(outbox, totals, max_batches)
                remaining += await outbox.pending_count()
            except redis.RedisError as err:
                problem = f"Redis outbox unavailable: {err}"
                log.error("Could not flush the events outbox: %s", problem)
            error = error or problem
        return FlushResult(
            delivered=totals.delivered,
            duplicates=totals.duplicates,
            dead_lettered=len(totals.dead),
            remaining=remaining,
            error=error,
        )

    async def outbox_stats(self) -> OutboxStats:
        """Counts of the primary outbox (pending, in flight, dead letters, dropped)."""
        return await self._outbox.stats()

    async def dead_letters(self) -> list[DeadLetter]:
        """Events that can never be delivered, kept for inspection (oldest first)."""
        found = await self._outbox.dead_letters()
        if self._fallback is not self._outbox:
            found += await self._fallback.dead_letters()
        return found

    def _outboxes(self) -> list[AsyncOutbox]:
        if self._fallback is self._outbox:
            return [self._outbox]
        return [self._outbox, self._fallback]

    async def _flush_outbox(
        self, outbox: AsyncOutbox, totals: Delivery, max_batches: int | None
    ) -> str | None:
        if not await outbox.try_lock():
            return None
        try:
            batches = 0
            while max_batches is None or batches < max_batches:
                batch = await outbox.claim(EVENT_BATCH_SIZE)
                if batch is None:
                    return "lost the outbox flush lock"
                if not batch:
                    await outbox.ack()
                    if await outbox.pending_count() == 0:
                        return None
                    continue
                try:
                    delivery = await self._deliver(dedupe_events(batch))
                except IdentityError as err:
                    await outbox.release()
                    log.warning("Events outbox flush stopped, %d events kept: %s", len(batch), err)
                    return str(err)
                await outbox.ack(delivery.dead)
                totals.delivered += delivery.delivered
                totals.duplicates += delivery.duplicates
                totals.dead.extend(delivery.dead)
                batches += 1
                if not await outbox.refresh_lock():
                    return "lost the outbox flush lock"
            return None
        finally:
            await outbox.unlock()

    async def _deliver(
        self, events: Sequence[OutboxEvent], *, max_retries: int | None = None
    ) -> Delivery:
        """Send ``events``; isolate rejected ones (see :meth:`IdentityClient._deliver`)."""
        spec = self._spec_record_events(self._rest, events)
        try:
            response = await self._request(spec, max_retries=max_retries)
        except DataRejectedError as err:
            if len(events) == 1:
                return Delivery(dead=[self._dead_for_rejected(events[0], err)])
            mid = len(events) // 2
            first = await self._deliver(events[:mid], max_retries=max_retries)
            return first + await self._deliver(events[mid:], max_retries=max_retries)
        return self._parse_record_events(events, self._json(spec, response))

    async def _enqueue(self, events: Sequence[OutboxEvent]) -> None:
        try:
            await self._outbox.push(events)
        except redis.RedisError as err:
            log.error(
                "Redis outbox unavailable (%s): buffering %d events in process memory",
                err,
                len(events),
            )
            await self._fallback.push(events)

    async def _keep_dead(self, dead: Sequence[DeadLetter]) -> None:
        try:
            await self._outbox.add_dead_letters(dead)
        except redis.RedisError as err:
            log.error("Redis outbox unavailable (%s): keeping dead letters in memory", err)
            await self._fallback.add_dead_letters(dead)
