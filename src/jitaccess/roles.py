"""What one ``serve`` process runs. A module of its own so the CLI can name the roles
without importing the settings machinery (pydantic) at start."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What one ``serve`` process runs (``serve --role``)."""

    #: Answers Slack (HTTP or Socket Mode) and only records people's intents.
    WEB = "web"
    #: The deadline sweep, the outbox relay, reconciliation and the audit head log.
    WORKER = "worker"
    #: Both, in one process.
    ALL = "all"

    @property
    def answers_slack(self) -> bool:
        return self in (Role.WEB, Role.ALL)

    @property
    def does_work(self) -> bool:
        return self in (Role.WORKER, Role.ALL)
