"""Delivers outbox messages to Slack: each person's one card per request (posted
once, then edited in place, its first line the state now), each step as a reply in
that card's thread, and the App Home.

What Slack's documentation says, and what follows from it:

* ``chat.postMessage`` with ``thread_ts`` posts a reply in the thread of that message;
  ``reply_broadcast`` "indicates whether reply should be made visible to everyone in
  the channel or conversation" (default false)
  (https://docs.slack.dev/reference/methods/chat.postMessage). A broadcast reply is also
  in the conversation, as a ``thread_broadcast`` message
  (https://docs.slack.dev/reference/events/message/thread_broadcast).
* Nowhere do Slack's docs say that a thread reply *notifies* anyone: the messaging
  docs on threads (https://docs.slack.dev/messaging#threading) describe how to post and
  read them, not who hears of them, and a person follows a thread they took part in,
  not one a bot started under its own message in their DM. An edit
  (``chat.update``) notifies no one either. So a step a person must hear of is a
  *broadcast* reply: in the requester's thread the approval, the denial, the access
  becoming active, the 15-minute reminder, the end (expired, revoked, failed, timed
  out, or cancelled by someone else) and an extension's outcome; for approvers and
  admins a revoke that keeps failing and an extension waiting for their decision.
  Other steps (sent to the approvers, one approval of several) are quiet replies.
  The card's first post notifies by itself, so a step told by that very post is not
  broadcast again.
* ``chat.update`` edits a reply as it edits any message (by its ``ts``), which is how
  an approver's extension card, a broadcast reply, is edited when decided.

Each delivery renders the request as it is *now* in the database, so a late or
repeated delivery shows current truth (which is what lets the relay coalesce several
queued updates of one card into one call). A card remembers the outbox message it
last showed and each reply the outbox message it tells (``slack_replies``), so
redelivering a message after a crash posts nothing new.

Slack calls go through a :class:`~jitaccess.slack.pacing.SlackPacer` (per-method
pacing and Retry-After, instead of the SDK sleeping out each 429 in-line), and DM
channel ids are cached, so ``conversations.open`` is called once per person per process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from datetime import datetime
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from jitaccess.app import quorum
from jitaccess.app.journal import POLICY_ACTOR
from jitaccess.app.outbox import Notification, OutboxKind, Skipped, Undeliverable
from jitaccess.app.quorum import APPROVAL_RECORDED
from jitaccess.app.service import JitService
from jitaccess.app.slack_messages import SlackMessages
from jitaccess.domain.activity import ActivitySummary
from jitaccess.domain.errors import NotFound
from jitaccess.domain.lifecycle import state_words
from jitaccess.slack import answers
from jitaccess.slack.blocks import cards, home, markup
from jitaccess.slack.pacing import SlackPacer

log = logging.getLogger("jitaccess.slack.notifier")
#: channel, ts, the outbox key it last showed, a digest of what it shows (see _digest)
_CardRef = tuple[str, str, str | None, str | None]

#: Slack errors that retrying cannot fix.
PERMANENT_ERRORS = {
    "user_not_found",
    "channel_not_found",
    "account_inactive",
    "cannot_dm_bot",
    "user_disabled",
    "is_archived",
    "not_in_channel",
    "invalid_blocks",
    "msg_too_long",
}

#: Slack's refusals of a feed channel, and what the application's admin should do.
CHANNEL_ERRORS = {
    "not_in_channel": "invite the bot: type /invite @jitaccess in the channel",
    "channel_not_found": (
        "invite the bot (/invite @jitaccess in the channel; a private channel is "
        "invisible until then), or check the ID with `apps show`"
    ),
    "is_archived": "the channel is archived: name another with `apps policy --feed-channel`",
}


def transition_text(note: Notification) -> str:
    """One sentence about the step this message announces, for the requester. Times in
    it are Slack date tokens (each reader's own zone); states are plain words."""
    payload = note.payload
    to = str(payload.get("to"))
    actor = markup.user(str(payload.get("actor") or ""))
    reason = payload.get("reason")
    why = f": {markup.escape(str(reason))}" if reason else ""
    rid = note.request_id
    if payload.get("event") == APPROVAL_RECORDED:
        return (
            f"Request #{rid}: {actor} approved{_count(payload)}{why}; "
            "it still needs more approvals."
        )
    event = payload.get("event")
    if event in _EXTENSION_TEXT:
        until = f" (to {_moment(payload.get('new_ends_at'))})" if payload.get("new_ends_at") else ""
        count = _count(payload) if event == "extension_approval_recorded" else ""
        return _EXTENSION_TEXT[str(event)].format(
            rid=rid, actor=actor, why=why, until=until, count=count
        )
    return {
        "pending": f"Request #{rid} was sent to the approvers.",
        "auto_approved": (
            f"Request #{rid} was approved by the policy (automatic mode); the approvers were told."
        ),
        "approved": f"Request #{rid} was approved by {actor}{why}",
        "denied": f"Request #{rid} was denied by {actor}{why}",
        "active": f"Your access for request #{rid} is active.",
        "expired": f"Your access for request #{rid} has expired and was revoked.",
        "revoked": f"Your access for request #{rid} was revoked by {actor}{why}",
        "cancelled": f"Request #{rid} was cancelled by {actor}{why}",
        "timed_out": f"Request #{rid} timed out: no approver decided in time.",
        "failed": f"Request #{rid} failed: access could not be granted{why}",
    }.get(to, f"Request #{rid} is now {state_words(to)}.")


def _count(payload: Any) -> str:
    """ " (1 of 2)": the approvals a quorum has, where the step recorded them."""
    given, required = payload.get("approvals"), payload.get("required_approvals")
    if isinstance(given, int) and isinstance(required, int) and required > 1:
        return f" ({given} of {required})"
    return ""


def _moment(value: Any) -> str:
    """A queued ISO time as a date token; text that is not one is shown escaped."""
    try:
        return markup.when(datetime.fromisoformat(str(value)))
    except ValueError:
        return markup.escape(str(value))


def breakglass_text(note: Notification, view: Any) -> str | None:
    """The requester's headline for a step of their break-glass request, where it
    differs from an ordinary request's."""
    payload = note.payload
    rid = note.request_id
    incident = markup.escape(str(view.incident_ref or "-"))
    if payload.get("event") == "breakglass_reviewed":
        reason = markup.escape(str(payload.get("reason") or ""))
        return (
            f"Your break-glass request #{rid} ({incident}) was reviewed by "
            f"{markup.user(str(payload.get('actor') or ''))}: {reason}"
        )
    if payload.get("to") == "pending":
        raise Skipped(f"break-glass request {rid} never waits for approval")
    if payload.get("to") == "auto_approved":
        return (
            f":rotating_light: You broke glass for {incident}: request #{rid} is granted at "
            "once; every approver and admin was alerted and one of them will review it."
        )
    return None


#: The requester's one sentence for each extension step.
_EXTENSION_TEXT = {
    "extend": "Request #{rid} was extended{until} by {actor}{why}",
    "extension_requested": "Your extension of request #{rid}{until} was sent to the approvers.",
    "extension_approval_recorded": "The extension of request #{rid}{until}: {actor} approved"
    "{count}{why}; it still needs more approvals.",
    "extension_denied": "The extension of request #{rid} was denied by {actor}{why}. "
    "Your access still ends as before.",
    "extension_timed_out": "The extension of request #{rid} timed out: no approver decided "
    "in time. Your access still ends as before.",
}


def delivery_client(client: WebClient) -> WebClient:
    """A copy of ``client`` whose 429s reach the caller: the relay's pacer waits them
    out per method, where the SDK's handler would sleep in-line, with jitter."""
    return WebClient(
        token=client.token,
        base_url=client.base_url,
        timeout=client.timeout,
        ssl=client.ssl,
        proxy=client.proxy,
        headers=dict(client.headers),
        retry_handlers=[
            h for h in client.retry_handlers if not isinstance(h, RateLimitErrorRetryHandler)
        ],
    )


class SlackNotifier:
    def __init__(
        self,
        client: WebClient,
        service: JitService,
        *,
        pacer: SlackPacer | None = None,
    ) -> None:
        self.client = delivery_client(client)
        self.service = service
        if pacer is None:
            stopping = next(
                (h.stopping for h in client.retry_handlers if hasattr(h, "stopping")), None
            )
            pacer = SlackPacer(stopping=stopping)
        self.pacer = pacer
        #: People whose App Home shows something that changed; refreshed once per batch.
        self._stale_homes: set[str] = set()
        #: DM channel id per person: conversations.open once per person per process.
        self._dm_channels: dict[str, str] = {}
        self._dm_lock = threading.Lock()

    def deliver(self, note: Notification, now: datetime) -> None:
        if note.request_id is None or note.recipient is None:
            raise Undeliverable(f"a {note.kind} message names no request or no recipient")
        try:
            view = self.service.get_request(note.request_id)
        except NotFound:
            raise Undeliverable(f"request {note.request_id} no longer exists") from None
        if note.kind == OutboxKind.FEED_CARD:
            self._feed_card(note, view, now)
            return
        try:
            if note.kind == OutboxKind.BREAKGLASS_ALERT or (
                note.kind == OutboxKind.APPROVER_CARD and view.breakglass
            ):
                self._breakglass_alert(note, view, now)
            elif note.kind == OutboxKind.APPROVER_CARD:
                # Rendered from the current policy: a removed approver gets no buttons.
                app = self.service.get_app(view.app, include_removed=True)
                # A group Slack cannot answer for is a failed delivery (retried), never
                # "no members": that would take the buttons off a current approver's card.
                deciders = quorum.people(self.service.listing_directory, app.policy.approvers)
                current = note.recipient in deciders
                text, body = cards.approver_card(view, current=current, viewer=note.recipient)
                self._show_card(note, "approver", text, body, now)
            elif note.kind == OutboxKind.REQUESTER_UPDATE:
                headline = breakglass_text(note, view) if view.breakglass else None
                self._requester_update(note, view, now, headline=headline)
            elif note.kind == OutboxKind.ENDING_SOON:
                if view.state != "active" or view.end_requested is not None or now >= view.ends_at:
                    raise Skipped(f"request {view.id} is {view.state}: no reminder needed")
                reminded_end = note.payload.get("ends_at")
                if reminded_end is not None and reminded_end != view.ends_at.isoformat():
                    raise Skipped(f"request {view.id} was extended: a reminder for the new end")
                # The card shows nothing new: only the reply, broadcast (it matters).
                channel, ts, posted = self._requester_card(note, view, now, edit=False)
                text, body = cards.step_reply(cards.ending_soon_text(view))
                self._reply(note, channel, ts, text, body, broadcast=not posted, now=now)
            elif note.kind == OutboxKind.EXTENSION_CARD:
                self._extension_card(note, view, now)
            elif note.kind == OutboxKind.REVOKE_FAILING:
                # An alert to act on: broadcast in the thread of their card.
                text, body = cards.revoke_failing(view)
                parent = self._parent_card(view, note.recipient)
                self._reply(note, parent[0], parent[1], text, body, broadcast=True, now=now)
            elif note.kind == OutboxKind.ACTIVITY_SUMMARY:
                data = note.payload.get("summary")
                if not isinstance(data, dict):
                    raise Undeliverable(f"activity summary for request {view.id} has no summary")
                summary = ActivitySummary.from_dict(data)
                digest = str(note.payload.get("sha256") or "")
                text, body = cards.activity_summary(view, summary, digest)
                # Posted as a separate message by older versions: never twice.
                if self._card(view.id, note.recipient, "activity") is None:
                    parent = self._parent_card(view, note.recipient)
                    self._reply(note, parent[0], parent[1], text, body, broadcast=False, now=now)
            else:
                raise Undeliverable(f"unknown outbox kind {note.kind!r}")
            self._stale_homes.add(note.recipient)
        except SlackApiError as exc:
            error = str(exc.response.get("error", ""))
            if error in PERMANENT_ERRORS:
                raise Undeliverable(f"Slack said {error}") from None
            raise

    def _breakglass_alert(self, note: Notification, view: Any, now: datetime) -> None:
        """The alert card, one per person, edited in place; rendered from the current
        approvers and admins (groups expanded), so one who left gets no buttons."""
        current = note.recipient in self.service.breakglass.reviewers_of_app(view.app)
        text, body = cards.breakglass_alert(view, current=current)
        self._show_card(note, "breakglass", text, body, now)

    # -- the application's feed channel ----------------------------------------------
    def _feed_card(self, note: Notification, view: Any, now: datetime) -> None:
        """Post the request to its application's feed channel, or edit the message
        already there. A message is never started in a channel the application no
        longer names (the feed was turned off or moved); one already posted is kept
        current. No App Home changes: a channel has none."""
        channel = note.recipient
        assert channel is not None and note.request_id is not None
        card = self._card(note.request_id, channel, "feed")
        if card is None:
            app = self.service.get_app(view.app, include_removed=True)
            if app.policy.feed_channel != channel:
                raise Skipped(f"{view.app} no longer posts to {channel}")
        text, body = cards.feed_card(view)
        try:
            self._show_card(note, "feed", text, body, now, post_to=channel)
        except SlackApiError as exc:
            error = str(exc.response.get("error", ""))
            if error in CHANNEL_ERRORS:
                raise Undeliverable(
                    f"Slack said {error} for the feed channel {channel} of {view.app}: "
                    f"{CHANNEL_ERRORS[error]}"
                ) from None
            if error in PERMANENT_ERRORS:
                raise Undeliverable(f"Slack said {error}") from None
            raise

    # -- cards -----------------------------------------------------------------------
    def _show_card(
        self,
        note: Notification,
        role: str,
        text: str,
        body: list[dict[str, Any]],
        now: datetime,
        *,
        post_to: str | None = None,
        edit: bool = True,
    ) -> tuple[str, str, bool]:
        """Edit the card in place, or post it (to the recipient's DM, or ``post_to``)
        when there is none or Slack says it is gone. Returns where the card is and
        whether it was posted just now. With ``edit`` False an existing card is left
        as it is (a newer queued message will edit it)."""
        assert note.recipient is not None and note.request_id is not None
        card = self._card(note.request_id, note.recipient, role)
        if card is not None and (card[2] == note.dedup_key or not edit):
            # Already shows this very message (a redelivery after a crash), or is left
            # for the newer message to edit.
            return card[0], card[1], False
        shown = _digest(text, body)
        if card is not None and card[3] == shown:
            # Slack already shows exactly this (e.g. the card was posted a moment ago,
            # rendered from the request as it is now): no edit needed.
            self._remember(note, role, card[0], card[1], now, headline=shown)
            return card[0], card[1], False
        if card is not None:
            try:
                self._update(card[0], card[1], text, body)
                self._remember(note, role, card[0], card[1], now, headline=shown)
                return card[0], card[1], False
            except SlackApiError as exc:
                if exc.response.get("error") != "message_not_found":
                    raise
        if post_to is not None:
            channel, ts = self._post_in(post_to, text, body)
        else:
            channel, ts = self._post(note.recipient, text, body)
        self._remember(note, role, channel, ts, now, headline=shown)
        return channel, ts, True

    def _reply(
        self,
        note: Notification,
        channel: str | None,
        thread_ts: str | None,
        text: str,
        body: list[dict[str, Any]],
        *,
        broadcast: bool,
        now: datetime,
    ) -> tuple[str, str]:
        """Post the reply telling ``note`` in the thread of ``thread_ts`` (on its own
        in the recipient's DM when there is no card to reply to), once: a redelivery
        finds the reply remembered under the message's dedup key and posts nothing."""
        assert note.recipient is not None and note.request_id is not None
        done = self._messages.reply(note.dedup_key)
        if done is not None:
            return done
        if channel is None or thread_ts is None:
            posted = self._post(note.recipient, text, body)
        else:
            posted = self._post_in(
                channel, text, body, thread_ts=thread_ts, reply_broadcast=broadcast
            )
        self._messages.remember_reply(
            note.dedup_key,
            note.request_id,
            note.recipient,
            channel=posted[0],
            thread_ts=thread_ts if channel is not None else None,
            ts=posted[1],
            now=now,
        )
        return posted

    def _parent_card(self, view: Any, recipient: str) -> tuple[str | None, str | None]:
        """The recipient's card for the request a reply goes under: their own request's
        card, else their approver card or break-glass alert; (None, None) when they
        have none."""
        roles = ("requester", "approver", "breakglass")
        if recipient != view.requester:
            roles = ("approver", "breakglass", "requester")
        for role in roles:
            card = self._card(view.id, recipient, role)
            if card is not None:
                return card[0], card[1]
        return None, None

    def _extension_card(self, note: Notification, view: Any, now: datetime) -> None:
        """An approver's extension card: a broadcast reply in the thread of their card
        for the request, posted when an extension is asked (or made by the policy), so
        they are notified and see it under the request; edited in place when decided.
        Its buttons keep their block id (:func:`cards.extension_block_id`)."""
        assert note.recipient is not None and note.request_id is not None
        text, body = cards.extension_card(view, dict(note.payload), viewer=note.recipient)
        card = self._card(note.request_id, note.recipient, "extension")
        if card is not None and card[2] == note.dedup_key:
            return
        if card is not None and not note.payload.get("post"):
            try:
                self._update(card[0], card[1], text, body)
                self._remember(note, "extension", card[0], card[1], now)
                return
            except SlackApiError as exc:
                if exc.response.get("error") != "message_not_found":
                    raise
        parent = self._parent_card(view, note.recipient)
        channel, ts = self._reply(note, parent[0], parent[1], text, body, broadcast=True, now=now)
        self._remember(note, "extension", channel, ts, now)

    def _requester_card(
        self, note: Notification, view: Any, now: datetime, *, edit: bool = True
    ) -> tuple[str, str, bool]:
        """The requester's one card for the request: posted once, then edited in place;
        its first line is the state now, its buttons the actions offered now."""
        text, body = cards.requester_card(view)
        return self._show_card(note, "requester", text, body, now, edit=edit)

    def _requester_update(
        self, note: Notification, view: Any, now: datetime, headline: str | None = None
    ) -> None:
        """Bring the requester's card up to date and tell the step in its thread.

        When a newer status message for the same request is already queued
        (``note.followed``), the card is left for that message to edit (each card is
        edited once, not once per queued step), but this step's reply is still posted:
        each step is news."""
        assert note.recipient is not None and note.request_id is not None
        if note.payload.get("to") == "pending" and view.decided_by == POLICY_ACTOR:
            # Approved by the policy as it was submitted: it never waited for anyone, and
            # the next step says the policy approved it and the approvers were told.
            self._requester_card(note, view, now, edit=not note.followed)
            return
        step = headline or transition_text(note)
        channel, ts, posted = self._requester_card(note, view, now, edit=not note.followed)
        text, body = cards.step_reply(step)
        broadcast = not posted and _tells_requester(note, view)
        self._reply(note, channel, ts, text, body, broadcast=broadcast, now=now)

    def _post(self, user_id: str, text: str, body: list[dict[str, Any]]) -> tuple[str, str]:
        return self._post_in(self._dm_channel(user_id), text, body)

    def _post_in(
        self,
        channel: str,
        text: str,
        body: list[dict[str, Any]],
        *,
        thread_ts: str | None = None,
        reply_broadcast: bool = False,
    ) -> tuple[str, str]:
        threaded: dict[str, Any] = {}
        if thread_ts is not None:
            threaded = {"thread_ts": thread_ts, "reply_broadcast": reply_broadcast}
        response = self.pacer.call(
            "chat.postMessage",
            lambda: answers.call(
                "chat.postMessage",
                lambda: self.client.chat_postMessage(
                    channel=channel, text=text, blocks=body, **threaded
                ),
            ),
            channel=channel,
        )
        return answers.posted(response)

    def _update(self, channel: str, ts: str, text: str, body: list[dict[str, Any]]) -> None:
        self.pacer.call(
            "chat.update",
            lambda: answers.call(
                "chat.update",
                lambda: self.client.chat_update(channel=channel, ts=ts, text=text, blocks=body),
            ),
            channel=channel,
        )

    def _dm_channel(self, user_id: str) -> str:
        with self._dm_lock:
            cached = self._dm_channels.get(user_id)
        if cached is not None:
            return cached
        response = self.pacer.call(
            "conversations.open",
            lambda: answers.call(
                "conversations.open", lambda: self.client.conversations_open(users=user_id)
            ),
        )
        channel = answers.dm_channel(response)
        with self._dm_lock:
            self._dm_channels[user_id] = channel
        return channel

    @property
    def _messages(self) -> SlackMessages:
        return SlackMessages(self.service.db)

    def _card(self, request_id: int, recipient: str, role: str) -> _CardRef | None:
        card = self._messages.card(request_id, recipient, role)
        return None if card is None else (card.channel, card.ts, card.last_dedup_key, card.headline)

    def _remember(
        self,
        note: Notification,
        role: str,
        channel: str,
        ts: str,
        now: datetime,
        *,
        headline: str | None = None,
    ) -> None:
        assert note.recipient is not None and note.request_id is not None
        self._messages.remember_card(
            note.request_id,
            note.recipient,
            role,
            channel=channel,
            ts=ts,
            dedup_key=note.dedup_key,
            headline=headline,
            now=now,
        )

    # -- home ------------------------------------------------------------------------
    def after_batch(self, now: datetime) -> None:
        """Refresh each changed App Home once, however many messages concerned it."""
        for user_id in sorted(self._stale_homes):
            try:
                self.publish_home(user_id, now)
            except SlackApiError as exc:
                log.info("home of %s not refreshed: %s", user_id, exc.response.get("error"))
                continue
            self._stale_homes.discard(user_id)

    def publish_home(self, user_id: str, now: datetime) -> None:
        view = home_for(self.service, user_id, now)
        self.pacer.call(
            "views.publish",
            lambda: answers.call(
                "views.publish", lambda: self.client.views_publish(user_id=user_id, view=view)
            ),
        )


#: The requester's steps that end the request: broadcast unless they ended it.
_ENDINGS = frozenset({"expired", "revoked", "failed", "timed_out", "cancelled"})
#: The requester's other steps that are broadcast (they must hear of them).
_TOLD_STEPS = frozenset({"approved", "auto_approved", "denied", "active"})
#: Steps on the way to a decision: a quiet reply (nothing was decided yet).
_QUIET_EVENTS = frozenset({APPROVAL_RECORDED, "extension_requested", "extension_approval_recorded"})
#: Extension events whose outcome the requester must hear of.
_TOLD_EXTENSION_EVENTS = frozenset({"extend", "extension_denied", "extension_timed_out"})


def _tells_requester(note: Notification, view: Any) -> bool:
    """Whether a requester's step is a broadcast reply (it notifies; see the module
    docstring): approval, denial, activation, the end (unless they ended it
    themselves), an extension's outcome (unless they extended it themselves)."""
    payload = note.payload
    event = payload.get("event")
    actor = str(payload.get("actor") or "")
    if event in _QUIET_EVENTS:
        return False
    if event == "breakglass_reviewed":
        return True
    if event in _TOLD_EXTENSION_EVENTS:
        return actor != str(view.requester)
    to = str(payload.get("to") or "")
    if to in _ENDINGS:
        return actor != str(view.requester)
    return to in _TOLD_STEPS


def _digest(text: str, body: list[dict[str, Any]]) -> str:
    """What a card shows, in short: kept with the card (the ``headline`` column), so an
    edit that would change nothing on screen is not sent."""
    shown = json.dumps([text, body], sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(shown.encode()).hexdigest()


def home_for(service: JitService, user_id: str, now: datetime) -> dict[str, Any]:
    apps = service.list_apps()
    oversees = any(
        user_id in a.admins or user_id in service.approvers_of(a.policy.approvers) for a in apps
    )
    return home.home_view(
        pending=service.pending_for(user_id),
        mine=service.list_requests(requester=user_id, limit=markup.HOME_ITEMS_MAX),
        overseen=service.overseen_active(user_id) if oversees else None,
        now=now,
        unreviewed=service.breakglass.needs_review(user_id),
    )
