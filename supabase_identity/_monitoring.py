"""Monitoring and maintenance helpers: the archivers' Redis stats and a whole maintenance run.

:func:`read_archiver_stats` is the one place that reads what the archivers keep in Redis for
monitoring (cumulative counters, dead letters, conversations waiting for a user, live
heartbeats). :func:`run_maintenance` runs every maintenance function batch by batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._constants import DEFAULT_EVENT_RETENTION_DAYS, DEFAULT_UNLINKED_RETENTION_DAYS
from ._models import (
    AnalyzeResult,
    ArchiverStats,
    EventsMoveResult,
    RemovedConversation,
    UnlinkedCleanupResult,
)
from ._redis import RedisClient
from ._redis_keys import DEAD_LETTER_KEY, STATS_KEY, UNLINKED_KEY
from .archive import check_health

__all__ = ["MaintenanceRun", "read_archiver_stats", "read_heartbeats", "run_maintenance"]

#: Counters the archiver writes in its stats hash (missing ones are reported as 0).
ARCHIVER_COUNTERS = (
    "archived",
    "rearchived",
    "unchanged",
    "unlinked",
    "linked",
    "failed",
    "passes",
    "pass_errors",
)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def read_heartbeats(redis_client: RedisClient) -> list[dict[str, Any]]:
    """The heartbeat of every live ``--loop`` archiver (the archiver's own health check)."""
    return check_health(redis_client).heartbeats


def read_archiver_stats(redis_client: RedisClient) -> ArchiverStats:
    """What the archivers keep in Redis for monitoring, read in one pipeline plus one hash.

    Reads the counters hash (``identity:archive:stats``), the sizes of the dead-letter hash
    (``identity:archive:dead``) and of the hash of conversations archived without a user
    (``identity:archive:unlinked``), and the live heartbeats (``identity:archive:heartbeats``).
    A counter that is not an integer is reported as 0 rather than failing the whole read.
    """
    pipe = redis_client.pipeline(transaction=False)
    pipe.hgetall(STATS_KEY)
    pipe.hlen(DEAD_LETTER_KEY)
    pipe.hlen(UNLINKED_KEY)
    raw_counters, dead, unlinked = pipe.execute()
    found = {_text(k): _text(v) for k, v in raw_counters.items()}
    counters = {
        name: int(found[name]) if found.get(name, "").lstrip("-").isdigit() else 0
        for name in (*ARCHIVER_COUNTERS, *sorted(set(found) - set(ARCHIVER_COUNTERS)))
    }
    return ArchiverStats(
        counters=counters,
        dead_letters=int(dead),
        unlinked_pending=int(unlinked),
        heartbeats=read_heartbeats(redis_client),
    )


# ------------------------------------------------------------------------------------------------
# maintenance
# ------------------------------------------------------------------------------------------------


@dataclass
class MaintenanceRun:
    """What ``supabase-identity maintain`` did: every batch of each task, added up."""

    dry_run: bool
    events_older_than_days: int
    unlinked_older_than_days: int
    event_batches: list[EventsMoveResult] = field(default_factory=list)
    unlinked_batches: list[UnlinkedCleanupResult] = field(default_factory=list)
    analyze: AnalyzeResult | None = None

    @property
    def events_moved(self) -> int:
        return sum(b.moved for b in self.event_batches)

    @property
    def events_eligible(self) -> int | None:
        return self.event_batches[0].eligible if self.dry_run and self.event_batches else None

    @property
    def removed(self) -> list[RemovedConversation]:
        return [c for b in self.unlinked_batches for c in b.conversations]

    @property
    def unlinked_eligible(self) -> int | None:
        return self.unlinked_batches[0].eligible if self.dry_run and self.unlinked_batches else None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of the run (``maintain --json``)."""

        def cutoff(batches: Iterable[EventsMoveResult | UnlinkedCleanupResult]) -> str | None:
            first = next(iter(batches), None)
            return first.cutoff.isoformat() if first is not None else None

        return {
            "dry_run": self.dry_run,
            "events": {
                "older_than_days": self.events_older_than_days,
                "cutoff": cutoff(self.event_batches),
                "moved": self.events_moved,
                "eligible": self.events_eligible,
                "batches": len(self.event_batches),
            },
            "unlinked_conversations": {
                "older_than_days": self.unlinked_older_than_days,
                "cutoff": cutoff(self.unlinked_batches),
                "deleted": len(self.removed) if not self.dry_run else 0,
                "eligible": self.unlinked_eligible,
                "batches": len(self.unlinked_batches),
                "conversations": [c.model_dump(mode="json") for c in self.removed],
            },
            "analyze": self.analyze.model_dump(mode="json") if self.analyze else None,
        }


class _MaintenanceClient(Protocol):
    def archive_old_events(
        self, older_than_days: int = ..., *, batch_size: int = ..., dry_run: bool = ...
    ) -> EventsMoveResult: ...

    def delete_unlinked_conversations(
        self, older_than_days: int = ..., *, batch_size: int = ..., dry_run: bool = ...
    ) -> UnlinkedCleanupResult: ...

    def analyze_tables(self, *, dry_run: bool = ...) -> AnalyzeResult: ...


def run_maintenance(
    client: _MaintenanceClient,
    *,
    dry_run: bool = False,
    events_older_than_days: int = DEFAULT_EVENT_RETENTION_DAYS,
    unlinked_older_than_days: int = DEFAULT_UNLINKED_RETENTION_DAYS,
    on_batch: Callable[[str, int], None] | None = None,
) -> MaintenanceRun:
    """Every maintenance task, each looped batch by batch (one short transaction per call).

    A task ends when a batch says nothing more is due, or when a batch could take nothing
    (its rows are locked by a concurrent run, which will finish them). ``on_batch(task, n)``
    is called after each batch with the rows it handled (for progress display).
    """
    run = MaintenanceRun(dry_run, events_older_than_days, unlinked_older_than_days)
    while True:
        moved = client.archive_old_events(events_older_than_days, dry_run=dry_run)
        run.event_batches.append(moved)
        if on_batch is not None:
            on_batch("events", moved.moved)
        if dry_run or not moved.more or moved.moved == 0:
            break
    while True:
        deleted = client.delete_unlinked_conversations(unlinked_older_than_days, dry_run=dry_run)
        run.unlinked_batches.append(deleted)
        if on_batch is not None:
            on_batch("unlinked", deleted.deleted)
        if dry_run or not deleted.more or deleted.deleted == 0:
            break
    run.analyze = client.analyze_tables(dry_run=dry_run)
    return run
