"""Stats and maintenance against the local stack: the SDK over real HTTP, the CLI, pg_cron.

Each test seeds its own rows with psycopg (SUPABASE_DB_URL, tests only) at a random instant in
the past century, and passes ``as_of`` (stats) or a cutoff (maintenance) that only its own rows
can meet, so rows left by other tests never change the figures. Rows are deleted afterwards.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from supabase_identity import AsyncIdentityClient, IdentityClient, run_maintenance

from .conftest import stack_variable

BIN = Path(sys.executable).parent / "supabase-identity"


@pytest.fixture(scope="module")
def db() -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(stack_variable("SUPABASE_DB_URL"), autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def client() -> Iterator[IdentityClient]:
    with IdentityClient(
        url=stack_variable("SUPABASE_URL"),
        key=stack_variable("SUPABASE_SERVICE_ROLE_KEY"),
        redis_url=None,
    ) as c:
        yield c


@dataclass
class Seeded:
    """A private dataset: its users, conversations and events, dated around ``as_of``."""

    as_of: datetime
    users: list[str]
    conversations: list[str]
    events: list[str]


def _uid() -> str:
    return "usr_" + uuid.uuid4().hex[:24]


@pytest.fixture
def seeded(db: psycopg.Connection[Any]) -> Iterator[Seeded]:
    """Three users, five conversations, three events, all before a random past ``as_of``.

    Figures at ``as_of`` (worked out by hand):
      archived per hour: 2 in as_of's hour, 1 three hours before, 1 the day before (outside);
        latency samples 3 (600 s, 1800 s, 0 s): average 800 s, p95 1680 s.
      users: 3, new on as_of's day 1 and 10 days before 2; returning 1 (rate 0.3333);
        conversations per user (0, 1, 3): median 1, p95 2.8, mean 1.333.
      unlinked: 1.
    """
    day0 = datetime(1971, 1, 1, tzinfo=UTC) + timedelta(days=random.randrange(10_000))
    as_of = day0.replace(hour=12, minute=30)
    u1, u2, u3 = (_uid() for _ in range(3))
    seed = Seeded(as_of, [u1, u2, u3], [], [])
    users = [
        (u1, as_of - timedelta(hours=2), as_of - timedelta(hours=1)),  # new today
        (u2, as_of - timedelta(days=10), as_of - timedelta(days=2)),  # returning
        (u3, as_of - timedelta(days=10), as_of - timedelta(days=10)),  # never back
    ]
    hour = as_of.replace(minute=0)
    conversations: list[tuple[str | None, datetime | None, datetime]] = [
        # (user, ended_at, archived_at)
        (u1, hour + timedelta(minutes=10), hour + timedelta(minutes=20)),  # 600 s
        (u1, hour - timedelta(hours=3, minutes=30), hour - timedelta(hours=3)),  # 1800 s
        (u1, hour + timedelta(minutes=29), hour + timedelta(minutes=25)),  # ended later: 0 s
        (u2, None, as_of - timedelta(days=1, hours=1)),  # the day before: outside the window
        (None, None, hour - timedelta(hours=3, minutes=10)),  # unlinked, no end: no sample
    ]
    try:
        with db.cursor() as cur:
            for user_id, created, seen in users:
                cur.execute(
                    "insert into identity.users (id, shop_domain, created_at, last_seen) "
                    "values (%s, %s, %s, %s)",
                    (user_id, f"{user_id[4:]}.myshopify.com", created, seen),
                )
            for owner, ended, archived in conversations:
                cid = str(uuid.uuid4())
                seed.conversations.append(cid)
                cur.execute(
                    "insert into identity.conversations "
                    "(id, user_id, started_at, ended_at, created_at, archived_at) "
                    "values (%s, %s, %s, %s, %s, %s)",
                    (cid, owner, archived - timedelta(hours=1), ended, archived, archived),
                )
        yield seed
    finally:
        with db.cursor() as cur:
            cur.execute(
                "delete from identity.conversations where id = any(%s)", (seed.conversations,)
            )
            cur.execute("delete from identity.users where id = any(%s)", (seed.users,))


def _assert_figures(stats: Any, seed: Seeded) -> None:
    archival, users = stats.archival, stats.users
    assert stats.as_of == seed.as_of
    assert len(archival.archived_per_hour) == 24
    assert [h.count for h in archival.archived_per_hour[-4:]] == [1, 0, 0, 2]
    assert archival.archived_per_hour[-1].hour == seed.as_of.replace(minute=0)
    assert archival.archived_24h == 3 + 1  # the unlinked one is archived in the window too
    assert archival.latency_samples == 3
    assert archival.latency_avg_seconds == 800
    assert archival.latency_p95_seconds == 1680
    assert archival.unlinked_conversations == 1
    assert users.total == 3
    assert users.new_30d == 3
    per_day = {d.day: d.count for d in users.new_per_day if d.count}
    today = seed.as_of.date()
    assert per_day == {today: 1, today - timedelta(days=10): 2}
    assert users.new_per_day[-1].day == today
    assert len(users.new_per_day) == 30
    assert users.returning == 1
    assert users.returning_rate == pytest.approx(0.3333, abs=1e-9)
    assert users.conversations_per_user_median == 1
    assert users.conversations_per_user_p95 == 2.8
    assert users.conversations_per_user_mean == pytest.approx(1.333, abs=1e-9)
    names = {t.name for t in stats.storage.tables}
    assert names == {"users", "conversations", "events", "events_archive", "compliance_audit"}
    # compliance_audit is empty until a first redaction (its indexes still take a page).
    assert all(
        t.total_bytes >= t.table_bytes >= 0 and t.total_bytes > 0 for t in stats.storage.tables
    )
    assert all(t.table_bytes > 0 for t in stats.storage.tables if t.name != "compliance_audit")
    assert "events_created_at_idx" in {i.name for i in stats.storage.indexes}


def test_get_stats_exact_figures(client: IdentityClient, seeded: Seeded) -> None:
    _assert_figures(client.get_stats(as_of=seeded.as_of), seeded)


async def test_async_get_stats_exact_figures(seeded: Seeded) -> None:
    async with AsyncIdentityClient(
        url=stack_variable("SUPABASE_URL"),
        key=stack_variable("SUPABASE_SERVICE_ROLE_KEY"),
        redis_url=None,
    ) as aclient:
        _assert_figures(await aclient.get_stats(as_of=seeded.as_of), seeded)


def test_stats_cli_json_has_both_sources(seeded: Seeded) -> None:
    done = subprocess.run(
        [str(BIN), "stats", "--json", "--as-of", seeded.as_of.isoformat()],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["database"]["users"]["total"] == 3
    assert data["database"]["archival"]["latency_p95_seconds"] == 1680
    archiver = data["archiver"]
    assert archiver is not None, done.stderr  # REDIS_URL is set by the stack's environment
    assert set(archiver) == {"counters", "dead_letters", "unlinked_pending", "heartbeats"}
    assert {"archived", "failed", "passes", "pass_errors"} <= set(archiver["counters"])


# ------------------------------------------------------------------------------------------------
# maintenance
# ------------------------------------------------------------------------------------------------


@dataclass
class Old:
    """Rows dated in 1980 and 1999 and a cutoff (``days``) at 1990-01-01 between them."""

    days: int
    user: str
    old_events: list[str]
    recent_event: str
    old_unlinked: list[str]
    old_linked: str
    recent_unlinked: str


@pytest.fixture
def old_rows(db: psycopg.Connection[Any]) -> Iterator[Old]:
    user = _uid()
    rows = Old(
        days=(date.today() - date(1990, 1, 1)).days,
        user=user,
        old_events=[str(uuid.uuid4()) for _ in range(5)],
        recent_event=str(uuid.uuid4()),
        old_unlinked=[str(uuid.uuid4()) for _ in range(3)],
        old_linked=str(uuid.uuid4()),
        recent_unlinked=str(uuid.uuid4()),
    )
    old, recent = datetime(1980, 6, 1, tzinfo=UTC), datetime(1999, 6, 1, tzinfo=UTC)
    conversations = [
        *((cid, None, old + timedelta(minutes=n)) for n, cid in enumerate(rows.old_unlinked)),
        (rows.old_linked, user, old),
        (rows.recent_unlinked, None, recent),
    ]
    try:
        with db.cursor() as cur:
            cur.execute(
                "insert into identity.users (id, shop_domain) values (%s, %s)",
                (user, f"{user[4:]}.myshopify.com"),
            )
            for n, eid in enumerate(rows.old_events):
                cur.execute(
                    "insert into identity.events (id, user_id, event_type, created_at) "
                    "values (%s, %s, 'old', %s)",
                    (eid, user, old + timedelta(minutes=n)),
                )
            cur.execute(
                "insert into identity.events (id, user_id, event_type, created_at) "
                "values (%s, %s, 'recent', %s)",
                (rows.recent_event, user, recent),
            )
            for cid, owner, created in conversations:
                cur.execute(
                    "insert into identity.conversations (id, user_id, started_at, created_at) "
                    "values (%s, %s, %s, %s)",
                    (cid, owner, created, created),
                )
        yield rows
    finally:
        with db.cursor() as cur:
            ids = [c[0] for c in conversations]
            cur.execute("delete from identity.conversations where id = any(%s)", (ids,))
            cur.execute("delete from identity.users where id = %s", (user,))


def _where(db: psycopg.Connection[Any], table: str, ids: list[str]) -> set[str]:
    with db.cursor() as cur:
        cur.execute(f"select id::text from identity.{table} where id = any(%s::uuid[])", (ids,))
        return {row[0] for row in cur.fetchall()}


def test_run_maintenance_moves_deletes_and_keeps(
    client: IdentityClient, db: psycopg.Connection[Any], old_rows: Old
) -> None:
    dry = run_maintenance(
        client,
        dry_run=True,
        events_older_than_days=old_rows.days,
        unlinked_older_than_days=old_rows.days,
    )
    assert dry.events_eligible == 5
    assert dry.unlinked_eligible == 3
    assert _where(db, "events", old_rows.old_events) == set(old_rows.old_events)
    assert dry.analyze is not None and dry.analyze.analyzed_at is None

    # Batches of 2 through the SDK: 2 + 2 + 1 events.
    moved = [client.archive_old_events(old_rows.days, batch_size=2).moved for _ in range(3)]
    assert moved == [2, 2, 1]
    done = run_maintenance(
        client, events_older_than_days=old_rows.days, unlinked_older_than_days=old_rows.days
    )
    assert done.events_moved == 0
    assert {str(c.id) for c in done.removed} == set(old_rows.old_unlinked)
    assert done.analyze is not None and done.analyze.analyzed_at is not None

    everything = [*old_rows.old_events, old_rows.recent_event]
    assert _where(db, "events", everything) == {old_rows.recent_event}
    assert _where(db, "events_archive", everything) == set(old_rows.old_events)
    kept = [*old_rows.old_unlinked, old_rows.old_linked, old_rows.recent_unlinked]
    assert _where(db, "conversations", kept) == {old_rows.old_linked, old_rows.recent_unlinked}


def test_a_locked_batch_is_skipped_not_waited_for(client: IdentityClient, old_rows: Old) -> None:
    """Another transaction holds the oldest event: the move takes the others and returns."""
    with psycopg.connect(stack_variable("SUPABASE_DB_URL")) as holder:
        holder.execute(
            "select 1 from identity.events where id = %s for update", (old_rows.old_events[0],)
        )
        result = client.with_options(max_retries=0, timeout=20).archive_old_events(
            old_rows.days, batch_size=10
        )
        assert result.moved == 4
        assert result.more is True  # the locked one is still due
        holder.rollback()
    assert client.archive_old_events(old_rows.days, batch_size=10).moved == 1


def test_maintain_cli_reports_what_it_removed(old_rows: Old) -> None:
    days = str(old_rows.days)
    done = subprocess.run(
        [
            str(BIN),
            "maintain",
            "--json",
            "--events-older-than",
            days,
            "--unlinked-older-than",
            days,
        ],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["dry_run"] is False
    assert report["events"]["moved"] == 5
    unlinked = report["unlinked_conversations"]
    assert unlinked["deleted"] == 3
    assert {c["id"] for c in unlinked["conversations"]} == set(old_rows.old_unlinked)
    assert report["analyze"]["tables"] == ["conversations", "events", "events_archive", "users"]


# ------------------------------------------------------------------------------------------------
# pg_cron
# ------------------------------------------------------------------------------------------------


def test_pg_cron_jobs_exist_and_their_commands_run(db: psycopg.Connection[Any]) -> None:
    """The jobs `supabase db push` scheduled, each command run as pg_cron runs it: one
    top-level statement on its own connection (so the DO loops may COMMIT between batches)."""
    with db.cursor() as cur:
        cur.execute(
            "select jobname, command from cron.job where jobname like 'identity-%' order by 1"
        )
        jobs = dict(cur.fetchall())
    assert sorted(jobs) == [
        "identity-analyze",
        "identity-archive-old-events",
        "identity-delete-unlinked-conversations",
    ]
    for command in jobs.values():
        with psycopg.connect(stack_variable("SUPABASE_DB_URL"), autocommit=True) as conn:
            conn.execute(command)  # raises if the job would fail
