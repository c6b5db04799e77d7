"""How people, user groups and channels are named: the front end's business.

The domain stores and compares principal ids as opaque strings. Whether ``U0123ABCD``
is a person and ``S0123ABCD`` a group is the convention of the chat front end that
produced them (Slack's is :mod:`jitaccess.slack.ids`); another front end (Teams, say)
brings its own. The container hands one :class:`PrincipalRules` to the application
layer, which passes it to the policy checks, so the CLI's ``--approver`` and the Slack
config form are held to the same rules.
"""

from __future__ import annotations

from typing import Protocol


class PrincipalRules(Protocol):
    """Checks a principal id's shape; each check returns the id cleaned (trimmed) or
    raises :class:`~jitaccess.domain.errors.RuleViolation` saying what to type instead.
    The text itself (length, control characters) was checked before."""

    def person(self, value: str, what: str, field: str) -> str:
        """A person, like a publisher, an admin or the one a request is for."""

    def person_or_group(self, value: str, what: str, field: str) -> str:
        """A person or a user group: approvers and break-glass holders may be either."""

    def channel(self, value: str, what: str, field: str) -> str:
        """A channel, like an application's feed."""

    def is_group(self, value: str) -> bool:
        """Whether a (checked) id names a user group rather than a person."""
