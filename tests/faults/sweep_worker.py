"""A sweeping process for the kill tests:
``python sweep_worker.py URL CALL_LOG NOW BATCH DELAY HANG_AFTER [DIE_AFTER]``.

It wires the service as ``serve`` does (its own worker id, the lease from RetryPolicy)
with a RecordingProvider writing to CALL_LOG (each call taking DELAY seconds, and hanging
after HANG_AFTER calls unless that is 0; SIGKILL-ing itself right after the DIE_AFTER-th
call's effect, when given and not 0), and sweeps at the fixed instant NOW (ISO 8601:
time is an argument, never the wall clock) until nothing is due at NOW, then prints
``done`` and exits 0. The test kills it with SIGKILL whenever it likes.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime

from fault_support import RecordingProvider

from jitaccess.app.deps import build_deps
from jitaccess.app.service import JitService
from jitaccess.providers.base import ProviderRegistry
from jitaccess.slack.principals import SLACK_PRINCIPALS
from jitaccess.store.db import Database


def main(argv: list[str]) -> int:
    url, call_log, now_text, batch_text, delay_text, hang_text, *rest = argv
    now = datetime.fromisoformat(now_text)
    assert now.tzinfo is not None, "NOW must carry a UTC offset"
    db = Database(url)
    providers = ProviderRegistry()
    hang_after = int(hang_text) or None
    die_after = int(rest[0]) if rest else 0
    providers.register(
        RecordingProvider(
            call_log, delay=float(delay_text), hang_after=hang_after, die_after=die_after or None
        )
    )
    service = JitService(
        build_deps(
            db,
            providers,
            worker_id=f"fault-worker:{os.getpid()}",
            inline=False,
            principals=SLACK_PRINCIPALS,
        )
    )
    print("sweeping", flush=True)
    give_up = time.monotonic() + 60
    while True:
        service.sweep(now, batch_size=int(batch_text))
        due = service.next_deadline()
        if due is None or due > now:
            break
        # Rows still due: on PostgreSQL a dead process's locks may linger a moment
        # (SKIP LOCKED skips them); try again until they are ours.
        if time.monotonic() > give_up:
            print(f"still due at {due} after 60 s", flush=True)
            return 3
        time.sleep(0.05)
    db.dispose()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
