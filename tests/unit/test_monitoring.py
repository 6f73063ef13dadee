"""Stats and maintenance without a stack: request shapes (respx), parsing, the Redis reader (a
real redis-server), the batch loop, and how ``stats``/``maintain`` look on a terminal."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import respx
from typer.testing import CliRunner, Result

from supabase_identity import (
    AnalyzeResult,
    APIResponseValidationError,
    AsyncIdentityClient,
    EventsMoveResult,
    IdentityClient,
    PermissionDeniedError,
    UnlinkedCleanupResult,
    ValidationError,
    cli,
    read_archiver_stats,
    run_maintenance,
)
from supabase_identity._cli_render import bar, human_bytes, sparkline

from .conftest import ANON_KEY, CLI_ENV, make_client

AS_OF = datetime(2026, 11, 28, 12, 30, tzinfo=UTC)


def stats_json(*, hour_counts: list[int] | None = None, day_counts: list[int] | None = None) -> Any:
    """What ``rpc/stats`` answers, shaped like identity.stats()."""
    hours = hour_counts if hour_counts is not None else [0] * 20 + [1, 0, 4, 9]
    days = day_counts if day_counts is not None else [0] * 27 + [2, 0, 5]
    first_hour = AS_OF.replace(minute=0) - timedelta(hours=23)
    first_day = AS_OF.date() - timedelta(days=29)
    return {
        "as_of": AS_OF.isoformat(),
        "archival": {
            "archived_per_hour": [
                {"hour": (first_hour + timedelta(hours=n)).isoformat(), "count": c}
                for n, c in enumerate(hours)
            ],
            "archived_24h": sum(hours),
            "latency_samples": 12,
            "latency_avg_seconds": 95.5,
            "latency_p95_seconds": 3060,
            "unlinked_conversations": 3,
            "expiry_samples": 9,
            "before_expiry_avg_seconds": 4500,
            "before_expiry_min_seconds": -2.5,
        },
        "users": {
            "total": 140,
            "new_per_day": [
                {"day": (first_day + timedelta(days=n)).isoformat(), "count": c}
                for n, c in enumerate(days)
            ],
            "new_30d": sum(days),
            "returning": 35,
            "returning_rate": 0.25,
            "conversations_per_user_median": 1,
            "conversations_per_user_p95": 2.8,
            "conversations_per_user_mean": 1.333,
        },
        "storage": {
            "tables": [
                {
                    "name": "conversations",
                    "rows_estimate": 1200,
                    "table_bytes": 5_000_000,
                    "index_bytes": 500_000,
                    "total_bytes": 5_500_000,
                    "seq_scans": 3,
                    "index_scans": 900,
                },
                {
                    "name": "users",
                    "rows_estimate": 140,
                    "table_bytes": 40_960,
                    "index_bytes": 32_768,
                    "total_bytes": 73_728,
                    "seq_scans": 10,
                    "index_scans": 400,
                },
            ],
            "indexes": [
                {
                    "name": "conversations_user_id_started_at_idx",
                    "table": "conversations",
                    "bytes": 300_000,
                    "scans": 880,
                    "unique": False,
                },
                {
                    "name": "events_event_type_created_at_idx",
                    "table": "events",
                    "bytes": 8192,
                    "scans": 0,
                    "unique": False,
                },
            ],
        },
    }


def move_json(moved: int, more: bool, **extra: Any) -> dict[str, Any]:
    base = {"cutoff": "2026-08-30T12:00:00+00:00", "dry_run": False, "moved": moved, "more": more}
    return base | extra


def removed(n: int) -> dict[str, Any]:
    return {
        "id": f"c1d00000-0000-4000-8000-{n:012d}",
        "source_id": f"agents-{n}",
        "merchant_id": None,
        "pending_user_id": "usr_nobody0000000000000001" if n == 1 else None,
        "started_at": "2026-11-01T09:00:00+00:00",
        "created_at": "2026-11-01T10:00:00+00:00",
        "message_count": n,
    }


def cleanup_json(ids: list[int], more: bool, dry_run: bool = False, **extra: Any) -> Any:
    return {
        "cutoff": "2026-11-21T12:00:00+00:00",
        "dry_run": dry_run,
        "deleted": 0 if dry_run else len(ids),
        "more": more,
        "conversations": [removed(n) for n in ids],
    } | extra


ANALYZE_JSON = {
    "dry_run": False,
    "tables": ["conversations", "events", "events_archive", "users"],
    "analyzed_at": "2026-11-28T12:30:00+00:00",
}


# ------------------------------------------------------------------------------------------------
# SDK: requests and parsing
# ------------------------------------------------------------------------------------------------


def test_get_stats_sends_as_of_and_parses_the_model(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    route = api.post("/rpc/stats").respond(200, json=stats_json())
    stats = client.get_stats(as_of=AS_OF)
    assert json.loads(route.calls.last.request.content) == {"as_of": AS_OF.isoformat()}
    assert route.calls.last.request.headers["content-profile"] == "identity"
    assert stats.as_of == AS_OF
    assert [h.count for h in stats.archival.archived_per_hour[-3:]] == [0, 4, 9]
    assert stats.archival.latency_p95_seconds == 3060
    assert stats.users.new_per_day[-1].day == AS_OF.date()
    assert stats.users.returning_rate == 0.25
    assert stats.storage.indexes[1].scans == 0

    client.get_stats()
    assert json.loads(route.calls.last.request.content) == {}


async def test_async_get_stats(aclient: AsyncIdentityClient, api: respx.MockRouter) -> None:
    api.post("/rpc/stats").respond(200, json=stats_json())
    stats = await aclient.get_stats(as_of=AS_OF)
    assert stats.users.total == 140


def test_get_stats_refuses_a_naive_as_of(client: IdentityClient) -> None:
    with pytest.raises(ValidationError) as caught:
        client.get_stats(as_of=datetime(2026, 1, 1))
    assert caught.value.field == "as_of"


def test_an_unexpected_answer_names_the_migrations(
    client: IdentityClient, api: respx.MockRouter
) -> None:
    api.post("/rpc/stats").respond(200, json={"as_of": AS_OF.isoformat()})
    with pytest.raises(APIResponseValidationError, match="migrations"):
        client.get_stats()
    api.post("/rpc/archive_old_events").respond(200, json=[1, 2])
    with pytest.raises(APIResponseValidationError, match="archive_old_events"):
        client.archive_old_events()


def test_maintenance_requests(client: IdentityClient, api: respx.MockRouter) -> None:
    move = api.post("/rpc/archive_old_events").respond(200, json=move_json(5, True))
    assert client.archive_old_events() == EventsMoveResult.model_validate(move_json(5, True))
    assert json.loads(move.calls.last.request.content) == {
        "older_than_days": 90,
        "batch_size": 5000,
        "dry_run": False,
    }
    clean = api.post("/rpc/delete_unlinked_conversations").respond(
        200, json=cleanup_json([1], False)
    )
    result = client.delete_unlinked_conversations(30, batch_size=10, dry_run=True)
    assert json.loads(clean.calls.last.request.content) == {
        "older_than_days": 30,
        "batch_size": 10,
        "dry_run": True,
    }
    assert result.conversations[0].pending_user_id == "usr_nobody0000000000000001"
    analyze = api.post("/rpc/analyze_tables").respond(200, json=ANALYZE_JSON)
    assert client.analyze_tables().tables == ANALYZE_JSON["tables"]
    assert json.loads(analyze.calls.last.request.content) == {"dry_run": False}


async def test_async_maintenance_requests(
    aclient: AsyncIdentityClient, api: respx.MockRouter
) -> None:
    api.post("/rpc/archive_old_events").respond(200, json=move_json(0, False))
    api.post("/rpc/delete_unlinked_conversations").respond(200, json=cleanup_json([], False))
    api.post("/rpc/analyze_tables").respond(200, json=ANALYZE_JSON)
    assert (await aclient.archive_old_events(7)).moved == 0
    assert (await aclient.delete_unlinked_conversations()).conversations == []
    assert (await aclient.analyze_tables()).analyzed_at is not None


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.archive_old_events(0), "older_than_days"),
        (lambda c: c.archive_old_events(True), "older_than_days"),
        (lambda c: c.archive_old_events(1.5), "older_than_days"),
        (lambda c: c.archive_old_events(90, batch_size=0), "batch_size"),
        (lambda c: c.archive_old_events(90, batch_size=50_001), "batch_size"),
        (lambda c: c.delete_unlinked_conversations(-1), "older_than_days"),
        (lambda c: c.delete_unlinked_conversations(7, dry_run="yes"), "dry_run"),
        (lambda c: c.analyze_tables(dry_run=1), "dry_run"),
    ],
)
def test_bad_maintenance_arguments_send_nothing(
    client: IdentityClient,
    api: respx.MockRouter,
    call: Callable[[IdentityClient], Any],
    field: str,
) -> None:
    with pytest.raises(ValidationError) as caught:
        call(client)
    assert caught.value.field == field
    assert not api.calls


def test_a_public_key_is_refused_before_any_request(
    api: respx.MockRouter, empty_env_dir: Path
) -> None:
    with make_client(empty_env_dir, key=ANON_KEY) as public:
        with pytest.raises(PermissionDeniedError, match="service key"):
            public.get_stats()
        with pytest.raises(PermissionDeniedError):
            public.delete_unlinked_conversations()
    assert not api.calls


# ------------------------------------------------------------------------------------------------
# the archivers' Redis stats (a real redis-server)
# ------------------------------------------------------------------------------------------------


def test_read_archiver_stats(redis_client: redis.Redis) -> None:
    redis_client.hset(
        "identity:archive:stats",
        mapping={"archived": 12, "failed": 2, "pass_errors": 1, "passes": 4, "custom": 7},
    )
    redis_client.hset("identity:archive:stats", "unchanged", "not a number")
    redis_client.hset("identity:archive:dead", mapping={"c1": "{}", "c2": "{}"})
    redis_client.hset("identity:archive:unlinked", "c3", "{}")
    live = {"worker": "w1", "at": "x", "expires": time.time() + 60}
    redis_client.hset(
        "identity:archive:heartbeats",
        mapping={
            "w1": json.dumps(live),
            "w2": "not json",  # hostile: dropped (and pruned), the rest still read
            "w3": json.dumps({"worker": "w3", "expires": time.time() - 1}),  # expired
        },
    )
    stats = read_archiver_stats(redis_client)
    assert stats.counters == {
        "archived": 12,
        "rearchived": 0,
        "unchanged": 0,  # hostile value: reported as 0, the rest still read
        "unlinked": 0,
        "linked": 0,
        "failed": 2,
        "passes": 4,
        "pass_errors": 1,
        "custom": 7,
    }
    assert stats.failed_attempts == 3
    assert stats.dead_letters == 2
    assert stats.unlinked_pending == 1
    assert stats.heartbeats == [live]
    assert redis_client.hkeys("identity:archive:heartbeats") == [b"w1"]


def test_read_archiver_stats_on_an_empty_redis(redis_client: redis.Redis) -> None:
    stats = read_archiver_stats(redis_client)
    assert set(stats.counters.values()) == {0}
    assert (stats.dead_letters, stats.unlinked_pending, stats.heartbeats) == (0, 0, [])


# ------------------------------------------------------------------------------------------------
# run_maintenance: the batch loop
# ------------------------------------------------------------------------------------------------


class FakeMaintenance:
    """Answers each call with the next scripted result; records the calls."""

    def __init__(
        self, moves: list[EventsMoveResult], cleanups: list[UnlinkedCleanupResult]
    ) -> None:
        self.moves, self.cleanups = moves, cleanups
        self.calls: list[tuple[str, int, bool]] = []

    def archive_old_events(
        self, older_than_days: int = 90, *, batch_size: int = 5000, dry_run: bool = False
    ) -> EventsMoveResult:
        self.calls.append(("events", older_than_days, dry_run))
        return self.moves.pop(0)

    def delete_unlinked_conversations(
        self, older_than_days: int = 7, *, batch_size: int = 1000, dry_run: bool = False
    ) -> UnlinkedCleanupResult:
        self.calls.append(("unlinked", older_than_days, dry_run))
        return self.cleanups.pop(0)

    def analyze_tables(self, *, dry_run: bool = False) -> AnalyzeResult:
        self.calls.append(("analyze", 0, dry_run))
        return AnalyzeResult.model_validate(ANALYZE_JSON | {"dry_run": dry_run})


def _moves(*pairs: tuple[int, bool]) -> list[EventsMoveResult]:
    return [EventsMoveResult.model_validate(move_json(n, more)) for n, more in pairs]


def _cleanups(*batches: tuple[list[int], bool]) -> list[UnlinkedCleanupResult]:
    return [UnlinkedCleanupResult.model_validate(cleanup_json(i, m)) for i, m in batches]


def test_run_maintenance_loops_until_nothing_is_due() -> None:
    fake = FakeMaintenance(
        _moves((2, True), (2, True), (1, False)), _cleanups(([1, 2], True), ([3], False))
    )
    batches: list[tuple[str, int]] = []
    run = run_maintenance(
        fake,
        events_older_than_days=30,
        unlinked_older_than_days=3,
        on_batch=lambda task, n: batches.append((task, n)),
    )
    assert run.events_moved == 5
    assert [str(c.source_id) for c in run.removed] == ["agents-1", "agents-2", "agents-3"]
    assert [c[0] for c in fake.calls] == ["events"] * 3 + ["unlinked"] * 2 + ["analyze"]
    assert {c[1] for c in fake.calls if c[0] == "events"} == {30}
    assert {c[1] for c in fake.calls if c[0] == "unlinked"} == {3}
    assert batches == [
        ("events", 2),
        ("events", 2),
        ("events", 1),
        ("unlinked", 2),
        ("unlinked", 1),
    ]
    assert run.as_dict()["unlinked_conversations"]["deleted"] == 3


def test_run_maintenance_stops_when_a_batch_takes_nothing() -> None:
    """Rows locked by a concurrent run: more=True but nothing taken ends the task, no spin."""
    fake = FakeMaintenance(_moves((0, True)), _cleanups(([], True)))
    run = run_maintenance(fake)
    assert [c[0] for c in fake.calls] == ["events", "unlinked", "analyze"]
    assert run.events_moved == 0 and run.removed == []


def test_run_maintenance_dry_run_makes_one_call_each() -> None:
    fake = FakeMaintenance(
        [EventsMoveResult.model_validate(move_json(0, True, dry_run=True, eligible=12_000))],
        [UnlinkedCleanupResult.model_validate(cleanup_json([1], True, True, eligible=40))],
    )
    run = run_maintenance(fake, dry_run=True)
    assert [(c[0], c[2]) for c in fake.calls] == [
        ("events", True),
        ("unlinked", True),
        ("analyze", True),
    ]
    assert (run.events_eligible, run.unlinked_eligible) == (12_000, 40)


# ------------------------------------------------------------------------------------------------
# charts
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 1, 2, 4, 8], "·▁▂▄█"),
        ([3, 3], "██"),
        ([0, 0], "··"),
        ([], ""),
        ([1, 100], "▁█"),
    ],
)
def test_sparkline(values: list[int], expected: str) -> None:
    assert sparkline(values).plain == expected


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 kB"),
        (5 * 1024**2, "5.0 MB"),
        (3 * 1024**4, "3.0 TB"),
    ],
)
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text


def test_bar_is_proportional() -> None:
    assert bar(50, 100, 16).plain == "█" * 8
    assert bar(1, 1000, 16).plain == "█"  # anything above zero shows
    assert bar(0, 100, 16).plain == ""


# ------------------------------------------------------------------------------------------------
# the CLI
# ------------------------------------------------------------------------------------------------

Invoke = Callable[..., Result]


@pytest.fixture
def invoke(api: respx.MockRouter, empty_env_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """The app in-process on the respx gateway; ``columns`` sets the terminal width."""
    runner = CliRunner()

    def run(
        *args: str, tty: bool = False, columns: int = 80, redis_url: str | None = None
    ) -> Result:
        monkeypatch.setattr(cli, "_stdout_is_terminal", lambda: tty)
        monkeypatch.setattr(cli, "_stderr_is_terminal", lambda: False)
        monkeypatch.setattr(cli.out.console, "_width", columns)
        env: dict[str, str | None] = {**CLI_ENV, "REDIS_URL": redis_url}
        return runner.invoke(cli.app, ["--env-dir", str(empty_env_dir), *args], env=env)

    return run


def test_stats_json_without_redis(invoke: Invoke, api: respx.MockRouter) -> None:
    api.post("/rpc/stats").respond(200, json=stats_json())
    result = invoke("stats", "--as-of", "2026-11-28T12:30:00")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["archiver"] is None
    assert data["database"]["users"]["total"] == 140
    assert "REDIS_URL is not set" in result.stderr
    sent = json.loads(api.calls.last.request.content)
    assert sent == {"as_of": "2026-11-28T12:30:00+00:00"}  # a naive --as-of is UTC


def test_stats_rejects_a_bad_as_of(invoke: Invoke) -> None:
    result = invoke("stats", "--as-of", "yesterday")
    assert result.exit_code == 2
    assert "--as-of" in result.stderr


@pytest.mark.parametrize("columns", [80, 120])
def test_stats_on_a_terminal(
    invoke: Invoke,
    api: respx.MockRouter,
    redis_server: str,
    redis_client: redis.Redis,
    columns: int,
) -> None:
    api.post("/rpc/stats").respond(200, json=stats_json())
    redis_client.hset("identity:archive:stats", mapping={"failed": 2, "pass_errors": 1})
    result = invoke("stats", tty=True, columns=columns, redis_url=redis_server)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns, "\n".join(lines)
    text = result.stdout
    assert "14 conversations  " + "·" * 20 + "▁·▄█  peak 9/h" in text
    assert "7 in 30 days  " + "·" * 27 + "▄·█  peak 5/day" in text
    assert "avg 95.5 s · p95 51.0 min · 12 with an end or expiry" in text
    assert "before expiry         avg 75.0 min · closest -2.5 s · 9 with an expiry" in text
    assert "failed attempts       3 (conversations 2, crashed passes 1)" in text
    assert "140 · returning 35 (25.0%)" in text
    assert "median 1 · p95 2.8 · mean 1.33" in text
    assert re.search(r"conversations\s+1,200\s+4\.8 MB\s+488\.3 kB\s+5\.2 MB", text)
    bars = re.search(r"5\.2 MB\s+(█+)", text)
    assert (bars is not None) == (columns >= 100)  # size bars only where there is room
    if bars is not None:
        assert len(bars.group(1)) == 16  # the largest table fills the bar


def test_maintain_json(invoke: Invoke, api: respx.MockRouter) -> None:
    api.post("/rpc/archive_old_events").mock(
        side_effect=[
            httpx.Response(200, json=move_json(5000, True)),
            httpx.Response(200, json=move_json(12, False)),
        ]
    )
    api.post("/rpc/delete_unlinked_conversations").respond(200, json=cleanup_json([1, 2], False))
    api.post("/rpc/analyze_tables").respond(200, json=ANALYZE_JSON)
    result = invoke("maintain", "--events-older-than", "30")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["events"] == {
        "older_than_days": 30,
        "cutoff": "2026-08-30T12:00:00+00:00",
        "moved": 5012,
        "eligible": None,
        "batches": 2,
    }
    assert [c["source_id"] for c in report["unlinked_conversations"]["conversations"]] == [
        "agents-1",
        "agents-2",
    ]
    assert report["unlinked_conversations"]["older_than_days"] == 7


def test_maintain_dry_run_on_a_terminal(invoke: Invoke, api: respx.MockRouter) -> None:
    api.post("/rpc/archive_old_events").respond(
        200, json=move_json(0, True, dry_run=True, eligible=12_345)
    )
    api.post("/rpc/delete_unlinked_conversations").respond(
        200, json=cleanup_json([1, 2], True, True, eligible=3)
    )
    api.post("/rpc/analyze_tables").respond(
        200, json=ANALYZE_JSON | {"dry_run": True, "analyzed_at": None}
    )
    result = invoke("maintain", "--dry-run", tty=True)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert text.startswith("dry run: nothing was changed\n")
    assert "events older than 90 days (before 2026-08-30 12:00 UTC): 12,345 would move" in text
    assert ("conversations unlinked for more than 7 days: 3 would be deleted (2 listed)") in text
    assert re.search(r"agents-1\s+usr_nobody0000000000000001\s+1\s+2026-11-01 10:00", text)
    assert "analyze: conversations, events, events_archive, users (not run)" in text
    assert all(json.loads(c.request.content)["dry_run"] is True for c in api.calls)
