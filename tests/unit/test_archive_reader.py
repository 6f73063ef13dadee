"""The archiver's reader against a real redis-server: probes bounded by the data, not by a
counter, crossing gaps, and never one keyspace SCAN per page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from supabase_identity._redis_keys import conversation_key, message_key, session_key
from supabase_identity.archive._reader import ConversationReader
from supabase_identity.archive._types import ArchiverConfig, Candidate


def candidate(cid: str, hint: int | None = None) -> Candidate:
    return Candidate(cid, hint, -1, True, False)


def put_messages(r: redis.Redis, cid: str, seqs: list[int]) -> None:
    r.hset(conversation_key(cid), "id", cid)
    r.hset(session_key(cid), "user_id", "usr_" + "a" * 20)
    for seq in seqs:
        r.hset(message_key(cid, seq), mapping={"sender": "user", "content": f"m{seq}"})


def seqs(raws: dict[str, Any], cid: str) -> list[int]:
    return [seq for seq, _ in raws[cid].messages]


def test_probes_cross_gaps_shorter_than_probe_gap(redis_client: redis.Redis) -> None:
    present = [1, 2, 3, 10, 25, 40]  # numbered from 1, with gaps of 6, 14 and 14
    put_messages(redis_client, "gappy", present)
    reader = ConversationReader(redis_client, ArchiverConfig(probe_gap=16))

    assert seqs(reader.read([candidate("gappy")]), "gappy") == present


def test_a_gap_longer_than_probe_gap_ends_the_conversation(redis_client: redis.Redis) -> None:
    put_messages(redis_client, "far", [0, 1, 100])
    reader = ConversationReader(redis_client, ArchiverConfig(probe_gap=16))

    assert seqs(reader.read([candidate("far")]), "far") == [0, 1]


def test_a_counter_is_a_hint_never_a_bound(redis_client: redis.Redis) -> None:
    put_messages(redis_client, "liar-high", [0, 1, 2])
    put_messages(redis_client, "liar-low", list(range(50)))
    reader = ConversationReader(redis_client, ArchiverConfig())
    sent_before = _commands(redis_client)

    raws = reader.read([candidate("liar-high", 5_000_000), candidate("liar-low", 2)])

    assert seqs(raws, "liar-high") == [0, 1, 2]
    assert seqs(raws, "liar-low") == list(range(50))
    # Probes follow the messages that exist: a few dozen, not millions.
    assert _commands(redis_client) - sent_before < 300
    assert any("missing" in issue for issue in raws["liar-high"].issues)


def test_long_conversations_are_read_whole(redis_client: redis.Redis) -> None:
    put_messages(redis_client, "long", list(range(3000)))
    reader = ConversationReader(redis_client, ArchiverConfig())

    assert seqs(reader.read([candidate("long")]), "long") == list(range(3000))


def test_max_messages_caps_a_conversation_with_an_issue(redis_client: redis.Redis) -> None:
    put_messages(redis_client, "huge", list(range(300)))
    reader = ConversationReader(redis_client, ArchiverConfig(max_messages=100))

    raws = reader.read([candidate("huge")])

    assert seqs(raws, "huge") == list(range(100))
    assert any("more than 100 messages" in issue for issue in raws["huge"].issues)


def test_reading_never_scans_the_keyspace(redis_client: redis.Redis) -> None:
    pipe = redis_client.pipeline(transaction=False)
    for i in range(5000):
        pipe.set(f"noise:{i}", i)
    pipe.execute()
    put_messages(redis_client, "seed", [0, 1, 2])
    redis_client.config_resetstat()

    ConversationReader(redis_client, ArchiverConfig()).read([candidate("seed")])

    stats = redis_client.info("commandstats")
    assert "cmdstat_scan" not in stats and "cmdstat_keys" not in stats


def _commands(r: redis.Redis) -> int:
    return int(r.info("stats")["total_commands_processed"])


def test_the_expiry_is_read_from_the_conversation_ttl(redis_client: redis.Redis) -> None:
    put_messages(redis_client, "expiring", [0])
    put_messages(redis_client, "immortal", [0])
    redis_client.expire(conversation_key("expiring"), 3600)
    reader = ConversationReader(redis_client, ArchiverConfig())

    before = datetime.now(UTC)
    raws = reader.read([candidate("expiring"), candidate("immortal")])
    after = datetime.now(UTC)

    expires_at = raws["expiring"].expires_at
    assert expires_at is not None
    # PTTL counts down from 3600 s between `before` and `after` (and is cut to the ms).
    assert before + timedelta(seconds=3599) <= expires_at <= after + timedelta(seconds=3600)
    assert raws["immortal"].expires_at is None
