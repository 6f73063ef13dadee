"""The CLI's formatting and error handling, fast: Typer's CliRunner with respx, no stack.

What runs against the real stack (subprocesses of the console script) is in
tests/integration/test_cli.py; here each answer of the gateway is chosen by the test.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from typer.testing import CliRunner, Result

from supabase_identity import ArchiveReport, ConversationArchiver, IdentityClient, __version__, cli
from supabase_identity._constants import REQUIRED_FUNCTIONS

from .conftest import ANON_KEY, BASE_URL, CLI_ENV, JWT_SECRET, SERVICE_KEY, USER_ID, SleepRecorder

SHOP = "cool-shop.myshopify.com"

Invoke = Callable[..., Result]


@pytest.fixture
def invoke(
    api: respx.MockRouter,
    sleeps: SleepRecorder,
    empty_env_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Invoke:
    """Run the app in-process with a service key on the respx-mocked gateway, no Redis.

    ``invoke(*args, env={...})`` overrides variables (``None`` unsets one);
    ``invoke(..., tty=True)`` makes the CLI believe stdout is a terminal (``stderr_tty``: stderr).
    """
    runner = CliRunner()

    def run(
        *args: str,
        env: Mapping[str, str | None] | None = None,
        tty: bool = False,
        stderr_tty: bool = False,
    ) -> Result:
        monkeypatch.setattr(cli, "_stdout_is_terminal", lambda: tty)
        monkeypatch.setattr(cli, "_stderr_is_terminal", lambda: stderr_tty)
        environment: dict[str, str | None] = {**CLI_ENV, "COLUMNS": "120"}
        environment.update(env or {})
        return runner.invoke(cli.app, ["--env-dir", str(empty_env_dir), *args], env=environment)

    return run


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("supabase-identity: error: ")
    return lines[0]


def profile_json(user_id: str = USER_ID, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "user_id": user_id,
        "shop_domain": SHOP,
        "shopify_id": None,
        "email": "owner@example.com",
        "name": "[bold]Ada[/bold]",  # Rich markup must be shown, not interpreted
        "metadata": {"plan": "basic"},
        "created_at": "2026-01-01T00:00:00+00:00",
        "last_seen": "2026-01-02T00:00:00+00:00",
        "stats": {"total_conversations": 2, "total_messages": 5, "total_events": 1},
    }
    data.update(changes)
    return data


def conversation_rows(n: int, *, messages: bool = False) -> list[dict[str, Any]]:
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    rows = []
    for i in range(n):
        row: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "user_id": USER_ID,
            "workflow_name": f"[red]flow-{i}",
            "started_at": (base - timedelta(minutes=i)).isoformat(),
            "message_count": i + 1,
        }
        if messages:
            row["messages"] = [{"sender": "user", "content": f"m{i}.{j}"} for j in range(i + 1)]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------
# output: JSON unless stdout is a terminal, --json/--no-json to force
# ------------------------------------------------------------------------------------------------


def test_get_or_create_prints_json_when_not_a_terminal(
    invoke: Invoke, api: respx.MockRouter
) -> None:
    route = api.post("/rpc/get_or_create_user").respond(
        200, json={"user_id": USER_ID, "is_new": True}
    )
    result = invoke("user", "get-or-create", " HTTPS://Cool-Shop.myshopify.com/ ", "--name", "Ada")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"user_id": USER_ID, "is_new": True, "shop_domain": SHOP}
    sent = json.loads(route.calls.last.request.content)
    assert sent["shop_domain"] == SHOP
    assert sent["name"] == "Ada"


@pytest.mark.parametrize(
    ("flags", "tty", "as_json"),
    [
        ((), True, False),
        ((), False, True),
        (("--json",), True, True),
        (("--no-json",), False, False),
    ],
)
def test_terminal_detection_and_overrides(
    invoke: Invoke, api: respx.MockRouter, flags: tuple[str, ...], tty: bool, as_json: bool
) -> None:
    api.post("/rpc/get_or_create_user").respond(200, json=[{"user_id": USER_ID, "is_new": False}])
    result = invoke("user", "get-or-create", SHOP, *flags, tty=tty)
    assert result.exit_code == 0, result.stderr
    if as_json:
        assert json.loads(result.stdout)["is_new"] is False
    else:
        assert result.stdout == f"{USER_ID}  {SHOP}  (existing user)\n"


def test_user_show_table_shows_values_literally(invoke: Invoke, api: respx.MockRouter) -> None:
    api.post("/rpc/get_user_profile").respond(200, json=profile_json())
    result = invoke("user", "show", USER_ID, tty=True)
    assert result.exit_code == 0, result.stderr
    assert "[bold]Ada[/bold]" in result.stdout
    assert '{"plan": "basic"}' in result.stdout
    assert "stats.total_messages" in result.stdout
    as_json = json.loads(invoke("user", "show", USER_ID).stdout)
    assert as_json["stats"]["total_conversations"] == 2
    assert as_json["name"] == "[bold]Ada[/bold]"


def test_history_table_on_a_terminal_and_json_otherwise(
    invoke: Invoke, api: respx.MockRouter
) -> None:
    rows = conversation_rows(3)
    api.get("/conversations").respond(200, json=rows[:2], headers={"Content-Range": "0-1/3"})
    table = invoke("history", USER_ID, "--limit", "2", tty=True)
    assert table.exit_code == 0, table.stderr
    assert f"{USER_ID}: 3 conversations (showing 1-2)" in table.stdout
    for row in rows[:2]:
        assert row["id"] in table.stdout
    assert "[red]flow-0" in table.stdout
    assert "2026-01-01 12:00" in table.stdout
    assert "next page: supabase-identity history" in table.stdout
    assert "{" not in table.stdout

    page = json.loads(invoke("history", USER_ID, "--limit", "2").stdout)
    assert [item["id"] for item in page["items"]] == [r["id"] for r in rows[:2]]
    assert page["total"] == 3
    assert page["next_cursor"]


def test_history_empty_checks_the_user_exists(invoke: Invoke, api: respx.MockRouter) -> None:
    api.get("/conversations").respond(200, json=[], headers={"Content-Range": "*/0"})
    profile = api.post("/rpc/get_user_profile").respond(200, json=None)
    line = one_line_error(invoke("history", USER_ID))
    assert f"user {USER_ID} not found" in line
    assert profile.called

    profile.respond(200, json=profile_json())
    result = invoke("history", USER_ID, tty=True)
    assert result.exit_code == 0
    assert result.stdout.strip() == f"{USER_ID}: 0 conversations"


def search_answer(n: int, total: int, offset: int = 0) -> dict[str, Any]:
    hits = [
        {
            **row,
            "rank": 0.5 / (i + 1),
            "snippet": f"my <mark>refund</mark> #{i} &amp; the &lt;label&gt;",
        }
        for i, row in enumerate(conversation_rows(n))
    ]
    return {"conversations": hits, "total": total, "limit": n, "offset": offset}


def test_history_search_prints_hits_with_snippets(invoke: Invoke, api: respx.MockRouter) -> None:
    route = api.post("/rpc/search_conversations").respond(200, json=search_answer(2, total=5))
    result = invoke("history", USER_ID, "--search", '"refund" -x', "--limit", "2", tty=True)
    assert result.exit_code == 0, result.stderr
    assert json.loads(route.calls.last.request.content) == {
        "user_id": USER_ID,
        "query": '"refund" -x',
        "max_results": 2,
        "skip": 0,
    }
    lines = result.stdout.splitlines()
    assert lines[0] == f"{USER_ID}: 5 conversations match '\"refund\" -x' (showing 1-2)"
    assert "  my refund #0 & the <label>" in lines  # tags gone, entities decoded (plain text)
    assert "[red]flow-1" in result.stdout and "rank 0.250" in result.stdout  # markup literal
    assert lines[-1] == (
        f"next page: supabase-identity history {USER_ID} --search '\"refund\" -x' "
        "--limit 2 --offset 2"
    )

    as_json = json.loads(invoke("history", USER_ID, "--search", "refund").stdout)
    assert as_json["total"] == 5
    assert as_json["items"][0]["snippet"] == "my <mark>refund</mark> #0 &amp; the &lt;label&gt;"


def test_history_search_nothing_found_and_bad_arguments(
    invoke: Invoke, api: respx.MockRouter
) -> None:
    api.post("/rpc/search_conversations").respond(200, json=search_answer(0, total=0))
    api.post("/rpc/get_user_profile").respond(200, json=profile_json())
    result = invoke("history", USER_ID, "--search", "the", tty=True)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"{USER_ID}: 0 conversations match the"

    line = one_line_error(invoke("history", USER_ID, "--search", "   "))
    assert "query must not be empty" in line
    usage = invoke("history", USER_ID, "--search", "refund", "--cursor", "abc")
    assert usage.exit_code == 2
    assert "--search pages with --offset" in usage.stderr


def test_snippet_highlights_only_the_marked_words() -> None:
    from supabase_identity._cli_render import MATCH_STYLE, snippet_text

    text = snippet_text("a <mark>refund</mark> &amp; <mark>ship&lt;</mark>ped &quot;x&quot;")
    assert text.plain == 'a refund & ship<ped "x"'
    marked = [text.plain[span.start : span.end] for span in text.spans]
    assert marked == ["refund", "ship<"]
    assert all(span.style == MATCH_STYLE for span in text.spans)
    assert snippet_text("no match here").spans == []


# ------------------------------------------------------------------------------------------------
# errors: one line, exit 1; traceback only with --debug; usage errors exit 2
# ------------------------------------------------------------------------------------------------


def test_validation_error_is_one_line_naming_the_rule(invoke: Invoke) -> None:
    line = one_line_error(invoke("user", "get-or-create", "shop.example.com"))
    assert "is not a Shopify shop domain: expected '<name>.myshopify.com'" in line


def test_backend_down_is_one_line_and_debug_adds_the_traceback(
    invoke: Invoke, api: respx.MockRouter, sleeps: SleepRecorder, empty_env_dir: Path
) -> None:
    api.post("/rpc/get_user_profile").mock(side_effect=httpx.ConnectError("refused"))
    line = one_line_error(invoke("user", "show", USER_ID))
    assert "Could not reach Supabase" in line
    assert len(sleeps.delays) == 3  # the client's retries ran (instantly) before giving up

    result = invoke("--debug", "user", "show", USER_ID)
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "APIConnectionError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("supabase-identity: error: Could not reach")

    from_env = invoke("user", "show", USER_ID, env={"SUPABASE_IDENTITY_DEBUG": "1"})
    assert "Traceback" in from_env.stderr


def test_unexpected_exception_is_one_line_internal_error(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(self: IdentityClient, user_id: str) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(IdentityClient, "get_user_profile", boom)
    line = one_line_error(invoke("user", "show", USER_ID))
    assert line == (
        "supabase-identity: error: internal error: RuntimeError: boom "
        "(run with --debug before the command for the traceback)"
    )


def test_missing_configuration_is_one_line(invoke: Invoke) -> None:
    line = one_line_error(invoke("user", "show", USER_ID, env={"SUPABASE_URL": None}))
    assert "SUPABASE_URL is not set" in line


@pytest.mark.parametrize(
    "args",
    [
        ("archive",),
        ("archive", "--once", "--loop"),
        ("archive", "--check", "--once", "--loop"),
        ("history", USER_ID, "--limit", "101"),
        ("export", USER_ID, "--format", "csv"),
        ("user", "show", USER_ID, "--debug"),
        ("nope",),
    ],
)
def test_usage_errors_exit_2(invoke: Invoke, args: tuple[str, ...]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr


def test_version(invoke: Invoke) -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"supabase-identity {__version__}\n"


def test_main_returns_the_exit_code(
    api: respx.MockRouter, sleeps: SleepRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # main() configures the package logger as the console script does: undo it afterwards, or
    # later tests' caplog no longer sees the package's records.
    logger = logging.getLogger("supabase_identity")
    monkeypatch.setattr(cli, "_process", cli._Process())
    monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    monkeypatch.setattr(logger, "propagate", logger.propagate)
    monkeypatch.setattr(logger, "level", logger.level)
    assert cli.main(["--version"]) == 0
    assert cli.main(["archive"]) == 2


# ------------------------------------------------------------------------------------------------
# doctor
# ------------------------------------------------------------------------------------------------


def health(missing: tuple[str, ...] = (), no_rls: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "functions": [f for f in REQUIRED_FUNCTIONS if f not in missing],
        "tables": [
            {"name": name, "rls": name not in no_rls}
            for name in ("conversations", "events", "users")
        ],
    }


def checks(result: Result) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_doctor_all_pass_with_redis(
    invoke: Invoke, api: respx.MockRouter, redis_server: str
) -> None:
    api.post("/rpc/health").respond(200, json=health())
    result = invoke("doctor", env={"REDIS_URL": redis_server})
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [c["status"] for c in report["checks"]] == ["pass"] * 7
    assert all(c["fix"] is None for c in report["checks"])

    text = invoke("doctor", env={"REDIS_URL": redis_server}, tty=True)
    assert text.exit_code == 0
    assert [line.split()[0] for line in text.stdout.splitlines()] == ["pass"] * 7


def test_doctor_missing_functions_rls_and_redis(invoke: Invoke, api: respx.MockRouter) -> None:
    api.post("/rpc/health").respond(200, json=health(("record_events",), ("events",)))
    result = invoke("doctor")
    assert result.exit_code == 1
    by_name = checks(result)
    assert by_name["SQL functions"]["status"] == "fail"
    assert by_name["SQL functions"]["detail"] == "missing: record_events"
    assert "supabase db push" in by_name["SQL functions"]["fix"]
    assert by_name["RLS"]["status"] == "fail"
    assert "DISABLED on events" in by_name["RLS"]["detail"]
    assert by_name["redis"]["status"] == "fail"
    assert "REDIS_URL is not set" in by_name["redis"]["detail"]
    assert by_name["gateway"]["status"] == "pass"

    text = invoke("doctor", "--no-json")
    failing = [line for line in text.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 3
    assert all(" — fix: " in line for line in failing)


@pytest.mark.parametrize(
    ("response", "failing", "fix_fragment"),
    [
        (httpx.Response(503), "gateway", "check SUPABASE_URL"),
        (
            httpx.Response(406, json={"code": "PGRST106", "message": "Invalid schema: identity"}),
            "schema",
            "Exposed schemas",
        ),
        (
            httpx.Response(404, json={"code": "PGRST202", "message": "Could not find health"}),
            "SQL functions",
            "supabase db push",
        ),
        (
            httpx.Response(401, json={"code": "PGRST301", "message": "JWSError"}),
            "schema",
            "SUPABASE_SERVICE_ROLE_KEY",
        ),
        (httpx.Response(404, text="<html>not here</html>"), "gateway", "SUPABASE_URL"),
    ],
)
def test_doctor_names_the_failing_layer_and_its_fix(
    invoke: Invoke,
    api: respx.MockRouter,
    response: httpx.Response,
    failing: str,
    fix_fragment: str,
) -> None:
    api.post("/rpc/health").mock(return_value=response)
    result = invoke("doctor")
    assert result.exit_code == 1
    by_name = checks(result)
    failed = [name for name, c in by_name.items() if c["status"] == "fail"]
    assert failed == [failing, "redis"]
    assert fix_fragment in by_name[failing]["fix"]
    later = list(by_name)[list(by_name).index(failing) + 1 : -1]
    assert all(by_name[name]["status"] == "skip" for name in later)


def test_doctor_with_the_anon_key(invoke: Invoke, api: respx.MockRouter) -> None:
    api.post("/rpc/health").respond(
        401, json={"code": "42501", "message": "permission denied for schema identity"}
    )
    result = invoke("doctor", env={"SUPABASE_SERVICE_ROLE_KEY": None})
    assert result.exit_code == 1
    by_name = checks(result)
    assert by_name["key"]["status"] == "fail"
    assert by_name["key"]["detail"].startswith("public (anon) key")
    assert "SUPABASE_SERVICE_ROLE_KEY" in by_name["key"]["fix"]
    assert by_name["gateway"]["status"] == "pass"
    assert {by_name[n]["status"] for n in ("schema", "SQL functions", "RLS")} == {"skip"}


def test_doctor_without_url(invoke: Invoke) -> None:
    result = invoke("doctor", env={"SUPABASE_URL": None})
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["checks"][0]["status"] == "fail"
    assert [c["status"] for c in report["checks"][1:]] == ["skip"] * 6


# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------


def mock_user_data(
    api: respx.MockRouter, rows: list[dict[str, Any]], events: list[dict[str, Any]]
) -> None:
    api.post("/rpc/get_user_profile").respond(200, json=profile_json())
    by_id = {row["id"]: row for row in rows}

    def conversations(request: httpx.Request) -> httpx.Response:
        wanted = request.url.params.get("or")
        if wanted is not None:  # get_conversation: or=(id.eq.<uuid>,source_id.eq.<uuid>)
            return httpx.Response(200, json=[by_id[wanted[len("(id.eq.") :].split(",")[0]]])
        summaries = [{k: v for k, v in r.items() if k != "messages"} for r in rows]
        return httpx.Response(200, json=summaries)

    api.get("/conversations").mock(side_effect=conversations)
    api.get("/events").respond(200, json=events)


EVENTS = [
    {
        "id": str(uuid.uuid4()),
        "user_id": USER_ID,
        "event_type": "oauth_complete",
        "event_data": {"first_time": True},
        "created_at": "2026-01-01T00:00:00+00:00",
    }
]


@pytest.mark.parametrize(
    ("n_conversations", "events"), [(2, EVENTS), (0, EVENTS), (2, []), (0, [])]
)
def test_export_json_is_one_valid_document(
    invoke: Invoke,
    api: respx.MockRouter,
    n_conversations: int,
    events: list[dict[str, Any]],
) -> None:
    rows = conversation_rows(n_conversations, messages=True)
    mock_user_data(api, rows, events)
    result = invoke("export", USER_ID, tty=True)  # a document, whatever stdout is
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert list(document) == ["profile", "conversations", "events"]
    assert document["profile"]["user_id"] == USER_ID
    assert [c["id"] for c in document["conversations"]] == [r["id"] for r in rows]
    assert [len(c["messages"]) for c in document["conversations"]] == [1, 2][:n_conversations]
    assert document["events"] == events


def test_export_jsonl_to_a_file(invoke: Invoke, api: respx.MockRouter, tmp_path: Path) -> None:
    rows = conversation_rows(2, messages=True)
    mock_user_data(api, rows, EVENTS)
    target = tmp_path / "out.jsonl"
    result = invoke("export", USER_ID, "--format", "jsonl", "-o", str(target))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"exported {USER_ID} to {target}: 2 conversations (3 messages), 1 events"
    )
    records = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [r["type"] for r in records] == ["profile", "conversation", "conversation", "event"]
    assert records[1]["messages"] == rows[0]["messages"]
    assert records[3]["event_type"] == "oauth_complete"


def test_export_failure_leaves_no_partial_file(
    invoke: Invoke, api: respx.MockRouter, tmp_path: Path
) -> None:
    api.post("/rpc/get_user_profile").respond(200, json=profile_json())
    api.get("/conversations").respond(500)
    folder = tmp_path / "exports"
    folder.mkdir()
    line = one_line_error(invoke("export", USER_ID, "-o", str(folder / "out.json")))
    assert "HTTP 500" in line
    assert list(folder.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# events and archive without Redis
# ------------------------------------------------------------------------------------------------


def test_export_into_a_missing_folder(invoke: Invoke, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "out.json"
    line = one_line_error(invoke("export", USER_ID, "-o", str(target)))
    assert line.endswith(f"the folder {target.parent} does not exist")


def test_events_flush_needs_redis(invoke: Invoke) -> None:
    assert "REDIS_URL is not set" in one_line_error(invoke("events", "flush"))


@pytest.mark.parametrize("mode", ["--once", "--check"])
def test_archive_needs_redis(invoke: Invoke, mode: str) -> None:
    assert "REDIS_URL is not set" in one_line_error(invoke("archive", mode))


def test_archive_check_with_redis_down(invoke: Invoke) -> None:
    line = one_line_error(invoke("archive", "--check", env={"REDIS_URL": "redis://127.0.0.1:1/0"}))
    assert "Redis (REDIS_URL) did not answer" in line


@pytest.mark.parametrize("terminal", [True, False])
def test_archive_once_on_an_empty_redis(
    invoke: Invoke, redis_client: Any, redis_server: str, terminal: bool
) -> None:
    """Nothing to archive: no request is sent; the progress-bar path runs on a terminal."""
    result = invoke("archive", "--once", env={"REDIS_URL": redis_server}, stderr_tty=terminal)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["found"], report["archived"], report["failed"]) == (0, 0, {})
    assert report["events"]["delivered"] == 0
    check = invoke("archive", "--check", env={"REDIS_URL": redis_server})
    assert check.exit_code == 1  # a one-off pass writes no liveness heartbeat
    assert json.loads(check.stdout)["alive"] == 0


def test_archive_once_stops_after_the_batch_on_sigterm(
    invoke: Invoke, redis_client: Any, redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM during --once asks the archiver to stop; the report is printed, exit 1."""
    stopped: list[bool] = []

    def run_once(self: ConversationArchiver, **_: object) -> ArchiveReport:
        os.kill(os.getpid(), signal.SIGTERM)  # handled: not the default "terminate"
        stopped.append(self.stop_requested)
        return ArchiveReport(found=3, archived=1)

    monkeypatch.setattr(ConversationArchiver, "run_once", run_once)
    previous = signal.getsignal(signal.SIGTERM)
    result = invoke("archive", "--once", env={"REDIS_URL": redis_server})
    assert stopped == [True]
    assert signal.getsignal(signal.SIGTERM) == previous  # restored
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["found"], report["archived"], report["interrupted"]) == (3, 1, True)
    assert "SIGTERM: the pass stopped after its current batch" in result.stderr


