"""The audit log's hash chain: each entry's hash covers the previous entry's hash
and the entry's own canonical content, so editing, deleting or reordering any
entry breaks every hash after it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: datetime
    actor: str
    action: str
    app: str | None
    request_id: int | None
    from_state: str | None
    to_state: str | None
    reason: str | None
    details: dict[str, Any]

    def canonical(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": self.actor,
            "action": self.action,
            "app": self.app,
            "request_id": self.request_id,
            "from": self.from_state,
            "to": self.to_state,
            "reason": self.reason,
            "details": self.details,
        }


def chain_hash(prev_hash: str, entry: AuditEntry) -> str:
    body = json.dumps(entry.canonical(), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


@dataclass(frozen=True)
class StoredEntry:
    entry: AuditEntry
    prev_hash: str
    hash: str


def verify_chain(rows: list[StoredEntry], head_seq: int | None, head_hash: str | None) -> list[str]:
    """Return one line per problem found (empty when the log is intact)."""
    problems: list[str] = []
    expected_prev = GENESIS
    expected_seq = 1
    for row in rows:
        seq = row.entry.seq
        if seq != expected_seq:
            if seq > expected_seq:
                missing = (
                    f"{expected_seq}" if seq == expected_seq + 1 else (f"{expected_seq}..{seq - 1}")
                )
                problems.append(f"entry {missing} missing: deleted")
            else:
                problems.append(f"entry {seq}: out of order (expected {expected_seq})")
        if row.prev_hash != expected_prev:
            problems.append(
                f"entry {seq}: does not follow the entry before it (deleted or reordered)"
            )
        if chain_hash(row.prev_hash, row.entry) != row.hash:
            problems.append(f"entry {seq}: content does not match its hash (edited)")
        expected_prev = row.hash
        expected_seq = seq + 1
    last_seq = rows[-1].entry.seq if rows else 0
    if (head_seq or 0) != last_seq or (rows and head_hash != rows[-1].hash):
        problems.append(
            f"the log ends at entry {last_seq} but its head says {head_seq or 0}: "
            "entries at the end were deleted or rewritten"
        )
    return problems
