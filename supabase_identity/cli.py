"""The ``supabase-identity`` command line: doctor, users, history, export, events, archive,
stats, maintain, redact-shop.

Usage::

    supabase-identity doctor
    supabase-identity user get-or-create cool-shop.myshopify.com
    supabase-identity --debug user show usr_…
    supabase-identity history usr_… --limit 10
    supabase-identity history usr_… --search "refund -shipping"
    supabase-identity export usr_… --format jsonl -o history.jsonl
    supabase-identity events flush
    supabase-identity archive --once | --loop | --check
    supabase-identity stats
    supabase-identity maintain --dry-run
    supabase-identity redact-shop cool-shop.myshopify.com --yes

Built on Typer (Click) and Rich. Every command reads its configuration like the library does
(environment, then ``.env.local``, then ``.env``; ``--env-dir`` picks the folder).

Output: tables and sentences on a terminal; JSON when ``--json`` is given or stdout is not a
terminal, so scripts can parse it without a flag (``--no-json`` forces the human form).

Exit codes: 0 success; 1 an error (one line on stderr, ``supabase-identity: error: …``; the
traceback only with ``--debug``), a failed doctor check, events left in the outbox, a
conversation the archiver could not archive, or no live archiver for ``archive --check``;
2 a usage error (unknown option, bad value, ``archive`` without exactly one mode).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn, TextIO

import typer
import typer.core
from typer.exceptions import TyperException

from ._constants import (
    ARCHIVER_REDIS_CONNECT_TIMEOUT,
    ARCHIVER_REDIS_SOCKET_TIMEOUT,
    DEFAULT_EVENT_RETENTION_DAYS,
    DEFAULT_UNLINKED_RETENTION_DAYS,
)
from ._exceptions import (
    AuthenticationError,
    BackendUnavailableError,
    ConfigError,
    IdentityError,
    MigrationsNotAppliedError,
    NotFoundError,
    PermissionDeniedError,
    SchemaNotExposedError,
)
from ._version import __version__

# Only what every invocation needs is imported here: ``--help`` and ``--version`` must not pay
# for the client stack (httpx, postgrest, pydantic, redis), which each command imports itself.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.status import Status as RichStatus

    from ._models import FlushResult, UserProfile
    from ._redis import RedisClient
    from ._sync._client import IdentityClient
    from .archive import ArchiveReport, ConversationArchiver

PROG = "supabase-identity"

#: doctor answers quickly when something is down: one retry, not the client's default three.
DOCTOR_MAX_RETRIES = 1

_SERVICE_KEY_FIX = (
    "set SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SECRET_KEY) to the project's service key "
    "(Dashboard → Project Settings → API; locally `scripts/stack env` prints it)"
)


class CliError(Exception):
    """A failure the CLI itself detects; printed like the library's errors (one line, exit 1)."""


class _Group(typer.core.TyperGroup):
    """The root command group: turns the library's errors into one line on stderr and exit 1.

    Living in the group (not only in :func:`main`) keeps the behaviour identical when the app
    is invoked by ``typer.testing.CliRunner``.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException, BrokenPipeError):
            raise  # Click's own control flow: exit codes, usage errors (exit 2), EPIPE
        except Exception as error:
            _fail(error, internal=not _reported_as_is(error))


# Help is Click's: each docstring paragraph is rewrapped to the terminal's width, and no rich
# import is paid for ``--help`` (``rich_markup_mode=None`` on every Typer of this app).
app = typer.Typer(
    name=PROG,
    cls=_Group,
    help="User identity, events and conversation history on Supabase (over HTTP).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
user_app = typer.Typer(help="Look up or create users.", no_args_is_help=True, rich_markup_mode=None)
events_app = typer.Typer(help="The events outbox.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(user_app, name="user")
app.add_typer(events_app, name="events")


class _LazyConsole:
    """A rich ``Console`` made on its first print, so commands that print nothing never import
    rich; it resolves sys.stdout/sys.stderr when it prints, so test runners can swap them."""

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, soft_wrap=True, highlight=False)
        return self._console

    @property
    def width(self) -> int:
        return self.console.width

    def print(self, *objects: Any) -> None:
        self.console.print(*objects)

    def status(self, status: str) -> RichStatus:
        return self.console.status(status)


def escape(text: str) -> str:
    """``text`` with rich markup made literal (rich imported on first use)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


out = _LazyConsole()
err = _LazyConsole(stderr=True)

EnvDir = Annotated[
    Path | None,
    typer.Option("--env-dir", help="Folder with .env/.env.local (default: current folder)."),
]
JsonFlag = Annotated[
    bool | None,
    typer.Option(
        "--json/--no-json",
        help="JSON output (default: JSON when stdout is not a terminal, else human-readable).",
    ),
]


