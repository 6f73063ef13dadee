"""Writing archived conversations: rows that fit, batched upserts, bisection, marks.

* :meth:`ArchiveWriter.ready_row` builds one conversation's row and cuts its fields further until
  it fits one request; any failure to build it is that conversation's alone (dead-lettered).
* :meth:`ArchiveWriter.batches` groups rows into requests bounded by rows and bytes.
* :meth:`ArchiveWriter.upsert` sends a batch through ``rpc/archive_conversations``; when the
  database rejects its data, the batch is bisected so one bad conversation is dead-lettered with
  the reason and the rest are stored. Any other error (outage, key, schema) is not about the
  data: it propagates with nothing marked.
* Marks (``archived``, ``archived_count``) are written only after the 2xx, only on keys that
  still exist, and only upwards.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import redis

from .._exceptions import DataRejectedError
from .._redis import RedisClient, run_batch, script_command
from .._redis_keys import DEAD_LETTER_KEY, MARK_SCRIPT, UNLINKED_KEY, conversation_key
from ._rows import RawConversation, build_row
from ._types import ArchiverConfig, ArchiveReport, Candidate, ReadyRow, RpcCaller

__all__ = ["ArchiveWriter"]

logger = logging.getLogger("supabase_identity.archive")

#: A conversation whose fields are cut down to this and still does not fit is dead-lettered.
MIN_FIELD_BYTES: Final = 256


class ArchiveWriter:
    """Builds, sends and marks rows; shared by every page of a pass (thread-safe)."""

    def __init__(
        self,
        client: RpcCaller,
        redis_client: RedisClient,
        config: ArchiverConfig,
        worker_id: str,
    ) -> None:
        self._client = client
        self._redis = redis_client
        self._config = config
        self._worker_id = worker_id

    # ------------------------------------------------------------------ rows

    def ready_row(self, candidate: Candidate, raw: RawConversation) -> tuple[ReadyRow, list[str]]:
        """The row, cutting long fields further until it fits in one request.

        A conversation of many large messages can exceed the body limit even with every field
        under ``max_field_bytes``; halving the field limit keeps every message (truncated, with
        an issue) instead of failing the conversation. Raises ``ValueError`` when it cannot fit.
        """
        limit = self._config.max_field_bytes
        while True:
            row, issues = build_row(raw, max_field_bytes=limit)
            encoded = json.dumps(
                row, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
            size = len(encoded)
            if size <= self._config.batch_bytes:
                ready = ReadyRow(
                    candidate=candidate,
                    row_id=row["id"],
                    source_id=row["source_id"],
                    message_count=len(row["messages"]),
                    user_id=row["user_id"],
                    merchant_id=row["merchant_id"],
                    encoded=encoded,
                )
                return ready, issues
            if limit <= MIN_FIELD_BYTES:
                raise ValueError(
                    f"{size} bytes even with every field cut to {limit} bytes "
                    f"(batch_bytes is {self._config.batch_bytes})"
                )
            limit = max(MIN_FIELD_BYTES, limit // 2)

    def batches(self, rows: Sequence[ReadyRow]) -> Iterator[list[ReadyRow]]:
        """Group rows into requests bounded by ``batch_rows`` and ``batch_bytes``."""
        batch: list[ReadyRow] = []
        size = 0
        for item in rows:
            if batch and (
                size + len(item.encoded) > self._config.batch_bytes
                or len(batch) >= self._config.batch_rows
            ):
                yield batch
                batch, size = [], 0
            batch.append(item)
            size += len(item.encoded)
        if batch:
            yield batch

    # ------------------------------------------------------------------ upsert

    def upsert(self, batch: list[ReadyRow], report: ArchiveReport) -> None:
        """Send one batch; bisect it when the database rejects its data (see module doc)."""
        try:
            body = b'{"conversations":[' + b",".join(item.encoded for item in batch) + b"]}"
            result = self._client.rpc("archive_conversations", {}, encoded=body)
        except DataRejectedError as err:  # the data itself: bisecting isolates the culprit
            if len(batch) == 1:
                self.fail(batch[0].conversation_id, f"rejected by the database: {err}", report)
                return
            middle = len(batch) // 2
            self.upsert(batch[:middle], report)
            self.upsert(batch[middle:], report)
            return
        self._mark(batch, result or [], report)

    def _mark(self, batch: Sequence[ReadyRow], result: Any, report: ArchiveReport) -> None:
        statuses = {(str(item["id"]), item.get("source_id")): item for item in result}
        commands: list[tuple[Any, ...]] = []
        stamp = datetime.now(UTC).isoformat()
        for ready in batch:
            cid = ready.conversation_id
            outcome = statuses.get((ready.row_id, ready.source_id))
            status = outcome.get("status") if outcome is not None else None
            if outcome is None or status == "conflict":
                reason = (
                    "no status returned by the database"
                    if outcome is None
                    else "its row id belongs to another conversation (source_id differs)"
                )
                commands.append(self._dead_letter_command(cid, reason))
                report.add_failure(cid, reason)
                continue
            if status == "inserted":
                report.archived += 1
            elif status == "updated":
                report.rearchived += 1
            else:  # stale: the database already holds a longer copy
                report.unchanged += 1
            commands.append(
                script_command(MARK_SCRIPT, conversation_key(cid), ready.message_count, stamp)
            )
            if outcome.get("user_id") is None:
                report.unlinked += 1
                pending = {
                    "row_id": ready.row_id,
                    "merchant_id": ready.merchant_id,
                    "pending_user_id": ready.user_id,
                }
                commands.append(("HSET", UNLINKED_KEY, cid, json.dumps(pending)))
            else:
                commands.append(("HDEL", UNLINKED_KEY, cid))
            commands.append(("HDEL", DEAD_LETTER_KEY, cid))
        # A mark that fails (the key turned into another type) only means the conversation is
        # read again next pass; its row is stored. Connection errors still end the pass.
        for reply in run_batch(self._redis, commands):
            if isinstance(reply, Exception) and not isinstance(reply, redis.ResponseError):
                raise reply

    # ------------------------------------------------------------------ failures

    def fail(self, conversation_id: str, reason: str, report: ArchiveReport) -> None:
        """Set one conversation aside with its reason; the rest of its page goes on."""
        report.add_failure(conversation_id, reason)
        self._dead_letter(conversation_id, reason)

    def _dead_letter(self, conversation_id: str, reason: str) -> None:
        (reply,) = run_batch(self._redis, [self._dead_letter_command(conversation_id, reason)])
        if isinstance(reply, Exception):
            raise reply

    def _dead_letter_command(self, conversation_id: str, reason: str) -> tuple[str, ...]:
        logger.error("conversation %s not archived: %s", conversation_id[:200], reason)
        entry = json.dumps(
            {"reason": reason, "at": datetime.now(UTC).isoformat(), "worker": self._worker_id}
        )
        return ("HSET", DEAD_LETTER_KEY, conversation_id, entry)
