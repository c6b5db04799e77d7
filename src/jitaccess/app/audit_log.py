"""Verifying and exporting the audit log (the read side of ``store.audit``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jitaccess.domain.audit_chain import GENESIS, check_anchors, check_coverage, verify_chain
from jitaccess.store import audit
from jitaccess.store.db import Database
from jitaccess.store.models import AuditHead
from jitaccess.store.rows import Rows

#: The logger the head is written to, to be shipped off the box (see ``log_head``).
head_log = logging.getLogger("jitaccess.audit")


@dataclass(frozen=True)
class VerifyResult:
    entries: int
    head_hash: str
    problems: list[str]
    head_seq: int = 0
    anchors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def head(self) -> str:
        """The head as ``SEQ:HASH``, what ``audit verify --expect`` takes."""
        return f"{self.head_seq}:{self.head_hash}"


def verify(db: Database, expect: Sequence[tuple[int, str]] = ()) -> VerifyResult:
    """Check the chain, the heads recorded elsewhere (``expect``), and that every
    request and application still has its entries."""
    with db.transaction(readonly=True) as session:
        stored = [audit.to_stored(row) for row in audit.iter_entries(session)]
        head = session.get(AuditHead, 1)
        problems = verify_chain(stored, head.seq if head else None, head.hash if head else None)
        problems += check_anchors(stored, list(expect))
        requests = Rows.request_states(session)
        apps = Rows.app_names(session)
        problems += check_coverage(stored, requests, apps)
        return VerifyResult(
            len(stored),
            head.hash if head else GENESIS,
            problems,
            head_seq=head.seq if head else 0,
            anchors=list(expect),
        )


def current_head(db: Database) -> tuple[int, str]:
    with db.transaction(readonly=True) as session:
        head = session.get(AuditHead, 1)
        return (head.seq, head.hash) if head else (0, GENESIS)


def log_head(db: Database, now: datetime) -> None:
    """Write the head as one JSON log line, for operators to keep off this box and
    later check with ``audit verify --expect SEQ:HASH``."""
    seq, digest = current_head(db)
    line = {"event": "audit_head", "seq": seq, "hash": digest, "at": now.isoformat()}
    head_log.info(json.dumps(line), extra=line)


def export_rows(db: Database) -> Iterator[dict[str, Any]]:
    with db.transaction(readonly=True) as session:
        for row in audit.iter_entries(session):
            stored = audit.to_stored(row)
            yield {**stored.entry.canonical(), "prev_hash": stored.prev_hash, "hash": stored.hash}


#: A spreadsheet reads a cell starting with one of these as a formula (or, tab and
#: carriage return, as the lead-in to one): OWASP's "CSV Injection" list.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """``value`` made inert for a spreadsheet, the way OWASP recommends: a cell that
    starts with a formula trigger gets a single quote in front, so Excel, LibreOffice
    and Google Sheets show it as text instead of evaluating it. (The writer also quotes
    every cell and doubles the quotes inside, OWASP's other two rules.)"""
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value
