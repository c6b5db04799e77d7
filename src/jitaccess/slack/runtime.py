"""Wires the Bolt app: its WebClient (with rate-limit retries), the notifier that
delivers the outbox to Slack, and the listeners."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from jitaccess.service import JitService
from jitaccess.slack.listeners import SlackFrontEnd
from jitaccess.slack.notifier import SlackNotifier


@dataclass
class SlackRuntime:
    app: App
    client: WebClient
    notifier: SlackNotifier


def slack_client(token: str, base_url: str | None = None, *, timeout: int = 10) -> WebClient:
    client = WebClient(token=token, base_url=base_url or WebClient.BASE_URL, timeout=timeout)
    # Honour Slack's 429 Retry-After a couple of times before the relay's own backoff.
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
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
