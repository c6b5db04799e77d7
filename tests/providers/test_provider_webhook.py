"""The webhook provider against a local receiver that verifies signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fakes.webhook_receiver import WebhookReceiver
from jitaccess.providers.base import GrantSpec, ProviderError
from jitaccess.providers.webhook import WebhookProvider, sign, verify_signature

SECRET = "correct horse battery staple"
START = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def spec(url: str, request_id: int = 42, **config: Any) -> GrantSpec:
    return GrantSpec(
        request_id=request_id,
        app="contoso-app",
        scope="/subscriptions/s/resourceGroups/mrg",
        principal="UPUB1",
        role="Contributor",
        starts_at=START,
        ends_at=START + timedelta(hours=2),
        config={"url": url, "secret": SECRET, **config},
    )


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as rx:
        yield rx


@pytest.fixture
def provider() -> WebhookProvider:
    return WebhookProvider()


def now() -> datetime:
    return datetime.now(UTC)


def test_grant_and_revoke_arrive_signed_with_the_right_body(
    provider: WebhookProvider, receiver: WebhookReceiver
) -> None:
    provider.grant(spec(receiver.url), now())
    provider.revoke(spec(receiver.url), now())

    assert receiver.rejected == []
    grant, revoke = receiver.calls
    assert grant.body == {
        "action": "grant",
        "request_id": 42,
        "app": "contoso-app",
        "scope": "/subscriptions/s/resourceGroups/mrg",
        "principal": "UPUB1",
        "role": "Contributor",
        "starts_at": "2026-11-27T10:00:00+00:00",
        "ends_at": "2026-11-27T12:00:00+00:00",
        "idempotency_key": "grant:42",
        "standing": False,
    }
    assert revoke.body["action"] == "revoke"
    assert revoke.body["idempotency_key"] == "revoke:42"
    assert grant.headers["idempotency-key"] == "grant:42"
    assert revoke.headers["idempotency-key"] == "revoke:42"
    assert grant.headers["content-type"] == "application/json"
    assert grant.path == "/hooks/jit"
    # the signature is exactly the documented HMAC over the raw bytes
    ts = grant.headers["x-jitaccess-request-timestamp"]
    expected = hmac.new(SECRET.encode(), f"v1:{ts}:".encode() + grant.raw, hashlib.sha256)
    assert grant.headers["x-jitaccess-signature"] == "v1=" + expected.hexdigest()


def test_timestamp_comes_from_the_now_argument(
    provider: WebhookProvider, receiver: WebhookReceiver
) -> None:
    at = datetime(2026, 11, 27, 10, 0, 30, tzinfo=UTC)
    receiver.clock = lambda: at.timestamp() + 60  # within five minutes
    provider.grant(spec(receiver.url), at)
    [call] = receiver.calls
    assert call.headers["x-jitaccess-request-timestamp"] == str(int(at.timestamp()))


def test_wrong_secret_is_rejected_with_401(
    provider: WebhookProvider, receiver: WebhookReceiver
) -> None:
    with pytest.raises(ProviderError) as err:
        provider.grant(spec(receiver.url, secret="wrong"), now())
    text = str(err.value)
    assert "401" in text
    assert "secret" in text
    assert receiver.calls == [] and len(receiver.rejected) == 1


def test_stale_timestamp_is_rejected(provider: WebhookProvider, receiver: WebhookReceiver) -> None:
    ten_minutes_ago = now() - timedelta(minutes=10)
    with pytest.raises(ProviderError, match="401.*clock"):
        provider.grant(spec(receiver.url), ten_minutes_ago)
    assert receiver.calls == []


def test_secret_from_environment(receiver: WebhookReceiver) -> None:
    provider = WebhookProvider(environ={"JIT_HOOK_SECRET": SECRET})
    provider.grant(spec(receiver.url, secret=None, secret_env="JIT_HOOK_SECRET"), now())
    assert len(receiver.calls) == 1
    with pytest.raises(ProviderError, match="JIT_HOOK_SECRET_2.*not set"):
        provider.grant(spec(receiver.url, secret=None, secret_env="JIT_HOOK_SECRET_2"), now())


def test_500_is_a_retryable_provider_error(
    provider: WebhookProvider, receiver: WebhookReceiver
) -> None:
    receiver.mode = "error"
    with pytest.raises(ProviderError) as err:
        provider.revoke(spec(receiver.url), now())
    text = str(err.value)
    assert "500" in text
    assert "database is locked" in text  # a snippet of the body
    assert "retrying" in text
    assert "revoke for request 42" in text


def test_timeout_is_bounded_and_reported(
    provider: WebhookProvider, receiver: WebhookReceiver
) -> None:
    receiver.mode = "hang"
    started = time.monotonic()
    with pytest.raises(ProviderError) as err:
        provider.grant(spec(receiver.url, timeout_seconds=0.5), now())
    assert time.monotonic() - started < 2
    assert "timeout" in str(err.value)
    assert "0.5s" in str(err.value)


def test_connection_refused(provider: WebhookProvider) -> None:
    with pytest.raises(ProviderError, match="could not connect"):
        provider.grant(spec("http://127.0.0.1:1/hook", timeout_seconds=1), now())


def test_config_errors_are_readable(provider: WebhookProvider) -> None:
    with pytest.raises(ProviderError, match="needs a url"):
        provider.grant(spec(""), now())
    with pytest.raises(ProviderError, match="absolute http"):
        provider.grant(spec("file:///etc/passwd"), now())
    with pytest.raises(ProviderError, match="signing secret"):
        provider.grant(spec("https://example.invalid/", secret=""), now())
    with pytest.raises(ProviderError, match="timeout_seconds"):
        provider.grant(spec("https://example.invalid/", timeout_seconds="soon"), now())


def test_error_messages_hide_url_credentials_and_query(provider: WebhookProvider) -> None:
    url = "http://user:pw@127.0.0.1:1/hook?token=sekrit"
    with pytest.raises(ProviderError) as err:
        provider.grant(spec(url, timeout_seconds=1), now())
    assert "sekrit" not in str(err.value) and "pw" not in str(err.value)
    assert "http://127.0.0.1:1/hook" in str(err.value)


# -- verify_signature ---------------------------------------------------------------


BODY = json.dumps({"action": "grant", "request_id": 1}).encode()
TS = 1_790_000_000


def test_verify_signature_accepts_a_good_signature() -> None:
    signature = sign(SECRET, TS, BODY)
    assert signature.startswith("v1=")
    assert verify_signature(SECRET, str(TS), BODY, signature, now=TS)
    assert verify_signature(SECRET.encode(), TS, BODY.decode(), signature, now=float(TS + 299))
    at = datetime.fromtimestamp(TS - 200, UTC)
    assert verify_signature(SECRET, TS, BODY, signature, now=at)


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "now_"),
    [
        ("other secret", TS, BODY, TS),  # wrong secret
        (SECRET, TS + 1, BODY, TS),  # timestamp changed
        (SECRET, TS, BODY + b" ", TS),  # body changed
        (SECRET, TS, BODY, TS + 301),  # too old
        (SECRET, TS, BODY, TS - 301),  # too far in the future
        (SECRET, "not-a-number", BODY, TS),
        (SECRET, None, BODY, TS),
    ],
)
def test_verify_signature_rejects(secret: str, timestamp: Any, body: bytes, now_: float) -> None:
    good = sign(SECRET, TS, BODY)
    assert not verify_signature(secret, timestamp, body, good, now=now_)


def test_verify_signature_rejects_missing_or_malformed_signature() -> None:
    assert not verify_signature(SECRET, TS, BODY, None, now=TS)
    assert not verify_signature(SECRET, TS, BODY, "", now=TS)
    assert not verify_signature(SECRET, TS, BODY, "v0=" + "0" * 64, now=TS)
    assert not verify_signature("", TS, BODY, sign("", TS, BODY), now=TS)


def test_verify_signature_tolerance_is_adjustable() -> None:
    signature = sign(SECRET, TS, BODY)
    assert not verify_signature(SECRET, TS, BODY, signature, now=TS + 61, tolerance=60)
    assert verify_signature(SECRET, TS, BODY, signature, now=TS + 59, tolerance=60)
