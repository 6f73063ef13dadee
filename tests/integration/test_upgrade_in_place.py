"""`supabase db push` over an identity database built by the seed's SQL, with data.

The seed's services ran "Phase 4.5.1 Step 1" (tests/fixtures/seed_identity_schema.sql, verbatim:
uuid-ossp, varchar columns, GRANT ALL to anon and authenticated, no RLS) in the SQL editor and
wrote rows: the seed's own test rows ("Step 3", tests/fixtures/seed_test_queries.sql), short ids,
conversations without a user or without a start time. Pushing this project's migrations there
must upgrade it in place: every row kept, RLS on, the blanket grants gone, the advisor silent,
the SDK reading the old rows, the schema exactly what a new database gets.

A throwaway project (scripts/stack with its own state folder and ports, so the stack the other
tests use is never touched) is brought up once: its first `up` pushes the migrations onto a new
database, the reference schema. That database is then turned into a seed-built one and pushed
again with the real Supabase CLI, and its gateway serves the SDK's reads. Variants that need no
HTTP use throwaway databases on the same server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from supabase_identity import IdentityClient, NotFoundError

from .._wait import wait_until
from ._throwaway_stack import run_stack, throwaway_ports, throwaway_stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SUPABASE = ROOT / "node_modules" / ".bin" / "supabase"
FIXTURES = ROOT / "tests" / "fixtures"
SEED_SCHEMA_SQL = (FIXTURES / "seed_identity_schema.sql").read_text()
SEED_TEST_QUERIES = (FIXTURES / "seed_test_queries.sql").read_text()
# Step 3 without its last paragraph: the rows a project keeps when nobody cleaned up.
SEED_TEST_INSERTS, _, SEED_TEST_CLEANUP = SEED_TEST_QUERIES.partition("-- Clean up test data\n")
# "Monitoring & Maintenance": its quarterly copy of old events into identity.events_archive, a
# table the seed leaves to its user to create (here with the events' columns, as its
# `INSERT … SELECT *` needs).
SEED_QUARTERLY_ARCHIVE = (
    "create table identity.events_archive (like identity.events including all);\n"
    + "-- Quarterly"
    + (FIXTURES / "seed_maintenance.sql").read_text().partition("-- Quarterly")[2]
)
TABLES = ("users", "conversations", "events", "events_archive")
#: Tables no seed row goes into (the upgrade creates them empty).
NEW_TABLES = ("compliance_audit",)
MIGRATIONS = sorted((ROOT / "supabase" / "migrations").glob("*.sql"))
#: The in-place upgrade's first step, dated before the first migration of the schema.
SET_ASIDE = "20261126195000"
#: The first and last migration of the schema as it was before this upgrade path existed: a
#: database migrated then has exactly the migrations between them in its history.
BEFORE_UPGRADE_PATH = ("20261126200000", "20261126210000")
EXPOSED_SCHEMAS = "public,graphql_public,identity"  # supabase/config.toml [api] schemas

# The throwaway project's ports: clear of tests/integration/test_stack_script.py's (offset 0).
PORTS = throwaway_ports(100)

# The seed's own rows beyond Step 3, written the way its library and services wrote them.
LONG_ID = "usr_5f2b9c1e8a7d4f3b"  # also readable by today's SDK validation
SHORT_ID = "usr_12345678"  # the seed's curl examples
CONV_LINKED = "0b5c2f0e-4a8e-4f43-9d1c-2a6e0f1b7c01"
CONV_NO_START = "0b5c2f0e-4a8e-4f43-9d1c-2a6e0f1b7c02"
CONV_NO_USER = "0b5c2f0e-4a8e-4f43-9d1c-2a6e0f1b7c03"
CONV_ODD_JSON = "0b5c2f0e-4a8e-4f43-9d1c-2a6e0f1b7c04"
SEED_MESSAGES = [
    {"sender": "user", "content": "Where is my order?", "timestamp": "2025-06-01T10:00:00"},
    {"sender": "cj", "content": "Let me check.", "timestamp": "2025-06-01T10:00:05"},
]
SEED_ROWS_SQL = f"""
insert into identity.users (id, shop_domain, shopify_id, email, name, created_at, last_seen,
                            metadata)
