"""Errors the core raises; adapters turn them into Slack replies or CLI exit codes."""


class JitError(Exception):
    """Base class. ``str(err)`` is a message meant for the person who acted."""


class RuleViolation(JitError):
    """A product rule refused the action. Nothing was changed.

    ``field`` names the input at fault (``role``, ``duration``, ``start``,
    ``justification``, ``reason``, ``app``) so a form can show the message
    beside it; None when the refusal is about the action as a whole.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(JitError):
    """The named application or request does not exist."""


class Conflict(RuleViolation):
    """Someone else changed the request first; the message says who and how."""
