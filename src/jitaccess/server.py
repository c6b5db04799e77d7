"""``jitaccess serve``: migrations, the Slack app (HTTP or Socket Mode), the
deadline scheduler and the outbox relay, in one process, or split by ``--role``:

* ``web`` answers Slack (and ``/healthz``, ``/readyz``, ``/metrics``). A person's
  action only records its intent in the database and returns; it calls no backend
  and delivers no notification. Nothing is scheduled in a web process.
* ``worker`` runs the deadline sweep, the outbox relay, reconciliation and the audit
  head log, and serves only ``/healthz``, ``/readyz`` and ``/metrics``. It picks up
  what a web process recorded at its next sweep (every
  ``JITACCESS_SWEEP_INTERVAL_SECONDS``) and relay run (every
  ``JITACCESS_RELAY_INTERVAL_SECONDS``): the database is the only channel between
  them.
* ``all`` (the default) is both.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from waitress import wasyncore
from waitress.server import create_server

from jitaccess import logs
from jitaccess.container import Container, build, uses_socket_mode
from jitaccess.metrics import Metrics
from jitaccess.roles import Role
from jitaccess.scheduler import DeadlineScheduler, utcnow
from jitaccess.settings import Settings, load_settings
from jitaccess.slack.runtime import SlackRuntime
from jitaccess.terminal import visible
from jitaccess.web import Router

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger("jitaccess.serve")
#: How long ``stop`` gives the work in flight (a sweep batch, a delivery, an HTTP
#: request) to reach a safe point before the process goes without it.
STOP_TIMEOUT = 3.0


class ConfigurationError(Exception):
    """``serve`` cannot start; the message says what to set."""


class Server:
    """Everything ``serve`` runs, startable and stoppable (tests run it in-process)."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        azure_credential: TokenCredential | None = None,
    ) -> None:
        self.role: Role = settings.role
        missing = settings.missing_slack_settings(self.role) + settings.signin_problems()
        if missing:
            command = "serve" if self.role is Role.ALL else f"serve --role {self.role}"
            raise ConfigurationError(
                f"jitaccess {command} cannot start; set these (environment or .env, see "
                ".env.example):\n" + "\n".join(f"  - {line}" for line in missing)
            )
        self.settings = settings
        #: Everything this role runs, built once (see ``container.build``).
        self.container: Container = build(
            settings, role=self.role, clock=clock, azure_credential=azure_credential
        )
        assert self.container.metrics is not None  # built for every serve role
        self.metrics: Metrics = self.container.metrics
        #: The Bolt app; None on a worker.
        self.slack: SlackRuntime | None = self.container.slack
        #: The sweep, the relay, reconciliation and the audit head log; None on a web
        #: process, whose service then wakes nothing (``on_deadline`` is None).
        self.scheduler: DeadlineScheduler | None = self.container.scheduler
        self.socket_mode = uses_socket_mode(settings, self.role)
        self.router = Router(ready=self.readiness)
        for prefix, wsgi_app in self.container.routes.items():
            self.router.mount(prefix, wsgi_app)
        self.router.mount("/metrics", self.metrics.wsgi_app())
        self._http: Any = None
        self._socket_mode: Any = None
        self._threads: list[threading.Thread] = []
        self._sqlite_lock: IO[str] | None = None

    @property
    def port(self) -> int:
        return int(self._http.effective_port) if self._http is not None else self.settings.port

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when the database is reachable at the newest schema and, where work
        runs, the scheduler runs. Slack's state is reported, never a reason to be unready
        (a Slack outage delays messages, never transitions)."""
        checks: dict[str, Any] = {}
        try:
            checks["database"] = (
                "ok" if self.container.db.schema_is_current() else "migrations pending"
            )
        except Exception as exc:  # readiness reports, never raises
            checks["database"] = f"unreachable: {type(exc).__name__}"
        ok = checks["database"] == "ok"
        if self.scheduler is not None:
            checks["scheduler"] = "running" if self.scheduler.running else "stopped"
            slack_error = self.container.relay.last_error
            checks["slack"] = "ok" if slack_error is None else f"degraded: {slack_error[:200]}"
            ok = ok and checks["scheduler"] == "running"
        else:
            checks["slack"] = "socket mode" if self.socket_mode else "http"
        detail: dict[str, Any] = {"checks": checks}
        if self.role is not Role.ALL:
            detail["role"] = str(self.role)
        return ok, detail

    def start(self) -> None:
        self._lock_sqlite()
        self.container.db.upgrade()
        if self.scheduler is not None:
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
        if self.slack is None:
            mode = "no Slack endpoint"
        elif self.socket_mode:
            assert self.settings.slack_app_token is not None
            self._socket_mode = self.slack.socket_mode(self.settings.slack_app_token)
            self._socket_mode.connect()
            mode = "Socket Mode"
        log.info(
            "jitaccess serving --role %s (%s) on %s:%s; database %s; %s",
            self.role,
            mode,
            self.settings.host,
            self.port,
            self.container.db.engine.url.render_as_string(hide_password=True),
            f"sweeping every {self.settings.sweep_interval_seconds}s"
            if self.scheduler is not None
            else "no sweep, relay or reconciliation here (a worker runs them)",
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
                f"Another jitaccess serve ({visible(holder)}) is already using {visible(path)}. "
                "SQLite is for "
                "one process only: stop the other one, or use PostgreSQL "
                "(JITACCESS_DATABASE_URL=postgresql://…) to run several replicas."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._sqlite_lock = handle

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop within about ``timeout`` seconds, whatever is in flight: every loop
        stops at its next unit of work, and what is still inside one backend or Slack
        call then is left behind (safe: the design survives a crash anywhere)."""
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.1, deadline - time.monotonic())

        self.container.stopping.set()
        http = self._http
        if http is not None:
            # Stop accepting at once. waitress's sockets are closed from its own loop
            # (closing them from here races its thread: "Bad file descriptor").
            # (Only the listening socket: waitress's own close() also closes the trigger.)
            _in_loop(http, lambda: wasyncore.dispatcher.close(http))
        if self._socket_mode is not None:
            # slack_sdk's close() waits for its listener threads without a bound.
            _bounded(self._socket_mode.close, "socket-mode-close", left())
            self._socket_mode = None
        if self.scheduler is not None:
            self.scheduler.shutdown(timeout=left())
        if http is not None:
            # Requests in flight finish (bounded), then the connections are closed.
            http.task_dispatcher.shutdown(timeout=left())
            _in_loop(http, lambda: wasyncore.close_all(http._map))
            for thread in self._threads:
                thread.join(timeout=left())
            self._http = None
        if self.slack is not None:
            # What listeners acked and left for after the ack (writes, replies) finishes.
            self.slack.close(left())
        self.container.close()
        if self._sqlite_lock is not None:
            self._sqlite_lock.close()
            self._sqlite_lock = None


