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

import functools
import json
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as CheckTimedOut
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from jitaccess.app.directory import answered, recording
from jitaccess.app.extensions import ExtensionOutcome
from jitaccess.app.service import JitService
from jitaccess.domain import policy as rules
from jitaccess.domain.durations import format_duration, parse_duration
from jitaccess.domain.errors import JitError, NotFound, Problems, RuleViolation
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.slack import answers, blocks
from jitaccess.slack.commands import HELP, Command, UsageError, parse
from jitaccess.slack.ids import SLACK_PRINCIPALS, is_group
from jitaccess.slack.notifier import SlackNotifier, home_for
from jitaccess.slack.pacing import real_monotonic
from jitaccess.slack.replay import first_event_delivery

log = logging.getLogger("jitaccess.slack")
F = TypeVar("F", bound=Callable[..., None])
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
SORRY = "Something went wrong on our side and nothing was changed. Please try again."
HISTORY_PAGE = 10
#: What a reason modal can decide.
DECISIONS = ("approve", "deny", "revoke", "approve_extension", "deny_extension")
#: The longest a reason form's check (a read of the request, and of the approver groups
#: through Slack) may take before the ack: Slack shows the approver an error after 3 s,
#: and a check that did not finish in time must not be written later.
CHECK_BUDGET_SECONDS = 2.0
#: How long the write may reuse the group members its check read (it normally runs
#: at once; a write that waited longer asks Slack again).
CHECK_REUSE_SECONDS = 30.0
CHECK_TOO_SLOW = (
    "Couldn't check in time whether you may {verb} request {rid} (Slack was slow to say "
    "who is in the approver group): nothing was recorded; try again"
)
_checks: ThreadPoolExecutor | None = None
_checks_lock = threading.Lock()


def _check_pool() -> ThreadPoolExecutor:
    """Threads the reason forms' checks run on, so the listener can stop waiting at the
    budget (one pool per process, made on first use)."""
    global _checks
    with _checks_lock:
        if _checks is None:
            _checks = ThreadPoolExecutor(8, thread_name_prefix="slack-check")
        return _checks


def checked_in_time(
    refusal_of: Callable[[], JitError | None], budget: float = CHECK_BUDGET_SECONDS
) -> tuple[JitError | None, dict[str, tuple[str, ...]]] | None:
    """Run a decision's check with the approver groups it reads recorded; None when
    it did not finish within ``budget`` seconds (it may still be running: its result
    is dropped, and nothing is written for it)."""

    def run() -> tuple[JitError | None, dict[str, tuple[str, ...]]]:
        with recording() as found:
            return refusal_of(), found

    future = _check_pool().submit(run)
    try:
        return future.result(timeout=budget)
    except CheckTimedOut:
        log.warning("a decision's check took more than %.1f s: refused, nothing recorded", budget)
        return None


def guarded(handler: F) -> F:
    """Never let an exception reach the user as a traceback: log it, say sorry."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            handler(*args, **kwargs)
        except Exception:
            log.exception("listener %s failed", handler.__name__)
            respond = kwargs.get("respond")
            if respond is not None:
                try:
                    respond(text=SORRY)
                except Exception:
                    log.exception("could not tell the user about the failure")

    return wrapper  # type: ignore[return-value]


#: Request ids are INTEGER primary keys: anything larger is no request (and PostgreSQL
#: would refuse to compare with it).
MAX_REQUEST_ID = 2**31 - 1
#: What a forged or corrupted form gets (the real forms cannot produce it).
OUT_OF_DATE = "This form is out of date: close it and {again}"


def _clicked_request_id(body: dict[str, Any]) -> int | None:
    """The request id a button carries, or None if its value is not one."""
    try:
        value = body["actions"][0]["value"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(value, str) or not (value.isascii() and value.isdigit()):
        return None
    if len(value) > 10:
        return None
    number = int(value)
    return number if 0 < number <= MAX_REQUEST_ID else None


@dataclass(frozen=True)
class ReasonForm:
    """A submitted reason form (a decision, a revoke, a break-glass review)."""

    meta: dict[str, Any]
    request_id: int
    reason: str
    #: approve, deny, revoke, approve_extension, deny_extension ("" for a review).
    decision: str


def _clicked_block_id(body: dict[str, Any]) -> str:
    """The block id of the clicked button ("" if there is none)."""
    try:
        value = body["actions"][0]["block_id"]
    except (KeyError, IndexError, TypeError):
        return ""
    return value if isinstance(value, str) else ""


def _text(value: Any) -> str:
    """A form value that must be text (raises TypeError for anything else)."""
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _origin(body: dict[str, Any]) -> dict[str, str]:
    """Where a click came from (a DM card, or the App Home with no channel)."""
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id"
    )
    return {"channel": channel} if channel else {}


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


def _extension_reply(outcome: ExtensionOutcome, tz: Any) -> str:
    view = outcome.request
    if outcome.status == "extended":
        return (
            f"Request #{view.id} extended: it now ends {blocks.when(view.ends_at, tz)} "
            "(same access, no gap)."
        )
    assert view.extension_ends_at is not None
    return (
        f"The extension of request #{view.id} to {blocks.when(view.extension_ends_at, tz)} "
        "was sent to the approvers; your access stays as it is meanwhile."
    )


def _open_view(client: WebClient, trigger_id: str, view: dict[str, Any]) -> tuple[str, str]:
    """``views.open``, read strictly: the opened view's id and hash (to update it)."""
    return answers.opened_view(
        "views.open",
        answers.call("views.open", lambda: client.views_open(trigger_id=trigger_id, view=view)),
    )


