"""A FastAPI app served by uvicorn on a loopback socket in a thread, for tests over real HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from .._wait import wait_until


@contextmanager
def serve(app: FastAPI, name: str) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a loopback socket in a thread; yield its base URL.

    The server is stopped and its thread joined before this returns.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: server.started or not thread.is_alive(),
            f"uvicorn did not start {name} (see its log above)",
        )
        assert thread.is_alive(), f"uvicorn exited while starting {name}"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
    assert not thread.is_alive(), f"uvicorn did not shut down {name}"
