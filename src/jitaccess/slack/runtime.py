"""Wires the Bolt app: its WebClient (with rate-limit retries), the notifier that
delivers the outbox to Slack, and the listeners.

There is no configuration in which a Slack request is handled unauthenticated: Bolt's
signature check is always on, an app built without a signing secret is for Socket Mode
only (its requests come over the authenticated socket) and refuses to be served over
HTTP, and the HTTP entry point verifies the signature before anything reads the body."""

from __future__ import annotations

import logging
import os
import random
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from jitaccess.app.service import JitService
from jitaccess.slack.breakglass import BreakGlassListeners
from jitaccess.slack.listeners import SlackFrontEnd
from jitaccess.slack.notifier import SlackNotifier
from jitaccess.slack.signature import ReplayCheck, slack_gate
from jitaccess.wsgi_json import json_response

if TYPE_CHECKING:
    from collections.abc import Iterable
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from jitaccess.slack.socket_mode import GuardedSocketModeHandler

log = logging.getLogger("jitaccess.slack")

#: Threads for the work listeners do after their ack (writes, backend intents, Slack
#: calls). Few on purpose: they share the process's GIL with the threads that ack, and
#: SQLite takes one writer at a time anyway.
AFTER_ACK_THREADS = 2

MISSING_SECRET = (
    "SLACK_SIGNING_SECRET is not set: from the Slack app's Basic Information page; "
    "without it no HTTP request from Slack can be verified (or set SLACK_APP_TOKEN "
    "for Socket Mode, which serves no Slack endpoint over HTTP)"
)


#: Where Slack's HTTP requests arrive (the app manifests name it).
EVENTS_PATH = "/slack/events"

SOCKET_MODE_NOTICE = (
    "jitaccess runs in Socket Mode (SLACK_APP_TOKEN is set): Slack's requests arrive over "
    "its Socket Mode connection, so this HTTP server does not serve /slack/events. Point "
    "the Slack app at Socket Mode, or unset SLACK_APP_TOKEN and set SLACK_SIGNING_SECRET "
    "for HTTP mode."
)


def socket_mode_notice(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """``/slack/events`` in Socket Mode: nothing is handled over HTTP, say why."""
    return json_response(start_response, "404 Not Found", {"error": SOCKET_MODE_NOTICE})


WORKER_NOTICE = (
    "This jitaccess serve runs --role worker: it answers no Slack request. Point Slack "
    "(or your Ingress) at the processes that run --role web or --role all."
)


def worker_notice(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """``/slack/events`` on a worker: nothing of Slack's is handled here, say why."""
    return json_response(start_response, "404 Not Found", {"error": WORKER_NOTICE})


def http_routes(
    slack: SlackRuntime | None, *, socket_mode: bool, replay: ReplayCheck | None
) -> dict[str, WSGIApplication]:
    """What of Slack's a process serves over HTTP, by path, for the HTTP server to mount
    as it is (it needs to know nothing of Slack): the gated Bolt endpoint, or, where
    Slack is not answered over HTTP (a worker, ``slack`` ``None``; Socket Mode), a
    notice that says why."""
    if slack is None:
        # The relay delivers with the notifier build() made from SLACK_BOT_TOKEN.
        return {EVENTS_PATH: worker_notice}
    if socket_mode:
        # Socket Mode's requests come over the authenticated socket; over HTTP,
        # nothing of Slack's is served, whatever else is configured.
        return {EVENTS_PATH: socket_mode_notice}
    return {EVENTS_PATH: slack.http_endpoint(replay)}


class AfterAck:
    """Runs what a listener does after its ``ack()``.

    With ``process_before_response=False`` (``serve``, over HTTP and Socket Mode) Slack
    has its answer at ``ack()``, but the listener still holds one of Bolt's few
    listener threads until it returns: a write or a Slack call done there made the
    next requests' acks queue behind it. Here that work goes to threads of its own
    (``threads``), so Bolt's threads only validate and ack. With ``threads=0`` (for
    ``process_before_response=True``, where the response waits for the listener
    anyway) the work runs at once, in the listener."""

    def __init__(self, threads: int) -> None:
        self._pool = (
            ThreadPoolExecutor(threads, thread_name_prefix="slack-after-ack") if threads else None
        )
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()

    def __call__(self, work: Callable[[], None]) -> None:
        if self._pool is None:
            work()
            return
        future = self._pool.submit(work)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)
        error = future.exception()
        if error is not None:  # the listeners report their own; this is a last resort
            log.error("work after a Slack ack failed", exc_info=error)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self, timeout: float) -> None:
        """Take no more work; wait up to ``timeout`` seconds for what was acked."""
        if self._pool is None:
            return
        with self._lock:
            pending = set(self._pending)
        self._pool.shutdown(wait=False)
        _done, left = wait_for(pending, timeout=timeout)
        if left:
            log.warning("stopped with %d acked Slack actions not yet done", len(left))


