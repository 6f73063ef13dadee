"""Linking conversations archived without a user, once their user is known.

``identity:archive:unlinked`` holds each such conversation (row id, merchant, pending user).
Each pass walks it with ``HSCAN`` and looks the user up again (session, conversation,
``merchant:<shop>``, the pending id), then calls ``rpc/link_conversations``. A value that cannot
be a user id is never sent; a batch the database rejects is bisected, so one bad entry never
keeps the others unlinked.

Entries do not outlive their use, or the hash would grow with every conversation ever archived
without a user and each pass would walk them all:

* an entry whose row is already linked (by another archiver, or a re-archive that found its
  user) is dropped: entries with no user to offer are sent with a null user, which
  ``link_conversations`` never applies but answers for when the row has one;
* an entry whose conversation is gone from Redis (no ``conversation:`` nor ``session:`` key)
  gets one last attempt with what the entry itself knows (the pending user, the merchant's
  user), then is dropped whatever the answer: nothing in Redis can ever link it later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from .._exceptions import DataRejectedError
from .._redis import RedisClient, text
from .._redis_keys import UNLINKED_KEY, conversation_key, merchant_key, session_key
from ._reader import user_from_merchant
from ._rows import load_json, shop_from_merchant, usable_user_id
from ._types import ArchiverConfig, ArchiveReport, RpcCaller

__all__ = ["Linker"]


#: Replies per entry in the lookup pipeline: session user, conversation user, merchant value,
#: and whether the conversation and session keys still exist.
_REPLIES = 5


@dataclass(frozen=True, slots=True)
class _Link:
    conversation_id: str
    row_id: str
    #: ``None``: no user known; sent only to learn whether the row is already linked.
    user_id: str | None


class Linker:
    """Resolves and links unlinked conversations, one ``HSCAN`` page at a time."""

    def __init__(self, client: RpcCaller, redis_client: RedisClient, config: ArchiverConfig):
        self._client = client
        self._redis = redis_client
        self._config = config

    def link_all(self, report: ArchiveReport) -> None:
        cursor = 0
        while True:
            cursor, entries = self._redis.hscan(UNLINKED_KEY, cursor, count=self._config.scan_count)
            pending: list[tuple[str, dict[str, Any]]] = []
            for key, value in cast("dict[bytes | str, bytes | str]", entries).items():
                try:
                    info = load_json(value)
                except ValueError:
                    info = None
                if isinstance(info, dict) and isinstance(info.get("row_id"), str):
                    pending.append((text(key) or "", info))
                else:
                    self._redis.hdel(UNLINKED_KEY, key)
            if pending:
                self._link_page(pending, report)
            if cursor == 0:
                return

    def _link_page(
        self, pending: Sequence[tuple[str, dict[str, Any]]], report: ArchiveReport
    ) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for cid, info in pending:
            pipe.hget(session_key(cid), "user_id")
            pipe.hget(conversation_key(cid), "user_id")
            merchant = info.get("merchant_id")
            shop = shop_from_merchant(merchant if isinstance(merchant, str) else None)
            # A key that cannot exist keeps one answer per lookup (GET of a missing key).
            pipe.get(merchant_key(shop) if shop else conversation_key(cid) + ":no-merchant")
            # One key per EXISTS: the two keys hash to different slots of a cluster.
            pipe.exists(conversation_key(cid))
            pipe.exists(session_key(cid))
        values = pipe.execute(raise_on_error=False)
        for value in values:
            if isinstance(value, Exception) and not isinstance(value, redis.ResponseError):
                raise value
        links: list[_Link] = []
        gone: list[str] = []
        for index, (cid, info) in enumerate(pending):
            at = _REPLIES * index
            session_user, conv_user, merchant = (
                None if isinstance(v, Exception) else v for v in values[at : at + 3]
            )
            if not any(int(v) for v in values[at + 3 : at + 5] if not isinstance(v, Exception)):
                gone.append(cid)
            pending_user = info.get("pending_user_id")
            user = next(
                (
                    found
                    for candidate in (
                        text(session_user),
                        text(conv_user),
                        user_from_merchant(merchant),
                        pending_user if isinstance(pending_user, str) else None,
                    )
                    if (found := usable_user_id(candidate, [], "user_id"))
                ),
                None,
            )
            links.append(_Link(cid, info["row_id"], user))
        self._send(links, report)
        if gone:
            # Linked or not, nothing left in Redis can link these later.
            report.unlinked_dropped += self._redis.hdel(UNLINKED_KEY, *gone)

    def _send(self, links: list[_Link], report: ArchiveReport) -> None:
        if not links:
            return
        try:
            linked = self._client.rpc(
                "link_conversations",
                {"links": [{"id": link.row_id, "user_id": link.user_id} for link in links]},
            )
        except DataRejectedError:
            if len(links) == 1:
                return  # this one stays unlinked; the others are not held back
            middle = len(links) // 2
            self._send(links[:middle], report)
            self._send(links[middle:], report)
            return
        linked_ids = {str(item["id"]) for item in linked or []}
        done = [link for link in links if link.row_id in linked_ids]
        if done:
            self._redis.hdel(UNLINKED_KEY, *(link.conversation_id for link in done))
            offered = sum(1 for link in done if link.user_id is not None)
            report.linked += offered
            report.unlinked_dropped += len(done) - offered  # linked before, elsewhere
