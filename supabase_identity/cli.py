"""The ``supabase-identity`` command line: doctor, users, history, export, events, archive.

Built on Typer (Click) and Rich. Every command reads its configuration like the library does
(environment, then ``.env.local``, then ``.env``; ``--env-dir`` picks the folder). Errors print
one line on stderr and exit 1 (2 for usage errors); ``--debug`` adds the traceback.

Output: tables on a terminal; JSON when ``--json`` is given or stdout is not a terminal, so
scripts can parse it without a flag.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TextIO

import redis
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._client import IdentityClient
from ._exceptions import ConfigError, IdentityError
from .archive import ArchiverConfig, ConversationArchiver
from .archive._archiver import HEARTBEAT_PREFIX

app = typer.Typer(
    name="supabase-identity",
    help="User identity, events and conversation history on Supabase (over HTTP).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
user_app = typer.Typer(help="Look up or create users.", no_args_is_help=True)
events_app = typer.Typer(help="The events outbox.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(events_app, name="events")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EnvDir = Annotated[
    Path | None,
    typer.Option("--env-dir", help="Folder with .env/.env.local (default: current folder)."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (default when not a terminal).")]


class _Options:
    env_dir: Path | None = None


_options = _Options()


@app.callback()
def _root(
    env_dir: EnvDir = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _options.env_dir = env_dir


def _client() -> IdentityClient:
    return IdentityClient.from_env(env_dir=_options.env_dir)


def _want_json(flag: bool) -> bool:
    return flag or not sys.stdout.isatty()


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


# ------------------------------------------------------------------------------------------------
# doctor
# ------------------------------------------------------------------------------------------------


def _check(name: str, fn: Callable[[], str]) -> tuple[str, bool, str]:
    try:
        return name, True, fn()
    except IdentityError as error:
        return name, False, str(error)
    except redis.RedisError as error:
        return name, False, f"{error} — check REDIS_URL and that Redis is running"


@app.command()
def doctor(json_output: JsonFlag = False) -> None:
    """Check configuration, gateway, key role, schema, SQL functions, RLS and Redis."""
    results: list[tuple[str, bool, str]] = []
    try:
        client = _client()
    except ConfigError as error:
        results.append(("configuration", False, str(error)))
        client = None
    if client is not None:
        with client:
            results.append(("configuration", True, f"SUPABASE_URL={client.base_url}"))
            results.append(_check("key", lambda: f"holds the {client.privilege.value} privilege"))
            health: dict[str, Any] = {}

            def reach() -> str:
                health.update(client.health())
                return "PostgREST answered through the gateway; schema `identity` is exposed"

            results.append(_check("gateway and schema", reach))
            if health:
                missing = health.get("missing_functions") or []
                results.append(
                    (
                        "SQL functions",
                        not missing,
                        "all present"
                        if not missing
                        else f"missing {', '.join(missing)} — run `supabase db push`",
                    )
                )
                no_rls = [t["name"] for t in health.get("tables", []) if not t.get("rls")]
                results.append(
                    (
                        "row level security",
                        not no_rls,
                        "enabled on every table"
                        if not no_rls
                        else f"DISABLED on {', '.join(no_rls)} — apply the migrations",
                    )
                )
            results.append(_check("redis", client.ping_redis))
    failed = [r for r in results if not r[1]]
    if _want_json(json_output):
        _print_json([{"check": n, "ok": ok, "detail": d} for n, ok, d in results])
    else:
        for name, ok, detail in results:
            mark = "[green]pass[/green]" if ok else "[red]FAIL[/red]"
            out.print(f"{mark}  {name:<20} {detail}")
    if failed:
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
    json_output: JsonFlag = False,
) -> None:
    """Return the shop's usr_… id, creating the user on first sight."""
    with _client() as client:
        user_id, is_new = client.get_or_create_user(
            shop, email=email, name=name, shopify_id=shopify_id
        )
    if _want_json(json_output):
        _print_json({"user_id": user_id, "is_new": is_new})
    else:
        out.print(f"{user_id}  ({'new user' if is_new else 'existing user'})")


@user_app.command("show")
def user_show(user_id: str, json_output: JsonFlag = False) -> None:
    """Print a user's profile with conversation and event stats."""
    with _client() as client:
        profile = client.get_user_profile(user_id)
    if _want_json(json_output):
        _print_json(profile.model_dump(mode="json"))
        return
    table = Table(show_header=False, box=None)
    for key, value in profile.model_dump(mode="json", exclude={"stats", "metadata"}).items():
        table.add_row(key, str(value))
    for key, value in profile.stats.model_dump(mode="json").items():
        table.add_row(f"stats.{key}", str(value))
    out.print(table)


@app.command()
def history(
    user_id: str,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    cursor: Annotated[str | None, typer.Option(help="Keyset cursor from a previous page")] = None,
    json_output: JsonFlag = False,
) -> None:
    """List a user's archived conversations, newest first."""
    with _client() as client:
        page = client.get_user_conversations(user_id, limit=limit, offset=offset, cursor=cursor)
    if _want_json(json_output):
        _print_json(page.model_dump(mode="json"))
        return
    table = Table(title=f"{user_id}: {page.total} conversations")
    for column in ("id", "workflow", "started", "messages"):
        table.add_column(column)
    for item in page.items:
        table.add_row(
            str(item.id),
            item.workflow_name or "",
            item.started_at.strftime("%Y-%m-%d %H:%M"),
            str(item.message_count),
        )
    out.print(table)
    if page.next_cursor:
        out.print(f"next page: --cursor {page.next_cursor}")


