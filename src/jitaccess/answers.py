"""What every reader of an outside service's answers shares: a rejected answer.

Each external service has one small parsing layer (``slack/answers.py`` for Slack's
Web API, ``providers/arm_answers.py`` for Azure Resource Manager, the webhook's own
reader) that checks an answer has exactly the documented shape before anything reads
it. An answer that does not is a *failed lookup*, never data: the reader raises
:class:`AnswerRejected` (made by :func:`rejected`), which logs it as one line and counts
it in ``jitaccess_external_answer_rejected_total{service,call}``. Callers treat it as
they treat the service being unreachable: a decision is refused and nothing is
recorded; the sweep and the relay retry.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

log = logging.getLogger("jitaccess.answers")

#: Registered in each :class:`~jitaccess.metrics.Metrics` registry (``GET /metrics``).
REJECTED = Counter(
    "jitaccess_external_answer_rejected",
    "Answers from outside services (Slack, Azure, webhooks) refused for their shape",
    ["service", "call"],
    registry=None,
)


class AnswerRejected(Exception):
    """An outside service answered something other than its documented shape.

    ``str(err)`` says which service, which call and what was wrong, for people."""

    def __init__(self, service: str, call: str, reason: str) -> None:
        super().__init__(f"{service} answered {call} with {reason}")
        self.service = service
        self.call = call
        self.reason = reason


def rejected(service: str, call: str, reason: str) -> AnswerRejected:
    """The exception to raise for an answer of the wrong shape, logged and counted."""
    REJECTED.labels(service, call).inc()
    log.warning("rejected an answer: %s answered %s with %s", service, call, reason)
    return AnswerRejected(service, call, reason)


def describe(value: object) -> str:
    """A short, safe description of what came back (never the value itself: it may be
    large, or carry what should not be logged)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__
