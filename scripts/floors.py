"""The declared dependency floors, installed and tested (run by ``scripts/floors``).

A second virtualenv, ``.venv-lowest``, gets the lowest versions ``pyproject.toml`` allows for
every direct dependency (uv's ``--resolution lowest-direct``; indirect ones resolve as usual).
Then, with that interpreter: the unit tests, and a smoke test against the local stack (the demo's
end-to-end flows and ``supabase-identity doctor``).

It also fails when the resolver installs a direct dependency above its declared floor: another
requirement makes the floor impossible, so the floor claims something no test ever ran. Raise it
to the version named.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-lowest"
LOCK = VENV / "lowest-requirements.txt"
STAMP = VENV / ".floors-stamp"
EXTRAS = ("dev", "api")


def declared_floors() -> dict[str, Version]:
    """Direct dependency -> the version its ``>=`` specifier names (project and extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra in EXTRAS:
        lines += project["optional-dependencies"][extra]
    floors: dict[str, Version] = {}
    for line in lines:
        req = Requirement(line)
        lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
        if not lows:
            raise SystemExit(f"floors: {line!r} declares no lower bound; give it one")
        floors[canonicalize_name(req.name)] = max(lows)
    return floors


def pinned(lock: Path) -> dict[str, Version]:
    out: dict[str, Version] = {}
    for line in lock.read_text("utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[canonicalize_name(name.split("[", 1)[0])] = Version(version.split(";")[0].strip())
    return out


def uv(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(ROOT / ".venv" / "bin" / "uv"), *args], cwd=ROOT, env=env, check=True)


def install() -> None:
    """(Re)build .venv-lowest when pyproject.toml changed since it was built."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text("utf-8") == digest:
        return
    print("floors: resolving the lowest direct versions into .venv-lowest", flush=True)
    uv("venv", "--quiet", "--clear", "--python", str(ROOT / ".venv" / "bin" / "python"), str(VENV))
    extras = [arg for extra in EXTRAS for arg in ("--extra", extra)]
    uv(
        "pip", "compile", "--quiet", "--resolution", "lowest-direct",
        "--python", str(VENV / "bin" / "python"), "pyproject.toml", *extras, "-o", str(LOCK),
    )  # fmt: skip
    env = {**os.environ, "VIRTUAL_ENV": str(VENV)}
    uv("pip", "sync", "--quiet", str(LOCK), env=env)
    uv("pip", "install", "--quiet", "--no-deps", "-e", ".", env=env)
    STAMP.write_text(digest, "utf-8")


def check_floors() -> list[str]:
    got = pinned(LOCK)
    problems = []
    for name, floor in sorted(declared_floors().items()):
        resolved = got.get(name)
        if resolved is None:
            problems.append(f"{name}: not installed by the lowest resolution")
        elif resolved != floor:
            problems.append(f"{name}: declared >={floor}, but the lowest installable is {resolved}")
    return problems


def run(label: str, argv: list[str]) -> bool:
    print(f"floors: {label}", flush=True)
    return subprocess.run(argv, cwd=ROOT, check=False).returncode == 0


def main() -> int:
    install()
    problems = check_floors()
    for problem in problems:
        print(f"floors: {problem}", file=sys.stderr)
    python = str(VENV / "bin" / "python")
    versions = pinned(LOCK)
    shown = ", ".join(f"{n} {versions[n]}" for n in ("supabase", "postgrest", "httpx", "redis"))
    print(f"floors: testing with {shown}", flush=True)
    ok = not problems
    ok &= run("unit tests", [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit"])
    ok &= run("smoke: the demo's end-to-end flows", [python, "scripts/demo.py"])
    ok &= run("smoke: doctor", [str(VENV / "bin" / "supabase-identity"), "doctor", "--no-json"])
    print("floors: OK" if ok else "floors: FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
