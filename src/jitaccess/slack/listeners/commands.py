"""``/jit``: the slash command's listener. It acks at once (everything a command says
goes to its response_url, refusals included) and answers after the ack."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from jitaccess.app.commands import ApproveRequest, ExtendRequest, SubmitRequest, handle
from jitaccess.app.extensions import ExtensionOutcome
from jitaccess.app.native import SIGN_IN_LABEL
from jitaccess.domain.durations import format_duration
from jitaccess.domain.errors import JitError
from jitaccess.domain.lifecycle import RequestState, state_words
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.slack.blocks import home, markup
from jitaccess.slack.commands import HELP, Command, UsageError, app_command, parse
from jitaccess.slack.listeners.base import ListenerBase, guarded

HISTORY_PAGE = 10


def _extension_reply(outcome: ExtensionOutcome) -> str:
    view = outcome.request
    if outcome.status == "extended":
        return (
            f"Request #{view.id} extended: it now ends {markup.when(view.ends_at)} "
            "(same access, no gap)."
        )
    assert view.extension_ends_at is not None
    return (
        f"The extension of request #{view.id} to {markup.when(view.extension_ends_at)} "
        "was sent to the approvers; your access stays as it is meanwhile."
    )


def _submitted_state(state: str) -> str:
    """What a submitted request is now, in words."""
    if state == RequestState.AUTO_APPROVED:
        return "It was approved by the policy (automatic mode); the approvers were told."
    return f"It is {state_words(state)}."


class CommandListeners(ListenerBase):
    @guarded
    def on_command(
        self, ack: Ack, command: dict[str, Any], respond: Respond, client: WebClient
    ) -> None:
        user = command["user_id"]
        now = self.clock()
        try:
            cmd: Command | UsageError = parse(command.get("text") or "")
        except UsageError as exc:
            cmd = exc
        # Everything a command says goes to its response_url, refusals included, so
        # nothing is worth checking before the ack: the write checks the rules itself.
        ack()

        def work() -> None:
            if isinstance(cmd, UsageError):
                respond(text=markup.escape(str(cmd)))
            elif cmd.name == "request_form":
                self._open_request_form(client, command["trigger_id"], user)
            elif cmd.name == "config":
                self._open_config(client, command["trigger_id"], user, cmd.app or "")
            else:
                try:
                    text, body = self._run(cmd, user, now)
                except JitError as exc:
                    respond(text=markup.mention_users(exc))
                    return
                respond(text=text, blocks=body)

        self._later("/jit", work, lambda text: respond(text=text))

    def _run(
        self, cmd: Command, user: str, now: datetime
    ) -> tuple[str, list[dict[str, Any]] | None]:
        service = self.service
        if cmd.name == "help":
            return HELP, None
        if cmd.name == "signin":
            link = service.signins.link_for(user, now=now)
            return (
                f"{markup.link(link, SIGN_IN_LABEL)} to link your Entra account: the link is "
                "yours alone, works once and expires in 10 minutes. jitaccess then acts in "
                "Azure as you (your requests and approvals); `/jit signout` undoes it."
            ), None
        if cmd.name == "signout":
            gone = service.signins.sign_out(user, actor=user, now=now)
            return (
                "Signed out: jitaccess forgot your Microsoft sign-in."
                if gone
                else "You were not signed in with Microsoft."
            ), None
        if cmd.name == "list":
            views = service.list_requests(requester=user, limit=markup.HOME_ITEMS_MAX)
            return "Your requests", home.request_list(
                "Your requests", views, now, empty="You have no requests yet."
            )
        if cmd.name == "pending":
            if cmd.app:
                service.check_can_read(cmd.app, user)
                views = [v for v in service.list_requests(app=cmd.app, state="pending")][::-1]
                title = f"Waiting for approval on {markup.escape(cmd.app)}"
            else:
                views = service.pending_for(user)
                title = "Waiting for your approval (all applications)"
            body = home.request_list(title, views, now, empty="Nothing is waiting.")
            unreviewed = [
                v for v in service.breakglass.needs_review(user) if cmd.app in (None, v.app)
            ]
            if unreviewed:
                body = home.review_list(unreviewed, now) + body
            return title, body
        if cmd.name in self._commands:
            return self._commands[cmd.name](cmd, user, now), None
        if cmd.name == "apps":
            return self._apps_text(user), None
        if cmd.name == "history":
            assert cmd.app
            service.check_can_read(cmd.app, user)
            views = service.history(
                cmd.app, limit=HISTORY_PAGE + 1, offset=(cmd.page - 1) * HISTORY_PAGE
            )
            more = len(views) > HISTORY_PAGE
            app_md = markup.escape(cmd.app)
            title = f"History of {app_md}, page {cmd.page}"
            body = home.request_list(
                title, views[:HISTORY_PAGE], now, empty="No requests on this page."
            )
            if more:
                body.append(
                    {
                        "type": "context",
                        "elements": [
                            {
                                "type": "mrkdwn",
                                "text": f"More: `/jit history {app_md} {cmd.page + 1}`",
                            }
                        ],
                    }
                )
            return title, body
        action = app_command(cmd, user)
        if action is None:  # pragma: no cover - parse() only returns the names above
            raise UsageError(f"Unknown command {cmd.name}")
        if isinstance(action, ExtendRequest):
            return _extension_reply(handle(service, action, now)), None
        view = handle(service, action, now)
        if isinstance(action, SubmitRequest):
            waiting = (
                " Waiting for one of: "
                + ", ".join(markup.user(a) for a in view.notified_approvers)
                + "."
                if view.state == "pending"
                else ""
            )
            return (
                f"Request #{view.id} submitted: {markup.escape(view.role)} on "
                f"{markup.escape(view.app)}, "
                f"{markup.window(view)}. {_submitted_state(view.state)}{waiting}"
            ), None
        if isinstance(action, ApproveRequest) and view.state == "pending":
            progress = markup.quorum_progress(view)
            return f"Your approval of request #{view.id} is recorded: {progress}.", None
        return f"Request #{view.id} is now {view.status_line(now, at=markup.when)}.", None

    def _apps_text(self, user: str) -> str:
        lines = []
        for app in self.service.list_apps():
            roles = [
                label
                for label, members in (
                    ("publisher", app.publishers),
                    ("approver", self.service.approvers_of(app.policy.approvers)),
                    ("admin", app.admins),
                    ("break-glass", app.policy.breakglass),
                )
                if user in members
            ]
            if not app.jit_enabled:
                policy = markup.escape("JIT disabled (publisher has permanent access)")
            else:
                policy = _approval_text(app.policy) + markup.escape(
                    f", up to {format_duration(app.policy.max_duration)}, roles "
                    f"{', '.join(app.eligible_roles)}"
                )
            you = f" · you: {', '.join(roles)}" if roles else ""
            # A validated channel ID: Slack shows the channel's current name.
            feed = f" · feed <#{app.policy.feed_channel}>" if app.policy.feed_channel else ""
            lines.append(f"• *{markup.escape(app.name)}*: {policy}{feed}{you}")
        return "\n".join(lines) or "No applications are registered yet."


def _approval_text(policy: Policy) -> str:
    """Who approves, as mrkdwn: "2 approvals required from <!subteam^S…>, <@U…>", or
    "approved automatically by the policy; approvers told: <@U…>". User groups show as
    group mentions (Slack shows the group's current name)."""
    who = ", ".join(markup.user(a) for a in policy.approvers) or "nobody"
    if policy.mode == ApprovalMode.AUTOMATIC:
        return f"approved automatically by the policy; approvers told: {who}"
    required = policy.required_approvals
    needed = "1 approval required" if required <= 1 else f"{required} approvals required"
    return f"{needed} from {who}"


def register(app: App, listeners: CommandListeners) -> None:
    """Wire ``/jit``."""
    app.command("/jit")(listeners.on_command)
