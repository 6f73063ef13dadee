"""A stack of one's own for tests that start, stop or rebuild one.

``scripts/stack`` with its own state folder and ports, so the stack the other tests use is never
touched. Ports lie below Linux's ephemeral range (32768-60999) and move with
``STACK_TEST_PORT_BASE``, so checkouts that run their tests at the same time do not collide; each
test module takes its own ``offset`` from that base.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

STACK = Path(__file__).resolve().parents[2] / "scripts" / "stack"


def throwaway_ports(offset: int) -> dict[str, str]:
    """The stack's port variables at ``STACK_TEST_PORT_BASE + offset`` (+ 21, 22, 30, 31, 79)."""
    base = int(os.environ.get("STACK_TEST_PORT_BASE", "25300")) + offset
    return {
        "STACK_DB_PORT": str(base + 22),
        "STACK_API_PORT": str(base + 21),
        "STACK_POSTGREST_PORT": str(base + 30),
        "STACK_POSTGREST_ADMIN_PORT": str(base + 31),
        "STACK_REDIS_PORT": str(base + 79),
    }


def run_stack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``scripts/stack ARGS`` in ``env`` (a whole environment, as :func:`throwaway_stack` gives)."""
    return subprocess.run(
        [str(STACK), *args], env=env, capture_output=True, text=True, check=False, timeout=180
    )


@contextlib.contextmanager
def throwaway_stack(prefix: str, ports: dict[str, str]) -> Iterator[dict[str, str]]:
    """The environment for a stack in a new state folder; stopped and deleted on exit."""
    # Under /var/tmp, not pytest's 0700 tmp folder: the postgres OS user must reach the cluster.
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    os.chmod(folder, 0o755)  # noqa: S103
    env = {**os.environ, "STACK_DIR": str(folder / ".stack"), **ports}
    try:
        yield env
    finally:
        run_stack(env, "down")
        shutil.rmtree(folder, ignore_errors=True)
