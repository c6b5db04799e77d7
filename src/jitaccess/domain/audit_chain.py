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


#: How many requests or applications a problem list names before summing up the rest.
NAMED_MAX = 20


def check_anchors(rows: list[StoredEntry], anchors: list[tuple[int, str]]) -> list[str]:
    """Heads recorded outside the database (``SEQ:HASH``) that the chain must still hold.

    A log wiped or truncated together with its head row is internally consistent;
    only a head kept elsewhere shows that entries the log once had are gone."""
    by_seq = {row.entry.seq: row.hash for row in rows}
    last_seq = rows[-1].entry.seq if rows else 0
    problems: list[str] = []
    for seq, expected in anchors:
        found = GENESIS if seq == 0 else by_seq.get(seq)
        if found is None:
            problems.append(
                f"expected entry {seq}:{expected} is missing: the log ends at entry {last_seq}, "
                "so it was truncated or wiped after that head was recorded"
            )
        elif found != expected:
            problems.append(
                f"expected entry {seq}:{expected} but entry {seq} has hash {found}: "
                "the log was rewritten from there (or the expected head is not this log's)"
            )
    return problems


def check_coverage(
    rows: list[StoredEntry],
    requests: list[tuple[int, str]],
    apps: list[str],
) -> list[str]:
    """Every request must keep its ``submit`` entry and the transition to its current
    state; every application its ``app_registered`` entry. Deleting history together
    with the head row leaves a consistent chain, but not these."""
    submitted: set[int] = set()
    reached: set[tuple[int, str]] = set()
    registered: set[str] = set()
    for row in rows:
        entry = row.entry
        if entry.action == "app_registered" and entry.app is not None:
            registered.add(entry.app)
        if entry.request_id is None:
            continue
        if entry.action == "submit":
            submitted.add(entry.request_id)
        if entry.to_state is not None and entry.from_state != entry.to_state:
            reached.add((entry.request_id, entry.to_state))
    lost: list[str] = []
    for request_id, state in requests:
        if request_id not in submitted:
            lost.append(
                f"request {request_id} ({state}) has no submit entry: its history was deleted"
            )
        elif (request_id, state) not in reached:
            lost.append(
                f"request {request_id} is {state} but no entry records its move to {state}: deleted"
            )
    problems = lost[:NAMED_MAX]
    if len(lost) > NAMED_MAX:
        problems.append(f"… and {len(lost) - NAMED_MAX} more requests whose entries are missing")
    unregistered = [name for name in apps if name not in registered]
    for name in unregistered[:NAMED_MAX]:
        problems.append(f"application {name} has no app_registered entry: its history was deleted")
    if len(unregistered) > NAMED_MAX:
        problems.append(f"… and {len(unregistered) - NAMED_MAX} more applications like it")
    return problems
