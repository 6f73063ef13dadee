"""Waiting for a condition in tests: a deadline and a message, never a bare sleep.

A test that needs something to happen elsewhere (a server to start, a row to appear, a lock to
expire) polls for that condition and fails with a sentence saying what did not happen. The
deadline only bounds a hung test; it is never the thing being tested.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

#: Long enough for a loaded two-core CI machine; reached only when something is broken.
DEFAULT_DEADLINE = 60.0


def wait_until(
    condition: Callable[[], object],
    message: str,
    *,
    deadline: float = DEFAULT_DEADLINE,
    interval: float = 0.02,
) -> None:
    """Return once ``condition()`` is truthy; fail the test with ``message`` at the deadline."""
    give_up = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(f"{message} (waited {deadline:.0f} s)", pytrace=False)
        time.sleep(interval)