@dataclass
class _Options:
    env_dir: Path | None = None
    debug: bool = False


_options = _Options()


@dataclass
class _Process:
    owns_logging: bool = False


_process = _Process()


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"{PROG} {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    env_dir: EnvDir = None,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="SUPABASE_IDENTITY_DEBUG",
            help="Show tracebacks on errors and debug logs. Goes before the command.",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    _options.env_dir = env_dir
    _options.debug = debug
    _configure_logging(logging.DEBUG if debug else logging.WARNING)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _configure_logging(level: int) -> None:
    """Library logs go to stderr as ``supabase-identity: LEVEL: message`` lines.

    Only when running as the console script (:func:`main`): an application (or a test) that
    invokes ``app`` keeps its own logging configuration.
    """
    if not _process.owns_logging:
        return
    logger = logging.getLogger("supabase_identity")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)


def _reported_as_is(error: Exception) -> bool:
    """Whether ``error`` is one the CLI reports as its one line (not as an internal error)."""
    if isinstance(error, (CliError, IdentityError, OSError)):
        return True
    # A Redis error can only come from a command that imported redis: no import needed here.
    redis_module = sys.modules.get("redis")
    return redis_module is not None and isinstance(error, redis_module.RedisError)


def _fail(error: BaseException, *, internal: bool = False) -> NoReturn:
    """Print ``error`` as one line on stderr (plus the traceback under ``--debug``); exit 1."""
    from ._keys import scrub

    if _options.debug:
        traceback.print_exception(error, file=sys.stderr)
    text = scrub(str(error).strip())  # messages from below may quote a URL or a token
    first = text.splitlines()[0] if text else type(error).__name__
    if internal:
        first = f"internal error: {type(error).__name__}: {first}"
        if not _options.debug:
            first += " (run with --debug before the command for the traceback)"
    sys.stderr.write(f"{PROG}: error: {first}\n")
    sys.stderr.flush()
    raise typer.Exit(1)


def _client(**kwargs: Any) -> IdentityClient:
    from ._sync._client import IdentityClient

    return IdentityClient.from_env(env_dir=_options.env_dir, **kwargs)


def _stdout_is_terminal() -> bool:
    """Whether stdout is a terminal (tests patch this to see the human-readable form)."""
    return sys.stdout.isatty()


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _want_json(flag: bool | None) -> bool:
    return (not _stdout_is_terminal()) if flag is None else flag


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def _profile(client: IdentityClient, user_id: str) -> UserProfile:
    try:
        return client.get_user_profile(user_id)
    except NotFoundError as error:
        raise NotFoundError(
            f"user {user_id} not found (no such user, or not visible to this key)",
            status_code=error.status_code,
            code=error.code,
        ) from error


# ------------------------------------------------------------------------------------------------
# doctor
# ------------------------------------------------------------------------------------------------


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 - a check status, not a password
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One doctor line: what was checked, how it went, and how to fix it when it failed."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAIL

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value, "ok": self.ok}


def _key_check(client: IdentityClient) -> Check:
    from ._keys import Privilege

    privilege = client.privilege
    if privilege is Privilege.SERVICE:
        return Check("key", Status.PASS, "service key (service_role): what this package needs")
    if privilege is Privilege.PUBLIC:
        return Check(
            "key",
            Status.FAIL,
            "public (anon) key: it can read and write nothing in the identity schema, so the "
            "health check and every command here are refused",
            _SERVICE_KEY_FIX,
        )
    if privilege is Privilege.USER:
        return Check(
            "key",
            Status.FAIL,
            "a user-scoped (authenticated) token: it reads one user's rows and writes nothing",
            _SERVICE_KEY_FIX,
        )
    return Check("key", Status.PASS, "key of an unknown kind; the gateway check below decides")


