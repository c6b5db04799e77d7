"""``jitaccess serve`` for real: waitress on a port, signed HTTP from outside, the
scheduler and relay running on the wall clock against the fake Slack API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_bolt.request import BoltRequest
from typer.testing import CliRunner

from conftest import APPROVER, PUBLISHER, make_service, register
from jitaccess.cli import app as cli_app
from jitaccess.domain.policy import ApprovalMode
from jitaccess.server import ConfigurationError, Server
from jitaccess.settings import Settings
from jitaccess.slack.runtime import build_slack, slack_client
from jitaccess.store.db import Database
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import (
    SECRET,
    button_click,
    command_fields,
    first_line,
    free_port,
    http,
    post_signed,
    reason_submission,
    serving,
    signed_headers,
    texts,
    wait_until,
)
from socket_mode_server import SocketModeServer


def test_serve_refuses_to_start_without_slack_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JITACCESS_DATABASE_URL", f"sqlite:///{tmp_path}/j.db")
    result = CliRunner().invoke(cli_app, ["serve"])
    assert result.exit_code == 1
    assert "SLACK_BOT_TOKEN: the bot token" in result.stderr
    assert "SLACK_SIGNING_SECRET: from the Slack app's Basic Information page" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_serve_without_slack_settings_prints_real_line_breaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JITACCESS_DATABASE_URL", f"sqlite:///{tmp_path}/j.db")
    monkeypatch.setenv("COLUMNS", "300")
    result = CliRunner().invoke(cli_app, ["serve"])
    assert result.exit_code == 1
    assert "\\x0a" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("jitaccess serve cannot start; set these")
    assert lines[1].startswith("  - SLACK_BOT_TOKEN: the bot token")
    assert lines[2].startswith("  - SLACK_SIGNING_SECRET: from the Slack app's")


def test_serve_refuses_half_a_sign_in_set_up_naming_each_missing_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENTRA_CLIENT_ID alone would only fail at someone's first sign-in: serve says so at
    start, one line per setting, before building anything."""
    monkeypatch.chdir(tmp_path)
    for name in (
        "ENTRA_AUTHORITY",
        "ENTRA_CLIENT_SECRET",
        "JITACCESS_PUBLIC_URL",
        "JITACCESS_TOKEN_KEYS",
        "SLACK_APP_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JITACCESS_DATABASE_URL", f"sqlite:///{tmp_path}/j.db")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("ENTRA_CLIENT_ID", "0b6a1f7e-4c1d-4e8b-9a53-7d0c2f1e9a10")
    monkeypatch.setenv("COLUMNS", "300")
    result = CliRunner().invoke(cli_app, ["serve"])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("jitaccess serve cannot start; set these")
    assert [line.split(":")[0] for line in lines[1:]] == [
        "  - ENTRA_AUTHORITY",
        "  - ENTRA_CLIENT_SECRET",
        "  - JITACCESS_PUBLIC_URL",
        "  - JITACCESS_TOKEN_KEYS",
    ]
    assert "Traceback" not in result.output + result.stderr
    assert not (tmp_path / "j.db").exists()


@pytest.mark.parametrize(
    "command", [["serve"], ["apps", "list"], ["sweep"], ["serve", "--sandbox"]]
)
def test_a_bad_setting_is_one_line_naming_it_not_a_traceback(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JITACCESS_DATABASE_URL", f"sqlite:///{tmp_path}/j.db")
    monkeypatch.setenv("JITACCESS_PORT", "abc")
    monkeypatch.setenv("JITACCESS_LOG_FORMAT", "xml")
    monkeypatch.setenv("COLUMNS", "300")
    result = CliRunner().invoke(cli_app, command)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "JITACCESS_PORT is 'abc': expected a whole number from 0 to 65535 (environment or .env)",
        "JITACCESS_LOG_FORMAT is 'xml': expected text or json (environment or .env)",
    ]
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "j.db").exists()  # nothing was started or created


@pytest.mark.parametrize("missing", ["jitaccess_sandbox", "jitaccess_sandbox.run"])
def test_serve_sandbox_without_the_sandbox_installed_says_how_in_one_line(
    missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The product alone (its wheel, the image) has no sandbox: None in sys.modules makes
    # the import fail exactly as an absent distribution does.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "300")
    for name in [n for n in sys.modules if n.startswith(f"{missing}.")]:
        monkeypatch.delitem(sys.modules, name)  # imported by earlier tests
    monkeypatch.setitem(sys.modules, missing, None)
    result = CliRunner().invoke(cli_app, ["serve", "--sandbox"])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "--sandbox needs the sandbox, which is not installed: run `make run`, or "
        "`pip install -e sandbox` from the repository"
    ]
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert list(tmp_path.iterdir()) == []  # nothing was started or created


