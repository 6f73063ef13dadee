"""Claims on conversations, so several archivers never work on one at the same time.

A claim is ``identity:archive:lease:<id>`` holding the worker id, set with ``NX`` and a short
TTL (``ArchiverConfig.lease``, 10 s by default). While its owner lives, a keeper thread renews
every claim it holds three times per TTL, so a claim is never taken while its owner is alive and
working, however long an upsert takes; once the owner dies (SIGKILL, lost host), its claims
expire within one TTL and the next pass of another worker takes them over.

Every command touches one key, so claims work the same on a Redis Cluster.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence

import redis

from .._redis import RedisClient, run_batch, script_command
from .._redis_keys import RELEASE_SCRIPT, RENEW_SCRIPT, lease_key

__all__ = ["Leases"]

logger = logging.getLogger("supabase_identity.archive")


class Leases:
    """Claims held by one worker, renewed in the background while the worker runs."""

    def __init__(self, redis_client: RedisClient, worker_id: str, ttl_seconds: float) -> None:
        self._redis = redis_client
        self.worker_id = worker_id
        self._ttl_ms = max(1000, int(ttl_seconds * 1000))
        self._held: set[str] = set()
        self._mutex = threading.Lock()
        self._keeper: threading.Thread | None = None
        self._stop_keeper = threading.Event()
        self._users = 0

    # ------------------------------------------------------------------ claims

    def claim(self, conversation_ids: Sequence[str]) -> list[str]:
        """Claim what no live worker holds; returns the ids won (one pipelined round trip)."""
        if not conversation_ids:
            return []
        commands = [
            ("SET", lease_key(cid), self.worker_id, "PX", self._ttl_ms, "NX")
            for cid in conversation_ids
        ]
        replies = run_batch(self._redis, commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        won = [cid for cid, ok in zip(conversation_ids, replies, strict=True) if ok]
        with self._mutex:
            self._held.update(won)
        return won

    def release(self, conversation_ids: Iterable[str]) -> None:
        """Give claims back (only those this worker still holds)."""
        ids = list(conversation_ids)
        if not ids:
            return
        with self._mutex:
            self._held.difference_update(ids)
        commands = [script_command(RELEASE_SCRIPT, lease_key(cid), self.worker_id) for cid in ids]
        for reply in run_batch(self._redis, commands):
            if isinstance(reply, Exception):
                raise reply

    def renew(self) -> int:
        """Extend every claim held; returns how many were still ours."""
        with self._mutex:
            ids = list(self._held)
        if not ids:
            return 0
        commands = [
            script_command(RENEW_SCRIPT, lease_key(cid), self.worker_id, self._ttl_ms)
            for cid in ids
        ]
        results = run_batch(self._redis, commands)
        for reply in results:
            if isinstance(reply, Exception):
                raise reply
        gone = [cid for cid, ok in zip(ids, results, strict=True) if ok == 0]
        with self._mutex:
            lost = [cid for cid in gone if cid in self._held]  # not released meanwhile
            self._held.difference_update(lost)
        if lost:
            logger.warning("archiver %s lost %d claims (expired)", self.worker_id, len(lost))
        return len(ids) - len(gone)

    # ------------------------------------------------------------------ keeper

    def __enter__(self) -> Leases:
        """Keep renewing held claims in a thread until the matching ``__exit__``."""
        with self._mutex:
            self._users += 1
            if self._keeper is None:
                self._stop_keeper = threading.Event()
                self._keeper = threading.Thread(
                    target=self._keep,
                    args=(self._stop_keeper,),
                    name=f"lease-keeper-{self.worker_id}",
                    daemon=True,
                )
                self._keeper.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._mutex:
            self._users -= 1
            keeper = self._keeper if self._users == 0 else None
            if keeper is not None:
                self._keeper = None
                self._stop_keeper.set()
        if keeper is not None:
            keeper.join()

    def _keep(self, stop: threading.Event) -> None:
        period = self._ttl_ms / 3000
        while not stop.wait(period):
            try:
                self.renew()
            except redis.RedisError as err:  # the pass itself notices an outage and backs off
                logger.warning("archiver %s could not renew its claims: %s", self.worker_id, err)