# ------------------------------------------------------------------------------------------------
# help: paragraphs, rewrapped to the terminal
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["archive"], ["export"], ["doctor"], ["events", "flush"], ["stats"], ["maintain"]]
)
def test_help_is_paragraphs_rewrapped_to_the_terminal(command: list[str]) -> None:
    """Each docstring paragraph is one line on a wide terminal: no break where the source
    file's line happened to end, mid-sentence."""
    wide = CliRunner().invoke(cli.app, [*command, "--help"], terminal_width=400)
    assert wide.exit_code == 0, wide.output
    head = wide.output.split("Options:")[0].split("Arguments:")[0]
    paragraphs = [p.strip() for p in head.split("\n\n")[1:]]
    description = [p for p in paragraphs if p]
    assert description, wide.output
    for text in description:
        assert "\n" not in text, f"a paragraph of `{' '.join(command)} --help` is wrapped:\n{text}"
        assert text.endswith((".", ":")), text
    narrow = CliRunner().invoke(cli.app, [*command, "--help"], terminal_width=60)
    assert max(len(line) for line in narrow.output.splitlines()) <= 60


def test_doctor_says_where_each_setting_came_from(
    invoke: Invoke, api: respx.MockRouter, empty_env_dir: Path
) -> None:
    (empty_env_dir / ".env.local").write_text(f"IDENTITY_SUPABASE_SERVICE_ROLE_KEY={SERVICE_KEY}\n")
    api.post("/rpc/health").respond(200, json=health())
    result = invoke(
        "doctor",
        env={
            "IDENTITY_SUPABASE_URL": BASE_URL,
            "IDENTITY_SUPABASE_ANON_KEY": ANON_KEY,
            "IDENTITY_SUPABASE_JWT_SECRET": JWT_SECRET,
            "SUPABASE_URL": "https://etl-project.supabase.co",  # the other project's stay
        },
    )
    detail = checks(result)["configuration"]["detail"]
    assert detail.startswith(f"SUPABASE_URL={BASE_URL} ("), detail
    assert "URL from IDENTITY_SUPABASE_URL (environment)" in detail
    assert "service key from IDENTITY_SUPABASE_SERVICE_ROLE_KEY (.env.local)" in detail
    assert "public key from IDENTITY_SUPABASE_ANON_KEY (environment)" in detail
    assert "JWT secret from IDENTITY_SUPABASE_JWT_SECRET (environment)" in detail
