"""The ``supabase-identity`` console script, run as a real subprocess against the local stack.

Every test runs the installed entry point (``<venv>/bin/supabase-identity``) with an explicit
environment and a working directory without ``.env`` files, then checks the exit code, parses
``--json`` output and checks its values, and checks that errors are one line on stderr.

Redis: the CLI is pointed at database ``CLI_REDIS_DB`` of the stack's Redis (flushed around each
test that writes to it), so these tests never touch what other suites keep in other databases.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from supabase_identity import IdentityClient, OutboxEvent, RedisOutbox
from supabase_identity.archive import ConversationStore

from .._wait import wait_until

pytestmark = pytest.mark.integration

CLI_REDIS_DB = 11
REQUIRED_ENV = (
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_ANON_KEY",
    "SUPABASE_JWT_SECRET",
    "SUPABASE_DB_URL",
    "REDIS_URL",
)
BIN = Path(sys.executable).parent / "supabase-identity"
CHECK_NAMES = ["configuration", "key", "gateway", "schema", "SQL functions", "RLS", "redis"]


# ------------------------------------------------------------------------------------------------
# fixtures and helpers
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cli:
    """How to run the console script: its path, a clean folder, and the stack's environment."""

    env: Mapping[str, str]
    cwd: Path
    db_url: str
    redis_url: str

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN), *args],
            env=dict(self.env if env is None else env),
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str, env: Mapping[str, str] | None = None) -> Any:
        """Run with ``--json``; the command must exit 0 and print one JSON document."""
        done = self.run(*args, "--json", env=env)
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return json.loads(done.stdout)

    def with_env(self, **changes: str | None) -> dict[str, str]:
        """The environment with some variables replaced (``None`` removes one)."""
        env = dict(self.env)
        for name, value in changes.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env


def _redis_db_url(url: str, db: int) -> str:
    base, _, _ = url.partition("?")
    scheme, _, rest = base.partition("://")
    host = rest.split("/", 1)[0]
    return f"{scheme}://{host}/{db}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 1, nothing on stdout, exactly one ``supabase-identity: error:`` line on stderr."""
    assert done.returncode == 1, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("supabase-identity: error: "), lines[0]
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="session")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        pytest.fail(
            "the CLI tests need the local stack, but these variables are not set: "
            + ", ".join(missing)
            + '. Run `scripts/stack up && eval "$(scripts/stack env)"` first.',
            pytrace=False,
        )
    if not BIN.exists():
        pytest.fail(
            f"the console script {BIN} is missing: run `{sys.executable} -m pip install -e . "
            "--no-deps` in the repository",
            pytrace=False,
        )
    redis_url = _redis_db_url(os.environ["REDIS_URL"], CLI_REDIS_DB)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path_factory.getbasetemp()),
        "LANG": "C.UTF-8",
        "SUPABASE_URL": os.environ["SUPABASE_URL"],
        "SUPABASE_SERVICE_ROLE_KEY": os.environ["SUPABASE_SERVICE_ROLE_KEY"],
        "SUPABASE_ANON_KEY": os.environ["SUPABASE_ANON_KEY"],
        "SUPABASE_JWT_SECRET": os.environ["SUPABASE_JWT_SECRET"],
        "REDIS_URL": redis_url,
    }
    cwd = tmp_path_factory.mktemp("cli-cwd")  # no .env here: only `env` configures the CLI
    return Cli(env=env, cwd=cwd, db_url=os.environ["SUPABASE_DB_URL"], redis_url=redis_url)


