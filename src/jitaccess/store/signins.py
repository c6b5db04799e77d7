"""Every read and write of the sign-in tables: people's Entra links and the single-use
Sign in with Microsoft links. Tokens arrive here already encrypted."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from jitaccess.store.models import EntraLink, SignInAttempt


def link(session: Session, slack_user: str, *, lock: bool = False) -> EntraLink | None:
    query = select(EntraLink).where(EntraLink.slack_user == slack_user)
    if lock:
        query = query.with_for_update()
    return session.execute(query).scalar_one_or_none()


def links(session: Session) -> Sequence[EntraLink]:
    return session.execute(select(EntraLink).order_by(EntraLink.slack_user)).scalars().all()


def slack_user_of(session: Session, object_id: str) -> str | None:
    """The Slack person linked to the Entra account ``object_id``, if anyone is."""
    return session.execute(
        select(EntraLink.slack_user).where(EntraLink.object_id == object_id).limit(1)
    ).scalar_one_or_none()


def forget_link(session: Session, slack_user: str) -> bool:
    row = link(session, slack_user, lock=True)
    if row is None:
        return False
    session.delete(row)
    return True


def attempt(session: Session, state: str) -> SignInAttempt | None:
    """The attempt ``state`` names, locked: its single use is decided under the lock."""
    return session.execute(
        select(SignInAttempt).where(SignInAttempt.state == state).with_for_update()
    ).scalar_one_or_none()


def forget_attempts(session: Session, before: datetime) -> None:
    """Drop attempts that expired before ``before`` (used or not)."""
    session.execute(delete(SignInAttempt).where(SignInAttempt.expires_at < before))
