"""The Azure side of native-mode tests, shared by tests/app and tests/slack: the fake
ARM (Microsoft.Solutions, PIM approvals) and the fake Entra (sign-in, Graph) with the
same people and one managed application, and the real adapters pointed at them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from fakes.fake_arm import FakeArm, FakeCredential
from fakes.fake_entra import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, TENANT_ID, FakeEntra
from jitaccess.app.deps import NativePorts
from jitaccess.app.signins import TokenCipher
from jitaccess.providers.entra import EntraSignIn
from jitaccess.providers.graph import GraphDirectory
from jitaccess.providers.managed_apps import ManagedApps
from jitaccess.providers.pim_approvals import PimApprovals

SUB = "0a1b2c3d-1111-4222-8333-444455556666"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
AVA_OID, PAT_OID, BEN_OID, CARL_OID = (
    "aaaaaaaa-0000-4000-8000-000000000001",
    "bbbbbbbb-0000-4000-8000-000000000002",
    "cccccccc-0000-4000-8000-000000000003",
    "dddddddd-0000-4000-8000-000000000004",
)
GROUP_OID = "eeeeeeee-0000-4000-8000-000000000005"
#: An Entra approver with no Slack account (listed as unmapped by the import).
NOBODY_OID = "ffffffff-0000-4000-8000-000000000006"
AVA, PAT, BEN, CARL = "U0AVA0001", "U0PAT0002", "U0BEN0003", "U0CARL004"
#: Slack user -> (Slack name, e-mail, Entra object id, real name).
PEOPLE = {
    AVA: ("ava", "ava@contoso.example", AVA_OID, "Ava Adams"),
    PAT: ("pat", "pat@fabrikam.example", PAT_OID, "Pat Publisher"),
    BEN: ("ben", "ben@contoso.example", BEN_OID, "Ben Brown"),
    CARL: ("carl", "carl@contoso.example", CARL_OID, "Carl Clark"),
}


@contextmanager
def azure_fakes(
    clock: Callable[[], datetime] | None = None, *, unmapped_approver: bool = False
) -> Iterator[tuple[FakeArm, FakeEntra, str]]:
    """The fake ARM and fake Entra with Ava, Pat, Ben and Carl, Ben in the Ops group,
    and ``contoso``: manual approval by Ava and Ops, at most 4 h, Pat authorized as
    Contributor. Yields (arm, entra, the application's id)."""
    with FakeEntra(now=clock) as entra, FakeArm() as arm:
        if clock is not None:
            arm.clock = clock
        arm.user_token_verifier = entra.verify_access_token
        arm.managed_apps.lro_polls = 2
        for _name, email, oid, real in PEOPLE.values():
            entra.add_user(oid, email, real, mail=email)
        approvers = [{"id": AVA_OID, "type": "user", "displayName": "Ava Adams"}]
        if unmapped_approver:
            entra.add_user(
                NOBODY_OID, "nobody@contoso.example", "No Slack", mail="nobody@contoso.example"
            )
            approvers.append({"id": NOBODY_OID, "type": "user", "displayName": "No Slack"})
        approvers.append({"id": GROUP_OID, "type": "group", "displayName": "Ops"})
        entra.add_group(GROUP_OID, [BEN_OID])
        arm.managed_apps.group_members[GROUP_OID] = {BEN_OID}
        app = arm.managed_apps.add_application(
            SUB,
            "apps",
            "contoso",
            managed_resource_group="mrg-contoso",
            approval_mode="ManualApprove",
            approvers=approvers,
            maximum_duration="PT4H",
            authorizations=[{"principalId": PAT_OID, "roleDefinitionId": CONTRIBUTOR}],
        )
        yield arm, entra, app.id


def native_ports(
    arm: FakeArm,
    entra: FakeEntra,
    slack_lookup: Callable[[str], str | None],
    clock: Callable[[], datetime] | None = None,
) -> NativePorts:
    """The real adapters (Azure SDK, msal, Graph over requests) pointed at the fakes."""
    arm_ca, entra_ca = str(arm.ca_file), str(entra.ca_file)
    extra = {"now": clock} if clock is not None else {}
    return NativePorts(
        managed_apps=ManagedApps(
            FakeCredential(), base_url=arm.base_url, connection_verify=arm_ca, polling_interval=0
        ),
        pim=PimApprovals(base_url=arm.base_url, connection_verify=arm_ca),
        graph=GraphDirectory(FakeCredential(), base_url=entra.graph_url, verify=entra_ca),
        slack_lookup=slack_lookup,
        sign_in=EntraSignIn(
            tenant_id=TENANT_ID,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            redirect_uri=REDIRECT_URI,
            authority_host=entra.base_url,
            verify=entra_ca,
            **extra,  # type: ignore[arg-type]
        ),
        token_keys=TokenCipher.new_key(),
    )
