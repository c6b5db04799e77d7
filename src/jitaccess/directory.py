"""The ``Directory`` port: who is in an approver group right now.

Approvers (and break-glass holders) may be Slack user groups (``S…`` ids) as well
as people. A group is expanded when cards are sent and again when someone acts, so
a person who left the group can no longer decide. The Slack adapter asks
``usergroups.users.list``; tests and the CLI without Slack use :class:`StaticDirectory`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    (then no group has members, so only people listed by id can act)."""

    def __init__(self, groups: Mapping[str, Iterable[str]] | None = None) -> None:
        self.groups: dict[str, tuple[str, ...]] = {
            group: tuple(people) for group, people in (groups or {}).items()
        }

    def members(self, group_id: str) -> tuple[str, ...]:
        return self.groups.get(group_id, ())


def expand(directory: Directory, entries: Iterable[str]) -> tuple[str, ...]:
    """People and the members of groups, in order, each once."""
    people: dict[str, None] = {}
    for entry in entries:
        for person in directory.members(entry) if is_group(entry) else (entry,):
            people[person] = None
    return tuple(people)
