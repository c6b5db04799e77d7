"""The composition root: the one place that builds the adapters and wires them to the
core, each once, with constructor arguments. What it returns is frozen: nothing is
re-wired after ``build`` (``tests/test_composition.py`` keeps it so).

Which pieces are built depends on who asks:

* a CLI command (``role=None``): the store, the providers and a service that calls
  the backends inline. The relay is made on first use (only ``sweep`` delivers);
  there is no scheduler, no metrics and no Slack app. It imports only what every
  command needs; APScheduler, reconciliation, the Slack SDK and the backends' SDKs
  are imported when first used (see bench/cli_start.py and tests/test_cli_start.py).
* ``serve --role web|worker|all``: also every backend now (so a misconfigured one is
  reported at start), the metrics, a service whose people's actions only record
  intents; for ``web``/``all`` the Slack app (Bolt listeners, its client and
  notifier); for ``worker``/``all`` the relay and the scheduler (sweep, relay,
  reconciliation, audit head).
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from jitaccess.app.deps import NativePorts, ServiceObserver, build_deps
from jitaccess.app.directory import Directory, StaticDirectory
from jitaccess.app.service import JitService
from jitaccess.app.sweep import RetryPolicy
from jitaccess.providers.base import ProviderRegistry
from jitaccess.providers.registry import build_registry
from jitaccess.settings import Settings, load_settings
from jitaccess.slack.principals import SLACK_PRINCIPALS
from jitaccess.store.db import Database

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

    from azure.core.credentials import TokenCredential

    from jitaccess.app.activity_reports import ActivityReporter
    from jitaccess.app.outbox import Notifier, OutboxRelay
    from jitaccess.metrics import Metrics
    from jitaccess.roles import Role
    from jitaccess.scheduler import DeadlineScheduler, Periodic
    from jitaccess.slack.runtime import SlackRuntime

#: The chat front end's rules for the ids people type; the application layer is given
#: them (it treats ids as opaque) and the CLI checks ``--as`` with them.
PRINCIPALS = SLACK_PRINCIPALS


@dataclass(frozen=True)
class Container:
    settings: Settings
    db: Database
    providers: ProviderRegistry
    service: JitService
    #: Set when the process stops: the sweep, the relay, reconciliation and the Slack
    #: client's Retry-After waits all stop at their next unit of work.
    stopping: threading.Event
    #: The ``serve`` role this was built for; None: a CLI command.
    role: Role | None = None
    #: Prometheus metrics (the service's observer and the scheduler's ``on_sweep``);
    #: None in the CLI.
    metrics: Metrics | None = None
    #: The Bolt app, its client and notifier: only where Slack is answered.
    slack: SlackRuntime | None = None
    #: The sweep, relay, reconciliation and audit head jobs: only where work runs.
    scheduler: DeadlineScheduler | None = None
    #: The relay's notifier as given to ``build``; None: Slack's when it is configured.
    notifier: Notifier | None = None
    #: What the chat front end serves over HTTP, by path, for ``serve`` to mount as it
    #: is: the gated Bolt endpoint, or a notice where Slack is not answered over HTTP.
    routes: Mapping[str, WSGIApplication] = field(default_factory=dict)
    _relay: OutboxRelay | None = field(default=None, repr=False)

    @cached_property
    def relay(self) -> OutboxRelay:
        """The outbox relay. ``serve`` builds it with the rest (where work runs); a CLI
        command makes it on first use (made once): only ``sweep`` delivers, so other
        commands never import the Slack SDK."""
        if self._relay is not None:
            return self._relay
        if self.role is not None:
            raise RuntimeError(f"serve --role {self.role} runs no outbox relay (a worker does)")
        from jitaccess.app.outbox import OutboxRelay

        notifier = self.notifier or slack_notifier(self.settings, self.service, self.stopping)
        return OutboxRelay(self.db, notifier, worker_id=worker_id(), stopping=self.stopping)

    def close(self) -> None:
        self.db.dispose()


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def uses_socket_mode(settings: Settings, role: Role) -> bool:
    """Slack's requests come over Socket Mode (not HTTP) for this role."""
    return role.answers_slack and bool(settings.slack_app_token)


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


