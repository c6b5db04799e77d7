"""``jitaccess serve --sandbox``: the real app beside a Slack stand-in, in the browser.

It runs the real :class:`~jitaccess.server.Server` (Bolt listeners in HTTP mode,
scheduler, outbox relay) with its Web API client pointed at a
:class:`~jitaccess_sandbox.fake_slack.FakeSlack` on 127.0.0.1, and mounts the
sandbox page at ``/sandbox`` on the same port. The page turns what a person does
into signed Slack requests to the app's ``/slack/events`` and shows what the app
sent back to the fake. Time is the real time plus an offset the page's time control
moves forward; the server, its scheduler and the listeners all read that clock.

Beside the fake Slack runs a :class:`~jitaccess_sandbox.fake_arm.FakeArm` (HTTPS on
127.0.0.1, its own throwaway CA): the demo application on the ``azure`` provider goes
through the real Azure SDK to it. Its clock is the sandbox's, so moving time past a
grant's end shows Azure itself removing the assignment; the page's Azure panel
(``/sandbox/azure``) shows what it holds.

The sandbox always uses its own SQLite file (``./jitaccess-sandbox.db`` unless told
otherwise) and refuses one that the configured real Slack app uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from jitaccess import logs
from jitaccess.roles import Role
from jitaccess.server import (
    STOP_TIMEOUT,
    ConfigurationError,
    Server,
    exit_watchdog,
    stop_on_signals,
)
from jitaccess.settings import Settings, load_settings
from jitaccess.signin_page import CALLBACK_PATH
from jitaccess.store import slack_messages
from jitaccess.terminal import visible
from jitaccess_sandbox import demo
from jitaccess_sandbox.fake_arm import FakeArm, FakeCredential
from jitaccess_sandbox.fake_entra import CLIENT_ID, CLIENT_SECRET, FakeEntra
from jitaccess_sandbox.fake_slack import FakeSlack
from jitaccess_sandbox.page import SandboxClock, SandboxPage

log = logging.getLogger("jitaccess.sandbox")

DEFAULT_DB = Path("jitaccess-sandbox.db")
BOT_TOKEN = "xoxb-sandbox-not-a-real-token"
PAGE_PREFIX = "/sandbox"


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (resolved), or ``None`` for anything else."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve()


def display_path(path: Path) -> str:
    text = str(path)
    return text if path.is_absolute() or text.startswith(".") else f"./{text}"


class Sandbox:
    """The app, the fake Slack, the fake ARM and the page, startable and stoppable in-process.

    ``configured`` is the real configuration (environment and ``.env``; read when not
    given): only its port, log settings and, for the refusal, its database and Slack
    token are used. ``port=0`` lets the OS pick (tests)."""

    def __init__(
        self,
        *,
        db_path: Path | str = DEFAULT_DB,
        port: int | None = None,
        reset: bool = False,
        configured: Settings | None = None,
        sweep_interval: float = 1.0,
        relay_interval: float = 0.3,
    ) -> None:
        configured = configured if configured is not None else load_settings()
        self.db_path = Path(db_path)
        self.reset = reset
        self.port = configured.port if port is None else port
        self.configured = configured
        self.sweep_interval = sweep_interval
        self.relay_interval = relay_interval
        self.secret = secrets.token_hex(16)
        self.clock = SandboxClock(self.clock_path)
        self.fake: FakeSlack | None = None
        self.arm: FakeArm | None = None
        self.entra: FakeEntra | None = None
        self.server: Server | None = None
        self.page: SandboxPage | None = None
        self._sweeps: list[threading.Thread] = []
        self._check_not_shared()

    @property
    def clock_path(self) -> Path:
        """Where the time control's offset is kept, beside the database."""
        return self.db_path.with_name(self.db_path.name + ".clock")

    @property
    def key_path(self) -> Path:
        """The key the sandbox's stored sign-ins are encrypted with, beside the database
        (a restart keeps Ava signed in; ``--sandbox-reset`` forgets both)."""
        return self.db_path.with_name(self.db_path.name + ".key")

    def token_key(self) -> str:
        from jitaccess.app.signins import TokenCipher

        if not self.key_path.exists():
            self.key_path.write_text(TokenCipher.new_key())
            self.key_path.chmod(0o600)
        return self.key_path.read_text().strip()

    @property
    def lock_path(self) -> Path:
        """The lock ``serve`` holds on a SQLite database while it runs."""
        return self.db_path.with_name(self.db_path.name + ".serve.lock")

    @property
    def files(self) -> list[Path]:
        """What ``--sandbox-reset`` deletes: the database, SQLite's files beside it and
        the clock (the lock stays: it is held meanwhile)."""
        name = self.db_path.name
        return [
            self.db_path,
            *(self.db_path.with_name(name + suffix) for suffix in ("-wal", "-shm", "-journal")),
            self.clock_path,
            self.key_path,
        ]

    def _check_not_shared(self) -> None:
        real = sqlite_file(self.configured.database_url)
        if (
            self.configured.slack_bot_token
            and real is not None
            and real == self.db_path.expanduser().resolve()
        ):
            raise ConfigurationError(
                f"jitaccess serve --sandbox will not use {visible(display_path(self.db_path))}: "
                "JITACCESS_DATABASE_URL points at it and SLACK_BOT_TOKEN is set, so a real "
                "Slack app uses that database. The sandbox keeps its demo data in a file of its "
                "own: point JITACCESS_DATABASE_URL at another file (or unset SLACK_BOT_TOKEN "
                "if this database only ever held sandbox data)."
            )

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:3000/sandbox``."""
        return f"{self.app_url}{PAGE_PREFIX}"

    @property
    def app_url(self) -> str:
        port = self.server.port if self.server is not None else self.port
        return f"http://127.0.0.1:{port}"

    def settings(
        self, api_url: str, arm: FakeArm | None = None, entra: FakeEntra | None = None
    ) -> Settings:
        return Settings(
            _env_file=None,
            database_url=f"sqlite:///{self.db_path}",
            host="127.0.0.1",
            port=self.port,
            role=Role.ALL,  # the sandbox is one process, whatever JITACCESS_ROLE says
            slack_bot_token=BOT_TOKEN,
            slack_signing_secret=self.secret,
            slack_app_token=None,
            slack_api_url=api_url,
            sweep_interval_seconds=self.sweep_interval,
            relay_interval_seconds=self.relay_interval,
            log_level=self.configured.log_level,
            log_format=self.configured.log_format,
            # No real Azure identity is ever used: the fake ARM's credential is passed in.
            azure_tenant_id=None,
            azure_client_id=None,
            azure_client_secret=None,
            azure_arm_url=arm.base_url if arm is not None else None,
            azure_ca_bundle=str(arm.ca_file) if arm is not None else None,
            # Sign in with Microsoft against the fake Entra (and its Graph).
            public_url=self.app_url if entra is not None else None,
            entra_authority=entra.authority if entra is not None else None,
            entra_client_id=CLIENT_ID if entra is not None else None,
            entra_client_secret=CLIENT_SECRET if entra is not None else None,
            entra_ca_bundle=str(entra.ca_file) if entra is not None else None,
            graph_url=entra.graph_url if entra is not None else None,
            token_keys=self.token_key() if entra is not None else None,
        )

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the database's ``serve`` lock while the sandbox prepares it (reset, seed),
        so a sandbox already running on the same file is never changed under it."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise ConfigurationError(
                    f"Another jitaccess sandbox ({visible(holder)}) is already using "
                    f"{visible(display_path(self.db_path))}: open its page, or stop it first."
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def start(self) -> None:
        if self.server is not None:
            raise RuntimeError("the sandbox is already running")
        fake = FakeSlack()
        try:
            with self._exclusive():
                if self.reset:
                    for path in self.files:
                        path.unlink(missing_ok=True)
                    self.clock = SandboxClock(self.clock_path)
                    self.reset = False
                demo.add_users(fake, self.clock())
                fake.start()
                self.fake = fake
                arm = FakeArm()
                arm.clock = self.clock
                arm.on_scheduled = demo.demo_activity(arm)
                arm.start()
                self.arm = arm
                if self.port == 0:  # the sign-in's redirect URI names the port
                    self.port = free_port()
                entra = FakeEntra(now=self.clock, redirect_uris=(f"{self.app_url}{CALLBACK_PATH}",))
                entra.start()
                self.entra = entra
                demo.add_native(arm, entra)
                server = Server(
                    self.settings(fake.base_url, arm, entra),
                    clock=self.clock,
                    azure_credential=FakeCredential(),
                )
                self.server = server
                db = server.container.db
                db.upgrade()
                seeded = demo.seed(server.container.service, self.clock())
                if seeded:
                    log.info("sandbox: registered the demo applications %s", ", ".join(seeded))
                # The cards of a previous run lived in its in-memory workspace; the
                # fake numbers messages from the same start, so post anew.
                with db.transaction() as session:
                    slack_messages.forget_all_cards(session)
            page = SandboxPage(
                fake=fake,
                signing_secret=self.secret,
                app_url=lambda: self.app_url,
                clock=self.clock,
                people=demo.USERS,
                on_time=self._after_time_moved,
                prefix=PAGE_PREFIX,
                db_label=display_path(self.db_path),
                azure=arm.snapshot,
            )
            self.page = page
            server.router.mount(PAGE_PREFIX, page)
            page.start()
            try:
                server.start()
            except OSError as exc:
                raise ConfigurationError(
                    f"jitaccess serve --sandbox cannot listen on 127.0.0.1:{self.port} "
                    f"({visible(str(exc))}): "
                    "stop what runs there or set JITACCESS_PORT to a free port"
                ) from exc
        except BaseException:
            self.stop()
            fake.stop()  # also when it never became self.fake (safe twice)
            raise

    def _after_time_moved(self) -> None:
        """Run the sweep at once rather than at its next interval."""
        server = self.server
        if server is not None and server.scheduler is not None:
            thread = threading.Thread(
                target=server.scheduler.sweep_now, name="sandbox-sweep", daemon=True
            )
            self._sweeps = [t for t in self._sweeps if t.is_alive()] + [thread]
            thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop within about ``timeout`` seconds (see :meth:`Server.stop`)."""
        deadline = time.monotonic() + timeout
        page, server, fake, arm = self.page, self.server, self.fake, self.arm
        entra = self.entra
        self.page = self.server = self.fake = None
        self.arm = None
        self.entra = None
        if server is not None:
            server.container.stopping.set()  # the sweeps below stop at their next row
        if page is not None:
            page.close()  # stops watching the fake Slack
        for thread in self._sweeps:  # daemon threads: a sweep still in a call is left
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._sweeps = []
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop(timeout=max(0.5, deadline - time.monotonic()))
        if fake is not None:
            fake.stop()
        if arm is not None:
            arm.stop()
        if entra is not None:
            entra.stop()


def free_port() -> int:
    """A port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_sandbox(
    *, reset: bool = False, stop: threading.Event | None = None, port: int | None = None
) -> None:
    """``jitaccess serve --sandbox``: run until SIGINT/SIGTERM (or ``stop`` is set)."""
    configured = load_settings()
    logs.configure(configured.log_level, configured.log_format)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line matters here: the URL
    sandbox = Sandbox(reset=reset, port=port, configured=configured)
    from_signals = stop is None
    stop = stop or threading.Event()
    with stop_on_signals(stop, "the sandbox"):
        sandbox.start()
        print(
            f"jitaccess sandbox: open {sandbox.url} (no Slack needed; the demo data is in "
            f"{display_path(sandbox.db_path)})",
            flush=True,
        )
        try:
            stop.wait()
        finally:
            started = time.monotonic()
            sandbox.stop()
            log.info("jitaccess sandbox stopped in %.1fs", time.monotonic() - started)
    if from_signals:
        exit_watchdog()
