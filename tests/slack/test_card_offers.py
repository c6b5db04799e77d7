"""The buttons each card shows are the actions the lifecycle offers (``offers``).

slack/blocks/ keeps no state tuples of its own for its buttons: every state, with
and without an end under way, is rendered here and its buttons compared with
``lifecycle.offers``; the offers themselves are pinned so a change to the machine
that changes a button is a visible decision.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jitaccess.app.views import RequestView
from jitaccess.domain.lifecycle import Action, Event, RequestState, offers
from jitaccess.slack.blocks import cards, home, ids

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)

#: Which action each button's action id carries out.
BUTTON_ACTION = {
    ids.APPROVE: Action.APPROVE,
    ids.DENY: Action.DENY,
    ids.REVOKE: Action.REVOKE,
    ids.CANCEL: Action.CANCEL,
    ids.RELEASE: Action.RELEASE,
    ids.EXTEND: Action.EXTEND,
}
REQUESTER = frozenset({Action.EXTEND, Action.RELEASE, Action.CANCEL})
APPROVER = frozenset({Action.APPROVE, Action.DENY, Action.REVOKE})
CASES = [(s, ending) for s in RequestState for ending in (False, True)]


def view(state: str, *, ending: bool, breakglass: bool = False) -> RequestView:
    return RequestView(
        id=7,
        app="crm",
        scope="/subscriptions/x/resourceGroups/mrg",
        requester="UPUB1",
        role="Contributor",
        state=state,
        justification="deploy",
        starts_at=T0,
        ends_at=T0 + timedelta(hours=2),
        approval_deadline_at=T0 - timedelta(minutes=5),
        approval_mode="manual",
        notified_approvers=("UAPP1",),
        created_at=T0 - timedelta(hours=1),
        decided_by=None if state == RequestState.PENDING else "UAPP1",
        decision_reason=None,
        decided_at=None,
        activated_at=None,
        ended_at=None,
        ended_by=None,
        end_reason=None,
        end_requested=Event.REVOKE if ending else None,
        attempts=0,
        last_error=None,
        revoke_failing_since=None,
        version=1,
        breakglass=breakglass,
        incident_ref="INC-1" if breakglass else None,
    )


def actions_of(rendered: list[dict[str, Any]]) -> list[Action]:
    """Every button's action, in order (actions blocks and section accessories)."""
    found: list[Action] = []
    for block in rendered:
        elements = [*block.get("elements", ()), block.get("accessory") or {}]
        found += [BUTTON_ACTION[e["action_id"]] for e in elements if e.get("type") == "button"]
    return found


def test_each_state_offers_what_the_machine_allows() -> None:
    """Pinned: the person-level actions of each state, and what an end under way removes."""
    assert {s.value: sorted(offers(s)) for s in RequestState} == {
        "pending": ["approve", "cancel", "deny"],
        "approved": ["cancel", "extend", "revoke"],
        "auto_approved": ["cancel", "extend", "revoke"],
        "active": ["extend", "release", "revoke"],
        "expired": [],
        "denied": [],
        "cancelled": [],
        "timed_out": [],
        "revoked": [],
        "failed": [],
    }
    assert {s.value: sorted(offers(s, ending=True)) for s in RequestState if offers(s)} == {
        "pending": ["approve", "deny"],
        "approved": ["revoke"],
        "auto_approved": ["revoke"],
        "active": ["revoke"],
    }


@pytest.mark.parametrize(("state", "ending"), CASES)
def test_the_approver_card_shows_the_offered_decisions(state: str, ending: bool) -> None:
    _, rendered = cards.approver_card(view(state, ending=ending))
    assert set(actions_of(rendered)) == offers(state, ending) & APPROVER


@pytest.mark.parametrize(("state", "ending"), CASES)
def test_the_requester_card_shows_the_offered_actions(state: str, ending: bool) -> None:
    _, rendered = cards.requester_card(view(state, ending=ending))
    assert set(actions_of(rendered)) == offers(state, ending) & REQUESTER


@pytest.mark.parametrize(("state", "ending"), CASES)
def test_the_home_tab_offers_release_or_cancel(state: str, ending: bool) -> None:
    tab = home.home_view(pending=(), mine=[view(state, ending=ending)], overseen=None, now=T0)
    offered = offers(state, ending)
    expected = [a for a in (Action.RELEASE, Action.CANCEL) if a in offered][:1]
    assert actions_of(tab["blocks"]) == expected


@pytest.mark.parametrize(("state", "ending"), CASES)
def test_the_breakglass_alert_offers_revoke_where_the_lifecycle_does(
    state: str, ending: bool
) -> None:
    _, rendered = cards.breakglass_alert(view(state, ending=ending, breakglass=True))
    shown = [a for a in actions_of_all(rendered) if a != ids.BREAKGLASS_ACK]
    assert set(shown) == {a.value for a in offers(state, ending) & {Action.REVOKE}}


def actions_of_all(rendered: list[dict[str, Any]]) -> list[str]:
    """Every button's action id or its action (the alert also has Acknowledge)."""
    ids: list[str] = []
    for block in rendered:
        for e in [*block.get("elements", ()), block.get("accessory") or {}]:
            if e.get("type") == "button":
                action = BUTTON_ACTION.get(e["action_id"])
                ids.append(action.value if action else e["action_id"])
    return ids
