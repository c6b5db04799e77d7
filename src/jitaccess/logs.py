"""Logging set-up: readable text by default, one JSON object per line with ``json``."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

#: The Azure SDK's request/response logger (``HttpLoggingPolicy``).
AZURE_HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the one there
    was when logging was configured: a stream swapped out since (a test runner's
    capture, a closed pipe) must not turn every later log line into a logging error."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        return None


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = CurrentStderrHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # "skipped: maximum number of running instances" just means a sweep is still busy.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    # The Azure SDK logs every request's and response's headers, several lines each, at
    # INFO: that is debugging detail. Its warnings and errors still show.
    logging.getLogger(AZURE_HTTP_LOGGER).setLevel(
        logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    )
