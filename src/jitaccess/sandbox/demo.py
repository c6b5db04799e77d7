"""The sandbox's demo workspace: four people, one user group and three applications.

The people live in the fake Slack workspace (``users.info`` reports their names and
time zones); the applications are registered through the service on first start,
exactly as ``jitaccess apps register`` would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.sandbox.fake_slack import FakeSlack
from jitaccess.service import AppSpec, JitService

PUBLISHER = "UPUBDEMO"
APPROVER = "UAPPDEMO1"
APPROVER2 = "UAPPDEMO2"
ADMIN = "UADMDEMO"
#: A Slack user group (Ava and Abe): northwind-hr's approvers, two of whom must approve.
APPROVER_GROUP = "SDEMOAPPROVERS"
GROUPS: dict[str, tuple[str, ...]] = {APPROVER_GROUP: (APPROVER, APPROVER2)}
#: The demo applications' feed channel: every request posted and updated there.
FEED_CHANNEL = "CJITFEED"
FEED_CHANNEL_NAME = "jit-requests"
SEEDED_BY = "sandbox"


@dataclass(frozen=True)
class DemoUser:
    id: str
    name: str
    real_name: str
    tz: str
    role: str
    """What this person does in the demo, shown in the page's user picker."""


USERS: tuple[DemoUser, ...] = (
    DemoUser(PUBLISHER, "pat", "Pat Publisher", "Europe/Berlin", "publisher: asks for access"),
    DemoUser(
        APPROVER,
        "ava",
        "Ava Approver",
        "America/New_York",
        "approver of all (in the group)",
    ),
    DemoUser(
        APPROVER2, "abe", "Abe Approver", "Asia/Tokyo", "approver of contoso-crm (in the group)"
    ),
    DemoUser(ADMIN, "ada", "Ada Admin", "Europe/London", "consumer admin: sets policy"),
)

APPS: tuple[AppSpec, ...] = (
    AppSpec(
        name="contoso-crm",
        scope="/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/mrg-contoso-crm",
        publishers=(PUBLISHER,),
        roles=("Contributor", "Owner"),
        admins=(ADMIN,),
        policy=Policy(
            mode=ApprovalMode.MANUAL,
            max_duration=timedelta(hours=8),
            approvers=(APPROVER, APPROVER2),
            # Pat may break glass here: `/jit breakglass contoso-crm Owner 1h INC-1 …`.
            breakglass=(PUBLISHER,),
            feed_channel=FEED_CHANNEL,
        ),
        provider="log",
    ),
    AppSpec(
        name="fabrikam-erp",
        scope="/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/mrg-fabrikam-erp",
        publishers=(PUBLISHER,),
        roles=("Reader", "Contributor"),
        admins=(ADMIN,),
        policy=Policy(
            mode=ApprovalMode.AUTOMATIC,
            max_duration=timedelta(hours=4),
            approvers=(APPROVER,),
            feed_channel=FEED_CHANNEL,
        ),
        provider="log",
    ),
    AppSpec(
        name="northwind-hr",
        scope="/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/mrg-northwind-hr",
        publishers=(PUBLISHER,),
        roles=("Contributor",),
        admins=(ADMIN,),
        policy=Policy(
            mode=ApprovalMode.MANUAL,
            max_duration=timedelta(hours=4),
            approvers=(APPROVER_GROUP,),
            required_approvals=2,
            feed_channel=FEED_CHANNEL,
        ),
        provider="log",
    ),
)


def add_users(fake: FakeSlack, now: datetime) -> None:
    """Put the demo people into the fake workspace, with their time zones, and the
    feed channel (jitaccess already invited)."""
    fake.add_channel(FEED_CHANNEL, FEED_CHANNEL_NAME)
    for person in USERS:
        offset = now.astimezone(ZoneInfo(person.tz)).utcoffset() or timedelta(0)
        fake.add_user(
            person.id,
            name=person.name,
            real_name=person.real_name,
            tz=person.tz,
            tz_offset=int(offset.total_seconds()),
            email=f"{person.name}@example.com",
        )
    for group, members in GROUPS.items():
        fake.set_group(group, list(members))


def seed(service: JitService, now: datetime) -> list[str]:
    """Register the demo applications when none is registered; returns their names."""
    if service.list_apps():
        return []
    return [service.register_app(spec, actor=SEEDED_BY, now=now).name for spec in APPS]