values ('{LONG_ID}', 'long-id-shop.myshopify.com', '7788', 'owner@long-id.example', 'Long Id',
        '2025-05-01 09:00+00', '2025-06-02 09:00+00', '{{"plan": "basic"}}'),
       ('{SHORT_ID}', ' Mixed-Case.MyShopify.com', null, null, null,
        '2025-05-02 09:00+00', null, null);

insert into identity.conversations (id, user_id, merchant_id, workflow_name, started_at,
                                    ended_at, messages, metadata, created_at)
values ('{CONV_LINKED}', '{LONG_ID}', 'merchant_long-id-shop', 'support_daily',
        '2025-06-01 10:00+00', '2025-06-01 10:05+00', '{json.dumps(SEED_MESSAGES)}',
        '{{"source": "seed"}}', '2025-06-01 10:06+00'),
       ('{CONV_NO_START}', '{LONG_ID}', null, 'shopify_onboarding',
        null, '2025-06-02 11:00+00', '[]', '{{}}', '2025-06-02 11:30+00'),
       ('{CONV_NO_USER}', null, 'merchant_anonymous', 'shopify_onboarding',
        '2025-06-03 12:00+00', null, '[{{"sender": "user", "content": "hi"}}]', '["widget"]',
        '2025-06-03 12:10+00'),
       ('{CONV_ODD_JSON}', '{SHORT_ID}', null, null,
        '2025-06-04 13:00+00', null, '{{"sender": "user", "content": "one"}}', null,
        '2025-06-04 13:10+00');

insert into identity.events (user_id, event_type, event_data, created_at)
values ('{LONG_ID}', 'oauth_complete', '{{"shop": "long-id-shop.myshopify.com"}}',
        '2025-05-01 09:00+00'),
       ('{SHORT_ID}', 'oauth_complete', '{{"first_time": true}}', null);
"""


# ---------------------------------------------------------------------------------------------
# Helpers: the throwaway project, its databases, the Supabase CLI
# ---------------------------------------------------------------------------------------------
Done = subprocess.CompletedProcess[str]


def run(argv: Sequence[str | Path]) -> Done:
    return subprocess.run(
        [str(a) for a in argv],
        env={**os.environ, "SUPABASE_TELEMETRY_DISABLED": "1", "DO_NOT_TRACK": "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@dataclass(frozen=True)
class Project:
    """A running throwaway stack: its `scripts/stack env` exports and the schema its first
    `up` pushed onto a new database (the reference)."""

    folder: Path
    exports: dict[str, str]
    fresh_schema: str
    fresh_schemas: list[str]
    fresh_history: list[str]

    @property
    def url(self) -> str:
        return self.exports["SUPABASE_DB_URL"]

    def db_url(self, name: str) -> str:
        """The same server and credentials, another database."""
        return re.sub(r"^([a-z]+://[^/]*)/[^?]*", rf"\g<1>/{name}", self.url)


def sql(url: str, script: str, *, editor: bool = False) -> None:
    """Run a multi-statement script, as the SQL editor does when ``editor`` (its search_path)."""
    with psycopg.connect(url, autocommit=True) as db:
        if editor:
            db.execute('set search_path = "$user", public, extensions')
        db.execute(script.encode())


def rows(url: str, query: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as db:
        return db.execute(query.encode()).fetchall()


def scalar(url: str, query: str) -> Any:
    found = rows(url, query)
    return next(iter(found[0].values()))


def push(url: str, *extra: str, workdir: Path | None = None) -> Done:
    """`supabase db push` of this project's migrations, as a user runs it."""
    argv: list[str | Path] = [SUPABASE, "db", "push", f"--remote={url}", "--yes", *extra]
    if workdir is not None:
        argv.append(f"--workdir={workdir}")
    return run(argv)


def schema_dump(url: str) -> str:
    """Schema identity as pg_dump writes it (tables, columns, constraints, indexes, triggers,
    policies, functions, grants, comments), minus comments and per-run restrict keys."""
    done = run(["pg_dump", "--schema-only", "--schema=identity", f"--dbname={url}"])
    assert done.returncode == 0, done.stderr
    return "\n".join(
        line
        for line in done.stdout.splitlines()
        if line and not line.startswith(("--", "\\restrict", "\\unrestrict"))
    )


