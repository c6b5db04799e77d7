"""The fast transition table is the machine's own: every move agrees with python-statemachine."""

from __future__ import annotations

import pytest
from statemachine.exceptions import TransitionNotAllowed

from jitaccess.domain.lifecycle import Event, RequestLifecycle, RequestState, move, transitions


class Row:
    def __init__(self, state: str) -> None:
        self.state = state


EVENTS = sorted({str(e) for s in RequestLifecycle.states for t in s.transitions for e in t.events})


@pytest.mark.parametrize("state", [s.value for s in RequestState])
@pytest.mark.parametrize("event", EVENTS)
def test_every_move_of_the_table_is_the_machines(state: str, event: str) -> None:
    """For every state and event, the table moves where the machine moves, or both refuse."""
    by_machine = Row(state)
    try:
        RequestLifecycle(model=by_machine).send(event)
        expected: str | None = by_machine.state
    except TransitionNotAllowed:
        expected = None
    assert transitions().get((state, event)) == expected
    by_move = Row(state)
    if expected is None:
        with pytest.raises(TransitionNotAllowed):
            move(by_move, event)
        assert by_move.state == state  # a refused move changes nothing
    else:
        assert move(by_move, event) == (state, expected)
        assert by_move.state == expected


def test_the_event_enum_names_the_machines_events() -> None:
    """``Event`` is the machine's events by name, no more and no fewer."""
    assert sorted(e.value for e in Event) == EVENTS
