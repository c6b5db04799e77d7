"""Prometheus metrics for ``GET /metrics``. Counters and histograms are fed by the
service and scheduler; gauges that describe the database (requests by state,
outbox backlog, failing revokes) are read from it at scrape time, so every
replica reports the same truth."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jitaccess import answers
from jitaccess.app.sweep import SweepReport
from jitaccess.store.db import Database
from jitaccess.store.rows import Rows

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, float("inf"))


class Metrics:
    """One registry per process; pass it as the service's observer."""

    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.transitions = Counter(
            "jitaccess_transitions",
            "Request transitions by from and to state",
            ["from_state", "to_state"],
            registry=self.registry,
        )
        self.sweep_duration = Histogram(
            "jitaccess_sweep_duration_seconds",
            "How long one sweep took",
            registry=self.registry,
        )
        self.sweep_lag = Histogram(
            "jitaccess_sweep_lag_seconds",
            "Time from a deadline to its transition",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.provider_calls = Counter(
            "jitaccess_provider_calls",
            "Calls to access providers",
            ["provider", "operation"],
            registry=self.registry,
        )
        self.provider_errors = Counter(
            "jitaccess_provider_errors",
            "Failed calls to access providers",
            ["provider", "operation"],
            registry=self.registry,
        )
        #: ``jitaccess_external_answer_rejected_total{service,call}``: answers of the
        #: wrong shape (see :mod:`jitaccess.answers`).
        self.registry.register(answers.REJECTED)
        self.registry.register(DatabaseCollector(db))

    def transitions_committed(self, moves: list[tuple[str | None, str]]) -> None:
        for before, after in moves:
            self.transitions.labels(before or "none", after).inc()

    def provider_called(
        self, provider: str, operation: str, error: str | None, seconds: float
    ) -> None:
        self.provider_calls.labels(provider, operation).inc()
        if error is not None:
            self.provider_errors.labels(provider, operation).inc()

    def sweep_finished(self, seconds: float, report: SweepReport) -> None:
        self.sweep_duration.observe(seconds)
        for lag in report.lags:
            self.sweep_lag.observe(max(lag, 0.0))

    def wsgi_app(self) -> WSGIApplication:
        app: WSGIApplication = make_wsgi_app(self.registry)
        return app


class DatabaseCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        requests = GaugeMetricFamily(
            "jitaccess_requests", "Requests by application and state", labels=["app", "state"]
        )
        backlog = GaugeMetricFamily("jitaccess_outbox_backlog", "Notifications not yet delivered")
        oldest = GaugeMetricFamily(
            "jitaccess_outbox_oldest_age_seconds", "Age of the oldest undelivered notification"
        )
        failing = GaugeMetricFamily(
            "jitaccess_revoke_failing_grants", "Active grants whose revoke keeps failing"
        )
        with self.db.transaction(readonly=True) as session:
            rows, count, first, stuck = Rows.gauges(session)
        for app, state, n in rows:
            requests.add_metric([app, state], n)
        backlog.add_metric([], count)
        age = 0.0
        if first is not None:
            created = first if first.tzinfo else first.replace(tzinfo=UTC)
            age = max(0.0, time.time() - created.timestamp())
        oldest.add_metric([], age)
        failing.add_metric([], stuck)
        yield from (requests, backlog, oldest, failing)
