"""A FastAPI router serving a user's conversation history: ``supabase-identity[api]``.

Three history endpoints, with the JSON field names the services already use (see
:class:`ConversationList`, :class:`ConversationDetail`, :class:`Profile`), delivered as a part a
service mounts instead of code pasted into each one::

    GET {prefix}/{user_id}/conversations?limit=20&offset=0   (or &cursor=… for keyset paging)
    GET {prefix}/{user_id}/conversations?q=refund&limit=20&offset=0   (full-text search)
    GET {prefix}/{user_id}/conversations/{conversation_id}
    GET {prefix}/{user_id}/profile

``prefix`` defaults to ``/users``; ``app.include_router(router, prefix="/api/v1")`` gives
``/api/v1/users/…``.

Usage::

    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from supabase_identity import AsyncIdentityClient
    from supabase_identity.api import history_router

    from myservice.auth import get_current_user   # the service's own dependency

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with AsyncIdentityClient(redis_url=None) as identity:   # env: SUPABASE_*
            app.state.identity = identity
            yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(
        history_router(get_current_user=get_current_user, client=lambda: app.state.identity)
    )

What every endpoint guarantees:

* **401** when ``get_current_user`` yields no caller (it normally raises its own 401 first);
  **403** when the caller is another user, decided before any backend call.
* Reads go through ``client.for_user(user_id)``: a short-lived token for that user, so the
  database's row-level security enforces what the 403 check already says.
* **404** when the user or conversation does not exist; **422** (FastAPI's validation format) on
  bad parameters, including what the SDK or the database rejects; **503** with ``Retry-After``
  while Supabase is unreachable; **502** when it answers something unexpected. Bad input never
  yields a 500; a 500 means this deployment is misconfigured (e.g. no ``SUPABASE_JWT_SECRET``).

Importing :mod:`supabase_identity` never imports FastAPI; only this module does.
"""

# No ``from __future__ import annotations`` here: FastAPI resolves the endpoints' annotations at
# runtime, and some of them (``UserId``) are local to ``history_router``.

import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any, Final

from pydantic import BaseModel

try:
    from fastapi import APIRouter, Depends, HTTPException, Path, Query
    from fastapi.exceptions import RequestValidationError
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "supabase_identity.api needs FastAPI: pip install 'supabase-identity[api]'"
    ) from err

