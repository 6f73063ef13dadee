"""Everything that touches Redis, on a Redis Cluster of 3 primaries and 3 replicas.

The cluster is ``scripts/stack cluster`` (``REDIS_CLUSTER_URL`` names one node), started once
per ``scripts/test`` run; each test flushes it. The archiver's own tests run on both topologies
(tests/integration/test_archiver.py); here: detection, the events outbox, ConversationStore,
the OAuth helper, the CLI, SCAN over every primary, and a primary killed mid-pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import redis.asyncio.cluster
import redis.cluster
import redis.exceptions

from supabase_identity import (
    AsyncIdentityClient,
    AsyncRedisOutbox,
    IdentityClient,
    RedisOutbox,
    acomplete_oauth,
    complete_oauth,
    conversation_uuid,
)
from supabase_identity._models import OutboxEvent
from supabase_identity._redis import RedisConnector, connect_redis
from supabase_identity._redis_keys import conversation_key, message_key, session_key
from supabase_identity._settings import load_settings
from supabase_identity.archive import ArchiverConfig, ConversationArchiver, ConversationStore

from .._wait import wait_until
from .conftest import sdk_stack, stack_variable
from .test_archiver import flush

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "supabase-identity"


@pytest.fixture
def cluster_url() -> str:
    return stack_variable("REDIS_CLUSTER_URL")


@pytest.fixture
def rc(cluster_url: str) -> Iterator[redis.cluster.RedisCluster]:
    client = redis.cluster.RedisCluster.from_url(cluster_url.rsplit("/", 1)[0])
    flush(client)
    yield client
    flush(client)
    client.close()


@pytest.fixture
def client(cluster_url: str) -> Iterator[IdentityClient]:
    with IdentityClient(redis_url=cluster_url) as c:
        yield c


def shop() -> str:
    return f"clu-{uuid.uuid4().hex[:12]}.myshopify.com"


def stored_counts(db: psycopg.Connection[Any], ids: list[str]) -> dict[str, int]:
    rows = db.execute(
        "select coalesce(source_id, id::text), message_count from identity.conversations"
        " where id = any(%s::uuid[])",
        ([str(conversation_uuid(cid)) for cid in ids],),
    ).fetchall()
    return {str(key): int(count) for key, count in rows}


def primary_of(rc: redis.cluster.RedisCluster, key: str) -> str:
    node = rc.get_node_from_key(key)  # type: ignore[no-untyped-call]  # untyped upstream
    return f"{node.host}:{node.port}"


# --------------------------------------------------------------------------- detection


def test_redis_url_naming_any_node_is_detected_and_redis_cluster_forces_it(
    cluster_url: str,
) -> None:
    single = stack_variable("REDIS_URL")
    replica_port = int(cluster_url.rsplit(":", 1)[1].split("/")[0]) + 5  # any node will do
    any_node = cluster_url.rsplit(":", 1)[0] + f":{replica_port}/0"
    detected = [connect_redis(cluster_url), connect_redis(single)]
    connectors = [RedisConnector(any_node), RedisConnector(cluster_url, cluster=False)]
    try:
        assert isinstance(detected[0], redis.cluster.RedisCluster)
        assert isinstance(detected[1], redis.Redis)
        assert isinstance(connectors[0].client(), redis.cluster.RedisCluster)
        assert isinstance(connectors[1].client(), redis.Redis)
    finally:
        for client in detected:
            client.close()
        for connector in connectors:
            connector.close()
    forced = load_settings(environ={"REDIS_URL": cluster_url, "REDIS_CLUSTER": "false"})
    assert forced.redis_cluster is False
    assert load_settings(environ={"REDIS_CLUSTER": "true"}).redis_cluster is True


# --------------------------------------------------------------------------- outbox


def test_events_outbox_on_the_cluster_keeps_and_delivers_events(
    client: IdentityClient, rc: redis.cluster.RedisCluster
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    outbox = client.outbox
    assert isinstance(outbox, RedisOutbox)
    assert isinstance(outbox.redis(), redis.cluster.RedisCluster)  # detected from REDIS_URL
    from supabase_identity._models import OutboxEvent

    events = [
        OutboxEvent(
            id=uuid.uuid4(),
            user_id=user_id,
            event_type="clu",
            event_data={"n": n},
            created_at=datetime.now(UTC),
        )
        for n in range(30)
    ]
    outbox.push(events)
    assert outbox.pending_count() == 30

    result = client.flush_events()

    assert (result.delivered, result.remaining) == (30, 0)
    assert outbox.pending_count() == 0
    delivered = {str(e["id"]) for e in client.iter_user_events(user_id)}
    assert {str(e.id) for e in events} <= delivered


async def test_async_client_outbox_on_the_cluster(cluster_url: str) -> None:
    async with AsyncIdentityClient(redis_url=cluster_url) as client:
        user_id, _ = await client.get_or_create_user(shop())
        outbox = client.outbox
        assert isinstance(outbox, AsyncRedisOutbox)
        assert isinstance(await outbox.redis(), redis.asyncio.cluster.RedisCluster)
        event = OutboxEvent(
            id=uuid.uuid4(),
            user_id=user_id,
            event_type="clu",
            event_data={},
            created_at=datetime.now(UTC),
        )
        await outbox.push([event])
        result = await client.flush_events()
        assert (result.delivered, result.remaining) == (1, 0)


# --------------------------------------------------------------------------- writer, OAuth


def test_conversation_store_on_the_cluster(rc: redis.cluster.RedisCluster) -> None:
    store = ConversationStore(rc)
    cid = str(uuid.uuid4())
    user = "usr_" + uuid.uuid4().hex[:20]
    store.create_session(cid, merchant_id="merchant_x")
    for i in range(3):
        assert store.append_message(cid, sender="user", content=f"m{i}") == i
    assert store.set_user(cid, user) is True
    assert store.end_conversation(cid) is True
    store.remember_merchant("x.myshopify.com", user)

    keys = [conversation_key(cid), session_key(cid), *(message_key(cid, i) for i in range(3))]
    assert len({primary_of(rc, key) for key in keys}) > 1, "the keys should span primaries"
    assert rc.hget(session_key(cid), "user_id") == user.encode()
    assert rc.hget(conversation_key(cid), "message_count") == b"3"
    assert all(rc.ttl(key) > 0 for key in keys), "every key of the conversation expires"
    assert json.loads(rc.get("merchant:x.myshopify.com") or b"{}")["user_id"] == user
    assert store.end_conversation(str(uuid.uuid4())) is False


def test_oauth_helpers_on_the_cluster(
    client: IdentityClient, rc: redis.cluster.RedisCluster, cluster_url: str
) -> None:
    store = ConversationStore(rc)
    cid = str(uuid.uuid4())
    store.create_session(cid)
    domain = shop()

    result = complete_oauth(domain, redis_client=rc, client=client, conversation_id=cid)

    assert rc.hget(session_key(cid), "user_id") == result.user_id.encode()
    assert json.loads(rc.get(f"merchant:{domain}") or b"{}")["user_id"] == result.user_id

    async def again() -> str:
        arc = redis.asyncio.cluster.RedisCluster.from_url(cluster_url.rsplit("/", 1)[0])
        try:
            async with AsyncIdentityClient(redis_url=None) as aclient:
                done = await acomplete_oauth(
                    domain, redis_client=arc, client=aclient, conversation_id=cid
                )
                return done.user_id
        finally:
            await arc.aclose()

    assert asyncio.run(again()) == result.user_id


# --------------------------------------------------------------------------- archiver


def test_scan_finds_legacy_conversations_on_every_primary(
    client: IdentityClient, rc: redis.cluster.RedisCluster, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    ids = [f"legacy-{uuid.uuid4().hex}" for _ in range(60)]
    for cid in ids:  # the seed's layout: no counter, no due index
        rc.hset(conversation_key(cid), mapping={"id": cid})
        rc.expire(conversation_key(cid), 600)
        rc.hset(session_key(cid), mapping={"user_id": user_id})
        rc.hset(message_key(cid, 0), mapping={"sender": "user", "content": cid})
    assert len({primary_of(rc, conversation_key(cid)) for cid in ids}) == 3

    report = ConversationArchiver(client, rc).run_once()

    assert report.found == 60 and report.archived == 60, report
    assert stored_counts(db, ids) == dict.fromkeys(ids, 1)


def test_cli_archive_once_and_check_on_the_cluster(
    client: IdentityClient, rc: redis.cluster.RedisCluster, cluster_url: str
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    store = ConversationStore(rc)
    cid = str(uuid.uuid4())
    store.create_session(cid, user_id=user_id)
    store.append_message(cid, sender="user", content="hello")
    store.end_conversation(cid)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "REDIS_URL": cluster_url}
        return subprocess.run(
            [str(BIN), *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    done = cli("archive", "--once", "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["archived"] == 1
    check = cli("archive", "--check", "--json")
    assert check.returncode == 1  # no loop running: no heartbeat, and no crash on a cluster
    assert json.loads(check.stdout) == {"alive": 0, "heartbeats": []}


class _KillPrimaryAfter:
    """An identity client that kills a cluster primary after the ``after``-th upsert."""

    def __init__(
        self, inner: IdentityClient, rc: redis.cluster.RedisCluster, key: str, after: int
    ) -> None:
        self.inner = inner
        self.rc = rc
        self.key = key
        self.after = after
        self.calls = 0
        self.killed: str | None = None
        self.lock = threading.Lock()

    def rpc(self, function: str, params: Mapping[str, Any], *, encoded: bytes | None = None) -> Any:
        result = self.inner.rpc(function, params, encoded=encoded)
        with self.lock:
            self.calls += 1
            if self.calls == self.after and self.killed is None:
                node = self.rc.get_node_from_key(self.key)  # type: ignore[no-untyped-call]
                self.killed = f"{node.host}:{node.port}"
                # The node closes the connection as it goes down: that error is expected.
                with contextlib.suppress(redis.ConnectionError):
                    self.rc.get_redis_connection(node).shutdown(nosave=True)
        return result

    def flush_events(self) -> Any:
        return self.inner.flush_events()


def test_a_primary_killed_mid_pass_loses_no_conversation(
    client: IdentityClient, rc: redis.cluster.RedisCluster, db: psycopg.Connection[Any]
) -> None:
    user_id, _ = client.get_or_create_user(shop())
    store = ConversationStore(rc)
    ids = []
    for i in range(300):
        cid = str(uuid.uuid4())
        store.create_session(cid, user_id=user_id)
        for j in range(3):
            store.append_message(cid, sender="user", content=f"{i}/{j}")
        store.end_conversation(cid)
        ids.append(cid)
    killer = _KillPrimaryAfter(client, rc, conversation_key(ids[-1]), after=3)
    archiver = ConversationArchiver(killer, rc, config=ArchiverConfig(batch_rows=20))
    try:
        passes = 0

        def all_archived() -> bool:
            nonlocal passes
            passes += 1
            try:
                archiver.run_once()
            except (redis.ConnectionError, redis.exceptions.ClusterDownError, redis.TimeoutError):
                return False  # the pass ended with nothing marked; the next one resumes
            return stored_counts(db, ids) == dict.fromkeys(ids, 3)

        wait_until(all_archived, "the archiver did not finish after the failover", interval=0.5)
        assert killer.killed is not None, "the primary was never killed: the test proved nothing"
        # Nothing marked without its row, every mark at the full count.
        marks = [rc.hget(conversation_key(cid), "archived_count") for cid in ids]
        assert marks == [b"3"] * len(ids)
    finally:
        sdk_stack("cluster", "up")  # restarts the killed node; it rejoins as a replica
        wait_until(_cluster_healthy, "the cluster did not become healthy after the failover")


def _cluster_healthy() -> bool:
    status = [str(ROOT / "scripts" / "stack"), "cluster", "status"]
    return subprocess.run(status, capture_output=True, check=False).returncode == 0


# --------------------------------------------------------------------------- shop redaction


def _seed_cluster_shop(
    rc: redis.cluster.RedisCluster, client: IdentityClient
) -> tuple[str, str, list[str]]:
    domain = shop()
    user_id, _ = client.get_or_create_user(domain)
    store = ConversationStore(rc)
    store.remember_merchant(domain, user_id)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    for cid in ids[:2]:  # indexed by ConversationStore
        store.create_session(cid, user_id=user_id)
        for i in range(3):
            store.append_message(cid, sender="user", content=f"m{i}")
    for cid in ids[2:]:  # the seed's layout: found by SCAN on every primary
        rc.hset(session_key(cid), mapping={"user_id": user_id})
        rc.hset(conversation_key(cid), mapping={"id": cid})
        for i in range(3):
            rc.hset(message_key(cid, i), mapping={"content": "x"})
    client.outbox.push(
        [
            OutboxEvent(
                id=uuid.uuid4(),
                user_id=user_id,
                event_type="clu.redact",
                event_data={},
                created_at=datetime.now(UTC),
            )
        ]
    )
    return domain, user_id, ids


def test_redact_shop_on_the_cluster(rc: redis.cluster.RedisCluster, client: IdentityClient) -> None:
    domain, user_id, ids = _seed_cluster_shop(rc, client)
    keys = [k for cid in ids for k in (conversation_key(cid), session_key(cid))]
    keys += [message_key(cid, i) for cid in ids for i in range(3)]
    assert len({primary_of(rc, key) for key in keys}) == 3, "the keys should span every primary"

    result = client.redact_shop(domain, rc, audit_key="cluster-audit")

    assert result.users == 1
    assert result.redis is not None
    assert (result.redis.conversations, result.redis.messages) == (4, 12)
    assert result.redis.outbox_entries == 1
    assert sum(int(rc.exists(key)) for key in keys) == 0
    assert rc.exists(f"merchant:{domain}") == 0
    outbox = [str(raw) for raw in rc.lrange("{identity:outbox:events}", 0, -1)]
    assert not any(user_id in raw for raw in outbox)


async def test_async_redact_shop_on_the_cluster(
    rc: redis.cluster.RedisCluster, client: IdentityClient, cluster_url: str
) -> None:
    domain, _user_id, ids = _seed_cluster_shop(rc, client)
    arc = redis.asyncio.cluster.RedisCluster.from_url(cluster_url.rsplit("/", 1)[0])
    try:
        async with AsyncIdentityClient(redis_url=None) as aio:
            result = await aio.redact_shop(domain, arc, audit_key="cluster-audit")
    finally:
        await arc.aclose()

    assert result.redis is not None
    assert (result.redis.conversations, result.redis.messages) == (4, 12)
    assert sum(int(rc.exists(session_key(cid))) for cid in ids) == 0
