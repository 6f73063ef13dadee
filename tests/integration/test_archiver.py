"""The archiver against the real stack: Redis → PostgREST → Postgres, nothing lost.

Every test runs twice: on the stack's single Redis and on a Redis Cluster of 3 primaries and 3
replicas (``scripts/stack cluster up``, ``REDIS_CLUSTER_URL``). Each test gets its own Redis
database on the single node, and the whole (private) cluster, flushed, so passes see only that
test's conversations. Rows are checked in Postgres directly (SUPABASE_DB_URL, tests only): the
package never uses it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import redis
import redis.cluster
from redis.typing import EncodableT, FieldT

from supabase_identity import IdentityClient, archive_conversation, conversation_uuid
from supabase_identity._redis import RedisClient, connect_redis
from supabase_identity._redis_keys import DEAD_LETTER_KEY, UNLINKED_KEY, lease_key
from supabase_identity.archive import (
    DUE_KEY,
    ArchiverConfig,
    ConversationArchiver,
    ConversationStore,
    conversation_key,
    merchant_key,
    message_key,
    session_key,
)
from supabase_identity.archive import _types as archive_types
from supabase_identity.archive._rows import row_identity

from .._wait import wait_until
from .conftest import PostgrestSwitch, stack_variable

pytestmark = pytest.mark.integration
ARCHIVER_REDIS_DB = 7


def flush(client: RedisClient) -> None:
    """Empty the test's database, or every primary of the (test-only) cluster.

    One node at a time: redis-py's ``flushall(target_nodes=…)`` leaves a socket open.
    """
    if isinstance(client, redis.cluster.RedisCluster):
        for node in client.get_primaries():  # type: ignore[no-untyped-call]
            client.get_redis_connection(node).flushall()
    else:
        client.flushdb()


@pytest.fixture(params=["single", "cluster"])
def r(request: pytest.FixtureRequest) -> Iterator[RedisClient]:
    if request.param == "cluster":
        client = connect_redis(stack_variable("REDIS_CLUSTER_URL"), cluster=True)
    else:
        url = stack_variable("REDIS_URL").rsplit("/", 1)[0] + f"/{ARCHIVER_REDIS_DB}"
        client = connect_redis(url, cluster=False)
    flush(client)
    yield client
    flush(client)
    client.close()


@pytest.fixture(scope="module")
def client() -> Iterator[IdentityClient]:
    with IdentityClient(
        url=stack_variable("SUPABASE_URL"),
        key=stack_variable("SUPABASE_SERVICE_ROLE_KEY"),
        redis_url=None,
    ) as c:
        yield c


def shop() -> str:
    return f"arc-{uuid.uuid4().hex[:12]}.myshopify.com"


def row(db: psycopg.Connection[Any], conversation_id: str) -> dict[str, Any] | None:
    from supabase_identity import conversation_uuid

    cur = db.execute(
        "select id::text, source_id, user_id, message_count, messages, metadata, started_at"
        " from identity.conversations where id = %s",
        (str(conversation_uuid(conversation_id)),),
    )
    found = cur.fetchone()
    if found is None:
        return None
    names = ["id", "source_id", "user_id", "message_count", "messages", "metadata", "started_at"]
    return dict(zip(names, found, strict=True))


def count_rows(db: psycopg.Connection[Any], user_id: str) -> int:
    """How many archived conversations the user has in Postgres."""
    found = db.execute(
        "select count(*) from identity.conversations where user_id = %s", (user_id,)
    ).fetchone()
    assert found is not None
    return int(found[0])


def write_conversation(
    store: ConversationStore, user_id: str | None, messages: int, *, end: bool = True
) -> str:
    cid = str(uuid.uuid4())
    store.create_session(cid, user_id=user_id, merchant_id="merchant_test")
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(messages):
        store.append_message(
            cid,
            sender="user" if i % 2 == 0 else "cj",
            content=f"message {i} " + "x" * 200,
            timestamp=base + timedelta(seconds=i),
        )
    if end:
        store.end_conversation(cid)
    return cid


def test_archives_ended_conversation_with_user_and_marks_after_write(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    store = ConversationStore(r)
    cid = write_conversation(store, user_id, 3)

    report = ConversationArchiver(client, r).run_once()

    assert report.archived == 1 and not report.failed
    stored = row(db, cid)
    assert stored is not None
    assert stored["user_id"] == user_id
    assert stored["message_count"] == 3
    assert [m["content"][:9] for m in stored["messages"]] == ["message 0", "message 1", "message 2"]
    assert r.hget(conversation_key(cid), "archived") == b"true"
    assert r.hget(conversation_key(cid), "archived_count") == b"3"
    # A second pass finds nothing new and removes the finished entry from the due index.
    again = ConversationArchiver(client, r).run_once()
    assert again.archived == again.rearchived == 0
    assert r.zscore(DUE_KEY, cid) is None


def test_conversation_that_grows_is_rearchived_in_the_same_row(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    store = ConversationStore(r)
    cid = write_conversation(store, user_id, 2)
    archiver = ConversationArchiver(client, r)
    assert archiver.run_once().archived == 1

    store.append_message(cid, sender="user", content="late message")
    store.end_conversation(cid)
    report = archiver.run_once()

    assert report.rearchived == 1 and report.archived == 0
    stored = row(db, cid)
    assert stored is not None and stored["message_count"] == 3
    assert stored["messages"][-1]["content"] == "late message"
    count = db.execute(
        "select count(*) from identity.conversations where id = %s", (cid,)
    ).fetchone()
    assert count == (1,)


def test_window_selects_conversations_near_expiry_only(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    soon = write_conversation(ConversationStore(r, ttl=timedelta(hours=1)), user_id, 1, end=False)
    later = write_conversation(ConversationStore(r, ttl=timedelta(hours=5)), user_id, 1, end=False)

    report = ConversationArchiver(
        client, r, config=ArchiverConfig(window=timedelta(hours=2))
    ).run_once()

    assert report.found == 1 and report.archived == 1
    assert row(db, soon) is not None
    assert row(db, later) is None


def test_the_recorded_expiry_is_what_stats_reports_as_archived_before_expiry(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    written = datetime.now(UTC)
    cid = write_conversation(ConversationStore(r, ttl=timedelta(hours=1)), user_id, 1, end=False)

    report = ConversationArchiver(client, r).run_once()
    read_by = datetime.now(UTC)

    assert report.archived == 1, report.failed
    stored = row(db, cid)
    assert stored is not None
    expires_at = datetime.fromisoformat(stored["metadata"]["archive"]["expires_at"])
    # The key's TTL at read time: an hour after the write, to the millisecond.
    assert written + timedelta(hours=1) - timedelta(milliseconds=1) <= expires_at
    assert expires_at <= read_by + timedelta(hours=1)
    found = db.execute(
        "select archived_at from identity.conversations where id = %s", (stored["id"],)
    ).fetchone()
    assert found is not None
    archived_at: datetime = found[0]
    margin = (expires_at - archived_at).total_seconds()
    assert 0 < margin <= 3600

    # identity.stats at that instant, with and without this row's expiry: the difference is
    # this conversation alone (rows archived later do not count at a past as_of).
    with_it = client.get_stats(as_of=archived_at).archival
    db.execute(
        "update identity.conversations set metadata = metadata #- '{archive,expires_at}'"
        " where id = %s",
        (stored["id"],),
    )
    without = client.get_stats(as_of=archived_at).archival

    assert with_it.expiry_samples == without.expiry_samples + 1
    assert with_it.before_expiry_avg_seconds is not None
    total_with = with_it.before_expiry_avg_seconds * with_it.expiry_samples
    total_without = (without.before_expiry_avg_seconds or 0) * without.expiry_samples
    # Averages are rounded to the millisecond: allow that much per sample.
    assert total_with - total_without == pytest.approx(margin, abs=0.001 * with_it.expiry_samples)
    # Archived ahead of its expiry, it waited for nothing: no latency sample either way.
    assert with_it.latency_samples == without.latency_samples


def test_legacy_layout_without_index_is_found_by_scan_and_linked_via_merchant(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    domain = shop()
    user_id, _ = client.get_or_create_user(domain)
    name = domain.removesuffix(".myshopify.com")
    cid = f"legacy-{uuid.uuid4().hex[:8]}"
    decoy = cid + "-other"  # the seed's KEYS *id* would have mixed these two up
    for conv, contents in ((cid, ["hello", "world"]), (decoy, ["decoy"])):
        r.hset(conversation_key(conv), mapping={"id": conv, "workflow": "shopify_onboarding"})
        r.expire(conversation_key(conv), 3600)
        r.hset(session_key(conv), mapping={"merchant_id": f"merchant_{name}", "user_id": ""})
        for seq, content in enumerate(contents, start=1):
            r.hset(
                message_key(conv, seq),
                mapping={
                    "sender": "user",
                    "content": content,
                    "timestamp": f"2026-01-01T00:00:0{seq}Z",
                },
            )
    r.set(f"message:{cid}:meta", "not a message")
    r.set(merchant_key(domain), json.dumps({"merchant_id": f"merchant_{name}", "user_id": user_id}))
    for i in range(2000):  # unrelated keys the scan has to walk past
        r.set(f"noise:{i}", i)

    report = ConversationArchiver(client, r, config=ArchiverConfig(scan_count=100)).run_once()

    assert report.found == 2 and report.archived == 2, report
    stored = row(db, cid)
    assert stored is not None
    assert stored["user_id"] == user_id
    assert stored["source_id"] == cid
    assert [m["content"] for m in stored["messages"]] == ["hello", "world"]
    decoy_row = row(db, decoy)
    assert decoy_row is not None and [m["content"] for m in decoy_row["messages"]] == ["decoy"]
    # Readable through the SDK by the id the agents service knows.
    assert [m["content"] for m in client.get_conversation(user_id, cid).messages] == [
        "hello",
        "world",
    ]


def test_unlinked_conversation_is_archived_then_linked_when_user_known(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    domain = shop()
    name = domain.removesuffix(".myshopify.com")
    store = ConversationStore(r)
    cid = str(uuid.uuid4())
    store.create_session(cid, merchant_id=f"merchant_{name}")
    store.append_message(cid, sender="user", content="before oauth")
    store.end_conversation(cid)
    archiver = ConversationArchiver(client, r)

    first = archiver.run_once()
    assert first.archived == 1 and first.unlinked == 1
    stored = row(db, cid)
    assert stored is not None and stored["user_id"] is None
    assert r.hexists(UNLINKED_KEY, cid)

    user_id, _ = client.get_or_create_user(domain)
    store.remember_merchant(domain, user_id)
    second = archiver.run_once()

    assert second.linked == 1
    stored = row(db, cid)
    assert stored is not None and stored["user_id"] == user_id
    assert not r.hexists(UNLINKED_KEY, cid)


def _expire(r: RedisClient, cid: str) -> None:
    """The conversation's Redis copy is gone, as after its TTL (one key per call: slots)."""
    for key in (conversation_key(cid), session_key(cid), message_key(cid, 0)):
        r.delete(key)


