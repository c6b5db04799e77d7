"""Delivers outbox messages to Slack: approver cards (posted once, then edited in
place), the requester's status cards, reminders and alerts, and the App Home.

Each delivery renders the request as it is *now* in the database, so a late or
repeated delivery shows current truth (which is what lets the relay coalesce several
queued updates of one approver card into one call). A card remembers the outbox
message it last showed, so redelivering the same message after a crash is a no-op.

Slack calls go through a :class:`~jitaccess.slack.pacing.SlackPacer` (per-method
pacing and Retry-After, instead of the SDK sleeping out each 429 in-line), and DM
channel ids are cached, so ``conversations.open`` is called once per person per process.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, tzinfo
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from jitaccess.answers import AnswerRejected
from jitaccess.app import quorum
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
#: channel, ts, the outbox key it last showed, its first line
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


class TimeZones:
    """Each person's time zone from ``users.info``, cached for an hour."""

    def __init__(
        self, client: WebClient, ttl: float = 3600.0, pacer: SlackPacer | None = None
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._pacer = pacer
        self._cache: dict[str, tuple[float, tzinfo]] = {}
        self._lock = threading.Lock()

    def of(self, user_id: str) -> tzinfo:
        with self._lock:
            hit = self._cache.get(user_id)
        if hit and time.monotonic() - hit[0] < self._ttl:
            return hit[1]

        def ask() -> answers.Answer:
            return answers.call("users.info", lambda: self._client.users_info(user=user_id))

        try:
            info = ask() if self._pacer is None else self._pacer.call("users.info", ask)
            tz = markup.zone(answers.time_zone(info) or "")
        except SlackApiError as exc:
            log.info(
                "users.info failed for %s (%s); showing UTC", user_id, exc.response.get("error")
            )
            return markup.zone(None)
        except AnswerRejected:  # logged and counted; asked again next time
            return markup.zone(None)
        with self._lock:
            self._cache[user_id] = (time.monotonic(), tz)
        return tz


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
        zones: TimeZones | None = None,
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
        self.zones = zones or TimeZones(self.client, pacer=pacer)
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
        tz = self.zones.of(note.recipient)
        try:
            if note.kind == OutboxKind.BREAKGLASS_ALERT or (
                note.kind == OutboxKind.APPROVER_CARD and view.breakglass
            ):
                self._breakglass_alert(note, view, tz, now)
            elif note.kind == OutboxKind.APPROVER_CARD:
                # Rendered from the current policy: a removed approver gets no buttons.
                app = self.service.get_app(view.app, include_removed=True)
                # A group Slack cannot answer for is a failed delivery (retried), never
                # "no members": that would take the buttons off a current approver's card.
                deciders = quorum.people(self.service.listing_directory, app.policy.approvers)
                current = note.recipient in deciders
                text, body = cards.approver_card(view, tz, current=current, viewer=note.recipient)
                self._show_card(note, "approver", text, body, now)
            elif note.kind == OutboxKind.REQUESTER_UPDATE:
                headline = breakglass_text(note, view) if view.breakglass else None
                self._requester_update(note, view, tz, now, headline=headline)
            elif note.kind == OutboxKind.ENDING_SOON:
                if view.state != "active" or view.end_requested is not None or now >= view.ends_at:
                    raise Skipped(f"request {view.id} is {view.state}: no reminder needed")
                reminded_end = note.payload.get("ends_at")
                if reminded_end is not None and reminded_end != view.ends_at.isoformat():
                    raise Skipped(f"request {view.id} was extended: a reminder for the new end")
                self._requester_update(
                    note, view, tz, now, headline=cards.ending_soon_text(view, tz)
                )
            elif note.kind == OutboxKind.EXTENSION_CARD:
                self._extension_card(note, view, tz, now)
            elif note.kind == OutboxKind.REVOKE_FAILING:
                text, body = cards.revoke_failing(view, tz)
                self._post(note.recipient, text, body)
            elif note.kind == OutboxKind.ACTIVITY_SUMMARY:
                data = note.payload.get("summary")
                if not isinstance(data, dict):
                    raise Undeliverable(f"activity summary for request {view.id} has no summary")
                summary = ActivitySummary.from_dict(data)
                digest = str(note.payload.get("sha256") or "")
                text, body = cards.activity_summary(view, summary, digest, tz)
                # Posted once: a redelivery after a crash finds it remembered.
                if self._card(view.id, note.recipient, "activity") is None:
                    channel, ts = self._post(note.recipient, text, body)
                    self._remember(note, "activity", channel, ts, now)
            else:
                raise Undeliverable(f"unknown outbox kind {note.kind!r}")
            self._stale_homes.add(note.recipient)
        except SlackApiError as exc:
            error = str(exc.response.get("error", ""))
            if error in PERMANENT_ERRORS:
                raise Undeliverable(f"Slack said {error}") from None
            raise

    def _breakglass_alert(self, note: Notification, view: Any, tz: tzinfo, now: datetime) -> None:
        """The alert card, one per person, edited in place; rendered from the current
        approvers and admins (groups expanded), so one who left gets no buttons."""
        current = note.recipient in self.service.breakglass.reviewers_of_app(view.app)
        text, body = cards.breakglass_alert(view, tz, current=current)
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
    ) -> None:
        """Edit the card in place, or post it (to the recipient's DM, or ``post_to``)."""
        assert note.recipient is not None and note.request_id is not None
        card = self._card(note.request_id, note.recipient, role)
        if card is not None and card[2] == note.dedup_key:
            return  # this very message was already shown (redelivery after a crash)
        if card is not None:
            try:
                self._update(card[0], card[1], text, body)
                self._remember(note, role, card[0], card[1], now)
                return
            except SlackApiError as exc:
                if exc.response.get("error") != "message_not_found":
                    raise
        if post_to is not None:
            channel, ts = self._post_in(post_to, text, body)
        else:
            channel, ts = self._post(note.recipient, text, body)
        self._remember(note, role, channel, ts, now)

    def _extension_card(self, note: Notification, view: Any, tz: tzinfo, now: datetime) -> None:
        """An approver's extension card: posted when an extension is asked (or made by
        the policy), so they are notified; edited in place when it is decided."""
        assert note.recipient is not None and note.request_id is not None
        text, body = cards.extension_card(view, tz, dict(note.payload), viewer=note.recipient)
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
        channel, ts = self._post(note.recipient, text, body)
        self._remember(note, "extension", channel, ts, now)

    def _requester_update(
        self, note: Notification, view: Any, tz: tzinfo, now: datetime, headline: str | None = None
    ) -> None:
        """Post a new status card (so the requester is notified) and take the
        buttons off the previous one, so only the latest card can act.

        When a newer status message for the same request is already queued
        (``note.followed``), this one is posted without buttons and the card of record
        stays the previous one: the newer message takes the buttons off it, so each
        card is edited once, not once per queued step."""
        assert note.recipient is not None and note.request_id is not None
        previous = self._card(note.request_id, note.recipient, "requester")
        if previous is not None and previous[2] == note.dedup_key:
            return
        headline = headline or transition_text(note)
        body = _headed(headline, view, tz, not note.followed)
        channel, ts = self._post(note.recipient, headline, body)
        if note.followed and previous is not None:
            # Remember only that this message was shown (a redelivery is a no-op).
            self._remember(note, "requester", previous[0], previous[1], now, headline=previous[3])
            return
        self._remember(note, "requester", channel, ts, now, headline=headline)
        if previous is not None:
            # The older card keeps its own first line but loses its buttons.
            old_headline = previous[3] or headline
            try:
                self._update(
                    previous[0], previous[1], old_headline, _headed(old_headline, view, tz, False)
                )
            except SlackApiError as exc:
                log.info("could not refresh an older card: %s", exc.response.get("error"))

    def _post(self, user_id: str, text: str, body: list[dict[str, Any]]) -> tuple[str, str]:
        return self._post_in(self._dm_channel(user_id), text, body)

    def _post_in(self, channel: str, text: str, body: list[dict[str, Any]]) -> tuple[str, str]:
        response = self.pacer.call(
            "chat.postMessage",
            lambda: answers.call(
                "chat.postMessage",
                lambda: self.client.chat_postMessage(channel=channel, text=text, blocks=body),
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
        view = home_for(self.service, user_id, self.zones.of(user_id), now)
        self.pacer.call(
            "views.publish",
            lambda: answers.call(
                "views.publish", lambda: self.client.views_publish(user_id=user_id, view=view)
            ),
        )


def _headed(headline: str, view: Any, tz: tzinfo, with_buttons: bool) -> list[dict[str, Any]]:
    _, body = cards.requester_card(view, tz, with_buttons=with_buttons)
    return [{"type": "section", "text": {"type": "mrkdwn", "text": headline}}, *body]


def home_for(service: JitService, user_id: str, tz: tzinfo, now: datetime) -> dict[str, Any]:
    apps = service.list_apps()
    oversees = any(
        user_id in a.admins or user_id in service.approvers_of(a.policy.approvers) for a in apps
    )
    return home.home_view(
        pending=service.pending_for(user_id),
        mine=service.list_requests(requester=user_id, limit=markup.HOME_ITEMS_MAX),
        overseen=service.overseen_active(user_id) if oversees else None,
        tz=tz,
        now=now,
        unreviewed=service.breakglass.needs_review(user_id),
    )
