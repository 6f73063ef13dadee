"""Benchmark: `scripts/stack up` from cold (fresh state folder) and when already up.

Uses a throwaway state folder and shifted ports, so the developer's stack is not touched.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="stack-bench-") as folder:
        if os.geteuid() == 0:
            os.chmod(folder, 0o755)  # noqa: S103 - the postgres OS user must traverse it
        env = {
            **os.environ,
            "STACK_DIR": folder,
            "STACK_DB_PORT": "55322",
            "STACK_API_PORT": "55321",
            "STACK_POSTGREST_PORT": "55330",
            "STACK_POSTGREST_ADMIN_PORT": "55331",
            "STACK_REDIS_PORT": "55379",
        }
        stack = [str(ROOT / "scripts" / "stack")]

        def timed(*args: str) -> float:
            started = time.perf_counter()
            subprocess.run([*stack, *args], env=env, check=True, capture_output=True)
            return time.perf_counter() - started

        try:
            cold = timed("up")
            warm = [timed("up") for _ in range(5)]
        finally:
            subprocess.run([*stack, "down"], env=env, check=False, capture_output=True)
    warm.sort()
    print(f"scripts/stack up, cold (new cluster, migrations): {cold:.2f} s")
    print(f"scripts/stack up, already up (median of 5):       {warm[2]:.2f} s")
    print(f"ratio already-up / cold:                          {warm[2] / cold:.2f}")


if __name__ == "__main__":
    main()
