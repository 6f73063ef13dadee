"""The archiver's run loop, heartbeat, health check and counters.

:class:`Worker` runs passes on a fixed cadence (the time a pass took is subtracted), off the
event loop, backing off with jitter while a backend is down. It never dies of an exception: an
unexpected one is logged with its traceback and counted (``pass_errors``), and the loop goes on.
After each pass it flushes the events outbox and writes its heartbeat.

Heartbeats live in one hash (``identity:archive:heartbeats``, worker id -> JSON with an
expiry), so a probe reads them without scanning the keyspace, on one node or a cluster:

    check_health(redis_client)   -> Health: the live heartbeats (``archive --check``)

(``supabase_identity._monitoring.read_archiver_stats`` adds the counters and the backlog.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import redis

from .._exceptions import BackendUnavailableError, ValidationError
from .._redis import RedisClient
from .._redis_keys import HEARTBEATS_KEY, STATS_KEY
from ._rows import load_json
from ._types import ArchiverConfig, ArchiveReport

__all__ = ["Health", "Worker", "check_health"]

logger = logging.getLogger("supabase_identity.archive")
_T = TypeVar("_T")
#: Counters kept in ``identity:archive:stats`` (plus ``failed``, ``passes``, ``pass_errors``).
STAT_FIELDS = ("archived", "rearchived", "unchanged", "unlinked", "linked", "unlinked_dropped")


@dataclass(frozen=True)
class Health:
    """Live archiver heartbeats; ``ok`` while at least one loop is alive."""

    heartbeats: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return bool(self.heartbeats)


def check_health(redis_client: RedisClient, *, now: float | None = None) -> Health:
    """The heartbeats of archiver loops alive now; expired entries are removed on the way."""
    entries = redis_client.hgetall(HEARTBEATS_KEY)
    moment = time.time() if now is None else now
    alive: list[dict[str, Any]] = []
    expired: list[bytes | str] = []
    for worker, raw in entries.items():
        try:
            beat = load_json(raw)
        except ValueError:
            beat = None
        if not isinstance(beat, dict) or not isinstance(beat.get("expires"), int | float):
            expired.append(worker)
            continue
        if beat["expires"] < moment:
            expired.append(worker)
        else:
            alive.append(beat)
    if expired:
        with contextlib.suppress(redis.RedisError):
            redis_client.hdel(HEARTBEATS_KEY, *expired)
    alive.sort(key=lambda beat: str(beat.get("worker")))
    return Health(alive)


class Worker:
    """Runs ``run_pass`` every ``config.interval`` until :meth:`stop`; see the module doc."""

    def __init__(
        self,
        redis_client: RedisClient,
        config: ArchiverConfig,
        worker_id: str,
        *,
        run_pass: Callable[[], ArchiveReport],
        flush_events: Callable[[], None],
    ) -> None:
        self._redis = redis_client
        self._config = config
        self.worker_id = worker_id
        self._run_pass = run_pass
        self._flush_events = flush_events
        # Checked by the pass running in a worker thread; the asyncio side wakes on _wake.
        self.stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._interval = config.interval

    def stop(self) -> None:
        """Stop picking work; safe from any thread and from a signal handler."""
        self.stopping.set()
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run_forever(self, interval: timedelta | None = None) -> None:
        """Run passes every ``interval`` (default ``config.interval``) until :meth:`stop`."""
        self._interval = interval if interval is not None else self._config.interval
        if self._interval <= timedelta(0):
            raise ValidationError("interval must be positive", field="interval", rule="positive")
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self.stopping.is_set():
            self._wake.set()
        failures = 0
        seconds = self._interval.total_seconds()
        logger.info("archiver %s started (interval %.0fs)", self.worker_id, seconds)
        try:
            while not self.stopping.is_set():
                began = time.monotonic()
                try:
                    report = await self._in_thread(self._run_pass)
                    await self._in_thread(self._flush_events)
                    await asyncio.to_thread(self.beat, report)
                    failures = 0
                    logger.info("archive pass: %s", report.summary())
                    delay = max(0.0, seconds - (time.monotonic() - began))
                except (BackendUnavailableError, redis.ConnectionError, redis.TimeoutError) as err:
                    failures += 1
                    delay = self._backoff(failures)
                    await asyncio.to_thread(self.beat, None)
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
                    await asyncio.to_thread(self.beat, None)
                    with contextlib.suppress(redis.RedisError):
                        await asyncio.to_thread(self._redis.hincrby, STATS_KEY, "pass_errors", 1)
                    logger.exception("archive pass crashed; retrying in %.1fs", delay)
                await self._sleep(delay)
        finally:
            await asyncio.to_thread(self.forget_beat)
            logger.info("archiver %s stopped", self.worker_id)

    # ------------------------------------------------------------------ heartbeat and stats

    def beat(self, report: ArchiveReport | None) -> None:
        """The running loop's heartbeat: expires after three intervals without a pass.

        Only :meth:`run_forever` writes it, so ``archive --check`` (a liveness probe) passes
        while a loop is alive, never because a one-off pass ran recently.
        """
        ttl = max(60.0, self._interval.total_seconds() * 3)
        beat = {
            "at": datetime.now(UTC).isoformat(),
            "expires": time.time() + ttl,
            "worker": self.worker_id,
            "last_pass": report.summary() if report is not None else "failed",
            "seconds": round(report.seconds, 3) if report is not None else None,
        }
        try:
            self._redis.hset(HEARTBEATS_KEY, self.worker_id, json.dumps(beat))
        except redis.RedisError as err:
            logger.warning("could not write the archiver heartbeat: %s", err)

    def forget_beat(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self._redis.hdel(HEARTBEATS_KEY, self.worker_id)

    def heartbeat(self) -> dict[str, Any] | None:
        """The last heartbeat this worker wrote."""
        raw = self._redis.hget(HEARTBEATS_KEY, self.worker_id)
        if raw is None:
            return None
        beat = load_json(raw)
        return beat if isinstance(beat, dict) else None

    def record(self, report: ArchiveReport) -> None:
        """Counters for monitoring (the "Archival Health" metrics): one pipeline."""
        pipe = self._redis.pipeline(transaction=False)
        for name in STAT_FIELDS:
            value = getattr(report, name)
            if value:
                pipe.hincrby(STATS_KEY, name, value)
        if report.failed_count:
            pipe.hincrby(STATS_KEY, "failed", report.failed_count)
        pipe.hincrby(STATS_KEY, "passes", 1)
        try:
            pipe.execute()
        except redis.RedisError as err:
            logger.warning("could not record archiver stats: %s", err)

    # ------------------------------------------------------------------ loop helpers

    async def _in_thread(self, work: Callable[[], _T]) -> _T:
        """Run blocking work in a thread; if the task is cancelled meanwhile, ask the work to
        stop and give it ``shutdown_grace`` to finish or release its batch before re-raising."""
        future: Awaitable[_T] = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            self.stop()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(future, self._config.shutdown_grace.total_seconds())
            raise

    def _backoff(self, failures: int) -> float:
        low = self._config.backoff_min.total_seconds()
        high = self._config.backoff_max.total_seconds()
        return min(high, low * 2.0 ** (failures - 1)) * random.uniform(0.5, 1.0)  # noqa: S311

    async def _sleep(self, seconds: float) -> None:
        """Sleep between passes, waking at once when :meth:`stop` is called."""
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
