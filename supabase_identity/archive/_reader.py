"""Reading claimed conversations from Redis: pipelined, bounded by the data, not the keyspace.

A page is read in a few pipelined round trips, the same on one node and on a cluster (commands
are grouped by the node that owns their slot; nothing here spans slots):

1. ``HGETALL`` of each ``conversation:<id>`` (and its ``PTTL``: when the Redis copy would
   expire, recorded in the row as ``metadata.archive.expires_at``) and ``session:<id>``, of a
   window of ``message:<id>:<seq>`` keys, and one ``EXISTS`` over the ``probe_gap`` keys after
   it (one per key on a cluster);
2. further windows only for conversations whose ``EXISTS`` found something, doubling;
3. ``GET`` for messages stored as strings (``HGETALL`` answers WRONGTYPE);
4. ``GET merchant:<shop>`` for conversations with no user yet.

So gaps shorter than ``probe_gap`` (a deleted message, numbering from 1) are crossed, and
reading stops at the conversation's real size. A message counter, when the writer keeps one,
only sizes the first window: a counter of five million costs nothing more than the messages
that exist. The first window otherwise follows the sizes seen on the previous page, so most
conversations are read in one round trip.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import redis

from .._redis import RedisClient, hash_field, is_cluster, run_batch, text
from .._redis_keys import conversation_key, merchant_key, message_key, session_key
from ._rows import RawConversation, load_json, shop_from_merchant, user_id_candidates
from ._types import ArchiverConfig, Candidate

__all__ = ["ConversationReader"]

#: Most probes sent for one conversation in one round trip.
MAX_PROBE_WINDOW: Final = 1024
#: First probe window before any page has been seen.
INITIAL_WINDOW: Final = 32


def _shop_of(raw: RawConversation) -> str | None:
    for source in (raw.session, raw.conversation):
        for name in ("shop_domain", "merchant_id"):
            shop = shop_from_merchant(text(hash_field(source, name)))
            if shop:
                return shop
    return None


def user_from_merchant(value: bytes | str | None) -> str | None:
    """``user_id`` from a ``merchant:<shop>`` JSON value; ``None`` when absent or unreadable."""
    found = text(value)
    if not found:
        return None
    try:
        data = load_json(found)
    except ValueError:  # bad JSON, or nested too deep to be anything but hostile
        return None
    user = data.get("user_id") if isinstance(data, dict) else None
    return user if isinstance(user, str) and user else None


def _expiry(pttl: Any, read_at: float) -> datetime | None:
    """When a key with this ``PTTL`` reply (read at ``read_at``) expires; ``None`` without a TTL.

    PTTL answers -1 for a key without a TTL and -2 for a missing one; neither has an expiry.
    """
    if isinstance(pttl, Exception):
        raise pttl  # PTTL fails on no key type: connection trouble, not a bad key
    if int(pttl) < 0:
        return None
    return datetime.fromtimestamp(read_at + int(pttl) / 1000, UTC)


class _Probe:
    """Where probing of one conversation stands."""

    __slots__ = ("hint", "last_hit", "next_seq", "raw")

    def __init__(self, raw: RawConversation, hint: int | None) -> None:
        self.raw = raw
        self.hint = hint
        self.next_seq = 0
        self.last_hit = -1


class ConversationReader:
    """Reads pages of claimed conversations into :class:`RawConversation` s."""

    def __init__(self, redis_client: RedisClient, config: ArchiverConfig) -> None:
        self._redis = redis_client
        self._gap = config.probe_gap
        self._max_messages = config.max_messages
        self._window = INITIAL_WINDOW

    def read(
        self, claimed: Sequence[Candidate], *, user_id: str | None = None
    ) -> dict[str, RawConversation]:
        """The conversations that still exist, by id; ``user_id`` overrides what Redis says."""
        if not claimed:
            return {}
        heads: list[tuple[str, str]] = []
        probes: list[_Probe] = []
        for candidate in claimed:
            cid = candidate.conversation_id
            heads.append(("HGETALL", conversation_key(cid)))
            heads.append(("HGETALL", session_key(cid)))
            heads.append(("PTTL", conversation_key(cid)))
            probes.append(_Probe(RawConversation(cid, {}, {}, []), candidate.message_count_hint))
        strings: list[tuple[_Probe, int]] = []
        sizes = [self._first_window(probe.hint) for probe in probes]
        replies = self._probe_round(probes, sizes, strings, heads)
        read_at = time.time()
        raws: dict[str, RawConversation] = {}
        live: list[_Probe] = []
        for index, probe in enumerate(probes):
            raw = probe.raw
            cid = raw.conversation_id
            raw.conversation = self._hash(replies[3 * index], raw, f"conversation:{cid}")
            raw.session = self._hash(replies[3 * index + 1], raw, f"session:{cid}")
            raw.expires_at = _expiry(replies[3 * index + 2], read_at)
            if not raw.conversation and not raw.session and probe.last_hit < 0:
                continue  # nothing left in Redis: vanished
            raws[cid] = raw
            live.append(probe)
        self._read_strings(strings)
        self._learn(live)
        for probe in live:
            probe.raw.messages.sort(key=lambda pair: pair[0])
            if probe.hint is not None and len(probe.raw.messages) < probe.hint:
                # The writer counted more messages than exist: say which are missing.
                found = {seq for seq, _ in probe.raw.messages}
                limit = min(probe.hint, probe.next_seq)
                missing = [seq for seq in range(limit) if seq not in found][:20]
                if missing:
                    shown = ", ".join(map(str, missing))
                    probe.raw.issues.append(f"messages missing from Redis: {shown}")
        self._resolve_users(raws, explicit=user_id)
        return raws

    # ------------------------------------------------------------------ probing

    def _first_window(self, hint: int | None) -> int:
        if hint is not None and 0 <= hint <= MAX_PROBE_WINDOW:
            return min(hint, self._max_messages)
        return min(self._window, self._max_messages)

    def _probe_round(
        self,
        probes: list[_Probe],
        sizes: list[int],
        strings: list[tuple[_Probe, int]],
        heads: list[tuple[str, str]],
    ) -> list[Any]:
        """Probe until every conversation is complete; returns the replies to ``heads``.

        Each round reads a window of messages per conversation (``HGETALL``) and checks the
        ``probe_gap`` keys after it (``EXISTS``: one command on a single node, one per key on
        a cluster, where keys of one command must share a slot). A conversation is complete
        once that check finds nothing; otherwise the next round reads further, doubling.
        """
        head_replies: list[Any] = []
        pending = list(zip(probes, sizes, strict=True))
        cluster = is_cluster(self._redis)
        while pending:
            commands: list[tuple[str, ...]] = list(heads)
            tails: list[int] = []
            for probe, size in pending:
                cid = probe.raw.conversation_id
                start, stop = probe.next_seq, probe.next_seq + size
                commands.extend(("HGETALL", message_key(cid, seq)) for seq in range(start, stop))
                gap = [message_key(cid, seq) for seq in range(stop, stop + self._gap)]
                if cluster:
                    commands.extend(("EXISTS", key) for key in gap)
                    tails.append(len(gap))
                else:
                    commands.append(("EXISTS", *gap))
                    tails.append(1)
            replies = run_batch(self._redis, commands)
            head_replies = head_replies or replies[: len(heads)]
            at = len(heads)
            heads = []
            more: list[tuple[_Probe, int]] = []
            for (probe, size), tail in zip(pending, tails, strict=True):
                self._take(probe, probe.next_seq, replies[at : at + size], strings)
                at += size
                beyond = replies[at : at + tail]
                at += tail
                for reply in beyond:
                    if isinstance(reply, Exception):
                        raise reply
                if not any(int(reply) for reply in beyond):
                    continue  # probe_gap keys past the window hold nothing: complete
                if probe.next_seq >= self._max_messages:
                    probe.raw.issues.append(
                        f"more than {self._max_messages} messages: the rest were not read"
                    )
                    continue
                # Double what was read so far: a long conversation takes log2(n) rounds.
                grow = min(MAX_PROBE_WINDOW, max(self._gap * 2, probe.next_seq))
                more.append((probe, min(grow, self._max_messages - probe.next_seq)))
            pending = more
        return head_replies

    def _take(
        self,
        probe: _Probe,
        start: int,
        replies: Sequence[Any],
        strings: list[tuple[_Probe, int]],
    ) -> None:
        for offset, reply in enumerate(replies):
            seq = start + offset
            if isinstance(reply, redis.ResponseError) and "WRONGTYPE" in str(reply):
                strings.append((probe, seq))  # a string (JSON perhaps), or another type
                probe.last_hit = seq
            elif isinstance(reply, redis.ResponseError):
                probe.raw.issues.append(f"message {seq}: unreadable ({reply})")
                probe.last_hit = seq
            elif isinstance(reply, Exception):
                raise reply  # connection trouble: the pass fails and is retried, nothing marked
            elif reply:
                probe.raw.messages.append((seq, reply))
                probe.last_hit = seq
        probe.next_seq = start + len(replies)

    def _learn(self, probes: Sequence[_Probe]) -> None:
        """Size the next page's first probe on this page's conversations (90th percentile)."""
        if not probes:
            return
        sizes = sorted(p.last_hit + 1 for p in probes)
        typical = sizes[min(len(sizes) - 1, (len(sizes) * 9) // 10)]
        self._window = max(1, min(MAX_PROBE_WINDOW, typical))

    def _read_strings(self, strings: Sequence[tuple[_Probe, int]]) -> None:
        if not strings:
            return
        commands = [("GET", message_key(probe.raw.conversation_id, seq)) for probe, seq in strings]
        for (probe, seq), value in zip(strings, run_batch(self._redis, commands), strict=True):
            if isinstance(value, bytes | str):
                probe.raw.messages.append((seq, value))
            elif isinstance(value, redis.ResponseError):
                probe.raw.issues.append(f"message {seq}: not a hash or a string, skipped")
            elif isinstance(value, Exception):
                raise value
            # None: the key expired between the two reads; nothing to keep

    @staticmethod
    def _hash(reply: Any, raw: RawConversation, name: str) -> dict[bytes | str, bytes | str]:
        if isinstance(reply, redis.ResponseError):
            raw.issues.append(f"{name} is not a hash; ignored")
            return {}
        if isinstance(reply, Exception):
            raise reply
        return dict(reply)

    # ------------------------------------------------------------------ users

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
        values = pipe.execute(raise_on_error=False)
        for (cid, shop), value in zip(lookups.items(), values, strict=True):
            if isinstance(value, Exception) and not isinstance(value, redis.ResponseError):
                raise value
            found = value if isinstance(value, bytes | str) else None
            user = user_from_merchant(found)
            if user is None and value is not None:
                raws[cid].issues.append(f"merchant:{shop} holds no usable user_id")
            raws[cid].user_id = user
