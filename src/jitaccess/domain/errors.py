"""Errors the core raises; adapters turn them into Slack replies or CLI exit codes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Mention:
    """A person named in a message by their Slack user id: Slack shows a mention,
    the CLI the id. Everything else in a message is plain text, never a mention."""

    user_id: str

    def __str__(self) -> str:
        return self.user_id


@dataclass(frozen=True)
class WebLink:
    """A link the service puts in a message (a sign-in page, a portal blade): Slack
    shows ``label`` as a clickable link, the CLI ``label: url`` as plain text."""

    url: str
    label: str

    def __str__(self) -> str:
        return f"{self.label}: {self.url}"


def utc_text(moment: datetime) -> str:
    """A moment as plain text in UTC (``2026-12-07 18:32 UTC``): how a message names a
    time where no reader's zone applies (the CLI's ``--utc``, Slack's date-token
    fallback, a log)."""
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


@dataclass(frozen=True)
class Moment:
    """A moment named in a message: Slack shows it in each reader's own time zone (a
    date token), the CLI as UTC text (``2026-12-07 18:32 UTC``)."""

    at: datetime

    def __str__(self) -> str:
        return utc_text(self.at)


Part = str | Mention | WebLink | Moment


class JitError(Exception):
    """Base class. ``str(err)`` is a message meant for the person who acted;
    ``parts`` is the same message with the people in it marked (:class:`Mention`), its
    links kept apart (:class:`WebLink`) and its times kept as moments (:class:`Moment`)."""

    def __init__(self, *parts: Part) -> None:
        super().__init__("".join(map(str, parts)))
        self.parts: tuple[Part, ...] = parts


class RuleViolation(JitError):
    """A product rule refused the action. Nothing was changed.

    ``field`` names the input at fault (``role``, ``duration``, ``start``,
    ``justification``, ``reason``, ``app``) so a form can show the message
    beside it; None when the refusal is about the action as a whole.
    """

    def __init__(self, *parts: Part, field: str | None = None) -> None:
        super().__init__(*parts)
        self.field = field


class NotFound(JitError):
    """The named application or request does not exist."""


class Conflict(RuleViolation):
    """Someone else changed the request first; the message says who and how."""


class Problems(RuleViolation):
    """Every rule a definition (an application, a file of them) breaks, at once, so that
    one run shows all there is to fix. ``problems`` holds each as ``(subject, violation)``:
    the subject is the application or offer it is about (None: the whole)."""

    def __init__(self, problems: Sequence[tuple[str | None, RuleViolation]]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{subject}: {v}" if subject else str(v) for subject, v in self.problems]


class Findings:
    """Collects rule violations instead of stopping at the first one.

    ``found(check, default)`` runs ``check()`` and returns its value; a violation is
    kept (with :attr:`subject`) and ``default`` returned, so the next check still runs.
    :meth:`raise_any` then raises nothing, the one violation as it is, or
    :class:`Problems` with all of them."""

    def __init__(self, subject: str | None = None) -> None:
        self.subject = subject
        self.problems: list[tuple[str | None, RuleViolation]] = []

    def __call__(self, check: Callable[[], T], default: T) -> T:
        try:
            return check()
        except RuleViolation as exc:
            self.add(exc)
            return default

    def add(self, exc: RuleViolation, subject: str | None = None) -> None:
        if isinstance(exc, Problems):
            self.problems += [(s or subject or self.subject, v) for s, v in exc.problems]
        else:
            self.problems.append((subject or self.subject, exc))

    def __bool__(self) -> bool:
        return bool(self.problems)

    def raise_any(self) -> None:
        if len(self.problems) == 1 and self.problems[0][0] == self.subject:
            raise self.problems[0][1]
        if self.problems:
            raise Problems(self.problems)
