"""The browser sandbox without a browser: the Block Kit renderer, and the page's
endpoints driven over real HTTP against an in-process sandbox (the real server,
Bolt app, scheduler and relay beside the fake Slack)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from conftest import APPROVER, PUBLISHER
from jitaccess.app.service import AppSpec, JitService
from jitaccess.cli import app as cli_app
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.server import ConfigurationError
from jitaccess.settings import Settings
from jitaccess.slack.blocks import cards, ids, markup, modals
from jitaccess_sandbox import demo, render
from jitaccess_sandbox import page as sandbox_page
from jitaccess_sandbox.page import REQUIRED, SandboxClock
from jitaccess_sandbox.run import Sandbox, run_sandbox

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "<script>alert('x')</script>"
USERS = {"U1": "Pat Publisher", "U2": "Ava & Co"}


# -- the renderer ------------------------------------------------------------------
def md(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def pt(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def test_mrkdwn_formats_the_subset_jitaccess_uses() -> None:
    out = render.mrkdwn(
        "*Request #1* · _soon_ ~old~ `/jit help`\n>quoted &lt;b&gt;\nnext <@U1> and <@U9> "
        "<https://example.com/a?b=1&amp;c=2|the docs> <javascript:alert(1)|click> "
        ":white_check_mark: :no_such_emoji: <!here>",
        USERS,
    )
    assert "<b>Request #1</b>" in out
    assert "<i>soon</i>" in out and "<s>old</s>" in out
    assert "<code>/jit help</code>" in out
    assert "<blockquote>quoted &lt;b&gt;</blockquote>" in out
    assert '<span class="bk-mention" data-user="U1">@Pat Publisher</span>' in out
    assert "@U9" in out  # unknown people show their id
    assert (
        '<a href="https://example.com/a?b=1&amp;c=2" target="_blank" '
        'rel="noopener noreferrer">the docs</a>' in out
    )
    assert "javascript:" not in out and ">click<" not in out.replace("</span>", "")
    assert "click" in out  # the label stays, as text
    assert "\u2705" in out and ":no_such_emoji:" in out
    assert "@here" in out


def test_mrkdwn_keeps_words_with_underscores_and_lines() -> None:
    out = render.mrkdwn("jit_request_app stays\n\nline *two*")
    assert out == "jit_request_app stays<br><br>line <b>two</b>"
    assert render.mrkdwn("```a <b>\n*c*```") == "<pre>a &lt;b&gt;\n*c*</pre>"


def test_escaping_never_lets_markup_through() -> None:
    nasty = f"{SCRIPT} \" ' <img src=x onerror=alert(1)> &amp;"
    for out in (
        render.mrkdwn(nasty),
        render.mrkdwn(markup.escape(nasty)),
        render.render_blocks(
            [
                {"type": "header", "text": pt(nasty)},
                {"type": "section", "text": md(nasty), "fields": [pt(nasty), md(nasty)]},
                {"type": "context", "elements": [md(nasty), pt(nasty)]},
                {
                    "type": "actions",
                    "block_id": nasty,
                    "elements": [
                        {"type": "button", "text": pt(nasty), "action_id": nasty, "value": nasty}
                    ],
                },
                {
                    "type": "input",
                    "block_id": nasty,
                    "label": pt(nasty),
                    "hint": pt(nasty),
                    "element": {
                        "type": "plain_text_input",
                        "action_id": "a",
                        "initial_value": nasty,
                        "placeholder": pt(nasty),
                    },
                },
            ],
            users={"U1": nasty},
            errors={nasty: nasty},
        ),
    ):
        assert "<script" not in out and "<img" not in out, out
        assert 'onerror=alert(1)"' not in out


def test_a_justification_with_a_script_tag_shows_as_text(service: JitService) -> None:
    """The approver card the app really builds, for a hostile justification."""
    now = datetime(2026, 11, 27, 10, tzinfo=UTC)
    service.register_app(
        AppSpec(
            name="crm",
            scope="/subscriptions/s/resourceGroups/mrg",
            publishers=(PUBLISHER,),
            policy=Policy(mode=ApprovalMode.MANUAL, approvers=(APPROVER,)),
        ),
        actor="test",
        now=now,
    )
    view = service.submit(
        "crm",
        requester=PUBLISHER,
        role="Contributor",
        duration=timedelta(hours=1),
        justification=f"deploy {SCRIPT} & <b>fix</b>",
        now=now,
    )
    _, card = cards.approver_card(view)
    out = render.render_blocks(card, users={PUBLISHER: "Pat Publisher"})
    assert "<script" not in out and "<b>fix" not in out
    assert "deploy &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;fix" in out
    assert '<div class="bk-block bk-header">Access request #1</div>' in out
    assert "@Pat Publisher" in out
    assert 'data-action-id="jit_approve"' in out and 'data-value="1"' in out
    assert 'class="bk-button bk-primary"' in out and 'class="bk-button bk-danger"' in out


def test_every_display_block_type() -> None:
    out = render.render_blocks(
        [
            {"type": "header", "text": pt("Access request #7 :lock:")},
            {
                "type": "section",
                "block_id": "s1",
                "text": md("*Who*"),
                "fields": [md("*Role*\nOwner"), md("*App*\ncrm")],
                "accessory": {
                    "type": "button",
                    "text": pt("I'm done"),
                    "action_id": "jit_release",
                    "value": "7",
                },
            },
            {"type": "context", "elements": [md("Times out _soon_"), pt("plain *not bold*")]},
            {"type": "divider"},
            {
                "type": "actions",
                "block_id": "decide:7",
                "elements": [
                    {
                        "type": "button",
                        "text": pt("Approve"),
                        "action_id": "jit_approve",
                        "value": "7",
                        "style": "primary",
                    },
                    {
                        "type": "button",
                        "text": pt("Deny"),
                        "action_id": "jit_deny",
                        "value": "7",
                        "style": "danger",
                    },
                ],
            },
            {"type": "image", "image_url": "https://x/y.png", "alt_text": "a chart"},
            {"type": "rich_text", "elements": []},
        ]
    )
    assert '<div class="bk-block bk-header">Access request #7 \U0001f512</div>' in out
    assert '<div class="bk-fields"><div class="bk-field"><b>Role</b><br>Owner</div>' in out
    assert (
        '<div class="bk-accessory"><button class="bk-button" type="button" data-block-id="s1" '
        'data-action-id="jit_release" data-value="7">I&#x27;m done</button></div>' in out
    )
    assert '<div class="bk-block bk-context"><span>Times out <i>soon</i></span>' in out
    assert "<span>plain *not bold*</span>" in out  # plain_text is never formatted
    assert '<hr class="bk-block bk-divider">' in out
    assert '<div class="bk-block bk-actions" data-block-id="decide:7">' in out
    assert (
        '<button class="bk-button bk-primary" type="button" data-block-id="decide:7" '
        'data-action-id="jit_approve" data-value="7">Approve</button>' in out
    )
    assert 'class="bk-button bk-danger"' in out and "Deny</button>" in out
    assert "[image: a chart]" in out and "https://x/y.png" not in out
    assert "(a rich_text block, which the sandbox does not show)" in out


def test_every_input_element_type_with_label_hint_optional_and_error() -> None:
    paris = ZoneInfo("Europe/Paris")
    start = int(datetime(2026, 11, 27, 9, 30, tzinfo=UTC).timestamp())
    view = {
        "type": "modal",
        "callback_id": "cb",
        "title": pt("Request access"),
        "submit": pt("Request"),
        "close": pt("Cancel"),
        "blocks": [
            {
                "type": "input",
                "block_id": "app",
                "label": pt("Application"),
                "dispatch_action": True,
                "element": {
                    "type": "static_select",
                    "action_id": "jit_request_app",
                    "options": [
                        {"text": pt("crm"), "value": "crm"},
                        {"text": pt("erp"), "value": "erp"},
                    ],
                    "initial_option": {"text": pt("erp"), "value": "erp"},
                },
            },
            {
                "type": "input",
                "block_id": "grouped",
                "label": pt("Grouped"),
                "element": {
                    "type": "static_select",
                    "action_id": "g",
                    "placeholder": pt("Pick one"),
                    "option_groups": [
                        {"label": pt("Team"), "options": [{"text": pt("A"), "value": "a"}]}
                    ],
                },
            },
            {
                "type": "input",
                "block_id": "start",
                "label": pt("Start"),
                "optional": True,
                "hint": pt("Leave as is to start now."),
                "element": {
                    "type": "datetimepicker",
                    "action_id": "start",
                    "initial_date_time": start,
                },
            },
            {
                "type": "input",
                "block_id": "one",
                "label": pt("One line"),
                "element": {"type": "plain_text_input", "action_id": "one", "initial_value": "hi"},
            },
            {
                "type": "input",
                "block_id": "justification",
                "label": pt("Justification"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": "justification",
                    "multiline": True,
                    "max_length": 2000,
                },
            },
            {
                "type": "input",
                "block_id": "approvers",
                "label": pt("Approvers"),
                "optional": True,
                "element": {
                    "type": "multi_users_select",
                    "action_id": "approvers",
                    "initial_users": ["U2"],
                },
            },
        ],
    }
    out = render.render_view(
        view,
        users=USERS,
        people=["U1", "U2"],
        tz=paris,
        errors={"justification": "A justification is required <now>"},
    )
    assert out.startswith('<div class="bk-modal-title">Request access</div>')
    assert 'data-block-id="app" data-action-id="jit_request_app" data-type="static_select"' in out
    assert 'data-dispatch="1"' in out
    assert '<option value="erp" selected>erp</option>' in out
    assert '<option value="crm">crm</option>' in out
    assert '<option value="">Pick one</option><optgroup label="Team">' in out
    assert (
        '<input type="datetime-local" id="in-start" name="start" class="bk-control" '
        'value="2026-11-27T10:30" data-initial="2026-11-27T10:30"> '
        '<span class="bk-zone">Europe/Paris</span>' in out
    )
    assert 'Start <span class="bk-optional">(optional)</span>' in out
    assert '<div class="bk-hint">Leave as is to start now.</div>' in out
    assert '<input type="text" id="in-one" name="one" class="bk-control" value="hi">' in out
    assert (
        '<textarea id="in-justification" name="justification" class="bk-control" rows="4" '
        'maxlength="2000"></textarea>' in out
    )
    assert 'bk-input bk-has-error" data-block-id="justification"' in out
    assert '<div class="bk-error" role="alert">A justification is required &lt;now&gt;</div>' in out
    assert '<select id="in-approvers" name="approvers" class="bk-control" multiple size="2">' in out
    assert '<option value="U1">Pat Publisher</option>' in out
    assert '<option value="U2" selected>Ava &amp; Co</option>' in out
    assert '<button type="button" class="bk-button bk-close">Cancel</button>' in out
    assert '<button type="submit" class="bk-button bk-primary bk-submit">Request</button>' in out


def test_a_view_without_submit_only_closes() -> None:
    out = render.render_view(modals.notice_modal("Nothing to do", "Request #1 was decided"))
    assert "bk-submit" not in out and 'class="bk-button bk-close">Close</button>' in out


def test_datetime_local_round_trips_in_the_viewers_zone() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    epoch = int(datetime(2026, 1, 2, 3, 4, tzinfo=UTC).timestamp())
    assert render.datetime_local(epoch, tokyo) == "2026-01-02T12:04"
    assert render.parse_datetime_local("2026-01-02T12:04", tokyo) == epoch


def test_a_message_without_blocks_shows_its_text() -> None:
    out = render.render_message(
        {"text": "Request #1 submitted: *ok* <@U1>", "blocks": []}, users=USERS
    )
    assert "<b>ok</b>" in out and "@Pat Publisher" in out


# -- the page over HTTP --------------------------------------------------------------
def sandbox_settings(tmp_path: Path, **extra: Any) -> Settings:
    """What the environment says, with no Slack credentials (as on a fresh machine)."""
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'real.db'}",
        "slack_bot_token": None,
        "slack_app_token": None,
        "slack_signing_secret": None,
        "log_level": "WARNING",
    }
    values.update(extra)
    return Settings(_env_file=None, **values)


def start_sandbox(tmp_path: Path, *, reset: bool = False) -> Sandbox:
    sandbox = Sandbox(
        db_path=tmp_path / "jitaccess-sandbox.db",
        port=0,
        reset=reset,
        configured=sandbox_settings(tmp_path),
        sweep_interval=0.5,
        relay_interval=0.1,
    )
    sandbox.start()
    return sandbox


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    instance = start_sandbox(tmp_path)
    yield instance
    instance.stop()


def call(
    sandbox: Sandbox,
    path: str,
    data: dict[str, Any] | None = None,
    *,
    content_type: str = "application/json",
    host: str | None = None,
) -> tuple[int, dict[str, Any]]:
    url = f"{sandbox.url}/{path}"
    request = urllib.request.Request(
        url,
        data=json.dumps(data).encode() if data is not None else None,
        headers={"Content-Type": content_type, **({"Host": host} if host else {})},
        method="POST" if data is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def state(sandbox: Sandbox, user: str) -> dict[str, Any]:
    status, body = call(sandbox, f"state?user={user}")
    assert status == 200, body
    return body


def eventually(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def timeline_text(sandbox: Sandbox, user: str) -> str:
    return " ".join(item["html"] for item in state(sandbox, user)["timeline"])


def open_modal(sandbox: Sandbox, user: str, callback_id: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        modal = state(sandbox, user)["modal"]
        if modal and modal["callback_id"] == callback_id and "bk-input" in modal["html"]:
            return dict(modal)
        return None

    result: dict[str, Any] = eventually(ready)
    return result


def initial_start(modal: dict[str, Any]) -> str:
    match = re.search(r'name="start" class="bk-control" value="([^"]+)"', modal["html"])
    assert match, modal["html"]
    return match.group(1)


def request_values(modal: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    values = {
        "app": "contoso-crm",
        "role": "Contributor",
        "start": initial_start(modal),
        "duration": "1h",
        "justification": "patch the CRM database",
    }
    values.update(overrides)
    return values


def test_the_page_and_its_guards(sandbox: Sandbox) -> None:
    with urllib.request.urlopen(sandbox.url, timeout=10) as response:
        page = response.read().decode()
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "<title>jitaccess sandbox</title>" in page
    for person in demo.USERS:
        assert person.real_name in page
    assert (
        call(
            sandbox, "command", {"user": demo.PUBLISHER, "text": "help"}, content_type="text/plain"
        )[0]
        == 415
    )
    assert (
        call(sandbox, "command", {"user": demo.PUBLISHER, "text": "help"}, host="evil.example")[0]
        == 403
    )
    assert call(sandbox, "command", {"user": "UNOBODY", "text": "help"})[0] == 400
    status, body = call(sandbox, "command", {"user": demo.PUBLISHER, "text": "/giphy cats"})
    assert status == 400 and "only has /jit" in body["error"]
    assert call(sandbox, "nope", {"user": demo.PUBLISHER})[0] == 404


# -- the page's files, and which wheel ships what -----------------------------------
SANDBOX_ROOT = ROOT / "sandbox"


def wheel_files(project: Path, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """setuptools' own build_py lists what a wheel gets from ``project``'s pyproject.toml:
    its modules and the package data it names (as paths inside the wheel)."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    monkeypatch.chdir(project)
    dist = Distribution({"script_name": "setup.py"})
    apply_configuration(dist, project / "pyproject.toml")
    dist.include_package_data = False  # only what package-data names; no egg-info written
    build_py = dist.get_command_obj("build_py")
    build_py.ensure_finalized()
    modules = {
        f"{package.replace('.', '/')}/{module}.py"
        for package, module, _file in build_py.find_all_modules()
    }
    data = {
        f"{package.replace('.', '/')}/{name}"
        for package, _src, _build, names in build_py.data_files
        for name in names
    }
    return modules | data


