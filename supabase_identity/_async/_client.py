"""The identity client: users, events and conversation history over Supabase HTTP.

Written once, as async code under ``_async/``: ``scripts/unasync`` generates the blocking twin
under ``_sync/``, so the two clients cannot drift. The async client awaits every request, Redis
call and backoff sleep (it never blocks its event loop); the blocking one waits for each.

Each client owns one pooled ``httpx`` client, created in the constructor (never at import) and
closed by ``close()`` or the context manager. Clients derived with ``for_user()`` or
``with_options()`` share it and build nothing.

Usage::

    async with AsyncIdentityClient() as identity:          # SUPABASE_URL, keys from env/.env
        user_id, is_new = await identity.get_or_create_user("cool-shop.myshopify.com")
        await identity.log_user_event(user_id, "oauth_complete", {"first_time": is_new})
        page = await identity.for_user(user_id).get_user_conversations(user_id, limit=20)
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx
import redis
import tenacity
from postgrest import AsyncPostgrestClient

from .._base_client import (
    RETRYABLE_TRANSPORT_ERRORS,
    BaseIdentityClient,
    Delivery,
    RequestSpec,
    RetryableResponse,
    SharedState,
    dedupe_events,
    is_retryable_exception,
    is_retryable_status,
)
from .._constants import (
    DEFAULT_CONNECTION_LIMITS,
    DEFAULT_EVENT_RETENTION_DAYS,
    DEFAULT_EVENTS_MOVE_BATCH,
    DEFAULT_PAGE_LIMIT,
    DEFAULT_TIMEOUT,
    DEFAULT_UNLINKED_DELETE_BATCH,
    DEFAULT_UNLINKED_RETENTION_DAYS,
    DEFAULT_USER_TOKEN_TTL,
    EVENT_BATCH_SIZE,
    OUTBOX_KEY_PREFIX,
    SCHEMA,
)
from .._exceptions import ConfigError, DataRejectedError, IdentityError
from .._io import (
    AsyncOutbox,
    AsyncRedisClient,
    ashield,
    asleep,
    async_memory_view,
    async_redis_from_url,
)
from .._models import (
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
    SearchPage,
    ShopRedaction,
    UnlinkedCleanupResult,
    UserProfile,
)
from .._outbox import MemoryOutbox
from .._types import NOT_GIVEN, NotGiven, TimeoutTypes
from .._validation import normalize_shop_domain
from .._version import __version__
from ._redaction import redact_redis
from ._redis_outbox import AsyncRedisOutbox

if TYPE_CHECKING:
    from supabase import AsyncClient as AsyncSupabaseClient

__all__ = ["AsyncIdentityClient"]

log = logging.getLogger("supabase_identity")

_USER_AGENT = f"supabase-identity/{__version__}"


class AsyncIdentityClient(BaseIdentityClient):
    """Client for users, events and conversation history.

    Usage::

        async with AsyncIdentityClient() as identity:
            user_id, is_new = await identity.get_or_create_user("cool-shop.myshopify.com")

    Every argument is keyword-only; each one not given is read from the environment (real
    variables, then ``.env.local``, then ``.env`` in ``env_dir`` or the working directory), then
    falls back to the defaults in ``_constants.py``. The constructor does no I/O.

    Args:
        url: API URL (``SUPABASE_URL``), e.g. ``https://<ref>.supabase.co``.
        key: API key sent as ``apikey``. Default: the service key (``SUPABASE_SERVICE_ROLE_KEY``
            or ``SUPABASE_SECRET_KEY``), else the public key.
        public_key: the public key (``SUPABASE_ANON_KEY``/``SUPABASE_PUBLISHABLE_KEY``), sent with
            user tokens by :meth:`for_user`.
        access_token: a user's JWT to send as ``Authorization`` (a user-scoped client).
        jwt_secret: ``SUPABASE_JWT_SECRET``, lets :meth:`for_user` mint user tokens.
        redis_url: Redis for the durable events outbox (``REDIS_URL``); ``None`` disables it.
        redis_client: an existing Redis client for the outbox (not closed by this client).
        outbox: a Redis outbox or a :class:`MemoryOutbox`, overriding ``redis_url`` and
            ``redis_client``.
        timeout: seconds or an ``httpx.Timeout`` (default 5 s connect, 15 s read).
        max_retries: retries after the first attempt for transient failures (default 3).
        http_client: an httpx client to use instead of creating one (not closed by us).
        env_dir: folder holding ``.env``/``.env.local`` (default: the working directory).
        environ: mapping used instead of ``os.environ`` (tests, embedding).
    """

    _sleep = staticmethod(asleep)

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
        self._shared = SharedState()
        self._owner = True
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=DEFAULT_TIMEOUT,
            limits=DEFAULT_CONNECTION_LIMITS,
            headers={"User-Agent": _USER_AGENT},
        )
        # Builds requests only (no I/O): postgrest-py's URL grammar and profile headers.
        self._rest = AsyncPostgrestClient(
            f"{self.base_url}/rest/v1", schema=SCHEMA, http_client=self._http
        )
        self._supabase: AsyncSupabaseClient | None = None
        self._owned_redis: AsyncRedisOutbox | None = None  # an outbox that owns its client
        self._fallback = async_memory_view(
            outbox if isinstance(outbox, MemoryOutbox) else MemoryOutbox()
        )
        self._outbox: AsyncOutbox
        if isinstance(outbox, MemoryOutbox):
            self._outbox = self._fallback
        elif outbox is not None:
            self._outbox = outbox
        elif redis_client is not None:
            self._outbox = AsyncRedisOutbox(redis_client)
        elif creds.redis_url:
            self._owned_redis = AsyncRedisOutbox(
                async_redis_from_url(creds.redis_url, creds.redis_cluster)
            )
            self._outbox = self._owned_redis
        else:
            self._outbox = self._fallback

    @classmethod
    def from_env(cls, *, env_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> Self:
        """Build a client from the environment and the ``.env*`` files in ``env_dir``.

        Equivalent to ``cls(env_dir=env_dir, **kwargs)``; spelled out for readers.
        """
        return cls(env_dir=env_dir, **kwargs)

    @property
    def supabase(self) -> AsyncSupabaseClient:
        """The official supabase client on this client's pool and keys, built on first use.

        For what this package does not wrap. The package itself never needs it, so neither its
        import nor its construction is paid until this property is read.
        """
        if self._supabase is None:
            from supabase.lib.client_options import AsyncClientOptions

            from supabase import AsyncClient as AsyncSupabaseClient

            options = AsyncClientOptions(
                schema=SCHEMA,
                headers={"Authorization": f"Bearer {self._bearer()}"},
                auto_refresh_token=False,
                persist_session=False,
                httpx_client=self._http,
            )
            self._supabase = AsyncSupabaseClient(self.base_url, self._api_key, options)
        return self._supabase

    # --- lifecycle -------------------------------------------------------------------------

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

        Events still buffered in process memory get one last delivery attempt; any that remain
        are reported as lost in an error log. Clients derived with :meth:`for_user` or
        :meth:`with_options` share the owner's connections: closing them does nothing.
        """
        if not self._owner or self._shared.closed:
            return
        if await self._fallback.pending_count():
            result = await self.with_options(max_retries=0).flush_events()
            if result.remaining:
                log.error(
                    "Closing with %d undelivered events in process memory: they are lost. "
                    "Configure REDIS_URL for a durable outbox.",
                    await self._fallback.pending_count(),
                )
        self._shared.closed = True
        if self._owns_http:
            await self._http.aclose()
        if self._owned_redis is not None:
            await self._owned_redis.aclose()

    def with_options(
        self,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
    ) -> Self:
        """A client sharing this one's connections and outbox, with other timeout/retries."""
        self._check_open()
        return self._derive(timeout=timeout, max_retries=max_retries)

    def for_user(self, user_id: str, *, ttl: int = DEFAULT_USER_TOKEN_TTL) -> Self:
        """A read-only client acting as ``user_id``: RLS limits it to that user's rows.

        It sends the public key plus a short-lived token (``ttl`` seconds, re-minted before it
        expires) signed with ``SUPABASE_JWT_SECRET``, over this client's connection pool. Cheap
        enough to call per request: no I/O, nothing built but a copy of this client.
        """
        clone = self._scoped(user_id, ttl)
        clone._supabase = None  # built on demand with the user's credentials
        return clone

    @property
    def outbox(self) -> AsyncOutbox:
        """Where undeliverable-now events wait (Redis when configured, else process memory)."""
        return self._outbox

    # --- transport -------------------------------------------------------------------------

    async def _send_once(self, spec: RequestSpec, timeout: TimeoutTypes) -> httpx.Response:
        response = await self._http.request(
            spec.method,
            spec.url,
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
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send ``spec`` with retries; return a 2xx response or raise the mapped error."""
        self._check_open()
        retries = self.max_retries if max_retries is None else max_retries
        per_request = self._timeout(timeout)
        try:
            try:  # the common case, an answer at the first attempt, needs no retry machinery
                response = await self._send_once(spec, per_request)
            except Exception as first:
                if retries == 0 or not is_retryable_exception(first):
                    raise
                response = await self._retry(spec, per_request, retries, first)
        except RetryableResponse as err:
            raise self._error_from_response(err.response) from err
        except RETRYABLE_TRANSPORT_ERRORS as err:
            raise self._transport_error(spec, err) from err
        except httpx.HTTPError as err:
            raise self._transport_error(spec, err) from err
        if response.is_success or response.status_code in ok_statuses:
            return response
        raise self._error_from_response(response)

    async def _retry(
        self, spec: RequestSpec, timeout: TimeoutTypes, retries: int, first: Exception
    ) -> httpx.Response:
        """Retries after the failed first attempt ``first``, with tenacity's backoff and logs.

        tenacity runs the whole sequence, the first attempt included: its attempt replays
        ``first`` instead of sending again, so backoff, ``Retry-After`` and logging are the ones
        of a sequence tenacity ran from the start.
        """
        pending: list[Exception] = [first]

        async def attempt() -> httpx.Response:
            if pending:
                raise pending.pop()
            return await self._send_once(spec, timeout)

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(retries + 1),
            wait=self._retry_wait,
            retry=tenacity.retry_if_exception(is_retryable_exception),
            before_sleep=self._log_retry(spec),
            sleep=self._sleep,
            reraise=True,
        )
        response: httpx.Response = await retrying(attempt)
        return response

    # --- users -----------------------------------------------------------------------------

    async def get_or_create_user(
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
        response = await self._request(spec, timeout=timeout)
        return self._parse_get_or_create_user(self._json(spec, response))

    async def get_user_profile(
        self, user_id: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> UserProfile:
        """The user with conversation/event stats, in one call.

        Raises:
            NotFoundError: no such user, or the caller (a user-scoped client) cannot see it.
        """
        spec = self._spec_get_user_profile(self._rest, user_id)
        response = await self._request(spec, timeout=timeout)
        return self._parse_profile(user_id, self._json(spec, response))

    # --- history ---------------------------------------------------------------------------

    async def get_user_conversations(
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
        response = await self._request(spec, timeout=timeout, ok_statuses=(416,))
        return self._parse_page(spec, response, user_id, limit, offset, keyset=cursor is not None)

    async def search_conversations(
        self,
        user_id: str,
        query: str,
        limit: int = DEFAULT_PAGE_LIMIT,
        offset: int = 0,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> SearchPage:
        """The user's conversations matching ``query``, most relevant first, with the total.

        ``query`` is web-search syntax: words (stemmed: ``shipped`` finds ``shipping``),
        ``"quoted phrases"``, ``-excluded`` words and ``or``. Each hit is the history list's
        summary plus ``rank`` and a ``snippet`` with the matched words in ``<mark>`` tags. One
        HTTP request (``identity.search_conversations``); it runs as the caller, so a
        user-scoped client finds only its own user's conversations. A query of stop words only
        (``"the"``) returns an empty page.

        Raises:
            ValidationError: ``query`` is empty, blank or over 1000 characters; or a bad
                ``user_id``, ``limit`` (1..100) or ``offset`` (>= 0).
            PermissionDeniedError: the client holds only the public key (anon may not search).
        """
        spec = self._spec_search_conversations(self._rest, user_id, query, limit, offset)
        response = await self._request(spec, timeout=timeout)
        return self._parse_search(spec, response, user_id)

    async def get_conversation(
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
        response = await self._request(spec, timeout=timeout)
        return self._parse_conversation(user_id, str(conversation_id), self._json(spec, response))

    async def iter_user_conversations(
        self, user_id: str, *, page_size: int = 100
    ) -> AsyncIterator[ConversationSummary]:
        """Every conversation of the user, newest first, fetched page by page (keyset).

        Memory stays bounded by ``page_size`` whatever the history length (used by exports).
        """
        cursor: str | None = None
        while True:
            page = await self.get_user_conversations(user_id, limit=page_size, cursor=cursor)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def iter_user_events(
        self, user_id: str, *, page_size: int = 500
    ) -> AsyncIterator[dict[str, Any]]:
        """Every event of the user, oldest first, as JSON objects (keyset over created_at, id)."""
        after: tuple[str, str] | None = None
        while True:
            spec = self._spec_events_page(self._rest, user_id, page_size, after)
            rows = self._json(spec, await self._request(spec))
            if not isinstance(rows, list):
                raise self._shape_error("events", rows)
            for row in rows:
                yield row
            if len(rows) < page_size:
                return
            after = (str(rows[-1]["created_at"]), str(rows[-1]["id"]))

    # --- operations -----------------------------------------------------------------------

    async def rpc(
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
        return self._json(spec, await self._request(spec, timeout=timeout))

    async def health(self) -> dict[str, Any]:
        """``identity.health()`` plus ``missing_functions`` (for ``supabase-identity doctor``)."""
        return self._health_report(await self.rpc("health"))

    # --- monitoring and maintenance (service key) -------------------------------------------

    async def get_stats(
        self, *, as_of: datetime | None = None, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> IdentityStats:
        """Archival health, user growth and storage, from ``identity.stats`` in one call.

        Per-hour and per-day series are UTC buckets ending at ``as_of`` (default: now), with
        empty buckets included. The archivers' Redis counters are separate:
        :func:`supabase_identity.read_archiver_stats`.
        """
        spec = self._spec_stats(self._rest, as_of)
        return self._parse_stats(self._json(spec, await self._request(spec, timeout=timeout)))

    async def archive_old_events(
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
        return self._parse_events_move(self._json(spec, await self._request(spec, timeout=timeout)))

    async def delete_unlinked_conversations(
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
        response = await self._request(spec, timeout=timeout)
        return self._parse_unlinked_cleanup(self._json(spec, response))

    async def analyze_tables(
        self, *, dry_run: bool = False, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> AnalyzeResult:
        """Refresh the planner statistics of the identity tables (``ANALYZE``)."""
        spec = self._spec_analyze_tables(self._rest, dry_run)
        return self._parse_analyze(self._json(spec, await self._request(spec, timeout=timeout)))

    async def ping_redis(self) -> str:
        """Check the Redis outbox answers; raises ``ConfigError`` when none is configured."""
        if not isinstance(self._outbox, AsyncRedisOutbox):
            raise ConfigError("REDIS_URL is not set: events are buffered in process memory")
        r = await self._outbox.redis()
        await r.ping()
        return "Redis answered PING"

    # --- compliance (service key) ----------------------------------------------------------

    async def redact_shop(
        self,
        shop_domain: str,
        redis_client: AsyncRedisClient | None = None,
        *,
        audit_key: str | None = None,
    ) -> ShopRedaction:
        """Erase every copy of a shop's data (Shopify's ``shop/redact``); return the counts.

        Redis first, while the database still names the shop's user: ``merchant:<shop>``, the
        user's live conversations (keys, messages, archiver entries), outbox entries and dead
        letters (``redis_client``, else this client's Redis outbox; none: Redis is left as it
        is and ``result.redis`` is ``None``). Then one SQL call (``identity.redact_shop``)
        deletes the user, conversations, events and archived events in one transaction and
        writes the audit row, which holds a keyed hash of the domain (``audit_key``, else
        ``IDENTITY_AUDIT_KEY`` or the first ``SHOPIFY_API_SECRET``), never the domain.

        Idempotent: a second call deletes nothing and returns zeros.

        Raises:
            ValidationError: ``shop_domain`` is not ``<name>.myshopify.com``.
            ConfigError: no audit key is configured.
            APIConnectionError, InternalServerError: the database could not be reached (Redis
                may already be cleared; call again, nothing is deleted twice).
        """
        shop, hashed = self._shop_and_hash(shop_domain, audit_key)
        self._require_write("redact_shop")
        known = await self.get_shop_user_id(shop)
        users = [known] if known else []
        redis_client = redis_client or await self._outbox_redis()
        names = [self._outbox_name()]
        wiped = None
        if redis_client is not None:
            wiped = await redact_redis(redis_client, shop, users, outbox_names=names)
        spec = self._spec_redact_shop(self._rest, shop, hashed)
        result, user_id = self._parse_redaction(self._json(spec, await self._request(spec)))
        if redis_client is not None and wiped is not None and user_id and user_id not in users:
            # The user was created between the lookup and the delete: its Redis copies too.
            wiped = wiped + await redact_redis(redis_client, shop, [user_id], outbox_names=names)
        return result.model_copy(update={"redis": wiped})

    async def get_shop_user_id(self, shop_domain: str) -> str | None:
        """The user id of a shop, or ``None`` when the shop has none (nothing is created)."""
        spec = self._spec_shop_users(self._rest, normalize_shop_domain(shop_domain))
        found = self._parse_shop_users(self._json(spec, await self._request(spec)))
        return found[0] if found else None

    async def shop_data_summary(
        self, shop_domain: str, topic: str, *, audit_key: str | None = None
    ) -> dict[str, Any]:
        """Counts of what the database holds for a shop, audited under ``topic``.

        For ``customers/data_request`` and ``customers/redact``: the package keeps no
        per-customer records, so what it can report is the shop's own data, as counts.
        """
        shop, hashed = self._shop_and_hash(shop_domain, audit_key)
        self._require_write("shop_data_summary")
        spec = self._spec_shop_data_summary(self._rest, shop, hashed, topic)
        data = self._json(spec, await self._request(spec))
        if not isinstance(data, dict):
            raise self._shape_error("shop_data_summary", data)
        return data

    async def _outbox_redis(self) -> AsyncRedisClient | None:
        if isinstance(self._outbox, AsyncRedisOutbox):
            return await self._outbox.redis()
        return None

    def _outbox_name(self) -> str:
        if isinstance(self._outbox, AsyncRedisOutbox):
            return self._outbox.key_prefix
        return OUTBOX_KEY_PREFIX

    # --- events ----------------------------------------------------------------------------

    async def log_user_event(
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
        except BaseException:
            # Interrupted mid-request (a cancelled task, KeyboardInterrupt): the event may or may
            # not have arrived. Keep it, shielded from a cancellation; a second delivery is
            # harmless, the database deduplicates by event id.
            await ashield(self._enqueue, [event])
            raise
        if delivery.dead:
            await self._keep_dead(delivery.dead)

    async def flush_events(self, *, max_batches: int | None = None) -> FlushResult:
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
            return None  # another flusher holds it; it will deliver these events
        try:
            batches = 0
            while max_batches is None or batches < max_batches:
                batch = await outbox.claim(EVENT_BATCH_SIZE)
                if batch is None:
                    return "lost the outbox flush lock"
                if not batch:
                    await outbox.ack()  # clears unparseable leftovers into dead letters, if any
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
        """Send ``events`` to ``record_events``; isolate events the database rejects.

        A batch rejected as invalid (:class:`DataRejectedError`) is split in halves until the
        offending events are alone; those become dead letters, the rest are delivered. Without
        this, one bad event would block every event queued behind it forever.
        """
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
