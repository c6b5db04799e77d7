"""A local webhook receiver that checks jitaccess signatures the way a real one should.

    with WebhookReceiver(secret="s3cret") as rx:
        provider.grant(spec_with(url=rx.url, secret="s3cret"), now)
        assert rx.calls[0].body["action"] == "grant"

``mode`` makes it answer 500 ("error") or hang ("hang", for ``hang_seconds`` or until
stopped); ``clock`` is the receiver's clock (unix seconds) used for the freshness check.
``hook(point, body)``, if set, runs on the handler's thread at two points of each accepted
call: ``"received"`` (before the receiver acts on it) and ``"held"`` (after it acted, before
it answers), so a test can hold a backend call at either point (tests/test_races.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jitaccess.providers.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature


@dataclass(frozen=True)
class ReceivedCall:
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.raw)
        return body


class WebhookReceiver:
    def __init__(self, secret: str, *, clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.clock = clock
        self.mode = "ok"  # "ok" | "error" | "hang"
        self.hang_seconds = 5.0
        self.calls: list[ReceivedCall] = []  # accepted (signature verified)
        self.rejected: list[ReceivedCall] = []  # signature or timestamp refused
        self.hook: Callable[[str, dict[str, Any]], None] | None = None
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/jit"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def actions(self, request_id: int | None = None) -> list[str]:
        """The accepted events' actions, in order (for one request, or all)."""
        with self._lock:
            calls = list(self.calls)
        return [
            c.body["action"]
            for c in calls
            if request_id is None or c.body["request_id"] == request_id
        ]

    def held_ends_at(self, request_id: int) -> str | None:
        """The end a receiver enforcing ``ends_at`` would hold for the request now: the
        last grant's or extend's ``ends_at``, None if never granted or revoked since."""
        held: str | None = None
        with self._lock:
            calls = list(self.calls)
        for call in calls:
            body = call.body
            if body["request_id"] != request_id or body.get("standing"):
                continue
            if body["action"] in ("grant", "extend"):
                held = body["ends_at"]
            elif body["action"] == "revoke":
                held = None
        return held

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        call = ReceivedCall(path, headers, raw)
        ok = verify_signature(
            self.secret,
            headers.get(TIMESTAMP_HEADER.lower()),
            raw,
            headers.get(SIGNATURE_HEADER.lower()),
            now=self.clock(),
        )
        if not ok:
            with self._lock:
                self.rejected.append(call)
            return 401, b'{"error": "invalid signature or stale timestamp"}'
        if self.mode == "hang":
            self._released.wait(self.hang_seconds)
            return 200, b'{"ok": true, "late": true}'
        if self.mode == "error":
            return 500, b'{"error": "backend exploded: database is locked"}'
        hook = self.hook
        if hook is not None:
            hook("received", call.body)
        with self._lock:
            self.calls.append(call)
        if hook is not None:
            hook("held", call.body)
        return 200, b'{"ok": true}'


def _handler_for(rx: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, payload = rx.handle(self.path, headers, raw)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