@pytest.fixture
def r(cli: Cli) -> Iterator[redis.Redis]:
    """The CLI's Redis database, empty before and after the test."""
    client = redis.Redis.from_url(cli.redis_url)
    try:
        client.ping()
    except redis.ConnectionError as error:
        pytest.fail(f"Redis at {cli.redis_url} is not reachable ({error}); is the stack up?")
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def db(cli: Cli) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(cli.db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def service() -> Iterator[IdentityClient]:
    """A service-key SDK client for arranging data (events), without an outbox in Redis."""
    with IdentityClient(
        url=os.environ["SUPABASE_URL"], key=os.environ["SUPABASE_SERVICE_ROLE_KEY"], redis_url=None
    ) as client:
        yield client


def new_shop(tag: str = "cli") -> str:
    return f"{tag}-{uuid.uuid4().hex[:16]}.myshopify.com"


def new_user(cli: Cli) -> str:
    created = cli.json("user", "get-or-create", new_shop())
    assert created["is_new"] is True
    return str(created["user_id"])


def write_conversations(
    r: redis.Redis, user_id: str | None, count: int, *, end: bool = True
) -> list[str]:
    """``count`` conversations one minute apart (oldest first); conversation i has i+2 messages."""
    store = ConversationStore(r)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    ids = []
    for i in range(count):
        cid = str(uuid.uuid4())
        started = base + timedelta(minutes=i)
        store.create_session(
            cid,
            user_id=user_id,
            merchant_id="merchant_cli",
            workflow_name=f"flow-{i}",
            started_at=started,
        )
        for j in range(i + 2):
            store.append_message(
                cid,
                sender="user" if j % 2 == 0 else "assistant",
                content=f"conversation {i} message {j}",
                timestamp=started + timedelta(seconds=j),
            )
        if end:
            store.end_conversation(cid)
        ids.append(cid)
    return ids


def archived_rows(db: psycopg.Connection[Any], ids: list[str]) -> dict[str, dict[str, Any]]:
    cur = db.execute(
        "select id::text, user_id, message_count, messages from identity.conversations"
        " where id = any(%s::uuid[])",
        (ids,),
    )
    return {
        row[0]: {"user_id": row[1], "message_count": row[2], "messages": row[3]}
        for row in cur.fetchall()
    }


# ------------------------------------------------------------------------------------------------
# global behaviour
# ------------------------------------------------------------------------------------------------


def test_version_and_help(cli: Cli) -> None:
    done = cli.run("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("supabase-identity ")
    done = cli.run("--help")
    assert done.returncode == 0
    for command in ("doctor", "user", "history", "export", "events", "archive"):
        assert command in done.stdout


def test_usage_errors_exit_2(cli: Cli) -> None:
    assert cli.run("no-such-command").returncode == 2
    assert cli.run("user", "show").returncode == 2  # missing USER_ID
    assert cli.run("history", "usr_0123456789abcdef01234567", "--limit", "0").returncode == 2
    assert cli.run("export", "usr_0123456789abcdef01234567", "--format", "xml").returncode == 2


def test_debug_goes_before_the_command_and_adds_the_traceback(cli: Cli) -> None:
    done = cli.run("--debug", "user", "get-or-create", "not a shop")
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "ValidationError" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("supabase-identity: error: ")
    # after the command it is not an option of that command: a usage error
    assert cli.run("user", "get-or-create", "--debug", "not a shop").returncode == 2


# ------------------------------------------------------------------------------------------------
# doctor
# ------------------------------------------------------------------------------------------------


def test_doctor_passes_against_the_stack(cli: Cli) -> None:
    report = cli.json("doctor")
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == CHECK_NAMES
    assert all(c["status"] == "pass" and c["ok"] is True for c in report["checks"]), report
    by_name = {c["name"]: c for c in report["checks"]}
    detail = by_name["configuration"]["detail"]
    assert detail.startswith(f"SUPABASE_URL={cli.env['SUPABASE_URL']} (URL from SUPABASE_URL ")
    assert "service key from SUPABASE_SERVICE_ROLE_KEY (environment)" in detail
    assert "service" in by_name["key"]["detail"]
    assert by_name["RLS"]["detail"] == "enabled on every table (5)"

    text = cli.run("doctor", "--no-json")
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert len(lines) == len(CHECK_NAMES)
    assert all(line.startswith("pass  ") for line in lines), text.stdout


def test_doctor_wrong_port_fails_on_the_gateway_with_the_fix(cli: Cli) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    env = cli.with_env(SUPABASE_URL=url)
    done = cli.run("doctor", "--json", env=env)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False
    by_name = {c["name"]: c for c in report["checks"]}
    gateway = by_name["gateway"]
    assert gateway["status"] == "fail"
    assert url in gateway["detail"]
    assert "SUPABASE_URL" in gateway["fix"]
    assert "scripts/stack up" in gateway["fix"]
    assert [by_name[n]["status"] for n in ("schema", "SQL functions", "RLS")] == ["skip"] * 3
    assert by_name["redis"]["status"] == "pass"

    text = cli.run("doctor", "--no-json", env=env)
    assert text.returncode == 1
    failing = [line for line in text.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 1
    assert "gateway" in failing[0]
    assert "fix: check SUPABASE_URL" in failing[0]


def test_doctor_with_only_the_anon_key_fails_on_the_key(cli: Cli) -> None:
    env = cli.with_env(SUPABASE_SERVICE_ROLE_KEY=None)
    done = cli.run("doctor", "--json", env=env)
    assert done.returncode == 1
    by_name = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    key = by_name["key"]
    assert key["status"] == "fail"
    assert "public (anon)" in key["detail"]
    assert "SUPABASE_SERVICE_ROLE_KEY" in key["fix"]
    # the gateway itself is fine; what needs the service key is reported as not checked
    assert by_name["gateway"]["status"] == "pass"
    for name in ("schema", "SQL functions", "RLS"):
        assert by_name[name]["status"] == "skip"
        assert "service key" in by_name[name]["detail"]

    text = cli.run("doctor", "--no-json", env=env)
    key_line = next(line for line in text.stdout.splitlines() if line.split()[1:2] == ["key"])
    assert key_line.startswith("FAIL")
    assert "public (anon) key" in key_line
    assert "fix: set SUPABASE_SERVICE_ROLE_KEY" in key_line


def test_doctor_redis_on_a_closed_port_fails_the_redis_line(cli: Cli) -> None:
    env = cli.with_env(REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0")
    done = cli.run("doctor", "--json", env=env)
    assert done.returncode == 1
    checks = json.loads(done.stdout)["checks"]
    assert [c["name"] for c in checks if c["status"] != "pass"] == ["redis"]
    redis_check = checks[-1]
    assert "Connection refused" in redis_check["detail"]
    assert "REDIS_URL" in redis_check["fix"]


def test_doctor_without_configuration(cli: Cli) -> None:
    done = cli.run("doctor", "--json", env=cli.with_env(SUPABASE_URL=None))
    assert done.returncode == 1
    checks = json.loads(done.stdout)["checks"]
    assert checks[0]["name"] == "configuration"
    assert checks[0]["status"] == "fail"
    assert "SUPABASE_URL is not set" in checks[0]["detail"]
    assert {c["status"] for c in checks[1:]} == {"skip"}


# ------------------------------------------------------------------------------------------------
# users
# ------------------------------------------------------------------------------------------------


def test_user_get_or_create_new_then_existing(cli: Cli) -> None:
    shop = new_shop()
    first = cli.json("user", "get-or-create", shop, "--email", "owner@example.com")
    assert first["is_new"] is True
    assert first["user_id"].startswith("usr_")
    assert first["shop_domain"] == shop
    # another spelling of the same shop is the same user
    again = cli.json("user", "get-or-create", f"  HTTPS://{shop.upper()}/ ")
    assert again == {"user_id": first["user_id"], "is_new": False, "shop_domain": shop}

    text = cli.run("user", "get-or-create", shop, "--no-json")
    assert text.returncode == 0
    assert text.stdout.strip() == f"{first['user_id']}  {shop}  (existing user)"


def test_user_get_or_create_invalid_shop(cli: Cli) -> None:
    line = assert_one_line_error(cli.run("user", "get-or-create", "cool shop.example.com"))
    assert "is not a Shopify shop domain" in line
    assert "'<name>.myshopify.com'" in line


def test_user_get_or_create_with_the_anon_key_is_refused(cli: Cli) -> None:
    env = cli.with_env(SUPABASE_SERVICE_ROLE_KEY=None)
    assert_one_line_error(
        cli.run("user", "get-or-create", new_shop(), env=env),
        "needs the service key",
        "SUPABASE_SERVICE_ROLE_KEY",
    )


def test_user_show(cli: Cli) -> None:
    shop = new_shop()
    created = cli.json("user", "get-or-create", shop, "--name", "Ada", "--shopify-id", "42")
    profile = cli.json("user", "show", created["user_id"])
    assert profile["user_id"] == created["user_id"]
    assert profile["shop_domain"] == shop
    assert profile["name"] == "Ada"
    assert profile["shopify_id"] == "42"
    assert profile["email"] is None
    assert datetime.fromisoformat(profile["created_at"]) <= datetime.fromisoformat(
        profile["last_seen"]
    )
    assert profile["stats"] == {
        "total_conversations": 0,
        "total_messages": 0,
        "first_conversation": None,
        "last_conversation": None,
        "total_events": 0,
    }

    text = cli.run("user", "show", created["user_id"], "--no-json")
    assert text.returncode == 0
    assert shop in text.stdout
    assert "stats.total_conversations" in text.stdout


def test_user_show_unknown_and_malformed(cli: Cli) -> None:
    assert_one_line_error(
        cli.run("user", "show", "usr_" + "0" * 24), "usr_" + "0" * 24, "not found"
    )
    assert_one_line_error(cli.run("user", "show", "alice"), "is not a user id")


# ------------------------------------------------------------------------------------------------
# archive, then history and export of what was archived
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Archived:
    user_id: str
    ids: list[str]  # oldest first
    report: dict[str, Any]


@pytest.fixture(scope="module")
def archived(cli: Cli, service: IdentityClient) -> Iterator[Archived]:
    """A user with five conversations archived by ``archive --once`` and two events."""
    rc = redis.Redis.from_url(cli.redis_url)
    rc.flushdb()
    try:
        user_id = new_user(cli)
        ids = write_conversations(rc, user_id, 5)
        report = cli.json("archive", "--once")
        service.log_user_event(user_id, "oauth_complete", {"first_time": True})
        service.log_user_event(user_id, "cli.export_test", {"n": 2})
        yield Archived(user_id=user_id, ids=ids, report=report)
    finally:
        rc.flushdb()
        rc.close()


def test_archive_once_report_and_rows(
    cli: Cli, archived: Archived, db: psycopg.Connection[Any]
) -> None:
    report = archived.report
    assert report["found"] == 5
    assert report["archived"] == 5
    assert report["rearchived"] == 0
    assert report["unlinked"] == 0
    assert report["failed"] == {}
    assert report["events"]["remaining"] == 0
    rows = archived_rows(db, archived.ids)
    assert set(rows) == set(archived.ids)
    for i, cid in enumerate(archived.ids):
        assert rows[cid]["user_id"] == archived.user_id
        assert rows[cid]["message_count"] == i + 2
        assert [m["content"] for m in rows[cid]["messages"]] == [
            f"conversation {i} message {j}" for j in range(i + 2)
        ]


def test_archive_once_text_output_and_nothing_left(cli: Cli, r: redis.Redis) -> None:
    done = cli.run("archive", "--once", "--no-json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("found 0, archived 0,")
    assert "events: delivered 0" in done.stdout


def test_history_newest_first_with_total(cli: Cli, archived: Archived) -> None:
    page = cli.json("history", archived.user_id)
    assert page["total"] == 5
    assert page["limit"] == 20
    assert page["offset"] == 0
    assert page["next_cursor"] is None
    assert [item["id"] for item in page["items"]] == archived.ids[::-1]
    started = [datetime.fromisoformat(item["started_at"]) for item in page["items"]]
    assert started == sorted(started, reverse=True)
    assert [item["message_count"] for item in page["items"]] == [6, 5, 4, 3, 2]
    assert page["items"][0]["workflow_name"] == "flow-4"
    assert "messages" not in page["items"][0]


def test_history_search(cli: Cli, archived: Archived) -> None:
    found = cli.json("history", archived.user_id, "--search", '"conversation 3"')
    assert [item["id"] for item in found["items"]] == [archived.ids[3]]
    assert found["total"] == 1
    assert found["items"][0]["snippet"].startswith("<mark>conversation</mark> <mark>3</mark>")
    everything = cli.json("history", archived.user_id, "--search", "messages", "--limit", "2")
    assert everything["total"] == 5 and len(everything["items"]) == 2  # stemmed: "message"

    text = cli.run("history", archived.user_id, "--search", '"conversation 3"', "--no-json")
    assert text.returncode == 0, text.stderr
    assert "<mark>" not in text.stdout
    assert "  conversation 3 message 0" in text.stdout.splitlines()
    none = cli.run("history", archived.user_id, "--search", "the", "--no-json")
    assert none.stdout.strip() == f"{archived.user_id}: 0 conversations match the"


def test_history_limit_and_offset(cli: Cli, archived: Archived) -> None:
    newest_first = archived.ids[::-1]
    page = cli.json("history", archived.user_id, "--limit", "2", "--offset", "1")
    assert page["total"] == 5
    assert (page["limit"], page["offset"]) == (2, 1)
    assert [item["id"] for item in page["items"]] == newest_first[1:3]
    past_end = cli.json("history", archived.user_id, "--offset", "10")
    assert past_end["items"] == []
    assert past_end["total"] == 5


def test_history_cursor_paging(cli: Cli, archived: Archived) -> None:
    seen: list[str] = []
    page = cli.json("history", archived.user_id, "--limit", "2")
    pages = 1
    seen += [item["id"] for item in page["items"]]
    while page["next_cursor"] is not None:
        page = cli.json(
            "history", archived.user_id, "--limit", "2", "--cursor", page["next_cursor"]
        )
        assert page["total"] is None  # keyset pages do not count
        seen += [item["id"] for item in page["items"]]
        pages += 1
        assert pages <= 5, "paging does not end"
    assert pages == 3
    assert seen == archived.ids[::-1]


def test_history_table_and_errors(cli: Cli, archived: Archived) -> None:
    text = cli.run("history", archived.user_id, "--limit", "2", "--no-json")
    assert text.returncode == 0
    assert f"{archived.user_id}: 5 conversations (showing 1-2)" in text.stdout
    assert archived.ids[4] in text.stdout and archived.ids[3] in text.stdout
    assert archived.ids[2] not in text.stdout
    assert "--cursor " in text.stdout
    assert_one_line_error(
        cli.run("history", archived.user_id, "--cursor", "not-a-cursor"), "cursor"
    )
    assert_one_line_error(cli.run("history", "usr_" + "1" * 24), "not found")


def test_history_of_a_user_without_conversations(cli: Cli) -> None:
    user_id = new_user(cli)
    assert cli.json("history", user_id) == {
        "items": [],
        "total": 0,
        "limit": 20,
        "offset": 0,
        "next_cursor": None,
    }
    text = cli.run("history", user_id, "--no-json")
    assert text.returncode == 0
    assert text.stdout.strip() == f"{user_id}: 0 conversations"


def _check_export(document: dict[str, Any], archived: Archived) -> None:
    assert document["profile"]["user_id"] == archived.user_id
    assert document["profile"]["stats"]["total_conversations"] == 5
    conversations = document["conversations"]
    assert [c["id"] for c in conversations] == archived.ids[::-1]
    for conversation in conversations:
        i = archived.ids.index(conversation["id"])
        assert conversation["user_id"] == archived.user_id
        assert [m["content"] for m in conversation["messages"]] == [
            f"conversation {i} message {j}" for j in range(i + 2)
        ]
    events = document["events"]
    assert [e["event_type"] for e in events] == ["oauth_complete", "cli.export_test"]
    assert events[0]["event_data"] == {"first_time": True}
    assert {e["user_id"] for e in events} == {archived.user_id}


def test_export_json_to_stdout(cli: Cli, archived: Archived) -> None:
    done = cli.run("export", archived.user_id)
    assert done.returncode == 0, done.stderr
    _check_export(json.loads(done.stdout), archived)


def test_export_jsonl_to_a_file(cli: Cli, archived: Archived, tmp_path: Path) -> None:
    target = tmp_path / "history.jsonl"
    done = cli.run("export", archived.user_id, "--format", "jsonl", "-o", str(target))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert f"to {target}: 5 conversations (20 messages), 2 events" in done.stderr
    records = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [r["type"] for r in records] == ["profile"] + ["conversation"] * 5 + ["event"] * 2
    document: dict[str, Any] = {"profile": None, "conversations": [], "events": []}
    for record in records:
        kind = record.pop("type")
        if kind == "profile":
            document["profile"] = record
        else:
            document[f"{kind}s"].append(record)
    _check_export(document, archived)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.jsonl"]  # no temp file left


def test_export_user_without_conversations(cli: Cli, tmp_path: Path) -> None:
    user_id = new_user(cli)
    target = tmp_path / "empty.json"
    done = cli.run("export", user_id, "-o", str(target))
    assert done.returncode == 0, done.stderr
    document = json.loads(target.read_text(encoding="utf-8"))
    assert document["profile"]["user_id"] == user_id
    assert document["conversations"] == []
    assert document["events"] == []
    jsonl = cli.run("export", user_id, "--format", "jsonl")
    assert [json.loads(line)["type"] for line in jsonl.stdout.splitlines()] == ["profile"]


def test_export_unknown_user_leaves_no_file(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "nobody.json"
    assert_one_line_error(cli.run("export", "usr_" + "2" * 24, "-o", str(target)), "not found")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# events flush
# ------------------------------------------------------------------------------------------------


def test_events_flush_delivers_the_redis_outbox(
    cli: Cli, r: redis.Redis, db: psycopg.Connection[Any]
) -> None:
    user_id = new_user(cli)
    now = datetime.now(UTC)
    events = [
        OutboxEvent(
            id=uuid.uuid4(),
            user_id=user_id,
            event_type="cli.flush_test",
            event_data={"i": i},
            created_at=now + timedelta(milliseconds=i),
        )
        for i in range(3)
    ]
    ghost = OutboxEvent(
        id=uuid.uuid4(),
        user_id="usr_" + "3" * 24,  # no such user: a dead letter, not a blocked outbox
        event_type="cli.flush_test",
        event_data={},
        created_at=now,
    )
    outbox = RedisOutbox(r)
    outbox.push([*events, ghost])
    result = cli.json("events", "flush")
    assert result == {
        "delivered": 3,
        "duplicates": 0,
        "dead_lettered": 1,
        "remaining": 0,
        "error": None,
    }
    stored = db.execute(
        "select event_data->>'i' from identity.events where id = any(%s::uuid[]) order by 1",
        ([str(e.id) for e in events],),
    ).fetchall()
    assert [row[0] for row in stored] == ["0", "1", "2"]
    assert outbox.pending_count() == 0
    assert [d.event.id for d in outbox.dead_letters()] == [ghost.id]
    # nothing left: a second flush delivers nothing
    again = cli.run("events", "flush", "--no-json")
    assert again.returncode == 0
    assert again.stdout.strip() == "delivered 0, duplicates 0, dead-lettered 0, remaining 0"


def test_events_flush_without_redis_url(cli: Cli) -> None:
    assert_one_line_error(
        cli.run("events", "flush", env=cli.with_env(REDIS_URL=None)), "REDIS_URL is not set"
    )


# ------------------------------------------------------------------------------------------------
# archive modes
# ------------------------------------------------------------------------------------------------


def test_archive_needs_exactly_one_mode(cli: Cli) -> None:
    for args in ([], ["--once", "--loop"], ["--once", "--check"], ["--loop", "--check"]):
        done = cli.run("archive", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "exactly one of --once, --loop or --check" in done.stderr


def test_archive_check_needs_a_running_loop(cli: Cli, r: redis.Redis) -> None:
    done = cli.run("archive", "--check", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout) == {"alive": 0, "heartbeats": []}
    assert "no archiver heartbeat" in done.stderr
    # A one-off pass is not a live archiver: --check is a liveness probe for --loop.
    assert cli.run("archive", "--once", "--json").returncode == 0
    assert cli.run("archive", "--check", "--json").returncode == 1


def test_archive_once_redis_down_is_one_line(cli: Cli) -> None:
    env = cli.with_env(REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0")
    assert_one_line_error(cli.run("archive", "--once", env=env), "Connection refused")


def test_archive_loop_archives_then_stops_on_sigterm(
    cli: Cli, r: redis.Redis, db: psycopg.Connection[Any]
) -> None:
    user_id = new_user(cli)
    proc = subprocess.Popen(
        [str(BIN), "archive", "--loop", "--interval", "1", "--json"],
        env=dict(cli.env),
        cwd=cli.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        [cid] = write_conversations(r, user_id, 1)
        wait_until(
            lambda: proc.poll() is not None or archived_rows(db, [cid]),
            "the --loop archiver did not archive the conversation",
        )
        assert proc.poll() is None, f"the archiver exited early: {proc.communicate()}"
        beat = cli.json("archive", "--check")  # the live loop's heartbeat
        assert beat["alive"] == 1
        assert beat["heartbeats"][0]["last_pass"].startswith("found=")
        assert datetime.fromisoformat(beat["heartbeats"][0]["at"]) > datetime.now(UTC) - timedelta(
            minutes=1
        )
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "running every 1s" in stderr
    assert "SIGTERM: stopping after the current batch" in stderr
    stopped = [line for line in stderr.splitlines() if line.startswith("stopped: ")]
    assert len(stopped) == 1, stderr
    assert "archived 1," in stopped[0]
    totals = json.loads(stdout)
    assert totals["archived"] == 1
    assert totals["failed"] == {}
    row = archived_rows(db, [cid])[cid]
    assert row["user_id"] == user_id
    assert row["message_count"] == 2
    # A loop that stopped is no longer alive.
    assert cli.run("archive", "--check", "--json").returncode == 1
