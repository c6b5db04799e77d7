"""The HTTP front door: a router of WSGI apps by path prefix, with health and
readiness built in, served by waitress (a production WSGI server). It knows nothing
of Slack: the Slack endpoint (``jitaccess.slack.signature``) is one app mounted on it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from jitaccess.wsgi_json import json_response

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

Check = Callable[[], tuple[bool, dict[str, Any]]]


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
