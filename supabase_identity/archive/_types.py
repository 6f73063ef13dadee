"""The archiver's configuration, its report, and the typed rows that pass between its parts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, Final, Protocol, TypeVar

from .._exceptions import ValidationError

__all__ = ["ArchiveReport", "ArchiverConfig", "Candidate", "Page", "ReadyRow", "RpcCaller"]

_V = TypeVar("_V")

#: Upper bound of ``batch_rows``: PostgREST's default (and Supabase's) ``db-max-rows``.
MAX_BATCH_ROWS: Final = 1000


class RpcCaller(Protocol):
    """What the archiver needs from an identity client: one PostgREST RPC call with retries."""

    def rpc(
        self, function: str, params: Mapping[str, Any], *, encoded: bytes | None = None
    ) -> Any: ...

    def flush_events(self) -> Any: ...


@dataclass(frozen=True)
class ArchiverConfig:
    """Tuning knobs; the defaults suit one archiver per service next to a busy agents service."""

    #: Archive conversations whose keys expire within this window.
    window: timedelta = timedelta(hours=2)
    #: Conversations per upsert request, and per read/claim page.
    batch_rows: int = 200
    #: Serialized bytes per upsert request (well under the gateway's body limit).
    batch_bytes: int = 4 * 1024 * 1024
    #: Upsert requests in flight at once while the next page is read (1 = strictly sequential).
    upserts_in_flight: int = 2
    #: How long a claim lives without renewal. Its owner renews it every third of this while
    #: it runs, so a dead worker's claims are free again this long after it died.
    lease: timedelta = timedelta(seconds=10)
    #: Time between passes in ``run_forever``.
    interval: timedelta = timedelta(minutes=5)
    #: Also SCAN for ``conversation:*`` keys that are not in the due index (legacy writers).
    scan_legacy: bool = True
    #: COUNT hint for SCAN/ZSCAN/HSCAN pages.
    scan_count: int = 1000
    #: Longest message field kept whole (bytes); longer ones are truncated with an issue.
    max_field_bytes: int = 256 * 1024
    #: Message sequence numbers probed past the last one found before a conversation is taken
    #: as complete: gaps shorter than this (a message deleted, numbering from 1) are crossed.
    probe_gap: int = 16
    #: Most messages read for one conversation; the rest are left out with an issue.
    max_messages: int = 100_000
    #: Backoff while Supabase or Redis is unreachable: doubles from min to max, with jitter.
    backoff_min: timedelta = timedelta(seconds=1)
    backoff_max: timedelta = timedelta(minutes=5)
    #: How long shutdown waits for the current batch before releasing its leases.
    shutdown_grace: timedelta = timedelta(seconds=30)

    def __post_init__(self) -> None:
        if not 1 <= self.batch_rows <= MAX_BATCH_ROWS:
            # PostgREST returns at most db-max-rows (1000 on Supabase) rows of a function's
            # result: a larger batch would be stored but its statuses cut off, never marked.
            raise ValidationError(
                f"batch_rows must be between 1 and {MAX_BATCH_ROWS}",
                field="batch_rows",
                rule="range",
            )
        if self.batch_bytes < 1024:
            raise ValidationError(
                "batch_bytes must be at least 1024", field="batch_bytes", rule="min"
            )
        if self.window <= timedelta(0):
            raise ValidationError("window must be positive", field="window", rule="positive")
        if self.lease < timedelta(seconds=1):
            raise ValidationError("lease must be at least 1 s", field="lease", rule="min")
        if self.probe_gap < 1:
            raise ValidationError("probe_gap must be at least 1", field="probe_gap", rule="min")


_COUNTERS: Final = (
    "found",
    "archived",
    "rearchived",
    "unchanged",
    "unlinked",
    "linked",
    "leased_elsewhere",
    "vanished",
    "unlinked_dropped",
    "failed_count",
    "repaired_count",
)

#: Conversations a report names in ``failed``, and in ``issues``. Beyond it they are counted
#: only, so a report's memory does not grow with the number of conversations a pass meets (nor
#: ``ConversationArchiver.totals`` with the passes of a long-running loop); every reason is
#: still kept, in the dead-letter hash or in the row's ``metadata.archive.issues``.
MAX_NAMED: Final = 1000


@dataclass
class ArchiveReport:
    """What one pass did.

    ``failed`` maps conversation ids to the reason they were not archived, and ``issues`` to what
    was repaired in them, for the first :data:`MAX_NAMED` of each; ``failed_count`` and
    ``repaired_count`` count them all.
    """

    found: int = 0
    archived: int = 0
    rearchived: int = 0
    unchanged: int = 0
    unlinked: int = 0
    linked: int = 0
    leased_elsewhere: int = 0
    vanished: int = 0
    #: ``identity:archive:unlinked`` entries dropped: row linked elsewhere, or Redis copy gone.
    unlinked_dropped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    issues: dict[str, list[str]] = field(default_factory=dict)
    failed_count: int = 0
    repaired_count: int = 0
    seconds: float = 0.0

    def add_failure(self, conversation_id: str, reason: str) -> None:
        """Count a conversation not archived; name it while fewer than MAX_NAMED are."""
        self.failed_count += _name(self.failed, conversation_id, reason)

    def add_issues(self, conversation_id: str, issues: list[str]) -> None:
        """Count a repaired conversation; name it while fewer than MAX_NAMED are."""
        self.repaired_count += _name(self.issues, conversation_id, issues)

    def merge(self, other: ArchiveReport) -> None:
        for name in _COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        _fill(self.failed, other.failed)
        _fill(self.issues, other.issues)

    @property
    def done(self) -> int:
        """Conversations settled so far: stored, already stored, or failed."""
        return self.archived + self.rearchived + self.unchanged + self.failed_count

    def summary(self) -> str:
        """One log line."""
        return (
            f"found={self.found} archived={self.archived} rearchived={self.rearchived} "
            f"unchanged={self.unchanged} unlinked={self.unlinked} linked={self.linked} "
            f"failed={self.failed_count}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _name(named: dict[str, _V], key: str, value: _V) -> int:
    """Put ``key`` in ``named`` if it is there already or there is room; 1 if it was not there."""
    new = key not in named
    if not new or len(named) < MAX_NAMED:
        named[key] = value
    return int(new)


def _fill(named: dict[str, _V], more: Mapping[str, _V]) -> None:
    """Add ``more`` to ``named`` until it holds MAX_NAMED entries."""
    for key, value in more.items():
        _name(named, key, value)


@dataclass(slots=True)
class Candidate:
    """A conversation that looks due, before it is claimed."""

    conversation_id: str
    #: ``message_count`` on the conversation hash: a hint for reading, never a loop bound.
    message_count_hint: int | None
    #: ``archived_count`` on the conversation hash (-1: never archived).
    archived_count: int
    ended: bool
    #: Whether it came from the due index (ended ones are dropped from it once archived).
    in_index: bool


@dataclass(slots=True)
class ReadyRow:
    """One conversation's row, encoded once, with what marking it afterwards needs."""

    candidate: Candidate
    row_id: str
    #: The original id when it is not a canonical UUID (rows are matched on both).
    source_id: str | None
    message_count: int
    user_id: str | None
    merchant_id: str | None
    #: The row as JSON (UTF-8): sent as is, and its length bounds the batch.
    encoded: bytes

    @property
    def conversation_id(self) -> str:
        return self.candidate.conversation_id


@dataclass(slots=True)
class Page:
    """Conversations claimed together: the leases held and the rows ready to upsert."""

    claimed: list[str]
    rows: list[ReadyRow] = field(default_factory=list)
