"""Errors the core raises; adapters turn them into Slack replies or CLI exit codes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mention:
    """A person named in a message by their Slack user id: Slack shows a mention,
    the CLI the id. Everything else in a message is plain text, never a mention."""

    user_id: str

    def __str__(self) -> str:
        return self.user_id


Part = str | Mention


class JitError(Exception):
    """Base class. ``str(err)`` is a message meant for the person who acted;
    ``parts`` is the same message with the people in it marked (:class:`Mention`)."""

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
