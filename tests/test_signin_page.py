"""The Sign in with Microsoft callback page: refusals are 400 pages that say what to do;
only a single value per parameter is accepted; the outcome is shown in plain words."""

from __future__ import annotations

import io
from collections.abc import Iterable
from datetime import UTC, datetime

from jitaccess.app.signins import Link
from jitaccess.domain.errors import RuleViolation
from jitaccess.signin_page import SignInCallback

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _call(
    app: SignInCallback, query: str, method: str = "GET", body: bytes = b""
) -> tuple[str, str]:
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"] = status
        seen["headers"] = repr(headers)

    body: Iterable[bytes] = app(
        {
            "REQUEST_METHOD": method,
            "QUERY_STRING": query,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        },
        start_response,
    )
    return seen["status"], b"".join(body).decode()


def test_a_finished_sign_in_names_the_account() -> None:
    got: list[dict[str, str]] = []

    def finish(query: dict[str, str], now: datetime) -> Link:
        got.append(query)
        return Link("U1", "ava@contoso.example", "oid", "tid", (), None)

    status, page = _call(SignInCallback(finish, lambda: NOW), "code=abc&state=xyz")
    assert status == "200 OK"
    assert "ava@contoso.example" in page
    assert got == [{"code": "abc", "state": "xyz"}]


def test_a_refusal_is_a_400_page_with_the_reason_escaped() -> None:
    def finish(query: dict[str, str], now: datetime) -> Link:
        raise RuleViolation("This sign-in link expired <b>now</b>")

    status, page = _call(SignInCallback(finish, lambda: NOW), "code=abc&state=xyz")
    assert status == "400 Bad Request"
    assert "expired &lt;b&gt;now&lt;/b&gt;" in page


def test_a_repeated_parameter_is_refused_before_anything_runs() -> None:
    def finish(query: dict[str, str], now: datetime) -> Link:
        raise AssertionError("must not run")

    status, page = _call(SignInCallback(finish, lambda: NOW), "state=a&state=b&code=c")
    assert status == "400 Bad Request"
    assert "repeats a parameter" in page
    status, _page = _call(SignInCallback(finish, lambda: NOW), "", method="PUT")
    assert status.startswith("405")


def test_a_form_post_is_read_like_a_query() -> None:
    got: list[dict[str, str]] = []

    def finish(query: dict[str, str], now: datetime) -> Link:
        got.append(query)
        return Link("U1", "ava@contoso.example", "oid", "tid", (), None)

    status, _page = _call(
        SignInCallback(finish, lambda: NOW), "", method="POST", body=b"code=abc&state=xyz"
    )
    assert status == "200 OK"
    assert got == [{"code": "abc", "state": "xyz"}]
