"""The conversation archiver: Redis → ``identity.conversations`` before the TTL, nothing lost.

One pass (:meth:`ConversationArchiver.run_once`):

1. **find** candidates without scanning per conversation: ``ZSCAN`` of the due index that
   :class:`ConversationStore` keeps, plus one cursor ``SCAN`` for ``conversation:*`` keys written
   by services that do not keep the index. A candidate is due when it ended or its TTL is within
   the window (default 2 h), and it has never been archived or has grown since.
2. **claim** each with a lease (``SET NX PX``) so several archivers never work on one
   conversation at once; a lease expires by itself if its archiver dies.
3. **read** it with pipelined calls (hashes by sequence number when the counter is known, one
   ``SCAN`` per batch for legacy message keys), then build a sanitized row (:mod:`._rows`).
4. **upsert** batches bounded by rows and bytes through ``rpc/archive_conversations``; a 4xx
   on a batch is bisected to isolate the conversation that causes it (dead-lettered with the
   reason), the rest are archived.
5. **mark** ``archived``/``archived_count`` only after the 2xx, only on keys that still exist,
   and only upwards; then release the leases.

Unlinked conversations (no user found) are archived with ``user_id`` null and remembered in
``identity:archive:unlinked``; each pass tries to resolve and link them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol, TypeVar, cast

import redis

from .._exceptions import (
    APIStatusError,
    BackendUnavailableError,
    IdentityError,
    ValidationError,
)
from .._validation import validate_conversation_id, validate_user_id
from ._layout import DUE_KEY, conversation_key, merchant_key, message_key, session_key
from ._rows import RawConversation, build_row, shop_from_merchant, user_id_candidates

__all__ = ["ArchiveReport", "ArchiverConfig", "ConversationArchiver"]

logger = logging.getLogger("supabase_identity.archive")
_T = TypeVar("_T")

LEASE_PREFIX: Final = "identity:archive:lease:"
#: Upper bound of ``batch_rows``: PostgREST's default (and Supabase's) ``db-max-rows``.
MAX_BATCH_ROWS: Final = 1000
#: A conversation whose fields are cut down to this and still does not fit is dead-lettered.
MIN_FIELD_BYTES: Final = 256
UNLINKED_KEY: Final = "identity:archive:unlinked"
DEAD_LETTER_KEY: Final = "identity:archive:dead"
STATS_KEY: Final = "identity:archive:stats"
HEARTBEAT_PREFIX: Final = "identity:archive:heartbeat:"

# Marks a conversation archived only if its key still exists (HSET on a vanished key would
# create an immortal hash) and only upwards (a slower archiver cannot lower the count).
_MARK_SCRIPT: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], 'archived_count') or '-1')
if tonumber(ARGV[1]) > current then
  redis.call('HSET', KEYS[1], 'archived', 'true', 'archived_count', ARGV[1], 'archived_at', ARGV[2])
end
return 1
"""
# Reads one conversation in one command: its hash, its session and, when the writer keeps the
# message counter, every message (a hash as a flat array, a string value as a one-element array,
# a missing key as an empty array). Message keys are built from ARGV, so this assumes one Redis
# node (as the key layout itself does). KEYS: conversation, session. ARGV: "message:<id>:".
_READ_SCRIPT: Final = """
local conv = redis.call('HGETALL', KEYS[1])
local session = redis.call('HGETALL', KEYS[2])
local count = tonumber(redis.call('HGET', KEYS[1], 'message_count') or '-1') or -1
local messages = {}
for seq = 0, count - 1 do
  local key = ARGV[1] .. seq
  local ok, value = pcall(redis.call, 'HGETALL', key)
  if ok then
    messages[seq + 1] = value
  else
    local got = redis.call('GET', key)
    messages[seq + 1] = got and {got} or {}
  end
end
return {conv, session, count, messages}
"""
# Extends the leases this archiver still holds (before each upsert of a page that waited).
# KEYS: lease keys. ARGV: worker id, lease ms. Returns how many were extended.
_RENEW_SCRIPT: Final = """
local renewed = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    renewed = renewed + 1
  end
end
return renewed
"""
# Releases a lease only if this archiver still holds it.
_RELEASE_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RpcCaller(Protocol):
    """What the archiver needs from an identity client: one PostgREST RPC call with retries."""

    def rpc(
        self, function: str, params: Mapping[str, Any], *, encoded: bytes | None = None
    ) -> Any: ...

    def flush_events(self) -> Any: ...