def _bounded(action: Callable[[], object], name: str, timeout: float) -> None:
    """Run ``action`` in a daemon thread; stop waiting for it after ``timeout``."""
    thread = threading.Thread(target=action, name=name, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        log.warning("stopping without waiting for %s", name)


def _in_loop(http: Any, action: Callable[[], object]) -> None:
    """Run ``action`` on waitress's own loop thread. Once that loop has ended it has
    closed its trigger (and its sockets with it): then there is nothing left to do,
    and pulling the closed trigger must not turn a clean stop into a traceback."""
    try:
        http.trigger.pull_trigger(action)
    except OSError as exc:
        log.debug("waitress's loop is already closed (%s): nothing to close", exc)


@contextmanager
def stop_on_signals(stop: threading.Event, what: str) -> Iterator[None]:
    """SIGTERM and SIGINT (Ctrl-C) set ``stop``; a second one exits at once (status
    128 + the signal), for when stopping itself is what someone wants to cut short.
    Only in the main thread (signals are delivered there); elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _stop(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            # Not through logging: its lock may be held by the code this interrupted.
            os.write(2, f"signal {signum} again: {what} exits now\n".encode())
            os._exit(128 + signum)
        log.info("signal %s: stopping %s", signum, what)
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def exit_watchdog(timeout: float = STOP_TIMEOUT) -> None:
    """After a stop, the interpreter waits at exit for every non-daemon thread (e.g. a
    Bolt listener still inside a Slack call). Give them ``timeout`` seconds, then exit
    without them rather than hang: a daemon thread that outlives a normal exit does
    nothing."""

    def watch() -> None:
        time.sleep(timeout)
        names = [
            t.name
            for t in threading.enumerate()
            if not t.daemon and t is not threading.main_thread()
        ]
        os.write(2, f"exiting without waiting for threads {', '.join(names)}\n".encode())
        os._exit(0)

    threading.Thread(target=watch, name="exit-watchdog", daemon=True).start()


def run(settings: Settings | None = None, stop: threading.Event | None = None) -> None:
    """``jitaccess serve``: run until SIGTERM/SIGINT (or ``stop`` is set)."""
    settings = settings or load_settings()
    logs.configure(settings.log_level, settings.log_format)
    server = Server(settings)
    from_signals = stop is None
    stop = stop or threading.Event()
    with stop_on_signals(stop, "jitaccess serve"):
        server.start()
        try:
            stop.wait()
        finally:
            started = time.monotonic()
            server.stop()
            log.info("jitaccess serve stopped in %.1fs", time.monotonic() - started)
    if from_signals:
        exit_watchdog()
