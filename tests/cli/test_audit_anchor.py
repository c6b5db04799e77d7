"""The audit log anchored outside the database: `audit verify --expect SEQ:HASH`, the
head logged by the scheduler, and requests whose entries were wiped with the head."""

from __future__ import annotations

import json
import logging
import re

import pytest
from freezegun import freeze_time

from conftest import ADMIN, APPROVER, START, Cli, flat, make_service, register
from jitaccess.app.outbox import LoggingNotifier, OutboxRelay
from jitaccess.scheduler import DeadlineScheduler
from jitaccess.store.db import Database
from test_audit_cli import make_history, tamper

HEAD = re.compile(r"Head: (\d+):([0-9a-f]{64})")


def head_of(cli: Cli) -> str:
    """The SEQ:HASH `audit verify` prints for people to copy."""
    match = HEAD.search(cli("audit", "verify").stdout)
    assert match, "audit verify printed no head"
    return f"{match.group(1)}:{match.group(2)}"


def change_policy(cli: Cli, timeout: str) -> None:
    with freeze_time("2026-11-28 09:00:00"):
        cli("apps", "policy", "crm", "--as", ADMIN, "--approval-timeout", timeout)


def test_verify_prints_the_head_and_accepts_it_back(cli: Cli) -> None:
    """The head verify prints (SEQ:HASH) is accepted by --expect on the same log."""
    make_history(cli)
    head = head_of(cli)
    assert head.startswith("6:")
    result = cli("audit", "verify", "--expect", head, "--expect", head.upper())
    assert "Audit log intact: 6 entries" in result.stdout
    assert "contains" in result.stdout


def test_wiping_log_and_head_with_requests_present_fails_naming_them(cli: Cli) -> None:
    """A log wiped together with its head row fails, naming the requests it lost."""
    make_history(cli)
    tamper(cli.db_path, "DELETE FROM audit_events", "DELETE FROM audit_head")
    result = cli("audit", "verify", code=1)
    message = flat(result.stderr)
    assert "Audit log tampered with (0 entries read)" in message
    assert "request 1 (expired) has no submit entry" in message
    assert "application crm has no app_registered entry" in message
    assert "intact" not in result.stdout


def test_deleting_a_requests_last_transitions_with_the_head_is_named(cli: Cli) -> None:
    """Cutting a request's expiry off the log (head moved back too) names that request."""
    make_history(cli)
    tamper(
        cli.db_path,
        "DELETE FROM audit_events WHERE seq > 4",
        "UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit_events WHERE seq = 4)",
    )
    message = flat(cli("audit", "verify", code=1).stderr)
    assert "request 1 is expired but no entry records its move to expired" in message


def test_expect_fails_when_chain_and_head_were_truncated_consistently(cli: Cli) -> None:
    """A truncated log with a matching head row passes alone but fails --expect."""
    make_history(cli)
    change_policy(cli, "4h")
    recorded = head_of(cli)  # what the audit_head log line shipped off-box said
    assert recorded.startswith("7:")
    tamper(
        cli.db_path,
        "DELETE FROM audit_events WHERE seq = 7",
        "UPDATE audit_head SET seq = 6, hash = (SELECT hash FROM audit_events WHERE seq = 6)",
    )
    cli("audit", "verify")  # consistent inside the database: only the anchor can tell
    result = cli("audit", "verify", "--expect", recorded, code=1)
    message = flat(result.stderr)
    assert f"expected entry {recorded} is missing: the log ends at entry 6" in message
    assert "truncated or wiped" in message
    assert "Head now: 6:" in message

    change_policy(cli, "2h")  # the log grows again past the cut: entry 7 is a new one
    message = flat(cli("audit", "verify", "--expect", recorded, code=1).stderr)
    assert f"expected entry {recorded} but entry 7 has hash" in message


@pytest.mark.parametrize("value", ["7", "7:abc", "x:" + "0" * 64, "-1:" + "0" * 64])
def test_expect_that_is_not_a_head_is_a_usage_error(cli: Cli, value: str) -> None:
    """--expect with something that is not SEQ:HASH is refused with the form it needs."""
    result = cli("audit", "verify", "--expect", value, code=2)
    assert "is not SEQ:HASH" in flat(result.stderr)


def test_scheduler_logs_the_head_as_one_json_line(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The scheduler's audit-head job logs {"event": "audit_head", "seq", "hash"} as JSON."""
    from jitaccess.app.audit_log import verify

    service, _ = make_service(db)
    scheduler = DeadlineScheduler(
        service,
        OutboxRelay(db, LoggingNotifier()),
        sweep_interval=5,
        relay_interval=1,
    )
    with freeze_time(START):
        register(service, approvers=(APPROVER,))
        caplog.set_level(logging.INFO, logger="jitaccess.audit")
        scheduler.log_audit_head()
    [record] = [r for r in caplog.records if r.name == "jitaccess.audit"]
    line = json.loads(record.getMessage())
    result = verify(db)
    assert line == {
        "event": "audit_head",
        "seq": result.head_seq,
        "hash": result.head_hash,
        "at": "2026-11-27T10:00:00+00:00",
    }
    assert line["seq"] == 1 and result.problems == []