@dataclass(frozen=True)
class ArchiverConfig:
    """Tuning knobs; the defaults suit one archiver per service next to a busy agents service."""

    #: Archive conversations whose keys expire within this window (the seed's 2 hours).
    window: timedelta = timedelta(hours=2)
    #: Conversations per upsert request, and per read/claim page.
    batch_rows: int = 200
    #: Serialized bytes per upsert request (well under the gateway's body limit).
    batch_bytes: int = 4 * 1024 * 1024
    #: Upsert requests in flight at once while the next page is read (1 = strictly sequential).
    upserts_in_flight: int = 2
    #: How long a claim holds; longer than a batch takes, short enough to recover from a crash.
    lease: timedelta = timedelta(minutes=2)
    #: Time between passes in ``run_forever``.
    interval: timedelta = timedelta(minutes=5)
    #: Also SCAN for ``conversation:*`` keys that are not in the due index (legacy writers).
    scan_legacy: bool = True
    #: COUNT hint for SCAN/ZSCAN/HSCAN pages.
    scan_count: int = 1000
    #: Longest message field kept whole (bytes); longer ones are truncated with an issue.
    max_field_bytes: int = 256 * 1024
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


@dataclass
class ArchiveReport:
    """What one pass did. ``failed`` maps conversation ids to the reason they were not archived."""

    found: int = 0
    archived: int = 0
    rearchived: int = 0
    unchanged: int = 0
    unlinked: int = 0
    linked: int = 0
    leased_elsewhere: int = 0
    vanished: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    issues: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def merge(self, other: ArchiveReport) -> None:
        for name in (
            "found",
            "archived",
            "rearchived",
            "unchanged",
            "unlinked",
            "linked",
            "leased_elsewhere",
            "vanished",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failed.update(other.failed)
        self.issues.update(other.issues)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Candidate:
    conversation_id: str
    message_count: int | None  # None: legacy writer, count unknown until read
    archived_count: int
    ended: bool
    in_index: bool


@dataclass
class _Prepared:
    """One page ready to upsert: the leases it holds and its rows (candidate, row, count)."""

    claimed_ids: list[str]
    #: (candidate, row, message count, the row as JSON)
    rows: list[tuple[_Candidate, dict[str, Any], int, bytes]]


class _Stopped(Exception):
    """Raised inside a pass when a stop was requested between batches."""


def _s(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _int(value: bytes | str | None) -> int | None:
    text = _s(value)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


class ConversationArchiver:
    """Archives conversations from Redis into Supabase; safe to run in several processes.

    Usage::

        archiver = ConversationArchiver(client, redis.Redis.from_url(url))
        report = archiver.run_once()            # one pass, e.g. from cron or a backfill
        task = asyncio.create_task(archiver.run_forever())   # FastAPI startup hook

    ``client`` is an :class:`~supabase_identity.IdentityClient` holding the service key.
    """

    def __init__(
        self,
        client: RpcCaller,
        redis_client: redis.Redis,
        *,
        config: ArchiverConfig | None = None,
        worker_id: str | None = None,
    ) -> None:
        self._client = client
        self._redis = redis_client
        self.config = config or ArchiverConfig()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._mark = redis_client.register_script(_MARK_SCRIPT)
        self._release = redis_client.register_script(_RELEASE_SCRIPT)
        self._read_one = redis_client.register_script(_READ_SCRIPT)
        self._renew = redis_client.register_script(_RENEW_SCRIPT)
        # Checked by the pass running in a worker thread; the asyncio side wakes on _wake.
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self.totals = ArchiveReport()

    # ------------------------------------------------------------------ public entry points

    def stop(self) -> None:
        """Ask the archiver to stop picking work; the current batch finishes or is released.

        Safe from any thread and from a signal handler.
        """
        self._stop.set()
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def run_once(self, *, progress: Callable[[int, int], None] | None = None) -> ArchiveReport:
        """One pass over every due conversation; returns what it did.

        While one batch is being upserted (a worker thread waiting on HTTP), the next page is
        claimed, read and built, so Redis reads and Python work overlap the database's.
        ``progress(done, found)`` is called after each batch (a CLI draws its bar with it).
        Raises :class:`BackendUnavailableError` or ``redis.ConnectionError`` when a backend is
        down: batches in hand are left unmarked and their leases released first.
        """
        started = time.monotonic()
        report = ArchiveReport()
        in_flight: deque[Future[ArchiveReport]] = deque()
        limit = self.config.upserts_in_flight
        try:
            with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="archiver") as pool:
                try:
                    for page in self._candidate_pages():
                        report.found += len(page)
                        prepared = self._prepare(page, report)
                        try:
                            while len(in_flight) >= limit:
                                report.merge(in_flight.popleft().result())
                                if progress is not None:
                                    done = report.archived + report.rearchived + report.unchanged
                                    progress(done + len(report.failed), report.found)
                            if self._stop.is_set():
                                raise _Stopped
                        except BaseException:
                            self._release_leases(prepared.claimed_ids)
                            raise
                        in_flight.append(pool.submit(self._send, prepared))
                finally:
                    # Whatever happened, every batch already sent is waited for and counted:
                    # its rows may be in the database and its leases must be released.
                    failure: BaseException | None = None
                    while in_flight:
                        try:
                            report.merge(in_flight.popleft().result())
                        except BaseException as err:
                            failure = failure or err
                    if failure is not None:
                        raise failure
            if progress is not None:
                done = report.archived + report.rearchived + report.unchanged
                progress(done + len(report.failed), report.found)
            if not self._stop.is_set():
                self._link_unlinked(report)
        except _Stopped:
            logger.info("archiver %s: stop requested, pending batch released", self.worker_id)
        finally:
            report.seconds = time.monotonic() - started
            self.totals.merge(report)
            self._record(report)
        return report

    def archive(
        self, conversation_ids: Sequence[str], *, user_id: str | None = None
    ) -> ArchiveReport:
        """Archive these conversations now, whatever their TTL (``archive_conversation``).

        Raises:
            ValidationError: an id is not a conversation id, or ``user_id`` not a user id.
        """
        for conversation_id in conversation_ids:
            validate_conversation_id(conversation_id)
        if user_id is not None:
            validate_user_id(user_id)
        report = ArchiveReport()
        page = [_Candidate(cid, None, -1, False, False) for cid in conversation_ids]
        report.found = len(page)
        report.merge(self._send(self._prepare(page, report, user_id=user_id, force=True)))
        self._record(report)
        return report

    async def run_forever(self) -> None:
        """Run passes every ``config.interval`` until :meth:`stop` or task cancellation.

        Each pass runs in a worker thread (``asyncio.to_thread``) so the event loop is never
        blocked. The cadence subtracts the time a pass took. While Supabase or Redis is
        unreachable it backs off exponentially with jitter instead of spinning. Each pass also
        flushes the events outbox and writes a heartbeat key (removed when the loop stops).
        """
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._stop.is_set():
            self._wake.set()
        failures = 0
        interval = self.config.interval.total_seconds()
        logger.info("archiver %s started (interval %.0fs)", self.worker_id, interval)
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    report = await self._in_thread(self.run_once)
                    await self._in_thread(self._flush_events)
                    await asyncio.to_thread(self._beat, report)
                    failures = 0
                    logger.info("archive pass: %s", _summary(report))
                    delay = max(0.0, interval - (time.monotonic() - began))
                except (BackendUnavailableError, redis.ConnectionError, redis.TimeoutError) as err:
                    failures += 1
                    delay = self._backoff(failures)
                    await asyncio.to_thread(self._beat, None)
                    logger.warning(
                        "archive pass failed (%s: %s); retrying in %.1fs",
                        type(err).__name__,
                        err,
                        delay,
                    )
                except Exception:
                    # Not an outage: a bug or an unexpected answer. Counted and logged with its
                    # traceback, and the loop goes on (with backoff): conversations behind it
                    # must still be archived before their TTL.
                    failures += 1
                    delay = self._backoff(failures)
                    with contextlib.suppress(redis.RedisError):
                        self._redis.hincrby(STATS_KEY, "pass_errors", 1)
                    logger.exception("archive pass crashed; retrying in %.1fs", delay)
                await self._sleep(delay)
        finally:
            await asyncio.to_thread(self._forget_beat)
            logger.info("archiver %s stopped: %s", self.worker_id, _summary(self.totals))

    def heartbeat(self) -> dict[str, Any] | None:
        """The last heartbeat this worker wrote (for ``--check`` style health probes)."""
        raw = self._redis.get(HEARTBEAT_PREFIX + self.worker_id)
        return json.loads(raw) if raw else None

    # ------------------------------------------------------------------ internals

    async def _in_thread(self, work: Callable[[], _T]) -> _T:
        """Run blocking work in a thread; if the task is cancelled meanwhile, ask the work to
        stop and give it ``shutdown_grace`` to finish or release its batch before re-raising."""
        future = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            self.stop()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(future, self.config.shutdown_grace.total_seconds())
            raise

    def _backoff(self, failures: int) -> float:
        low = self.config.backoff_min.total_seconds()
        high = self.config.backoff_max.total_seconds()
        return min(high, low * 2.0 ** (failures - 1)) * random.uniform(0.5, 1.0)  # noqa: S311

    async def _sleep(self, seconds: float) -> None:
        """Sleep between passes, waking at once when :meth:`stop` is called."""
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    def _flush_events(self) -> None:
        try:
            self._client.flush_events()
        except IdentityError as err:
            logger.warning("events outbox flush failed: %s", err)

    def _candidate_pages(self) -> Iterator[list[_Candidate]]:
        """Due conversations in pages of ``batch_rows``; memory is bounded by the page."""
        page: list[_Candidate] = []
        for candidate in self._due_candidates():
            page.append(candidate)
            if len(page) >= self.config.batch_rows:
                yield page
                page = []
        if page:
            yield page

    def _due_candidates(self) -> Iterator[_Candidate]:
        """The due index (ZSCAN), then legacy ``conversation:*`` keys it does not know (SCAN)."""
        deadline = time.time() + self.config.window.total_seconds()
        cursor = 0
        while True:
            cursor, entries = self._redis.zscan(DUE_KEY, cursor, count=self.config.scan_count)
            ids = [_s(cast("bytes | str", member)) or "" for member, _score in entries]
            yield from self._prefilter(ids, in_index=True, deadline=deadline)
            if cursor == 0:
                break
        if not self.config.scan_legacy:
            return
        cursor = 0
        while True:
            cursor, keys = self._redis.scan(
                cursor, match="conversation:*", count=self.config.scan_count
            )
            ids = [(_s(key) or "")[len("conversation:") :] for key in keys]
            if ids:
                pipe = self._redis.pipeline(transaction=False)
                for cid in ids:
                    pipe.zscore(DUE_KEY, cid)
                scores = pipe.execute()
                legacy = [cid for cid, score in zip(ids, scores, strict=True) if score is None]
                yield from self._prefilter(legacy, in_index=False, deadline=deadline)
            if cursor == 0:
                break

    def _prefilter(
        self, ids: Sequence[str], *, in_index: bool, deadline: float
    ) -> Iterator[_Candidate]:
        """Keep the ids that are due and not yet archived at their current size (one pipeline)."""
        if not ids:
            return
        pipe = self._redis.pipeline(transaction=False)
        for cid in ids:
            pipe.hmget(
                conversation_key(cid), "archived", "archived_count", "message_count", "ended_at"
            )
            pipe.pttl(conversation_key(cid))
        results = pipe.execute()
        gone: list[str] = []
        done: list[str] = []
        now = time.time()
        for index, cid in enumerate(ids):
            archived, archived_count, message_count, ended_at = results[2 * index]
            pttl = int(results[2 * index + 1])
            if pttl == -2:  # the key no longer exists
                gone.append(cid)
                continue
            ended = bool(_s(ended_at))
            expires_soon = pttl >= 0 and now + pttl / 1000 <= deadline
            if not (ended or expires_soon):
                continue
            count = _int(message_count)
            done_count = _int(archived_count)
            is_archived = _s(archived) == "true"
            if is_archived and count is not None and done_count is not None and done_count >= count:
                if ended and in_index:
                    done.append(cid)
                continue
            yield _Candidate(
                cid,
                count,
                done_count if done_count is not None else -1,
                ended,
                in_index,
            )
        if in_index and (gone or done):
            # Drop index entries whose keys expired, and ended conversations archived in full.
            self._redis.zrem(DUE_KEY, *gone, *done)

    def _claim(self, candidates: Sequence[_Candidate]) -> list[_Candidate]:
        pipe = self._redis.pipeline(transaction=False)
        lease_ms = int(self.config.lease.total_seconds() * 1000)
        for candidate in candidates:
            pipe.set(LEASE_PREFIX + candidate.conversation_id, self.worker_id, nx=True, px=lease_ms)
        won = pipe.execute()
        return [c for c, ok in zip(candidates, won, strict=True) if ok]

    def _renew_leases(self, conversation_ids: Sequence[str]) -> None:
        """Extend this archiver's leases: a page may have waited behind batches in flight."""
        if conversation_ids:
            lease_ms = int(self.config.lease.total_seconds() * 1000)
            self._renew(
                keys=[LEASE_PREFIX + cid for cid in conversation_ids],
                args=[self.worker_id, lease_ms],
            )

    def _release_leases(self, conversation_ids: Sequence[str]) -> None:
        if not conversation_ids:
            return
        pipe = self._redis.pipeline(transaction=False)
        for cid in conversation_ids:
            self._release(keys=[LEASE_PREFIX + cid], args=[self.worker_id], client=pipe)
        pipe.execute()

    def _prepare(
        self,
        candidates: Sequence[_Candidate],
        report: ArchiveReport,
        *,
        user_id: str | None = None,
        force: bool = False,
    ) -> _Prepared:
        """Claim, read and build the rows of one page; the leases are held until ``_send``."""
        claimed = self._claim(candidates)
        report.leased_elsewhere += len(candidates) - len(claimed)
        prepared = _Prepared([c.conversation_id for c in claimed], [])
        try:
            raws = self._read(claimed, user_id=user_id)
            for candidate in claimed:
                raw = raws.get(candidate.conversation_id)
                if raw is None:
                    report.vanished += 1
                    if force:
                        report.failed[candidate.conversation_id] = "not found in Redis"
                    continue
                try:
                    row, issues, encoded = self._fitting_row(raw)
                except (ValidationError, ValueError) as err:
                    self._dead_letter(candidate.conversation_id, str(err))
                    report.failed[candidate.conversation_id] = str(err)
                    continue
                count = len(row["messages"])
                if issues:
                    report.issues[candidate.conversation_id] = issues
                # Re-read under the lease: another archiver may have finished it since the
                # candidate list was made, and archiving it again would be duplicate work.
                archived_count = _int(_field(raw.conversation, "archived_count"))
                if archived_count is None:
                    archived_count = candidate.archived_count
                if count <= archived_count and not force:
                    report.unchanged += 1
                    continue
                prepared.rows.append((candidate, row, count, encoded))
        except BaseException:
            self._release_leases(prepared.claimed_ids)
            raise
        return prepared

    def _fitting_row(self, raw: RawConversation) -> tuple[dict[str, Any], list[str], bytes]:
        """Build the row, cutting long fields further until it fits in one request.

        A conversation of many large messages can exceed the gateway's body limit even with
        every field under ``max_field_bytes``; halving the field limit keeps every message
        (truncated, with an issue) instead of failing the conversation. Raises ``ValueError``
        when it cannot fit, or cannot be encoded as JSON at all.
        """
        limit = self.config.max_field_bytes
        while True:
            row, issues = build_row(raw, max_field_bytes=limit)
            encoded = json.dumps(
                row, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
            size = len(encoded)
            if size <= self.config.batch_bytes:
                return row, issues, encoded
            if limit <= MIN_FIELD_BYTES:
                raise ValueError(
                    f"{size} bytes even with every field cut to {limit} bytes "
                    f"(batch_bytes is {self.config.batch_bytes})"
                )
            limit = max(MIN_FIELD_BYTES, limit // 2)

    def _send(self, prepared: _Prepared) -> ArchiveReport:
        """Upsert a prepared page in byte-bounded batches, mark it, release its leases."""
        report = ArchiveReport()
        try:
            for batch in self._byte_batches(prepared.rows):
                self._renew_leases([candidate.conversation_id for candidate, *_ in batch])
                self._upsert(batch, report)
        finally:
            self._release_leases(prepared.claimed_ids)
        return report

    def _read(
        self, claimed: Sequence[_Candidate], *, user_id: str | None
    ) -> dict[str, RawConversation]:
        """Read claimed conversations with a handful of pipelined round trips."""
        if not claimed:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for candidate in claimed:
            cid = candidate.conversation_id
            self._read_one(
                keys=[conversation_key(cid), session_key(cid)],
                args=[message_key(cid, 0)[:-1]],
                client=pipe,
            )
        results = pipe.execute()
        raws: dict[str, RawConversation] = {}
        keys: list[tuple[str, int, str]] = []
        legacy: set[str] = set()
        for candidate, (conv_flat, session_flat, count, messages) in zip(
            claimed, results, strict=True
        ):
            cid = candidate.conversation_id
            if not conv_flat and not session_flat:
                continue
            raw = RawConversation(cid, _pairs(conv_flat), _pairs(session_flat), [])
            raws[cid] = raw
            if int(count) < 0:
                legacy.add(cid)  # written without the counter: find its messages by SCAN
                continue
            for seq, value in enumerate(messages):
                if len(value) == 1:
                    raw.messages.append((seq, value[0]))  # a string value, JSON perhaps
                elif value:
                    raw.messages.append((seq, _pairs(value)))
                else:
                    raw.issues.append(f"message {seq}: missing from Redis")
        keys += self._scan_message_keys(legacy)
        self._read_messages(keys, raws)
        self._resolve_users(raws, explicit=user_id)
        return raws

    def _scan_message_keys(self, legacy: set[str]) -> list[tuple[str, int, str]]:
        """One SCAN over ``message:*`` for a whole page of legacy conversations."""
        if not legacy:
            return []
        found: dict[str, tuple[str, int, str]] = {}  # by key: SCAN may return a key twice
        cursor = 0
        while True:
            cursor, keys = self._redis.scan(
                cursor, match="message:*", count=self.config.scan_count * 5
            )
            for key in keys:
                text = _s(key) or ""
                cid, _, seq_text = text[len("message:") :].rpartition(":")
                if cid in legacy and seq_text.isdigit():
                    found[text] = (cid, int(seq_text), text)
            if cursor == 0:
                return list(found.values())

    def _read_messages(
        self, keys: Sequence[tuple[str, int, str]], raws: Mapping[str, RawConversation]
    ) -> None:
        chunk = 2000
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            pipe = self._redis.pipeline(transaction=False)
            for _cid, _seq, key in part:
                pipe.hgetall(key)
            values = pipe.execute(raise_on_error=False)
            retry: list[tuple[str, int, str]] = []
            for (cid, seq, key), value in zip(part, values, strict=True):
                if isinstance(value, redis.ResponseError) and "WRONGTYPE" in str(value):
                    retry.append((cid, seq, key))
                elif isinstance(value, Exception):
                    raws[cid].issues.append(f"message {seq}: unreadable ({value})")
                elif value:
                    raws[cid].messages.append((seq, value))
                else:
                    raws[cid].issues.append(f"message {seq}: missing from Redis")
            if retry:
                pipe = self._redis.pipeline(transaction=False)
                for _cid, _seq, key in retry:
                    pipe.get(key)
                for (cid, seq, _key), value in zip(
                    retry, pipe.execute(raise_on_error=False), strict=True
                ):
                    if isinstance(value, bytes | str):
                        raws[cid].messages.append((seq, value))
                    else:
                        raws[cid].issues.append(f"message {seq}: not a hash or string, skipped")

    def _resolve_users(self, raws: Mapping[str, RawConversation], *, explicit: str | None) -> None:
        """user_id from the call, the session, the conversation, then ``merchant:<shop>``."""
        lookups: dict[str, str] = {}
        for cid, raw in raws.items():
            if explicit:
                raw.user_id = explicit
                continue
            raw.user_id = next(iter(user_id_candidates(raw.conversation, raw.session)), None)
            if raw.user_id is None:
                shop = _shop_of(raw)
                if shop:
                    lookups[cid] = shop
        if not lookups:
            return
        pipe = self._redis.pipeline(transaction=False)
        for shop in lookups.values():
            pipe.get(merchant_key(shop))
        for (cid, shop), value in zip(lookups.items(), pipe.execute(), strict=True):
            user = _user_from_merchant(value)
            if user is None and value is not None:
                raws[cid].issues.append(f"merchant:{shop} holds no usable user_id")
            raws[cid].user_id = user

    def _byte_batches(
        self, rows: Sequence[tuple[_Candidate, dict[str, Any], int, bytes]]
    ) -> Iterator[list[tuple[_Candidate, dict[str, Any], int, bytes]]]:
        """Group rows into requests bounded by ``batch_rows`` and ``batch_bytes``."""
        batch: list[tuple[_Candidate, dict[str, Any], int, bytes]] = []
        size = 0
        for item in rows:
            if batch and (
                size + len(item[3]) > self.config.batch_bytes
                or len(batch) >= self.config.batch_rows
            ):
                yield batch
                batch, size = [], 0
            batch.append(item)
            size += len(item[3])
        if batch:
            yield batch

    def _upsert(
        self, batch: list[tuple[_Candidate, dict[str, Any], int, bytes]], report: ArchiveReport
    ) -> None:
        """Send one batch; when the database rejects its data, bisect it so one bad
        conversation cannot block the rest. Any other error (outage, key, schema, closed
        client) is not about the data: it ends the pass with nothing marked."""
        try:
            body = b'{"conversations":[' + b",".join(item[3] for item in batch) + b"]}"
            result = self._client.rpc("archive_conversations", {}, encoded=body)
        except (ValidationError, APIStatusError) as err:
            if isinstance(err, APIStatusError) and err.status_code != 400:
                raise
            if len(batch) == 1:
                cid = batch[0][0].conversation_id
                self._dead_letter(cid, f"rejected by the database: {err}")
                report.failed[cid] = f"rejected by the database: {err}"
                return
            middle = len(batch) // 2
            self._upsert(batch[:middle], report)
            self._upsert(batch[middle:], report)
            return
        statuses = {str(item["id"]): item for item in result or []}
        pipe = self._redis.pipeline(transaction=False)
        stamp = datetime.now(UTC).isoformat()
        for candidate, row, count, _ in batch:
            outcome = statuses.get(row["id"])
            if outcome is None:
                report.failed[candidate.conversation_id] = "no status returned by the database"
                continue
            status = outcome.get("status")
            if status == "inserted":
                report.archived += 1
            elif status == "updated":
                report.rearchived += 1
            else:  # stale: the database already holds a longer copy
                report.unchanged += 1
            self._mark(
                keys=[conversation_key(candidate.conversation_id)], args=[count, stamp], client=pipe
            )
            if outcome.get("user_id") is None:
                report.unlinked += 1
                pipe.hset(
                    UNLINKED_KEY,
                    candidate.conversation_id,
                    json.dumps(
                        {
                            "row_id": row["id"],
                            "merchant_id": row.get("merchant_id"),
                            "pending_user_id": row.get("user_id"),
                        }
                    ),
                )
            else:
                pipe.hdel(UNLINKED_KEY, candidate.conversation_id)
            pipe.hdel(DEAD_LETTER_KEY, candidate.conversation_id)
        pipe.execute()

    def _link_unlinked(self, report: ArchiveReport) -> None:
        """Link conversations archived without a user once their user is known."""
        cursor = 0
        while True:
            cursor, entries = self._redis.hscan(UNLINKED_KEY, cursor, count=self.config.scan_count)
            pending: list[tuple[str, dict[str, Any]]] = []
            for key, value in cast("dict[bytes | str, bytes | str]", entries).items():
                try:
                    pending.append((_s(key) or "", json.loads(value)))
                except ValueError:
                    self._redis.hdel(UNLINKED_KEY, key)
            if pending:
                self._link(pending, report)
            if cursor == 0:
                return

    def _link(self, pending: Sequence[tuple[str, dict[str, Any]]], report: ArchiveReport) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for cid, info in pending:
            pipe.hget(session_key(cid), "user_id")
            pipe.hget(conversation_key(cid), "user_id")
            shop = shop_from_merchant(info.get("merchant_id"))
            pipe.get(merchant_key(shop)) if shop else pipe.echo("")
        values = pipe.execute()
        links = []
        for index, (cid, info) in enumerate(pending):
            session_user, conv_user, merchant = values[3 * index : 3 * index + 3]
            user = (
                _s(session_user)
                or _s(conv_user)
                or _user_from_merchant(merchant)
                or info.get("pending_user_id")
            )
            if user:
                links.append({"id": info["row_id"], "user_id": user, "_cid": cid})
        if not links:
            return
        linked = self._client.rpc(
            "link_conversations",
            {"links": [{"id": link["id"], "user_id": link["user_id"]} for link in links]},
        )
        linked_ids = {str(item["id"]) for item in linked or []}
        done = [link["_cid"] for link in links if link["id"] in linked_ids]
        if done:
            self._redis.hdel(UNLINKED_KEY, *done)
            report.linked += len(done)

    def _dead_letter(self, conversation_id: str, reason: str) -> None:
        logger.error("conversation %s not archived: %s", conversation_id, reason)
        self._redis.hset(
            DEAD_LETTER_KEY,
            conversation_id,
            json.dumps(
                {"reason": reason, "at": datetime.now(UTC).isoformat(), "worker": self.worker_id}
            ),
        )

    def _record(self, report: ArchiveReport) -> None:
        """Counters for monitoring (the seed's "Archival Health" metrics): one pipeline."""
        pipe = self._redis.pipeline(transaction=False)
        for name in ("archived", "rearchived", "unchanged", "unlinked", "linked"):
            value = getattr(report, name)
            if value:
                pipe.hincrby(STATS_KEY, name, value)
        if report.failed:
            pipe.hincrby(STATS_KEY, "failed", len(report.failed))
        pipe.hincrby(STATS_KEY, "passes", 1)
        try:
            pipe.execute()
        except redis.RedisError as err:
            logger.warning("could not record archiver stats: %s", err)

    def _beat(self, report: ArchiveReport | None) -> None:
        """The running loop's heartbeat: expires after three intervals without a pass.

        Only :meth:`run_forever` writes it, so ``archive --check`` (a liveness probe) passes
        while a loop is alive, never because a one-off ``--once`` ran recently.
        """
        ttl = max(60, int(self.config.interval.total_seconds() * 3))
        beat = {
            "at": datetime.now(UTC).isoformat(),
            "worker": self.worker_id,
            "last_pass": _summary(report) if report is not None else "failed",
            "seconds": round(report.seconds, 3) if report is not None else None,
        }
        try:
            self._redis.set(HEARTBEAT_PREFIX + self.worker_id, json.dumps(beat), ex=ttl)
        except redis.RedisError as err:
            logger.warning("could not write the archiver heartbeat: %s", err)

    def _forget_beat(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self._redis.delete(HEARTBEAT_PREFIX + self.worker_id)


def _pairs(flat: Sequence[bytes | str]) -> dict[bytes | str, bytes | str]:
    """A flat ``[field, value, …]`` array (HGETALL inside a script) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _field(source: Mapping[bytes | str, bytes | str], name: str) -> bytes | str | None:
    """A hash field whether the Redis client decodes responses (str keys) or not (bytes)."""
    value = source.get(name)
    return value if value is not None else source.get(name.encode())


def _shop_of(raw: RawConversation) -> str | None:
    for source in (raw.session, raw.conversation):
        for name in ("shop_domain", "merchant_id"):
            value = _s(_field(source, name))
            shop = shop_from_merchant(value)
            if shop:
                return shop
    return None


def _user_from_merchant(value: bytes | str | None) -> str | None:
    text = _s(value)
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    user = data.get("user_id") if isinstance(data, dict) else None
    return user if isinstance(user, str) and user else None


def _summary(report: ArchiveReport) -> str:
    return (
        f"found={report.found} archived={report.archived} rearchived={report.rearchived} "
        f"unchanged={report.unchanged} unlinked={report.unlinked} linked={report.linked} "
        f"failed={len(report.failed)}"
    )


def archive_conversation(
    conversation_id: str,
    redis_client: redis.Redis,
    user_id: str | None = None,
    *,
    client: RpcCaller | None = None,
) -> bool:
    """Archive one conversation from Redis now, whatever its TTL; ``True`` once it is stored.

    The seed's ``archive_conversation(conversation_id, redis_client, user_id)``: ``user_id``
    overrides what the session says. Unlike the seed it archives a conversation with no known
    user (unlinked, linked later) and replaces the messages of an earlier archive. ``False``
    means nothing was stored: the conversation is not in Redis, or the database refused it
    (the reason is logged and kept in the dead-letter hash). Backend outages raise
    :class:`~supabase_identity.BackendUnavailableError`.
    """
    validate_conversation_id(conversation_id)
    if user_id is not None:
        validate_user_id(user_id)
    if client is None:
        from .._default import get_default_client

        client = get_default_client()
    report = ConversationArchiver(client, redis_client).archive([conversation_id], user_id=user_id)
    return not report.failed and report.vanished == 0
