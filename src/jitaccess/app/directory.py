"""The ``Directory`` port: who is in an approver group right now.

Approvers (and break-glass holders) may be Slack user groups (``S…`` ids) as well
as people. A group is expanded when cards are sent and again when someone acts, so
a person who left the group can no longer decide. The Slack adapter asks
``usergroups.users.list``; tests and the CLI without Slack use :class:`StaticDirectory`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol


class DirectoryError(Exception):
    """The directory could not say who is in a group. ``str(err)`` is shown to people."""


class Directory(Protocol):
    def members(self, group_id: str) -> tuple[str, ...]:
        """The user ids in ``group_id`` now; raises :class:`DirectoryError` if unknown."""


def is_group(entry: str) -> bool:
    """A Slack user group id (``S…``), as opposed to a person (``U…``/``W…``)."""
    return entry.startswith("S")


class StaticDirectory:
    """Groups from a mapping: the test fake, and what runs when Slack is not configured
    (then no group has members, so only people listed by id can act).

    ``unreadable_because`` says why groups it does not know have no members (no Slack
    settings), so a refusal that comes of a group counting as nobody can say so and
    what to do, instead of leaving the reader to guess."""

    def __init__(
        self,
        groups: Mapping[str, Iterable[str]] | None = None,
        *,
        unreadable_because: str | None = None,
    ) -> None:
        self.groups: dict[str, tuple[str, ...]] = {
            group: tuple(people) for group, people in (groups or {}).items()
        }
        self.unreadable_because = unreadable_because

    def members(self, group_id: str) -> tuple[str, ...]:
        return self.groups.get(group_id, ())


#: Groups read while a decision's check runs (see :func:`recording`).
_recorded: ContextVar[dict[str, tuple[str, ...]] | None] = ContextVar("recorded", default=None)
#: Groups a decision's write takes from its check (see :func:`answered`).
_answered: ContextVar[Mapping[str, tuple[str, ...]] | None] = ContextVar("answered", default=None)


@contextmanager
def recording() -> Iterator[dict[str, tuple[str, ...]]]:
    """Within: every group :func:`expand` reads is kept in the yielded mapping, so the
    write that follows a decision's check can use what the check saw (:func:`answered`)
    instead of asking again, where a second lookup could fail after the approver was
    already told the decision is recorded."""
    found: dict[str, tuple[str, ...]] = {}
    token = _recorded.set(found)
    try:
        yield found
    finally:
        _recorded.reset(token)


@contextmanager
def answered(found: Mapping[str, tuple[str, ...]]) -> Iterator[None]:
    """Within: :func:`expand` answers the groups in ``found`` from it."""
    token = _answered.set(found)
    try:
        yield
    finally:
        _answered.reset(token)


def members_of(directory: Directory, group_id: str) -> tuple[str, ...]:
    """``directory.members(group_id)``, or what this decision's check read."""
    given = _answered.get()
    if given is not None and group_id in given:
        return given[group_id]
    people = directory.members(group_id)
    seen = _recorded.get()
    if seen is not None:
        seen[group_id] = people
    return people


def unreadable_groups(directory: Directory, entries: Iterable[str]) -> str | None:
    """What a refusal should add when ``entries`` name groups ``directory`` cannot read
    (e.g. "The approver group S1 is a Slack user group: … set them, or name approvers as
    people"); None when every group can be read."""
    why = getattr(directory, "unreadable_because", None)
    known = getattr(directory, "groups", {})
    groups = [e for e in entries if is_group(e) and e not in known]
    if why is None or not groups:
        return None
    named = (
        f"The approver group {groups[0]} is a Slack user group"
        if len(groups) == 1
        else f"The approver groups {', '.join(groups)} are Slack user groups"
    )
    return f"{named}: {why}; set them, or name approvers as people (U…)"


def expand(directory: Directory, entries: Iterable[str]) -> tuple[str, ...]:
    """People and the members of groups, in order, each once."""
    people: dict[str, None] = {}
    for entry in entries:
        for person in members_of(directory, entry) if is_group(entry) else (entry,):
            people[person] = None
    return tuple(people)
