"""``serve --role web|worker``: the threads that answer Slack only record intents; the
worker does everything after the ack (backend calls, the relay, card updates).

The two-process test runs a real ``serve --role web`` and a real ``serve --role
worker`` on one PostgreSQL database, each with its own bot token, so the fake Slack's
call log says which process made each call, and each with its own log file, so the
provider's GRANT/REVOKE lines say which process called the backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from conftest import APPROVER, PUBLISHER
from jitaccess.roles import Role
from jitaccess.server import ConfigurationError, Server
from jitaccess.settings import Settings
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import (
    SECRET,
    button_click,
    command_fields,
    free_port,
    http,
    post_signed,
    reason_submission,
    serving,
    texts,
    wait_until,
)

WEB_TOKEN = "xoxb-web"
WORKER_TOKEN = "xoxb-worker"
CLI = [sys.executable, "-m", "jitaccess.cli"]


# -- one process per role, in-process (SQLite) ---------------------------------------
def role_settings(fake_slack: FakeSlack, tmp_path: Path, role: Role, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "JITACCESS_DATABASE_URL": f"sqlite:///{tmp_path}/{role}.db",
        "JITACCESS_HOST": "127.0.0.1",
        "JITACCESS_PORT": 0,
        "JITACCESS_ROLE": role,
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake_slack.base_url,
        "JITACCESS_SWEEP_INTERVAL_SECONDS": 60,
    }
    return Settings(_env_file=None, **(values | extra))  # type: ignore[call-arg]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "JITACCESS_ROLE"):
        monkeypatch.delenv(name, raising=False)


def test_each_role_needs_its_own_slack_settings(clean_env: None) -> None:
    bare = Settings(_env_file=None)  # type: ignore[call-arg]
    assert bare.role is Role.ALL
    assert [m.split(":")[0] for m in bare.missing_slack_settings()] == [
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
    ]
    bot_only = Settings(_env_file=None, SLACK_BOT_TOKEN="xoxb-1")  # type: ignore[call-arg]
    # The worker delivers with the bot token and answers nobody: no secret, no socket.
    assert bot_only.missing_slack_settings(Role.WORKER) == []
    assert [m.split(":")[0] for m in bot_only.missing_slack_settings(Role.WEB)] == [
        "SLACK_SIGNING_SECRET"
    ]
    # The web opens modals and reads users with the bot token.
    assert [m.split(":")[0] for m in bare.missing_slack_settings(Role.WEB)] == [
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
    ]
    assert [m.split(":")[0] for m in bare.missing_slack_settings(Role.WORKER)] == [
        "SLACK_BOT_TOKEN"
    ]


def test_a_worker_starts_without_a_signing_secret_and_refuses_slack(
    fake_slack: FakeSlack, tmp_path: Path
) -> None:
    settings = role_settings(
        fake_slack, tmp_path, Role.WORKER, SLACK_SIGNING_SECRET=None, SLACK_APP_TOKEN="xapp-1-x"
    )
    server = Server(settings)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert http("GET", f"{base}/healthz")[0] == 200
        status, body = http("GET", f"{base}/readyz")
        assert status == 200
        assert json.loads(body) == {
            "status": "ready",
            "role": "worker",
            "checks": {"database": "ok", "scheduler": "running", "slack": "ok"},
        }
        assert http("GET", f"{base}/metrics")[0] == 200
        status, body = post_signed(base, command_fields(fake_slack, PUBLISHER, "help", "w1"))
        assert status == 404 and "--role worker" in json.loads(body)["error"]
        assert server.slack is None
        # An app-level token in the shared Secret opens no socket on a worker.
        assert fake_slack.calls_to("apps.connections.open") == []
    finally:
        server.stop()


def test_a_web_process_answers_slack_and_schedules_nothing(
    fake_slack: FakeSlack, tmp_path: Path
) -> None:
    server = Server(role_settings(fake_slack, tmp_path, Role.WEB))
    server.start()
    try:
        assert server.scheduler is None
        assert server.container.service.on_deadline is None  # a click wakes nothing
        assert server.container.service.inline is False  # and calls no backend
        base = f"http://127.0.0.1:{server.port}"
        status, body = http("GET", f"{base}/readyz")
        assert status == 200
        assert json.loads(body) == {
            "status": "ready",
            "role": "web",
            "checks": {"database": "ok", "slack": "http"},
        }
        assert http("GET", f"{base}/metrics")[0] == 200
        assert post_signed(base, command_fields(fake_slack, PUBLISHER, "help", "h1"))[0] == 200
        assert fake_slack.wait_for(lambda: bool(fake_slack.responses.get("h1")))
        forged = post_signed(
            base, command_fields(fake_slack, PUBLISHER, "help", "h2"), secret="wrong"
        )
        assert forged[0] == 401
    finally:
        server.stop()


def test_a_web_process_without_a_bot_token_refuses_to_start(
    fake_slack: FakeSlack, tmp_path: Path
) -> None:
    settings = role_settings(fake_slack, tmp_path, Role.WEB, SLACK_BOT_TOKEN=None)
    with pytest.raises(ConfigurationError, match="(?s)--role web cannot start.*SLACK_BOT_TOKEN"):
        Server(settings)


def test_serve_role_flag_is_checked(clean_env: None, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "JITACCESS_"))}
    env["JITACCESS_DATABASE_URL"] = f"sqlite:///{tmp_path}/j.db"
    bad = subprocess.run(
        [*CLI, "serve", "--role", "both"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "both" in bad.stderr
    worker = subprocess.run(
        [*CLI, "serve", "--role", "worker"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert worker.returncode == 1
    assert "--role worker cannot start" in worker.stderr
    assert "SLACK_BOT_TOKEN" in worker.stderr and "SLACK_SIGNING_SECRET" not in worker.stderr
    sandbox = subprocess.run(
        [*CLI, "serve", "--sandbox", "--role", "web"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert sandbox.returncode == 2 and "--sandbox is one process" in sandbox.stderr


# -- two processes on one PostgreSQL -------------------------------------------------
class Proc:
    """One ``jitaccess serve --role ROLE`` subprocess with its own log file."""

    def __init__(self, role: str, env: dict[str, str], cwd: Path) -> None:
        self.role = role
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = cwd / f"{role}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--role", role],
            env={**env, "JITACCESS_PORT": str(self.port)},
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        assert wait_until(lambda: serving(self.base), 30), self.log()

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout=20)
        self._log.close()
        return code


@pytest.mark.postgres
def test_web_records_and_the_worker_does_the_rest(
    pg_url: str, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "JITACCESS_"))}
    env |= {
        "JITACCESS_DATABASE_URL": pg_url,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake_slack.base_url,
        "JITACCESS_HOST": "127.0.0.1",
        "JITACCESS_SWEEP_INTERVAL_SECONDS": "0.5",
        "JITACCESS_RELAY_INTERVAL_SECONDS": "0.2",
        "JITACCESS_REMIND_BEFORE_MINUTES": "0",
    }
    for name, mode in (("crm", ["--mode", "manual", "--approver", APPROVER]), ("erp", [])):
        # Two resource groups: one person's requests for a role on one may not overlap.
        scope = f"/subscriptions/s/resourceGroups/mrg-{name}"
        subprocess.run(
            [*CLI, "apps", "register", name, "--scope", scope, "--publisher", PUBLISHER, *mode],
            env=env,
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )
    db = Database(pg_url)
    procs: list[Proc] = []

    def state(rid: int) -> str:
        with db.transaction(readonly=True) as session:
            return str(session.execute(select(AccessRequest.state).filter_by(id=rid)).scalar())

    def logs() -> str:
        return "\n".join(f"--- {p.role}\n{p.log()[-3000:]}" for p in procs)

    try:
        web = Proc("web", env | {"SLACK_BOT_TOKEN": WEB_TOKEN}, tmp_path)
        procs.append(web)
        status, body = http("GET", f"{web.base}/readyz")
        assert status == 200 and json.loads(body)["role"] == "web"
        manual = "request crm Contributor 1m patch db"
        assert post_signed(web.base, command_fields(fake_slack, PUBLISHER, manual, "r1"))[0] == 200
        # Bolt handles a command after its ack: wait, so the manual request is number 1.
        assert fake_slack.wait_for(lambda: len(fake_slack.responses.get("r1", [])) > 0, 10)
        automatic = "request erp Contributor 1m deploy"
        assert (
            post_signed(web.base, command_fields(fake_slack, PUBLISHER, automatic, "r2"))[0] == 200
        )
        assert fake_slack.wait_for(lambda: len(fake_slack.responses.get("r2", [])) > 0, 10)
        assert "submitted" in fake_slack.responses["r1"][0]["text"]
        # Request 2 was approved automatically to start now: it is due. With only the web
        # running, nothing sweeps it and nothing is delivered (watched for four of the
        # sweep intervals the web would use if it swept).
        assert (state(1), state(2)) == ("pending", "auto_approved")
        assert not wait_until(
            lambda: state(2) != "auto_approved" or bool(fake_slack.calls_to("chat.postMessage")),
            2.0,
        )

        worker = Proc("worker", env | {"SLACK_BOT_TOKEN": WORKER_TOKEN}, tmp_path)
        procs.append(worker)
        status, body = http("GET", f"{worker.base}/readyz")
        assert status == 200 and json.loads(body)["role"] == "worker"
        status, body = post_signed(
            worker.base, command_fields(fake_slack, PUBLISHER, "request erp Owner 1m x", "r3")
        )
        assert status == 404 and "--role worker" in json.loads(body)["error"]
        assert "r3" not in fake_slack.responses

        # The worker grants what the web recorded, and delivers the cards.
        assert wait_until(lambda: state(2) == "active", 15), logs()
        assert fake_slack.wait_for(
            lambda: any("Access request #1" in texts(m) for m in fake_slack.dms_to(APPROVER)), 15
        ), logs()
        card = next(m for m in fake_slack.dms_to(APPROVER) if "Access request #1" in texts(m))
        click = button_click(fake_slack, APPROVER, card, "jit_approve")
        assert post_signed(web.base, {"payload": json.dumps(click)})[0] == 200
        assert fake_slack.wait_for(lambda: bool(fake_slack.opened_views(APPROVER)), 10)
        modal = fake_slack.opened_views(APPROVER)[-1]
        submission = reason_submission(APPROVER, modal, "CHG-1")
        assert post_signed(web.base, {"payload": json.dumps(submission)})[0] == 200
        # The web records the decision right after its ack (listeners ack first).
        assert wait_until(lambda: state(1) in {"approved", "active"}, 10), logs()

        def active_card() -> dict[str, Any] | None:
            """Pat's one card for the request, once the activation step is in its thread
            (the card's buttons are the ones it offers now)."""
            told = any(
                m["text"] == "Your access for request #1 is active."
                for m in fake_slack.dms_to(PUBLISHER)
            )
            cards = [m for m in fake_slack.cards_to(PUBLISHER) if "#1" in m["text"]]
            if not told or len(cards) != 1 or "jit_release" not in json.dumps(cards[0]):
                return None
            return cards[0]

        assert fake_slack.wait_for(lambda: active_card() is not None, 15), logs()
        card = active_card()
        assert card is not None and state(1) == "active"
        # The shortest window is a minute: the requester ends it early ("I'm done").
        done = button_click(fake_slack, PUBLISHER, card, "jit_release")
        assert post_signed(web.base, {"payload": json.dumps(done)})[0] == 200
        assert fake_slack.wait_for(
            lambda: any(
                m["text"].startswith("Your access for request #1 was revoked")
                for m in fake_slack.dms_to(PUBLISHER)
            ),
            15,
        ), logs()

        def approver_card_final() -> bool:
            card = next(m for m in fake_slack.dms_to(APPROVER) if "Access request #1" in texts(m))
            return "Revoked" in texts(card) and "jit_approve" not in texts(card)

        assert fake_slack.wait_for(approver_card_final, 10), logs()
        assert state(1) == "revoked"
    finally:
        codes = [p.stop() for p in procs]
        db.dispose()
    assert codes == [0, 0], logs()

    # Who called Slack: the web only answered people (modals, users); every message
    # posted or edited came from the worker.
    by_web = {c.method for c in fake_slack.calls if c.token == WEB_TOKEN}
    by_worker = {c.method for c in fake_slack.calls if c.token == WORKER_TOKEN}
    assert "views.open" in by_web
    assert not {m for m in by_web if m.startswith(("chat.", "conversations."))}, by_web
    assert {"chat.postMessage", "chat.update"} <= by_worker
    assert {c.token for c in fake_slack.calls} <= {WEB_TOKEN, WORKER_TOKEN}
    # Who called the backend (the log provider logs each call in its process's log).
    web_log, worker_log = procs[0].log(), procs[1].log()
    for line in (f"GRANT Contributor to {PUBLISHER}", "(request 1, until", "REVOKE Contributor"):
        assert line in worker_log
    for word in ("GRANT", "REVOKE", "sweep:"):
        assert word not in web_log
    assert "--role web" in web_log and "--role worker" in worker_log
