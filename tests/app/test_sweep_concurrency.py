"""Backend calls are bounded and concurrent: each provider has its own limit, and a
slow backend delays its own grants, never another's."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from conftest import ADMIN, START, crowd, make_service, utc
from jitaccess.app.service import AppSpec, JitService
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.providers.base import GrantSpec, ProviderError
from jitaccess.store.db import Database

T0 = utc(START)
H = timedelta(hours=1)


class CountingBackend:
    """Counts calls in flight; ``gate`` (if any) runs inside each grant call."""

    def __init__(self, name: str, gate: object = None, max_concurrency: int | None = None) -> None:
        self.name = name
        self.gate = gate
        if max_concurrency is not None:
            self.max_concurrency = max_concurrency
        self.in_flight = 0
        self.most_in_flight = 0
        self.granted: list[int] = []
        self._lock = threading.Lock()

    def grant(self, spec: GrantSpec, now: datetime) -> None:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if callable(self.gate):
                self.gate()
            with self._lock:
                self.granted.append(spec.request_id)
        finally:
            with self._lock:
                self.in_flight -= 1

    def revoke(self, spec: GrantSpec, now: datetime) -> None:
        return None


def add_app(service: JitService, name: str, provider: str) -> None:
    service.register_app(
        AppSpec(
            name=name,
            scope=f"/subscriptions/s1/resourceGroups/mrg-{name}",
            publishers=PEOPLE,
            roles=("Contributor",),
            admins=(ADMIN,),
            policy=Policy(mode=ApprovalMode.AUTOMATIC),
            provider=provider,
        ),
        actor="test",
        now=T0,
    )


#: One person may not hold overlapping requests for one role: each request is someone's.
PEOPLE = crowd(12)


def submit(service: JitService, app: str, count: int, start: datetime) -> list[int]:
    return [
        service.submit(
            app,
            requester=PEOPLE[i],
            role="Contributor",
            duration=H,
            justification="maintenance",
            starts_at=start,
            now=T0,
        ).id
        for i in range(count)
    ]


def test_calls_to_one_backend_fill_its_concurrency_limit_and_never_exceed_it(
    db: Database,
) -> None:
    """With a limit of 4, four grants are in flight together, never five."""
    together = threading.Barrier(4, timeout=10)
    backend = CountingBackend("arm", gate=together.wait, max_concurrency=4)
    service, _ = make_service(db)
    service.providers.register(backend)
    add_app(service, "crm", "arm")
    ids = submit(service, "crm", 12, T0 + H)

    report = service.sweep(T0 + H)
    assert report.activated == 12  # every call passed the barrier: four at a time
    assert backend.most_in_flight == 4
    assert sorted(backend.granted) == ids
    assert {service.get_request(rid).state for rid in ids} == {"active"}


def test_the_service_wide_limit_applies_to_a_provider_without_its_own(db: Database) -> None:
    """A provider that declares no limit gets JITACCESS_PROVIDER_CONCURRENCY."""
    together = threading.Barrier(3, timeout=10)
    backend = CountingBackend("hook", gate=together.wait)
    service, _ = make_service(db, provider_concurrency=3)
    service.providers.register(backend)
    add_app(service, "crm", "hook")
    submit(service, "crm", 6, T0 + H)
    assert service.sweep(T0 + H).activated == 6
    assert backend.most_in_flight == 3


def test_the_service_wide_limit_caps_a_provider_that_declares_more(db: Database) -> None:
    """JITACCESS_PROVIDER_CONCURRENCY=2 with a provider that declares 8: two at a time."""
    together = threading.Barrier(2, timeout=10)
    backend = CountingBackend("arm", gate=together.wait, max_concurrency=8)
    service, _ = make_service(db, provider_concurrency=2)
    service.providers.register(backend)
    add_app(service, "crm", "arm")
    ids = submit(service, "crm", 12, T0 + H)
    assert service.sweeper.concurrency_of("arm") == 2
    assert service.sweep(T0 + H).activated == 12
    assert backend.most_in_flight == 2
    assert sorted(backend.granted) == ids


def test_a_stuck_backend_does_not_hold_up_another_backends_grants(db: Database) -> None:
    """While one backend hangs, another's grants go through in the same sweep."""
    fast_done = threading.Event()

    def stuck_gate() -> None:
        if not fast_done.wait(5):
            raise ProviderError("stuck: the other backend's grants never went through")

    stuck = CountingBackend("stuck", gate=stuck_gate)
    fast = CountingBackend("fast")

    def fast_gate() -> None:
        if len(fast.granted) == 2:  # this is the third and last fast grant
            fast_done.set()

    fast.gate = fast_gate
    service, _ = make_service(db)
    for backend in (stuck, fast):
        service.providers.register(backend)
    add_app(service, "slow-app", "stuck")
    add_app(service, "fast-app", "fast")
    # The stuck backend's requests are due first, so a serial sweep would call it first.
    stuck_ids = submit(service, "slow-app", 2, T0 + H - timedelta(minutes=1))
    fast_ids = submit(service, "fast-app", 3, T0 + H)

    report = service.sweep(T0 + H)
    assert fast_done.is_set()
    assert report.activated == 5
    assert sorted(stuck.granted) == stuck_ids and sorted(fast.granted) == fast_ids


class BatchBackend:
    """Takes whole batches; refuses the revoke of one request."""

    name = "batch"

    def __init__(self, refuse: int) -> None:
        self.refuse = refuse
        self.batches: list[tuple[str, list[int]]] = []

    def grant(self, spec: GrantSpec, now: datetime) -> None:
        raise AssertionError("a batch provider is called with batches")

    revoke = grant

    def grant_many(self, specs: list[GrantSpec], now: datetime) -> list[str | None]:
        self.batches.append(("grant", [s.request_id for s in specs]))
        return [None] * len(specs)

    def revoke_many(self, specs: list[GrantSpec], now: datetime) -> list[str | None]:
        self.batches.append(("revoke", [s.request_id for s in specs]))
        return ["held by a lock" if s.request_id == self.refuse else None for s in specs]


def test_a_batch_provider_gets_one_call_per_batch_and_per_row_outcomes(db: Database) -> None:
    """A provider taking batches is called once per batch; one refused revoke fails alone."""
    service, _ = make_service(db)
    backend = BatchBackend(refuse=3)
    service.providers.register(backend)
    add_app(service, "crm", "batch")
    ids = submit(service, "crm", 5, T0 + H)
    assert ids[2] == backend.refuse

    assert service.sweep(T0 + H).activated == 5
    report = service.sweep(T0 + 2 * H)
    assert report.expired == 4 and report.retrying == 1
    assert backend.batches == [("grant", ids), ("revoke", ids)]
    states = {rid: service.get_request(rid) for rid in ids}
    assert [states[rid].state for rid in ids] == ["expired"] * 2 + ["active"] + ["expired"] * 2
    assert states[ids[2]].last_error == "held by a lock"
    assert states[ids[2]].revoke_failing_since == T0 + 2 * H
