"""Bolt listeners: they only translate between Slack and the service.

Ack first. Before its ``ack()`` a listener only validates: the request's own data,
the pure rules and cheap reads (so a modal's errors still come back inline, in the
ack). Writes, Slack calls (modals, replies, cards) and listings follow the ack, handed
to :class:`~jitaccess.slack.runtime.AfterAck` so that Bolt's listener threads are free
for the next request's ack. A refusal only the write can discover (someone decided
meanwhile, the policy changed) reaches the user as an ephemeral message or a DM.
Buttons carry only a request id; the service re-checks from the database who may act.
"""

from __future__ import annotations

from slack_bolt import App

from jitaccess.slack.listeners import actions, commands, events, views
from jitaccess.slack.listeners.actions import ActionListeners
from jitaccess.slack.listeners.commands import CommandListeners
from jitaccess.slack.listeners.events import EventListeners
from jitaccess.slack.listeners.views import ViewListeners


class SlackFrontEnd(CommandListeners, ActionListeners, ViewListeners, EventListeners):
    """Every kind of listener on one shared state (see :class:`.base.ListenerBase`)."""

    def register(self, app: App) -> None:
        """Wire every listener, kind by kind (each kind's module has its ``register``)."""
        commands.register(app, self)
        actions.register(app, self)
        views.register(app, self)
        events.register(app, self)