def _backend_checks(client: IdentityClient, key: Check) -> list[Check]:
    """gateway, schema, SQL functions and RLS, from one call to ``identity.health()``."""
    url = client.base_url
    skip_reason = "not checked: "
    try:
        health = client.with_options(max_retries=DOCTOR_MAX_RETRIES).health()
    except BackendUnavailableError as error:
        return [
            Check(
                "gateway",
                Status.FAIL,
                error.message,
                "check SUPABASE_URL (host and port; locally http://127.0.0.1:54321) and that the "
                "project is up (locally `scripts/stack up`, then `scripts/stack status`)",
            ),
            *_skipped(skip_reason + "the gateway is unreachable"),
        ]
    except SchemaNotExposedError as error:
        return [
            Check("gateway", Status.PASS, f"{url} answered"),
            Check("schema", Status.FAIL, "the `identity` schema is not exposed", error.hint),
            *_skipped(skip_reason + "the schema is not exposed", names=("SQL functions", "RLS")),
        ]
    except MigrationsNotAppliedError as error:
        return [
            Check("gateway", Status.PASS, f"{url} answered"),
            Check("schema", Status.PASS, "`identity` is exposed"),
            Check(
                "SQL functions",
                Status.FAIL,
                f"identity.health() is missing: {error.message}",
                "apply the migrations: `supabase db push` (locally `scripts/stack up`)",
            ),
            *_skipped(skip_reason + "the migrations are not applied", names=("RLS",)),
        ]
    except (AuthenticationError, PermissionDeniedError) as error:
        gateway = Check("gateway", Status.PASS, f"{url} answered (HTTP {error.status_code})")
        if not key.ok:
            reason = skip_reason + "needs the service key"
            return [gateway, *_skipped(reason, names=("schema", "SQL functions", "RLS"))]
        return [
            gateway,
            Check(
                "schema",
                Status.FAIL,
                f"the gateway refused the key: {error.message}",
                _SERVICE_KEY_FIX
                if isinstance(error, AuthenticationError)
                else "grant the service role access to `identity`: apply the migrations "
                "(`supabase db push`)",
            ),
            *_skipped(skip_reason + "access was refused", names=("SQL functions", "RLS")),
        ]
    except ConfigError as error:  # e.g. a 404 from something that is not a Supabase gateway
        return [
            Check("gateway", Status.FAIL, f"{url}: {error.message}", error.hint),
            *_skipped(skip_reason + "the gateway did not answer as Supabase"),
        ]
    checks = [
        Check("gateway", Status.PASS, f"{url} answered"),
        Check("schema", Status.PASS, "`identity` is exposed and readable with this key"),
    ]
    missing = [str(name) for name in health.get("missing_functions") or []]
    checks.append(
        Check("SQL functions", Status.PASS, "all present")
        if not missing
        else Check(
            "SQL functions",
            Status.FAIL,
            f"missing: {', '.join(missing)}",
            "apply the migrations: `supabase db push` (locally `scripts/stack up`)",
        )
    )
    tables = health.get("tables") or []
    no_rls = sorted(str(t.get("name")) for t in tables if not t.get("rls"))
    checks.append(
        Check("RLS", Status.PASS, f"enabled on every table ({len(tables)})")
        if not no_rls
        else Check(
            "RLS",
            Status.FAIL,
            f"row level security is DISABLED on {', '.join(no_rls)}",
            "apply the migrations (`supabase db push`); they enable RLS on every table",
        )
    )
    return checks


def _skipped(
    reason: str, names: tuple[str, ...] = ("schema", "SQL functions", "RLS")
) -> list[Check]:
    return [Check(name, Status.SKIP, reason) for name in names]


def _redis_check(client: IdentityClient) -> Check:
    import redis

    if client.redis_url is None:
        return Check(
            "redis",
            Status.FAIL,
            "REDIS_URL is not set: events wait in process memory and the archiver cannot run",
            "set REDIS_URL, e.g. redis://127.0.0.1:6379/0",
        )
    try:
        return Check("redis", Status.PASS, client.ping_redis())
    except redis.RedisError as error:
        return Check(
            "redis",
            Status.FAIL,
            f"Redis did not answer: {error}",
            "check REDIS_URL (host, port, password, database) and that Redis is running",
        )


def run_doctor() -> list[Check]:
    """Every doctor check, in order; a check that cannot run is ``skip`` with the reason.

    No line shows a key, a token or a password, whatever a server or library put in a message.
    """
    from ._keys import scrub

    return [
        replace(check, detail=scrub(check.detail), fix=scrub(check.fix) if check.fix else None)
        for check in _doctor_checks()
    ]


#: How ``doctor`` names each setting when it says where it came from.
_SETTING_LABELS: Final = (
    ("supabase_url", "URL"),
    ("service_role_key", "service key"),
    ("anon_key", "public key"),
    ("jwt_secret", "JWT secret"),
    ("redis_url", "Redis"),
)


def _configuration_detail(client: IdentityClient) -> str:
    """The API URL, then which variable (and file) each setting came from."""
    from ._settings import load_settings

    sources = load_settings(env_dir=_options.env_dir).sources
    origins = [
        f"{label} from {sources[name]}" for name, label in _SETTING_LABELS if name in sources
    ]
    return f"SUPABASE_URL={client.base_url}" + (f" ({'; '.join(origins)})" if origins else "")


