"""The composition root: the one place that wires adapters to the core.

Every CLI command builds one, so it imports only what every command needs (the
service and the store); the scheduler (APScheduler), reconciliation, the Slack SDK
and the backends' SDKs are imported when first used (see bench/cli_start.py)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from jitaccess.providers.base import ProviderRegistry
from jitaccess.providers.registry import build_registry
from jitaccess.service import JitService
from jitaccess.settings import Settings
from jitaccess.store.db import Database
from jitaccess.sweep import RetryPolicy

if TYPE_CHECKING:
    from jitaccess.outbox import Notifier, OutboxRelay
    from jitaccess.scheduler import DeadlineScheduler


@dataclass
class Container:
    settings: Settings
    db: Database
    providers: ProviderRegistry
    service: JitService
    #: Set when the process stops: the sweep, the relay, reconciliation and the Slack
    #: client's Retry-After waits all stop at their next unit of work.
    stopping: threading.Event
    #: The relay's notifier as given to ``build``; None: Slack's when it is configured.
    notifier: Notifier | None = None
    _relay: OutboxRelay | None = field(default=None, repr=False)

    @property
    def relay(self) -> OutboxRelay:
        """The outbox relay, made on first use: only ``sweep`` and ``serve`` deliver,
        so other commands never import the Slack SDK."""
        if self._relay is None:
            from jitaccess.outbox import OutboxRelay

            notifier = self.notifier or slack_notifier(self.settings, self.service, self.stopping)
            self._relay = OutboxRelay(
                self.db, notifier, worker_id=worker_id(), stopping=self.stopping
            )
        return self._relay

    def scheduler(self, clock: Callable[[], datetime] | None = None) -> DeadlineScheduler:
        from jitaccess.catalog import Catalog
        from jitaccess.reconcile import reconcile
        from jitaccess.scheduler import DeadlineScheduler, utcnow

        scheduler = DeadlineScheduler(
            self.service,
            self.relay,
            sweep_interval=self.settings.sweep_interval_seconds,
            relay_interval=self.settings.relay_interval_seconds,
            batch_size=self.settings.sweep_batch_size,
            clock=clock or utcnow,
            audit_head_interval=self.settings.audit_head_interval_minutes * 60,
            stopping=self.stopping,
        )
        self.service.on_deadline = scheduler.wake_at
        minutes = self.settings.reconcile_interval_minutes
        if minutes > 0:
            service = self.service
            catalog = Catalog(service)

            def periodic_reconcile(now: datetime) -> None:
                catalog.sync_standing(now)  # retry standing grants that failed
                reconcile(service, now, periodic=True)

            scheduler.every(minutes * 60, "reconcile", periodic_reconcile)
        return scheduler

    def close(self) -> None:
        self.db.dispose()


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def slack_notifier(
    settings: Settings, service: JitService, stopping: threading.Event | None = None
) -> Notifier | None:
    """The real Slack notifier when a bot token is configured, else None.

    There is deliberately no fallback that logs and counts a message as delivered: a
    process without Slack settings (the CLI on an operator's laptop) leaves the outbox
    to one that has them (``serve``)."""
    if not settings.slack_bot_token:
        return None
    from jitaccess.slack.notifier import SlackNotifier
    from jitaccess.slack.runtime import slack_client

    client = slack_client(settings.slack_bot_token, settings.slack_api_url, stopping=stopping)
    return SlackNotifier(client, service)


def build(settings: Settings | None = None, *, notifier: Notifier | None = None) -> Container:
    """Wire everything. The relay delivers with ``notifier`` if given, else with the
    Slack notifier when Slack is configured, else not at all (messages stay queued)."""
    settings = settings or Settings()
    db = Database(settings.database_url)
    providers = build_registry(settings, db)
    retry = RetryPolicy(
        base=timedelta(seconds=settings.retry_base_seconds),
        cap=timedelta(seconds=settings.retry_cap_seconds),
        max_grant_attempts=settings.grant_max_attempts,
    )
    remind = settings.remind_before_minutes
    stopping = threading.Event()
    service = JitService(
        db,
        providers,
        retry=retry,
        worker_id=worker_id(),
        remind_before=timedelta(minutes=remind) if remind > 0 else None,
        stopping=stopping,
        provider_concurrency=settings.provider_concurrency,
    )
    return Container(settings, db, providers, service, stopping, notifier)
