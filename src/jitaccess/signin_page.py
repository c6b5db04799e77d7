"""The Sign in with Microsoft callback page: ``/auth/callback`` on the web role.

Entra sends the browser back here with ``code`` and ``state`` (or ``error``): as a form
POST (``response_mode=form_post``, what msal asks for) or in the query string. The page
hands the query to the sign-in use case (``app.signins.SignIns.finish``), which spends
the single-use attempt and links the account, and tells the person the outcome in
plain words. A refusal is a 400 page saying what to do; nothing is linked.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from jitaccess.app.signins import Link
from jitaccess.domain.errors import JitError

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

log = logging.getLogger("jitaccess.signin")

CALLBACK_PATH = "/auth/callback"
#: An authorization response is a code, a state and a session id: a few kilobytes.
MAX_FORM_BYTES = 64 * 1024

Finish = Callable[[dict[str, str], datetime], Link]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>jitaccess: {title}</title>
<link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1 id="outcome">{title}</h1><p id="detail">{detail}</p></body></html>"""


def _page(start_response: StartResponse, status: str, title: str, detail: str) -> Iterable[bytes]:
    body = _PAGE.format(title=html.escape(title), detail=html.escape(detail)).encode()
    start_response(
        status,
        [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Referrer-Policy", "no-referrer"),
        ],
    )
    return [body]


class SignInCallback:
    """A WSGI app for the callback; ``clock`` gives the time it runs at."""

    def __init__(self, finish: Finish, clock: Callable[[], datetime]) -> None:
        self.finish = finish
        self.clock = clock

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "GET":
            text = environ.get("QUERY_STRING", "")
        elif method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_FORM_BYTES:
                return _page(
                    start_response,
                    "400 Bad Request",
                    "Sign-in refused",
                    "The sign-in answer is not one Microsoft sends: ask for a new link with "
                    "/jit signin.",
                )
            text = environ["wsgi.input"].read(length).decode("utf-8", "replace")
        else:
            return _page(start_response, "405 Method Not Allowed", "Not here", "Use GET or POST.")
        raw = parse_qs(text, keep_blank_values=True)
        if any(len(values) != 1 for values in raw.values()):
            return _page(
                start_response,
                "400 Bad Request",
                "Sign-in refused",
                "The sign-in answer repeats a parameter: ask for a new link with /jit signin.",
            )
        query = {key: values[0] for key, values in raw.items()}
        try:
            link = self.finish(query, self.clock())
        except JitError as exc:
            return _page(start_response, "400 Bad Request", "Sign-in refused", str(exc))
        return _page(
            start_response,
            "200 OK",
            "Signed in",
            f"Your Slack account is now linked to {link.username}. You can close this tab "
            "and go back to Slack.",
        )
