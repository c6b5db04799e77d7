"""The one statement only the sandbox (the ``jitaccess-sandbox`` distribution) runs: it
keeps its SQL here with the rest of the store's."""

from __future__ import annotations

from sqlalchemy import delete

from jitaccess.store.db import Database
from jitaccess.store.models import SlackMessage


def forget_slack_messages(db: Database) -> None:
    """Forget where every card and message was posted (their ``SlackMessage`` rows), in
    one transaction: the relay then posts them anew instead of editing messages that a
    workspace no longer has (the sandbox's fake Slack keeps its messages in memory and
    numbers them from the same start after a restart)."""
    with db.transaction() as session:
        session.execute(delete(SlackMessage))