def _doctor_checks() -> list[Check]:
    try:
        client = _client()
    except ConfigError as error:
        return [
            Check("configuration", Status.FAIL, error.message, error.hint),
            *_skipped(
                "not checked: the configuration is incomplete",
                names=("key", "gateway", "schema", "SQL functions", "RLS", "redis"),
            ),
        ]
    with client:
        key = _key_check(client)
        return [
            Check("configuration", Status.PASS, _configuration_detail(client)),
            key,
            *_backend_checks(client, key),
            _redis_check(client),
        ]


@app.command()
def doctor(json_output: JsonFlag = None) -> None:
    """Check the configuration, the backend and Redis.

    In order: configuration, key role, gateway, schema, SQL functions, RLS, Redis. Exit 1 when
    any check fails; each failing line says how to fix it.
    """
    checks = run_doctor()
    ok = all(check.ok for check in checks)
    if _want_json(json_output):
        _print_json({"ok": ok, "checks": [check.as_dict() for check in checks]})
    else:
        marks = {Status.PASS: "[green]pass[/]", Status.FAIL: "[red]FAIL[/]", Status.SKIP: "skip"}
        for check in checks:
            line = f"{marks[check.status]}  {check.name:<14} {escape(check.detail)}"
            if check.fix and not check.ok:
                line += f" — fix: {escape(check.fix)}"
            out.print(line)
    if not ok:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------
# users and history
# ------------------------------------------------------------------------------------------------


@user_app.command("get-or-create")
def user_get_or_create(
    shop: Annotated[str, typer.Argument(help="Shop domain, e.g. cool-shop.myshopify.com")],
    email: Annotated[str | None, typer.Option(help="Owner email")] = None,
    name: Annotated[str | None, typer.Option(help="Owner name")] = None,
    shopify_id: Annotated[str | None, typer.Option(help="Shopify shop id")] = None,
    json_output: JsonFlag = None,
) -> None:
    """Print the shop's usr_… id, creating the user on first sight."""
    from ._validation import normalize_shop_domain

    domain = normalize_shop_domain(shop)
    with _client() as client:
        user_id, is_new = client.get_or_create_user(
            domain, email=email, name=name, shopify_id=shopify_id
        )
    if _want_json(json_output):
        _print_json({"user_id": user_id, "is_new": is_new, "shop_domain": domain})
    else:
        out.print(f"{user_id}  {domain}  ({'new user' if is_new else 'existing user'})")


@user_app.command("show")
def user_show(user_id: str, json_output: JsonFlag = None) -> None:
    """Print a user's profile with conversation and event stats."""
    with _client() as client:
        profile = _profile(client, user_id)
    if _want_json(json_output):
        _print_json(profile.model_dump(mode="json"))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, box=None)
    data = profile.model_dump(mode="json", exclude={"stats"})
    for key, value in data.items():
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value
        table.add_row(key, Text("" if shown is None else str(shown)))
    for key, value in profile.stats.model_dump(mode="json").items():
        table.add_row(f"stats.{key}", Text("" if value is None else str(value)))
    out.print(table)


@app.command()
def history(
    user_id: str,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Conversations per page")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many (shows the total)")] = 0,
    cursor: Annotated[
        str | None, typer.Option(help="next_cursor from a previous page (keyset paging)")
    ] = None,
    search: Annotated[
        str | None,
        typer.Option(
            help='Full-text search: words, "a phrase", -excluded, or (most relevant first)'
        ),
    ] = None,
    json_output: JsonFlag = None,
) -> None:
    """List a user's archived conversations, newest first; or, with --search, the ones that
    match, most relevant first, each with a snippet (matched words highlighted on a terminal)."""
    if search is not None:
        if cursor is not None:
            raise typer.BadParameter(
                "--search pages with --offset, not --cursor", param_hint="'--cursor'"
            )
        _search_history(user_id, search, limit, offset, json_output)
        return
    with _client() as client:
        page = client.get_user_conversations(user_id, limit=limit, offset=offset, cursor=cursor)
        if not page.items and offset == 0 and cursor is None:
            _profile(client, user_id)  # an empty history, or a mistyped user id?
    if _want_json(json_output):
        _print_json(page.model_dump(mode="json"))
        return
    if page.total is not None:
        title = f"{user_id}: {page.total} conversations"
        if page.items:
            title += f" (showing {offset + 1}-{offset + len(page.items)})"
    else:
        title = f"{user_id}: {len(page.items)} conversations after the cursor"
    if not page.items:
        out.print(f"{title}; none on this page" if page.total else title)
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("conversation", no_wrap=True, min_width=36)
    table.add_column("workflow", overflow="fold")
    table.add_column("started (UTC)", no_wrap=True)
    table.add_column("messages", justify="right", no_wrap=True)
    for item in page.items:
        table.add_row(
            Text(item.conversation_id),
            Text(item.workflow_name or ""),
            item.started_at.strftime("%Y-%m-%d %H:%M"),
            str(item.message_count),
        )
    out.print(table)
    if page.next_cursor:
        out.print(f"next page: {PROG} history {user_id} --cursor {page.next_cursor}")


