"""Fixtures shared by unit and integration tests: a real redis-server on a free port.

The outbox's Redis behaviour (Lua scripts, lists, the flush lock) is tested against the real
server binary, never a fake: fakes do not run Lua the way Redis does.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ._wait import wait_until


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``redis-server`` on loopback for the test session; yield its URL."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    probe = redis.Redis.from_url(url)

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"redis-server exited at start (port {port})", pytrace=False)
        try:
            return bool(probe.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, f"redis-server did not start on port {port}")
        yield url
    finally:
        probe.close()
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def redis_client(redis_server: str) -> Iterator[redis.Redis]:
    """A client on the session's Redis, with an empty database for each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()
