"""The sweep's provider for native applications reads Azure and writes nothing: a grant
is confirmed only when Azure reports the jitRequest Approved, and the end only once
Azure's own window is over (or the request is no longer Approved)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from fakes.fake_arm import FakeArm, FakeCredential
from fakes.fake_managed_apps import user_token, verify_user_token
from jitaccess.domain.native import RoleAuthorization
from jitaccess.providers.base import GrantSpec, ProviderError
from jitaccess.providers.managed_apps import ManagedApps
from jitaccess.providers.native import NativeWitness

SUB = "0a1b2c3d-1111-4222-8333-444455556666"
PUB = "bbbbbbbb-0000-4000-8000-000000000002"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"


@pytest.fixture
def arm() -> Iterator[FakeArm]:
    with FakeArm() as fake:
        fake.user_token_verifier = verify_user_token
        fake.managed_apps.lro_polls = 0
        yield fake


def _spec(request_id: str | None, start: datetime) -> GrantSpec:
    return GrantSpec(
        request_id=1,
        app="contoso",
        scope="/subscriptions/x/resourceGroups/mrg",
        principal="U1",
        role="Contributor",
        starts_at=start,
        ends_at=start + timedelta(hours=1),
        config={"native_request_id": request_id} if request_id else {},
    )


def test_the_witness_confirms_what_azure_says_and_writes_nothing(arm: FakeArm) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    arm.clock = lambda: now
    app = arm.managed_apps.add_application(
        SUB,
        "apps",
        "contoso",
        managed_resource_group="mrg",
        approval_mode="ManualApprove",
        approvers=[{"id": "aaaaaaaa-0000-4000-8000-000000000001", "type": "user"}],
        authorizations=[{"principalId": PUB, "roleDefinitionId": CONTRIBUTOR}],
    )
    managed = ManagedApps(
        FakeCredential(),
        base_url=arm.base_url,
        connection_verify=str(arm.ca_file),
        polling_interval=0,
    )
    made = managed.create_request(
        user_token(PUB),
        f"/subscriptions/{SUB}/resourceGroups/mrg/providers/Microsoft.Solutions/jitRequests/r1",
        app.id,
        [RoleAuthorization(PUB, CONTRIBUTOR)],
        now,
        timedelta(hours=1),
    )
    witness = NativeWitness(managed)
    spec = _spec(made.id, now)
    with pytest.raises(ProviderError, match="Pending, not Approved"):
        witness.grant(spec, now)
    arm.managed_apps.set_request_state(made.id, "Approved")
    seen = len(arm.requests)
    witness.grant(spec, now)
    with pytest.raises(ProviderError, match="still grants this access for another 30m,"):
        witness.revoke(spec, now + timedelta(minutes=30))
    witness.revoke(spec, now + timedelta(hours=1))  # Azure's window is over
    arm.managed_apps.set_request_state(made.id, "Canceled")
    witness.revoke(spec, now)  # no longer Approved: nothing held
    witness_calls = arm.requests[seen:]
    assert witness_calls and {method for method, _target in witness_calls} == {"GET"}


def test_a_request_without_a_jit_request_or_azure_is_refused() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ProviderError, match="no Azure JIT request"):
        NativeWitness(None).grant(_spec(None, now), now)
    with pytest.raises(ProviderError, match="Azure Resource Manager"):
        NativeWitness(None).revoke(_spec("/subscriptions/x/jitRequests/y", now), now)