def build(
    settings: Settings | None = None,
    *,
    role: Role | None = None,
    clock: Callable[[], datetime] | None = None,
    notifier: Notifier | None = None,
    azure_credential: TokenCredential | None = None,
) -> Container:
    """Build everything ``role`` runs (None: a CLI command), each piece once.

    ``clock`` is what the Slack listeners and the scheduler read (the sandbox moves
    it); the wall clock by default. The relay delivers with ``notifier`` if given,
    else with the Slack app's notifier where Slack is answered, else with one made
    from ``SLACK_BOT_TOKEN``, else not at all (messages stay queued).
    ``azure_credential`` is the identity the Azure provider and the Activity Log reader
    use instead of the settings' (the sandbox passes its fake ARM's)."""
    settings = settings or load_settings()
    db = Database(settings.database_url)
    providers = build_registry(settings, db, azure_credential=azure_credential)
    stopping = threading.Event()
    if role is None:
        service = _service(
            settings, db, providers, stopping, inline=True, azure_credential=azure_credential
        )
        return Container(settings, db, providers, service, stopping, notifier=notifier)

    from jitaccess.metrics import Metrics
    from jitaccess.scheduler import utcnow

    clock = clock or utcnow
    # The CLI makes backends on first use; serve makes them all now, so a
    # misconfigured one is reported at start and no sweep waits on an SDK import.
    providers.load_all()
    metrics = Metrics(db)
    # The service wakes the scheduler (``on_deadline``) and the scheduler sweeps with
    # the service: the one cycle. It is closed here, by a function over the name
    # bound below, before ``build`` returns; no attribute is set afterwards.
    scheduler: DeadlineScheduler | None = None

    def wake_at(when: datetime | None) -> None:
        if scheduler is not None:
            scheduler.wake_at(when)

    service = _service(
        settings,
        db,
        providers,
        stopping,
        # Clicks never wait on a backend: they record the intent, the sweep acts on it.
        inline=False,
        observer=metrics,
        # A web process wakes nothing: a worker's next sweep picks the intent up.
        on_deadline=wake_at if role.does_work else None,
        azure_credential=azure_credential,
        clock=clock,
    )
    slack = _slack(settings, role, service, stopping, clock) if role.answers_slack else None
    relay: OutboxRelay | None = None
    if role.does_work:
        from jitaccess.app.outbox import OutboxRelay
        from jitaccess.scheduler import DeadlineScheduler

        if notifier is None:
            notifier = (
                slack.notifier if slack is not None else slack_notifier(settings, service, stopping)
            )
        relay = OutboxRelay(db, notifier, worker_id=worker_id(), stopping=stopping, clock=clock)
        scheduler = DeadlineScheduler(
            service,
            relay,
            sweep_interval=settings.sweep_interval_seconds,
            relay_interval=settings.relay_interval_seconds,
            batch_size=settings.sweep_batch_size,
            clock=clock,
            on_sweep=metrics.sweep_finished,
            audit_head_interval=settings.audit_head_interval_minutes * 60,
            stopping=stopping,
            jobs=_reconcile_jobs(settings, service, db, providers)
            + _native_jobs(settings, service),
        )
    return Container(
        settings,
        db,
        providers,
        service,
        stopping,
        role=role,
        metrics=metrics,
        slack=slack,
        scheduler=scheduler,
        notifier=notifier,
        routes={**_slack_routes(settings, role, slack, db), **_signin_routes(service, clock)},
        _relay=relay,
    )


def _signin_routes(
    service: JitService, clock: Callable[[], datetime]
) -> dict[str, WSGIApplication]:
    """The Sign in with Microsoft callback, where sign-in is configured."""
    if not service.signins.available:
        return {}
    from jitaccess.signin_page import CALLBACK_PATH, SignInCallback

    signins = service.signins
    return {CALLBACK_PATH: SignInCallback(lambda query, now: signins.finish(query, now=now), clock)}


def _slack_routes(
    settings: Settings, role: Role, slack: SlackRuntime | None, db: Database
) -> dict[str, WSGIApplication]:
    from jitaccess.app.slack_messages import SlackMessages
    from jitaccess.slack.replay import ReplayGuard
    from jitaccess.slack.runtime import http_routes

    return http_routes(
        slack,
        socket_mode=uses_socket_mode(settings, role),
        replay=ReplayGuard(SlackMessages(db)),
    )


def _service(
    settings: Settings,
    db: Database,
    providers: ProviderRegistry,
    stopping: threading.Event,
    *,
    inline: bool,
    observer: ServiceObserver | None = None,
    on_deadline: Callable[[datetime], None] | None = None,
    azure_credential: TokenCredential | None = None,
    clock: Callable[[], datetime] | None = None,
) -> JitService:
    retry = RetryPolicy(
        base=timedelta(seconds=settings.retry_base_seconds),
        cap=timedelta(seconds=settings.retry_cap_seconds),
        max_grant_attempts=settings.grant_max_attempts,
    )
    remind = settings.remind_before_minutes
    directory, listing_directory = _directories(settings, stopping)
    native = _native_ports(settings, stopping, azure_credential)
    _register_witness(providers, native)
    deps = build_deps(
        db,
        providers,
        retry=retry,
        worker_id=worker_id(),
        remind_before=timedelta(minutes=remind) if remind > 0 else None,
        stopping=stopping,
        provider_concurrency=settings.provider_concurrency,
        inline=inline,
        observer=observer,
        on_deadline=on_deadline,
        directory=directory,
        listing_directory=listing_directory,
        activity=_activity(settings, db, stopping, azure_credential),
        principals=PRINCIPALS,
        native=native,
        clock=clock,
    )
    return JitService(deps)


