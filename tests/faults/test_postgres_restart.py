"""The service keeps working through a PostgreSQL outage, without being restarted itself,
and loses nothing that it acknowledged.

Two ways to take the database away from a running service, both under load (one thread
submitting and approving requests, another sweeping):

* ``restart``: the real thing. ``pg_ctlcluster --skip-systemctl-redirect VERSION main
  restart -m fast`` stops the server (every connection is cut; for a second or two
  nothing answers, connects are refused) and starts it again. Needs the local Debian
  cluster tools and root (CI has both); skipped with the reason otherwise. Note that it
  restarts the whole server: anything else using it at that moment sees the outage too.
* ``terminate``: ``pg_terminate_backend`` on every connection to the suite's database,
  which is what a restart or a failover looks like from the client (its pooled
  connections die under it) without touching anyone else's.

Operations in flight during the outage may fail: the caller gets the error and may retry.
Afterwards, with the same ``JitService`` and engine (``pool_pre_ping`` replaces the dead
connections): every request whose submit returned exists, every approval that returned
holds, the next sweeps do every due transition exactly once, and the audit chain verifies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
import pytest
from fault_support import pg_url_or_skip, wait_until
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from conftest import APPROVER, APPROVER2, START, crowd, make_service, register, utc
from jitaccess.app.audit_log import verify
from jitaccess.app.service import JitService
from jitaccess.domain.errors import Conflict
from jitaccess.domain.policy import ApprovalMode
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, AuditEvent, LogGrant

T0 = utc(START)
H = timedelta(hours=1)
FINAL = {"expired", "timed_out"}


def local_cluster(url: str) -> tuple[str, str] | None:
    """(version, name) of the local Debian cluster serving ``url``, if we may restart it."""
    parsed = make_url(url)
    if parsed.host not in ("127.0.0.1", "localhost", "::1"):
        return None
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        return None
    if os.geteuid() != 0:
        return None
    listing = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, timeout=30
    ).stdout
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == str(parsed.port or 5432) and parts[3] == "online":
            return parts[0], parts[1]
    return None


def restart_server(cluster: tuple[str, str]) -> None:
    version, name = cluster
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, name]
    try:
        subprocess.run([*command, "restart", "-m", "fast"], check=True, timeout=120)
    finally:
        # Never leave the server down, whatever happened above.
        status = subprocess.run([*command, "status"], capture_output=True, timeout=30)
        if status.returncode != 0:
            subprocess.run([*command, "start"], timeout=120)


def terminate_connections(url: str) -> int:
    parsed = make_url(url)
    conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (parsed.database,),
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def reachable(url: str) -> bool:
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(conninfo, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


@dataclass
class Load:
    """What the load threads did: what was acknowledged, and what failed when."""

    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    submitted: dict[int, str] = field(default_factory=dict)  # acked id -> app
    approved: set[int] = field(default_factory=set)  # approve() returned
    ops: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[float, str, str]] = field(default_factory=list)  # (when, op, error)

    def ok(self, op: str) -> None:
        with self.lock:
            self.ops[op] += 1

    def failed(self, op: str, exc: BaseException) -> None:
        with self.lock:
            self.errors.append((time.monotonic(), op, f"{type(exc).__name__}: {exc}"[:300]))

    def count(self, op: str) -> int:
        with self.lock:
            return self.ops[op]


#: The submitters' publishers: one person's requests for a role on one resource group
#: may not overlap, and every request here has the same window (more than a run makes).
LOAD_PEOPLE = crowd(20_000)


def submitter(service: JitService, load: Load) -> None:
    """Submits to the automatic and the manual app in turn, and approves the manual ones.
    A failed call is the caller's to retry: a failed submit is simply not acknowledged;
    a failed approval is retried until it returns, or finds the request decided (the
    failed attempt had committed after all)."""
    i = 0
    while not load.stop.is_set():
        i += 1
        app = "auto" if i % 2 else "crm"
        try:
            view = service.submit(
                app,
                requester=LOAD_PEOPLE[i // 2],  # one person's windows may not overlap
                role="Contributor",
                duration=H,
                justification=f"load {i}",
                now=T0,
            )
        except Exception as exc:
            load.failed("submit", exc)
            time.sleep(0.02)
            continue
        with load.lock:
            load.submitted[view.id] = app
        load.ok("submit")
        time.sleep(0.01)  # a steady stream, not a flood
        if app != "crm":
            continue
        while not load.stop.is_set():
            try:
                service.approve(view.id, actor=APPROVER, reason=f"CHG-{i}", now=T0)
            except Conflict:
                break  # an attempt whose answer was lost had committed
            except Exception as exc:
                load.failed("approve", exc)
                time.sleep(0.02)
                continue
            with load.lock:
                load.approved.add(view.id)
            load.ok("approve")
            break


def sweeper(service: JitService, load: Load) -> None:
    """The scheduler's job: sweep at (logical) T0 + 1 s, over and over, one batch at a
    time; errors are logged by the scheduler and the next run retries."""
    while not load.stop.is_set():
        try:
            service.sweep(T0 + timedelta(seconds=1), batch_size=20, max_batches=1)
        except Exception as exc:
            load.failed("sweep", exc)
            time.sleep(0.02)
            continue
        load.ok("sweep")
        time.sleep(0.01)


@pytest.fixture
def pg() -> Iterator[Database]:
    url = pg_url_or_skip()
    database = Database(url)
    database.upgrade()
    yield database
    database.dispose()


def run_under_load(service: JitService, outage: Callable[[], None]) -> tuple[Load, float]:
    """Start the load, cause the outage once it is warm, and keep the load going until
    both threads have done real work again after it. Returns the load and the moment the
    database answered again."""
    load = Load()
    threads = [
        threading.Thread(target=job, args=(service, load), name=job.__name__, daemon=True)
        for job in (submitter, sweeper)
    ]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(
            lambda: load.count("approve") >= 20 and load.count("sweep") >= 20, timeout=30
        ), f"the load never got going: {load.ops} {load.errors[:3]}"
        outage()
        assert wait_until(lambda: reachable(service.db.url), timeout=60)
        back_at = time.monotonic()
        before = dict(load.ops)
        assert wait_until(
            lambda: all(load.count(op) >= before.get(op, 0) + 30 for op in ("approve", "sweep")),
            timeout=60,
        ), f"the service did not recover: {load.ops} vs {before}; {load.errors[-3:]}"
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return load, back_at


def settle(service: JitService, now: datetime) -> None:
    """Sweep at ``now`` until nothing is due then."""
    for _ in range(50):
        service.sweep(now)
        due = service.next_deadline()
        if due is None or due > now:
            return
    pytest.fail(f"still due at {now} after 50 sweeps: {due}")


def check_nothing_lost(pg: Database, service: JitService, load: Load) -> None:
    with pg.transaction(readonly=True) as s:
        existing = dict(s.execute(select(AccessRequest.id, AccessRequest.state)).all())
    assert set(load.submitted) <= set(existing), "an acknowledged request is missing"
    assert all(existing[r] not in ("pending",) for r in load.approved)

    # The next sweeps do everything that is due: grants (leases and backoffs from the
    # outage have lapsed ten minutes later), then expiries and time-outs.
    settle(service, T0 + timedelta(minutes=10))
    settle(service, T0 + 3 * H)
    with pg.transaction(readonly=True) as s:
        rows = s.execute(select(AccessRequest)).scalars().all()
        final = {r.id: r.state for r in rows}
        events = Counter(
            (r, a)
            for r, a in s.execute(
                select(AuditEvent.request_id, AuditEvent.action).where(
                    AuditEvent.request_id.is_not(None)
                )
            ).all()
        )
        grants = {g.request_id: g for g in s.execute(select(LogGrant)).scalars()}
        still_claimed = s.execute(
            select(func.count())
            .select_from(AccessRequest)
            .where(AccessRequest.claimed_by.is_not(None))
        ).scalar_one()
    assert set(final.values()) <= FINAL, Counter(final.values())
    assert still_claimed == 0
    for request_id, app in load.submitted.items():
        if app == "auto" or request_id in load.approved:
            assert final[request_id] == "expired", (request_id, final[request_id])
    for request_id, state in final.items():
        ending = "expire" if state == "expired" else "time_out"
        assert events[(request_id, ending)] == 1, (request_id, state)
        assert events[(request_id, "submit")] == 1
        if state == "expired":
            # granted once (recorded), revoked, and the backend holds nothing.
            assert events[(request_id, "activate")] == 1, request_id
            assert grants[request_id].revoked_at is not None, request_id
        else:
            assert request_id not in grants
    result = verify(pg)
    assert result.problems == [], result.problems[:5]


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["restart", "terminate"])
def test_service_rides_through_a_postgres_outage_and_loses_nothing(pg: Database, how: str) -> None:
    # inline=False, as under serve: decisions never call the backend inline.
    service, _ = make_service(pg, inline=False)
    register(
        service,
        name="auto",
        mode=ApprovalMode.AUTOMATIC,
        approvers=(APPROVER,),
        publishers=LOAD_PEOPLE,
    )
    register(service, name="crm", approvers=(APPROVER, APPROVER2), publishers=LOAD_PEOPLE)

    if how == "restart":
        cluster = local_cluster(pg.url)
        if cluster is None:
            pytest.skip(
                "restarting PostgreSQL needs a local Debian cluster (pg_ctlcluster), "
                "root, and the server online on the URL's port"
            )

        def outage() -> None:
            restart_server(cluster)

    else:

        def outage() -> None:
            assert terminate_connections(pg.url) > 0  # the service's pooled connections

    load, back_at = run_under_load(service, outage)
    if how == "restart":
        # The restart really hit the service: calls failed while the server was away...
        assert load.errors, "no operation failed: the restart did not reach the service"
    # ... and once it answered again, the same service and engine carried on: the few
    # calls that were already in flight may fail, nothing started later does.
    late = [e for e in load.errors if e[0] > back_at + 5]
    assert late == [], late[:3]
    check_nothing_lost(pg, service, load)
