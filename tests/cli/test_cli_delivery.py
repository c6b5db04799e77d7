"""`jitaccess sweep` and Slack: the CLI delivers notifications to Slack when Slack is
configured, and otherwise leaves them queued for `serve`. A message is never marked
delivered unless Slack accepted it. `serve` runs against the fake Slack over real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import APPROVER, PUBLISHER, Cli
from jitaccess.server import Server
from jitaccess.settings import Settings
from jitaccess.store.db import Database
from jitaccess.store.models import OutboxMessage
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SECRET, find_button, free_port, serving, texts, wait_until

SLACK_VARS = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "SLACK_API_URL")


def _register_and_submit(cli: Cli) -> int:
    cli(
        "apps",
        "register",
        "crm",
        "--scope",
        "/subscriptions/s1/resourceGroups/mrg-crm",
        "--publisher",
        PUBLISHER,
        "--mode",
        "manual",
        "--approver",
        APPROVER,
    )
    submitted = cli.json(
        "requests",
        "submit",
        "crm",
        "--as",
        PUBLISHER,
        "--role",
        "Contributor",
        "--duration",
        "2h",
        "--reason",
        "patch the database",
    )
    assert submitted["state"] == "pending"
    return int(submitted["id"])


def _outbox(db_path: Path) -> list[tuple[str, str, bool]]:
    db = Database(f"sqlite:///{db_path}")
    try:
        with db.transaction(readonly=True) as session:
            rows = session.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars()
            return [(r.kind, str(r.recipient), r.delivered_at is not None) for r in rows]
    finally:
        db.dispose()


def _approver_card(fake: FakeSlack, request_id: int) -> dict[str, object] | None:
    for message in fake.dms_to(APPROVER):
        if f"Access request #{request_id}" in texts(message):
            return message
    return None


@pytest.fixture
def serve_process(fake_slack: FakeSlack, cli: Cli, tmp_path: Path) -> Iterator[str]:
    """`jitaccess serve` in its own process on the CLI's database, relaying only hourly,
    so any delivery seen right after the CLI's sweep was made by the CLI."""
    port = free_port()
    env = {
        **os.environ,
        "JITACCESS_DATABASE_URL": f"sqlite:///{cli.db_path}",
        "SLACK_BOT_TOKEN": "xoxb-serve",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake_slack.base_url,
        "JITACCESS_PORT": str(port),
        "JITACCESS_HOST": "127.0.0.1",
        "JITACCESS_SWEEP_INTERVAL_SECONDS": "3600",
        "JITACCESS_RELAY_INTERVAL_SECONDS": "3600",
    }
    env.pop("SLACK_APP_TOKEN", None)
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jitaccess.cli", "serve"],
            env=env,
            cwd=tmp_path,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            assert wait_until(lambda: serving(base), 20), log_path.read_text()
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_cli_sweep_with_slack_settings_delivers_the_approver_card_while_serve_runs(
    cli: Cli, fake_slack: FakeSlack, serve_process: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request submitted and swept from the CLI while serve runs reaches the approver as a DM card."""
    for name in SLACK_VARS:
        monkeypatch.delenv(name, raising=False)
    request_id = _register_and_submit(cli)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-cli")
    monkeypatch.setenv("SLACK_API_URL", fake_slack.base_url)
    swept = cli("sweep").stdout
    card = _approver_card(fake_slack, request_id)
    assert card is not None, (swept, fake_slack.dms_to(APPROVER))
    assert find_button(card["blocks"], "jit_approve")  # type: ignore[arg-type]
    assert "patch the database" in texts(card)
    assert "notifications delivered to Slack" in swept
    assert any("sent to the approvers" in m["text"] for m in fake_slack.dms_to(PUBLISHER))
    assert all(delivered for _, _, delivered in _outbox(cli.db_path))


def test_cli_sweep_without_slack_settings_leaves_the_outbox_for_serve(
    cli: Cli, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without Slack settings the CLI's sweep marks nothing delivered and says serve will deliver."""
    for name in SLACK_VARS:
        monkeypatch.delenv(name, raising=False)
    request_id = _register_and_submit(cli)
    before = _outbox(cli.db_path)
    assert before and not any(delivered for _, _, delivered in before)
    swept = cli("sweep").stdout
    assert f"{len(before)} notifications left for serve to deliver" in swept
    assert _outbox(cli.db_path) == before
    # serve, started afterwards with Slack settings, delivers what the CLI left.
    server = Server(
        Settings(
            JITACCESS_DATABASE_URL=f"sqlite:///{cli.db_path}",
            JITACCESS_HOST="127.0.0.1",
            JITACCESS_PORT=0,
            SLACK_BOT_TOKEN="xoxb-serve",
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=fake_slack.base_url,
            JITACCESS_SWEEP_INTERVAL_SECONDS=3600,
            JITACCESS_RELAY_INTERVAL_SECONDS=0.2,
        )
    )
    server.start()
    try:
        assert fake_slack.wait_for(lambda: _approver_card(fake_slack, request_id) is not None, 10)
    finally:
        server.stop()
