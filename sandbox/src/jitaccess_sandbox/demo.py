"""The sandbox's demo workspace: four people, one user group and five applications.

The people live in the fake Slack workspace (``users.info`` reports their names and
time zones); the applications are registered through the service on first start,
exactly as ``jitaccess apps register`` would. One of them, ``tailspin-azure``, is on
the ``azure`` provider (PIM scheduled mode) against the sandbox's fake Azure Resource
Manager: Pat is mapped to an Entra object id there, and every scheduled assignment
comes with a few Activity Log events by Pat (:func:`demo_activity`), so the summary
after access ends has something to say.

The fifth, ``wingtip-native``, is a managed application on the fake ARM with Azure's
own JIT (native mode): imported on first start as ``jitaccess apps import`` would, its
approver Ava signs in on the sandbox's fake Microsoft sign-in page (``/jit signin``) and
decides as herself; Pat requests as himself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from jitaccess.app.service import AppSpec, JitService
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess_sandbox.fake_arm import Assignment, FakeArm
from jitaccess_sandbox.fake_entra import FakeEntra
from jitaccess_sandbox.fake_slack import FakeSlack

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
#: The demo Azure application: its managed resource group and Pat's Entra object id.
AZURE_APP = "tailspin-azure"
AZURE_SCOPE = (
    "/subscriptions/5a1db0c5-0000-4000-8000-000000000000/resourceGroups/mrg-tailspin-azure"
)
PUBLISHER_OBJECT_ID = "0b5e5a1d-7a7a-4c4c-9d9d-000000000001"
#: The demo native application (Azure's own JIT): its subscription and resource group.
NATIVE_APP = "wingtip-native"
NATIVE_SUBSCRIPTION = "5a1db0c5-0000-4000-8000-00000000beef"
NATIVE_RESOURCE_GROUP = "rg-wingtip"
#: The demo people's Entra object ids (Pat's is the one above).
OBJECT_IDS = {
    "pat": PUBLISHER_OBJECT_ID,
    "ava": "0b5e5a1d-7a7a-4c4c-9d9d-0000000000a1",
    "abe": "0b5e5a1d-7a7a-4c4c-9d9d-0000000000a2",
    "ada": "0b5e5a1d-7a7a-4c4c-9d9d-0000000000a3",
}
CONTRIBUTOR_ROLE = "b24988ac-6180-42a0-ab88-20f7382dd24c"


@dataclass(frozen=True)
class DemoUser:
    id: str
    name: str
    real_name: str
    tz: str
    role: str
    """What this person does in the demo, shown in the page's user picker."""
    azure_object_id: str | None = None
    """Their Entra object id in the fake ARM (the Azure panel names them by it)."""


USERS: tuple[DemoUser, ...] = (
    DemoUser(
        PUBLISHER,
        "pat",
        "Pat Publisher",
        "Europe/Berlin",
        "publisher: asks for access",
        azure_object_id=PUBLISHER_OBJECT_ID,
    ),
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
    AppSpec(
        name=AZURE_APP,
        scope=AZURE_SCOPE,
        publishers=(PUBLISHER,),
        roles=("Reader", "Contributor"),
        admins=(ADMIN,),
        policy=Policy(
            mode=ApprovalMode.MANUAL,
            max_duration=timedelta(hours=8),
            approvers=(APPROVER,),
            feed_channel=FEED_CHANNEL,
        ),
        # The real Azure provider (PIM: Azure itself removes the access at the end),
        # talking to the sandbox's fake ARM.
        provider="azure",
        provider_config={
            "principals": {PUBLISHER: {"object_id": PUBLISHER_OBJECT_ID, "type": "User"}},
            "assignment_mode": "scheduled",
        },
    ),
)

#: What Pat "does" while a demo Azure grant is active: (minutes after its start,
#: operation, resource under the resource group, status). All within PIM's first five
#: minutes, so even access released as early as Azure allows covers them.
DEMO_ACTIVITY: tuple[tuple[float, str, str, str], ...] = (
    (
        0.5,
        "Microsoft.Web/sites/config/write",
        "/providers/Microsoft.Web/sites/app-tailspin",
        "Succeeded",
    ),
    (
        1.5,
        "Microsoft.Web/sites/restart/action",
        "/providers/Microsoft.Web/sites/app-tailspin",
        "Succeeded",
    ),
    (
        2.5,
        "Microsoft.Storage/storageAccounts/write",
        "/providers/Microsoft.Storage/storageAccounts/sttailspin",
        "Succeeded",
    ),
    (
        3.5,
        "Microsoft.KeyVault/vaults/delete",
        "/providers/Microsoft.KeyVault/vaults/kv-tailspin",
        "Failed",
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


def demo_activity(arm: FakeArm) -> Callable[[Assignment], None]:
    """The fake ARM's ``on_scheduled``: Activity Log events by the assignee in the
    assignment's resource group, timed from its start (see :data:`DEMO_ACTIVITY`)."""

    def add(assignment: Assignment) -> None:
        start = assignment.starts_at or arm.clock()
        for minutes, operation, resource, status in DEMO_ACTIVITY:
            arm.add_event(
                assignment.scope,
                operation=operation,
                at=start + timedelta(minutes=minutes),
                object_id=assignment.principal_id,
                caller=(
                    "pat@example.com"
                    if assignment.principal_id == PUBLISHER_OBJECT_ID
                    else assignment.principal_id
                ),
                resource=resource,
                status=status,
            )

    return add


def add_native(arm: FakeArm, entra: FakeEntra) -> None:
    """The demo people in the fake Entra directory (the same addresses as in the fake
    Slack, so the import maps them), and the managed application with Azure's own JIT
    (manual approval by Ava) on the fake ARM, Pat authorized as Contributor."""
    for person in USERS:
        object_id = OBJECT_IDS[person.name]
        address = f"{person.name}@example.com"
        entra.add_user(object_id, address, person.real_name, mail=address)
    arm.user_token_verifier = entra.verify_access_token
    arm.managed_apps.add_application(
        NATIVE_SUBSCRIPTION,
        NATIVE_RESOURCE_GROUP,
        NATIVE_APP,
        managed_resource_group=f"mrg-{NATIVE_APP}",
        approval_mode="ManualApprove",
        approvers=[{"id": OBJECT_IDS["ava"], "type": "user", "displayName": "Ava Approver"}],
        maximum_duration="PT8H",
        authorizations=[{"principalId": PUBLISHER_OBJECT_ID, "roleDefinitionId": CONTRIBUTOR_ROLE}],
    )


def seed(service: JitService, now: datetime) -> list[str]:
    """Register the demo applications not registered yet (all on first start; one
    added to the demo later on the next start); returns their names."""
    registered = {app.name for app in service.list_apps()}
    names = [
        service.register_app(spec, actor=SEEDED_BY, now=now).name
        for spec in APPS
        if spec.name not in registered
    ]
    if NATIVE_APP not in registered and service.deps.native.managed_apps is not None:
        report = service.native.import_apps(
            NATIVE_SUBSCRIPTION,
            NATIVE_RESOURCE_GROUP,
            publishers=[PUBLISHER],
            admins=[ADMIN],
            requests_resource_group=None,
            actor=SEEDED_BY,
            now=now,
        )
        names += report.registered
    return names