from ._async._client import AsyncIdentityClient
from ._constants import (
    DEFAULT_PAGE_LIMIT,
    MAX_CONVERSATION_ID_LENGTH,
    MAX_CURSOR_LENGTH,
    MAX_PAGE_LIMIT,
    MAX_SEARCH_QUERY_LENGTH,
    MIN_PAGE_LIMIT,
    USER_ID_PATTERN,
)
from ._exceptions import (
    AuthenticationError,
    BackendUnavailableError,
    ClientClosedError,
    ConfigError,
    DataRejectedError,
    IdentityError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from ._webhooks import shopify_webhooks_router  # in its own module: the compliance webhooks
from ._wire import (
    ConversationDetail,
    ConversationList,
    ConversationListItem,
    Profile,
    ProfileStats,
    SearchList,
    SearchListItem,
    conversation_list,
    search_list,
)

__all__ = [
    "ConversationDetail",
    "ConversationList",
    "ConversationListItem",
    "ErrorResponse",
    "Profile",
    "ProfileStats",
    "SearchList",
    "SearchListItem",
    "default_user_id_of",
    "history_router",
    "shopify_webhooks_router",
]

log = logging.getLogger("supabase_identity")

#: PostgREST's offset is a Postgres ``bigint``; larger values are a 422 here, not a backend error.
MAX_OFFSET: Final = 2**63 - 1
CURSOR_PATTERN: Final = r"^[A-Za-z0-9_-]+$"
#: ``Retry-After`` sent with a 503 when Supabase is unreachable (seconds).
DEFAULT_RETRY_AFTER: Final = 5
#: A well-formed user id used to check, without any request, that ``for_user`` can mint tokens.
_PROBE_USER_ID: Final = "usr_" + "0" * 16

ClientOption = AsyncIdentityClient | Callable[[], AsyncIdentityClient] | None


class ErrorResponse(BaseModel):
    """Body of every 401/403/404/502/503 answer (FastAPI's ``HTTPException`` shape)."""

    detail: str


def default_user_id_of(user: Any) -> str | None:
    """The caller's ``usr_…`` id: ``user["user_id"]`` for mappings, else ``user.user_id``.

    ``None`` (answered with 401) when there is no caller or it carries no string ``user_id``.
    """
    if user is None:
        return None
    value = user.get("user_id") if isinstance(user, Mapping) else getattr(user, "user_id", None)
    if not isinstance(value, str):
        log.warning(
            "history_router: the current user (%s) has no string user_id; answering 401. "
            "Pass user_id_of= to history_router() to say where the id is.",
            type(user).__name__,
        )
        return None
    return value


class _ClientSource:
    """Where the router's endpoints get their :class:`AsyncIdentityClient`.

    Given an instance, that instance (the caller owns and closes it). Given a zero-argument
    callable, its result on every request (e.g. ``lambda: app.state.identity``). Given ``None``,
    one client built from the environment (``AsyncIdentityClient(redis_url=None)``: the router
    only reads, so it needs no events outbox), created at application startup and closed at
    shutdown by the router's lifespan, or on first use if the lifespan did not run.
    """

    def __init__(self, client: ClientOption) -> None:
        self._given = client
        self._owned: AsyncIdentityClient | None = None

    @property
    def owns_client(self) -> bool:
        """Whether the router builds (and closes) its own client."""
        return self._given is None

    def get(self) -> AsyncIdentityClient:
        """The client to use for this request."""
        if isinstance(self._given, AsyncIdentityClient):
            return self._given
        if self._given is not None:
            return self._given()
        if self._owned is None or self._owned.is_closed:
            self._owned = AsyncIdentityClient(redis_url=None)
        return self._owned

    async def aclose(self) -> None:
        """Close the client this source built, if any (an instance given to it is left open)."""
        owned, self._owned = self._owned, None
        if owned is not None:
            await owned.close()


def _check_can_scope(client: AsyncIdentityClient) -> None:
    """Fail now, not on the first request, when ``client`` cannot mint user-scoped tokens."""
    client.for_user(_PROBE_USER_ID)  # no I/O; ConfigError without JWT secret or public key


def _cursor_is_wellformed(cursor: str) -> bool:
    """Whether ``cursor`` decodes to the ``[started_at, id]`` string pair the SDK produces.

    The SDK validates cursors too; this guard keeps any malformed cursor from the public internet
    from reaching it, so that no cursor, however odd, can cause anything but a 422.
    """
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):  # UnicodeDecodeError and JSONDecodeError included
        return False
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)


def _invalid(loc: tuple[str, ...], message: str, value: Any = None) -> RequestValidationError:
    """A 422 in FastAPI's own format (so the app's validation handler renders it)."""
    return RequestValidationError(
        [{"type": "value_error", "loc": loc, "msg": message, "input": value}]
    )


#: Where each argument the SDK may refuse comes from in a request (its ``loc`` in a 422).
_FIELD_LOCATION: Final = {
    "user_id": ("path", "user_id"),
    "conversation_id": ("path", "conversation_id"),
    "limit": ("query", "limit"),
    "offset": ("query", "offset"),
    "cursor": ("query", "cursor"),
    "query": ("query", "q"),
}