class _Lazy:
    """An adapter made on first use (its SDK is slow to import), standing in for it."""

    def __init__(self, factory: Callable[[], object]) -> None:
        self._factory = factory
        self._made: object | None = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        with self._lock:
            if self._made is None:
                self._made = self._factory()
        return getattr(self._made, name)


def _native_ports(
    settings: Settings, stopping: threading.Event, azure_credential: TokenCredential | None
) -> NativePorts:
    """Native mode's adapters, each made on first use; None where not configured (the
    use case then says what to set)."""
    from jitaccess.domain.native import (
        DirectoryPort,
        ManagedAppsPort,
        PimApprovalsPort,
        SignInPort,
    )

    arm_verify: str | bool = settings.azure_ca_bundle or True
    entra_verify: str | bool = settings.entra_ca_bundle or True
    azure_configured = azure_credential is not None or bool(
        settings.azure_client_id or settings.azure_tenant_id or settings.azure_arm_url
    )

    @functools.cache  # one identity for ARM and Graph
    def credential() -> TokenCredential:
        if azure_credential is not None:
            return azure_credential
        from jitaccess.providers.arm import authority_options, credential_from_settings

        made = credential_from_settings(
            settings.azure_tenant_id,
            settings.azure_client_id,
            settings.azure_client_secret,
            authority_host=settings.azure_authority_host,
            connection_verify=entra_verify,
        )
        if made is not None:
            return made
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential(**authority_options(settings.azure_authority_host))

    def managed_apps() -> object:
        from jitaccess.providers.managed_apps import ManagedApps

        return ManagedApps(
            credential(), base_url=settings.azure_arm_url or None, connection_verify=arm_verify
        )

    def pim() -> object:
        from jitaccess.providers.pim_approvals import PimApprovals

        return PimApprovals(base_url=settings.azure_arm_url or None, connection_verify=arm_verify)

    def graph() -> object:
        from jitaccess.providers.graph import GRAPH_URL, GraphDirectory

        return GraphDirectory(
            credential(), base_url=settings.graph_url or GRAPH_URL, verify=entra_verify
        )

    sign_in: SignInPort | None = None
    authority = (settings.entra_authority or "").rstrip("/")
    if authority and settings.entra_client_id and settings.public_url:
        host, _, tenant = authority.rpartition("/")

        def entra() -> object:
            from jitaccess.providers.entra import EntraSignIn
            from jitaccess.signin_page import CALLBACK_PATH

            public_url = (settings.public_url or "").rstrip("/")
            return EntraSignIn(
                tenant_id=tenant,
                client_id=settings.entra_client_id or "",
                client_secret=settings.entra_client_secret or "",
                redirect_uri=public_url + CALLBACK_PATH,
                authority_host=host,
                verify=entra_verify,
                # Entra's answer as a form POST keeps the code out of URLs and logs; a
                # browser warns before posting from Microsoft's HTTPS page to plain HTTP
                # (the sandbox on 127.0.0.1), so there the code comes in the query.
                response_mode="form_post" if public_url.startswith("https://") else "query",
            )

        sign_in = cast(SignInPort, _Lazy(entra))
    slack_lookup = None
    if settings.slack_bot_token:
        token, api_url = settings.slack_bot_token, settings.slack_api_url

        def lookup_client() -> object:
            from jitaccess.slack.directory import SlackEmailLookup
            from jitaccess.slack.runtime import slack_client

            return SlackEmailLookup(slack_client(token, api_url, stopping=stopping))

        lookup = _Lazy(lookup_client)
        slack_lookup = cast(Callable[[str], "str | None"], lambda email: lookup.find(email))
    return NativePorts(
        managed_apps=cast(ManagedAppsPort, _Lazy(managed_apps)) if azure_configured else None,
        pim=cast(PimApprovalsPort, _Lazy(pim)) if azure_configured else None,
        graph=cast(DirectoryPort, _Lazy(graph)) if azure_configured else None,
        slack_lookup=slack_lookup,
        sign_in=sign_in,
        token_keys=settings.token_keys,
        mfa_auth_context=settings.mfa_auth_context,
        mfa_max_age=timedelta(minutes=settings.mfa_max_age_minutes),
    )


