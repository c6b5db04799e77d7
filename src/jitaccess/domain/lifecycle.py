"""The request lifecycle, one python-statemachine ``StateMachine`` per request.

The machine is bound to any object with a ``state`` attribute (in production the
SQLAlchemy row), so moving the machine moves the persisted column. It says which
moves are legal (``Event`` names them) and, from those, which actions each state offers
a person (``offers``, for the buttons); the application layer decides when to make the
moves and records each one (audit event, outbox messages) in the same transaction.
"""

from __future__ import annotations

import functools
from enum import StrEnum
from typing import Any

from statemachine import State, StateMachine


class RequestState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    AUTO_APPROVED = "auto_approved"
    ACTIVE = "active"
    EXPIRED = "expired"
    DENIED = "denied"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    REVOKED = "revoked"
    FAILED = "failed"


class Event(StrEnum):
    """The lifecycle's events: the machine's transitions, by name. The values are
    what the database stores (``end_requested``, the audit's actions)."""

    APPROVE = "approve"
    AUTO_APPROVE = "auto_approve"
    DENY = "deny"
    CANCEL = "cancel"
    TIME_OUT = "time_out"
    ACTIVATE = "activate"
    EXPIRE = "expire"
    REVOKE = "revoke"
    RELEASE = "release"
    FAIL = "fail"
    EXTEND = "extend"


#: Each state as a person reads it ("waiting for approval", not ``pending``): the one
#: mapping every surface (Slack, the CLI) uses to show a state in a sentence.
STATE_WORDS: dict[str, str] = {
    RequestState.PENDING: "waiting for approval",
    RequestState.APPROVED: "approved",
    RequestState.AUTO_APPROVED: "approved automatically",
    RequestState.ACTIVE: "active",
    RequestState.EXPIRED: "expired",
    RequestState.DENIED: "denied",
    RequestState.CANCELLED: "cancelled",
    RequestState.TIMED_OUT: "timed out",
    RequestState.REVOKED: "revoked",
    RequestState.FAILED: "failed",
}
#: An end under way (``end_requested``), as a person reads it.
ENDING_WORDS: dict[str, str] = {
    Event.REVOKE: "a revoke",
    Event.RELEASE: "a release (the requester is done)",
    Event.CANCEL: "a cancellation",
    Event.EXPIRE: "the end of the window",
    Event.FAIL: "a failed grant",
}


def state_words(state: str) -> str:
    """``state`` in plain words; an unknown value is shown as it is (never hidden)."""
    return STATE_WORDS.get(state, state.replace("_", " "))


def ending_words(end_requested: str) -> str:
    """What is ending a request (its ``end_requested``) in plain words."""
    return ENDING_WORDS.get(end_requested, end_requested.replace("_", " "))


#: States from which nothing can happen any more.
FINAL_STATES = frozenset(
    {
        RequestState.EXPIRED,
        RequestState.DENIED,
        RequestState.CANCELLED,
        RequestState.TIMED_OUT,
        RequestState.REVOKED,
        RequestState.FAILED,
    }
)
#: States that are approved (by a person or the policy) but not yet granted.
APPROVED_STATES = frozenset({RequestState.APPROVED, RequestState.AUTO_APPROVED})


class RequestLifecycle(StateMachine):
    """pending → approved/auto_approved → active → expired, with the side exits.

    ``expire`` also leaves an approved state: when the whole window passed
    before the grant could be made (e.g. the service was down throughout), the
    request ends without ever granting rather than granting for zero seconds.
    ``release`` is the requester's own early end ("I'm done"); it lands in
    ``revoked`` like an approver's revoke, and the audit says who and why.
    ``extend`` keeps the state and moves ``ends_at`` later (see ``app/extensions.py``).
    """

    pending = State("Pending", initial=True, value=RequestState.PENDING.value)
    approved = State("Approved", value=RequestState.APPROVED.value)
    auto_approved = State("Auto approved", value=RequestState.AUTO_APPROVED.value)
    active = State("Active", value=RequestState.ACTIVE.value)
    expired = State("Expired", final=True, value=RequestState.EXPIRED.value)
    denied = State("Denied", final=True, value=RequestState.DENIED.value)
    cancelled = State("Cancelled", final=True, value=RequestState.CANCELLED.value)
    timed_out = State("Timed out", final=True, value=RequestState.TIMED_OUT.value)
    revoked = State("Revoked", final=True, value=RequestState.REVOKED.value)
    failed = State("Failed", final=True, value=RequestState.FAILED.value)

    approve = pending.to(approved)
    auto_approve = pending.to(auto_approved)
    deny = pending.to(denied)
    time_out = pending.to(timed_out)
    cancel = pending.to(cancelled) | approved.to(cancelled) | auto_approved.to(cancelled)
    activate = approved.to(active) | auto_approved.to(active)
    # pending.to(failed): native mode, when Azure reports a pending jitRequest Failed.
    fail = approved.to(failed) | auto_approved.to(failed) | pending.to(failed)
    expire = active.to(expired) | approved.to(expired) | auto_approved.to(expired)
    revoke = active.to(revoked)
    release = active.to(revoked)
    #: The window's end moves later on the same grant: never a revoke and re-grant.
    extend = (
        approved.to.itself()  # type: ignore[no-untyped-call]
        | auto_approved.to.itself()  # type: ignore[no-untyped-call]
        | active.to.itself()  # type: ignore[no-untyped-call]
    )