def test_a_bad_log_level_is_refused_with_the_levels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JITACCESS_DATABASE_URL", f"sqlite:///{tmp_path}/j.db")
    monkeypatch.setenv("JITACCESS_LOG_LEVEL", "loud\x1b[31m")
    monkeypatch.setenv("COLUMNS", "300")
    result = CliRunner().invoke(cli_app, ["apps", "list"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "JITACCESS_LOG_LEVEL is 'loud\\x1b[31m': expected DEBUG, INFO, WARNING, ERROR or "
        "CRITICAL (environment or .env)"
    ]


@pytest.fixture
def server(fake_slack: FakeSlack, tmp_path: Path) -> Iterator[Server]:
    settings = Settings(
        JITACCESS_DATABASE_URL=f"sqlite:///{tmp_path}/serve.db",
        JITACCESS_HOST="127.0.0.1",
        JITACCESS_PORT=0,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=fake_slack.base_url,
        JITACCESS_SWEEP_INTERVAL_SECONDS=60,
    )
    instance = Server(settings)
    instance.start()
    yield instance
    instance.stop()


def test_http_mode_serves_slack_health_and_readiness(server: Server, fake_slack: FakeSlack) -> None:
    base = f"http://127.0.0.1:{server.port}"
    assert http("GET", f"{base}/healthz") == (200, '{"status": "ok"}')
    status, body = http("GET", f"{base}/readyz")
    assert status == 200 and json.loads(body)["checks"] == {
        "database": "ok",
        "scheduler": "running",
        "slack": "ok",
    }
    status, _ = post_signed(base, command_fields(fake_slack, PUBLISHER, "help", "h1"))
    assert status == 200
    assert fake_slack.wait_for(lambda: bool(fake_slack.responses.get("h1")))
    assert "/jit request" in fake_slack.responses["h1"][0]["text"]
    forged, _ = post_signed(
        base, command_fields(fake_slack, PUBLISHER, "help", "h2"), secret="wrong"
    )
    assert forged == 401
    assert http("GET", f"{base}/nope")[0] == 404


def test_serve_process_takes_a_request_from_slash_command_to_revoked(
    fake_slack: FakeSlack, tmp_path: Path
) -> None:
    """Another process drives a real `jitaccess serve` with signed HTTP requests."""
    port = free_port()
    env = {
        **os.environ,
        "JITACCESS_DATABASE_URL": f"sqlite:///{tmp_path}/e2e.db",
        "SLACK_BOT_TOKEN": "xoxb-e2e",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake_slack.base_url,
        "JITACCESS_PORT": str(port),
        "JITACCESS_HOST": "127.0.0.1",
        "JITACCESS_SWEEP_INTERVAL_SECONDS": "0.5",
        "JITACCESS_RELAY_INTERVAL_SECONDS": "0.2",
        "JITACCESS_REMIND_BEFORE_MINUTES": "0",
    }
    env.pop("SLACK_APP_TOKEN", None)
    cli = [sys.executable, "-m", "jitaccess.cli"]
    subprocess.run(
        [
            *cli,
            "apps",
            "register",
            "crm",
            "--scope",
            "/subscriptions/s/resourceGroups/mrg",
            "--publisher",
            PUBLISHER,
            "--mode",
            "manual",
            "--approver",
            APPROVER,
        ],
        env=env,
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    log_file = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [*cli, "serve"], env=env, cwd=tmp_path, stdout=log_file, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: serving(base), 20), (tmp_path / "serve.log").read_text()
        status, _ = post_signed(
            base, command_fields(fake_slack, PUBLISHER, "request crm Contributor 1m patch db", "r1")
        )
        assert status == 200
        assert fake_slack.wait_for(
            lambda: any("Access request #1" in texts(m) for m in fake_slack.dms_to(APPROVER)), 10
        )
        assert "submitted" in fake_slack.responses["r1"][0]["text"]
        card = next(m for m in fake_slack.dms_to(APPROVER) if "Access request #1" in texts(m))
        click = button_click(fake_slack, APPROVER, card, "jit_approve")
        assert post_signed(base, {"payload": json.dumps(click)})[0] == 200
        assert fake_slack.wait_for(lambda: bool(fake_slack.opened_views(APPROVER)), 10)
        modal = fake_slack.opened_views(APPROVER)[-1]
        submission = reason_submission(APPROVER, modal, "CHG-9 approved")
        assert post_signed(base, {"payload": json.dumps(submission)})[0] == 200

        def requester_saw(fragment: str) -> bool:
            return any(fragment in m["text"] for m in fake_slack.dms_to(PUBLISHER))

        for step in ("sent to the approvers", f"approved by <@{APPROVER}>: CHG-9 approved"):
            assert fake_slack.wait_for(lambda s=step: requester_saw(s), 15), (
                step,
                [m["text"] for m in fake_slack.dms_to(PUBLISHER)],
                (tmp_path / "serve.log").read_text()[-3000:],
            )

        def active_card() -> dict[str, Any] | None:
            # Pat's one card for the request, edited in place: Active, with I'm done;
            # the step itself is a reply in its thread.
            if not requester_saw("is active"):
                return None
            for message in fake_slack.cards_to(PUBLISHER):
                if "Active" in first_line(message) and "jit_release" in texts(message):
                    return message
            return None

        assert fake_slack.wait_for(lambda: active_card() is not None, 15)
        card = active_card()
        assert card is not None
        # The shortest window is a minute: the requester ends it early ("I'm done").
        done = button_click(fake_slack, PUBLISHER, card, "jit_release")
        assert post_signed(base, {"payload": json.dumps(done)})[0] == 200
        assert fake_slack.wait_for(lambda: requester_saw("was revoked"), 15), (
            [m["text"] for m in fake_slack.dms_to(PUBLISHER)],
            (tmp_path / "serve.log").read_text()[-3000:],
        )

        def approver_card_final() -> bool:
            card = next(m for m in fake_slack.dms_to(APPROVER) if "Access request #1" in texts(m))
            return "Revoked" in texts(card) and "jit_approve" not in texts(card)

        assert fake_slack.wait_for(approver_card_final, 10)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log_file.close()
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]
    shown = subprocess.run(
        [*cli, "requests", "show", "1", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(shown.stdout)
    assert (data["state"], data["decided_by"], data["ended_by"]) == ("revoked", APPROVER, PUBLISHER)


def test_socket_mode_serves_slack_without_a_public_url(
    fake_slack: FakeSlack, tmp_path: Path
) -> None:
    settings = Settings(
        JITACCESS_DATABASE_URL=f"sqlite:///{tmp_path}/socket.db",
        JITACCESS_HOST="127.0.0.1",
        JITACCESS_PORT=0,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_APP_TOKEN="xapp-1-test",
        SLACK_API_URL=fake_slack.base_url,
        JITACCESS_SWEEP_INTERVAL_SECONDS=60,
    )
    server = Server(settings)  # no signing secret needed in Socket Mode
    server.start()
    try:
        assert fake_slack.socket_connected(5)
        ack = fake_slack.send_envelope(
            "slash_commands",
            command_fields(fake_slack, PUBLISHER, "help", "sock1") | {"command": "/jit"},
        )
        assert ack is not None
        assert fake_slack.wait_for(lambda: bool(fake_slack.responses.get("sock1")), 5)
        assert "/jit request" in fake_slack.responses["sock1"][0]["text"]
        assert http("GET", f"http://127.0.0.1:{server.port}/healthz")[0] == 200
    finally:
        server.stop()


def test_socket_mode_acks_across_slacks_connection_refresh(
    fake_slack: FakeSlack, tmp_path: Path
) -> None:
    """``serve`` in Socket Mode against a server that behaves as Slack's: around a
    ``disconnect``/``refresh_requested``, commands on the old and on the new connection
    are acked well within Slack's 3 s (slack_sdk's builtin client: 3.0 and 3.1 s)."""
    with SocketModeServer(app_id=fake_slack.app_id) as slack_socket:
        fake_slack.socket_mode_url = slack_socket.url
        settings = Settings(
            JITACCESS_DATABASE_URL=f"sqlite:///{tmp_path}/socket.db",
            JITACCESS_HOST="127.0.0.1",
            JITACCESS_PORT=0,
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_APP_TOKEN="xapp-1-test",
            SLACK_API_URL=fake_slack.base_url,
            JITACCESS_SWEEP_INTERVAL_SECONDS=60,
        )
        server = Server(settings)
        server.start()
        try:
            slack_socket.wait_connection(1)
            slack_socket.disconnect(1)
            fields = command_fields(fake_slack, PUBLISHER, "help", "before")
            before = slack_socket.send_envelope(1, "slash_commands", fields)
            slack_socket.wait_connection(2)
            fields = command_fields(fake_slack, PUBLISHER, "help", "after")
            after = slack_socket.send_envelope(2, "slash_commands", fields)
            for envelope_id, connection in ((before, 1), (after, 2)):
                ack = slack_socket.wait_ack(envelope_id)
                assert ack.seconds < 1.0 and ack.connection == connection
            for key in ("before", "after"):
                assert fake_slack.wait_for(lambda k=key: bool(fake_slack.responses.get(k)), 5)
                assert "/jit request" in fake_slack.responses[key][0]["text"]
            assert slack_socket.wait_closed(1)
        finally:
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < 3
        assert not slack_socket.is_open(2)


def test_metrics_describe_transitions_requests_and_the_outbox(
    server: Server, fake_slack: FakeSlack
) -> None:
    base = f"http://127.0.0.1:{server.port}"
    service = server.container.service
    register(service, mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,))
    submitted = service.submit(
        "crm",
        requester=PUBLISHER,
        role="Owner",
        duration=timedelta(hours=1),
        justification="x",
        now=datetime.now(UTC),
    )
    # the submission woke the scheduler, which sweeps in its own thread
    assert wait_until(lambda: service.get_request(submitted.id).state == "active", 10)
    status, text = http("GET", f"{base}/metrics")
    assert status == 200
    for line in (
        'jitaccess_transitions_total{from_state="none",to_state="pending"} 1.0',
        'jitaccess_transitions_total{from_state="pending",to_state="auto_approved"} 1.0',
        'jitaccess_transitions_total{from_state="auto_approved",to_state="active"} 1.0',
        'jitaccess_requests{app="crm",state="active"} 1.0',
        'jitaccess_provider_calls_total{operation="grant",provider="log"} 1.0',
        "jitaccess_revoke_failing_grants 0.0",
    ):
        assert line in text, line
    assert "jitaccess_sweep_lag_seconds_count" in text
    assert "jitaccess_sweep_duration_seconds_count" in text
    assert "jitaccess_outbox_backlog" in text and "jitaccess_outbox_oldest_age_seconds" in text


def test_a_second_serve_on_the_same_sqlite_file_is_refused(server: Server) -> None:
    second = Server(server.settings)
    with pytest.raises(ConfigurationError, match="SQLite is for one process only"):
        second.start()
    second.container.close()


def test_readiness_reports_slack_degraded_but_stays_ready(
    server: Server, fake_slack: FakeSlack
) -> None:
    register(server.container.service)
    server.container.service.submit(
        "crm",
        requester=PUBLISHER,
        role="Owner",
        duration=timedelta(hours=1),
        justification="x",
        now=datetime.now(UTC),
    )
    fake_slack.set_down(True)
    server.scheduler.relay_now()
    status, body = http("GET", f"http://127.0.0.1:{server.port}/readyz")
    assert status == 200
    assert json.loads(body)["checks"]["slack"].startswith("degraded")


def test_an_envelope_bolt_cannot_read_gets_400_not_500(server: Server) -> None:
    base = f"http://127.0.0.1:{server.port}/slack/events"
    for payload in ('{"type": "block_actions", "user": false}', '{"view": []}', "[1, 2]", "{"):
        body = urlencode({"payload": payload})
        status, _ = http("POST", base, body, signed_headers(body))
        assert status == 400, payload
        status, _ = http("POST", base, body, {"content-type": "application/x-www-form-urlencoded"})
        assert status == 401, payload  # unsigned: refused before anything reads it


# -- no Slack request is handled without a verified signature or the socket ------------
def pending_request(server: Server) -> int:
    """A manual-mode request waiting for APPROVER, as the attacker would find it."""
    service = server.container.service
    register(service, approvers=(APPROVER,))
    submitted = service.submit(
        "crm",
        requester=PUBLISHER,
        role="Owner",
        duration=timedelta(hours=1),
        justification="x",
        now=datetime.now(UTC),
    )
    return submitted.id


def forged_approvals(fake: FakeSlack, request_id: int) -> list[tuple[str, dict[str, str]]]:
    """``/jit approve`` as APPROVER: unsigned, wrongly signed, stale, garbled timestamp."""
    body = urlencode(command_fields(fake, APPROVER, f"approve {request_id} looks fine", "f"))
    form = "application/x-www-form-urlencoded"
    stale = signed_headers(body, timestamp=int(time.time()) - 600)
    garbled = signed_headers(body) | {"x-slack-request-timestamp": "soon"}
    return [
        ("unsigned", {"content-type": form}),
        ("wrong secret", signed_headers(body, secret="guessed")),
        ("empty secret", signed_headers(body, secret="")),
        ("stale", stale),
        ("garbled timestamp", garbled),
    ]


def socket_settings(fake: FakeSlack, tmp_path: Path, **extra: Any) -> Settings:
    return Settings(
        _env_file=None,
        JITACCESS_DATABASE_URL=f"sqlite:///{tmp_path}/socket.db",
        JITACCESS_HOST="127.0.0.1",
        JITACCESS_PORT=0,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_APP_TOKEN="xapp-1-test",
        SLACK_API_URL=fake.base_url,
        JITACCESS_SWEEP_INTERVAL_SECONDS=60,
        **extra,
    )


def envelopes_bolt_cannot_read(fake: FakeSlack, request_id: int) -> list[tuple[str, Any]]:
    """Socket Mode envelopes (type, payload) that each try to approve ``request_id`` or
    open APPROVER's App Home, but lack what Bolt needs to read them."""
    approve = command_fields(fake, APPROVER, f"approve {request_id} ok", "bad")
    click = {
        "type": "block_actions",
        **USER_TEAM,
        "actions": [{"action_id": "approve", "value": str(request_id)}],
    }
    home = {"type": "app_home_opened", "user": APPROVER, "tab": "home"}
    return [
        ("slash_commands", {k: v for k, v in approve.items() if k != "command"}),
        ("slash_commands", {k: v for k, v in approve.items() if k != "user_id"}),
        ("slash_commands", approve | {"user_id": {"id": APPROVER}}),
        ("interactive", {k: v for k, v in click.items() if k != "type"}),
        ("interactive", {k: v for k, v in click.items() if k != "user"}),
        ("interactive", {k: v for k, v in click.items() if k != "team"}),
        ("interactive", click | {"actions": [{"value": str(request_id)}]}),
        ("interactive", {"type": "view_submission", **USER_TEAM, "view": {"id": "V1"}}),
        ("interactive", {"type": "view_closed", **USER_TEAM, "view": {"type": "modal"}}),
        ("events_api", {"type": "event_callback", "event_id": "Ev1"}),
        ("events_api", {"type": "event_callback", "event": home | {"user": 1}}),
        ("events_api", [home]),
        ("interactive", "approve it"),
    ]


def test_socket_mode_acks_malformed_envelopes_and_does_nothing(
    fake_slack: FakeSlack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A malformed envelope is acked (not retried), acts on nothing, logs one warning line."""
    server = Server(socket_settings(fake_slack, tmp_path))
    server.start()
    try:
        assert fake_slack.socket_connected(5)
        request_id = pending_request(server)
        bad = envelopes_bolt_cannot_read(fake_slack, request_id)
        caplog.clear()
        for n, (kind, payload) in enumerate(bad):
            ack = fake_slack.send_envelope(kind, payload, envelope_id=f"bad-{n}")
            assert ack == {"envelope_id": f"bad-{n}"}, (kind, payload)  # nothing said back
        assert server.container.service.get_request(request_id).state == "pending"
        assert fake_slack.responses.get("bad") is None
        assert fake_slack.calls_to("views.publish") == []
        warned = [r.getMessage() for r in caplog.records if r.name == "jitaccess.slack"]
        assert len(warned) == len(bad)
        assert all(m.startswith("acked and ignored a malformed Socket Mode") for m in warned)
        assert all("\n" not in m for m in warned)
        assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]
        assert "Traceback" not in caplog.text

        # The connection still serves what Slack really sends.
        fields = command_fields(fake_slack, APPROVER, f"approve {request_id} ok", "good")
        ack = fake_slack.send_envelope("slash_commands", fields)
        assert ack is not None and ack["envelope_id"]
        assert fake_slack.wait_for(lambda: bool(fake_slack.responses.get("good")), 10)
        assert server.container.service.get_request(request_id).decided_by == APPROVER
    finally:
        server.stop()


@pytest.mark.parametrize("secret", [None, SECRET], ids=["no secret", "with a secret"])
def test_socket_mode_does_not_serve_slack_events_over_http(
    fake_slack: FakeSlack, tmp_path: Path, secret: str | None
) -> None:
    """In Socket Mode an unsigned or signed POST /slack/events is 404 and approves nothing."""
    server = Server(socket_settings(fake_slack, tmp_path, SLACK_SIGNING_SECRET=secret))
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        request_id = pending_request(server)
        body = urlencode(command_fields(fake_slack, APPROVER, f"approve {request_id} ok", "f"))
        attempts = [*forged_approvals(fake_slack, request_id), ("signed", signed_headers(body))]
        for label, headers in attempts:
            status, answer = http("POST", f"{base}/slack/events", body, headers)
            assert status == 404, label
            assert "Socket Mode" in json.loads(answer)["error"], label
        assert server.container.service.get_request(request_id).state == "pending"
        assert fake_slack.responses.get("f") is None  # nothing answered the forged command
        assert http("GET", f"{base}/healthz")[0] == 200
        assert http("GET", f"{base}/readyz")[0] == 200
        assert http("GET", f"{base}/metrics")[0] == 200
    finally:
        server.stop()


def test_http_mode_refuses_unsigned_and_badly_signed_requests(
    server: Server, fake_slack: FakeSlack
) -> None:
    """Forged approvals get 401 and the request stays pending."""
    base = f"http://127.0.0.1:{server.port}"
    request_id = pending_request(server)
    for label, headers in forged_approvals(fake_slack, request_id):
        body = urlencode(command_fields(fake_slack, APPROVER, f"approve {request_id} ok", "f"))
        status, _ = http("POST", f"{base}/slack/events", body, headers)
        assert status == 401, label
    assert server.container.service.get_request(request_id).state == "pending"
    assert fake_slack.responses.get("f") is None


def test_http_mode_without_a_signing_secret_refuses_to_start(
    fake_slack: FakeSlack, tmp_path: Path
) -> None:
    """No SLACK_APP_TOKEN and an empty SLACK_SIGNING_SECRET: serve names the variable."""
    settings = Settings(
        _env_file=None,
        JITACCESS_DATABASE_URL=f"sqlite:///{tmp_path}/j.db",
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET="",
        SLACK_API_URL=fake_slack.base_url,
    )
    with pytest.raises(ConfigurationError) as refused:
        Server(settings)
    assert "SLACK_SIGNING_SECRET: from the Slack app's Basic Information page" in str(refused.value)


def test_the_bolt_app_cannot_be_served_over_http_without_a_secret(
    fake_slack: FakeSlack, db: Database
) -> None:
    """Building the Slack app for HTTP without a secret, or serving a Socket Mode one, fails."""
    service = make_service(db)[0]
    client = slack_client("xoxb-test", fake_slack.base_url)
    for secret in (None, ""):
        with pytest.raises(ValueError, match="SLACK_SIGNING_SECRET is not set"):
            build_slack(service, client, signing_secret=secret, clock=datetime.now)
    for secret in (None, SECRET):
        socket_only = build_slack(
            service, client, signing_secret=secret, clock=datetime.now, socket_mode=True
        )
        with pytest.raises(ValueError, match="SLACK_SIGNING_SECRET is not set"):
            socket_only.http_endpoint()
        # Even dispatched by hand over "HTTP", an unsigned or empty-key request fails.
        body = urlencode(command_fields(fake_slack, APPROVER, "help", "h"))
        for headers in ({}, signed_headers(body, secret="")):
            response = socket_only.app.dispatch(BoltRequest(body=body, headers=headers))
            assert response.status == 401


# -- a replayed signed request does nothing ----------------------------------------------
def test_a_replayed_slash_command_creates_one_request(
    server: Server, fake_slack: FakeSlack
) -> None:
    """The same signed `/jit request` posted twice files one request; the replay is told so."""
    register(server.container.service, approvers=(APPROVER,))
    fields = command_fields(fake_slack, PUBLISHER, "request crm Contributor 1h reason", "r")
    body = urlencode(fields)
    headers = signed_headers(body)
    url = f"http://127.0.0.1:{server.port}/slack/events"
    assert http("POST", url, body, headers)[0] == 200
    assert fake_slack.wait_for(lambda: bool(fake_slack.responses.get("r")), 10)
    status, answer = http("POST", url, body, headers)
    assert status == 200
    assert [r.id for r in server.container.service.list_requests()] == [1]
    assert json.loads(answer) == {"text": "This command was already handled."}
    assert len(fake_slack.responses["r"]) == 1


FORM, JSON_BODY = "application/x-www-form-urlencoded", "application/json"
USER_TEAM = {"user": {"id": APPROVER}, "team": {"id": "T0001"}}


def interaction(kind: str, **fields: Any) -> str:
    return urlencode({"payload": json.dumps({"type": kind, **USER_TEAM, **fields})})


#: Signed bodies Bolt cannot handle: it answered 500 to some, raised on others.
CRASHERS = [
    (FORM, urlencode({"payload": "{"})),
    (FORM, urlencode({"payload": "[1]"})),
    (FORM, interaction("block_actions", actions=[])),
    (FORM, interaction("block_actions", actions=[1])),
    (FORM, interaction("block_actions", actions=[{}])),
    (FORM, interaction("block_actions", channel=1)),
    (FORM, interaction("view_submission", view={})),
    (FORM, interaction("view_submission", response_urls=[1])),
    (JSON_BODY, "[]"),
    (JSON_BODY, "{"),
    (JSON_BODY, '{"type": "event_callback", "event": 1}'),
    (JSON_BODY, '{"type": "event_callback", "authorizations": 1}'),
    (JSON_BODY, '{"type": "event_callback", "event": {"type": "app_home_opened", "user": 1}}'),
    (JSON_BODY, '{"type": "event_callback", "enterprise": 1}'),
]


@pytest.mark.parametrize(("content_type", "body"), CRASHERS)
def test_signed_malformed_bodies_get_400_with_the_reason(
    server: Server, content_type: str, body: str
) -> None:
    """A correctly signed body Slack would never send gets a 400 saying what is wrong."""
    url = f"http://127.0.0.1:{server.port}/slack/events"
    status, answer = http("POST", url, body, signed_headers(body, content_type=content_type))
    assert status == 400, answer
    assert json.loads(answer)["error"]


def test_log_lines_follow_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Logging configured once keeps writing to stderr after stderr was swapped out."""
    import io
    import logging

    from jitaccess import logs

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure("INFO")
        replaced = io.StringIO()
        monkeypatch.setattr(sys, "stderr", replaced)
        logging.getLogger("jitaccess.test").info("after the swap")
        assert "after the swap" in replaced.getvalue()
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


def test_stopping_after_waitress_closed_its_own_loop_is_clean(server: Server) -> None:
    """A stop racing waitress's own shutdown (its trigger already closed) raises nothing:
    SIGTERM ends serve with exit 0, not a traceback."""
    http_server = server._http
    assert http_server is not None
    http_server.trigger.close()  # what waitress does once its loop has ended
    server.stop()
    assert server._http is None


def test_a_web_start_logs_no_bolt_warning_and_bolt_reads_no_environment(
    fake_slack: FakeSlack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The settings come from the environment, as in any deployment: Bolt used to read
    SLACK_BOT_TOKEN again on its own and warn "`token` will be unused" at every start
    (and SLACK_CLIENT_ID with SLACK_CLIENT_SECRET would turn on its OAuth flow)."""
    for name, value in {
        "JITACCESS_DATABASE_URL": f"sqlite:///{tmp_path}/env.db",
        "JITACCESS_HOST": "127.0.0.1",
        "JITACCESS_PORT": "0",
        "SLACK_BOT_TOKEN": "xoxb-from-env",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake_slack.base_url,
        "SLACK_CLIENT_ID": "123.456",
        "SLACK_CLIENT_SECRET": "client-secret",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    caplog.set_level("INFO")
    instance = Server(Settings(_env_file=None, JITACCESS_ROLE="web"))
    try:
        instance.start()
        assert instance.slack is not None
        assert instance.slack.app.oauth_flow is None  # the bot token, not OAuth installs
        assert instance.slack.app.client.token == "xoxb-from-env"
    finally:
        instance.stop()
    bolt = [r.getMessage() for r in caplog.records if r.name.startswith("slack_bolt")]
    assert not [m for m in bolt if "unused" in m or "ignored" in m], bolt
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []
    # The environment is as it was: only Bolt was kept from reading it.
    assert os.environ["SLACK_BOT_TOKEN"] == "xoxb-from-env"
    assert os.environ["SLACK_CLIENT_ID"] == "123.456"
