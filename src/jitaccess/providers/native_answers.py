"""Azure's answers for native mode, read strictly into the domain's facts.

Managed applications and jitRequests (``Microsoft.Solutions`` 2021-07-01), PIM role
assignment schedule requests (2020-10-01) and approvals (2021-01-01-preview) are read
from the raw JSON ARM sent, never from the SDK's lenient models: each answer must have
exactly the documented shape (``Azure/azure-rest-api-specs``,
``specification/solutions/resource-manager/Microsoft.Solutions/ManagedApplications/
stable/2021-07-01/managedapplications.json`` and ``specification/authorization/
resource-manager/Microsoft.Authorization/…``), with the fields jitaccess reads present
and of the right type. Anything else raises
:class:`~jitaccess.domain.native.ExternalLookupFailed` saying which call and why, logged
and counted like every rejected answer (:func:`jitaccess.answers.rejected`).

No Azure SDK import here: this module is plain parsing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jitaccess.answers import describe, rejected
from jitaccess.domain.durations import parse_duration
from jitaccess.domain.native import (
    ApproverKind,
    ExternalLookupFailed,
    JitApprovalMode,
    JitApprover,
    JitRequestState,
    ManagedApp,
    NativePolicy,
    NativeRequest,
    RoleAuthorization,
)

SERVICE = "azure"
#: The product's default when an application's policy names no maximum (rule 2).
DEFAULT_MAX_DURATION = timedelta(hours=8)
_ISO_DURATION = re.compile(r"^P(?:[0-9]+D)?(?:T(?:[0-9]+H)?(?:[0-9]+M)?(?:[0-9]+S)?)?$")


def reject(call: str, reason: str) -> ExternalLookupFailed:
    """The failed lookup for an answer of the wrong shape (logged and counted)."""
    return ExternalLookupFailed(str(rejected(SERVICE, call, reason)))


def body_json(raw: bytes | str | None, call: str) -> Any:
    """The JSON value of a body; a failed lookup when it is empty or not JSON."""
    if raw is None or not raw:
        raise reject(call, "an empty body")
    try:
        return json.loads(raw)
    except ValueError:
        raise reject(call, "a body that is not JSON") from None


def _object(value: Any, call: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise reject(call, f"{describe(value)} as {where}, not an object")
    return value


def _string(item: dict[str, Any], key: str, call: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise reject(call, f"{key} as {describe(value)} in {where}, not a non-empty string")
    return value


def _optional_string(item: dict[str, Any], key: str, call: str, where: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise reject(call, f"{key} as {describe(value)} in {where}, not a string")
    return value or None


def _list_of_objects(value: Any, call: str, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise reject(call, f"{describe(value)} as {where}, not a list")
    for item in value:
        if not isinstance(item, dict):
            raise reject(call, f"{describe(item)} in {where}, not an object")
    return value


def page(data: Any, call: str) -> tuple[list[dict[str, Any]], str | None]:
    """A list answer: ``{"value": [objects], "nextLink": string|null}``."""
    body = _object(data, call, "the body")
    if body.get("value") is None:
        raise reject(call, "no value list")
    items = _list_of_objects(body["value"], call, "value")
    next_link = body.get("nextLink")
    if next_link is not None and not isinstance(next_link, str):
        raise reject(call, f"nextLink as {describe(next_link)}, not a string")
    return items, next_link or None


def iso_duration(text: Any, call: str, where: str) -> timedelta:
    """An ISO 8601 duration (``PT8H``, ``P1DT2H``) Azure sent; weeks, years, months and
    fractions are not durations Azure's JIT uses, and are refused."""
    if not isinstance(text, str) or not _ISO_DURATION.match(text.strip().upper()):
        raise reject(call, f"{where} that is not an ISO 8601 duration")
    try:
        value = parse_duration(text)
    except ValueError:
        raise reject(call, f"{where} that is not an ISO 8601 duration") from None
    if value <= timedelta(0):
        raise reject(call, f"{where} that is not a positive duration")
    return value


def format_iso_duration(value: timedelta) -> str:
    """A positive duration as ISO 8601 (``PT8H``, ``P1DT2H30M``), as Azure takes it."""
    total = int(value.total_seconds())
    if total <= 0:
        raise ValueError("a JIT duration must be positive")
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"P{days}D" if days else "P"
    clock = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    return text + (f"T{clock}" if clock else "")


