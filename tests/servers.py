"""Real servers for the tests: redis-server and a throwaway PostgreSQL cluster.

Each server is a child process on a free loopback port with its files in its
own temporary directory.  Fixtures stop them and delete the directories at the
end, whether the tests passed or not; an `atexit` hook and a parent-death
signal catch the cases where pytest itself dies first.

Fixtures (star-imported by tests/conftest.py):

- `redis_url`: one redis-server for the whole session, ``redis://127.0.0.1:PORT/0``.
- `redis_server`: a separate redis-server per test that the test may `stop()`
  and `start()` again on the same port; the session server is never touched.
- `postgres_cluster` / `postgres_url`: one PostgreSQL cluster per session and
  a database in it, ``postgresql+asyncpg://ivr@127.0.0.1:PORT/ivr``.
- `postgres_fresh_url`: an empty database of its own for one test, dropped after.
- `sqlite_url`: a fresh SQLite file under `tmp_path`.
- `sqlite_db`: a migrated `Database` on a fresh SQLite file.
- `fresh_db_url`: an empty database for one test, once on SQLite and once on
  PostgreSQL (the PostgreSQL run carries the `postgres` marker).
- `migrated_db`: a migrated `Database` on `fresh_db_url`.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from caller_id.store import Database

__all__ = [
    "PostgresCluster",
    "RedisServer",
    "fresh_db_url",
    "migrated_db",
    "postgres_cluster",
    "postgres_fresh_url",
    "postgres_url",
    "redis_server",
    "redis_url",
    "sqlite_db",
    "sqlite_url",
]

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0  # seconds a server may take to answer after it was started
STOP_TIMEOUT = 10.0

_running: set[subprocess.Popen] = set()


def _stop_all_at_exit() -> None:
    for process in list(_running):
        _terminate(process)


atexit.register(_stop_all_at_exit)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGTERM it when pytest dies.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _run_as(user: pwd.struct_passwd | None) -> dict:
    """Popen arguments that run the child as `user` (None: as ourselves)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _spawn(args: list[str], log: Path, *, user: pwd.struct_passwd | None = None) -> subprocess.Popen:
    with open(log, "ab") as out:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            **_run_as(user),
        )
    _running.add(process)
    return process


def _terminate(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _running.discard(process)


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _need_binary(name: str, *, extra_dirs: list[str] = ()) -> str:
    found = shutil.which(name)
    if found:
        return found
    for directory in extra_dirs:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    where = ", ".join(["PATH", *extra_dirs]) if extra_dirs else "PATH"
    pytest.fail(f"'{name}' was not found in {where}; install it to run these tests", pytrace=False)


class RedisServer:
    """A redis-server child process without persistence, on a fixed port."""

    def __init__(self) -> None:
        self.binary = _need_binary("redis-server")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="test-redis-"))
        self.log = self.dir / "redis.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start (or start again after `stop`) on the same port; waits for PONG."""
        if self.is_running:
            return
        args = [
            self.binary, "--bind", LOOPBACK, "--port", str(self.port),
            "--save", "", "--appendonly", "no", "--dir", str(self.dir),
            "--protected-mode", "no", "--daemonize", "no",
        ]
        self.process = _spawn(args, self.log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start:\n{_log_tail(self.log)}")
            if self._answers_ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING:\n{_log_tail(self.log)}")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server at once (SIGKILL: no goodbye to its clients)."""
        if self.process is not None:
            _terminate(self.process, signal.SIGKILL)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _postgres_bin_dirs() -> list[str]:
    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    return sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.fail("running as root and neither a 'postgres' nor a 'nobody' user exists", pytrace=False)


class PostgresCluster:
    """A throwaway PostgreSQL cluster: initdb in a temp dir, trust auth, loopback only.

    PostgreSQL refuses to run as root; under root the cluster belongs to and
    runs as an unprivileged system user.
    """

    superuser = "ivr"

    def __init__(self) -> None:
        dirs = _postgres_bin_dirs()
        self.initdb = _need_binary("initdb", extra_dirs=dirs)
        self.postgres = _need_binary("postgres", extra_dirs=dirs)
        self.user = _unprivileged_user() if os.geteuid() == 0 else None
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="test-postgres-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.process: subprocess.Popen | None = None
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)

    def start(self) -> None:
        initdb = [
            self.initdb, "-D", str(self.data), "-U", self.superuser, "--auth=trust",
            "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions",
        ]
        done = subprocess.run(initdb, capture_output=True, text=True, **_run_as(self.user))
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        args = [
            self.postgres, "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir),
            "-c", f"listen_addresses={LOOPBACK}", "-c", "fsync=off",
            "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        ]
        self.process = _spawn(args, self.log, user=self.user)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{_log_tail(self.log)}")
            try:
                self._admin("SELECT 1")
                return
            except (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postgres did not accept connections:\n{_log_tail(self.log)}")

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.superuser}@{LOOPBACK}:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        """Run one statement in the maintenance database (from any thread or loop)."""

        async def run() -> None:
            conn = await asyncpg.connect(
                host=LOOPBACK, port=self.port, user=self.superuser, database="postgres", timeout=5
            )
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, run()).result()

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database; returns its name."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.process is not None:
            _terminate(self.process, signal.SIGINT)  # fast shutdown
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    server = RedisServer()
    try:
        server.start()
        yield server.url
    finally:
        server.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    return postgres_cluster.url(postgres_cluster.create_database("ivr"))


@pytest.fixture
def postgres_fresh_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = postgres_cluster.create_database()
    try:
        yield postgres_cluster.url(name)
    finally:
        postgres_cluster.drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'crm.sqlite3'}"


@pytest_asyncio.fixture
async def sqlite_db(sqlite_url: str) -> AsyncIterator[Database]:
    db = Database(sqlite_url)
    try:
        await db.migrate()
        yield db
    finally:
        await db.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_db_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_fresh_url")


@pytest_asyncio.fixture
async def migrated_db(fresh_db_url: str) -> AsyncIterator[Database]:
    db = Database(fresh_db_url)
    try:
        await db.migrate()
        yield db
    finally:
        await db.dispose()
