#!/usr/bin/env python3
"""Benchmark (not a test): start-up time of ``supabase-identity --help`` and ``--version``.

Each round runs, in a shuffled order, the two commands and the baseline of the same interpreter
doing nothing (``python -c pass``): the part of the time the package cannot change. Prints the
p50 wall time and the p50 CPU time (user + system, of the child process) of each, and the
target (wall time at most 0.25 s). On a loaded machine wall time is CPU time stretched by the
wait for a core, so both are shown, and the load average with them.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.25


def run_once(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``argv`` (its output discarded)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=40, help="rounds")
    args = parser.parse_args()
    python = str(ROOT / ".venv" / "bin" / "python")
    command = str(ROOT / ".venv" / "bin" / "supabase-identity")
    runs = {
        "python -c pass": [python, "-c", "pass"],
        "supabase-identity --version": [command, "--version"],
        "supabase-identity --help": [command, "--help"],
    }
    walls: dict[str, list[float]] = {name: [] for name in runs}
    cpus: dict[str, list[float]] = {name: [] for name in runs}
    order = random.Random(20261128)  # noqa: S311 - a shuffle, not cryptography
    names = list(runs)
    for name in names:  # warm the file cache
        run_once(runs[name])
    for _ in range(args.n):
        order.shuffle(names)
        for name in names:
            wall, cpu = run_once(runs[name])
            walls[name].append(wall)
            cpus[name].append(cpu)
    load = os.getloadavg()[0]
    print(f"{args.n} rounds, shuffled; load average {load:.1f} on {os.cpu_count()} cores\n")
    print(f"{'command':<30} {'wall p50':>9} {'cpu p50':>8}")
    for name in runs:
        print(
            f"{name:<30} {statistics.median(walls[name]):8.3f}s "
            f"{statistics.median(cpus[name]):7.3f}s"
        )
    print()
    for name in list(runs)[1:]:
        wall = statistics.median(walls[name])
        met = "met" if wall <= TARGET else "NOT met"
        print(f"target wall <= {TARGET:.2f}s, {name}: {wall:.3f}s, {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