def test_stale_unlinked_entries_are_dropped_and_their_rows_kept(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    store = ConversationStore(r)
    live, expired, linked_elsewhere = (write_conversation(store, None, 1) for _ in range(3))
    archiver = ConversationArchiver(client, r)
    assert archiver.run_once().unlinked == 3
    # One conversation's Redis copy expires; another's row is linked by someone else.
    _expire(r, expired)
    user_id, _ = client.get_or_create_user(shop())
    elsewhere = row(db, linked_elsewhere)
    assert elsewhere is not None
    db.execute(
        "update identity.conversations set user_id = %s where id = %s", (user_id, elsewhere["id"])
    )

    report = archiver.run_once()

    assert report.unlinked_dropped == 2 and report.linked == 0, report
    assert r.hexists(UNLINKED_KEY, live)
    assert not r.hexists(UNLINKED_KEY, expired)
    assert not r.hexists(UNLINKED_KEY, linked_elsewhere)
    # Dropping an entry forgets it in Redis, never touches its row.
    expired_row, elsewhere = row(db, expired), row(db, linked_elsewhere)
    assert expired_row is not None and expired_row["user_id"] is None
    assert elsewhere is not None and elsewhere["user_id"] == user_id
    again = archiver.run_once()
    assert again.unlinked_dropped == 0 and r.hexists(UNLINKED_KEY, live)


def test_an_expired_unlinked_conversation_gets_a_last_link_from_its_entry(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    ghost = "usr_" + uuid.uuid4().hex[:20]
    cid = write_conversation(ConversationStore(r), ghost, 1)
    archiver = ConversationArchiver(client, r)
    assert archiver.run_once().unlinked == 1
    _expire(r, cid)
    db.execute("insert into identity.users (id, shop_domain) values (%s, %s)", (ghost, shop()))

    report = archiver.run_once()

    assert report.linked == 1 and report.unlinked_dropped == 0, report
    assert not r.hexists(UNLINKED_KEY, cid)
    stored = row(db, cid)
    assert stored is not None and stored["user_id"] == ghost


def test_user_id_not_yet_in_database_is_kept_pending_then_linked(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    ghost = "usr_" + uuid.uuid4().hex[:20]
    store = ConversationStore(r)
    cid = write_conversation(store, ghost, 1)
    archiver = ConversationArchiver(client, r)
    assert archiver.run_once().unlinked == 1
    stored = row(db, cid)
    assert stored is not None and stored["metadata"]["pending_user_id"] == ghost

    db.execute("insert into identity.users (id, shop_domain) values (%s, %s)", (ghost, shop()))
    assert archiver.run_once().linked == 1
    stored = row(db, cid)
    assert stored is not None and stored["user_id"] == ghost
    assert "pending_user_id" not in stored["metadata"]


def test_malformed_data_never_blocks_the_batch(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    store = ConversationStore(r)
    healthy = write_conversation(store, user_id, 2)
    nul = write_conversation(store, user_id, 0, end=False)
    store.append_message(nul, sender="user", content="bad \x00 byte")
    store.end_conversation(nul)
    huge = write_conversation(store, user_id, 0, end=False)
    store.append_message(huge, sender="user", content="y" * (2 * 1024 * 1024))
    store.end_conversation(huge)
    broken = write_conversation(store, user_id, 2)
    r.delete(message_key(broken, 0))
    r.set(message_key(broken, 0), '{"content": "truncated json')
    r.hdel(message_key(broken, 1), "timestamp")

    report = ConversationArchiver(client, r).run_once()

    assert report.archived == 4, report
    assert not report.failed
    assert set(report.issues) == {nul, huge, broken}
    assert row(db, healthy)["message_count"] == 2  # type: ignore[index]
    nul_row = row(db, nul)
    assert nul_row is not None and nul_row["messages"][0]["content"] == "bad  byte"
    huge_row = row(db, huge)
    assert huge_row is not None
    assert len(huge_row["messages"][0]["content"]) == 256 * 1024
    assert huge_row["metadata"]["archive"]["issues"]
    broken_row = row(db, broken)
    assert broken_row is not None and broken_row["message_count"] == 2
    assert any("raw" in m for m in broken_row["messages"])


def test_archive_conversation_function(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    store = ConversationStore(r)
    cid = write_conversation(store, None, 2, end=False)  # not due: far from expiry, not ended

    assert archive_conversation(cid, r, user_id, client=client) is True
    stored = row(db, cid)
    assert stored is not None and stored["user_id"] == user_id
    assert archive_conversation(str(uuid.uuid4()), r, client=client) is False


class _Rendezvous:
    """Delegates to a client; the first ``archive_conversations`` call of each archiver waits
    until every archiver has made one, so their passes certainly overlap."""

    def __init__(self, inner: IdentityClient, barrier: threading.Barrier) -> None:
        self._inner = inner
        self._barrier = barrier
        self._met = False

    def rpc(self, function: str, params: Any = None, **kwargs: Any) -> Any:
        if function == "archive_conversations" and not self._met:
            self._met = True
            self._barrier.wait(timeout=60)
        return self._inner.rpc(function, params, **kwargs)

    def flush_events(self) -> Any:
        return self._inner.flush_events()


def test_two_archivers_in_parallel_archive_each_conversation_once(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    store = ConversationStore(r)
    total = 1000
    for i in range(total):
        cid = str(uuid.uuid4())
        store.create_session(cid, user_id=user_id)
        store.append_message(cid, sender="user", content=f"only message {i}")
        store.append_message(cid, sender="cj", content=f"reply {i}")
        store.end_conversation(cid)
    config = ArchiverConfig(batch_rows=50)
    barrier = threading.Barrier(2)
    archivers = [
        ConversationArchiver(_Rendezvous(client, barrier), r, config=config, worker_id=f"w{i}")
        for i in range(2)
    ]
    reports: list[Any] = [None, None]

    def work(index: int) -> None:
        reports[index] = archivers[index].run_once()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "an archiver pass did not finish"
    assert not barrier.broken, "the two passes never ran at the same time"

    # Each archiver upserted while the other held its own claims: both did work, and the
    # leases kept them apart, so every conversation was written once.
    assert all(rep.archived > 0 for rep in reports), [rep.as_dict() for rep in reports]
    assert sum(rep.archived for rep in reports) == total
    assert sum(rep.rearchived for rep in reports) == 0
    count = db.execute(
        "select count(*), sum(message_count) from identity.conversations where user_id = %s",
        (user_id,),
    ).fetchone()
    assert count == (total, 2 * total)


class _FaultAfter:
    """Delegates to a client; once ``after`` upserts have been acknowledged it runs ``fault``
    (in the archiver's own thread, before returning), so the fault lands mid-pass for certain.
    Failed calls are counted, so a test can wait for the archiver to have tried and failed."""

    def __init__(self, inner: Any, after: int, fault: Callable[[], None]) -> None:
        self._inner = inner
        self._after = after
        self._fault: Callable[[], None] | None = fault
        self._lock = threading.Lock()
        self.acknowledged = 0
        self.failed = 0

    def rpc(self, function: str, params: Any = None, **kwargs: Any) -> Any:
        try:
            result = self._inner.rpc(function, params, **kwargs)
        except Exception:
            with self._lock:
                self.failed += 1
            raise
        fault = None
        with self._lock:
            if function == "archive_conversations":
                self.acknowledged += 1
                if self.acknowledged >= self._after:
                    fault, self._fault = self._fault, None
        if fault is not None:
            fault()
        return result

    def flush_events(self) -> Any:
        return self._inner.flush_events()


def test_postgrest_down_mid_run_nothing_marked_without_its_row(
    r: RedisClient,
    client: IdentityClient,
    db: psycopg.Connection[Any],
    sdk_postgrest: PostgrestSwitch,
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    store = ConversationStore(r)
    total = 200
    ids = [write_conversation(store, user_id, 3) for _ in range(total)]
    postgrest_down = threading.Event()

    def stop_postgrest() -> None:
        sdk_postgrest.stop()
        postgrest_down.set()

    # PostgREST goes down right after the third acknowledged batch of five: mid-pass, always.
    faulty = _FaultAfter(client.with_options(max_retries=0), after=3, fault=stop_postgrest)
    archiver = ConversationArchiver(
        faulty,
        r,
        config=ArchiverConfig(
            batch_rows=5,
            interval=timedelta(seconds=0.2),
            backoff_min=timedelta(seconds=0.1),
            backoff_max=timedelta(seconds=0.5),
        ),
    )

    def stored() -> int:
        return count_rows(db, user_id)

    def marked_without_row() -> list[str]:
        marked = [cid for cid in ids if r.hget(conversation_key(cid), "archived") == b"true"]
        present = {
            rec[0]
            for rec in db.execute(
                "select id::text from identity.conversations where id = any(%s::uuid[])",
                (marked,),
            ).fetchall()
        }
        return [cid for cid in marked if cid not in present]

    loop_thread = threading.Thread(target=lambda: asyncio.run(archiver.run_forever()))
    try:
        loop_thread.start()
        wait_until(postgrest_down.is_set, "the archiver never reached its third batch")
        at_stop = stored()
        assert 15 <= at_stop < total
        failed_before = faulty.failed
        wait_until(
            lambda: faulty.failed >= failed_before + 2,
            "the archiver did not keep trying while PostgREST was down",
        )
        assert marked_without_row() == []
        assert stored() == at_stop
        sdk_postgrest.start()  # returns once PostgREST answers again
        wait_until(lambda: stored() == total, "not every conversation was archived after restart")
    finally:
        archiver.stop()
        loop_thread.join(timeout=60)
    assert not loop_thread.is_alive(), "run_forever did not stop"

    assert marked_without_row() == []
    assert stored() == total
    assert all(r.hget(conversation_key(cid), "archived_count") == b"3" for cid in ids)
    assert r.hlen(DEAD_LETTER_KEY) == 0


class _RefusingClient:
    """An identity client whose every RPC fails for a reason that is not about the data."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def rpc(self, function: str, params: Any, *, encoded: bytes | None = None) -> Any:
        self.calls += 1
        raise self.error

    def flush_events(self) -> Any:
        return None


def test_errors_that_are_not_about_the_data_end_the_pass_without_dead_letters(
    r: RedisClient,
) -> None:
    from supabase_identity import PermissionDeniedError

    store = ConversationStore(r)
    ids = [write_conversation(store, None, 1) for _ in range(8)]
    refusing = _RefusingClient(PermissionDeniedError("permission denied", status_code=403))

    with pytest.raises(PermissionDeniedError):
        ConversationArchiver(refusing, r).run_once()

    assert refusing.calls == 1  # no bisection: a rotated key is not a bad conversation
    assert r.hlen(DEAD_LETTER_KEY) == 0
    assert not any(r.hget(conversation_key(cid), "archived") for cid in ids)
    assert list(r.scan_iter(match="identity:archive:lease:*")) == []


def test_resuming_a_session_keeps_its_user_and_refreshes_its_messages(r: RedisClient) -> None:
    store = ConversationStore(r, ttl=timedelta(hours=1))
    user = "usr_" + uuid.uuid4().hex[:20]
    cid = str(uuid.uuid4())
    store.create_session(cid, user_id=user, workflow_name="w1")
    store.append_message(cid, sender="user", content="hi")
    r.expire(message_key(cid, 0), 10)  # as if written long ago
    started = r.hget(session_key(cid), "started_at")

    ConversationStore(r, ttl=timedelta(hours=2)).create_session(cid)  # the user comes back

    assert r.hget(session_key(cid), "user_id") == user.encode()
    assert r.hget(session_key(cid), "workflow_name") == b"w1"
    assert r.hget(session_key(cid), "started_at") == started
    assert r.ttl(message_key(cid, 0)) > 3600  # the old message lives as long as the rest
    assert r.hget(conversation_key(cid), "message_count") == b"1"


def test_ending_a_vanished_conversation_creates_nothing(r: RedisClient) -> None:
    gone = str(uuid.uuid4())
    assert ConversationStore(r).end_conversation(gone) is False
    assert r.exists(conversation_key(gone)) == 0
    assert r.zscore(DUE_KEY, gone) is None


def test_conversation_larger_than_a_request_is_archived_truncated(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    store = ConversationStore(r)
    cid = write_conversation(store, user_id, 0, end=False)
    for i in range(40):  # 40 x 200 KB: every field under the limit, the whole over 4 MiB
        store.append_message(cid, sender="user", content=f"{i:03d}" + "z" * 200_000)
    store.end_conversation(cid)

    report = ConversationArchiver(client, r).run_once()

    assert report.archived == 1 and not report.failed, report
    stored = row(db, cid)
    assert stored is not None and stored["message_count"] == 40
    assert [m["content"][:3] for m in stored["messages"]] == [f"{i:03d}" for i in range(40)]
    assert any("truncated" in issue for issue in stored["metadata"]["archive"]["issues"])


def test_a_stale_copy_of_a_linked_conversation_is_not_taken_for_unlinked(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    store = ConversationStore(r)
    cid = write_conversation(store, user_id, 3)
    assert ConversationArchiver(client, r).run_once().archived == 1
    # A shorter copy (a message key gone) whose session lost the user, archived again.
    r.hset(session_key(cid), "user_id", "")
    r.hset(conversation_key(cid), "user_id", "")
    r.delete(message_key(cid, 2))
    r.hdel(conversation_key(cid), "archived_count")

    report = ConversationArchiver(client, r).run_once()

    assert report.unchanged == 1 and report.unlinked == 0
    assert not r.hexists(UNLINKED_KEY, cid)
    stored = row(db, cid)
    assert stored is not None and stored["message_count"] == 3 and stored["user_id"] == user_id


class _HoldAt:
    """Delegates to a client; the ``at``-th ``archive_conversations`` call signals ``reached``
    and waits for ``release`` before it is sent, so a test acts while a pass is mid-way."""

    def __init__(self, inner: IdentityClient, at: int) -> None:
        self._inner = inner
        self._at = at
        self._calls = 0
        self._lock = threading.Lock()
        self.reached = threading.Event()
        self.release = threading.Event()

    def rpc(self, function: str, params: Any = None, **kwargs: Any) -> Any:
        if function == "archive_conversations":
            with self._lock:
                self._calls += 1
                hold = self._calls == self._at
            if hold:
                self.reached.set()
                if not self.release.wait(timeout=60):
                    raise TimeoutError("the test never released the held upsert")
        return self._inner.rpc(function, params, **kwargs)

    def flush_events(self) -> Any:
        return self._inner.flush_events()


def test_cancelling_run_forever_stops_the_pass_and_releases_its_leases(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    store = ConversationStore(r)
    total = 200
    for _ in range(total):
        write_conversation(store, user_id, 1)
    held = _HoldAt(client, at=3)
    archiver = ConversationArchiver(held, r, config=ArchiverConfig(batch_rows=5))

    async def cancel_mid_pass() -> None:
        task = asyncio.create_task(archiver.run_forever())
        reached = await asyncio.to_thread(held.reached.wait, 60)
        assert reached, "the pass never reached its third upsert"
        task.cancel()
        held.release.set()  # the held upsert may finish; nothing after it may start
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(cancel_mid_pass())
    finally:
        held.release.set()

    done = count_rows(db, user_id)
    assert 0 < done < total, "the pass must stop early, not run to the end"
    assert list(r.scan_iter(match="identity:archive:lease:*")) == []
    marked = sum(
        1 for key in r.scan_iter(match="conversation:*") if r.hget(key, "archived") == b"true"
    )
    assert marked <= done  # nothing is marked without its row


# ------------------------------------------------------------------------------------------------
# Hostile keys: each is archived, repaired and recorded, or set aside alone; never a stopped pass
# ------------------------------------------------------------------------------------------------


def seed_conversation(
    r: RedisClient,
    cid: str,
    *,
    session: Mapping[FieldT, EncodableT] | None = None,
    conversation: Mapping[FieldT, EncodableT] | None = None,
    messages: int = 1,
) -> None:
    """A conversation in the seed's layout (no counter, no due index), expiring soon."""
    fields: dict[FieldT, EncodableT] = {"id": cid, **(conversation or {})}
    r.hset(conversation_key(cid), mapping=fields)
    r.expire(conversation_key(cid), 600)
    if session is not None:
        r.hset(session_key(cid), mapping=dict(session))
        r.expire(session_key(cid), 600)
    for seq in range(messages):
        key = message_key(cid, seq)
        r.hset(key, mapping={"sender": "user", "content": f"m{seq}", "timestamp": "2026-01-01"})
        r.expire(key, 600)


def issues_of(db: psycopg.Connection[Any], cid: str) -> list[str]:
    stored = row(db, cid)
    assert stored is not None, f"{cid[:60]} was not archived"
    found: list[str] = stored["metadata"]["archive"]["issues"]
    return found


def test_deeply_nested_json_is_kept_as_text_and_the_page_archived(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    domain = shop()
    user_id, _ = client.get_or_create_user(domain)
    good = write_conversation(ConversationStore(r), user_id, 2)
    deep = f"deep-{uuid.uuid4().hex}"
    seed_conversation(r, deep, session={"user_id": user_id})
    r.delete(message_key(deep, 0))
    r.set(message_key(deep, 0), "[" * 498 + "]" * 498)
    other = f"merchant-deep-{uuid.uuid4().hex}"
    hostile_shop = shop()
    seed_conversation(r, other, session={"merchant_id": "merchant_" + hostile_shop.split(".")[0]})
    r.set(merchant_key(hostile_shop), "[" * 1000 + "]" * 1000)

    report = ConversationArchiver(client, r).run_once()

    assert not report.failed, report.failed
    assert report.archived == 3
    assert row(db, good) is not None
    deep_row = row(db, deep)
    assert deep_row is not None and deep_row["messages"][0]["raw"].startswith("[[[")
    assert any("nested deeper" in issue for issue in issues_of(db, deep))
    assert any("holds no usable user_id" in issue for issue in issues_of(db, other))


def test_keys_of_the_wrong_type_never_stop_the_pass(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    good = write_conversation(ConversationStore(r), user_id, 2)
    string_conv = f"string-conv-{uuid.uuid4().hex}"
    r.set(conversation_key(string_conv), "not a hash")
    r.expire(conversation_key(string_conv), 600)
    list_session = f"list-session-{uuid.uuid4().hex}"
    seed_conversation(r, list_session)
    r.rpush(session_key(list_session), "not", "a", "hash")
    set_message = f"set-message-{uuid.uuid4().hex}"
    seed_conversation(r, set_message, session={"user_id": user_id}, messages=2)
    r.delete(message_key(set_message, 1))
    r.sadd(message_key(set_message, 1), "odd")

    report = ConversationArchiver(client, r).run_once()

    assert set(report.failed) == {string_conv}, report.failed
    assert "not a hash" in json.loads(r.hget(DEAD_LETTER_KEY, string_conv) or b"{}")["reason"]
    assert row(db, good) is not None
    assert any("is not a hash" in issue for issue in issues_of(db, list_session))
    assert any("not a hash or a string" in issue for issue in issues_of(db, set_message))
    assert report.archived == 3


def test_a_report_names_a_bounded_number_of_failures_and_counts_them_all(
    r: RedisClient, client: IdentityClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_types, "MAX_NAMED", 2)
    bad = [f"string-conv-{uuid.uuid4().hex}" for _ in range(5)]
    for cid in bad:
        r.set(conversation_key(cid), "not a hash")
        r.expire(conversation_key(cid), 600)
    archiver = ConversationArchiver(client, r)

    report = archiver.run_once()

    assert report.failed_count == 5 and len(report.failed) == 2, report
    assert set(report.failed) <= set(bad)
    # Every reason is still kept, in the dead-letter hash.
    assert all(r.hexists(DEAD_LETTER_KEY, cid) for cid in bad)
    # The loop's running totals are bounded the same way.
    archiver.run_once()
    assert archiver.totals.failed_count == 10 and len(archiver.totals.failed) == 2


def test_a_huge_message_counter_reads_only_the_messages_that_exist(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    store = ConversationStore(r)
    cid = write_conversation(store, user_id, 4)
    r.hset(conversation_key(cid), "message_count", 5_000_000)

    first = ConversationArchiver(client, r).run_once()

    assert first.archived == 1 and not first.failed, first
    stored = row(db, cid)
    assert stored is not None and stored["message_count"] == 4
    assert r.hlen(DEAD_LETTER_KEY) == 0


def test_values_longer_than_their_columns_are_cut_and_recorded(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    long_fields = f"long-{uuid.uuid4().hex}"
    seed_conversation(
        r,
        long_fields,
        session={"user_id": user_id, "workflow_name": "w" * 300, "merchant_id": "m" * 300},
    )
    nul_user = f"nul-user-{uuid.uuid4().hex}"
    seed_conversation(r, nul_user, session={"user_id": "usr_\x00abc"})
    huge_user = f"huge-user-{uuid.uuid4().hex}"
    seed_conversation(r, huge_user, session={"user_id": "usr_" + "a" * (4 * 1024 * 1024)})
    long_id = "c" * 600 + uuid.uuid4().hex

    seed_conversation(r, long_id, session={"user_id": user_id})

    report = ConversationArchiver(client, r).run_once()

    assert not report.failed, {k[:60]: v for k, v in report.failed.items()}
    assert report.archived == 4
    cut = db.execute(
        "select workflow_name, merchant_id from identity.conversations where source_id = %s",
        (long_fields,),
    ).fetchone()
    assert cut == ("w" * 255, "m" * 255)
    assert any("workflow_name of 300" in issue for issue in issues_of(db, long_fields))
    for cid in (nul_user, huge_user):
        assert any("is not a user id" in issue for issue in issues_of(db, cid))
    long_row = db.execute(
        "select source_id, user_id from identity.conversations where id = %s",
        (row_identity(long_id)[0],),
    ).fetchone()
    assert long_row is not None and len(long_row[0]) <= 512 and long_row[1] == user_id


def test_a_bad_unlinked_conversation_does_not_block_linking_the_others(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    domain = shop()
    name = domain.removesuffix(".myshopify.com")
    bad = f"bad-unlinked-{uuid.uuid4().hex}"
    seed_conversation(r, bad, session={"user_id": ""})
    good = f"good-unlinked-{uuid.uuid4().hex}"
    seed_conversation(r, good, session={"merchant_id": f"merchant_{name}"})
    archiver = ConversationArchiver(client, r)
    assert archiver.run_once().unlinked == 2
    # After archiving, the bad one's session grows a NUL user id; the good one's user appears.
    r.hset(session_key(bad), "user_id", "usr_\x00" + "z" * 20)
    user_id, _ = client.get_or_create_user(domain)
    ConversationStore(r).remember_merchant(domain, user_id)

    report = archiver.run_once()

    assert report.linked == 1, report
    linked = row(db, good)
    assert linked is not None and linked["user_id"] == user_id
    assert r.hexists(UNLINKED_KEY, bad)


def test_distinct_redis_ids_are_distinct_rows(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    x = str(uuid.uuid4())
    other = f"other-{uuid.uuid4().hex}"
    spellings = [x, x.upper(), "{" + x + "}", "urn:uuid:" + x, x.replace("-", ""), other]
    spellings.append(str(conversation_uuid(other)))  # a literal UUID equal to other's UUIDv5
    for n, cid in enumerate(spellings):
        seed_conversation(r, cid, session={"user_id": user_id}, messages=n + 1)

    report = ConversationArchiver(client, r).run_once()
    again = ConversationArchiver(client, r).run_once()  # a re-archive keeps them apart too

    assert report.archived == len(spellings) and not report.failed, report
    assert not again.failed and again.archived == 0
    assert count_rows(db, user_id) == len(spellings)
    for n, cid in enumerate(spellings):
        got = client.get_conversation(user_id, cid)
        assert len(got.messages) == n + 1, f"{cid} read back another conversation's row"


@pytest.mark.parametrize(
    "started_at",
    ["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+00:30", "2026-01-01T00:00:00-23:59"],
)
def test_timestamps_are_stored_in_a_range_that_reads_back(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any], started_at: str
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    cid = f"ts-{uuid.uuid4().hex}"
    seed_conversation(
        r, cid, session={"user_id": user_id, "started_at": started_at}, conversation={}
    )
    r.hset(conversation_key(cid), "ended_at", started_at)

    try:
        report = ConversationArchiver(client, r).run_once()

        assert report.archived == 1 and not report.failed, report
        assert any("started_at" in issue for issue in issues_of(db, cid))
        assert client.get_conversation(user_id, cid).started_at.year in (1, 2026, 9999)
        assert client.get_user_profile(user_id).user_id == user_id
        assert [str(c.id) for c in client.get_user_conversations(user_id).items]
    finally:  # rows dated 9999 would be "the latest conversations" of every other test
        db.execute("delete from identity.conversations where user_id = %s", (user_id,))


# ------------------------------------------------------------------------------------------------
# Claims follow their owner's life
# ------------------------------------------------------------------------------------------------

_HOLDER = """
import sys, threading, time
from datetime import timedelta
from supabase_identity._redis import connect_redis
from supabase_identity.archive import ArchiverConfig, ConversationArchiver

class Stuck:
    def rpc(self, function, params, *, encoded=None):
        print("holding", flush=True)
        threading.Event().wait()  # an upsert that never returns: the claims stay held

    def flush_events(self):
        return None

url, cluster = sys.argv[1], sys.argv[2] == "cluster"
r = connect_redis(url, cluster=cluster)
config = ArchiverConfig(lease=timedelta(seconds=1), upserts_in_flight=1)
ConversationArchiver(Stuck(), r, config=config, worker_id="holder").run_once()
"""


def _redis_url_of(r: RedisClient) -> tuple[str, str]:
    if isinstance(r, redis.cluster.RedisCluster):
        return stack_variable("REDIS_CLUSTER_URL"), "cluster"
    return stack_variable("REDIS_URL").rsplit("/", 1)[0] + f"/{ARCHIVER_REDIS_DB}", "single"


def test_a_live_workers_claims_are_never_taken_and_a_dead_ones_are(
    r: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    store = ConversationStore(r)
    ids = [write_conversation(store, user_id, 1) for _ in range(5)]
    url, topology = _redis_url_of(r)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url, topology],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stderr is not None
        assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
        other = ConversationArchiver(
            client, r, config=ArchiverConfig(lease=timedelta(seconds=1)), worker_id="other"
        )
        # Several lease lifetimes pass while the holder lives (its keeper renews the claims):
        # every pass of the other worker finds them all claimed, and stores nothing.
        renewals = _Renewals(r, lease_key(ids[0]))
        wait_until(lambda: renewals.seen() >= 4, "the holder's claims were not kept alive")
        assert all(r.get(lease_key(cid)) == b"holder" for cid in ids)
        report = other.run_once()
        assert report.leased_elsewhere == len(ids) and report.archived == 0, report
        holder.send_signal(signal.SIGKILL)  # no release, no goodbye
        holder.wait(timeout=30)

        def taken_over() -> bool:
            other.run_once()
            return count_rows(db, user_id) == len(ids)

        wait_until(taken_over, "the dead worker's claims were never taken over", interval=0.5)
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()
        if holder.stderr is not None:
            holder.stderr.close()


class _Renewals:
    """Counts how often a lease's TTL went back up (its owner renewed it) while we watched."""

    def __init__(self, r: RedisClient, key: str) -> None:
        self.r = r
        self.key = key
        self.last = int(r.pttl(key))
        self.count = 0

    def seen(self) -> int:
        ttl = int(self.r.pttl(self.key))
        assert ttl > 0, "the lease expired while its owner was alive"
        if ttl > self.last:
            self.count += 1
        self.last = ttl
        return self.count


# ------------------------------------------------------------------------------------------------
# The agents service's archiver API: ConversationArchiver() from the environment, async methods
# ------------------------------------------------------------------------------------------------

#: A database of its own: the archiver built from the environment works on all of REDIS_URL's.
ENV_ARCHIVER_REDIS_DB = 13


@pytest.fixture
def env_redis(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[RedisClient]:
    """REDIS_URL pointing at an empty database of this test's own; no .env files around."""
    url = stack_variable("REDIS_URL").rsplit("/", 1)[0] + f"/{ENV_ARCHIVER_REDIS_DB}"
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.chdir(tmp_path)
    client = connect_redis(url, cluster=False)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def test_the_agents_services_archiver_api_runs_from_the_environment(
    env_redis: RedisClient, client: IdentityClient, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    store = ConversationStore(env_redis)
    first, second = (write_conversation(store, user_id, 2) for _ in range(2))
    write_conversation(ConversationStore(env_redis, ttl=timedelta(hours=5)), user_id, 1, end=False)

    async def as_the_agents_service_does() -> None:
        with ConversationArchiver() as archiver:  # no arguments: env builds both clients
            assert sorted(await archiver.find_conversations_to_archive()) == sorted([first, second])
            assert await archiver.archive_conversation(first) is True
            assert row(db, first) is not None
            assert await archiver.archive_conversation(f"absent-{uuid.uuid4()}") is False

            loop = asyncio.create_task(archiver.run_archival_loop())
            try:
                await asyncio.to_thread(
                    wait_until,
                    lambda: row(db, second) is not None and archiver.heartbeat() is not None,
                    "run_archival_loop's first pass did not archive the second conversation",
                )
                beat = archiver.heartbeat()
                assert beat is not None
                # The heartbeat lives three intervals: 90 minutes at the 30-minute cadence
                # (run_forever's default, 5 minutes, would give 15).
                assert beat["expires"] - datetime.now(UTC).timestamp() > 60 * 60
            finally:
                archiver.stop()
                await loop

    asyncio.run(as_the_agents_service_does())
    assert row(db, first) is not None and row(db, second) is not None
