"""Confirmations confirm: what a decision changed (the end now in force, in the
operator's zone) and who is next; the history says when access really ended and why."""

from __future__ import annotations

from freezegun import freeze_time

from conftest import ADMIN, APPROVER, APPROVER2, PUBLISHER, START, Cli, flat

SCOPE = "/subscriptions/s1/resourceGroups/mrg-crm"


def register(cli: Cli, *policy: str) -> None:
    cli("apps", "register", "crm", "--scope", SCOPE, "--publisher", PUBLISHER,
        "--role", "Contributor", "--admin", ADMIN, "--mode", "manual",
        "--approver", APPROVER, "--approver", APPROVER2, *policy)  # fmt: skip


def submit(cli: Cli, duration: str = "1h") -> int:
    request = cli.json("requests", "submit", "crm", "--as", PUBLISHER, "--role", "Contributor",
                       "--duration", duration, "--reason", "deploy")  # fmt: skip
    return int(request["id"])


def test_approve_extension_says_who_is_next_then_the_new_end(cli: Cli) -> None:
    with freeze_time(START):  # 10:00 UTC; TZ=UTC (the cli fixture)
        register(cli, "--required-approvals", "2")
        rid = submit(cli)
        cli("requests", "approve", rid, "--as", APPROVER, "--reason", "ok")
        cli("requests", "approve", rid, "--as", APPROVER2, "--reason", "ok")
        cli("requests", "extend", rid, "--as", PUBLISHER, "--duration", "1h", "--reason", "more")

        first = flat(
            cli("requests", "approve-extension", rid, "--as", APPROVER, "--reason", "ok").stdout
        )
        assert "Approval recorded (1 of 2)" in first
        assert "the extension to 2026-11-27 12:00 +00:00 still needs 1 more" in first
        assert f"from one of: {APPROVER2}." in first
        assert "Access ends 2026-11-27 11:00 +00:00." in first  # not moved yet

        second = flat(
            cli("requests", "approve-extension", rid, "--as", APPROVER2, "--reason", "ok").stdout
        )
        assert "Extension approved: Access ends 2026-11-27 12:00 +00:00." in second
        assert "Nothing else is needed." in second
        assert cli.json("requests", "show", rid)["ends_at"] == "2026-11-27T12:00:00+00:00"


def test_deny_extension_says_the_end_stays(cli: Cli) -> None:
    with freeze_time(START):
        register(cli)
        rid = submit(cli)
        cli("requests", "approve", rid, "--as", APPROVER, "--reason", "ok")
        cli("requests", "extend", rid, "--as", PUBLISHER, "--duration", "1h", "--reason", "more")
        denied = flat(
            cli("requests", "deny-extension", rid, "--as", APPROVER, "--reason", "no").stdout
        )
        assert "Extension denied: Access ends 2026-11-27 11:00 +00:00." in denied


def test_review_says_the_review_is_done_and_when_access_ends(cli: Cli) -> None:
    with freeze_time(START):
        register(cli, "--breakglass", PUBLISHER)
        taken = cli.json("requests", "breakglass", "crm", "--as", PUBLISHER, "--role",
                         "Contributor", "--duration", "30m", "--incident", "INC-4711",
                         "--reason", "outage")  # fmt: skip
        reviewed = flat(
            cli("requests", "review", taken["id"], "--as", APPROVER, "--reason", "fine").stdout
        )
    assert f"Break-glass INC-4711 reviewed by {APPROVER} 2026-11-27 10:00 +00:00" in reviewed
    assert "the review is done" in reviewed
    assert "Access ends 2026-11-27 10:30 +00:00." in reviewed


def test_history_says_when_access_really_ended_and_why(cli: Cli) -> None:
    with freeze_time(START) as frozen:
        register(cli)
        expired = submit(cli, "1h")
        cli("requests", "approve", expired, "--as", APPROVER, "--reason", "ok")
        frozen.move_to("2026-11-27 11:00:00")
        cli("sweep")  # 1 expires at its scheduled end
        revoked = submit(cli, "2h")
        cli("requests", "approve", revoked, "--as", APPROVER, "--reason", "ok")
        frozen.move_to("2026-11-27 11:20:00")
        cli("requests", "revoke", revoked, "--as", ADMIN, "--reason", "done early")
        cli("sweep")
        released = submit(cli, "2h")
        cli("requests", "approve", released, "--as", APPROVER, "--reason", "ok")
        frozen.move_to("2026-11-27 11:40:00")
        cli("requests", "release", released, "--as", PUBLISHER)
        cli("sweep")
        denied = submit(cli, "2h")
        cli("requests", "deny", denied, "--as", APPROVER2, "--reason", "not now")
        history = cli("requests", "history", "crm").stdout

    def row(rid: int) -> str:
        return next(line for line in history.splitlines() if f" {rid} " in line)

    assert "2026-11-27 11:00 +00:00 expired at the end of its window" in row(expired)
    # Revoked at 11:20, though scheduled to end at 13:00: both are shown.
    assert "2026-11-27 13:00 +00:00" in row(revoked)
    assert f"2026-11-27 11:20 +00:00 revoked by {ADMIN}: done early" in row(revoked)
    assert f"2026-11-27 11:40 +00:00 released by {PUBLISHER}" in row(released)
    assert f"denied by {APPROVER2}: not now" in row(denied)
    shown = flat(cli("requests", "show", revoked).stdout)
    assert f"Ended 2026-11-27 11:20 +00:00 revoked by {ADMIN}: done early" in shown
