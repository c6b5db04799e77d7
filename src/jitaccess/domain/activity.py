"""What the publisher did during a window: a short, stable summary of activity-log
events (operations, resources touched, failures), pure.

The summary answers a managed-application customer's first question after access
ended. Its JSON form is canonical (sorted keys, no spaces), so its sha256 recorded in
the audit log identifies exactly what people were shown.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Statuses that say an operation is still under way; its final event tells the outcome.
IN_PROGRESS = frozenset({"started", "accepted", "active"})
FAILED = "failed"

#: How much of each list a summary keeps; the rest is counted, not listed.
MAX_OPERATIONS = 10
MAX_RESOURCES = 10
MAX_FAILURES = 5


@dataclass(frozen=True)
class ActivityEvent:
    """One activity-log event, as any backend's adapter reads it."""

    at: datetime
    operation: str
    resource_id: str
    status: str
    #: Events of one operation share it (Azure's ``operationId``); None: on its own.
    operation_id: str | None = None


@dataclass(frozen=True)
class Failure:
    at: str
    operation: str
    resource: str


@dataclass(frozen=True)
class ActivitySummary:
    window_start: str
    window_end: str
    #: Distinct operations (an operation's Started and Succeeded events count once).
    operations_total: int
    #: (operation name, count), most frequent first, at most ``MAX_OPERATIONS``.
    operations: tuple[tuple[str, int], ...]
    resources_total: int
    #: Short names of the resources touched, at most ``MAX_RESOURCES``.
    resources: tuple[str, ...]
    failures_total: int
    failures: tuple[Failure, ...]

    @property
    def empty(self) -> bool:
        return self.operations_total == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_start": self.window_start,
            "window_end": self.window_end,
            "operations_total": self.operations_total,
            "operations": [[name, count] for name, count in self.operations],
            "resources_total": self.resources_total,
            "resources": list(self.resources),
            "failures_total": self.failures_total,
            "failures": [
                {"at": f.at, "operation": f.operation, "resource": f.resource}
                for f in self.failures
            ],
        }

    def canonical_json(self) -> str:
        return canonical_json(self.as_dict())

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActivitySummary:
        return cls(
            window_start=str(data["window_start"]),
            window_end=str(data["window_end"]),
            operations_total=int(data["operations_total"]),
            operations=tuple((str(n), int(c)) for n, c in data["operations"]),
            resources_total=int(data["resources_total"]),
            resources=tuple(str(r) for r in data["resources"]),
            failures_total=int(data["failures_total"]),
            failures=tuple(
                Failure(str(f["at"]), str(f["operation"]), str(f["resource"]))
                for f in data["failures"]
            ),
        )


def canonical_json(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def short_resource_name(resource_id: str) -> str:
    """``…/providers/Microsoft.Storage/storageAccounts/stcrm`` -> ``storageAccounts/stcrm``;
    the resource group itself -> ``resourceGroups/<name>``."""
    parts = [p for p in resource_id.strip().split("/") if p]
    if len(parts) >= 2:
        return f"{parts[-2]}/{parts[-1]}"
    return resource_id.strip() or "(no resource)"


def summarise(
    events: Iterable[ActivityEvent],
    start: datetime,
    end: datetime,
    *,
    max_operations: int = MAX_OPERATIONS,
    max_resources: int = MAX_RESOURCES,
    max_failures: int = MAX_FAILURES,
) -> ActivitySummary:
    """Summarise the events within [start, end]. Each operation counts once, with the
    status of its latest event that is not merely in progress."""
    latest: dict[str, ActivityEvent] = {}
    for index, event in enumerate(sorted(events, key=lambda e: (e.at, e.operation))):
        if not start <= event.at <= end:
            continue
        key = event.operation_id or f"\0{index}"
        known = latest.get(key)
        if known is None or event.status.lower() not in IN_PROGRESS:
            latest[key] = event
    operations = sorted(latest.values(), key=lambda e: (e.at, e.operation))
    counts = Counter(e.operation for e in operations)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    resources = sorted({short_resource_name(e.resource_id) for e in operations})
    failed = [e for e in operations if e.status.lower() == FAILED]
    return ActivitySummary(
        window_start=start.isoformat(),
        window_end=end.isoformat(),
        operations_total=len(operations),
        operations=tuple(ranked[:max_operations]),
        resources_total=len(resources),
        resources=tuple(resources[:max_resources]),
        failures_total=len(failed),
        failures=tuple(
            Failure(e.at.isoformat(), e.operation, short_resource_name(e.resource_id))
            for e in failed[:max_failures]
        ),
    )