def _search_history(
    user_id: str, query: str, limit: int, offset: int, json_output: bool | None
) -> None:
    """``history --search``: one search request; the hits as JSON or as snippets."""
    with _client() as client:
        page = client.search_conversations(user_id, query, limit=limit, offset=offset)
        if not page.items and offset == 0:
            _profile(client, user_id)  # nothing found, or a mistyped user id?
    if _want_json(json_output):
        _print_json(page.model_dump(mode="json"))
        return
    import shlex

    from rich.text import Text

    from ._cli_render import render_search_hit

    title = f"{user_id}: {page.total} conversations match {shlex.quote(query)}"
    if page.items:
        title += f" (showing {offset + 1}-{offset + len(page.items)})"
    elif page.total:
        title += "; none on this page"
    out.print(Text(title))
    for hit in page.items:
        out.print(render_search_hit(hit))
    if page.has_more:
        out.print(
            Text(
                f"next page: {PROG} history {user_id} --search {shlex.quote(query)} "
                f"--limit {limit} --offset {offset + len(page.items)}"
            )
        )


class ExportFormat(StrEnum):
    json = "json"
    jsonl = "jsonl"


class _Export:
    """A user's data read page by page: memory is bounded by one conversation, not the history."""

    def __init__(self, client: IdentityClient, user_id: str) -> None:
        self._client = client
        self.user_id = user_id
        self.conversation_count = 0
        self.message_count = 0
        self.event_count = 0

    def profile(self) -> dict[str, Any]:
        return _profile(self._client, self.user_id).model_dump(mode="json")

    def conversations(self) -> Iterator[dict[str, Any]]:
        """Each conversation with its messages, newest first."""
        for summary in self._client.iter_user_conversations(self.user_id):
            conversation = self._client.get_conversation(self.user_id, str(summary.id))
            self.conversation_count += 1
            self.message_count += len(conversation.messages)
            yield conversation.model_dump(mode="json")

    def events(self) -> Iterator[dict[str, Any]]:
        """Each event, oldest first."""
        for event in self._client.iter_user_events(self.user_id):
            self.event_count += 1
            yield event

    def write(self, handle: TextIO, fmt: ExportFormat) -> None:
        profile = self.profile()  # first: an unknown user fails before anything is written
        if fmt is ExportFormat.jsonl:
            handle.write(_dumps({"type": "profile", **profile}) + "\n")
            for conversation in self.conversations():
                handle.write(_dumps({"type": "conversation", **conversation}) + "\n")
            for event in self.events():
                handle.write(_dumps({"type": "event", **event}) + "\n")
            return
        handle.write('{\n"profile": ' + _dumps(profile) + ',\n"conversations": [')
        _write_items(handle, self.conversations())
        handle.write('],\n"events": [')
        _write_items(handle, self.events())
        handle.write("]\n}\n")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _write_items(handle: TextIO, items: Iterator[dict[str, Any]]) -> None:
    """The elements of a JSON array, one per line, written as they are read."""
    separator = "\n"
    wrote = False
    for item in items:
        handle.write(separator + _dumps(item))
        separator, wrote = ",\n", True
    if wrote:
        handle.write("\n")


@app.command()
def export(
    user_id: str,
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="One JSON document, or JSON Lines")
    ] = ExportFormat.json,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout)")
    ] = None,
) -> None:
    """Export a user's profile, conversations and events.

    --format json writes one document: {"profile": …, "conversations": […], "events": […]}.
    --format jsonl writes one object per line, its "type" being profile, conversation or event.

    A file is written under a temporary name and renamed once complete, so a failed export
    leaves no partial file.
    """
    if output is not None and not output.parent.is_dir():
        raise CliError(f"cannot write {output}: the folder {output.parent} does not exist")
    with _client() as client:
        job = _Export(client, user_id)
        if output is None:
            job.write(sys.stdout, fmt)
            return
        fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                job.write(handle, fmt)
            os.replace(tmp_name, output)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
    err.print(
        f"exported {user_id} to {escape(str(output))}: {job.conversation_count} conversations "
        f"({job.message_count} messages), {job.event_count} events"
    )


