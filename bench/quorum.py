"""Quorum with an approver group: the second approval to the grant, and what the
group costs in Slack calls.

    .venv/bin/python -m bench.quorum [--quick]

Runs the sandbox (the real Bolt app, scheduler and relay beside the fake Slack, on
SQLite) with a 5-second sweep interval. Each round Pat requests ``northwind-hr``, whose
policy needs 2 approvals from the user group ``SDEMOAPPROVERS`` (Ava and Abe); Ava
approves (1 of 2), then Abe does. The clock starts when Abe's signed ``/jit approve``
is sent and stops when the ``log`` provider holds the grant. Each approval's
``usergroups.users.list`` calls are counted (membership is read fresh at every
decision). Pat releases before the next round. Printed, not asserted.
"""

from __future__ import annotations

import time

from sqlalchemy import func, select

from bench._common import parse_args, print_latencies, running_sandbox
from bench.azure_extend import call, wait
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, Approval, LogGrant
from jitaccess_sandbox import demo


def grant_row(db: Database, request_id: int) -> tuple[bool, bool]:
    """(granted, revoked) on the log backend."""
    with db.transaction(readonly=True) as session:
        found = session.execute(
            select(LogGrant.revoked_at).where(LogGrant.request_id == request_id)
        ).first()
        return (found is not None, found is not None and found[0] is not None)


def exists(db: Database, request_id: int) -> bool:
    with db.transaction(readonly=True) as session:
        return session.get(AccessRequest, request_id) is not None


def approvals(db: Database, request_id: int) -> int:
    with db.transaction(readonly=True) as session:
        return int(
            session.execute(
                select(func.count()).select_from(Approval).where(Approval.request_id == request_id)
            ).scalar_one()
        )


def main() -> None:
    args = parse_args(__doc__ or "")
    rounds = 3 if args.quick else 20
    pat, ava, abe = demo.PUBLISHER, demo.APPROVER, demo.APPROVER2
    seconds: list[float] = []
    lookups: list[int] = []
    with running_sandbox() as sandbox:
        db = Database(f"sqlite:///{sandbox.db_path}")
        try:
            for rid in range(1, rounds + 1):
                call(
                    sandbox,
                    "command",
                    {"user": pat, "text": "request northwind-hr Contributor 1h b"},
                )
                wait("the request", lambda rid=rid: call(sandbox, f"state?user={ava}")["timeline"])
                assert sandbox.fake is not None
                before = len(sandbox.fake.calls_to("usergroups.users.list"))
                call(sandbox, "command", {"user": ava, "text": f"approve {rid} first look"})
                # Commands are handled after their ack: count once the approval is in.
                wait("the first approval", lambda rid=rid: approvals(db, rid) == 1)
                after_first = len(sandbox.fake.calls_to("usergroups.users.list"))
                started = time.perf_counter()
                call(sandbox, "command", {"user": abe, "text": f"approve {rid} second look"})
                wait("the grant", lambda rid=rid: grant_row(db, rid)[0])
                seconds.append(time.perf_counter() - started)
                after_second = len(sandbox.fake.calls_to("usergroups.users.list"))
                lookups += [after_first - before, after_second - after_first]
                call(sandbox, "command", {"user": pat, "text": f"release {rid}"})
                wait("the revoke", lambda rid=rid: grant_row(db, rid)[1], timeout=60)
        finally:
            db.dispose()
    print_latencies("second approval (/jit approve) of a 2-of-group quorum → grant", seconds)
    print(
        f"usergroups.users.list calls per approval: {min(lookups)}–{max(lookups)} "
        f"(mean {sum(lookups) / len(lookups):.1f})"
    )


if __name__ == "__main__":
    main()
