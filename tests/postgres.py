"""A real PostgreSQL server for tests: Debian's package, started in a temporary folder on a free
127.0.0.1 port (as the `postgres` user when the tests run as root: postgres refuses root), one new
database per test. Tests that need it skip, saying why, where PostgreSQL is not installed."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


def _as_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The server's base URL (postgresql+psycopg://tunesmith@127.0.0.1:PORT)."""
    pytest.importorskip("psycopg", reason="the PostgreSQL store tests need psycopg (pip install -e .[dev])")
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql); the SQLite store tests still ran")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: PostgreSQL refuses to run as root")
    root = Path(tempfile.mkdtemp(prefix="tunesmith-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = _free_port()
    subprocess.run(_as_owner([str(binaries / "initdb"), "-D", str(data), "-U", "tunesmith", "--auth=trust",
                              "-E", "UTF8"]), check=True, capture_output=True)
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run(_as_owner([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options,
                              "-w", "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://tunesmith@127.0.0.1:{port}"
    finally:
        subprocess.run(_as_owner([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def postgres_url(postgres_server: str) -> str:
    """A new, empty database on the test server: no two tests share one."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server.replace("+psycopg", "") + "/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{postgres_server}/{name}"