@events_app.command("flush")
def events_flush(json_output: JsonFlag = None) -> None:
    """Deliver the events waiting in the Redis outbox.

    Exit 1 if some remain undelivered.
    """
    from ._sync._redis_outbox import RedisOutbox

    with _client() as client:
        if not isinstance(client.outbox, RedisOutbox):
            raise ConfigError(
                "REDIS_URL is not set: without it events wait in each process's own memory, "
                "so there is no outbox to flush from here"
            )
        result = client.flush_events()
    if _want_json(json_output):
        _print_json(result.model_dump(mode="json"))
    else:
        out.print(_flush_sentence(result))
    if result.remaining:
        if result.error:
            err.print(f"{result.remaining} events still waiting: {escape(result.error)}")
        raise typer.Exit(1)


def _flush_sentence(result: FlushResult) -> str:
    return (
        f"delivered {result.delivered}, duplicates {result.duplicates}, "
        f"dead-lettered {result.dead_lettered}, remaining {result.remaining}"
    )


# ------------------------------------------------------------------------------------------------
# archive
# ------------------------------------------------------------------------------------------------


def _archiver_redis(url: str | None, cluster: bool | None, *, ping: bool) -> RedisClient:
    """The archiver's Redis client (one node or a cluster, see ``REDIS_CLUSTER``); with
    ``ping``, fail at once with one line if it is down."""
    import redis

    from ._redis import connect_redis

    if not url:
        raise ConfigError(
            "REDIS_URL is not set: the archiver reads conversations from Redis "
            "(e.g. REDIS_URL=redis://127.0.0.1:6379/0)"
        )
    options = {
        "socket_connect_timeout": ARCHIVER_REDIS_CONNECT_TIMEOUT,
        "socket_timeout": ARCHIVER_REDIS_SOCKET_TIMEOUT,
    }
    try:
        client = connect_redis(url, cluster=cluster, **options)
    except redis.RedisError as error:
        if not ping:  # --loop: start anyway, the loop backs off until Redis answers
            return connect_redis(url, cluster=bool(cluster), **options)
        raise CliError(f"Redis (REDIS_URL) did not answer: {error}") from error
    if ping:
        try:
            client.ping()
        except redis.RedisError as error:
            client.close()
            raise CliError(f"Redis (REDIS_URL) did not answer: {error}") from error
    return client


@app.command()
def archive(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit (backfills).")] = False,
    loop: Annotated[bool, typer.Option("--loop", help="Run until SIGINT/SIGTERM.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 0 if a live archiver's heartbeat exists.")
    ] = False,
    window_minutes: Annotated[
        int, typer.Option("--window", min=1, help="Archive keys expiring within this (minutes).")
    ] = 120,
    interval_seconds: Annotated[
        int, typer.Option("--interval", min=1, help="Seconds between passes (--loop).")
    ] = 300,
    batch_rows: Annotated[
        int, typer.Option(min=1, max=1000, help="Conversations per upsert request.")
    ] = 200,
    json_output: JsonFlag = None,
) -> None:
    """Archive conversations from Redis to Supabase before their TTL.

    Takes exactly one mode.

    --once: one pass, which also flushes the events outbox, then the report. Exit 1 if a
    conversation could not be archived, or if SIGINT/SIGTERM cut the pass short (it stops
    after the current batch).

    --loop: a pass every --interval until SIGINT/SIGTERM, which finish or release the current
    batch and exit 0.

    --check: a probe for health checks. Exit 0 when an archiver wrote its heartbeat recently,
    else 1.
    """
    if sum((once, loop, check)) != 1:
        raise typer.BadParameter("pass exactly one of --once, --loop or --check", param_hint="mode")
    from ._settings import load_settings
    from .archive import ArchiverConfig, ConversationArchiver

    if check:
        settings = load_settings(env_dir=_options.env_dir)
        url = settings.redis_url.get_secret_value() if settings.redis_url else None
        redis_client = _archiver_redis(url, settings.redis_cluster, ping=True)
        try:
            _archive_check(redis_client, json_output)
        finally:
            redis_client.close()
        return
    config = ArchiverConfig(
        window=timedelta(minutes=window_minutes),
        interval=timedelta(seconds=interval_seconds),
        batch_rows=batch_rows,
    )
    with _client() as client:
        # --loop backs off while Redis is down; --once fails at once, in one line
        cluster = load_settings(env_dir=_options.env_dir).redis_cluster
        redis_client = _archiver_redis(client.redis_url, cluster, ping=once)
        try:
            archiver = ConversationArchiver(client, redis_client, config=config)
            if once:
                _archive_once(client, archiver, json_output)
            else:
                _archive_loop(archiver, json_output)
        finally:
            redis_client.close()


