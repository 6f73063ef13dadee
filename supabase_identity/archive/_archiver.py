"""The conversation archiver: Redis → ``identity.conversations`` before the TTL, nothing lost.

:class:`ConversationArchiver` coordinates the parts, each in its own module:

* :mod:`._finder` — due conversations (the due index, then one ``SCAN`` per pass);
* :mod:`._leases` — claims, renewed while their owner lives;
* :mod:`._reader` — pipelined reads bounded by each conversation's real size;
* :mod:`._writer` — rows that fit, batched upserts, bisection, marks after the 2xx;
* :mod:`._linker` — linking conversations archived before their user was known;
* :mod:`._worker` — the run loop, heartbeat, health check and counters.

A pass pipelines pages: while one batch is upserted (a thread waiting on HTTP), the next page
is claimed, read and built. A conversation that cannot be read or built is set aside alone
(dead-lettered with its reason); an outage ends the pass with nothing marked.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import redis

from .._constants import (
    ARCHIVAL_LOOP_INTERVAL,
    ARCHIVER_REDIS_CONNECT_TIMEOUT,
    ARCHIVER_REDIS_SOCKET_TIMEOUT,
)
from .._exceptions import BackendUnavailableError, ConfigError, IdentityError
from .._redis import RedisClient, RedisConnector, as_int, hash_field
from .._sync._client import IdentityClient
from .._sync._compliance import finish_pending_redactions
from .._validation import validate_conversation_id, validate_user_id
from ._finder import DueFinder
from ._leases import Leases
from ._linker import Linker
from ._reader import ConversationReader
from ._types import ArchiverConfig, ArchiveReport, Candidate, Page, RpcCaller
from ._worker import Worker
from ._writer import ArchiveWriter

__all__ = ["ArchiveReport", "ArchiverConfig", "ConversationArchiver", "archive_conversation"]

logger = logging.getLogger("supabase_identity.archive")


class _Stopped(Exception):
    """Raised inside a pass when a stop was requested between batches."""


class ConversationArchiver:
    """Archives conversations from Redis into Supabase; safe to run in several processes.

    Usage::

        archiver = ConversationArchiver(client, redis.Redis.from_url(url))
        report = archiver.run_once()            # one pass, e.g. from cron or a backfill
        task = asyncio.create_task(archiver.run_forever())   # FastAPI startup hook

    ``client`` is an :class:`~supabase_identity.IdentityClient` holding the service key;
    ``redis_client`` a ``redis.Redis`` or a ``redis.cluster.RedisCluster``. Either may be left
    out: the archiver then builds it from the environment (the client from
    ``IDENTITY_SUPABASE_*``/``SUPABASE_*``, Redis from ``REDIS_URL``) and closes it in
    :meth:`close`. With neither, the agents service's archival code runs as it was::

        archiver = ConversationArchiver()
        stored = await archiver.archive_conversation(conversation_id)     # -> bool
        due = await archiver.find_conversations_to_archive()              # -> list[str]
        asyncio.create_task(archiver.run_archival_loop())                 # every 30 minutes
    """

    def __init__(
        self,
        client: RpcCaller | None = None,
        redis_client: RedisClient | None = None,
        *,
        config: ArchiverConfig | None = None,
        worker_id: str | None = None,
    ) -> None:
        self._owned_client: IdentityClient | None = None
        self._owned_redis: RedisConnector | None = None
        if client is None:
            client = self._owned_client = IdentityClient()
        if redis_client is None:
            try:
                redis_client = self._redis_from_env()
            except BaseException:
                self.close()
                raise
        self._client = client
        self._redis = redis_client
        self.config = config or ArchiverConfig()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._writer = ArchiveWriter(client, redis_client, self.config, self.worker_id)
        self._finder = DueFinder(redis_client, self.config, self._set_aside_unreadable)
        self._leases = Leases(redis_client, self.worker_id, self.config.lease.total_seconds())
        self._reader = ConversationReader(redis_client, self.config)
        self._linker = Linker(client, redis_client, self.config)
        self._worker = Worker(
            redis_client,
            self.config,
            self.worker_id,
            run_pass=self.run_once,
            flush_events=self._flush_events,
        )
        self._pass_report: ArchiveReport | None = None
        self._report_lock = threading.Lock()  # the finder's thread sets unreadable keys aside
        self.totals = ArchiveReport()

    def _redis_from_env(self) -> RedisClient:
        """Redis from ``REDIS_URL`` (``REDIS_CLUSTER`` as the client reads it); no I/O when it
        is down: commands then fail, and the loop backs off until it answers."""
        from .._settings import load_settings

        url = self._owned_client.redis_url if self._owned_client is not None else None
        settings = load_settings()
        if url is None and settings.redis_url is not None:
            url = settings.redis_url.get_secret_value()
        if not url:
            raise ConfigError(
                "REDIS_URL is not set: the archiver reads conversations from Redis "
                "(e.g. REDIS_URL=redis://127.0.0.1:6379/0), or pass redis_client="
            )
        self._owned_redis = RedisConnector(
            url,
            cluster=settings.redis_cluster,
            socket_connect_timeout=ARCHIVER_REDIS_CONNECT_TIMEOUT,
            socket_timeout=ARCHIVER_REDIS_SOCKET_TIMEOUT,
        )
        return self._owned_redis.client()

    def close(self) -> None:
        """Close the client and Redis connection this archiver built (none given to it)."""
        owned_redis, self._owned_redis = self._owned_redis, None
        owned_client, self._owned_client = self._owned_client, None
        if owned_redis is not None:
            owned_redis.close()
        if owned_client is not None:
            owned_client.close()

    def __enter__(self) -> ConversationArchiver:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the agents service's API

    async def archive_conversation(self, conversation_id: str) -> bool:
        """Archive one conversation now, whatever its TTL; ``True`` once the database has it.

        ``False`` when nothing was stored: the conversation is not in Redis, the database
        refused it (reason logged and kept in the dead-letter hash), or Supabase or Redis is
        unreachable (logged; the conversation stays in Redis, unmarked, for the next pass).
        A conversation whose user is not known yet is stored unlinked and linked later.
        Runs in a worker thread: the event loop is never blocked.

        Raises:
            ValidationError: ``conversation_id`` is not a conversation id.
        """
        validate_conversation_id(conversation_id)
        try:
            report = await asyncio.to_thread(self.archive, [conversation_id])
        except (BackendUnavailableError, redis.RedisError) as err:
            logger.warning("archiving %r failed, kept in Redis: %s", conversation_id, err)
            return False
        return not report.failed and report.vanished == 0

    async def find_conversations_to_archive(self) -> list[str]:
        """The ids of the conversations a pass would archive now: due within ``config.window``
        (or ended) and changed since their last archive."""
        return await asyncio.to_thread(self._due_ids)

    def _due_ids(self) -> list[str]:
        return [c.conversation_id for page in self._finder.pages() for c in page]

    async def run_archival_loop(self, interval: timedelta = ARCHIVAL_LOOP_INTERVAL) -> None:
        """:meth:`run_forever` at the agents service's cadence: a pass every ``interval``
        (30 minutes unless given), until :meth:`stop` or task cancellation."""
        await self._worker.run_forever(interval)

    # ------------------------------------------------------------------ public entry points

    def stop(self) -> None:
        """Ask the archiver to stop picking work; the current batch finishes or is released.

        Safe from any thread and from a signal handler.
        """
        self._worker.stop()

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._worker.stopping.is_set()

    async def run_forever(self) -> None:
        """Run passes every ``config.interval`` until :meth:`stop` or task cancellation.

        Passes run in a worker thread, so the event loop is never blocked; while Supabase or
        Redis is unreachable the loop backs off with jitter. Each pass also flushes the events
        outbox and writes a heartbeat (removed when the loop stops).
        """
        await self._worker.run_forever()

    def heartbeat(self) -> dict[str, Any] | None:
        """The last heartbeat this worker wrote (for ``--check`` style health probes)."""
        return self._worker.heartbeat()

    def run_once(self, *, progress: Callable[[int, int], None] | None = None) -> ArchiveReport:
        """One pass over every due conversation; returns what it did.

        ``progress(done, found)`` is called after each batch (a CLI draws its bar with it).
        Raises :class:`BackendUnavailableError` or ``redis.ConnectionError`` when a backend is
        down: batches in hand are left unmarked and their leases released first.
        """
        report = ArchiveReport()
        self._pass_report = report
        try:
            with self._leases:
                self._run_pages(report, progress)
                if not self._worker.stopping.is_set():
                    self._linker.link_all(report)
        except _Stopped:
            logger.info("archiver %s: stop requested, pending batch released", self.worker_id)
        finally:
            self._pass_report = None
            self.totals.merge(report)
            self._worker.record(report)
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
        page = [Candidate(cid, None, -1, False, False) for cid in conversation_ids]
        report.found = len(page)
        with self._leases:
            report.merge(self._send(self._prepare(page, report, user_id=user_id, force=True)))
        self._worker.record(report)
        return report

    # ------------------------------------------------------------------ a pass

    def _run_pages(
        self, report: ArchiveReport, progress: Callable[[int, int], None] | None
    ) -> None:
        started = time.monotonic()
        in_flight: deque[Future[ArchiveReport]] = deque()
        limit = self.config.upserts_in_flight

        def settle_one() -> None:
            report.merge(in_flight.popleft().result())
            if progress is not None:
                progress(report.done, report.found)

        try:
            with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="archiver") as pool:
                try:
                    for candidates in self._finder.pages():
                        report.found += len(candidates)
                        page = self._prepare(candidates, report)
                        try:
                            while len(in_flight) >= limit:
                                settle_one()
                            if self._worker.stopping.is_set():
                                raise _Stopped
                        except BaseException:
                            self._leases.release(page.claimed)
                            raise
                        in_flight.append(pool.submit(self._send, page))
                finally:
                    # Whatever happened, every batch already sent is waited for and counted:
                    # its rows may be in the database and its leases must be released.
                    failure: BaseException | None = None
                    while in_flight:
                        try:
                            settle_one()
                        except BaseException as err:
                            failure = failure or err
                    if failure is not None:
                        raise failure
            if progress is not None:
                progress(report.done, report.found)
        finally:
            report.seconds = time.monotonic() - started

    def _prepare(
        self,
        candidates: Sequence[Candidate],
        report: ArchiveReport,
        *,
        user_id: str | None = None,
        force: bool = False,
    ) -> Page:
        """Claim, read and build the rows of one page; the leases are held until ``_send``."""
        claimed = self._leases.claim([c.conversation_id for c in candidates])
        report.leased_elsewhere += len(candidates) - len(claimed)
        won = set(claimed)
        page = Page(claimed)
        try:
            mine = [c for c in candidates if c.conversation_id in won]
            raws = self._reader.read(mine, user_id=user_id)
            for candidate in mine:
                cid = candidate.conversation_id
                raw = raws.get(cid)
                if raw is None:
                    report.vanished += 1
                    if force:
                        report.add_failure(cid, "not found in Redis")
                    continue
                try:
                    ready, issues = self._writer.ready_row(candidate, raw)
                except Exception as err:  # the data's fault (pure code): this conversation alone
                    reason = f"cannot build its row: {type(err).__name__}: {err}"
                    self._writer.fail(cid, reason, report)
                    continue
                if issues:
                    report.add_issues(cid, issues)
                # Re-read under the lease: another archiver may have finished it since the
                # candidate list was made, and archiving it again would be duplicate work.
                archived_count = as_int(hash_field(raw.conversation, "archived_count"))
                if archived_count is None:
                    archived_count = candidate.archived_count
                if ready.message_count <= archived_count and not force:
                    report.unchanged += 1
                    continue
                page.rows.append(ready)
        except BaseException:
            self._leases.release(page.claimed)
            raise
        return page

    def _send(self, page: Page) -> ArchiveReport:
        """Upsert a prepared page in byte-bounded batches, mark it, release its leases."""
        report = ArchiveReport()
        try:
            for batch in self._writer.batches(page.rows):
                self._writer.upsert(batch, report)
        finally:
            self._leases.release(page.claimed)
        return report

    def _set_aside_unreadable(self, conversation_id: str, reason: str) -> None:
        with self._report_lock:
            report = self._pass_report if self._pass_report is not None else ArchiveReport()
            self._writer.fail(conversation_id, reason, report)

    def _flush_events(self) -> None:
        try:
            self._client.flush_events()
        except IdentityError as err:
            logger.warning("events outbox flush failed: %s", err)
        if isinstance(self._client, IdentityClient):  # shop redactions a dead process left
            finish_pending_redactions(self._client, self._redis)


def archive_conversation(
    conversation_id: str,
    redis_client: RedisClient,
    user_id: str | None = None,
    *,
    client: RpcCaller | None = None,
) -> bool:
    """Archive one conversation from Redis now, whatever its TTL; ``True`` once it is stored.

    ``archive_conversation(conversation_id, redis_client, user_id)``: ``user_id`` overrides
    what the session says. It archives a conversation with no known user (unlinked, linked
    later) and replaces the messages of an earlier archive. ``False`` means nothing was stored:
    the conversation is not in Redis, or the database refused it (the reason is logged and kept
    in the dead-letter hash). Backend outages raise
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