@contextmanager
def _backend_errors(*, not_found: str, loc: tuple[str, ...], retry_after: int) -> Iterator[None]:
    """Translate SDK errors raised inside the block into HTTP answers.

    ``loc`` names the parameter a database-side rejection (no ``field``) is blamed on.
    """
    try:
        yield
    except DataRejectedError as err:
        # Rejected by Postgres (e.g. a cursor timestamp out of range): the parameter is bad.
        raise _invalid(loc, f"{loc[-1]} is not valid: {err.message}") from err
    except ValidationError as err:  # refused by the SDK before sending: it names the argument
        if err.field in _FIELD_LOCATION:
            raise _invalid(_FIELD_LOCATION[err.field], err.message) from err
        raise _invalid(loc, f"{loc[-1]} is not valid: {err.message}") from err
    except NotFoundError as err:
        raise HTTPException(status_code=404, detail=not_found) from err
    except PermissionDeniedError as err:
        raise HTTPException(status_code=403, detail="Not allowed to read this history") from err
    except (BackendUnavailableError, ClientClosedError) as err:
        log.warning("history_router: Supabase unavailable, answering 503: %s", err)
        raise HTTPException(
            status_code=503,
            detail="The history store is unavailable; retry later",
            headers={"Retry-After": str(retry_after)},
        ) from err
    except (ConfigError, AuthenticationError):
        raise  # this deployment is misconfigured: a 500 with the traceback in the server log
    except IdentityError as err:
        log.error("history_router: unexpected answer from Supabase: %s", err)
        raise HTTPException(
            status_code=502, detail="The history store gave an unexpected answer"
        ) from err


_ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": ErrorResponse, "description": "No authenticated caller."},
    403: {"model": ErrorResponse, "description": "The caller is another user."},
    502: {"model": ErrorResponse, "description": "Supabase gave an unexpected answer."},
    503: {
        "model": ErrorResponse,
        "description": "Supabase is unreachable; retry after the given delay.",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer"},
            }
        },
    },
}
_NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": ErrorResponse, "description": "No such user or conversation."},
}