def advice(url: str) -> list[tuple[str, str, str]]:
    """Supabase's advisor at every level: (level, lint, detail), sorted."""
    levels = ["--type=all", "--level=info", "--output-format=json"]
    done = run([SUPABASE, "db", "advisors", f"--remote={url}", *levels])
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout).get("results") or []
    return sorted((r["level"], r["name"], r.get("detail", "")) for r in results)


#: Each non-unique index of schema identity, and a query it exists for.
INDEX_QUERIES = {
    "users_created_at_idx": "select * from identity.users order by created_at desc limit 5",
    "conversations_started_at_idx": (
        "select id from identity.conversations order by started_at desc limit 5"
    ),
    "events_created_at_idx": (
        "select user_id from identity.events order by created_at desc limit 10"
    ),
    "conversations_user_id_started_at_idx": (
        f"select count(*) from identity.conversations where user_id = '{LONG_ID}'"
    ),
    "events_user_id_created_at_idx": (
        f"select count(*) from identity.events where user_id = '{LONG_ID}'"
    ),
    "events_event_type_created_at_idx": (
        "select count(*) from identity.events where event_type = 'oauth_complete'"
    ),
    "events_archive_user_id_created_at_idx": (
        f"select count(*) from identity.events_archive where user_id = '{LONG_ID}'"
    ),
    "conversations_user_id_search_idx": (
        "select count(*) from identity.conversations"
        " where search @@ websearch_to_tsquery('english', 'refund')"
    ),
    "compliance_audit_shop_hash_created_at_idx": (
        "select topic from identity.compliance_audit"
        f" where shop_hash = '{'0' * 64}' order by created_at desc limit 5"
    ),
}


def use_every_index(url: str) -> None:
    """Run the query each non-unique index exists for, once, through that index.

    The advisor's unused_index lint counts index scans; on tables of a few rows the planner
    prefers sequential scans, so they are turned off for these queries (each plan is checked
    to name its index). A real project runs the same queries as soon as it serves traffic.
    """
    with psycopg.connect(url, autocommit=True) as db:
        indexes = {
            r[0]
            for r in db.execute(
                "select indexrelid::regclass::text from pg_index"
                " join pg_class on pg_class.oid = indrelid"
                " where relnamespace = 'identity'::regnamespace and not indisunique"
            )
        }
        assert indexes == {f"identity.{name}" for name in INDEX_QUERIES}
        db.execute("set enable_seqscan = off")
        for index, query in INDEX_QUERIES.items():
            plan = db.execute(f"explain (format json) {query}".encode()).fetchone()
            assert plan is not None
            assert f'"Index Name": "{index}"' in json.dumps(plan[0]), (index, plan)
            db.execute(query.encode()).fetchall()

    def counted() -> bool:
        unused = scalar(
            url,
            "select count(*) from pg_stat_user_indexes"
            " where schemaname = 'identity' and idx_scan = 0 and indexrelname = any(array["
            + ", ".join(f"'{name}'" for name in INDEX_QUERIES)
            + "])",
        )
        return bool(unused == 0)

    wait_until(counted, "the index scans did not reach pg_stat_user_indexes")


def new_database(project: Project, name: str) -> str:
    """A database on the project's server with what Supabase's image gives a project first."""
    sql(project.url, f"drop database if exists {name} with (force)")
    sql(project.url, f"create database {name}")
    bootstrap = (ROOT / "scripts" / "stack_files" / "bootstrap.sql").read_text()
    # The authenticator's password is cluster-wide and already set by scripts/stack.
    bootstrap = re.sub(r"(?m)^alter role authenticator .*password.*$", "", bootstrap)
    done = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", project.db_url(name), "-f", "-"],
        input=bootstrap,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    sql(project.url, f"alter database {name} set pgrst.db_schemas = '{EXPOSED_SCHEMAS}'")
    return project.db_url(name)


