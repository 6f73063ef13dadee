"""scripts/stack itself: bad input says what to do; `up` keeps data; `reset` deletes it.

A throwaway stack (own state folder, ports below the ephemeral range) so the one the other
tests use is never touched.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from urllib.parse import urlsplit

import psycopg
import pytest

from ._throwaway_stack import STACK, run_stack, throwaway_ports, throwaway_stack

pytestmark = pytest.mark.integration
PORTS = throwaway_ports(0)


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, str]]:
    with throwaway_stack("stack-test-", PORTS) as values:
        yield values


def test_unknown_subcommand_lists_the_valid_ones(env: dict[str, str]) -> None:
    done = run_stack(env, "start")
    assert done.returncode == 2
    assert "invalid choice: 'start'" in done.stderr
    assert "'up', 'down', 'status', 'env', 'reset'" in done.stderr


def test_env_before_the_first_up_says_to_run_up(env: dict[str, str]) -> None:
    done = run_stack(env, "env")
    assert done.returncode == 1
    assert "run `scripts/stack up` first" in done.stderr


def test_port_in_use_names_the_variable_to_change(env: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(PORTS["STACK_REDIS_PORT"])))
        squatter.listen()
        done = run_stack(env, "up", "redis")
    assert done.returncode == 1
    assert f"port {PORTS['STACK_REDIS_PORT']} is already in use" in done.stderr
    assert "STACK_REDIS_PORT=<port>" in done.stderr


def test_missing_binary_says_how_to_install_it(env: dict[str, str]) -> None:
    done = run_stack({**env, "STACK_PG_BIN": "/nonexistent/bin"}, "up", "postgres")
    assert done.returncode == 1
    assert "/nonexistent/bin/initdb not found" in done.stderr
    assert "apt-get install postgresql-15" in done.stderr


def test_up_keeps_data_and_reset_deletes_it(env: dict[str, str]) -> None:
    assert run_stack(env, "up").returncode == 0
    assert run_stack(env, "status").returncode == 0
    printed = run_stack(env, "env").stdout.splitlines()
    exports = dict(line.removeprefix("export ").split("=", 1) for line in printed)
    with psycopg.connect(exports["SUPABASE_DB_URL"], autocommit=True) as db:
        db.execute("create table public.keep_me (id int)")
    assert run_stack(env, "down").returncode == 0
    assert run_stack(env, "status").returncode == 3
    assert run_stack(env, "up").returncode == 0
    with psycopg.connect(exports["SUPABASE_DB_URL"], autocommit=True) as db:
        assert db.execute("select to_regclass('public.keep_me')::text").fetchone() == ("keep_me",)

    done = run_stack(env, "reset")
    assert done.returncode == 0
    assert "reset: deleted the local database and Redis data" in done.stdout
    with psycopg.connect(exports["SUPABASE_DB_URL"], autocommit=True) as db:
        assert db.execute("select to_regclass('public.keep_me')").fetchone() == (None,)


def _load_stack_script() -> ModuleType:
    """scripts/stack as a module (it has no .py suffix), without running its command line."""
    loader = importlib.machinery.SourceFileLoader("stack_script", str(STACK))
    spec = importlib.util.spec_from_loader("stack_script", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it loads
    try:
        loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_reserved_port_lists_are_read_as_the_kernel_writes_them() -> None:
    parse = _load_stack_script().parse_port_list
    assert parse("") == set()
    assert parse("54321,54330-54332\n") == {54321, 54330, 54331, 54332}
    assert parse(" 8080 , 9000-9001") == {8080, 9000, 9001}


def test_no_outgoing_connection_can_borrow_the_running_stacks_ports() -> None:
    # The stack's default ports are Supabase's, inside Linux's ephemeral range: a client's source
    # port could take one just as PostgREST restarts on it (the tests restart it).
    stack = _load_stack_script()
    low, high = (int(n) for n in stack.EPHEMERAL_RANGE.read_text().split())
    ports = {
        urlsplit(os.environ[name]).port
        for name in ("SUPABASE_URL", "SUPABASE_DB_URL", "REDIS_URL")
        if os.environ.get(name)
    }
    exposed = {port for port in ports if port is not None and low <= port <= high}
    reserved = stack.parse_port_list(stack.RESERVED_PORTS.read_text())
    if os.geteuid() == 0:
        assert exposed <= reserved, f"ports {sorted(exposed - reserved)} are not reserved"
    else:
        done = subprocess.run(
            [str(STACK), "up"], capture_output=True, text=True, check=False, timeout=180
        )
        assert exposed <= reserved or "ip_local_reserved_ports" in done.stdout, done.stdout