#: Answers one ``/jit`` command: (command, user, now) -> the ephemeral reply.
CommandRunner = Callable[[Command, str, datetime], str]


def run_now(work: Callable[[], None]) -> None:
    work()


class SlackFrontEnd:
    def __init__(
        self,
        service: JitService,
        notifier: SlackNotifier,
        clock: Callable[[], datetime],
        after_ack: Callable[[Callable[[], None]], None] = run_now,
    ) -> None:
        self.service = service
        self.notifier = notifier
        self.clock = clock
        #: Runs what follows an ack (see :class:`~jitaccess.slack.runtime.AfterAck`).
        self.after_ack = after_ack
        #: ``/jit`` verbs answered elsewhere (see :meth:`add_commands`).
        self._commands: dict[str, CommandRunner] = {}

    def _later(
        self, name: str, work: Callable[[], None], sorry: Callable[[str], object] | None
    ) -> None:
        """Run ``work`` after the ack; if it fails, log it and ``sorry`` the user."""

        def run() -> None:
            try:
                work()
            except Exception:
                log.exception("%s failed after its ack", name)
                if sorry is not None:
                    try:
                        sorry(SORRY)
                    except Exception:
                        log.exception("could not tell the user about the failure")

        self.after_ack(run)

    def register(self, app: App) -> None:
        app.command("/jit")(self.on_command)
        app.action(blocks.APP_PICKED)(self.on_app_picked)
        app.view(blocks.REQUEST_MODAL)(self.on_request_submitted)
        for action, decision in (
            (blocks.APPROVE, "approve"),
            (blocks.DENY, "deny"),
            (blocks.REVOKE, "revoke"),
            (blocks.APPROVE_EXTENSION, "approve_extension"),
            (blocks.DENY_EXTENSION, "deny_extension"),
        ):
            app.action(action)(self._decision_button(decision))
        app.view(blocks.DECISION_MODAL)(self.on_decision_submitted)
        app.action(blocks.CANCEL)(self._own_request_button("cancel"))
        app.action(blocks.RELEASE)(self._own_request_button("release"))
        app.action(blocks.EXTEND)(self.on_extend_clicked)
        app.view(blocks.EXTEND_MODAL)(self.on_extend_submitted)
        app.view(blocks.CONFIG_MODAL)(self.on_config_submitted)
        app.event("app_home_opened")(self.on_home_opened)
        app.event("subteam_members_changed")(self.on_group_members_changed)

    def add_commands(self, names: Iterable[str], run: CommandRunner) -> None:
        """``/jit`` verbs another module answers (break-glass's ``breakglass`` and ``ack``,
        wired by ``slack/runtime.py``): that module builds on this one, never the reverse."""
        for name in names:
            self._commands[name] = run

    # -- /jit ------------------------------------------------------------------------
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
                respond(text=blocks.escape(str(cmd)))
            elif cmd.name == "request_form":
                self._open_request_form(client, command["trigger_id"], user)
            elif cmd.name == "config":
                self._open_config(client, command["trigger_id"], user, cmd.app or "")
            else:
                try:
                    text, body = self._run(cmd, user, now)
                except JitError as exc:
                    respond(text=blocks.mention_users(exc))
                    return
                respond(text=text, blocks=body)

        self._later("/jit", work, lambda text: respond(text=text))

    def _run(
        self, cmd: Command, user: str, now: datetime
    ) -> tuple[str, list[dict[str, Any]] | None]:
        service = self.service
        tz = self.notifier.zones.of(user)
        if cmd.name == "help":
            return HELP, None
        if cmd.name == "list":
            views = service.list_requests(requester=user, limit=blocks.HOME_ITEMS_MAX)
            return "Your requests", blocks.request_list(
                "Your requests", views, tz, now, empty="You have no requests yet."
            )
        if cmd.name == "pending":
            if cmd.app:
                service.check_can_read(cmd.app, user)
                views = [v for v in service.list_requests(app=cmd.app, state="pending")][::-1]
                title = f"Waiting for approval on {blocks.escape(cmd.app)}"
            else:
                views = service.pending_for(user)
                title = "Waiting for your approval (all applications)"
            body = blocks.request_list(title, views, tz, now, empty="Nothing is waiting.")
            unreviewed = [
                v for v in service.breakglass.needs_review(user) if cmd.app in (None, v.app)
            ]
            if unreviewed:
                body = blocks.review_list(unreviewed, tz, now) + body
            return title, body
        if cmd.name in self._commands:
            return self._commands[cmd.name](cmd, user, now), None
        if cmd.name == "request":
            # A zero duration is falsy but is the service's to refuse, with its message.
            assert cmd.app and cmd.role and cmd.duration is not None and cmd.reason is not None
            view = service.submit(
                cmd.app,
                requester=user,
                role=cmd.role,
                duration=cmd.duration,
                justification=cmd.reason,
                now=now,
            )
            waiting = (
                " Waiting for one of: "
                + ", ".join(blocks.user(a) for a in view.notified_approvers)
                + "."
                if view.state == "pending"
                else ""
            )
            return (
                f"Request #{view.id} submitted: {blocks.escape(view.role)} on "
                f"{blocks.escape(view.app)}, "
                f"{blocks.window(view, tz)}. It is {view.state}.{waiting}"
            ), None
        if cmd.name == "apps":
            return self._apps_text(user), None
        if cmd.name == "history":
            assert cmd.app
            service.check_can_read(cmd.app, user)
            views = service.history(
                cmd.app, limit=HISTORY_PAGE + 1, offset=(cmd.page - 1) * HISTORY_PAGE
            )
            more = len(views) > HISTORY_PAGE
            app_md = blocks.escape(cmd.app)
            title = f"History of {app_md}, page {cmd.page}"
            body = blocks.request_list(
                title, views[:HISTORY_PAGE], tz, now, empty="No requests on this page."
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
        assert cmd.request_id is not None
        rid = cmd.request_id
        if cmd.name == "extend":
            assert cmd.duration is not None
            outcome = service.extensions.extend(
                rid, actor=user, added=cmd.duration, reason=cmd.reason or "", now=now
            )
            return _extension_reply(outcome, tz), None
        if cmd.name == "cancel":
            view = service.cancel(rid, actor=user, now=now)
        elif cmd.name == "release":
            view = service.release(rid, actor=user, now=now)
        elif cmd.name == "revoke":
            view = service.revoke(rid, actor=user, reason=cmd.reason or "", now=now)
        elif cmd.name == "approve":
            view = service.approve(rid, actor=user, reason=cmd.reason or "", now=now)
        elif cmd.name == "deny":
            view = service.deny(rid, actor=user, reason=cmd.reason or "", now=now)
        else:  # pragma: no cover - parse() only returns the names above
            raise UsageError(f"Unknown command {cmd.name}")
        if cmd.name == "approve" and view.state == "pending":
            progress = blocks.quorum_progress(view)
            return f"Your approval of request #{view.id} is recorded: {progress}.", None
        return f"Request #{view.id} is now {view.status_line(now)}.", None

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
                policy = "JIT disabled (publisher has permanent access)"
            else:
                policy = (
                    f"{app.policy.mode.value} approval, up to "
                    f"{format_duration(app.policy.max_duration)}, roles "
                    f"{', '.join(app.eligible_roles)}"
                )
            you = f" · you: {', '.join(roles)}" if roles else ""
            # A validated channel ID: Slack shows the channel's current name.
            feed = f" · feed <#{app.policy.feed_channel}>" if app.policy.feed_channel else ""
            lines.append(f"• *{blocks.escape(app.name)}*: {blocks.escape(policy)}{feed}{you}")
        return "\n".join(lines) or "No applications are registered yet."

    # -- request form ----------------------------------------------------------------
    def _open_request_form(self, client: WebClient, trigger_id: str, user: str) -> None:
        view_id, view_hash = _open_view(client, trigger_id, blocks.loading_modal("Request access"))
        apps = self.service.apps_for_publisher(user)
        client.views_update(
            view_id=view_id,
            hash=view_hash,
            view=blocks.request_modal(apps, selected=None, now=self.clock()),
        )

    @guarded
    def on_app_picked(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        try:
            selected = _text(body["actions"][0]["selected_option"]["value"])
        except (KeyError, IndexError, TypeError):
            log.warning("ignoring an application pick that names no application")
            return

        def work() -> None:
            apps = self.service.apps_for_publisher(body["user"]["id"])
            client.views_update(
                view_id=body["view"]["id"],
                hash=body["view"]["hash"],
                view=blocks.request_modal(apps, selected=selected, now=self.clock()),
            )

        self._later("application pick", work, None)

    @guarded
    def on_request_submitted(
        self, ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        user = body["user"]["id"]
        try:
            values = view["state"]["values"]
            app_name = _text(values["app"][blocks.APP_PICKED]["selected_option"]["value"])
            role = _text(values["role"]["role"]["selected_option"]["value"])
            duration = parse_duration(
                _text(values["duration"]["duration"]["selected_option"]["value"])
            )
            picked = values.get("start", {}).get("start", {}).get("selected_date_time")
            justification = _text(values["justification"]["justification"].get("value") or "")
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
            ack(response_action="errors", errors={field: blocks.truncate(str(exc), 2000)})
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

    # -- decisions -------------------------------------------------------------------
    def _decision_button(self, decision: str) -> Callable[..., None]:
        @guarded
        def on_click(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
            ack()
            user = body["user"]["id"]
            request_id = _clicked_request_id(body)
            if request_id is None:
                log.warning("ignoring a %s click that carries no request id", decision)
                return
            origin = _origin(body)
            if decision.endswith("_extension"):
                # The extension this card showed travels with the form to the decision.
                shown = blocks.shown_extension_end(_clicked_block_id(body))
                if shown is not None:
                    origin["shown_end"] = str(int(shown.timestamp()))

            self._open_reason_form(
                f"{decision} click",
                client,
                body,
                blocks.decision_modal(
                    None, request_id=request_id, decision=decision, origin=origin
                ),
                lambda: self._refusal(request_id, user, decision),
                origin,
            )

        on_click.__name__ = f"on_{decision}_clicked"
        return on_click

    def _open_reason_form(
        self,
        what: str,
        client: WebClient,
        body: dict[str, Any],
        modal: dict[str, Any],
        refusal_of: Callable[[], JitError | None],
        origin: dict[str, str],
    ) -> None:
        """After a button's ack: open the reason form at once (its trigger id expires
        three seconds after the click), then check whether the clicker may act and, if
        not, turn the form into the refusal and tell them."""
        user = body["user"]["id"]

        def work() -> None:
            view_id, _ = _open_view(client, body["trigger_id"], modal)
            refusal: JitError | None
            try:
                refusal = refusal_of()
            except NotFound as exc:
                refusal = exc
            if refusal is not None:
                client.views_update(
                    view_id=view_id,
                    view=blocks.notice_modal("Nothing to do", refusal),
                )
                self._tell(client, origin, user, refusal)

        self._later(what, work, None)

    @guarded
    def on_decision_submitted(
        self, ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        form = self._read_reason_form(ack, view, needs_decision=True)
        if form is None:
            return
        user, request_id, decision = body["user"]["id"], form.request_id, form.decision
        shown_end = blocks.shown_extension_end(
            f"extension:{request_id}:{form.meta.get('shown_end')}"
        )

        def act(reason: str, now: datetime) -> None:
            if decision == "approve_extension":
                self.service.extensions.approve(
                    request_id, actor=user, reason=reason, now=now, shown_end=shown_end
                )
            elif decision == "deny_extension":
                self.service.extensions.deny(
                    request_id, actor=user, reason=reason, now=now, shown_end=shown_end
                )
            elif decision == "approve":
                self.service.approve(request_id, actor=user, reason=reason, now=now)
            elif decision == "deny":
                self.service.deny(request_id, actor=user, reason=reason, now=now)
            else:
                self.service.revoke(request_id, actor=user, reason=reason, now=now)

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

    def _read_reason_form(
        self, ack: Ack, view: dict[str, Any], *, needs_decision: bool = False
    ) -> ReasonForm | None:
        """The reason form as submitted, or None after telling Slack it is out of date
        (metadata this version did not write)."""
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            typed = view["state"]["values"].get("reason", {}).get("reason", {}).get("value")
            request_id = int(meta["request_id"])
            decision = str(meta["decision"]) if needs_decision else ""
            if needs_decision and decision not in DECISIONS:
                raise ValueError(f"unknown decision {decision!r}")
            if not 0 < request_id <= MAX_REQUEST_ID:
                raise ValueError(f"no request {request_id}")
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            ack(
                response_action="errors",
                errors={"reason": OUT_OF_DATE.format(again="click the button again")},
            )
            return None
        return ReasonForm(meta, request_id, typed if isinstance(typed, str) else "", decision)

    def _act_on_reason_form(
        self,
        ack: Ack,
        client: WebClient,
        user: str,
        form: ReasonForm,
        *,
        what: str,
        verb: str,
        refusal_of: Callable[[], JitError | None],
        act: Callable[[str, datetime], None],
        tell_refusal: bool,
    ) -> None:
        """Validate on the form and a read of the request, so errors come back in the
        ack (inline, or the form turned into the refusal); act after the ack, and DM a
        refusal only the write could discover (someone decided meanwhile)."""
        now = self.clock()
        try:
            rules.check_reason(form.reason, verb)
        except RuleViolation as exc:
            ack(response_action="errors", errors={"reason": str(exc)})
            return
        refusal: JitError | None
        try:
            outcome = checked_in_time(refusal_of)
        except NotFound as exc:
            ack(response_action="update", view=blocks.notice_modal("Nothing changed", exc))
            return
        if outcome is None:
            slow = RuleViolation(CHECK_TOO_SLOW.format(verb=verb, rid=form.request_id))
            ack(response_action="update", view=blocks.notice_modal("Nothing changed", slow))
            return
        refusal, groups = outcome
        checked_at = real_monotonic()
        if refusal is not None:
            ack(response_action="update", view=blocks.notice_modal("Nothing changed", refusal))
            if tell_refusal:
                told = refusal
                self._later(
                    f"{what} refusal", lambda: self._tell(client, form.meta, user, told), None
                )
            return
        ack()

        def work() -> None:
            # The groups as the check read them: the approver was just told it is
            # recorded, and a second lookup failing now would make that untrue.
            fresh = real_monotonic() - checked_at < CHECK_REUSE_SECONDS
            try:
                with answered(groups if fresh else {}):
                    act(form.reason, now)
            except JitError as exc:
                self._tell(client, form.meta, user, exc, dm=True)

        self._later(
            f"{what} submission",
            work,
            lambda text: self._tell(client, form.meta, user, text, dm=True),
        )

    def _refusal(self, request_id: int, user: str, decision: str) -> JitError | None:
        if decision.endswith("_extension"):
            return self.service.extensions.refusal(request_id, user, decision)
        return self.service.decision_refusal(request_id, user, decision)

    # -- extend ----------------------------------------------------------------------
    @guarded
    def on_extend_clicked(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        """*Extend* on the status card or the reminder: the form, or why not."""
        ack()
        user = body["user"]["id"]
        request_id = _clicked_request_id(body)
        if request_id is None:
            log.warning("ignoring an extend click that carries no request id")
            return
        origin = _origin(body)
        now = self.clock()

        def work() -> None:
            try:
                # Could anything be added at all? (The form then asks how much.)
                view, app = self.service.extensions.precheck(
                    request_id, actor=user, added=rules.MIN_DURATION, reason="-", now=now
                )
                modal = blocks.extend_modal(
                    view, app.policy.max_duration, origin=origin, tz=self.notifier.zones.of(user)
                )
            except JitError as exc:
                modal = blocks.notice_modal("Nothing to extend", exc)
            client.views_open(trigger_id=body["trigger_id"], view=modal)

        self._later("extend click", work, lambda text: self._tell(client, origin, user, text))

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
                _text(values["duration"]["duration"]["selected_option"]["value"])
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
            self.service.extensions.precheck(
                request_id, actor=user, added=added, reason=reason, now=now
            )
            overlap = self.service.extensions.overlap_refusal(request_id, added)
            if overlap is not None:
                raise overlap
        except RuleViolation as exc:
            field = "reason" if exc.field == "reason" else "duration"
            ack(response_action="errors", errors={field: blocks.truncate(str(exc), 2000)})
            return
        except NotFound as exc:
            ack(response_action="update", view=blocks.notice_modal("Nothing changed", exc))
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

    def _own_request_button(self, action: str) -> Callable[..., None]:
        @guarded
        def on_click(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
            ack()
            user = body["user"]["id"]
            request_id = _clicked_request_id(body)
            if request_id is None:
                log.warning("ignoring a %s click that carries no request id", action)
                return
            now = self.clock()
            origin = _origin(body)

            def work() -> None:
                try:
                    if action == "cancel":
                        self.service.cancel(request_id, actor=user, now=now)
                    else:
                        self.service.release(request_id, actor=user, now=now)
                except JitError as exc:
                    if origin:
                        self._tell(client, origin, user, exc, dm=True)
                        return
                    try:
                        client.views_open(
                            trigger_id=body["trigger_id"],
                            view=blocks.notice_modal("Nothing changed", exc),
                        )
                    except SlackApiError:  # e.g. the trigger expired: a DM instead
                        self._tell(client, origin, user, exc, dm=True)

            def sorry(text: str) -> None:
                self._tell(client, origin, user, text, dm=True)

            self._later(f"{action} click", work, sorry)

        on_click.__name__ = f"on_{action}_clicked"
        return on_click

    def _tell(
        self,
        client: WebClient,
        origin: dict[str, Any],
        user: str,
        message: str | JitError,
        *,
        dm: bool = False,
    ) -> None:
        """An ephemeral message where the user acted; with ``dm``, a DM when there is
        no such channel or the ephemeral cannot be posted (the user must hear of it)."""
        text = blocks.mention_users(message)
        channel = origin.get("channel")
        if channel:
            try:
                client.chat_postEphemeral(channel=channel, user=user, text=text)
                return
            except SlackApiError as exc:
                log.info("could not post an ephemeral reply: %s", exc.response.get("error"))
        if not dm:
            return
        try:
            client.chat_postMessage(channel=user, text=text)
        except SlackApiError as exc:
            log.warning("could not tell %s by DM: %s", user, exc.response.get("error"))

    # -- policy ----------------------------------------------------------------------
    def _open_config(self, client: WebClient, trigger_id: str, user: str, app_name: str) -> None:
        view_id, view_hash = _open_view(client, trigger_id, blocks.loading_modal("JIT policy"))
        try:
            app = self.service.get_app(app_name)
            if user not in app.admins:
                raise RuleViolation(
                    f"Only {app.name}'s consumer admins may change its policy, and you are not one"
                )
            if not app.jit_enabled:
                raise RuleViolation(
                    f"JIT is disabled for {app.name}: there is no policy to "
                    "change; JIT cannot be enabled after registration"
                )
            view = blocks.config_modal(app)
        except JitError as exc:
            view = blocks.notice_modal("JIT policy", exc)
        client.views_update(view_id=view_id, hash=view_hash, view=view)

    @guarded
    def on_config_submitted(
        self, ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        user = body["user"]["id"]
        try:
            values = view["state"]["values"]
            app_name = _text(json.loads(view["private_metadata"])["app"])
            mode = ApprovalMode(values["mode"]["mode"]["selected_option"]["value"])
            max_duration = parse_duration(
                values["max_duration"]["max_duration"]["selected_option"]["value"]
            )
            approvers = [
                _text(a) for a in values["approvers"]["approvers"].get("selected_users") or []
            ]
            timeout = parse_duration(
                values["approval_timeout"]["approval_timeout"]["selected_option"]["value"]
            )
            # Older modals (opened before groups existed) have neither block.
            groups_text = _text(
                (values.get("approver_groups") or {}).get("approver_groups", {}).get("value") or ""
            )
            quorum_choice = (values.get("required_approvals") or {}).get("required_approvals")
            required = int(quorum_choice["selected_option"]["value"]) if quorum_choice else None
            # Absent from a modal opened before the field existed: leave the feed as it is.
            feed_channel = (
                _text(values["feed_channel"]["feed_channel"].get("value") or "")
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

    # -- App Home --------------------------------------------------------------------
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
                view=home_for(self.service, user, self.notifier.zones.of(user), self.clock()),
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
        return first_event_delivery(self.service.db, event_id, self.clock())