def test_the_product_wheel_ships_no_sandbox_module(monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = wheel_files(ROOT, monkeypatch)
    assert "jitaccess/cli/serve.py" in shipped and "jitaccess/py.typed" in shipped
    # No sandbox package (the old jitaccess/sandbox/ or the new one) and none of its files
    # (its one statement lives in store/slack_messages.py with the Slack tables' others).
    sandbox_files = {
        "fake_slack.py",
        "fake_arm.py",
        "fake_entra.py",
        "page.html",
        "page.js",
        "page.css",
    }
    assert {
        f
        for f in shipped
        if f.startswith(("jitaccess/sandbox/", "jitaccess_sandbox/"))
        or f.split("/")[-1] in sandbox_files
    } == set()
    assert not (ROOT / "src" / "jitaccess" / "sandbox").exists()


def test_the_sandbox_wheel_ships_its_modules_and_the_page_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every file the page reads (and anything else in static/) and every module of the
    package is in the sandbox's own wheel, and nothing of the product is."""
    shipped = wheel_files(SANDBOX_ROOT, monkeypatch)
    package = SANDBOX_ROOT / "src" / "jitaccess_sandbox"
    static = package / sandbox_page.STATIC
    wanted = {f"jitaccess_sandbox/{sandbox_page.STATIC}/{n}" for n in sandbox_page.STATIC_FILES}
    on_disk = {f"jitaccess_sandbox/{sandbox_page.STATIC}/{p.name}" for p in static.iterdir()}
    modules = {f"jitaccess_sandbox/{p.name}" for p in package.glob("*.py")}
    assert wanted <= on_disk
    assert {"jitaccess_sandbox/run.py", "jitaccess_sandbox/fake_slack.py"} <= modules
    assert (on_disk | modules | {"jitaccess_sandbox/py.typed"}) - shipped == set()
    assert {f for f in shipped if not f.startswith("jitaccess_sandbox/")} == set()


def test_the_page_files_are_read_on_first_use_not_on_import() -> None:
    probe = (
        "import jitaccess_sandbox.page as p\n"
        "assert p._static.cache_info().currsize == 0, 'read at import'\n"
        "p.render_page({'prefix': '/sandbox', 'users': [], 'db': ''})\n"
        "p.render_page({'prefix': '/sandbox', 'users': [], 'db': ''})\n"
        "info = p._static.cache_info()\n"
        "assert (info.misses, info.hits) == (1, 1), info\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)


def test_the_page_inlines_its_files_and_config_cannot_become_markup() -> None:
    static = SANDBOX_ROOT / "src" / "jitaccess_sandbox" / sandbox_page.STATIC
    hostile = {
        "prefix": "/sandbox",
        "users": [{"id": "U1", "name": SCRIPT}],
        "db": "a&b</aside><img src=x>",
    }
    html = sandbox_page.render_page(hostile)
    assert (static / "page.css").read_text() in html
    assert (static / "page.js").read_text() in html
    assert "${" not in html
    assert SCRIPT not in html and "<img" not in html
    assert html.count("<script") == 2 and html.count("</script>") == 2
    match = re.search(r'<script id="config" type="application/json">(.*?)</script>', html, re.S)
    assert match is not None and json.loads(match.group(1)) == hostile


def test_a_command_reply_is_shown_only_to_who_typed_it(sandbox: Sandbox) -> None:
    status, body = call(sandbox, "command", {"user": demo.PUBLISHER, "text": "/jit help"})
    assert (status, body["ok"]) == (200, True)

    def replied() -> list[dict[str, Any]]:
        return [i for i in state(sandbox, demo.PUBLISHER)["timeline"] if i["kind"] == "ephemeral"]

    reply = eventually(replied)[0]
    assert "/jit request" in reply["html"]
    kinds = [i["kind"] for i in state(sandbox, demo.PUBLISHER)["timeline"]]
    assert kinds == ["command", "ephemeral"]
    assert state(sandbox, demo.APPROVER)["timeline"] == []


def test_a_command_opens_the_modal_and_errors_show_inline(sandbox: Sandbox) -> None:
    call(sandbox, "command", {"user": demo.PUBLISHER, "text": "/jit request"})
    modal = open_modal(sandbox, demo.PUBLISHER, ids.REQUEST_MODAL)
    assert '<option value="contoso-crm" selected>' in modal["html"]
    assert state(sandbox, demo.APPROVER)["modal"] is None  # modals belong to who opened them

    # Slack's own client refuses an empty required input before sending anything.
    status, body = call(
        sandbox,
        "submit",
        {
            "user": demo.PUBLISHER,
            "view_id": modal["id"],
            "values": request_values(modal, justification=""),
        },
    )
    assert status == 200 and body["errors"] == {"justification": REQUIRED} and not body["sent"]

    # The app's own rule: whitespace is no justification (response_action: errors).
    status, body = call(
        sandbox,
        "submit",
        {
            "user": demo.PUBLISHER,
            "view_id": modal["id"],
            "values": request_values(modal, justification="   "),
        },
    )
    assert status == 200 and body["response_action"] == "errors"
    assert "justification is required" in body["errors"]["justification"]
    shown = state(sandbox, demo.PUBLISHER)["modal"]
    assert (
        shown["id"] == modal["id"]
        and "justification is required" in shown["errors"]["justification"]
    )
    assert '<div class="bk-error" role="alert">A justification is required' in shown["html"]

    # Picking another application dispatches block_actions; the app updates the view.
    status, body = call(
        sandbox,
        "click",
        {
            "user": demo.PUBLISHER,
            "source": "modal",
            "view_id": modal["id"],
            "block_id": "app",
            "action_id": ids.APP_PICKED,
            "selected": "fabrikam-erp",
            "values": request_values(modal),
        },
    )
    assert body["ok"], body
    updated = eventually(
        lambda: (m := state(sandbox, demo.PUBLISHER)["modal"]) and "Reader" in m["html"] and m
    )
    assert '<option value="fabrikam-erp" selected>' in updated["html"]
    assert updated["errors"] == {}  # a new version of the view has no stale errors

    assert call(sandbox, "close", {"user": demo.PUBLISHER, "view_id": modal["id"]})[1]["ok"]
    assert state(sandbox, demo.PUBLISHER)["modal"] is None


def test_a_request_from_the_slash_command_to_expired(sandbox: Sandbox) -> None:
    pat, ava = demo.PUBLISHER, demo.APPROVER
    call(sandbox, "command", {"user": pat, "text": "/jit request"})
    modal = open_modal(sandbox, pat, ids.REQUEST_MODAL)
    start = datetime.fromisoformat(initial_start(modal)) + timedelta(minutes=10)
    values = request_values(
        modal, start=start.strftime("%Y-%m-%dT%H:%M"), justification=f"fix {SCRIPT}"
    )
    status, body = call(sandbox, "submit", {"user": pat, "view_id": modal["id"], "values": values})
    assert (status, body["ok"], body["response_action"]) == (200, True, None), body
    assert state(sandbox, pat)["modal"] is None

    card = eventually(
        lambda: next(
            (i for i in state(sandbox, ava)["timeline"] if "Access request #1" in i["html"]), None
        )
    )
    assert "&lt;script&gt;" in card["html"] and "<script" not in card["html"]
    assert state(sandbox, ava)["counts"][ava] == 1
    status, body = call(
        sandbox,
        "click",
        {
            "user": ava,
            "source": "message",
            "channel": card["channel"],
            "ts": card["ts"],
            "block_id": "decide:1",
            "action_id": ids.APPROVE,
            "value": "1",
        },
    )
    assert body["ok"], body
    decision = open_modal(sandbox, ava, ids.DECISION_MODAL)
    status, body = call(
        sandbox,
        "submit",
        {"user": ava, "view_id": decision["id"], "values": {"reason": "CHG-42 & <b>ok</b>"}},
    )
    assert body["ok"] and body["response_action"] is None, body

    def card_html() -> str:
        return next(
            i["html"] for i in state(sandbox, ava)["timeline"] if "Access request #1" in i["html"]
        )

    eventually(lambda: "Approved by" in card_html())
    assert (
        'Approved by <span class="bk-mention" data-user="UAPPDEMO1">@Ava Approver</span>: '
        "CHG-42 &amp; &lt;b&gt;ok&lt;/b&gt;" in card_html()
    )
    assert 'data-action-id="jit_approve"' not in card_html()
    eventually(lambda: "was approved by" in timeline_text(sandbox, pat))

    # The App Home, from views.publish after app_home_opened.
    assert call(sandbox, "home-opened", {"user": ava})[1]["ok"]
    eventually(lambda: (h := state(sandbox, ava)["home"]) and "Active access" in h)

    before = state(sandbox, pat)["now"]
    status, body = call(sandbox, "time", {"user": pat, "minutes": 15})
    assert body["ok"] and body["now"] > before
    assert state(sandbox, pat)["offset_minutes"] == 15
    eventually(lambda: "is active" in timeline_text(sandbox, pat))
    call(sandbox, "time", {"user": pat, "minutes": 60})
    eventually(lambda: "has expired" in timeline_text(sandbox, pat))
    eventually(lambda: "Expired" in card_html())
    assert call(sandbox, "time", {"user": pat, "minutes": 0})[0] == 400


def test_the_feed_channel_shows_each_request_updated_in_place(sandbox: Sandbox) -> None:
    """The demo's #jit-requests tab shows one message per request, kept current."""
    pat = demo.PUBLISHER

    def feed() -> dict[str, Any]:
        [channel] = state(sandbox, pat)["channels"]
        return dict(channel)

    assert (feed()["name"], feed()["member"], feed()["messages"]) == ("jit-requests", True, [])
    call(sandbox, "command", {"user": pat, "text": "/jit request fabrikam-erp Contributor 1h fix"})
    eventually(lambda: any("Active" in m["html"] for m in feed()["messages"]))
    call(sandbox, "command", {"user": pat, "text": "/jit release 1"})
    eventually(lambda: any("Revoked" in m["html"] for m in feed()["messages"]))
    [message] = feed()["messages"]
    assert "Access request #1" in message["html"] and "bk-button" not in message["html"]
    call(sandbox, "command", {"user": pat, "text": "/jit apps"})
    eventually(
        lambda: 'feed <span class="bk-mention">#jit-requests</span>' in timeline_text(sandbox, pat)
    )


def test_polling_answers_unchanged_until_something_happens(sandbox: Sandbox) -> None:
    first = state(sandbox, demo.ADMIN)
    status, again = call(sandbox, f"state?user={demo.ADMIN}&since={first['version']}")
    assert again == {"version": first["version"], "unchanged": True}
    call(sandbox, "command", {"user": demo.ADMIN, "text": "apps"})
    eventually(lambda: state(sandbox, demo.ADMIN)["version"] > first["version"])


def test_refuses_a_database_that_real_slack_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "jitaccess-sandbox.db"
    real = sandbox_settings(
        tmp_path, database_url=f"sqlite:///{shared}", slack_bot_token="xoxb-real"
    )
    with pytest.raises(ConfigurationError, match="SLACK_BOT_TOKEN is set"):
        Sandbox(db_path=shared, configured=real)
    # The same file without Slack credentials, or another file with them, is fine.
    Sandbox(
        db_path=shared, configured=sandbox_settings(tmp_path, database_url=f"sqlite:///{shared}")
    )
    Sandbox(db_path=tmp_path / "other.db", configured=real)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JITACCESS_DATABASE_URL", "sqlite:///./jitaccess-sandbox.db")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-real")
    shared.write_bytes(b"precious")
    result = CliRunner().invoke(cli_app, ["serve", "--sandbox-reset"])
    assert result.exit_code == 1
    assert "will not use ./jitaccess-sandbox.db" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert shared.read_bytes() == b"precious"  # not reset either


def test_restart_keeps_the_data_and_the_clock_and_reset_starts_over(tmp_path: Path) -> None:
    first = start_sandbox(tmp_path)
    try:
        call(
            first,
            "command",
            {"user": demo.PUBLISHER, "text": "request contoso-crm Owner 2h hotfix"},
        )
        eventually(lambda: "submitted" in timeline_text(first, demo.PUBLISHER))
        call(first, "time", {"user": demo.PUBLISHER, "minutes": 60})
    finally:
        first.stop()
    assert json.loads(first.clock_path.read_text()) == {"offset_seconds": 3600.0}

    again = start_sandbox(tmp_path)
    try:
        assert again.clock.offset == timedelta(hours=1)
        call(again, "command", {"user": demo.PUBLISHER, "text": "list"})
        eventually(lambda: "#1" in timeline_text(again, demo.PUBLISHER))
        # Deadlines still run on the restored clock: approved late, it becomes active.
        call(again, "command", {"user": demo.APPROVER, "text": "approve 1 CHG-7"})
        eventually(lambda: "is active" in timeline_text(again, demo.PUBLISHER))
        assert again.server is not None
        assert [a.name for a in again.server.container.service.list_apps()] == [
            "contoso-crm",
            "fabrikam-erp",
            "northwind-hr",
            "tailspin-azure",
            "wingtip-native",
        ]
    finally:
        again.stop()

    fresh = start_sandbox(tmp_path, reset=True)
    # A second sandbox on the same file neither starts nor resets it.
    with pytest.raises(ConfigurationError, match="Another jitaccess sandbox"):
        start_sandbox(tmp_path, reset=True)
    assert fresh.db_path.exists()
    try:
        assert fresh.clock.offset == timedelta(0) and not fresh.clock_path.exists()
        assert fresh.server is not None
        service = fresh.server.container.service
        assert service.list_requests() == []
        assert len(service.list_apps()) == len(demo.APPS) + 1  # and the native one
    finally:
        fresh.stop()


def test_sandbox_clock_only_moves_forward(tmp_path: Path) -> None:
    clock = SandboxClock(tmp_path / "clock")
    before = clock()
    assert clock.advance(timedelta(minutes=15)) - before >= timedelta(minutes=15)
    with pytest.raises(ValueError):
        clock.advance(timedelta(0))
    (tmp_path / "bad").write_text("not json")
    assert SandboxClock(tmp_path / "bad").offset == timedelta(0)


def test_run_sandbox_prints_one_line_with_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JITACCESS_LOG_LEVEL", "WARNING")
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_sandbox(stop=stop, port=0)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        line = eventually(lambda: capsys.readouterr().out or None, 20)
    finally:
        stop.set()
        thread.join(20)
    assert not errors and not thread.is_alive()
    match = re.fullmatch(
        r"jitaccess sandbox: open (http://127\.0\.0\.1:\d+/sandbox) \(no Slack needed; "
        r"the demo data is in \./jitaccess-sandbox\.db\)\n",
        line,
    )
    assert match, line
    assert (tmp_path / "jitaccess-sandbox.db").exists()


def test_make_run_without_slack_settings_starts_the_sandbox(tmp_path: Path) -> None:
    """A fresh machine: no Slack variables anywhere, ``make run``, the page answers."""
    makefile = ROOT / "Makefile"
    if "--sandbox" not in makefile.read_text():
        pytest.skip("the Makefile's run target has no sandbox mode yet")
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    # The Makefile in a directory of its own (so ./jitaccess-sandbox.db lands there),
    # using the virtualenv these tests run in.
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SLACK_")
        and k not in ("JITACCESS_DATABASE_URL", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    }
    env.update(JITACCESS_PORT=str(port), JITACCESS_LOG_LEVEL="WARNING")
    proc = subprocess.Popen(
        [make, "--no-print-directory", "-o", ".venv/.installed-run", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True
    )  # type: ignore[union-attr]
    reader.start()
    try:
        url = f"http://127.0.0.1:{port}/sandbox"
        # Generous bounds: a loaded machine is slow, never wrong (startup migrates and
        # seeds; the page renders every person's view).
        eventually(lambda: any(f"jitaccess sandbox: open {url} " in line for line in lines), 120)
        with urllib.request.urlopen(url, timeout=60) as response:
            assert response.status == 200
            assert "<title>jitaccess sandbox</title>" in response.read().decode()
        at = next(i for i, line in enumerate(lines) if "jitaccess sandbox: open" in line)
        assert any("sandbox" in line.lower() for line in lines[:at]), lines  # make says so
        # make and the sandbox both get SIGTERM (as from a terminal's process group);
        # the sandbox stops within seconds whatever it is doing (tests/test_shutdown.py).
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:  # never leave the sandbox running behind a failure
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert (tmp_path / "jitaccess-sandbox.db").exists()


def test_the_sandbox_verifies_slack_signatures_even_when_socket_mode_is_configured(
    tmp_path: Path,
) -> None:
    """With SLACK_APP_TOKEN in the environment, the sandbox still refuses unsigned requests."""
    sandbox = Sandbox(
        db_path=tmp_path / "jitaccess-sandbox.db",
        port=0,
        configured=sandbox_settings(tmp_path, slack_app_token="xapp-1-real"),
    )
    sandbox.start()
    try:
        assert sandbox.server is not None and not sandbox.server.socket_mode
        body = f"command=/jit&text=help&user_id={PUBLISHER}&team_id=T1"
        request = urllib.request.Request(
            f"{sandbox.app_url}/slack/events",
            data=body.encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
    finally:
        sandbox.stop()
