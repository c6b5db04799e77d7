"""Wires the Bolt app: its WebClient (with rate-limit retries), the notifier that
delivers the outbox to Slack, and the listeners.

There is no configuration in which a Slack request is handled unauthenticated: Bolt's
signature check is always on, an app built without a signing secret is for Socket Mode
only (its requests come over the authenticated socket) and refuses to be served over
HTTP, and the HTTP entry point verifies the signature before anything reads the body."""

from __future__ import annotations

import random
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from jitaccess.service import JitService
from jitaccess.slack.listeners import SlackFrontEnd
from jitaccess.slack.notifier import SlackNotifier
from jitaccess.web import ReplayCheck, slack_gate

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

    from jitaccess.slack.socket_mode import GuardedSocketModeHandler

MISSING_SECRET = (
    "SLACK_SIGNING_SECRET is not set: from the Slack app's Basic Information page; "
    "without it no HTTP request from Slack can be verified (or set SLACK_APP_TOKEN "
    "for Socket Mode, which serves no Slack endpoint over HTTP)"
)


@dataclass
class SlackRuntime:
    app: App
    client: WebClient
    notifier: SlackNotifier
    #: The secret HTTP requests are verified with; ``None`` for a Socket-Mode-only app.
    signing_secret: str | None = None

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


def build_slack(
    service: JitService,
    client: WebClient,
    *,
    signing_secret: str | None,
    clock: Callable[[], datetime],
    process_before_response: bool = False,
    socket_mode: bool = False,
    notifier: SlackNotifier | None = None,
) -> SlackRuntime:
    """``signing_secret`` is required unless the app is only used through Socket Mode
    (``socket_mode=True``); such an app refuses :meth:`SlackRuntime.http_endpoint`.

    ``notifier`` (made with ``client``) is the one the relay delivers with, so the
    listeners and the relay share its caches; one is made when not given."""
    if not signing_secret and not socket_mode:
        raise ValueError(MISSING_SECRET)
    if notifier is None:
        notifier = SlackNotifier(client, service)
    app = App(
        client=client,
        # Never empty (anyone can sign with an empty key): a Socket-Mode-only app gets
        # a random secret nobody knows, so even a request dispatched to it over HTTP
        # fails verification. Bolt skips the check for Socket Mode requests only.
        signing_secret=signing_secret or secrets.token_hex(32),
        request_verification_enabled=True,
        # Do not call auth.test at start: a Slack outage must not stop the service.
        token_verification_enabled=False,
        process_before_response=process_before_response,
    )
    SlackFrontEnd(service, notifier, clock).register(app)
    # A Socket Mode app is never served over HTTP, even when a secret is configured too.
    return SlackRuntime(app, client, notifier, None if socket_mode else signing_secret)
