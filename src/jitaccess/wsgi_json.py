"""A JSON answer on a WSGI ``start_response``: the one shape every HTTP answer of
jitaccess's has (the router's health checks, the Slack gate's refusals, the notices).
A base-layer leaf, so the generic router (``web``) and the Slack gate (``slack``) share it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsgiref.types import StartResponse


def json_response(
    start_response: StartResponse, status: str, body: dict[str, Any]
) -> Iterable[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]
