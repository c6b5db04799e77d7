"""Measurement-only variants of the service, applied by monkeypatching in the benchmark
process (src/ is never edited): ablations that switch one piece of machinery off, to
see what it costs in real time rather than under a profiler, and a prototype of the
proposed fixes, to see what they would buy.

None of these is correct production behaviour except ``fixes``, which keeps the
semantics (same transitions, same audit chain, same outbox rows) and only changes how
the work is done; it is what bench/RESULTS.md proposes for src/.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

VARIANTS = {
    "as_is": "service as it is",
    "no_statemachine": "- python-statemachine (table lookup instead)",
    "no_audit": "- audit append (no chain entry)",
    "no_outbox": "- outbox rows (no notifications)",
    "bare": "- all three (ORM + service logic only)",
    "fixes": "proposed fixes (prototype, same semantics)",
    "fixes_late_audit": "proposed fixes + audit chain appended at commit",
}


def _transition_table() -> dict[tuple[str, str], str]:
    from jitaccess.domain.lifecycle import RequestLifecycle

    table: dict[tuple[str, str], str] = {}
    for state in RequestLifecycle.states:
        for transition in state.transitions:
            for event in transition.events:
                table[(state.value, str(event))] = transition.target.value
    return table


def fast_move_functions() -> tuple[Any, Any]:
    """``move`` and the initial-state binding, from a table derived once from the machine."""
    from jitaccess.domain.lifecycle import RequestLifecycle

    table = _transition_table()
    initial = RequestLifecycle.initial_state.value

    def move(model: Any, event: str) -> tuple[str, str]:
        before = str(model.state)
        try:
            after = table[(before, event)]
        except KeyError:
            raise ValueError(f"{event} is not allowed from {before}") from None
        model.state = after
        return before, after

    def bind(model: Any) -> None:
        if model.state is None:
            model.state = initial

    return move, bind


def cached_head_append() -> Any:
    """audit.append that reads (and locks) the chain head once per transaction."""
    from sqlalchemy import select

    from jitaccess.domain.audit_chain import GENESIS, AuditEntry, chain_hash
    from jitaccess.store.models import AuditEvent, AuditHead

    def append(session: Any, *, at: Any, actor: str, action: str, **kw: Any) -> Any:
        head = session.info.get("bench_audit_head")
        if head is None:
            head = session.execute(
                select(AuditHead).where(AuditHead.id == 1).with_for_update()
            ).scalar_one_or_none()
            if head is None:
                head = AuditHead(id=1, seq=0, hash=GENESIS)
                session.add(head)
            session.info["bench_audit_head"] = head
        fields = {
            "app": kw.get("app"),
            "request_id": kw.get("request_id"),
            "from_state": kw.get("from_state"),
            "to_state": kw.get("to_state"),
            "reason": kw.get("reason"),
        }
        details = kw.get("details") or {}
        entry = AuditEntry(
            seq=head.seq + 1, at=at, actor=actor, action=action, details=details, **fields
        )
        digest = chain_hash(head.hash, entry)
        row = AuditEvent(
            seq=entry.seq,
            at=at,
            actor=actor,
            action=action,
            details=details,
            prev_hash=head.hash,
            hash=digest,
            **fields,
        )
        session.add(row)
        head.seq = entry.seq
        head.hash = digest
        return row

    return append


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    """Apply one variant for the duration of the block."""
    from jitaccess.app import journal
    from jitaccess.store import audit

    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, attr: str, value: Any) -> None:
        saved.append((owner, attr, owner.__dict__[attr]))
        setattr(owner, attr, value)

    if name in ("no_statemachine", "bare", "fixes"):
        move, _bind = fast_move_functions()
        patch(journal, "move", move)
    if name in ("no_audit", "bare"):
        patch(audit, "append", lambda session, **kw: None)
    if name in ("no_outbox", "bare"):
        patch(journal, "enqueue", lambda *a, **kw: None)
    if name == "fixes" and not _head_cached_upstream():
        patch(audit, "append", cached_head_append())
    if name == "fixes_late_audit":
        move, _bind = fast_move_functions()
        patch(journal, "move", move)
        patch(audit, "append", late_append)
    if name in ("fixes", "fixes_late_audit"):
        _patch_outcome_batching(patch)
    listening = name == "fixes_late_audit"
    if listening:
        from sqlalchemy import event
        from sqlalchemy.orm import Session

        event.listen(Session, "before_commit", _write_late_audit)
    try:
        yield
    finally:
        if listening:
            event.remove(Session, "before_commit", _write_late_audit)
        for owner, attr, value in reversed(saved):
            setattr(owner, attr, value)


def late_append(session: Any, **entry: Any) -> None:
    """Queue the entry; ``_write_late_audit`` chains the transaction's entries at commit."""
    session.info.setdefault("bench_audit_pending", []).append(entry)


def _write_late_audit(session: Any) -> None:
    """Before commit: flush everything else first, then lock the chain head, append the
    queued entries and let the commit release the lock at once. The head is held for
    the audit INSERTs and the COMMIT only, not for the whole transaction."""
    pending = session.info.pop("bench_audit_pending", None)
    if not pending:
        return
    session.flush()
    append = cached_head_append()
    with session.no_autoflush:
        for entry in pending:
            append(session, **entry)


def _head_cached_upstream() -> bool:
    """True once src/ reads the audit head once per transaction itself (4905b8b)."""
    import inspect

    from jitaccess.store import audit

    return 'session.info.get("audit_head")' in inspect.getsource(audit.append)


def _patch_outcome_batching(patch: Any) -> None:
    """Record a sweep batch's outcomes without an autoflush before every query (the
    batch is loaded by one SELECT upstream since 4905b8b): one flush at commit."""
    from jitaccess.app.sweep import Sweeper

    upstream = Sweeper.__dict__["_record_outcome"]

    def _record_outcome_no_autoflush(self: Any, session: Any, *args: Any) -> None:
        with session.no_autoflush:
            upstream(self, session, *args)

    patch(Sweeper, "_record_outcome", _record_outcome_no_autoflush)


@contextlib.contextmanager
def sqlite_writer_lock(db: Any) -> Iterator[None]:
    """Prototype: one in-process lock around SQLite write transactions, so a thread
    waiting to write wakes as soon as the writer before it commits, instead of polling
    on SQLITE_BUSY in SQLite's busy handler (sleeps of 1 to 100 ms)."""
    import threading

    original = db.transaction
    lock = threading.RLock()

    @contextlib.contextmanager
    def transaction(*, readonly: bool = False) -> Iterator[Any]:
        if readonly or not db.is_sqlite:
            with original(readonly=readonly) as session:
                yield session
            return
        with lock, original() as session:
            yield session

    db.transaction = transaction
    try:
        yield
    finally:
        del db.transaction