def allowed_events(state: str) -> list[str]:
    """The events the machine accepts from ``state`` (for messages and the diagram)."""
    names: list[str] = []
    for candidate in RequestLifecycle.states:
        if candidate.value == state:
            for transition in candidate.transitions:
                names.extend(str(e) for e in transition.events)
    return sorted(set(names))


@functools.cache
def initial_state() -> str:
    """The state a new request starts in, read from the machine."""
    return str(RequestLifecycle.initial_state.value)


@functools.cache
def transitions() -> dict[tuple[str, str], str]:
    """(state, event) -> next state, read from ``RequestLifecycle``: the machine stays
    the single source of the moves; this table makes a move cheap on the sweep's hot
    path (instantiating a machine per move cost a quarter of the sweep)."""
    table: dict[tuple[str, str], str] = {}
    for state in RequestLifecycle.states:
        for transition in state.transitions:
            for event in transition.events:
                table[(str(state.value), str(event))] = str(transition.target.value)
    return table


def move(model: Any, event: Event) -> tuple[str, str]:
    """Apply ``event`` to ``model.state``; return (before, after).

    Raises ``statemachine.exceptions.TransitionNotAllowed`` (from the machine itself)
    when the machine does not allow it; callers check the state first and turn that
    into a message, so reaching the exception means a bug, not a user error.
    """
    before = str(model.state)
    after = transitions().get((before, event))
    if after is None:
        RequestLifecycle(model=model).send(event)  # raises TransitionNotAllowed
        raise AssertionError(f"the machine allowed {event} from {before}; the table did not")
    model.state = after
    return before, after


def mermaid() -> str:
    """The lifecycle as a Mermaid ``stateDiagram-v2``, drawn from the machine itself."""
    from statemachine.contrib.diagram import MermaidGraphMachine

    return str(MermaidGraphMachine(RequestLifecycle)())  # type: ignore[no-untyped-call]


class Action(StrEnum):
    """What a person can do to a request (the buttons and commands offer these)."""

    APPROVE = "approve"
    DENY = "deny"
    CANCEL = "cancel"
    EXTEND = "extend"
    RELEASE = "release"
    REVOKE = "revoke"


#: The machine's event each person-level action sends.
_SENDS = {
    Action.APPROVE: Event.APPROVE,
    Action.DENY: Event.DENY,
    Action.CANCEL: Event.CANCEL,
    Action.EXTEND: Event.EXTEND,
    Action.RELEASE: Event.RELEASE,
    Action.REVOKE: Event.REVOKE,
}
#: What a request already being ended (``end_requested``: a revoke, release, cancel,
#: failed grant or expiry under way) no longer offers: another end, or a later one.
_NOT_WHILE_ENDING = frozenset({Action.CANCEL, Action.EXTEND, Action.RELEASE})


@functools.cache
def offers(state: str, ending: bool = False) -> frozenset[Action]:
    """The actions a person may take on a request in ``state``, read from the machine.

    Each action is offered where the machine accepts the event it sends; a revoke is
    also offered where access is about to be granted (the machine accepts
    ``activate``): the service ends such a request with ``cancel``. With ``ending``
    (an end is already under way) the requester's cancel, extend and release are not
    offered; a revoke still is (the approver is then told the access is ending).
    """
    accepted = {event for (from_state, event) in transitions() if from_state == state}
    actions = {action for action, event in _SENDS.items() if event in accepted}
    if Event.ACTIVATE in accepted:
        actions.add(Action.REVOKE)
    if ending:
        actions -= _NOT_WHILE_ENDING
    return frozenset(actions)
