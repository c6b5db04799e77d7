"""The HTTP front door: Slack's requests, health and readiness, on one WSGI app
served by waitress (a production WSGI server)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("jitaccess.web")

Check = Callable[[], tuple[bool, dict[str, Any]]]


def json_response(
    start_response: StartResponse, status: str, body: dict[str, Any]
) -> Iterable[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


class Router:
    """Routes by path prefix to WSGI apps; ``/healthz`` and ``/readyz`` built in."""

    def __init__(self, *, ready: Check | None = None) -> None:
        self._routes: list[tuple[str, WSGIApplication]] = []
        self._ready = ready

    def mount(self, prefix: str, wsgi_app: WSGIApplication) -> None:
        self._routes.append((prefix, wsgi_app))
        self._routes.sort(key=lambda route: -len(route[0]))

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            return json_response(start_response, "200 OK", {"status": "ok"})
        if path == "/readyz":
            ok, detail = self._ready() if self._ready else (True, {})
            return json_response(
                start_response,
                "200 OK" if ok else "503 Service Unavailable",
                {"status": "ready" if ok else "not ready", **detail},
            )
        for prefix, wsgi_app in self._routes:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return wsgi_app(environ, start_response)
        return json_response(start_response, "404 Not Found", {"error": f"no route {path}"})


_ENVELOPE_SHAPES = {"user": (dict, str), "view": (dict,), "actions": (list,), "team": (dict, str)}


def guard_slack(bolt_app: WSGIApplication) -> WSGIApplication:
    """Answer 400, not 500, to a payload whose envelope Bolt itself cannot read
    (e.g. ``"user": false``): Bolt reads those fields before verifying the signature."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if _malformed(body, str(environ.get("CONTENT_TYPE") or "")):
            return json_response(
                start_response, "400 Bad Request", {"error": "malformed Slack request"}
            )
        try:
            return bolt_app(environ, start_response)
        except Exception:
            log.exception("the Slack request could not be handled")
            return json_response(
                start_response, "400 Bad Request", {"error": "malformed Slack request"}
            )

    return app


def _malformed(body: bytes, content_type: str) -> bool:
    try:
        if content_type.startswith("application/json"):
            data: Any = json.loads(body or b"{}")
        else:
            form = parse_qs(body.decode("utf-8", "replace"))
            if "payload" not in form:
                return False
            data = json.loads(form["payload"][0])
    except ValueError:
        return True
    if not isinstance(data, dict):
        return True
    return any(
        key in data and not isinstance(data[key], kinds) for key, kinds in _ENVELOPE_SHAPES.items()
    )
