"""Finding due conversations without walking the keyspace per conversation.

Two sources, both cursor walks whose memory is bounded by a page:

* the due index (``ZSCAN identity:archive:due``) that :class:`ConversationStore` keeps;
* one ``SCAN conversation:*`` per pass, on every primary of a cluster, for conversations written
  by services that do not keep the index.

A candidate is due when it ended or its TTL is within the window, and it has never been
archived or has grown since. The prefilter reads each candidate's marks with one pipelined
``HMGET`` + ``PTTL``; a ``conversation:<id>`` that is not a hash is reported to ``on_bad`` (it
is set aside alone) instead of failing the page.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import cast

import redis

from .._redis import RedisClient, as_int, run_batch, scan_pages, text
from .._redis_keys import CONVERSATION_PATTERN, DUE_KEY, conversation_id_of, conversation_key
from ._types import ArchiverConfig, Candidate

__all__ = ["DueFinder"]

#: The fields the prefilter reads on each conversation hash.
_MARKS = ("archived", "archived_count", "message_count", "ended_at")
#: Pages found ahead of the work (memory: this many pages of candidates, nothing more).
PAGES_AHEAD = 4
#: The keyspace SCAN asks for this many times ``scan_count`` keys per call: it matches few of
#: them, and fewer round trips cost the server the same work (a few ms per call).
LEGACY_SCAN_FACTOR = 10


class DueFinder:
    """Yields pages of due :class:`Candidate` s; ``on_bad(id, reason)`` gets unreadable ones."""

    def __init__(
        self,
        redis_client: RedisClient,
        config: ArchiverConfig,
        on_bad: Callable[[str, str], None],
    ) -> None:
        self._redis = redis_client
        self._config = config
        self._on_bad = on_bad

    def pages(self) -> Iterator[list[Candidate]]:
        """Due conversations in pages of ``batch_rows``, found ahead in a background thread.

        The walk (mostly waiting on Redis) overlaps the work on the pages already found, so a
        large keyspace costs a pass little more than its SCAN's own time on the server. At most
        :data:`PAGES_AHEAD` pages wait in memory.
        """
        found: queue.Queue[list[Candidate] | BaseException | None] = queue.Queue(PAGES_AHEAD)
        done = threading.Event()

        def put(item: list[Candidate] | BaseException | None) -> bool:
            while not done.is_set():
                try:
                    found.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def walk() -> None:
            try:
                page: list[Candidate] = []
                for candidate in self._candidates():
                    page.append(candidate)
                    if len(page) >= self._config.batch_rows:
                        if not put(page):
                            return
                        page = []
                if page and not put(page):
                    return
                put(None)
            except BaseException as err:  # handed to the pass, which raises it
                put(err)

        walker = threading.Thread(target=walk, name="archiver-finder", daemon=True)
        walker.start()
        try:
            while (item := found.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            done.set()
            walker.join()

    def _candidates(self) -> Iterator[Candidate]:
        deadline = time.time() + self._config.window.total_seconds()
        cursor = 0
        while True:
            cursor, entries = self._redis.zscan(DUE_KEY, cursor, count=self._config.scan_count)
            ids = [text(cast("bytes | str", member)) or "" for member, _score in entries]
            yield from self._prefilter(ids, in_index=True, deadline=deadline)
            if cursor == 0:
                break
        if not self._config.scan_legacy:
            return
        count = self._config.scan_count * LEGACY_SCAN_FACTOR
        for keys in scan_pages(self._redis, CONVERSATION_PATTERN, count=count):
            ids = [conversation_id_of(key) for key in keys]
            scores = run_batch(self._redis, [("ZSCORE", DUE_KEY, cid) for cid in ids])
            legacy = [cid for cid, score in zip(ids, scores, strict=True) if score is None]
            yield from self._prefilter(legacy, in_index=False, deadline=deadline)

    def _prefilter(
        self, ids: Sequence[str], *, in_index: bool, deadline: float
    ) -> Iterator[Candidate]:
        """Keep the ids that are due and not yet archived at their current size (one pipeline)."""
        if not ids:
            return
        commands: list[tuple[str, ...]] = []
        for cid in ids:
            key = conversation_key(cid)
            commands.append(
                ("HMGET", key, "archived", "archived_count", "message_count", "ended_at")
            )
            commands.append(("PTTL", key))
        results = run_batch(self._redis, commands)
        gone: list[str] = []
        done: list[str] = []
        now = time.time()
        for index, cid in enumerate(ids):
            marks, pttl = results[2 * index], results[2 * index + 1]
            if isinstance(pttl, Exception):
                raise pttl  # PTTL fails on no key type: an outage, not a bad key
            if int(pttl) == -2:  # the key no longer exists
                gone.append(cid)
                continue
            if isinstance(marks, redis.ResponseError):
                self._on_bad(cid, f"conversation:{cid} is not a hash ({marks})")
                continue
            if isinstance(marks, Exception):
                raise marks
            archived, archived_count, message_count, ended_at = marks
            ended = bool(text(ended_at))
            expires_soon = int(pttl) >= 0 and now + int(pttl) / 1000 <= deadline
            if not (ended or expires_soon):
                continue
            count = as_int(message_count)
            done_count = as_int(archived_count)
            is_archived = text(archived) == "true"
            if is_archived and count is not None and done_count is not None and done_count >= count:
                if ended and in_index:
                    done.append(cid)
                continue
            yield Candidate(
                cid,
                count,
                done_count if done_count is not None else -1,
                ended,
                in_index,
            )
        if in_index and (gone or done):
            # Drop index entries whose keys expired, and ended conversations archived in full.
            self._redis.zrem(DUE_KEY, *gone, *done)