def make_seed_project(url: str, *, uuid_ossp_preinstalled: bool, archive: bool = False) -> None:
    """The database a seed service has: its SQL run in the SQL editor, then its rows (and, with
    ``archive``, its quarterly maintenance)."""
    if not uuid_ossp_preinstalled:
        sql(url, 'drop extension "uuid-ossp"')
    sql(url, SEED_SCHEMA_SQL, editor=True)
    sql(url, SEED_TEST_INSERTS, editor=True)
    sql(url, SEED_ROWS_SQL, editor=True)
    if archive:
        sql(url, SEED_QUARTERLY_ARCHIVE, editor=True)


def table_rows(url: str, table: str) -> dict[str, dict[str, Any]]:
    """The rows of ``identity.<table>`` by id; none when the table does not exist."""
    if scalar(url, f"select to_regclass('identity.{table}') is null"):
        return {}
    return {str(r["id"]): r for r in rows(url, f"select * from identity.{table}")}


def all_rows(url: str) -> dict[str, dict[str, dict[str, Any]]]:
    return {table: table_rows(url, table) for table in TABLES}


def catalog(url: str) -> tuple[set[str], set[str]]:
    """The database's schemas and extensions."""
    schemas = {r["nspname"] for r in rows(url, "select nspname from pg_namespace")}
    extensions = {r["extname"] for r in rows(url, "select extname from pg_extension")}
    return schemas, extensions


def unmigrate(project: Project) -> None:
    """Drop from the project's database what `supabase db push` made there: every schema and
    extension a database gets from supabase/migrations beyond what a project starts with, and
    the PostgREST pre-request function they registered on the authenticator role (a role
    setting, outside every schema: left behind, it names a function that no longer exists,
    and PostgREST fails every request)."""
    name = f"upgrade_baseline_{uuid.uuid4().hex[:8]}"
    try:
        start_schemas, start_extensions = catalog(new_database(project, name))
    finally:
        sql(project.url, f"drop database if exists {name} with (force)")
    schemas, extensions = catalog(project.url)
    for extension in sorted(extensions - start_extensions):
        sql(project.url, f'drop extension "{extension}" cascade')
    sql(project.url, "alter role authenticator reset pgrst.db_pre_request")
    sql(project.url, "notify pgrst, 'reload config'")
    for schema in sorted(schemas - start_schemas):
        sql(project.url, f'drop schema if exists "{schema}" cascade')
    assert catalog(project.url) == (start_schemas, start_extensions)