def timestamp(text: Any, call: str, where: str) -> datetime:
    """An ISO 8601 date-time; one without an offset is UTC, as ARM means it."""
    if not isinstance(text, str) or not text:
        raise reject(call, f"{where} as {describe(text)}, not a date-time")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise reject(call, f"{where} that is not an ISO 8601 date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _authorizations(value: Any, call: str, where: str) -> tuple[RoleAuthorization, ...]:
    return tuple(
        RoleAuthorization(
            principal_id=_string(item, "principalId", call, where),
            role_definition_id=_string(item, "roleDefinitionId", call, where),
        )
        for item in _list_of_objects(value, call, where)
    )


def policy(value: Any, call: str) -> NativePolicy | None:
    """``properties.jitAccessPolicy`` (``ApplicationJitAccessPolicy``).

    None when absent. A policy with JIT disabled keeps what it says, with the product's
    defaults (automatic, no approvers, 8 hours) where it says nothing; an enabled policy
    must name AutoApprove or ManualApprove (NotSpecified is not a policy jitaccess can
    act on), and ManualApprove needs an approver. An approver without a ``type`` is taken
    as a user (the spec makes ``type`` optional): mapping it to a person then fails for a
    group id, so it is listed as unmapped, never guessed."""
    if value is None:
        return None
    where = "jitAccessPolicy"
    item = _object(value, call, where)
    enabled = item.get("jitAccessEnabled")
    if not isinstance(enabled, bool):
        raise reject(call, f"jitAccessEnabled as {describe(enabled)}, not a boolean")
    mode_text = item.get("jitApprovalMode")
    if mode_text is not None and not isinstance(mode_text, str):
        raise reject(call, f"jitApprovalMode as {describe(mode_text)}, not a string")
    try:
        mode = JitApprovalMode(mode_text) if mode_text not in (None, "NotSpecified") else None
    except ValueError:
        raise reject(
            call, f"the jitApprovalMode '{mode_text}', which jitaccess does not know"
        ) from None
    if mode is None and enabled:
        raise reject(call, "a JIT policy whose jitApprovalMode is not AutoApprove or ManualApprove")
    approvers: list[JitApprover] = []
    raw_approvers = item.get("jitApprovers")
    for entry in _list_of_objects(
        [] if raw_approvers is None else raw_approvers, call, "jitApprovers"
    ):
        kind_text = entry.get("type", "user")
        try:
            kind = ApproverKind(kind_text)
        except ValueError:
            raise reject(
                call, f"a JIT approver of type {describe(kind_text)} that is not user or group"
            ) from None
        approvers.append(
            JitApprover(
                id=_string(entry, "id", call, "jitApprovers").lower(),
                kind=kind,
                display_name=_optional_string(entry, "displayName", call, "jitApprovers"),
            )
        )
    if enabled and mode is JitApprovalMode.MANUAL and not approvers:
        raise reject(call, "a ManualApprove JIT policy without approvers")
    maximum = item.get("maximumJitAccessDuration")
    max_duration = (
        DEFAULT_MAX_DURATION
        if maximum is None
        else iso_duration(maximum, call, "a maximumJitAccessDuration")
    )
    return NativePolicy(
        enabled=enabled,
        approval_mode=mode or JitApprovalMode.AUTO,
        approvers=tuple(approvers),
        max_duration=max_duration,
    )


def policy_body(value: NativePolicy) -> dict[str, Any]:
    """``ApplicationJitAccessPolicy`` for a PATCH."""
    approvers: list[dict[str, str]] = []
    for approver in value.approvers:
        entry = {"id": approver.id, "type": approver.kind.value}
        if approver.display_name:
            entry["displayName"] = approver.display_name
        approvers.append(entry)
    return {
        "jitAccessEnabled": value.enabled,
        "jitApprovalMode": value.approval_mode.value,
        "jitApprovers": approvers,
        "maximumJitAccessDuration": format_iso_duration(value.max_duration),
    }


def application(data: Any, call: str) -> ManagedApp:
    """One ``Microsoft.Solutions/applications`` resource (``Application``)."""
    item = _object(data, call, "the application")
    where = "the application"
    properties = _object(item.get("properties"), call, "properties")
    raw_authorizations = properties.get("authorizations")
    return ManagedApp(
        id=_string(item, "id", call, where),
        name=_string(item, "name", call, where),
        managed_resource_group_id=_string(properties, "managedResourceGroupId", call, where),
        policy=policy(properties.get("jitAccessPolicy"), call),
        authorizations=()
        if raw_authorizations is None
        else _authorizations(raw_authorizations, call, "authorizations"),
        publisher_tenant_id=_optional_string(properties, "publisherTenantId", call, where),
    )


def jit_request(data: Any, call: str) -> NativeRequest:
    """One ``Microsoft.Solutions/jitRequests`` resource (``JitRequestDefinition``).

    ``jitRequestState`` must be one of the spec's values: NotSpecified comes back as
    :attr:`JitRequestState.NOT_SPECIFIED` (the domain's ``state_for`` refuses it), and
    anything else is a failed lookup. Only ``Once`` schedules exist for jitaccess."""
    item = _object(data, call, "the JIT request")
    where = "the JIT request"
    properties = _object(item.get("properties"), call, "properties")
    state_text = _string(properties, "jitRequestState", call, where)
    try:
        state = JitRequestState(state_text)
    except ValueError:
        raise reject(
            call, f"the jitRequestState '{state_text[:40]}', which jitaccess does not know"
        ) from None
    scheduling = _object(properties.get("jitSchedulingPolicy"), call, "jitSchedulingPolicy")
    schedule_type = _string(scheduling, "type", call, "jitSchedulingPolicy")
    if schedule_type != "Once":
        raise reject(call, f"a jitSchedulingPolicy of type '{schedule_type[:20]}', not Once")
    created_by = properties.get("createdBy")
    creator = None
    if created_by is not None:
        creator = _optional_string(_object(created_by, call, "createdBy"), "oid", call, "createdBy")
    return NativeRequest(
        id=_string(item, "id", call, where),
        application_id=_string(properties, "applicationResourceId", call, where),
        state=state,
        authorizations=_authorizations(
            properties.get("jitAuthorizationPolicies"), call, "jitAuthorizationPolicies"
        ),
        starts_at=timestamp(scheduling.get("startTime"), call, "jitSchedulingPolicy.startTime"),
        duration=iso_duration(scheduling.get("duration"), call, "a jitSchedulingPolicy.duration"),
        created_by=creator.lower() if creator else None,
    )


@dataclass(frozen=True)
class ScheduleRequestFacts:
    """What find_stage reads of a ``roleAssignmentScheduleRequest``."""

    principal_id: str
    role_definition_id: str
    status: str
    approval_id: str | None
    starts_at: datetime | None


def schedule_request(item: dict[str, Any], call: str) -> ScheduleRequestFacts:
    where = "a schedule request"
    properties = _object(item.get("properties"), call, "properties")
    schedule = properties.get("scheduleInfo")
    starts_at = None
    if schedule is not None:
        start = _object(schedule, call, "scheduleInfo").get("startDateTime")
        if start is not None:
            starts_at = timestamp(start, call, "scheduleInfo.startDateTime")
    return ScheduleRequestFacts(
        principal_id=_string(properties, "principalId", call, where),
        role_definition_id=_string(properties, "roleDefinitionId", call, where),
        status=_string(properties, "status", call, where),
        approval_id=_optional_string(properties, "approvalId", call, where),
        starts_at=starts_at,
    )


@dataclass(frozen=True)
class StageFacts:
    """One stage of a ``roleAssignmentApproval``."""

    stage_id: str
    assigned_to_me: bool
    status: str
    review_result: str | None


def stage(item: Any, call: str) -> StageFacts:
    """A ``RoleAssignmentApprovalStep``: its id ends ``…/stages/{stageId}``, the id the
    stage's URL takes (the spec's example gives it a different ``name``)."""
    where = "an approval stage"
    entry = _object(item, call, where)
    stage_path = _string(entry, "id", call, where)
    head, sep, stage_id = stage_path.rstrip("/").rpartition("/stages/")
    if not sep or not head or not stage_id or "/" in stage_id:
        raise reject(call, "an approval stage id that does not end /stages/{stageId}")
    properties = _object(entry.get("properties"), call, "a stage's properties")
    assigned = properties.get("assignedToMe")
    if not isinstance(assigned, bool):
        raise reject(call, f"assignedToMe as {describe(assigned)}, not a boolean")
    return StageFacts(
        stage_id=stage_id,
        assigned_to_me=assigned,
        status=_string(properties, "status", call, where),
        review_result=_optional_string(properties, "reviewResult", call, where),
    )


def approval_stages(data: Any, call: str) -> list[StageFacts]:
    """The stages of a ``RoleAssignmentApproval`` (``properties.stages``)."""
    item = _object(data, call, "the approval")
    properties = _object(item.get("properties"), call, "the approval's properties")
    stages = properties.get("stages")
    if stages is None:
        raise reject(call, "an approval without stages")
    if not isinstance(stages, list):
        raise reject(call, f"stages as {describe(stages)}, not a list")
    return [stage(entry, call) for entry in stages]
