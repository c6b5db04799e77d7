"""Webhook provider: POSTs a signed JSON event to the application's own endpoint.

The receiver grants or revokes access however it likes and answers 2xx. Requests are
signed the way Slack signs its requests::

    X-Jitaccess-Request-Timestamp: <unix seconds>
    X-Jitaccess-Signature: v1=<hex HMAC-SHA256(secret, "v1:<timestamp>:<raw body>")>
    Idempotency-Key: grant:<request id>        (also in the body as idempotency_key)

Receivers check them with :func:`verify_signature` (or its few lines copied), which
also rejects timestamps more than five minutes away from their clock. The same event
may be delivered more than once: act on ``idempotency_key`` at most once.

An ``extend`` event (key ``extend:<request id>:<new ends_at>``) moves the end of a grant
already made to its ``ends_at``. Receivers should enforce ``ends_at`` themselves, so
access ends on time even while jitaccess is down; jitaccess still revokes at the end.

Provider config (the application's ``provider_config``)::

    url: https://ops.example.com/jitaccess      # required, http or https
    secret: <shared secret>                     # or secret_env: NAME_OF_ENV_VAR
    timeout_seconds: 10                         # optional, default 10
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from http.client import HTTPException
from typing import IO, Any
from urllib.parse import urlsplit

from jitaccess.providers.base import GrantSpec, ProviderError

log = logging.getLogger("jitaccess.provider.webhook")

TIMESTAMP_HEADER = "X-Jitaccess-Request-Timestamp"
SIGNATURE_HEADER = "X-Jitaccess-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_VERSION = "v1"
DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 120.0
_SNIPPET = 200


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def sign(secret: str | bytes, timestamp: int | str, body: bytes | str) -> str:
    """The signature header value: ``v1=<hex HMAC-SHA256(secret, "v1:<ts>:<body>")>``."""
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + _as_bytes(body)
    digest = hmac.new(_as_bytes(secret), base, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify_signature(
    secret: str | bytes,
    timestamp: str | int | None,
    body: bytes | str,
    signature: str | None,
    now: datetime | float,
    tolerance: float = 300,
) -> bool:
    """True if ``signature`` signs ``body`` at ``timestamp`` and the timestamp is fresh.

    ``now`` is the receiver's clock (a datetime, or unix seconds); a timestamp more than
    ``tolerance`` seconds (five minutes) away from it is rejected, which stops replays.
    ``body`` must be the raw request body, byte for byte.
    """
    if not secret or timestamp is None or not signature:
        return False
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    current = now.timestamp() if isinstance(now, datetime) else float(now)
    if abs(current - ts) > tolerance:
        return False
    expected = sign(secret, ts, body)
    return hmac.compare_digest(expected.encode(), signature.strip().encode())


def _event(action: str, spec: GrantSpec) -> dict[str, Any]:
    return {
        "action": action,
        "request_id": spec.request_id,
        "app": spec.app,
        "scope": spec.scope,
        "principal": spec.principal,
        "role": spec.role,
        "starts_at": spec.starts_at.isoformat(),
        "ends_at": spec.ends_at.isoformat(),
        "idempotency_key": _idempotency_key(action, spec),
        "standing": spec.standing,
    }


def _idempotency_key(action: str, spec: GrantSpec) -> str:
    if action == "extend":
        # Each extension is its own event: the key names the end it moves to.
        return f"extend:{spec.request_id}:{spec.ends_at.isoformat()}"
    return (
        f"{action}:standing:{spec.request_id}" if spec.standing else f"{action}:{spec.request_id}"
    )


def _public_url(url: str) -> str:
    """The URL without credentials or query string, safe to show to people."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def _snippet(stream: IO[bytes] | None) -> str:
    if stream is None:
        return ""
    try:
        raw = stream.read(2048)
    except (OSError, HTTPException):
        return ""
    text = " ".join(raw.decode("utf-8", "replace").split())
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 1] + "…"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirected POST would lose its body or signature: report it instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookProvider:
    """Delivers grant and revoke events to ``config["url"]``, one bounded attempt each."""

    name = "webhook"

    def __init__(
        self,
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
        environ: Mapping[str, str] | None = None,
        user_agent: str = "jitaccess-webhook/1",
    ) -> None:
        self._default_timeout = default_timeout
        self._environ = environ
        self._user_agent = user_agent
        self._opener = urllib.request.build_opener(_NoRedirects())

    def grant(self, spec: GrantSpec, now: datetime) -> None:
        self._deliver("grant", spec, now)

    def revoke(self, spec: GrantSpec, now: datetime) -> None:
        self._deliver("revoke", spec, now)

    def extend(self, spec: GrantSpec, now: datetime) -> None:
        """The window was extended: the same grant now ends at ``spec.ends_at``
        (an ``extend`` event, signed like the others; never a revoke and re-grant)."""
        self._deliver("extend", spec, now)

    # -- internals ------------------------------------------------------------------

    def _url(self, config: Mapping[str, Any]) -> str:
        url = config.get("url")
        if not isinstance(url, str) or not url.strip():
            raise ProviderError(
                "webhook provider needs a url: set provider config url: https://… for this app"
            )
        url = url.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProviderError(f"webhook url {_public_url(url)!r} must be an absolute http(s) URL")
        return url

    def _secret(self, config: Mapping[str, Any]) -> str:
        secret = config.get("secret")
        if isinstance(secret, str) and secret:
            return secret
        env_name = config.get("secret_env")
        if isinstance(env_name, str) and env_name:
            environ = self._environ if self._environ is not None else os.environ
            value = environ.get(env_name)
            if not value:
                raise ProviderError(
                    f"webhook secret environment variable {env_name} (named by secret_env) "
                    "is not set or empty"
                )
            return value
        raise ProviderError(
            "webhook provider needs a signing secret: set provider config secret, or "
            "secret_env naming an environment variable that holds it"
        )

    def _timeout(self, config: Mapping[str, Any]) -> float:
        raw = config.get("timeout_seconds", self._default_timeout)
        try:
            timeout = float(raw)
        except (TypeError, ValueError):
            timeout = -1.0
        if not 0 < timeout <= MAX_TIMEOUT:
            raise ProviderError(
                f"webhook timeout_seconds is {raw!r}: use a number of seconds between 0 and "
                f"{MAX_TIMEOUT:g}"
            )
        return timeout

    def _deliver(self, action: str, spec: GrantSpec, now: datetime) -> None:
        url = self._url(spec.config)
        secret = self._secret(spec.config)
        timeout = self._timeout(spec.config)
        shown = _public_url(url)

        body = json.dumps(_event(action, spec), separators=(",", ":")).encode()
        timestamp = int(now.timestamp())
        key = _idempotency_key(action, spec)
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": self._user_agent,
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(secret, timestamp, body),
                IDEMPOTENCY_HEADER: key,
            },
        )
        what = f"webhook {action} for request {spec.request_id} to {shown}"
        try:
            with self._opener.open(request, timeout=timeout) as response:
                status = response.status
                _snippet(response)
        except urllib.error.HTTPError as err:
            raise ProviderError(self._refusal(what, err)) from None
        except TimeoutError:
            raise ProviderError(
                f"{what} got no answer within {timeout:g}s (timeout); retrying"
            ) from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, TimeoutError):
                raise ProviderError(
                    f"{what} got no answer within {timeout:g}s (timeout); retrying"
                ) from None
            raise ProviderError(f"{what} failed: could not connect ({reason}); retrying") from None
        except (OSError, HTTPException) as err:
            raise ProviderError(
                f"{what} failed: connection error ({type(err).__name__}: {err}); retrying"
            ) from None
        if not 200 <= status < 300:
            raise ProviderError(f"{what} answered {status}: expected a 2xx status")
        log.info("Webhook: delivered %s (answered %s)", key, status)

    @staticmethod
    def _refusal(what: str, err: urllib.error.HTTPError) -> str:
        status = err.code
        snippet = _snippet(err)
        detail = f": {snippet}" if snippet else ""
        if 300 <= status < 400:
            location = err.headers.get("Location", "") if err.headers else ""
            return (
                f"{what} was redirected ({status} to {_public_url(location) or '?'}); "
                "redirects are not followed: configure the final URL"
            )
        if status == 401 or status == 403:
            return (
                f"{what} was refused ({status}{detail}): check that the receiver uses the same "
                "secret and that its clock is within five minutes of jitaccess's"
            )
        retrying = "; retrying" if status >= 500 or status in (408, 429) else ""
        return f"{what} answered {status} {err.reason}{detail}{retrying}"
