"""Errors the core raises; adapters turn them into Slack replies or CLI exit codes."""


class JitError(Exception):
    """Base class. ``str(err)`` is a message meant for the person who acted."""


class RuleViolation(JitError):
    """A product rule refused the action. Nothing was changed."""


class NotFound(JitError):
    """The named application or request does not exist."""


class Conflict(RuleViolation):
    """Someone else changed the request first; the message says who and how."""
