"""Azure's answers are read strictly too (issue 16, item 2): every ARM read, through the
real Azure SDK against the fake ARM answering a strange shape on demand
(``FakeArm.answer_next``), fails as a failed lookup (a ``ProviderError``, so the sweep
retries it; logged and counted with ``service="azure"``), never as "nothing there".

Before, the SDK raised a ``DeserializationError`` or a ``TypeError`` for most shapes
(not a provider error), and a list of objects without the fields we read was taken for
"none of jitaccess's": a revoke in scheduled mode then removed an assignment that
another request held, and reconciliation missed grants."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from fakes.fake_arm import FakeArm, FakeCredential
from jitaccess.answers import REJECTED
from jitaccess.providers.azure import AzureProvider
from jitaccess.providers.azure_activity import AzureActivityLog
from jitaccess.providers.base import ProviderError
from test_provider_azure_scheduled import CONFIG, NOW, SCOPE, arm, arm_server, at, provider, spec

__all__ = ["arm", "arm_server", "provider"]  # fixtures, shared with the scheduled tests

#: The strange answers to a list: the same shapes as for Slack.
LISTS: dict[str, Any] = {
    "an object": {"value": {"a": 1}},
    "a string": {"value": "x"},
    "null": {"value": None},
    "missing": {},
    "a list of objects": {"value": [{"id": "x", "properties": {"scope": SCOPE}}]},
    "a list of numbers": {"value": [1, 2]},
    "not an object": ["x"],
    "a nextLink that is a number": {"value": [], "nextLink": 7},
}
#: The strange answers for one resource.
RESOURCES: dict[str, Any] = {
    "a string": "x",
    "null": None,
    "a list": [{"name": "x"}],
    "properties as a string": {"name": "x", "properties": "x"},
    "no properties": {"name": "x"},
    "a justification that is a number": {"name": "x", "properties": {"justification": 42}},
}


def rejected() -> float:
    return sum(
        sample.value
        for metric in REJECTED.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["service"] == "azure"
    )


@pytest.mark.parametrize("shape", LISTS)
def test_a_strange_role_assignment_list_fails_reconciliation_s_read(
    provider: AzureProvider, arm: FakeArm, shape: str
) -> None:
    provider.grant(spec(config={**CONFIG, "assignment_mode": "direct"}), NOW)
    counted = rejected()
    arm.answer_next(LISTS[shape], path="/roleAssignments")
    with pytest.raises(ProviderError, match="azure answered GET roleAssignments"):
        provider.list_grants(SCOPE, {"assignment_mode": "direct"})
    assert rejected() == counted + 1
    assert len(provider.list_grants(SCOPE, {"assignment_mode": "direct"})) == 1  # then as before


@pytest.mark.parametrize("shape", LISTS)
def test_a_strange_schedule_list_fails_the_revoke_and_removes_nothing(
    provider: AzureProvider, arm: FakeArm, shape: str
) -> None:
    """The scheduled revoke first reads whose PIM assignment it is: a strange answer
    there fails the revoke (retried), and nothing is removed on its strength."""
    provider.grant(spec(), NOW)
    at(arm, NOW + timedelta(minutes=30))
    counted = rejected()
    arm.answer_next(LISTS[shape], path="/roleAssignmentSchedules")
    with pytest.raises(ProviderError, match="azure answered GET roleAssignmentSchedules"):
        provider.revoke(spec(), NOW + timedelta(minutes=30))
    assert rejected() == counted + 1
    assert len(arm.at(SCOPE)) == 1  # still held: nothing was removed
    provider.revoke(spec(), NOW + timedelta(minutes=30))  # retried: removed
    assert arm.at(SCOPE) == []


@pytest.mark.parametrize("shape", RESOURCES)
def test_a_strange_schedule_request_fails_the_revoke_and_removes_nothing(
    provider: AzureProvider, arm: FakeArm, shape: str
) -> None:
    """The request behind the assignment (whose is it?) is read as one resource."""
    provider.grant(spec(), NOW)
    at(arm, NOW + timedelta(minutes=30))
    arm.answer_next(RESOURCES[shape], path="/roleAssignmentScheduleRequests/")
    with pytest.raises(ProviderError, match="azure answered GET roleAssignmentScheduleRequests"):
        provider.revoke(spec(), NOW + timedelta(minutes=30))
    assert len(arm.at(SCOPE)) == 1


@pytest.fixture
def activity(arm: FakeArm) -> Iterator[AzureActivityLog]:
    log = AzureActivityLog(
        FakeCredential(),
        base_url=arm.base_url,
        connection_verify=str(arm.ca_file),
        timeout=5,
        retry_total=0,
    )
    yield log
    log.close()


@pytest.mark.parametrize("shape", LISTS)
def test_a_strange_activity_log_is_a_failed_read_not_an_empty_one(
    activity: AzureActivityLog, arm: FakeArm, shape: str
) -> None:
    """ "What the publisher did" is never summarised as "nothing" from a strange answer."""
    counted = rejected()
    arm.answer_next(LISTS[shape], path="/eventtypes/management/values")
    with pytest.raises(ProviderError, match="azure answered GET activityLogs"):
        activity.read(SCOPE, "UPUB1", CONFIG, NOW - timedelta(hours=1), NOW)
    assert rejected() == counted + 1
    assert activity.read(SCOPE, "UPUB1", CONFIG, NOW - timedelta(hours=1), NOW) == []