def _archive_check(redis_client: RedisClient, json_output: bool | None) -> None:
    from .archive import check_health

    beats = check_health(redis_client).heartbeats
    if _want_json(json_output):
        _print_json({"alive": len(beats), "heartbeats": beats})
    elif beats:
        out.print(f"{len(beats)} archiver(s) alive")
        for beat in beats:
            out.print(
                f"  {escape(str(beat.get('worker')))}  at {escape(str(beat.get('at')))}: "
                f"{escape(str(beat.get('last_pass')))}"
            )
    if not beats:
        err.print("no archiver heartbeat found: no archiver has completed a pass recently")
        raise typer.Exit(1)


@contextlib.contextmanager
def _stop_on_signals(archiver: ConversationArchiver) -> Iterator[list[str]]:
    """While inside, SIGINT/SIGTERM ask ``archiver`` to stop after its current batch.

    Yields a list that receives the names of the signals received.
    """
    received: list[str] = []

    def handler(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        archiver.stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _archive_once(
    client: IdentityClient, archiver: ConversationArchiver, json_output: bool | None
) -> None:
    with _stop_on_signals(archiver) as received:
        if _stderr_is_terminal():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            with Progress(
                TextColumn("archiving"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err.console,
                transient=True,
            ) as bar:
                task = bar.add_task("archive", total=None)
                report = archiver.run_once(
                    progress=lambda done, found: bar.update(task, completed=done, total=found)
                )
        else:
            report = archiver.run_once()
        events = client.flush_events()  # as each --loop pass does
    if _want_json(json_output):
        _print_json(
            {
                **report.as_dict(),
                "events": events.model_dump(mode="json"),
                "interrupted": bool(received),
            }
        )
    else:
        out.print(_report_sentence(report) + f" in {report.seconds:.1f}s")
        out.print(f"events: {_flush_sentence(events)}")
        for cid, reason in report.failed.items():
            err.print(f"failed {escape(cid)}: {escape(reason)}")
        if report.failed_count > len(report.failed):
            more = report.failed_count - len(report.failed)
            err.print(f"... and {more} more, with their reasons in identity:archive:dead")
    if received:
        err.print(
            f"{received[0]}: the pass stopped after its current batch; run it again to finish"
        )
    if report.failed or received:
        raise typer.Exit(1)


def _report_sentence(report: ArchiveReport) -> str:
    return (
        f"found {report.found}, archived {report.archived}, re-archived {report.rearchived}, "
        f"unchanged {report.unchanged}, unlinked {report.unlinked}, linked {report.linked}, "
        f"failed {report.failed_count}"
    )


def _archive_loop(archiver: ConversationArchiver, json_output: bool | None) -> None:
    import asyncio

    if not _options.debug:
        _configure_logging(logging.INFO)  # a worker logs each pass

    def request_stop(signame: str) -> Callable[[], None]:
        def handler() -> None:
            err.print(f"{signame}: stopping after the current batch")
            archiver.stop()

        return handler

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, request_stop(sig.name))
        await archiver.run_forever()

    err.print(
        f"archiver {escape(archiver.worker_id)} running every "
        f"{archiver.config.interval.total_seconds():.0f}s; SIGINT/SIGTERM to stop"
    )
    asyncio.run(run())
    totals = archiver.totals
    err.print(f"stopped: {_report_sentence(totals)}")
    if _want_json(json_output):
        _print_json(totals.as_dict())


# ------------------------------------------------------------------------------------------------
# stats and maintain
# ------------------------------------------------------------------------------------------------


def _parse_as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError as error:
        raise typer.BadParameter(
            f"{value!r} is not an ISO-8601 time (e.g. 2026-11-28T12:00:00Z)", param_hint="--as-of"
        ) from error
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@app.command()
def stats(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="End of the 24 h / 30 day windows (ISO-8601; default now)."),
    ] = None,
    json_output: JsonFlag = None,
) -> None:
    """Archival health, user growth, storage; the archivers' stats.

    On a terminal: tables with sparklines of conversations archived per hour (24 h) and new
    users per day (30 days). Otherwise JSON: {"database": …, "archiver": … or null}. Without
    REDIS_URL, or when Redis does not answer, the database part is still shown and the
    archiver part is null (with the reason on stderr).
    """
    import redis

    from ._cli_render import render_stats
    from ._monitoring import read_archiver_stats
    from ._settings import load_settings

    when = _parse_as_of(as_of)
    with _client() as client:
        database = client.get_stats(as_of=when)
        redis_url = client.redis_url
    archiver = None
    note: str | None = None
    if redis_url is None:
        note = "REDIS_URL is not set: the archivers' counters were not read"
    else:
        cluster = load_settings(env_dir=_options.env_dir).redis_cluster
        redis_client = _archiver_redis(redis_url, cluster, ping=False)
        try:
            archiver = read_archiver_stats(redis_client)
        except redis.RedisError as error:
            note = f"Redis (REDIS_URL) did not answer: {error}"
        finally:
            redis_client.close()
    if _want_json(json_output):
        _print_json(
            {
                "database": database.model_dump(mode="json"),
                "archiver": archiver.model_dump(mode="json") if archiver else None,
            }
        )
        if note:
            err.print(escape(note))
        return
    out.print(render_stats(database, archiver, width=out.width, archiver_note=note))


