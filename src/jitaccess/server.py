"""``jitaccess serve``: migrations, the Slack app (HTTP or Socket Mode), the
deadline scheduler and the outbox relay, in one process."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from waitress import wasyncore
from waitress.server import create_server

from jitaccess import logs
from jitaccess.container import Container, build
from jitaccess.metrics import Metrics
from jitaccess.scheduler import DeadlineScheduler, utcnow
from jitaccess.settings import Settings
from jitaccess.slack.replay import ReplayGuard
from jitaccess.slack.runtime import SlackRuntime, build_slack, slack_client
from jitaccess.web import Router, json_response

if TYPE_CHECKING:
    from collections.abc import Iterable
    from wsgiref.types import StartResponse, WSGIEnvironment

log = logging.getLogger("jitaccess.serve")


class ConfigurationError(Exception):
    """``serve`` cannot start; the message says what to set."""


SOCKET_MODE_NOTICE = (
    "jitaccess runs in Socket Mode (SLACK_APP_TOKEN is set): Slack's requests arrive over "
    "its Socket Mode connection, so this HTTP server does not serve /slack/events. Point "
    "the Slack app at Socket Mode, or unset SLACK_APP_TOKEN and set SLACK_SIGNING_SECRET "
    "for HTTP mode."
)


def socket_mode_notice(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """``/slack/events`` in Socket Mode: nothing is handled over HTTP, say why."""
    return json_response(start_response, "404 Not Found", {"error": SOCKET_MODE_NOTICE})


class Server:
    """Everything ``serve`` runs, startable and stoppable (tests run it in-process)."""

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] = utcnow) -> None:
        missing = settings.missing_slack_settings()
        if missing:
            raise ConfigurationError(
                "jitaccess serve cannot start; set these (environment or .env, see "
                ".env.example):\n" + "\n".join(f"  - {line}" for line in missing)
            )
        self.settings = settings
        self.container: Container = build(settings)
        self.container.service.inline = False  # clicks never wait on a backend
        assert settings.slack_bot_token is not None
        client = slack_client(settings.slack_bot_token, settings.slack_api_url)
        self.socket_mode = bool(settings.slack_app_token)
        self.slack: SlackRuntime = build_slack(
            self.container.service,
            client,
            signing_secret=settings.slack_signing_secret,
            clock=clock,
            socket_mode=self.socket_mode,
        )
        self.container.relay.notifier = self.slack.notifier
        self.metrics = Metrics(self.container.db)
        self.container.service.observer = self.metrics
        self.scheduler: DeadlineScheduler = self.container.scheduler(clock=clock)
        self.scheduler.on_sweep = self.metrics.sweep_finished
        self.router = Router(ready=self.readiness)
        if self.socket_mode:
            # Socket Mode's requests come over the authenticated socket; over HTTP,
            # nothing of Slack's is served, whatever else is configured.
            self.router.mount("/slack/events", socket_mode_notice)
        else:
            self.replay_guard = ReplayGuard(self.container.db)
            self.router.mount("/slack/events", self.slack.http_endpoint(self.replay_guard))
        self.router.mount("/metrics", self.metrics.wsgi_app())
        self._http: Any = None
        self._socket_mode: Any = None
        self._threads: list[threading.Thread] = []
        self._sqlite_lock: IO[str] | None = None

    @property
    def port(self) -> int:
        return int(self._http.effective_port) if self._http is not None else self.settings.port

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {}
        try:
            checks["database"] = (
                "ok" if self.container.db.schema_is_current() else "migrations pending"
            )
        except Exception as exc:  # readiness reports, never raises
            checks["database"] = f"unreachable: {type(exc).__name__}"
        checks["scheduler"] = "running" if self.scheduler.running else "stopped"
        slack_error = self.container.relay.last_error
        # Slack being down degrades notifications but never transitions: still ready.
        checks["slack"] = "ok" if slack_error is None else f"degraded: {slack_error[:200]}"
        ok = checks["database"] == "ok" and checks["scheduler"] == "running"
        return ok, {"checks": checks}

    def start(self) -> None:
        self._lock_sqlite()
        self.container.db.upgrade()
        self.scheduler.start()
        self._http = create_server(
            self.router,
            host=self.settings.host,
            port=self.settings.port,
            threads=self.settings.http_threads,
            ident="jitaccess",
        )
        thread = threading.Thread(target=self._http.run, name="http", daemon=True)
        thread.start()
        self._threads.append(thread)
        mode = "HTTP"
        if self.settings.slack_app_token:
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            self._socket_mode = SocketModeHandler(self.slack.app, self.settings.slack_app_token)
            self._socket_mode.connect()
            mode = "Socket Mode"
        log.info(
            "jitaccess serving (%s) on %s:%s; database %s; sweeping every %ss",
            mode,
            self.settings.host,
            self.port,
            self.container.db.engine.url.render_as_string(hide_password=True),
            self.settings.sweep_interval_seconds,
        )

    def _lock_sqlite(self) -> None:
        """SQLite is for one process: refuse a second ``serve`` on the same file."""
        db = self.container.db
        path = db.engine.url.database
        if not db.is_sqlite or not path or path == ":memory:":
            return
        handle = open(f"{path}.serve.lock", "a+")  # noqa: SIM115 - held until stop()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigurationError(
                f"Another jitaccess serve ({holder}) is already using {path}. SQLite is for "
                "one process only: stop the other one, or use PostgreSQL "
                "(JITACCESS_DATABASE_URL=postgresql://…) to run several replicas."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._sqlite_lock = handle

    def stop(self) -> None:
        if self._socket_mode is not None:
            self._socket_mode.close()
        if self._http is not None:
            # Stop waitress from its own loop (closing its sockets from here races its
            # thread: "Bad file descriptor"), then wait for the thread to end.
            http = self._http
            http.task_dispatcher.shutdown()
            http.trigger.pull_trigger(lambda: wasyncore.close_all(http._map))
            for thread in self._threads:
                thread.join(timeout=5)
            self._http = None
        self.scheduler.shutdown()
        self.container.close()
        if self._sqlite_lock is not None:
            self._sqlite_lock.close()
            self._sqlite_lock = None


def run(settings: Settings | None = None, stop: threading.Event | None = None) -> None:
    settings = settings or Settings()
    logs.configure(settings.log_level, settings.log_format)
    server = Server(settings)
    stop = stop or threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    server.start()
    try:
        stop.wait()
    finally:
        server.stop()
