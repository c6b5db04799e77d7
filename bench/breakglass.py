"""Break-glass: from the signed ``/jit breakglass`` command to the grant on the backend.

    .venv/bin/python -m bench.breakglass [--quick]

Runs the sandbox (the real Bolt app, scheduler and relay beside the fake Slack, on
SQLite) with a 5-second sweep interval, so a grant that lands sooner came from the
scheduler being woken by the break-glass itself, not from its polling. Each round Pat
types the command on the sandbox page (a correctly signed request to Bolt); the clock
stops when the ``log`` provider's ``log_grants`` row for the new request exists. Printed,
not asserted: a number for the closing note, not a target.
"""

from __future__ import annotations

import json
import time
import urllib.request

from sqlalchemy import select

from bench._common import parse_args, print_latencies, running_sandbox
from jitaccess.store.db import Database
from jitaccess.store.models import LogGrant
from jitaccess_sandbox import demo

COMMAND = "/jit breakglass contoso-crm Owner 30m INC-4711 CRM database is down"


def post(url: str, data: dict[str, str]) -> None:
    request = urllib.request.Request(
        url, json.dumps(data).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        assert json.loads(response.read())["ok"]


def granted(db: Database, request_id: int) -> bool:
    with db.transaction(readonly=True) as session:
        found = session.execute(
            select(LogGrant.request_id).where(LogGrant.request_id == request_id)
        ).first()
        return found is not None


def revoked(db: Database, request_id: int) -> bool:
    with db.transaction(readonly=True) as session:
        found = session.execute(
            select(LogGrant.revoked_at).where(LogGrant.request_id == request_id)
        ).scalar()
        return found is not None


def main() -> None:
    args = parse_args(__doc__ or "")
    rounds = 3 if args.quick else 20
    seconds: list[float] = []
    with running_sandbox() as sandbox:
        db = Database(f"sqlite:///{sandbox.db_path}")
        try:
            for request_id in range(1, rounds + 1):
                started = time.perf_counter()
                post(f"{sandbox.url}/command", {"user": demo.PUBLISHER, "text": COMMAND})
                while not granted(db, request_id):
                    if time.perf_counter() - started > 30:
                        raise SystemExit(f"request {request_id} was not granted within 30 s")
                    time.sleep(0.002)
                seconds.append(time.perf_counter() - started)
                # Released before the next round: break-glass obeys the overlap rule.
                post(
                    f"{sandbox.url}/command",
                    {"user": demo.PUBLISHER, "text": f"/jit release {request_id}"},
                )
                while not revoked(db, request_id):
                    if time.perf_counter() - started > 60:
                        raise SystemExit(f"request {request_id} was not revoked within 60 s")
                    time.sleep(0.01)
        finally:
            db.dispose()
    print_latencies("/jit breakglass → grant on the backend", seconds)


if __name__ == "__main__":
    main()
