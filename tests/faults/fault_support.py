"""Shared pieces of the fault suite: a durable, slow backend whose call log is the
evidence, and a PostgreSQL database of the suite's own.

This module is imported by the tests and by ``sweep_worker.py`` (a separate process), so
it imports nothing from the test harness.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from jitaccess.providers.base import GrantSpec

PG_ENV = "JITACCESS_TEST_DATABASE_URL"
#: The fault tests' own PostgreSQL database, named after the one JITACCESS_TEST_DATABASE_URL
#: names: other suites reset ``public`` in that one, maybe at the same time as we run, and
#: runs against different databases (parallel checkouts) must not share ours either.
FAULT_DB_SUFFIX = "_jit_faults"


@dataclass(frozen=True)
class Call:
    action: str  # "grant" | "revoke"
    request_id: int
    pid: int


class RecordingProvider:
    """A backend that does its work by appending one line per call to a file.

    A line is the backend's own durable record that it granted or revoked (written with
    ``O_APPEND`` in one ``write`` and ``fsync``-ed), so a process killed at any instant
    leaves either the whole line (the call happened) or nothing (it did not). ``delay``
    is the backend's round trip. With ``hang_after``, the backend hangs (as real ones
    do) on the call after that many, so a kill lands in the middle of a batch at a known
    point rather than wherever the scheduler happens to let the test run. With
    ``die_after``, the process SIGKILLs itself right after the backend recorded that
    many calls: the grant is made, and the caller never learns it.
    All three calls (grant, revoke, extend) are idempotent, as the provider contract
    requires.
    """

    name = "recording"
    #: One call at a time, so ``hang_after`` and ``die_after`` land at an exact count.
    max_concurrency = 1

    def __init__(
        self,
        path: Path | str,
        *,
        delay: float = 0.0,
        hang_after: int | None = None,
        die_after: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.delay = delay
        self.hang_after = hang_after
        self.die_after = die_after
        self.calls = 0
        self._fd: int | None = None
        self._lock = threading.Lock()

    def grant(self, spec: GrantSpec, now: datetime) -> None:
        self._record("grant", spec.request_id)

    def revoke(self, spec: GrantSpec, now: datetime) -> None:
        self._record("revoke", spec.request_id)

    def extend(self, spec: GrantSpec, now: datetime) -> None:
        """The backend learns the new end (so this is an ``ExpiryAwareProvider``)."""
        self._record("extend", spec.request_id)

    def _record(self, action: str, request_id: int) -> None:
        if self.hang_after is not None and self.calls >= self.hang_after:
            time.sleep(120)  # hung: whoever waits for us kills us
        if self.delay:
            time.sleep(self.delay)
        line = f"{action} {request_id} {os.getpid()}\n".encode()
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self._fd, line)
            os.fsync(self._fd)
            self.calls += 1
            if self.die_after is not None and self.calls >= self.die_after:
                os.kill(os.getpid(), signal.SIGKILL)


WORKER = Path(__file__).with_name("sweep_worker.py")


def start_sweeper(
    url: str,
    log: Path,
    now: datetime,
    out: Path,
    *,
    batch: int,
    delay: float = 0.0,
    hang_after: int = 0,
    die_after: int = 0,
) -> subprocess.Popen[bytes]:
    """A ``sweep_worker.py`` process sweeping at ``now`` (see its docstring)."""
    args = [url, str(log), now.isoformat(), str(batch), str(delay), str(hang_after)]
    with out.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, str(WORKER), *args, str(die_after)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def read_calls(path: Path) -> list[Call]:
    """Every complete line of a RecordingProvider's call log, in order."""
    if not path.exists():
        return []
    calls = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            calls.append(Call(parts[0], int(parts[1]), int(parts[2])))
    return calls


def count_calls(path: Path, action: str) -> int:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    return data.count(action.encode() + b" ")


def fault_pg_url() -> str | None:
    """A clean ``<database>_jit_faults`` database next to the one JITACCESS_TEST_DATABASE_URL names
    (created on first use), or None when PostgreSQL tests are not enabled."""
    url = os.environ.get(PG_ENV)
    if not url:
        return None
    import psycopg
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from jitaccess.store.db import normalise_url

    base = make_url(normalise_url(url))
    fault_db = f"{base.database}{FAULT_DB_SUFFIX}"
    conninfo = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (fault_db,))
        if exists.fetchone() is None:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # a racing run
                conn.execute(f'CREATE DATABASE "{fault_db}"')
    fault_url = base.set(database=fault_db).render_as_string(hide_password=False)
    engine = create_engine(fault_url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return fault_url


def pg_url_or_skip() -> str:
    """For a test: the suite's PostgreSQL URL; skipped with the reason when none is set
    (a failure instead when JITACCESS_REQUIRE_POSTGRES says PostgreSQL is mandatory)."""
    import pytest

    url = fault_pg_url()
    if url is None:
        reason = f"{PG_ENV} is not set: this test needs PostgreSQL (CI sets it)"
        if os.environ.get("JITACCESS_REQUIRE_POSTGRES"):
            pytest.fail(f"JITACCESS_REQUIRE_POSTGRES is set but {PG_ENV} is not")
        pytest.skip(reason)
    return url


def wait_until(predicate: object, timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until true (True) or ``timeout`` seconds pass (False)."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
