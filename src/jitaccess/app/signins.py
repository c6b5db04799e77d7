"""Sign in with Microsoft: people link their Slack account to their Entra account once,
and jitaccess then acts in Azure *as them* (a publisher's jitRequests, an approver's
PIM approval), never as itself.

The flow (OAuth 2.0 authorization code with PKCE, through msal in
``providers/entra.py``):

1. :meth:`SignIns.link_for` makes a single-use link, valid ten minutes, whose OAuth
   ``state`` is a random value bound to the Slack person it is posted to (ephemerally).
2. The browser comes back to ``{JITACCESS_PUBLIC_URL}/auth/callback``;
   :meth:`SignIns.finish` spends the attempt under a row lock (a second use is
   refused), redeems the code, checks the Entra account may be linked (an approver of
   a native application, directly or through a group, or a publisher), and stores the
   refresh token encrypted.
3. :meth:`SignIns.tokens_for` refreshes an access token for ARM when one is needed,
   storing the rotated refresh token. A refresh Entra refuses is a lapsed sign-in: the
   caller refuses the action, records nothing and offers a new link.

Refresh tokens and msal's flow (its PKCE verifier) are encrypted with Fernet under
``JITACCESS_TOKEN_KEYS`` (several keys: the first encrypts, all decrypt, so a key is
rotated by putting a new one first and running :meth:`SignIns.rotate_keys`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from jitaccess.domain.errors import RuleViolation
from jitaccess.domain.native import (
    ExternalLookupFailed,
    SignedInUser,
    SignInLapsed,
    SignInPort,
    UserTokens,
)
from jitaccess.store import audit
from jitaccess.store import signins as stored
from jitaccess.store.db import Database
from jitaccess.store.models import EntraLink, SignInAttempt

LINK_LIFETIME = timedelta(minutes=10)

#: Who may link an Entra account: returns None when ``user`` may be linked to the Slack
#: person, else the reason (composed by the container from the native applications).
LinkCheck = Callable[[str, SignedInUser], str | None]


class NotSignedIn(SignInLapsed):
    """The person never linked a Microsoft account (or signed out)."""


class SignInUnavailable(RuleViolation):
    """Sign-in is not configured on this installation."""


class TokenCipher:
    """Fernet encryption with rotatable keys for what must not be stored in clear."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("JITACCESS_TOKEN_KEYS holds no key")
        try:
            self._fernet = MultiFernet([Fernet(key.strip().encode()) for key in keys])
        except ValueError:
            raise ValueError(
                "JITACCESS_TOKEN_KEYS must be comma-separated Fernet keys (32 url-safe "
                "base64 bytes each); make one with `jitaccess signins new-key`"
            ) from None

    @classmethod
    def from_setting(cls, value: str | None) -> TokenCipher | None:
        keys = [key for key in (value or "").split(",") if key.strip()]
        return cls(keys) if keys else None

    @staticmethod
    def new_key() -> str:
        return Fernet.generate_key().decode()

    def encrypt(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SignInLapsed(
                "your stored sign-in cannot be read with jitaccess's current keys: sign in again"
            ) from None

    def rotate(self, token: str) -> str:
        return self._fernet.rotate(token.encode()).decode()


@dataclass(frozen=True)
class Link:
    """A person's Entra link as shown to them (never the token)."""

    slack_user: str
    username: str
    object_id: str
    tenant_id: str
    acrs: tuple[str, ...]
    authenticated_at: datetime | None

    @classmethod
    def of(cls, row: EntraLink) -> Link:
        return cls(
            slack_user=row.slack_user,
            username=row.username,
            object_id=row.object_id,
            tenant_id=row.tenant_id,
            acrs=tuple(row.acrs or ()),
            authenticated_at=row.authenticated_at,
        )

    def user(self) -> SignedInUser:
        return SignedInUser(
            tenant_id=self.tenant_id,
            object_id=self.object_id,
            username=self.username,
            acrs=self.acrs,
            authenticated_at=self.authenticated_at,
        )


class SignIns:
    """The sign-in use cases; each database step is one transaction, and no
    transaction is open while Entra answers."""

    def __init__(
        self,
        db: Database,
        sign_in: SignInPort | None,
        cipher: TokenCipher | None,
        may_link: LinkCheck,
        *,
        mfa_auth_context: str,
        mfa_max_age: timedelta,
    ) -> None:
        self.db = db
        self.sign_in = sign_in
        self.cipher = cipher
        self.may_link = may_link
        self.mfa_auth_context = mfa_auth_context
        self.mfa_max_age = mfa_max_age

    @property
    def available(self) -> bool:
        return self.sign_in is not None and self.cipher is not None

    def _parts(self) -> tuple[SignInPort, TokenCipher]:
        if self.sign_in is None or self.cipher is None:
            raise SignInUnavailable(
                "Sign in with Microsoft is not set up on this jitaccess: an admin must set "
                "ENTRA_AUTHORITY, ENTRA_CLIENT_ID, ENTRA_CLIENT_SECRET, JITACCESS_PUBLIC_URL "
                "and JITACCESS_TOKEN_KEYS"
            )
        return self.sign_in, self.cipher

    def link_for(self, slack_user: str, *, now: datetime, step_up: bool = False) -> str:
        """A single-use Sign in with Microsoft link for ``slack_user``, valid ten minutes.
        ``step_up`` asks Entra for the multi-factor authentication context and a fresh
        interactive sign-in (for ``require_mfa``)."""
        sign_in, cipher = self._parts()
        state = secrets.token_urlsafe(32)
        try:
            url, flow = sign_in.start(
                state,
                claims_acrs=self.mfa_auth_context if step_up else None,
                max_age=int(self.mfa_max_age.total_seconds()) if step_up else None,
            )
        except ExternalLookupFailed as exc:
            raise RuleViolation(f"Could not start a sign-in with Microsoft: {exc}") from None
        with self.db.transaction() as session:
            stored.forget_attempts(session, now)
            session.add(
                SignInAttempt(
                    state=state,
                    slack_user=slack_user,
                    purpose="step_up" if step_up else "link",
                    flow=cipher.encrypt(json.dumps(flow)),
                    created_at=now,
                    expires_at=now + LINK_LIFETIME,
                )
            )
        return url

    def finish(self, query: Mapping[str, str], *, now: datetime) -> Link:
        """The browser came back from Entra: spend the attempt, redeem the code, link."""
        sign_in, cipher = self._parts()
        state = query.get("state", "")
        with self.db.transaction() as session:
            attempt = stored.attempt(session, state) if state else None
            if attempt is None:
                raise RuleViolation(
                    "This sign-in link is not one jitaccess made: ask for a new one with "
                    "/jit signin in Slack"
                )
            if attempt.used_at is not None:
                raise RuleViolation(
                    "This sign-in link was already used: each link works once. Ask for a new "
                    "one with /jit signin in Slack"
                )
            if attempt.expires_at <= now:
                raise RuleViolation(
                    "This sign-in link expired (links last ten minutes): ask for a new one "
                    "with /jit signin in Slack"
                )
            attempt.used_at = now
            slack_user = attempt.slack_user
            try:
                flow = json.loads(cipher.decrypt(attempt.flow))
            except SignInLapsed:  # the key it was made with is gone (rotated meanwhile)
                flow = None
        if flow is None:
            raise RuleViolation(
                "This sign-in link was made with a key jitaccess no longer has: ask for a "
                "new one with /jit signin in Slack"
            )
        if "error" in query:
            raise RuleViolation(
                "Microsoft did not sign you in ("
                + str(query.get("error_description") or query["error"])[:300]
                + "): ask for a new link with /jit signin in Slack"
            )
        try:
            tokens = sign_in.finish(flow, query)
        except ExternalLookupFailed as exc:
            raise RuleViolation(
                f"Microsoft's answer could not be used ({exc}): ask for a new link with "
                "/jit signin in Slack"
            ) from None
        refusal = self.may_link(slack_user, tokens.user)
        if refusal is not None:
            with self.db.transaction() as session:
                audit.append(
                    session,
                    at=now,
                    actor=slack_user,
                    action="signin_refused",
                    reason=refusal,
                    details={"entra_user": tokens.user.username, "oid": tokens.user.object_id},
                )
            raise RuleViolation(refusal)
        with self.db.transaction() as session:
            row = stored.link(session, slack_user, lock=True)
            if row is None:
                row = EntraLink(slack_user=slack_user, linked_at=now)
                session.add(row)
            self._store(row, tokens, cipher, now)
            audit.append(
                session,
                at=now,
                actor=slack_user,
                action="signed_in",
                details={
                    "entra_user": tokens.user.username,
                    "oid": tokens.user.object_id,
                    "tid": tokens.user.tenant_id,
                    "acrs": list(tokens.user.acrs),
                },
            )
            return Link.of(row)

    def _store(
        self, row: EntraLink, tokens: UserTokens, cipher: TokenCipher, now: datetime
    ) -> None:
        row.tenant_id = tokens.user.tenant_id
        row.object_id = tokens.user.object_id
        row.username = tokens.user.username
        row.refresh_token = cipher.encrypt(tokens.refresh_token)
        row.acrs = list(tokens.user.acrs)
        row.authenticated_at = tokens.user.authenticated_at
        row.updated_at = now

    def link_of(self, slack_user: str) -> Link | None:
        with self.db.transaction(readonly=True) as session:
            row = stored.link(session, slack_user)
            return Link.of(row) if row is not None else None

    def links(self) -> list[Link]:
        with self.db.transaction(readonly=True) as session:
            return [Link.of(row) for row in stored.links(session)]

    def sign_out(self, slack_user: str, *, actor: str, now: datetime) -> bool:
        """Forget ``slack_user``'s link (their own ``/jit signout``, or an admin's)."""
        with self.db.transaction() as session:
            gone = stored.forget_link(session, slack_user)
            if gone:
                audit.append(
                    session,
                    at=now,
                    actor=actor,
                    action="signed_out",
                    details={"slack_user": slack_user},
                )
            return gone

    def tokens_for(self, slack_user: str, *, now: datetime) -> tuple[str, Link]:
        """An ARM access token as ``slack_user`` and their link. Raises
        :class:`SignInLapsed` when they never signed in or Entra no longer honours
        their sign-in (the stored link is then forgotten)."""
        sign_in, cipher = self._parts()
        with self.db.transaction(readonly=True) as session:
            row = stored.link(session, slack_user)
            if row is None:
                raise NotSignedIn("you have not signed in with Microsoft yet")
            refresh_token = cipher.decrypt(row.refresh_token)
            before = Link.of(row)
        try:
            tokens = sign_in.refresh(refresh_token)
        except SignInLapsed:
            self.sign_out(slack_user, actor="system", now=now)
            raise
        if tokens.user.object_id != before.object_id:
            raise ExternalLookupFailed("Entra returned a token for a different account")
        with self.db.transaction() as session:
            row = stored.link(session, slack_user, lock=True)
            if row is None:  # signed out meanwhile
                raise SignInLapsed("you signed out")
            row.refresh_token = cipher.encrypt(tokens.refresh_token)
            row.updated_at = now
        # A refresh is not an interactive sign-in: what MFA proved stays the link's.
        return tokens.access_token, before

    def rotate_keys(self) -> int:
        """Re-encrypt every stored refresh token with the first key; returns how many."""
        _sign_in, cipher = self._parts()
        with self.db.transaction() as session:
            rows = stored.links(session)
            for row in rows:
                row.refresh_token = cipher.rotate(row.refresh_token)
            return len(rows)
