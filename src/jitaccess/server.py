"""``jitaccess serve``: migrate, then run the scheduler and relay until stopped."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from jitaccess import logs
from jitaccess.container import build
from jitaccess.settings import Settings

log = logging.getLogger("jitaccess.serve")


def run(settings: Settings | None = None, stop: threading.Event | None = None) -> None:
    settings = settings or Settings()
    logs.configure(settings.log_level, settings.log_format)
    container = build(settings)
    container.db.upgrade()
    scheduler = container.scheduler()
    stop = stop or threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    scheduler.start()
    log.info(
        "jitaccess serving: database %s, sweeping every %ss",
        container.db.engine.url.render_as_string(hide_password=True),
        settings.sweep_interval_seconds,
    )
    try:
        stop.wait()
    finally:
        scheduler.shutdown()
        container.close()