@dataclass
class SlackRuntime:
    app: App
    client: WebClient
    notifier: SlackNotifier
    #: The secret HTTP requests are verified with; ``None`` for a Socket-Mode-only app.
    signing_secret: str | None = None
    after_ack: AfterAck | None = None

    def close(self, timeout: float) -> None:
        """Finish (within ``timeout``) the work listeners left for after their ack."""
        if self.after_ack is not None:
            self.after_ack.close(timeout)

    def http_endpoint(self, replay: ReplayCheck | None = None) -> WSGIApplication:
        """The WSGI app for ``POST /slack/events``: signature first, then shape and
        replay checks, then Bolt. Refused for an app built for Socket Mode only."""
        if not self.signing_secret:
            raise ValueError(MISSING_SECRET)
        return slack_gate(
            SlackRequestHandler(self.app), signing_secret=self.signing_secret, replay=replay
        )

    def socket_mode(self, app_token: str) -> GuardedSocketModeHandler:
        """The Socket Mode connection (not yet connected): each envelope's shape is
        checked as an HTTP body's is, then Bolt."""
        from jitaccess.slack.socket_mode import GuardedSocketModeHandler

        return GuardedSocketModeHandler(self.app, app_token)


class RateLimitRetry(RateLimitErrorRetryHandler):
    """Honour Slack's 429 ``Retry-After``, but never sleep it out while the process is
    stopping: the wait ends at once and the call fails with the 429 (the relay retries
    it after the restart). slack_sdk's own handler sleeps with ``time.sleep``."""

    def __init__(self, stopping: threading.Event, max_retry_count: int = 2) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.stopping = stopping

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return not self.stopping.is_set() and super()._can_retry(
            state=state, request=request, response=response, error=error
        )

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        if response is None:
            raise error  # type: ignore[misc]
        values = [v for k, v in response.headers.items() if k.lower() == "retry-after"]
        try:
            seconds = float(values[0][0])  # headers are lists here
        except (TypeError, ValueError, IndexError):
            seconds = 1.0
        if self.stopping.wait(max(0.0, seconds) + random.random()):
            return  # stopping: no next attempt, the caller gets the 429
        state.next_attempt_requested = True
        state.increment_current_attempt()


def slack_client(
    token: str,
    base_url: str | None = None,
    *,
    timeout: int = 10,
    stopping: threading.Event | None = None,
) -> WebClient:
    client = WebClient(token=token, base_url=base_url or WebClient.BASE_URL, timeout=timeout)
    # Honour Slack's 429 Retry-After a couple of times before the relay's own backoff.
    client.retry_handlers.append(RateLimitRetry(stopping or threading.Event(), max_retry_count=2))
    return client


#: What Bolt's ``App`` reads from the environment on its own when not given it. jitaccess
#: gives the app its client and secret from its own settings (environment or .env), so
#: Bolt must not read these: SLACK_BOT_TOKEN beside the client it is given made every
#: start log "As you gave `client` as well, `token` will be unused", and
#: SLACK_CLIENT_ID with SLACK_CLIENT_SECRET would quietly turn on Bolt's OAuth
#: installation flow (with a file installation store) instead of the bot token.
BOLT_ENVIRONMENT = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_VERIFICATION_TOKEN",
    "SLACK_CLIENT_ID",
    "SLACK_CLIENT_SECRET",
)
_environment_lock = threading.Lock()


@contextmanager
def _bolt_reads_no_environment() -> Iterator[None]:
    """Hide :data:`BOLT_ENVIRONMENT` while a Bolt ``App`` is made (at start, once)."""
    with _environment_lock:
        hidden = {name: os.environ.pop(name) for name in BOLT_ENVIRONMENT if name in os.environ}
        try:
            yield
        finally:
            os.environ.update(hidden)


def bolt_app(client: WebClient, signing_secret: str, **options: Any) -> App:
    """A Bolt app configured only by what it is given: ``client`` (and its token), the
    signing secret and ``options``, never by Bolt's own reading of the environment."""
    with _bolt_reads_no_environment():
        return App(client=client, signing_secret=signing_secret, **options)


def build_slack(
    service: JitService,
    client: WebClient,
    *,
    signing_secret: str | None,
    clock: Callable[[], datetime],
    process_before_response: bool = False,
    socket_mode: bool = False,
    notifier: SlackNotifier | None = None,
    after_ack_threads: int = AFTER_ACK_THREADS,
) -> SlackRuntime:
    """``signing_secret`` is required unless the app is only used through Socket Mode
    (``socket_mode=True``); such an app refuses :meth:`SlackRuntime.http_endpoint`.

    ``notifier`` (made with ``client``) is the one the relay delivers with, so the
    listeners and the relay share its caches; one is made when not given."""
    if not signing_secret and not socket_mode:
        raise ValueError(MISSING_SECRET)
    if notifier is None:
        notifier = SlackNotifier(client, service)
    app = bolt_app(
        client,
        # Never empty (anyone can sign with an empty key): a Socket-Mode-only app gets
        # a random secret nobody knows, so even a request dispatched to it over HTTP
        # fails verification. Bolt skips the check for Socket Mode requests only.
        signing_secret or secrets.token_hex(32),
        request_verification_enabled=True,
        # Do not call auth.test at start: a Slack outage must not stop the service.
        token_verification_enabled=False,
        process_before_response=process_before_response,
    )
    # When Bolt answers only after the listener returns, there is nothing to gain from
    # other threads: the work after the ack runs in the listener.
    after_ack = AfterAck(0 if process_before_response else after_ack_threads)
    front = SlackFrontEnd(service, notifier, clock, after_ack)
    front.register(app)
    glass = BreakGlassListeners(front)
    glass.register(app)
    front.add_commands(("breakglass", "ack"), glass.run)
    # A Socket Mode app is never served over HTTP, even when a secret is configured too.
    return SlackRuntime(app, client, notifier, None if socket_mode else signing_secret, after_ack)
