"""Times as an operator reads them: in their own zone with its offset (from ``TZ`` or
the system), in UTC with ``--utc``, and ISO 8601 with the offset in ``--json``.

Request 1 starts 2026-11-27 12:00 UTC and ends 14:00 UTC: 13:00 and 15:00 in Paris
(+01:00, winter), 07:00 and 09:00 in New York (-05:00)."""

from __future__ import annotations

import pytest
from freezegun import freeze_time

from conftest import ADMIN, APPROVER, APPROVER2, PUBLISHER, START, Cli, flat

SCOPE = "/subscriptions/s1/resourceGroups/mrg-crm"


def make_request(cli: Cli) -> None:
    cli("apps", "register", "crm", "--scope", SCOPE, "--publisher", PUBLISHER,
        "--role", "Contributor", "--admin", ADMIN, "--mode", "manual",
        "--approver", APPROVER, "--approver", APPROVER2)  # fmt: skip


SUBMIT = ("requests", "submit", "crm", "--as", PUBLISHER, "--role", "Contributor",
          "--duration", "2h", "--start", "2026-11-27T12:00Z", "--reason", "deploy")  # fmt: skip


@pytest.mark.parametrize(
    ("zone", "start", "end"),
    [
        ("Europe/Paris", "2026-11-27 13:00 +01:00", "2026-11-27 15:00 +01:00"),
        ("America/New_York", "2026-11-27 07:00 -05:00", "2026-11-27 09:00 -05:00"),
        ("Asia/Kolkata", "2026-11-27 17:30 +05:30", "2026-11-27 19:30 +05:30"),
    ],
)
def test_every_request_view_prints_times_in_the_local_zone_with_its_offset(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, zone: str, start: str, end: str
) -> None:
    monkeypatch.setenv("TZ", zone)
    with freeze_time(START):
        make_request(cli)
        submitted = cli(*SUBMIT).stdout
        assert f"from {start} to {end}" in submitted
        shown = flat(cli("requests", "show", "1").stdout)
        assert f"{start} → {end} (2h)" in shown
        for listing in (cli("requests", "list").stdout, cli("requests", "history", "crm").stdout):
            row = next(line for line in listing.splitlines() if " 1 " in line)
            assert start in row and end in row
        assert "UTC" not in submitted + shown


def test_utc_prints_utc_and_json_keeps_iso_8601_with_the_offset(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Europe/Paris")
    with freeze_time(START):
        make_request(cli)
        submitted = cli(*SUBMIT, "--utc").stdout
        assert "from 2026-11-27 12:00 UTC to 2026-11-27 14:00 UTC" in submitted
        assert "12:00 UTC" in flat(cli("requests", "show", "1", "--utc").stdout)
        row = next(
            line for line in cli("requests", "list", "--utc").stdout.splitlines() if " 1 " in line
        )
        assert "2026-11-27 12:00 UTC" in row and "+01:00" not in row
        # --utc lasts one command: the next one is local again.
        assert "13:00 +01:00" in flat(cli("requests", "show", "1").stdout)
        shown = cli.json("requests", "show", "1")
        assert shown["starts_at"] == "2026-11-27T12:00:00+00:00"
        assert shown["ends_at"] == "2026-11-27T14:00:00+00:00"


def test_a_posix_tz_string_is_read_too(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "EST+5")
    try:
        with freeze_time(START):
            make_request(cli)
            assert "from 2026-11-27 07:00 -05:00" in cli(*SUBMIT).stdout
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_refusal_names_its_time_in_the_local_zone_too(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overlap refusal names when the first request ends: in Paris, 15:00 +01:00."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    with freeze_time(START):
        make_request(cli)
        cli(*SUBMIT)
        refused = cli(*SUBMIT, code=1)
    said = flat(refused.stdout + refused.stderr)
    assert "already gives you this role here until 2026-11-27 15:00 +01:00" in said, said
    assert "UTC" not in said


def test_submit_says_the_state_in_words(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    with freeze_time(START):
        make_request(cli)
        submitted = flat(cli(*SUBMIT).stdout)
    assert "Request 1 is waiting for approval:" in submitted, submitted
    assert "pending" not in submitted
