"""What every kind of listener shares: the front end's state (service, notifier,
clock, the after-ack runner), the guard that turns a crash into an apology, reading
what a click or a form carries, the reason forms (decisions and break-glass reviews)
and the messages back to the person who acted."""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as CheckTimedOut
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from slack_bolt import Ack
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from jitaccess.app.directory import answered, recording
from jitaccess.app.service import JitService
from jitaccess.domain import policy as rules
from jitaccess.domain.errors import JitError, NotFound, RuleViolation
from jitaccess.slack import answers
from jitaccess.slack.blocks import markup, modals
from jitaccess.slack.commands import Command
from jitaccess.slack.notifier import SlackNotifier
from jitaccess.slack.pacing import real_monotonic

log = logging.getLogger("jitaccess.slack")
F = TypeVar("F", bound=Callable[..., None])
SORRY = "Something went wrong on our side and nothing was changed. Please try again."
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


def clicked_request_id(body: dict[str, Any]) -> int | None:
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


def clicked_block_id(body: dict[str, Any]) -> str:
    """The block id of the clicked button ("" if there is none)."""
    try:
        value = body["actions"][0]["block_id"]
    except (KeyError, IndexError, TypeError):
        return ""
    return value if isinstance(value, str) else ""


def form_text(value: Any) -> str:
    """A form value that must be text (raises TypeError for anything else)."""
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def origin_of(body: dict[str, Any]) -> dict[str, str]:
    """Where a click came from (a DM card, or the App Home with no channel)."""
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id"
    )
    return {"channel": channel} if channel else {}


def open_view(client: WebClient, trigger_id: str, view: dict[str, Any]) -> tuple[str, str]:
    """``views.open``, read strictly: the opened view's id and hash (to update it)."""
    return answers.opened_view(
        "views.open",
        answers.call("views.open", lambda: client.views_open(trigger_id=trigger_id, view=view)),
    )


#: Answers one ``/jit`` command: (command, user, now) -> the ephemeral reply.
CommandRunner = Callable[[Command, str, datetime], str]


def run_now(work: Callable[[], None]) -> None:
    work()


class ListenerBase:
    """The state and the helpers every kind of listener uses. Each kind
    (:mod:`.commands`, :mod:`.actions`, :mod:`.views`, :mod:`.events`) is a subclass
    that can be made and called alone; :class:`~jitaccess.slack.listeners.SlackFrontEnd`
    is all of them."""

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

    def add_commands(self, names: Iterable[str], run: CommandRunner) -> None:
        """``/jit`` verbs another module answers (break-glass's ``breakglass`` and ``ack``,
        wired by ``slack/runtime.py``): that module builds on this one, never the reverse."""
        for name in names:
            self._commands[name] = run

    def _open_request_form(self, client: WebClient, trigger_id: str, user: str) -> None:
        view_id, view_hash = open_view(client, trigger_id, modals.loading_modal("Request access"))
        apps = self.service.apps_for_publisher(user)
        client.views_update(
            view_id=view_id,
            hash=view_hash,
            view=modals.request_modal(apps, selected=None, now=self.clock()),
        )

    def _open_config(self, client: WebClient, trigger_id: str, user: str, app_name: str) -> None:
        view_id, view_hash = open_view(client, trigger_id, modals.loading_modal("JIT policy"))
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
            view = modals.config_modal(app)
        except JitError as exc:
            view = modals.notice_modal("JIT policy", exc)
        client.views_update(view_id=view_id, hash=view_hash, view=view)

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
            view_id, _ = open_view(client, body["trigger_id"], modal)
            refusal: JitError | None
            try:
                refusal = refusal_of()
            except NotFound as exc:
                refusal = exc
            if refusal is not None:
                client.views_update(
                    view_id=view_id,
                    view=modals.notice_modal("Nothing to do", refusal),
                )
                self._tell(client, origin, user, refusal)

        self._later(what, work, None)

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
            ack(response_action="errors", errors={"reason": markup.plain_message(exc, now)})
            return
        refusal: JitError | None
        try:
            outcome = checked_in_time(refusal_of)
        except NotFound as exc:
            ack(response_action="update", view=modals.notice_modal("Nothing changed", exc))
            return
        if outcome is None:
            slow = RuleViolation(CHECK_TOO_SLOW.format(verb=verb, rid=form.request_id))
            ack(response_action="update", view=modals.notice_modal("Nothing changed", slow))
            return
        refusal, groups = outcome
        checked_at = real_monotonic()
        if refusal is not None:
            ack(response_action="update", view=modals.notice_modal("Nothing changed", refusal))
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
        text = markup.mention_users(message)
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