class ExportFormat(StrEnum):
    json = "json"
    jsonl = "jsonl"


def _export_records(client: IdentityClient, user_id: str) -> Iterator[dict[str, Any]]:
    yield {"type": "profile", **client.get_user_profile(user_id).model_dump(mode="json")}
    for summary in client.iter_user_conversations(user_id):
        conversation = client.get_conversation(user_id, str(summary.id))
        yield {"type": "conversation", **conversation.model_dump(mode="json")}
    for event in client.iter_user_events(user_id):
        yield {"type": "event", **event}


@app.command()
def export(
    user_id: str,
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="json or jsonl")
    ] = ExportFormat.json,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default stdout)")
    ] = None,
) -> None:
    """Export a user's profile, conversations (with messages) and events."""
    with _client() as client:
        records = _export_records(client, user_id)
        handle: TextIO = output.open("w", encoding="utf-8") if output else sys.stdout
        try:
            if fmt is ExportFormat.jsonl:
                for record in records:
                    handle.write(json.dumps(record, default=str) + "\n")
            else:
                document: dict[str, Any] = {"profile": None, "conversations": [], "events": []}
                for record in records:
                    kind = record.pop("type")
                    if kind == "profile":
                        document["profile"] = record
                    else:
                        document[f"{kind}s"].append(record)
                handle.write(json.dumps(document, indent=2, default=str) + "\n")
        finally:
            if output:
                handle.close()
    if output:
        err.print(f"exported {user_id} to {output}")


@events_app.command("flush")
def events_flush(json_output: JsonFlag = False) -> None:
    """Deliver events waiting in the outbox; exit 1 if some remain undelivered."""
    with _client() as client:
        result = client.flush_events()
    if _want_json(json_output):
        _print_json(result.model_dump(mode="json"))
    else:
        out.print(
            f"delivered {result.delivered}, duplicates {result.duplicates}, "
            f"dead-lettered {result.dead_lettered}, remaining {result.remaining}"
        )
    if result.remaining:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------
# archive
# ------------------------------------------------------------------------------------------------


def _redis_from(client: IdentityClient) -> redis.Redis:
    url = client.redis_url
    if not url:
        raise ConfigError(
            "REDIS_URL is not set: the archiver reads conversations from Redis "
            "(e.g. REDIS_URL=redis://127.0.0.1:6379/0)"
        )
    return redis.Redis.from_url(url)


@app.command()
def archive(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit (backfills).")] = False,
    loop: Annotated[bool, typer.Option("--loop", help="Run until SIGINT/SIGTERM.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 0 if an archiver heartbeat is fresh.")
    ] = False,
    window_minutes: Annotated[int, typer.Option("--window", min=1, help="Minutes")] = 120,
    interval_seconds: Annotated[int, typer.Option("--interval", min=1, help="Seconds")] = 300,
    batch_rows: Annotated[int, typer.Option(min=1, max=5000)] = 200,
    json_output: JsonFlag = False,
) -> None:
    """Archive conversations from Redis to Supabase before their TTL."""
    if sum((once, loop, check)) != 1:
        raise typer.BadParameter("pass exactly one of --once, --loop or --check")
    config = ArchiverConfig(
        window=timedelta(minutes=window_minutes),
        interval=timedelta(seconds=interval_seconds),
        batch_rows=batch_rows,
    )
    with _client() as client:
        redis_client = _redis_from(client)
        try:
            if check:
                _archive_check(redis_client)
                return
            archiver = ConversationArchiver(client, redis_client, config=config)
            if once:
                _archive_once(archiver, json_output)
            else:
                _archive_loop(archiver)
        finally:
            redis_client.close()


def _archive_check(redis_client: redis.Redis) -> None:
    beats = [key for key in redis_client.scan_iter(match=HEARTBEAT_PREFIX + "*", count=100)]
    if not beats:
        err.print("no archiver heartbeat found")
        raise typer.Exit(1)
    out.print(f"{len(beats)} archiver(s) alive")


def _archive_once(archiver: ConversationArchiver, json_output: bool) -> None:
    if sys.stderr.isatty():
        with Progress(
            TextColumn("archiving"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("archive", total=None)
            report = archiver.run_once(
                progress=lambda done, found: bar.update(task, completed=done, total=found)
            )
    else:
        report = archiver.run_once()
    if _want_json(json_output):
        _print_json(report.as_dict())
    else:
        out.print(
            f"found {report.found}, archived {report.archived}, re-archived "
            f"{report.rearchived}, unchanged {report.unchanged}, unlinked {report.unlinked}, "
            f"linked {report.linked}, failed {len(report.failed)} in {report.seconds:.1f}s"
        )
        for cid, reason in report.failed.items():
            err.print(f"failed {cid}: {reason}")
    if report.failed:
        raise typer.Exit(1)


def _archive_loop(archiver: ConversationArchiver) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, archiver.stop)
        await archiver.run_forever()

    err.print(f"archiver {archiver.worker_id} running; Ctrl-C to stop")
    asyncio.run(run())
    totals = archiver.totals
    err.print(
        f"stopped: archived {totals.archived}, re-archived {totals.rearchived}, "
        f"failed {len(totals.failed)}"
    )


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code.

    Typer handles usage errors (exit 2) and ``typer.Exit``; the library's own errors become one
    line on stderr and exit 1, with the traceback only under ``--debug``.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, prog_name="supabase-identity")
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except (IdentityError, redis.RedisError, OSError) as error:
        if "--debug" in args:
            traceback.print_exc()
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"supabase-identity: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
