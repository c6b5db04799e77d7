"""Events API events: the App Home opened, a user group's members changed. Bolt acks
events itself, before the listener; a retried delivery is handled once."""

from __future__ import annotations

from typing import Any

from slack_bolt import App
from slack_sdk import WebClient

from jitaccess.app.slack_messages import SlackMessages
from jitaccess.slack.listeners.base import ListenerBase, guarded, log
from jitaccess.slack.notifier import home_for
from jitaccess.slack.replay import first_event_delivery


class EventListeners(ListenerBase):
    @guarded
    def on_home_opened(
        self, event: dict[str, Any], body: dict[str, Any], client: WebClient
    ) -> None:
        if event.get("tab", "home") != "home":
            return
        user = event["user"]

        # (Bolt acks events itself, before the listener.)
        def work() -> None:
            if not self._first_delivery(body.get("event_id")):
                return  # Slack retried an event we already handled
            client.views_publish(
                user_id=user,
                view=home_for(self.service, user, self.clock()),
            )

        self._later("App Home", work, None)

    def on_group_members_changed(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """A user group's members changed: pending requests naming it get cards for new
        members, and members who left see theirs lose the buttons."""
        group = event.get("subteam_id")
        if not isinstance(group, str) or not group:
            log.warning("ignoring a subteam_members_changed event without a subteam_id")
            return

        def work() -> None:
            if not self._first_delivery(body.get("event_id")):
                return
            touched = self.service.group_members_changed(group, now=self.clock())
            log.info("user group %s changed: %d pending request(s) updated", group, touched)

        self._later("user group change", work, None)

    def _first_delivery(self, event_id: str | None) -> bool:
        if not event_id:
            return True
        return first_event_delivery(SlackMessages(self.service.db), event_id, self.clock())


def register(app: App, listeners: EventListeners) -> None:
    """Wire the events jitaccess subscribes to."""
    app.event("app_home_opened")(listeners.on_home_opened)
    app.event("subteam_members_changed")(listeners.on_group_members_changed)