@pytest.fixture(scope="module")
def project() -> Iterator[Project]:
    with throwaway_stack("upgrade-test-", PORTS) as env:
        up = run_stack(env, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        printed = run_stack(env, "env").stdout.splitlines()
        exports = dict(line.removeprefix("export ").split("=", 1) for line in printed)
        # The fresh path: what `up` pushed onto a new database is the reference.
        url = exports["SUPABASE_DB_URL"]
        yield Project(
            folder=Path(env["STACK_DIR"]).parent,
            exports=exports,
            fresh_schema=schema_dump(url),
            fresh_schemas=[
                r["nspname"] for r in rows(url, "select nspname from pg_namespace order by 1")
            ],
            fresh_history=[
                r["version"]
                for r in rows(
                    url, "select version from supabase_migrations.schema_migrations order by 1"
                )
            ],
        )


@dataclass(frozen=True)
class Upgrade:
    """The project's own database, built by the seed's SQL, then pushed."""

    before: dict[str, dict[str, dict[str, Any]]]
    anon_status_before: int
    anon_rows_before: int
    push: Done


def anon_get(project: Project, table: str) -> httpx.Response:
    return httpx.get(
        f"{project.exports['SUPABASE_URL']}/rest/v1/{table}",
        headers={"apikey": project.exports["SUPABASE_ANON_KEY"], "Accept-Profile": "identity"},
        timeout=30,
    )


@pytest.fixture(scope="module")
def upgraded(project: Project) -> Upgrade:
    # A seed project: nothing the migrations made (history, schemas, extensions such as
    # pg_cron and its schedule), the seed's schema (uuid-ossp created by the seed itself, in
    # public: the harder case), its rows and its archived events.
    unmigrate(project)
    make_seed_project(project.url, uuid_ossp_preinstalled=False, archive=True)
    before = all_rows(project.url)

    # What the seed's GRANT ALL meant: the public anon key reads every conversation.
    def anon_sees_seed_rows() -> bool:
        response = anon_get(project, "conversations")
        return response.status_code == 200 and len(response.json()) == len(before["conversations"])

    wait_until(anon_sees_seed_rows, "PostgREST did not serve the seed's tables to anon")
    anon = anon_get(project, "conversations")
    done = push(project.url)
    return Upgrade(before, anon.status_code, len(anon.json()), done)


# ---------------------------------------------------------------------------------------------
# A new database: every migration applies, the upgrade steps leave nothing behind
# ---------------------------------------------------------------------------------------------
def test_a_new_database_gets_every_migration_and_nothing_from_the_upgrade(
    project: Project,
) -> None:
    assert project.fresh_history == [m.name.split("_")[0] for m in MIGRATIONS]
    # The set-aside step ran first, before the schema existed, and found nothing to set aside.
    assert project.fresh_history[:2] == [SET_ASIDE, BEFORE_UPGRADE_PATH[0]]
    assert "identity" in project.fresh_schemas
    assert "identity_legacy" not in project.fresh_schemas


# ---------------------------------------------------------------------------------------------
# The seed's database, upgraded by `supabase db push`
# ---------------------------------------------------------------------------------------------
def test_push_over_the_seed_database_applies_every_migration(upgraded: Upgrade) -> None:
    output = upgraded.push.stdout + upgraded.push.stderr
    assert upgraded.push.returncode == 0, output
    applied = re.findall(r"Applying migration (\S+)\.\.\.", output)
    assert applied == [m.name for m in MIGRATIONS]


def test_every_seed_row_is_kept(project: Project, upgraded: Upgrade) -> None:
    before, after = upgraded.before, all_rows(project.url)
    assert [len(before[t]) for t in TABLES] == [3, 5, 3, 1]
    # The seed's quarterly copy left the archived event in events too: it is stored once, in
    # events_archive, as the maintenance that moves old events would.
    (archived,) = before["events_archive"]
    assert archived in before["events"]
    assert {t: sorted(r) for t, r in after.items()} == {
        "users": sorted(before["users"]),
        "conversations": sorted(before["conversations"]),
        "events": sorted(set(before["events"]) - {archived}),
        "events_archive": [archived],
    }

    # Columns the seed had keep their values, except the documented repairs below.
    same = {
        "users": ("id", "shopify_id", "email", "name", "created_at"),
        "conversations": ("id", "user_id", "merchant_id", "workflow_name", "ended_at"),
        "events": ("id", "user_id", "event_type", "event_data", "created_at"),
        "events_archive": ("id", "user_id", "event_type", "event_data", "created_at"),
    }
    for table, columns in same.items():
        for key, new in after[table].items():
            old = before[table][key]
            kept = [c for c in columns if not (table == "events" and old[c] is None)]
            assert {c: new[c] for c in kept} == {c: old[c] for c in kept}, (table, key)

    users, convs = after["users"], after["conversations"]
    assert users[LONG_ID]["metadata"] == {"plan": "basic"}
    assert users[LONG_ID]["last_seen"] == upgraded.before["users"][LONG_ID]["last_seen"]
    # Normalized as get_or_create_user looks shops up; null last_seen/metadata filled.
    assert users[SHORT_ID]["shop_domain"] == "mixed-case.myshopify.com"
    assert users[SHORT_ID]["last_seen"] == upgraded.before["users"][SHORT_ID]["created_at"]
    assert users[SHORT_ID]["metadata"] == {}
    assert users["usr_test123"]["shop_domain"] == "test.myshopify.com"

    assert convs[CONV_LINKED]["messages"] == SEED_MESSAGES
    assert convs[CONV_LINKED]["message_count"] == 2
    assert convs[CONV_LINKED]["metadata"] == {"source": "seed"}
    assert (
        convs[CONV_LINKED]["started_at"]
        == upgraded.before["conversations"][CONV_LINKED]["started_at"]
    )
    assert (
        convs[CONV_LINKED]["archived_at"]
        == upgraded.before["conversations"][CONV_LINKED]["created_at"]
    )
    # No start time: the earliest time known (here it ended before it was archived).
    assert convs[CONV_NO_START]["started_at"] == datetime.fromisoformat("2025-06-02 11:00+00:00")
    assert convs[CONV_NO_USER]["user_id"] is None
    assert convs[CONV_NO_USER]["metadata"] == {"legacy_metadata": ["widget"]}
    # Not an array / null: wrapped and filled, nothing dropped.
    assert convs[CONV_ODD_JSON]["messages"] == [{"sender": "user", "content": "one"}]
    assert convs[CONV_ODD_JSON]["metadata"] == {}
    (test_conversation,) = (c for c in convs.values() if c["user_id"] == "usr_test123")
    assert test_conversation["workflow_name"] == "shopify_onboarding"
    assert test_conversation["message_count"] == 2


def test_the_upgraded_schema_is_exactly_a_new_databases(
    project: Project, upgraded: Upgrade
) -> None:
    assert upgraded.push.returncode == 0
    assert schema_dump(project.url) == project.fresh_schema
    assert scalar(project.url, "select to_regnamespace('identity_legacy') is null") is True
    assert (
        scalar(
            project.url,
            "select extnamespace::regnamespace::text from pg_extension where extname = 'uuid-ossp'",
        )
        == "extensions"
    )
    access = rows(
        project.url,
        """select c.relname, c.relrowsecurity as rls,
                  has_schema_privilege('anon', 'identity', 'usage') as anon_usage,
                  has_table_privilege('anon', c.oid, 'select,insert,update,delete') as anon_any,
                  has_table_privilege('authenticated', c.oid, 'insert,update,delete,truncate')
                    as authenticated_writes
           from pg_class as c where c.relnamespace = 'identity'::regnamespace
            and c.relkind = 'r' order by 1""",
    )
    assert access == [
        {"relname": t, "rls": True, "anon_usage": False, "anon_any": False,
         "authenticated_writes": False}
        for t in sorted((*TABLES, *NEW_TABLES))
    ]  # fmt: skip


def test_the_anon_key_no_longer_reads_the_seed_rows(project: Project, upgraded: Upgrade) -> None:
    assert (upgraded.anon_status_before, upgraded.anon_rows_before) == (200, 5)
    assert upgraded.push.returncode == 0

    def refused() -> bool:
        return anon_get(project, "conversations").status_code == 401

    wait_until(refused, "the anon key still reads identity.conversations after the upgrade")
    for table in TABLES:
        response = anon_get(project, table)
        assert (response.status_code, response.json()["code"]) == (401, "42501")


def test_the_advisor_reports_nothing_after_the_upgrade(project: Project, upgraded: Upgrade) -> None:
    assert upgraded.push.returncode == 0
    # Before the first query the advisor's INFO lint unused_index names every index, on a new
    # database as on this one; a project serving traffic has used them.
    use_every_index(project.url)
    assert advice(project.url) == []


def test_the_sdk_reads_the_seed_rows(project: Project, upgraded: Upgrade) -> None:
    assert upgraded.push.returncode == 0
    environ = {k: v for k, v in project.exports.items() if k != "REDIS_URL"}
    with IdentityClient(environ=environ, env_dir=project.folder, redis_url=None) as client:

        def served() -> bool:
            try:
                client.get_user_profile(LONG_ID)
            except NotFoundError:
                return False
            return True

        wait_until(served, "the project's PostgREST did not serve the upgraded schema")
        profile = client.get_user_profile(LONG_ID)
        assert (profile.shop_domain, profile.email, profile.name, profile.shopify_id) == (
            "long-id-shop.myshopify.com",
            "owner@long-id.example",
            "Long Id",
            "7788",
        )
        assert profile.stats.total_conversations == 2
        assert profile.stats.total_events == 0  # its one event is old: in events_archive

        page = client.get_user_conversations(LONG_ID)
        assert [str(c.id) for c in page.items] == [CONV_NO_START, CONV_LINKED]
        assert page.total == 2
        conversation = client.get_conversation(LONG_ID, CONV_LINKED)
        assert conversation.messages == SEED_MESSAGES
        assert conversation.workflow_name == "support_daily"

        # As the user (RLS): its own rows, nobody else's.
        as_user = client.for_user(LONG_ID)
        assert as_user.get_conversation(LONG_ID, CONV_LINKED).messages == SEED_MESSAGES
        with pytest.raises(NotFoundError):
            client.for_user("usr_ffffffffffffffffffffffff").get_conversation(LONG_ID, CONV_LINKED)


def run_seed_test_queries(db: psycopg.Connection[dict[str, Any]]) -> None:
    """The seed's "Step 3" block, verbatim: its inserts work (the conversation inserted without
    an id gets one), then its clean-up leaves none of its rows."""
    db.execute(SEED_TEST_INSERTS.encode())
    (conversation,) = db.execute(
        "select id, message_count from identity.conversations where user_id = 'usr_test123'"
    ).fetchall()
    assert isinstance(conversation["id"], uuid.UUID)
    assert conversation["message_count"] == 2
    db.execute(SEED_TEST_CLEANUP.encode())
    left = db.execute(
        "select (select count(*) from identity.users where id = 'usr_test123')"
        " + (select count(*) from identity.events where user_id = 'usr_test123') as n"
    ).fetchone()
    assert left == {"n": 0}


def test_the_seed_sql_editor_test_queries_still_work(project: Project, upgraded: Upgrade) -> None:
    assert upgraded.push.returncode == 0
    with psycopg.connect(project.url, row_factory=dict_row) as db:  # one transaction, undone
        # The test rows the seed left behind go with the seed's own clean-up...
        db.execute(SEED_TEST_CLEANUP.encode())
        gone = db.execute("select count(*) as n from identity.users where id = 'usr_test123'")
        assert gone.fetchone() == {"n": 0}
        # ...and the whole block works again.
        run_seed_test_queries(db)
        db.rollback()


def test_the_seed_sql_editor_test_queries_work_on_a_new_database() -> None:
    url = os.environ.get("SUPABASE_DB_URL")
    if not url:
        pytest.fail('SUPABASE_DB_URL is not set: run `eval "$(scripts/stack env)"`', pytrace=False)
    with psycopg.connect(url, row_factory=dict_row) as db:  # one transaction, undone
        run_seed_test_queries(db)
        db.rollback()


def test_a_second_push_changes_nothing(project: Project, upgraded: Upgrade) -> None:
    assert upgraded.push.returncode == 0
    before = all_rows(project.url)
    again = push(project.url)
    assert again.returncode == 0, again.stderr
    assert "Applying migration" not in again.stdout + again.stderr
    assert all_rows(project.url) == before


# ---------------------------------------------------------------------------------------------
# Variants on throwaway databases of the same server
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def scratch(project: Project) -> Iterator[str]:
    name = f"upgrade_{uuid.uuid4().hex[:12]}"
    try:
        yield new_database(project, name)
    finally:
        sql(project.url, f"drop database if exists {name} with (force)")


def test_a_seed_database_as_on_supabase_upgrades_too(project: Project, scratch: str) -> None:
    # On Supabase uuid-ossp is already in schema extensions: the seed's CREATE EXTENSION did
    # nothing, and the upgrade leaves it there.
    make_seed_project(scratch, uuid_ossp_preinstalled=True)
    before = all_rows(scratch)
    done = push(scratch)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {t: sorted(r) for t, r in all_rows(scratch).items()} == {
        t: sorted(r) for t, r in before.items()
    }
    assert schema_dump(scratch) == project.fresh_schema
    assert (
        scalar(
            scratch,
            "select extnamespace::regnamespace::text from pg_extension where extname = 'uuid-ossp'",
        )
        == "extensions"
    )


def test_rows_the_schema_cannot_store_stop_the_push_before_anything_changes(
    scratch: str,
) -> None:
    make_seed_project(scratch, uuid_ossp_preinstalled=True, archive=True)
    sql(
        scratch,
        """insert into identity.users (id, shop_domain)
           values ('USR_Upper1', 'upper.myshopify.com'), ('usr_abc12', 'five.myshopify.com'),
                  ('usr_elsewhere', 'shop.example.com');
           insert into identity.events (user_id, event_type, event_data)
           values (null, 'orphan', '{}');
           -- The archive has no foreign key (LIKE copies none): a user deleted since.
           insert into identity.events_archive (user_id, event_type, event_data)
           values ('usr_deleted1', 'oauth_complete', '{}');""",
    )
    before = all_rows(scratch)

    done = push(scratch)

    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "nothing was changed" in output
    assert (
        "identity.users.id is not usr_ followed by 6-46 of [a-z0-9]: 2 row(s),"
        " e.g. 'USR_Upper1', 'usr_abc12'" in output
    )
    assert "identity.users.shop_domain is not <name>.myshopify.com" in output
    assert "'usr_elsewhere'" in output
    assert "identity.events.user_id is null (every event belongs to a user): 1 row(s)" in output
    assert "identity.events_archive.user_id names no user: 1 row(s)" in output
    # Still the seed's database, rows and all, and no migration recorded.
    assert scalar(scratch, "select format_type(atttypid, atttypmod) from pg_attribute"
                  " where attrelid = 'identity.users'::regclass and attname = 'id'") == (
        "character varying(50)"
    )  # fmt: skip
    assert all_rows(scratch) == before
    assert scalar(scratch, "select to_regnamespace('identity_legacy') is null") is True
    assert scalar(scratch, "select count(*) from supabase_migrations.schema_migrations") == 0


def test_a_database_migrated_before_the_upgrade_path_takes_the_new_migrations(
    project: Project, scratch: str, tmp_path: Path
) -> None:
    # The project as it was: only the migrations of BEFORE_UPGRADE_PATH.
    (tmp_path / "supabase" / "migrations").mkdir(parents=True)
    shutil.copy(ROOT / "supabase" / "config.toml", tmp_path / "supabase" / "config.toml")
    first_version, last_version = BEFORE_UPGRADE_PATH
    old = [m for m in MIGRATIONS if first_version <= m.name.split("_")[0] <= last_version]
    assert len(old) == 4
    for migration in old:
        shutil.copy(migration, tmp_path / "supabase" / "migrations" / migration.name)
    first = push(scratch, workdir=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    sql(
        scratch,
        f"""select identity.get_or_create_user('migrated.myshopify.com', 'm@example.com');
            insert into identity.conversations (id, user_id, started_at, messages)
            select '{CONV_LINKED}', id, '2026-01-01 10:00+00', '[{{"role": "user"}}]'
            from identity.users where shop_domain = 'migrated.myshopify.com';""",
    )
    before = all_rows(scratch)

    # A migration older than the newest applied one: the CLI wants --include-all.
    refused = push(scratch)
    assert refused.returncode != 0
    assert "--include-all" in refused.stdout + refused.stderr
    done = push(scratch, "--include-all")

    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    applied = re.findall(r"Applying migration (\S+)\.\.\.", output)
    assert applied == [m.name for m in MIGRATIONS if m not in old]
    after = all_rows(scratch)
    # The later migrations add one derived column, conversations.search (filled from the
    # messages for the rows already there); every column that was there keeps its values.
    searchable = {cid: row.pop("search") for cid, row in after["conversations"].items()}
    assert after == before
    assert searchable == {CONV_LINKED: ""}  # '[{"role": "user"}]': no content, no words
    assert schema_dump(scratch) == project.fresh_schema


def test_identity_tables_of_another_shape_stop_the_push_naming_what_differs(scratch: str) -> None:
    sql(
        scratch,
        """create schema identity;
           create table identity.users (id bigint primary key, shop text not null);
           insert into identity.users values (1, 'someone.myshopify.com');""",
    )

    done = push(scratch)

    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "neither create nor upgrade" in output
    assert "table identity.conversations is missing" in output
    assert "column identity.users.shop_domain is missing" in output
    assert rows(scratch, "select * from identity.users") == [
        {"id": 1, "shop": "someone.myshopify.com"}
    ]
    assert scalar(scratch, "select to_regnamespace('identity_legacy') is null") is True
