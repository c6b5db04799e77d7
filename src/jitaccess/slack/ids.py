"""Slack's ids: what a person, a user group, a channel and a message look like.

One set of patterns for the whole product: the Slack answer readers
(:mod:`jitaccess.slack.answers`) check Slack's replies with them, and
:data:`SLACK_PRINCIPALS` (the :class:`~jitaccess.domain.principals.PrincipalRules` the
container gives the application layer) checks the ids people type in the config form,
in ``/jit``, in the CLI (``--approver``, ``--publisher``) and in ``apps apply`` files.
"""

from __future__ import annotations

import re

from jitaccess.domain.errors import RuleViolation
from jitaccess.domain.text import shown

#: A person's id (``U…``, or ``W…`` on Enterprise Grid).
USER_ID = re.compile(r"^[UW][A-Z0-9]{1,20}$")
#: A user group's id (``S…``).
GROUP_ID = re.compile(r"^S[A-Z0-9]{1,20}$")
#: A conversation's id: a channel (``C…``), a private channel or group DM (``G…``), a DM (``D…``).
CHANNEL_ID = re.compile(r"^[CDG][A-Z0-9]{1,20}$")
#: A channel a feed may be posted to: public (``C…``) or private (``G…``); never its #name,
#: which can change, and never a DM.
FEED_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{2,20}$")
#: A message's timestamp: seconds, a dot, a sequence.
MESSAGE_TS = re.compile(r"^[0-9]{1,12}\.[0-9]{1,9}$")


def is_group(value: str) -> bool:
    """A user group's id, as opposed to a person's."""
    return GROUP_ID.fullmatch(value) is not None


class SlackPrincipals:
    """Slack's naming rules for the ids people type, with what to type instead."""

    def person(self, value: str, what: str, field: str) -> str:
        cleaned = value.strip()
        if not USER_ID.fullmatch(cleaned):
            raise RuleViolation(
                f"{what} '{shown(value)}' is not a Slack user ID: use the member ID (like "
                "U0123ABCD), found in the user's Slack profile under 'Copy member ID'",
                field=field,
            )
        return cleaned

    def person_or_group(self, value: str, what: str, field: str) -> str:
        cleaned = value.strip()
        if not (USER_ID.fullmatch(cleaned) or GROUP_ID.fullmatch(cleaned)):
            raise RuleViolation(
                f"{what} '{shown(value)}' is not a Slack user ID nor a user group ID: use the "
                "member ID (like U0123ABCD, from the profile's 'Copy member ID') or the user "
                "group ID (like S0123ABCD, from the group's page)",
                field=field,
            )
        return cleaned

    def channel(self, value: str, what: str, field: str) -> str:
        cleaned = value.strip()
        if not FEED_CHANNEL_ID.fullmatch(cleaned):
            raise RuleViolation(
                f"{what} '{shown(value)}' is not a Slack channel ID: use the channel's ID "
                "(like C0123ABCD), found in Slack under the channel's name → About, at the "
                "bottom; leave it empty to turn the feed off",
                field=field,
            )
        return cleaned

    def is_group(self, value: str) -> bool:
        return is_group(value)


#: The rules every front end and the application layer use while Slack is the chat.
SLACK_PRINCIPALS = SlackPrincipals()