def history_router(
    *,
    get_current_user: Callable[..., Any],
    client: ClientOption = None,
    prefix: str = "/users",
    tags: Sequence[str] = ("users",),
    user_id_of: Callable[[Any], str | None] = default_user_id_of,
    retry_after: int = DEFAULT_RETRY_AFTER,
) -> APIRouter:
    """Build the history ``APIRouter`` (see the module docstring for a complete app).

    Usage::

        app.include_router(history_router(get_current_user=get_current_user))

    Args:
        get_current_user: the service's own FastAPI dependency for the authenticated caller
            (it may take its own parameters and dependencies, and raise its own 401).
        client: an :class:`AsyncIdentityClient` (the caller closes it), a zero-argument callable
            returning one per request (e.g. ``lambda: app.state.identity``), or ``None`` to build
            one from the environment, closed by the router's lifespan when the app stops.
            It needs ``SUPABASE_JWT_SECRET`` and the public key: every read is user-scoped.
        prefix: path prefix of the three endpoints.
        tags: OpenAPI tags.
        user_id_of: maps what ``get_current_user`` returns to the caller's ``usr_…`` id;
            the default reads ``user["user_id"]`` or ``user.user_id``. ``None`` means 401.
        retry_after: seconds sent in ``Retry-After`` with a 503.

    Raises:
        ConfigError: ``client`` is an instance that cannot mint user-scoped tokens.
    """
    source = _ClientSource(client)
    if isinstance(client, AsyncIdentityClient):
        _check_can_scope(client)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        _check_can_scope(source.get())  # fail at startup, not on the first request
        try:
            yield
        finally:
            await source.aclose()

    router = APIRouter(
        prefix=prefix,
        tags=list(tags),
        responses=_ERROR_RESPONSES,
        lifespan=lifespan if source.owns_client else None,
    )

    async def authorized_user_id(
        user_id: Annotated[
            str,
            Path(
                pattern=USER_ID_PATTERN,
                description="The user whose history is read; must be the caller.",
                examples=["usr_0123456789abcdef01234567"],
            ),
        ],
        caller: Annotated[Any, Depends(get_current_user)],
    ) -> str:
        """The path's ``user_id`` once it is known to be the caller's own (401/403 otherwise)."""
        caller_id = user_id_of(caller)
        if caller_id is None:
            raise HTTPException(
                status_code=401,
                detail="Not authenticated",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if caller_id != user_id:
            raise HTTPException(status_code=403, detail="Not allowed to read this history")
        return user_id

    UserId = Annotated[str, Depends(authorized_user_id)]

    @router.get(
        "/{user_id}/conversations",
        # A plain list, or (with q) a search: a search's items carry rank and snippet, which a
        # plain list's lack, so the two are never mistaken for each other.
        response_model=ConversationList | SearchList,
        summary="List the user's conversations, newest first, or search them",
        operation_id="list_user_conversations",
    )
    async def list_conversations(
        user_id: UserId,
        limit: Annotated[
            int,
            Query(ge=MIN_PAGE_LIMIT, le=MAX_PAGE_LIMIT, description="Page size."),
        ] = DEFAULT_PAGE_LIMIT,
        offset: Annotated[
            int,
            Query(ge=0, le=MAX_OFFSET, description="Conversations to skip (with `total`)."),
        ] = 0,
        cursor: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=MAX_CURSOR_LENGTH,
                pattern=CURSOR_PATTERN,
                description="`next_cursor` of the previous page, for keyset paging "
                "(`total` is then null); not combined with `offset` or `q`.",
            ),
        ] = None,
        q: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=MAX_SEARCH_QUERY_LENGTH,
                description='Full-text search (web-search syntax: words, "a phrase", '
                "-excluded, or): the matching conversations, most relevant first, each with "
                "`rank` and `snippet` (matched words in <mark> tags, HTML-escaped); paged by "
                "`offset`.",
            ),
        ] = None,
    ) -> ConversationList | SearchList:
        """A page of conversations without their messages.

        Offset pages carry ``total``; keyset pages (``cursor``) cost the same at any depth.
        ``next_cursor`` is set when another page follows. With ``q``, the conversations that
        match it, most relevant first, each with ``rank`` and ``snippet``, and the total
        number of matches (one request).
        """
        if q is not None:
            if cursor is not None:
                raise _invalid(("query", "cursor"), "q pages with offset, not cursor", cursor)
            with _backend_errors(
                not_found="No such user", loc=("query", "q"), retry_after=retry_after
            ):
                scoped = source.get().for_user(user_id)
                hits = await scoped.search_conversations(user_id, q, limit, offset)
            return search_list(hits)
        if cursor is not None and not _cursor_is_wellformed(cursor):
            raise _invalid(
                ("query", "cursor"), "cursor is not a next_cursor returned by this API", cursor
            )
        with _backend_errors(
            not_found="No such user", loc=("query", "cursor"), retry_after=retry_after
        ):
            scoped = source.get().for_user(user_id)
            page = await scoped.get_user_conversations(user_id, limit, offset, cursor=cursor)
        return conversation_list(page)

    @router.get(
        "/{user_id}/conversations/{conversation_id}",
        response_model=ConversationDetail,
        responses=_NOT_FOUND,
        summary="One conversation with its messages",
        operation_id="get_user_conversation",
    )
    async def get_conversation(
        user_id: UserId,
        conversation_id: Annotated[
            str,
            Path(
                min_length=1,
                max_length=MAX_CONVERSATION_ID_LENGTH,
                description="The conversation's UUID, or the agents service's own id.",
            ),
        ],
    ) -> ConversationDetail:
        """The conversation with its messages, oldest first; 404 if it is not the user's."""
        with _backend_errors(
            not_found="No such conversation",
            loc=("path", "conversation_id"),
            retry_after=retry_after,
        ):
            scoped = source.get().for_user(user_id)
            conversation = await scoped.get_conversation(user_id, conversation_id)
        return ConversationDetail.from_conversation(conversation)

    @router.get(
        "/{user_id}/profile",
        response_model=Profile,
        responses=_NOT_FOUND,
        summary="The user with conversation and event stats",
        operation_id="get_user_profile",
    )
    async def get_profile(user_id: UserId) -> Profile:
        """The user's profile and stats (conversations, messages, first/last, events)."""
        with _backend_errors(
            not_found="No such user", loc=("path", "user_id"), retry_after=retry_after
        ):
            scoped = source.get().for_user(user_id)
            profile = await scoped.get_user_profile(user_id)
        return Profile.from_profile(profile)

    return router