def _register_witness(providers: ProviderRegistry, native: NativePorts) -> None:
    """Native applications' sweep provider: it reads Azure, never writes."""
    from jitaccess.providers.native import NativeWitness

    providers.register(NativeWitness(native.managed_apps))


def _activity(
    settings: Settings,
    db: Database,
    stopping: threading.Event,
    azure_credential: TokenCredential | None = None,
) -> ActivityReporter:
    """Activity-log summaries at access end, for apps on Azure (the only backend here
    with an activity log). The Azure SDK is imported when the first one is due."""
    from jitaccess.app.activity_reports import ActivityLog, ActivityPolicy, ActivityReporter

    def azure_log() -> ActivityLog:
        from jitaccess.providers.azure_activity import AzureActivityLog

        return AzureActivityLog.from_settings(settings, azure_credential)

    attempts = settings.activity_summary_max_attempts
    return ActivityReporter(
        db,
        {"azure": azure_log} if attempts > 0 else {},
        policy=ActivityPolicy(
            delay=timedelta(minutes=settings.activity_summary_delay_minutes),
            max_attempts=max(attempts, 1),
        ),
        worker_id=worker_id(),
        stopping=stopping,
    )


#: Why an approver group has no members when Slack is not configured.
GROUPS_NEED_SLACK = "jitaccess can read its members only with Slack settings (SLACK_BOT_TOKEN)"

#: How long cards and lists may trust a group's members (decisions never do).
GROUP_CACHE_SECONDS = 60.0


def _directories(
    settings: Settings, stopping: threading.Event
) -> tuple[Directory | None, Directory | None]:
    """Slack's user groups when a bot token is configured: asked afresh for every
    decision, cached briefly for cards and lists. Without Slack: no group has members,
    and a refusal that comes of it says why."""
    if not settings.slack_bot_token:
        without_slack = StaticDirectory(unreadable_because=GROUPS_NEED_SLACK)
        return without_slack, without_slack
    return (
        _SlackGroups(settings, stopping, 0.0),
        _SlackGroups(settings, stopping, GROUP_CACHE_SECONDS),
    )


class _SlackGroups:
    """A :class:`~jitaccess.slack.directory.SlackDirectory` made on first use, so a
    CLI command that never meets a group never imports the Slack SDK."""

    def __init__(self, settings: Settings, stopping: threading.Event, cache: float) -> None:
        self._settings, self._stopping, self._cache = settings, stopping, cache
        self._directory: Directory | None = None

    def members(self, group_id: str) -> tuple[str, ...]:
        if self._directory is None:
            from jitaccess.slack.directory import SlackDirectory, decision_client
            from jitaccess.slack.runtime import slack_client

            token = self._settings.slack_bot_token
            assert token is not None
            client = slack_client(token, self._settings.slack_api_url, stopping=self._stopping)
            if not self._cache:  # decisions wait on it: a budget, no retries
                client = decision_client(client)
            self._directory = SlackDirectory(client, cache_seconds=self._cache)
        return self._directory.members(group_id)


def _slack(
    settings: Settings,
    role: Role,
    service: JitService,
    stopping: threading.Event,
    clock: Callable[[], datetime],
) -> SlackRuntime:
    """The Bolt app with its one client and notifier (the relay's too, with ``all``)."""
    from jitaccess.slack.notifier import SlackNotifier
    from jitaccess.slack.runtime import build_slack, slack_client

    assert settings.slack_bot_token is not None  # Server refuses to start without it
    client = slack_client(settings.slack_bot_token, settings.slack_api_url, stopping=stopping)
    return build_slack(
        service,
        client,
        signing_secret=settings.slack_signing_secret,
        clock=clock,
        socket_mode=uses_socket_mode(settings, role),
        notifier=SlackNotifier(client, service),
    )


def _reconcile_jobs(
    settings: Settings, service: JitService, db: Database, providers: ProviderRegistry
) -> list[Periodic]:
    minutes = settings.reconcile_interval_minutes
    if minutes <= 0:
        return []
    from jitaccess.app.reconcile import reconcile

    catalog = service.catalog

    def periodic_reconcile(now: datetime) -> None:
        catalog.sync_standing(now)  # retry standing grants that failed
        reconcile(service, now, db=db, providers=providers, periodic=True)

    return [(minutes * 60, "reconcile", periodic_reconcile)]


def _native_jobs(settings: Settings, service: JitService) -> list[Periodic]:
    """Native applications' policies and requests read from Azure (a portal change
    reaches jitaccess within ``JITACCESS_NATIVE_POLL_SECONDS``)."""
    seconds = settings.native_poll_seconds
    if seconds <= 0 or service.deps.native.managed_apps is None:
        return []
    native = service.native

    def refresh(now: datetime) -> None:
        native.refresh(now)

    return [(seconds, "native-refresh", refresh)]