@app.command()
def maintain(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would change; change nothing.")
    ] = False,
    events_older_than: Annotated[
        int,
        typer.Option("--events-older-than", min=1, help="Move events older than this many days."),
    ] = DEFAULT_EVENT_RETENTION_DAYS,
    unlinked_older_than: Annotated[
        int,
        typer.Option(
            "--unlinked-older-than",
            min=1,
            help="Delete conversations still unlinked this many days after archiving.",
        ),
    ] = DEFAULT_UNLINKED_RETENTION_DAYS,
    json_output: JsonFlag = None,
) -> None:
    """Move old events, delete stale unlinked conversations, ANALYZE.

    Each task runs batch by batch (one short transaction each), so a large backlog never holds
    long locks. Conversations with a user and recent events are never touched. pg_cron runs
    the same functions on a schedule where the database has it (see the docs: operations).
    """
    from ._cli_render import render_maintenance
    from ._monitoring import run_maintenance

    with _client() as client:
        if _stderr_is_terminal():
            with err.status("maintenance: moving old events") as status:

                def progress(task: str, rows: int) -> None:
                    status.update(f"maintenance: {task}, last batch {rows:,} rows")

                run = run_maintenance(
                    client,
                    dry_run=dry_run,
                    events_older_than_days=events_older_than,
                    unlinked_older_than_days=unlinked_older_than,
                    on_batch=progress,
                )
        else:
            run = run_maintenance(
                client,
                dry_run=dry_run,
                events_older_than_days=events_older_than,
                unlinked_older_than_days=unlinked_older_than,
            )
    if _want_json(json_output):
        _print_json(run.as_dict())
    else:
        out.print(render_maintenance(run))


# ------------------------------------------------------------------------------------------------
# redact-shop
# ------------------------------------------------------------------------------------------------


def _stdin_is_terminal() -> bool:
    """Whether stdin is a terminal (tests patch this to answer the confirmation)."""
    return sys.stdin.isatty()


@app.command("redact-shop")
def redact_shop(
    shop: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    json_output: JsonFlag = None,
) -> None:
    """Erase every copy of a shop's data (Shopify's shop/redact), then print the counts.

    Deletes the shop's user, archived conversations, events and archived events (one
    transaction, with an audit row holding only a keyed hash of the domain), and, when REDIS_URL
    is set, its merchant record, live conversations, outbox entries and dead letters. Running it
    again finds nothing. Asks for confirmation on a terminal; elsewhere --yes is required.
    """
    from ._validation import normalize_shop_domain

    domain = normalize_shop_domain(shop)
    if not yes:
        if not _stdin_is_terminal():
            raise CliError("redact-shop erases data: pass --yes when not on a terminal")
        typer.confirm(f"Erase every copy of {domain}'s data? This cannot be undone", abort=True)
    with _client() as client:
        result = client.redact_shop(domain)
    if _want_json(json_output):
        _print_json(result.model_dump(mode="json"))
        return
    wiped = result.redis
    out.print(
        f"{domain}: deleted {result.users} user, {result.conversations} archived conversations, "
        f"{result.events} events, {result.events_archive} archived events"
    )
    if wiped is None:
        out.print("Redis: not configured (REDIS_URL), nothing deleted there")
    else:
        out.print(
            f"Redis: {wiped.conversations} live conversations ({wiped.messages} messages), "
            f"{wiped.merchant_records} merchant record, {wiped.outbox_entries} outbox entries, "
            f"{wiped.dead_letters} dead letters; {wiped.keys} keys in all"
        )


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code (``sys.exit(main())``).

    Usage errors exit 2; the library's errors print one line on stderr and exit 1 (see
    :class:`_Group`), with the traceback only under ``--debug``.
    """
    _process.owns_logging = True
    try:
        app(args=argv, prog_name=PROG)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
