"""Wires the Bolt app: its WebClient (with rate-limit retries), the notifier that
delivers the outbox to Slack, and the listeners."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from jitaccess.service import JitService
from jitaccess.slack.listeners import SlackFrontEnd
from jitaccess.slack.notifier import SlackNotifier


@dataclass
class SlackRuntime:
    app: App
    client: WebClient
    notifier: SlackNotifier


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
) -> SlackRuntime:
    notifier = SlackNotifier(client, service)
    app = App(
        client=client,
        signing_secret=signing_secret or "",
        # Socket Mode has no HTTP signature to check; HTTP mode always checks it.
        request_verification_enabled=bool(signing_secret),
        # Do not call auth.test at start: a Slack outage must not stop the service.
        token_verification_enabled=False,
        process_before_response=process_before_response,
    )
    SlackFrontEnd(service, notifier, clock).register(app)
    return SlackRuntime(app, client, notifier)
