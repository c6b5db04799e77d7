"""Modal submissions: the request form, the reason form of a decision, the extend form
and the policy form. Before the ack each checks the form and the rules on a read (so
errors come back inline, beside their field); the write follows the ack."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from jitaccess.app.commands import (
    ApproveExtension,
    ApproveRequest,
    DenyExtension,
    DenyRequest,
    RequestCommand,
    RevokeAccess,
    handle,
)
from jitaccess.domain import policy as rules
from jitaccess.domain.durations import parse_duration
from jitaccess.domain.errors import JitError, NotFound, Problems, RuleViolation
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.slack.blocks import cards, ids, markup, modals
from jitaccess.slack.listeners.base import (
    MAX_REQUEST_ID,
    OUT_OF_DATE,
    ListenerBase,
    form_text,
    guarded,
)
from jitaccess.slack.principals import SLACK_PRINCIPALS, is_group

REQUEST_FIELDS = {"app", "role", "start", "duration", "justification"}
CONFIG_FIELDS = {
    "mode",
    "max_duration",
    "approvers",
    "approver_groups",
    "approval_timeout",
    "required_approvals",
    "feed_channel",
}


def check_group_ids(text: str) -> list[str]:
    """The user group IDs typed in the config form (spaces or commas between them)."""
    found = []
    for token in text.replace(",", " ").split():
        entry = rules.check_approver_id(token, SLACK_PRINCIPALS)
        if not is_group(entry):
            raise RuleViolation(
                f"'{entry}' is a person, not a user group (S…): pick people under Approvers",
                field="approver_groups",
            )
        found.append(entry)
    return found


class ViewListeners(ListenerBase):
    @guarded
    def on_request_submitted(
        self, ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        user = body["user"]["id"]
        try:
            values = view["state"]["values"]
            app_name = form_text(values["app"][ids.APP_PICKED]["selected_option"]["value"])
            role = form_text(values["role"]["role"]["selected_option"]["value"])
            duration = parse_duration(
                form_text(values["duration"]["duration"]["selected_option"]["value"])
            )
            picked = values.get("start", {}).get("start", {}).get("selected_date_time")
            justification = form_text(values["justification"]["justification"].get("value") or "")
            initial = json.loads(view.get("private_metadata") or "{}").get("start")
            # The picker starts at "now when the form opened": left unchanged it means now.
            starts_at = (
                None if picked in (None, initial) else datetime.fromtimestamp(int(picked), UTC)
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, OSError):
            ack(
                response_action="errors",
                errors={"justification": OUT_OF_DATE.format(again="run /jit request again")},
            )
            return
        now = self.clock()
        # The submission's own rules, on a read of the application: errors stay inline.
        try:
            app = self.service.get_app(app_name)
            rules.check_submission(app.rules(), user, role, duration, starts_at, justification, now)
        except RuleViolation as exc:
            field = exc.field if exc.field in REQUEST_FIELDS else "justification"
            shown = markup.truncate(markup.plain_message(exc, now), 2000)
            ack(response_action="errors", errors={field: shown})
            return
        except NotFound as exc:
            ack(response_action="errors", errors={"app": str(exc)})
            return
        ack()

        def work() -> None:
            try:
                self.service.submit(
                    app_name,
                    requester=user,
                    role=role,
                    duration=duration,
                    justification=justification,
                    starts_at=starts_at,
                    now=now,
                )
            except JitError as exc:  # the policy changed since the check: say so
                self._tell(client, {}, user, exc, dm=True)

        self._later(
            "request submission", work, lambda text: self._tell(client, {}, user, text, dm=True)
        )

    @guarded
    def on_decision_submitted(
        self, ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        form = self._read_reason_form(ack, view, needs_decision=True)
        if form is None:
            return
        user, request_id, decision = body["user"]["id"], form.request_id, form.decision
        shown_end = cards.shown_extension_end(
            f"extension:{request_id}:{form.meta.get('shown_end')}"
        )

        def act(reason: str, now: datetime) -> None:
            command: RequestCommand
            if decision == "approve_extension":
                command = ApproveExtension(request_id, user, reason, shown_end=shown_end)
            elif decision == "deny_extension":
                command = DenyExtension(request_id, user, reason, shown_end=shown_end)
            elif decision == "approve":
                command = ApproveRequest(request_id, user, reason)
            elif decision == "deny":
                command = DenyRequest(request_id, user, reason)
            else:
                command = RevokeAccess(request_id, user, reason)
            handle(self.service, command, now)

        self._act_on_reason_form(
            ack,
            client,
            user,
            form,
            what=decision,
            verb=decision.replace("_", " the "),
            refusal_of=lambda: self._refusal(request_id, user, decision),
            act=act,
            tell_refusal=True,
        )

    @guarded
    def on_extend_submitted(
        self, ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        user = body["user"]["id"]
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            request_id = int(meta["request_id"])
            if not 0 < request_id <= MAX_REQUEST_ID:
                raise ValueError(f"no request {request_id}")
            values = view["state"]["values"]
            added = parse_duration(
                form_text(values["duration"]["duration"]["selected_option"]["value"])
            )
            typed = values.get("reason", {}).get("reason", {}).get("value")
            reason = typed if isinstance(typed, str) else ""
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            ack(
                response_action="errors",
                errors={"reason": OUT_OF_DATE.format(again="click Extend again")},
            )
            return
        now = self.clock()
        # The extension's own rules, on a read of the request: errors stay inline.
        try:
            self.service.refuse_if_native(request_id, "extending it")
            self.service.extensions.precheck(
                request_id, actor=user, added=added, reason=reason, now=now
            )
            overlap = self.service.extensions.overlap_refusal(request_id, added)
            if overlap is not None:
                raise overlap
        except RuleViolation as exc:
            field = "reason" if exc.field == "reason" else "duration"
            shown = markup.truncate(markup.plain_message(exc, now), 2000)
            ack(response_action="errors", errors={field: shown})
            return
        except NotFound as exc:
            ack(response_action="update", view=modals.notice_modal("Nothing changed", exc))
            return
        ack()

        def work() -> None:
            try:
                self.service.extensions.extend(
                    request_id, actor=user, added=added, reason=reason, now=now
                )
            except JitError as exc:  # e.g. an extension is already waiting
                self._tell(client, meta, user, exc, dm=True)

        self._later(
            "extend submission", work, lambda text: self._tell(client, meta, user, text, dm=True)
        )

    @guarded
    def on_config_submitted(
        self, ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        user = body["user"]["id"]
        try:
            values = view["state"]["values"]
            app_name = form_text(json.loads(view["private_metadata"])["app"])
            mode = ApprovalMode(values["mode"]["mode"]["selected_option"]["value"])
            max_duration = parse_duration(
                values["max_duration"]["max_duration"]["selected_option"]["value"]
            )
            approvers = [
                form_text(a) for a in values["approvers"]["approvers"].get("selected_users") or []
            ]
            timeout = parse_duration(
                values["approval_timeout"]["approval_timeout"]["selected_option"]["value"]
            )
            # Older modals (opened before groups existed) have neither block.
            groups_text = form_text(
                (values.get("approver_groups") or {}).get("approver_groups", {}).get("value") or ""
            )
            quorum_choice = (values.get("required_approvals") or {}).get("required_approvals")
            required = int(quorum_choice["selected_option"]["value"]) if quorum_choice else None
            # Absent from a modal opened before the field existed: leave the feed as it is.
            feed_channel = (
                form_text(values["feed_channel"]["feed_channel"].get("value") or "")
                if "feed_channel" in values
                else None
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            ack(
                response_action="errors",
                errors={"mode": OUT_OF_DATE.format(again="run /jit config again")},
            )
            return
        now = self.clock()
        # The policy's own rules, on a read of the application: errors stay inline.
        try:
            app = self.service.get_app(app_name)
            rules.check_admin(app.rules(), user)
            if not app.jit_enabled:
                raise RuleViolation(rules.disabled_message(app.name))
            approvers += check_group_ids(groups_text)
            if required is None:
                required = app.policy.required_approvals
            Policy(
                mode=mode,
                max_duration=max_duration,
                approvers=tuple(approvers),
                approval_timeout=timeout,
                required_approvals=required,
                feed_channel=app.policy.feed_channel if feed_channel is None else feed_channel,
            ).validated(SLACK_PRINCIPALS)
        except JitError as exc:
            # Every problem of the form at once, each beside its field.
            errors: dict[str, str] = {}
            parts = exc.problems if isinstance(exc, Problems) else [(None, exc)]
            for _, problem in parts:
                field = getattr(problem, "field", None)
                key = field if field in CONFIG_FIELDS else "mode"
                errors[key] = f"{errors[key]} {problem}" if key in errors else str(problem)
            ack(response_action="errors", errors=errors)
            return
        ack()

        def work() -> None:
            try:
                self.service.set_policy(
                    app_name,
                    actor=user,
                    now=now,
                    mode=mode,
                    max_duration=max_duration,
                    approvers=approvers,
                    approval_timeout=timeout,
                    required_approvals=required,
                    feed_channel=feed_channel,
                )
            except JitError as exc:  # e.g. no longer an admin since the check
                self._tell(client, {}, user, exc, dm=True)

        self._later(
            "policy submission", work, lambda text: self._tell(client, {}, user, text, dm=True)
        )


def register(app: App, listeners: ViewListeners) -> None:
    """Wire every modal's submission."""
    app.view(ids.REQUEST_MODAL)(listeners.on_request_submitted)
    app.view(ids.DECISION_MODAL)(listeners.on_decision_submitted)
    app.view(ids.EXTEND_MODAL)(listeners.on_extend_submitted)
    app.view(ids.CONFIG_MODAL)(listeners.on_config_submitted)
