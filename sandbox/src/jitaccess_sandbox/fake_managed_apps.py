"""Azure Managed Applications' own JIT on the fake ARM: applications with a
``jitAccessPolicy``, ``jitRequests``, and the PIM approval a manual request waits for.

:class:`FakeManagedApps` lives inside :class:`~jitaccess_sandbox.fake_arm.FakeArm`
(``arm.managed_apps``) and answers on the same HTTPS server; ``FakeArm.handle`` hands it
every path it owns (:meth:`FakeManagedApps.owns`). It follows the official REST API
specifications (``Azure/azure-rest-api-specs``):

- ``specification/solutions/resource-manager/Microsoft.Solutions/ManagedApplications/
  stable/2021-07-01/managedapplications.json``: ``Applications_Get``/``_GetById``,
  ``_ListBySubscription``/``_ListByResourceGroup`` (pageable, ``nextLink``),
  ``Applications_Update``/``_UpdateById`` (PATCH, long-running: 200 or 202,
  ``final-state-via: azure-async-operation``; the 202 carries ``Azure-AsyncOperation``
  and ``Location``, the status resource says InProgress for :attr:`lro_polls` minus one polls,
  then Succeeded, and only then is the change applied). No etag: 2021-07-01 has none.
  ``JitRequests_Get``, ``jitRequests_CreateOrUpdate`` (PUT, long-running: 200/201,
  ``final-state-via: azure-async-operation``), ``JitRequests_Update`` (PATCH: tags
  only, ``JitRequestPatchable``), ``jitRequests_ListBySubscription``/``ByResourceGroup``
  (not pageable in the spec: one answer, no ``nextLink``). ``jitRequestState``,
  ``provisioningState``, ``createdBy``/``updatedBy`` and ``publisherTenantId`` are
  read-only, set from the caller's token (``oid``, ``tid``, ``azp``/``appid``).
- ``specification/authorization/resource-manager/Microsoft.Authorization/preview/
  2021-01-01-preview/authorization-RoleAssignmentApprovalCalls.json``: approvals at
  ``/providers/Microsoft.Authorization/roleAssignmentApprovals/{approvalId}`` (and under
  a scope), ``properties.stages[]`` with ``assignedToMe`` for the caller,
  ``$filter=asApprover()|asCreatedBy()|asTarget()``, and a decision by PATCH or PUT of
  ``…/stages/{stageId}`` with ``reviewResult`` Approve/Deny and ``justification``. The
  swagger's body is the stage properties themselves; its example wraps them in
  ``properties``: both are accepted. Errors have the spec's ``ErrorDefinition`` shape.
- ``specification/authorization/resource-manager/Microsoft.Authorization/stable/
  2020-10-01/RoleAssignmentScheduleRequest.json``: schedule requests at a scope listed
  with ``$filter=asApprover()`` (also ``asRequestor()``/``asTarget()``), each with
  ``status`` and ``approvalId``.

UNVERIFIED against real Azure (the public specs do not say): that a managed
application's JIT request shows up as a PIM ``roleAssignmentApprovals`` item and as a
``roleAssignmentScheduleRequest`` at the managed resource group whose ``approvalId``
points at it, with the jitRequest's principal, role and schedule. That link is what this
fake builds for each ManualApprove request, because it is the only way the public API
could connect a jitRequest to its approval; Azure may instead keep the approval where only
the portal reaches it. Also unverified: the error codes the fake uses where the specs
name none (refusing to enable JIT after deployment, a duration above the maximum, a
second decision, a non-approver deciding), whether PATCH of ``jitAccessPolicy`` is
accepted on its own, and the schedule request's ``requestType``.

Test controls: :meth:`add_application`, :meth:`change_policy_in_portal`,
:meth:`set_request_state` (move a request as Azure would: approved in the portal, timed
out…), :attr:`group_members` (Entra groups → member object ids, for group approvers and
publisher groups), :attr:`lro_polls`, :meth:`fail_operation_next`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

if TYPE_CHECKING:
    from jitaccess_sandbox.fake_arm import FakeArm

SOLUTIONS_API = "2021-07-01"
APPROVALS_API = "2021-01-01-preview"
SCHEDULE_REQUESTS_API = "2020-10-01"
#: The object id the fake gives jitaccess's own identity (the service token).
SERVICE_OBJECT_ID = "5e5e5e5e-0000-4000-8000-000000000001"

Reply = tuple[int, Any, dict[str, str]]

_SEG = r"[^/]+"
_APPS_SUB = re.compile(
    rf"^/subscriptions/(?P<sub>{_SEG})/providers/Microsoft\.Solutions/applications/?$", re.I
)
_APPS_RG = re.compile(
    rf"^/subscriptions/(?P<sub>{_SEG})/resourceGroups/(?P<rg>{_SEG})/providers/"
    r"Microsoft\.Solutions/applications/?$",
    re.I,
)
_APP = re.compile(
    rf"^/subscriptions/(?P<sub>{_SEG})/resourceGroups/(?P<rg>{_SEG})/providers/"
    rf"Microsoft\.Solutions/applications/(?P<name>{_SEG})/?$",
    re.I,
)
_JITS_SUB = re.compile(
    rf"^/subscriptions/(?P<sub>{_SEG})/providers/Microsoft\.Solutions/jitRequests/?$", re.I
)
_JITS_RG = re.compile(
    rf"^/subscriptions/(?P<sub>{_SEG})/resourceGroups/(?P<rg>{_SEG})/providers/"
    r"Microsoft\.Solutions/jitRequests/?$",
    re.I,
)
_JIT = re.compile(
    rf"^/subscriptions/(?P<sub>{_SEG})/resourceGroups/(?P<rg>{_SEG})/providers/"
    rf"Microsoft\.Solutions/jitRequests/(?P<name>{_SEG})/?$",
    re.I,
)
_OPERATION = re.compile(
    rf"^/subscriptions/(?P<sub>{_SEG})/providers/Microsoft\.Solutions/locations/"
    rf"(?P<loc>{_SEG})/(?P<kind>operationStatuses|operationResults)/(?P<op>{_SEG})/?$",
    re.I,
)
_APPROVALS = re.compile(
    r"^(?P<scope>/.*?)?/providers/Microsoft\.Authorization/roleAssignmentApprovals"
    rf"(?:/(?P<approval>{_SEG})(?:/stages/(?P<stage>{_SEG}))?)?/?$",
    re.I,
)
_SCHEDULE_LIST = re.compile(
    r"^(?P<scope>/.+?)/providers/Microsoft\.Authorization/roleAssignmentScheduleRequests/?$",
    re.I,
)
#: The schedule request filters that depend on who calls (served here, not by FakeArm).
_CALLER_FILTERS = ("asapprover()", "asrequestor()", "astarget()")
_ISO_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$"
)
#: jitRequestState → the schedule request status and the approval stage status it means.
_AFTER_STATE = {
    "Approved": ("Provisioned", "Completed"),
    "Denied": ("Denied", "Completed"),
    "Canceled": ("Canceled", "Completed"),
    "Timeout": ("TimedOut", "Expired"),
    "Expired": ("Provisioned", "Completed"),
    "Failed": ("Failed", "Completed"),
}


@dataclass(frozen=True)
class Caller:
    """Who called: jitaccess's own identity (the service token) or a signed-in person."""

    object_id: str
    tenant_id: str | None = None
    service: bool = False
    claims: Mapping[str, Any] = field(default_factory=dict)

    def client_details(self) -> dict[str, str]:
        """``ApplicationClientDetails`` for this caller."""
        details = {"oid": self.object_id}
        app_id = self.claims.get("azp") or self.claims.get("appid")
        if isinstance(app_id, str):
            details["applicationId"] = app_id
        return details


@dataclass
class FakeApplication:
    subscription_id: str
    resource_group: str
    name: str
    managed_resource_group_id: str
    #: ``properties.jitAccessPolicy`` as ARM answers it, or None (no policy at all).
    jit_access_policy: dict[str, Any] | None
    authorizations: list[dict[str, str]]
    publisher_tenant_id: str
    location: str = "westeurope"
    kind: str = "ServiceCatalog"
    application_definition_id: str | None = None
    created_by: dict[str, str] | None = None
    updated_by: dict[str, str] | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Solutions/applications/{self.name}"
        )

    @property
    def deployed_with_jit(self) -> bool:
        return bool((self.jit_access_policy or {}).get("jitAccessEnabled"))

    def resource(self, provisioning_state: str = "Succeeded") -> dict[str, Any]:
        properties: dict[str, Any] = {
            "managedResourceGroupId": self.managed_resource_group_id,
            "parameters": {},
            "outputs": {},
            "provisioningState": provisioning_state,
            "publisherTenantId": self.publisher_tenant_id,
            "authorizations": [dict(a) for a in self.authorizations],
            "managementMode": "Managed",
        }
        if self.application_definition_id:
            properties["applicationDefinitionId"] = self.application_definition_id
        if self.jit_access_policy is not None:
            properties["jitAccessPolicy"] = json.loads(json.dumps(self.jit_access_policy))
        if self.created_by:
            properties["createdBy"] = dict(self.created_by)
        if self.updated_by:
            properties["updatedBy"] = dict(self.updated_by)
        resource: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "type": "Microsoft.Solutions/applications",
            "location": self.location,
            "kind": self.kind,
            "properties": properties,
        }
        if self.tags:
            resource["tags"] = dict(self.tags)
        return resource


@dataclass
class FakeJitRequest:
    subscription_id: str
    resource_group: str
    name: str
    application_id: str
    authorizations: list[dict[str, str]]
    scheduling: dict[str, str]
    state: str
    created_by: dict[str, str]
    publisher_tenant_id: str | None
    starts_at: dt.datetime
    ends_at: dt.datetime
    provisioning_state: str = "Succeeded"
    updated_by: dict[str, str] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    approval_id: str | None = None
    schedule_request: str | None = None

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Solutions/jitRequests/{self.name}"
        )

    def resource(self) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "applicationResourceId": self.application_id,
            "jitAuthorizationPolicies": [dict(a) for a in self.authorizations],
            "jitSchedulingPolicy": dict(self.scheduling),
            "provisioningState": self.provisioning_state,
            "jitRequestState": self.state,
            "createdBy": dict(self.created_by),
            "updatedBy": dict(self.updated_by or self.created_by),
        }
        if self.publisher_tenant_id:
            properties["publisherTenantId"] = self.publisher_tenant_id
        resource: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "type": "Microsoft.Solutions/jitRequests",
            "properties": properties,
        }
        if self.tags:
            resource["tags"] = dict(self.tags)
        return resource


@dataclass
class FakeApproval:
    """One PIM approval with one stage, assigned to the application's jitApprovers."""

    name: str
    stage_name: str
    approvers: list[dict[str, Any]]
    jit_request_id: str
    requestor_id: str
    principal_id: str
    status: str = "InProgress"
    review_result: str = "NotReviewed"
    reviewed_by: dict[str, str] | None = None
    reviewed_at: str | None = None
    justification: str = ""

    @property
    def id(self) -> str:
        return f"/providers/Microsoft.Authorization/roleAssignmentApprovals/{self.name}"

    def stage_resource(self, assigned_to_me: bool, scope: str = "") -> dict[str, Any]:
        return {
            "id": f"{scope}{self.id}/stages/{self.stage_name}",
            "type": "Microsoft.Authorization/roleAssignmentApprovals/stages",
            "name": self.stage_name,
            "properties": {
                "displayName": "Approve the managed application JIT request",
                "status": self.status,
                "assignedToMe": assigned_to_me,
                "reviewedBy": dict(self.reviewed_by) if self.reviewed_by else None,
                "reviewedDateTime": self.reviewed_at,
                "reviewResult": self.review_result,
                "justification": self.justification,
            },
        }

    def resource(self, assigned_to_me: bool, scope: str = "") -> dict[str, Any]:
        return {
            "id": f"{scope}{self.id}",
            "type": "Microsoft.Authorization/roleAssignmentApprovals",
            "name": self.name,
            "properties": {"stages": [self.stage_resource(assigned_to_me, scope)]},
        }


@dataclass
class _Operation:
    name: str
    subscription_id: str
    location: str
    polls_left: int
    on_done: Callable[[], None]
    started: str
    failure: tuple[str, str] | None = None
    status: str = "InProgress"
    ended: str | None = None


class FakeManagedApps:
    """The Microsoft.Solutions and PIM-approval half of the fake ARM (module docstring)."""

    def __init__(self, arm: FakeArm) -> None:
        self._arm = arm
        self._lock = threading.RLock()
        self.applications: dict[str, FakeApplication] = {}  # by lower-case id
        self.jit_requests: dict[str, FakeJitRequest] = {}  # by lower-case id
        self.approvals: dict[str, FakeApproval] = {}  # by lower-case approval name
        self.operations: dict[str, _Operation] = {}
        #: Entra group object id → the user object ids in it (transitively).
        self.group_members: dict[str, set[str]] = {}
        #: Status polls a long-running PUT/PATCH needs before it says Succeeded; 0 answers
        #: the PUT/PATCH itself synchronously (200/201, no async headers).
        self.lro_polls = 1
        #: Retry-After (seconds) on 202 answers and InProgress polls; None: no header.
        self.retry_after: int | None = None
        self._fail_operation: tuple[str, str] | None = None

    # -- test controls ------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.applications.clear()
            self.jit_requests.clear()
            self.approvals.clear()
            self.operations.clear()
            self.group_members.clear()
            self.lro_polls = 1
            self.retry_after = None
            self._fail_operation = None

    def add_application(
        self,
        subscription_id: str,
        resource_group: str,
        name: str,
        *,
        managed_resource_group: str,
        jit_enabled: bool = True,
        approval_mode: str = "AutoApprove",
        approvers: Iterable[Mapping[str, str]] = (),
        maximum_duration: str = "PT8H",
        authorizations: Iterable[Mapping[str, str]] = (),
        publisher_tenant_id: str = "72f988bf-86f1-41af-91ab-2d7cd011db47",
        with_policy: bool = True,
        location: str = "westeurope",
    ) -> FakeApplication:
        """Deploy a managed application. ``approvers``: ``{"id", "type", "displayName"}``;
        ``authorizations``: ``{"principalId", "roleDefinitionId"}`` from its definition;
        ``managed_resource_group``: its name (in the same subscription) or a full id.
        ``with_policy=False``: no ``jitAccessPolicy`` at all."""
        mrg = managed_resource_group
        if not mrg.startswith("/"):
            mrg = f"/subscriptions/{subscription_id}/resourceGroups/{mrg}"
        policy: dict[str, Any] | None = None
        if with_policy:
            policy = {"jitAccessEnabled": jit_enabled}
            if jit_enabled:
                policy["jitApprovalMode"] = approval_mode
                policy["jitApprovers"] = [dict(a) for a in approvers]
                policy["maximumJitAccessDuration"] = maximum_duration
        app = FakeApplication(
            subscription_id=subscription_id,
            resource_group=resource_group,
            name=name,
            managed_resource_group_id=mrg,
            jit_access_policy=policy,
            authorizations=[dict(a) for a in authorizations],
            publisher_tenant_id=publisher_tenant_id,
            location=location,
        )
        with self._lock:
            self.applications[app.id.lower()] = app
        return app

    def change_policy_in_portal(
        self,
        application_id: str,
        *,
        approval_mode: str | None = None,
        approvers: Iterable[Mapping[str, str]] | None = None,
        maximum_duration: str | None = None,
    ) -> None:
        """A consumer admin changes the JIT policy in the portal (at once, no operation)."""
        with self._lock:
            app = self.applications[application_id.lower()]
            policy = app.jit_access_policy
            if policy is None or not policy.get("jitAccessEnabled"):
                raise ValueError("the portal cannot change JIT on an app deployed without it")
            if approval_mode is not None:
                policy["jitApprovalMode"] = approval_mode
            if approvers is not None:
                policy["jitApprovers"] = [dict(a) for a in approvers]
            if maximum_duration is not None:
                policy["maximumJitAccessDuration"] = maximum_duration

    def set_request_state(self, request_id: str, state: str) -> None:
        """Move a jitRequest as Azure would (approved in the portal, timed out…). Any
        string is taken, so tests can make Azure say NotSpecified or something unknown."""
        with self._lock:
            request = self.jit_requests[request_id.lower()]
            request.state = state
            self._close_approval(request, state)

    def fail_operation_next(self, code: str, message: str) -> None:
        """The next long-running operation ends Failed with this error."""
        with self._lock:
            self._fail_operation = (code, message)

    def request(self, request_id: str) -> FakeJitRequest:
        with self._lock:
            return self.jit_requests[request_id.lower()]

    def application(self, application_id: str) -> FakeApplication:
        with self._lock:
            return self.applications[application_id.lower()]

    def snapshot(self) -> dict[str, Any]:
        """Applications, their policies and the JIT requests, for the sandbox page."""
        self._advance()
        with self._lock:
            apps = [
                {
                    "id": a.id,
                    "name": a.name,
                    "managed_resource_group_id": a.managed_resource_group_id,
                    "jit_access_policy": json.loads(json.dumps(a.jit_access_policy)),
                }
                for a in self.applications.values()
            ]
            requests = [
                {
                    "id": r.id,
                    "application_id": r.application_id,
                    "state": r.state,
                    "principal_id": (r.authorizations or [{}])[0].get("principalId"),
                    "starts_at": r.starts_at.isoformat(),
                    "ends_at": r.ends_at.isoformat(),
                    "created_by": r.created_by.get("oid"),
                    "approval_id": r.approval_id,
                }
                for r in self.jit_requests.values()
            ]
            approvals = [
                {
                    "name": a.name,
                    "jit_request_id": a.jit_request_id,
                    "status": a.status,
                    "review_result": a.review_result,
                    "reviewed_by": (a.reviewed_by or {}).get("principalId"),
                    "justification": a.justification,
                }
                for a in self.approvals.values()
            ]
        return {"applications": apps, "jit_requests": requests, "approvals": approvals}

    # -- routing (called by FakeArm.handle) -----------------------------------------------

    def owns(self, path: str, query: Mapping[str, str]) -> bool:
        """Whether ``path`` is one of the routes served here."""
        if any(
            r.match(path)
            for r in (_APPS_SUB, _APPS_RG, _APP, _JITS_SUB, _JITS_RG, _JIT, _OPERATION, _APPROVALS)
        ):
            return True
        flt = (query.get("$filter") or "").strip().lower()
        return bool(_SCHEDULE_LIST.match(path)) and flt in _CALLER_FILTERS

    def handle(
        self, method: str, path: str, query: Mapping[str, str], caller: Caller, body: bytes
    ) -> Reply:
        self._advance()
        api_version = query.get("api-version", "")
        if match := _OPERATION.match(path):
            return self._operation(match, query)
        if match := _APPROVALS.match(path):
            if api_version != APPROVALS_API:
                return _bad_version(api_version)
            if not self._arm.pim_available:
                return _no_p2()
            return self._approvals(method, match, query, caller, body)
        if match := _SCHEDULE_LIST.match(path):
            if api_version != SCHEDULE_REQUESTS_API:
                return _bad_version(api_version)
            if not self._arm.pim_available:
                return _no_p2()
            if method != "GET":
                return _error(405, "MethodNotAllowed", method)
            return self._schedule_requests_for(match.group("scope"), query, caller)
        if api_version != SOLUTIONS_API:
            return _bad_version(api_version)
        if match := _APPS_SUB.match(path):
            return self._list_apps(method, match.group("sub"), None, path, query)
        if match := _APPS_RG.match(path):
            return self._list_apps(method, match.group("sub"), match.group("rg"), path, query)
        if match := _APP.match(path):
            return self._app(method, path, caller, body)
        if match := _JITS_SUB.match(path):
            return self._list_jits(method, match.group("sub"), None)
        if match := _JITS_RG.match(path):
            return self._list_jits(method, match.group("sub"), match.group("rg"))
        if match := _JIT.match(path):
            return self._jit(method, match, path, caller, body)
        return _error(404, "InvalidResourceType", f"No route for {path}")

    # -- applications ---------------------------------------------------------------------

    def _list_apps(
        self, method: str, sub: str, rg: str | None, path: str, query: Mapping[str, str]
    ) -> Reply:
        if method != "GET":
            return _error(405, "MethodNotAllowed", method)
        with self._lock:
            items = [
                a.resource()
                for a in sorted(self.applications.values(), key=lambda a: a.id.lower())
                if a.subscription_id.lower() == sub.lower()
                and (rg is None or a.resource_group.lower() == rg.lower())
            ]
        return self._page(items, path, query)

    def _app(self, method: str, path: str, caller: Caller, body: bytes) -> Reply:
        with self._lock:
            app = self.applications.get(path.rstrip("/").lower())
        if app is None:
            return _error(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Solutions/applications/{path.rsplit('/', 1)[-1]}' "
                "was not found.",
            )
        if method == "GET":
            with self._lock:
                return 200, app.resource(), {}
        if method != "PATCH":
            return _error(405, "MethodNotAllowed", method)
        try:
            patch = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "InvalidRequestContent", "The content is not valid JSON.")
        if not isinstance(patch, dict):
            return _error(400, "InvalidRequestContent", "The request content must be an object.")
        props = patch.get("properties") or {}
        if not isinstance(props, dict):
            return _error(400, "InvalidRequestContent", "properties must be an object.")
        policy = props.get("jitAccessPolicy")
        if policy is not None:
            refusal = _check_policy(policy, app.deployed_with_jit)
            if refusal is not None:
                return refusal
        tags = patch.get("tags")

        def apply() -> None:
            with self._lock:
                if policy is not None:
                    app.jit_access_policy = json.loads(json.dumps(policy))
                if isinstance(tags, dict):
                    app.tags = {str(k): str(v) for k, v in tags.items()}
                app.updated_by = caller.client_details()

        return self._long_running(app.subscription_id, app.location, apply, app.resource, 202)

    # -- jitRequests ------------------------------------------------------------------------

    def _list_jits(self, method: str, sub: str, rg: str | None) -> Reply:
        if method != "GET":
            return _error(405, "MethodNotAllowed", method)
        with self._lock:
            items = [
                r.resource()
                for r in sorted(self.jit_requests.values(), key=lambda r: r.id.lower())
                if r.subscription_id.lower() == sub.lower()
                and (rg is None or r.resource_group.lower() == rg.lower())
            ]
        # jitRequests_List* are not x-ms-pageable in 2021-07-01: one answer, no nextLink.
        return 200, {"value": items}, {}

    def _jit(
        self, method: str, match: re.Match[str], path: str, caller: Caller, body: bytes
    ) -> Reply:
        with self._lock:
            found = self.jit_requests.get(path.rstrip("/").lower())
        if method == "GET":
            if found is None:
                return _not_found("JIT request", match["name"])
            with self._lock:
                return 200, found.resource(), {}
        if method == "PATCH":
            if found is None:
                return _not_found("JIT request", match["name"])
            try:
                patch = json.loads(body or b"{}")
            except ValueError:
                return _error(400, "InvalidRequestContent", "The content is not valid JSON.")
            if not isinstance(patch, dict) or set(patch) - {"tags"}:
                return _error(
                    400, "InvalidRequestContent", "Only tags can be updated on a JIT request."
                )
            tags = patch.get("tags") or {}
            if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
                return _error(400, "InvalidRequestContent", "tags must map names to strings.")
            with self._lock:
                found.tags = dict(tags)
                found.updated_by = caller.client_details()
                return 200, found.resource(), {}
        if method != "PUT":
            return _error(405, "MethodNotAllowed", method)
        return self._create_jit(match, caller, body, found)

    def _create_jit(
        self, match: re.Match[str], caller: Caller, body: bytes, existing: FakeJitRequest | None
    ) -> Reply:
        if caller.service:
            return _error(
                403,
                "AuthorizationFailed",
                f"The client '{caller.object_id}' does not have authorization to perform action "
                "'Microsoft.Solutions/jitRequests/write': a JIT request is made by the "
                "publisher as themselves.",
            )
        try:
            props = json.loads(body)["properties"]
            application_id = props["applicationResourceId"]
            authorizations = props["jitAuthorizationPolicies"]
            scheduling = props["jitSchedulingPolicy"]
            schedule_type = scheduling["type"]
            duration_text = scheduling["duration"]
            start_text = scheduling["startTime"]
        except (ValueError, KeyError, TypeError):
            return _error(
                400,
                "InvalidRequestContent",
                "properties.applicationResourceId, jitAuthorizationPolicies and "
                "jitSchedulingPolicy (type, duration, startTime) are required.",
            )
        if (
            not isinstance(authorizations, list)
            or not authorizations
            or not all(
                isinstance(a, dict)
                and isinstance(a.get("principalId"), str)
                and isinstance(a.get("roleDefinitionId"), str)
                for a in authorizations
            )
        ):
            return _error(400, "InvalidRequestContent", "jitAuthorizationPolicies is malformed.")
        duration = _iso_duration(duration_text)
        start = _parse_time(start_text)
        if schedule_type != "Once" or duration is None or start is None:
            return _error(
                400,
                "InvalidJitSchedulingPolicy",
                "jitSchedulingPolicy needs type Once, an ISO 8601 duration and a start time.",
            )
        with self._lock:
            app = self.applications.get(str(application_id).rstrip("/").lower())
            if existing is not None:
                same = (
                    existing.application_id.lower() == str(application_id).lower()
                    and existing.scheduling.get("startTime") == start_text
                    and existing.scheduling.get("duration") == duration_text
                )
                if same:
                    return 200, existing.resource(), {}
                return _error(
                    409, "JitRequestAlreadyExists", "A JIT request of that name already exists."
                )
        if app is None:
            return _error(
                404, "ApplicationNotFound", f"The application '{application_id}' was not found."
            )
        policy = app.jit_access_policy or {}
        if not policy.get("jitAccessEnabled"):
            return _error(
                400,
                "JitAccessNotEnabled",
                "JIT access is not enabled on this managed application.",
            )
        maximum = _iso_duration(str(policy.get("maximumJitAccessDuration") or "PT8H"))
        if maximum is not None and duration > maximum:
            return _error(
                400,
                "JitAccessDurationExceeded",
                f"The requested duration {duration_text} is longer than the maximum "
                f"{policy.get('maximumJitAccessDuration')}.",
            )
        for wanted in authorizations:
            allowed = any(
                a["principalId"].lower() == wanted["principalId"].lower()
                and _guid(a["roleDefinitionId"]) == _guid(wanted["roleDefinitionId"])
                for a in app.authorizations
            )
            if not allowed:
                return _error(
                    400,
                    "InvalidJitAuthorizationPolicies",
                    "The requested principal and role are not among the application's "
                    "authorizations.",
                )
            if not self._is_or_member(caller.object_id, wanted["principalId"]):
                return _error(
                    403,
                    "AuthorizationFailed",
                    "The caller is not the principal the JIT access is requested for.",
                )
        manual = policy.get("jitApprovalMode") == "ManualApprove"
        request = FakeJitRequest(
            subscription_id=match["sub"],
            resource_group=match["rg"],
            name=match["name"],
            application_id=app.id,
            authorizations=[
                {"principalId": a["principalId"], "roleDefinitionId": a["roleDefinitionId"]}
                for a in authorizations
            ],
            scheduling={"type": "Once", "duration": duration_text, "startTime": start_text},
            state="Pending" if manual else "Approved",
            created_by=caller.client_details(),
            publisher_tenant_id=caller.tenant_id,
            starts_at=start,
            ends_at=start + duration,
            provisioning_state="Accepted",
        )
        with self._lock:
            self.jit_requests[request.id.lower()] = request
            if manual:
                self._open_approval(request, app, caller)

        def apply() -> None:
            with self._lock:
                request.provisioning_state = "Succeeded"

        return self._long_running(
            match["sub"], app.location, apply, request.resource, 201, created=True
        )

    # -- PIM: the approval a manual request waits for -------------------------------------------

    def _open_approval(self, request: FakeJitRequest, app: FakeApplication, caller: Caller) -> None:
        """The approval and the schedule request that links it to the jitRequest (see the
        module docstring: UNVERIFIED against real Azure)."""
        policy = app.jit_access_policy or {}
        approval = FakeApproval(
            name=str(uuid.uuid4()),
            stage_name=str(uuid.uuid4()),
            approvers=[dict(a) for a in policy.get("jitApprovers") or []],
            jit_request_id=request.id,
            requestor_id=caller.object_id,
            principal_id=request.authorizations[0]["principalId"],
        )
        self.approvals[approval.name.lower()] = approval
        request.approval_id = approval.name
        first = request.authorizations[0]
        mrg = app.managed_resource_group_id
        subscription = mrg.split("/")[2]
        name = str(uuid.uuid4())
        request.schedule_request = name
        resource = {
            "id": f"{mrg}/providers/Microsoft.Authorization/roleAssignmentScheduleRequests/{name}",
            "name": name,
            "type": "Microsoft.Authorization/roleAssignmentScheduleRequests",
            "properties": {
                "scope": mrg,
                "roleDefinitionId": f"/subscriptions/{subscription}/providers/"
                f"Microsoft.Authorization/roleDefinitions/{_guid(first['roleDefinitionId'])}",
                "principalId": first["principalId"],
                "principalType": "User" if first["principalId"] == caller.object_id else "Group",
                "requestType": "AdminAssign",
                "status": "PendingApproval",
                "approvalId": approval.name,
                "scheduleInfo": {
                    "startDateTime": request.starts_at.isoformat().replace("+00:00", "Z"),
                    "expiration": {
                        "type": "AfterDuration",
                        "endDateTime": None,
                        "duration": request.scheduling["duration"],
                    },
                },
                "justification": None,
                "requestorId": caller.object_id,
                "createdOn": self._arm.clock().isoformat().replace("+00:00", "Z"),
            },
        }
        with self._arm._lock:
            self._arm.schedule_requests[name.lower()] = resource

    def _close_approval(self, request: FakeJitRequest, state: str) -> None:
        after = _AFTER_STATE.get(state)
        if after is None:
            return
        schedule_status, stage_status = after
        approval = self.approvals.get((request.approval_id or "").lower())
        if approval is not None and approval.status == "InProgress":
            approval.status = stage_status
        with self._arm._lock:
            schedule = self._arm.schedule_requests.get((request.schedule_request or "").lower())
            if schedule is not None:
                schedule["properties"]["status"] = schedule_status

    def _assigned(self, approval: FakeApproval, caller: Caller) -> bool:
        if caller.service:
            return False
        for approver in approval.approvers:
            approver_id = str(approver.get("id", ""))
            if approver.get("type") == "group":
                if self._is_or_member(caller.object_id, approver_id):
                    return True
            elif approver_id.lower() == caller.object_id.lower():
                return True
        return False

    def _is_or_member(self, object_id: str, principal_id: str) -> bool:
        if object_id.lower() == principal_id.lower():
            return True
        members = self.group_members.get(principal_id) or self.group_members.get(
            principal_id.lower(), set()
        )
        return object_id.lower() in {m.lower() for m in members}

    def _approvals(
        self,
        method: str,
        match: re.Match[str],
        query: Mapping[str, str],
        caller: Caller,
        body: bytes,
    ) -> Reply:
        scope = (match.group("scope") or "").rstrip("/")
        approval_name, stage_name = match.group("approval"), match.group("stage")
        if approval_name is None:
            if method != "GET":
                return _error(405, "MethodNotAllowed", method)
            flt = (query.get("$filter") or "").strip().lower()
            with self._lock:
                approvals = list(self.approvals.values())
                if flt == "asapprover()":
                    approvals = [a for a in approvals if self._assigned(a, caller)]
                elif flt == "ascreatedby()":
                    approvals = [
                        a for a in approvals if a.requestor_id.lower() == caller.object_id.lower()
                    ]
                elif flt == "astarget()":
                    approvals = [
                        a for a in approvals if a.principal_id.lower() == caller.object_id.lower()
                    ]
                elif flt:
                    return _error(400, "InvalidFilter", f"The $filter '{flt}' is not supported.")
                items = [a.resource(self._assigned(a, caller), scope) for a in approvals]
            return 200, {"value": items}, {}
        with self._lock:
            approval = self.approvals.get(approval_name.lower())
            if approval is None:
                return _error(404, "RoleAssignmentApprovalNotFound", "The approval was not found.")
            assigned = self._assigned(approval, caller)
            if stage_name is None:
                if method != "GET":
                    return _error(405, "MethodNotAllowed", method)
                return 200, approval.resource(assigned, scope), {}
            if stage_name.lower() != approval.stage_name.lower():
                return _error(404, "RoleAssignmentApprovalStageNotFound", "No such stage.")
            if method == "GET":
                return 200, approval.stage_resource(assigned, scope), {}
            if method not in ("PATCH", "PUT"):
                return _error(405, "MethodNotAllowed", method)
            return self._decide(approval, assigned, caller, body, scope)

    def _decide(
        self, approval: FakeApproval, assigned: bool, caller: Caller, body: bytes, scope: str
    ) -> Reply:
        try:
            decision = json.loads(body)
        except ValueError:
            return _error(400, "InvalidRequestContent", "The content is not valid JSON.")
        if isinstance(decision, dict) and isinstance(decision.get("properties"), dict):
            decision = decision["properties"]  # the spec's example wraps them
        if not isinstance(decision, dict):
            return _error(400, "InvalidRequestContent", "The request content must be an object.")
        result, justification = decision.get("reviewResult"), decision.get("justification")
        if result not in ("Approve", "Deny"):
            return _error(400, "InvalidReviewResult", "reviewResult must be Approve or Deny.")
        if justification is not None and not isinstance(justification, str):
            return _error(400, "InvalidRequestContent", "justification must be a string.")
        if not assigned:
            return _error(
                403,
                "AuthorizationFailed",
                f"The client '{caller.object_id}' is not an approver of this approval stage.",
            )
        if caller.object_id.lower() == approval.requestor_id.lower():
            return _error(
                403, "AuthorizationFailed", "A requestor cannot approve their own request."
            )
        if approval.status != "InProgress":
            return _error(
                400,
                "ApprovalStageNotInProgress",
                f"The approval stage is {approval.status}: it has been decided already.",
            )
        approval.status = "Completed"
        approval.review_result = result
        approval.justification = justification or ""
        approval.reviewed_at = self._arm.clock().isoformat().replace("+00:00", "Z")
        reviewer = {"principalType": "user", "principalId": caller.object_id}
        if isinstance(caller.claims.get("name"), str):
            reviewer["principalName"] = caller.claims["name"]
        if isinstance(caller.claims.get("preferred_username"), str):
            reviewer["userPrincipalName"] = caller.claims["preferred_username"]
        approval.reviewed_by = reviewer
        request = self.jit_requests.get(approval.jit_request_id.lower())
        if request is not None:
            request.state = "Approved" if result == "Approve" else "Denied"
            self._close_approval(request, request.state)
            if result == "Approve":
                self._grant(request)
        return 200, approval.stage_resource(True, scope), {}

    def _grant(self, request: FakeJitRequest) -> None:
        """Azure's grant: a scheduled role assignment at the managed resource group, which
        FakeArm removes at its end like any PIM assignment."""
        from jitaccess_sandbox.fake_arm import Assignment

        app = self.applications.get(request.application_id.lower())
        if app is None:
            return
        mrg = app.managed_resource_group_id
        subscription = mrg.split("/")[2]
        for authorization in request.authorizations:
            assignment = Assignment(
                mrg,
                str(uuid.uuid4()),
                f"/subscriptions/{subscription}/providers/Microsoft.Authorization/"
                f"roleDefinitions/{_guid(authorization['roleDefinitionId'])}",
                authorization["principalId"],
                "User",
                None,
                starts_at=request.starts_at,
                ends_at=request.ends_at,
                schedule_request=request.schedule_request,
            )
            with self._arm._lock:
                self._arm.assignments[assignment.name.lower()] = assignment

    def _schedule_requests_for(self, scope: str, query: Mapping[str, str], caller: Caller) -> Reply:
        flt = (query.get("$filter") or "").strip().lower()
        with self._arm._lock:
            held = [json.loads(json.dumps(item)) for item in self._arm.schedule_requests.values()]
        with self._lock:
            items = []
            for item in held:
                props = item["properties"]
                if not _at_or_below(props.get("scope", ""), scope):
                    continue
                if flt == "asapprover()":
                    approval = self.approvals.get(str(props.get("approvalId") or "").lower())
                    if approval is None or not self._assigned(approval, caller):
                        continue
                elif flt == "asrequestor()":
                    if str(props.get("requestorId", "")).lower() != caller.object_id.lower():
                        continue
                elif str(props.get("principalId", "")).lower() != caller.object_id.lower():
                    continue
                items.append(item)
        return 200, {"value": items}, {}

    # -- long-running operations ------------------------------------------------------------------

    def _long_running(
        self,
        subscription_id: str,
        location: str,
        apply: Callable[[], None],
        resource: Callable[[], dict[str, Any]],
        accepted_status: int,
        *,
        created: bool = False,
    ) -> Reply:
        with self._lock:
            failure, self._fail_operation = self._fail_operation, None
            polls = self.lro_polls
        if polls <= 0 and failure is None:
            apply()
            with self._lock:
                return (201 if created else 200), resource(), {}
        name = str(uuid.uuid4())
        operation = _Operation(
            name=name,
            subscription_id=subscription_id,
            location=location,
            polls_left=max(polls, 1),
            on_done=apply,
            started=self._arm.clock().isoformat().replace("+00:00", "Z"),
            failure=failure,
        )
        with self._lock:
            self.operations[name] = operation
            answer = resource()
        if not created:
            answer["properties"]["provisioningState"] = "Updating"
        base = (
            f"{self._arm.base_url}/subscriptions/{subscription_id}/providers/Microsoft.Solutions"
            f"/locations/{location}"
        )
        headers = {
            "Azure-AsyncOperation": f"{base}/operationStatuses/{name}?api-version={SOLUTIONS_API}",
            "Location": f"{base}/operationResults/{name}?api-version={SOLUTIONS_API}",
        }
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return accepted_status, answer, headers

    def _operation(self, match: re.Match[str], query: Mapping[str, str]) -> Reply:
        with self._lock:
            operation = self.operations.get(match.group("op"))
        if operation is None:
            return _error(404, "OperationNotFound", "The operation was not found.")
        done_now = False
        with self._lock:
            if operation.status == "InProgress":
                operation.polls_left -= 1
                if operation.polls_left <= 0:
                    if operation.failure is not None:
                        operation.status = "Failed"
                    else:
                        operation.status = "Succeeded"
                        done_now = True
                    operation.ended = self._arm.clock().isoformat().replace("+00:00", "Z")
        if done_now:
            operation.on_done()
        if match.group("kind").lower() == "operationresults":
            if operation.status == "InProgress":
                return 202, None, self._retry_headers()
            return 204, None, {}
        status: dict[str, Any] = {
            "id": f"/subscriptions/{operation.subscription_id}/providers/Microsoft.Solutions/"
            f"locations/{operation.location}/operationStatuses/{operation.name}",
            "name": operation.name,
            "status": operation.status,
            "startTime": operation.started,
        }
        if operation.ended:
            status["endTime"] = operation.ended
        if operation.status == "Failed" and operation.failure is not None:
            status["error"] = {"code": operation.failure[0], "message": operation.failure[1]}
        headers = self._retry_headers() if operation.status == "InProgress" else {}
        return 200, status, headers

    def _retry_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}

    # -- paging and time ------------------------------------------------------------------------

    def _page(self, items: list[dict[str, Any]], path: str, query: Mapping[str, str]) -> Reply:
        size = max(self._arm.page_size, 1)
        skip = int(query.get("$skipToken") or 0)
        payload: dict[str, Any] = {"value": items[skip : skip + size]}
        if skip + size < len(items):
            params = {"api-version": query.get("api-version", ""), "$skipToken": str(skip + size)}
            payload["nextLink"] = f"{self._arm.base_url}{path}?{urlencode(params)}"
        return 200, payload, {}

    def _advance(self) -> None:
        """Azure's own clock: an approved request whose window has ended is Expired."""
        now = self._arm.clock()
        with self._lock:
            for request in self.jit_requests.values():
                if request.state == "Approved" and now >= request.ends_at:
                    request.state = "Expired"


def _check_policy(policy: Any, deployed_with_jit: bool) -> Reply | None:
    """Azure's refusals of a ``jitAccessPolicy`` PATCH (codes UNVERIFIED)."""
    if not isinstance(policy, dict) or not isinstance(policy.get("jitAccessEnabled"), bool):
        return _error(
            400, "InvalidJitAccessPolicy", "jitAccessPolicy.jitAccessEnabled is required."
        )
    if policy["jitAccessEnabled"] != deployed_with_jit:
        return _error(
            400,
            "JitAccessPolicyUpdateNotAllowed",
            "JIT access can only be enabled or disabled when the application is deployed.",
        )
    mode = policy.get("jitApprovalMode", "NotSpecified")
    if mode not in ("NotSpecified", "AutoApprove", "ManualApprove"):
        return _error(400, "InvalidJitAccessPolicy", f"jitApprovalMode '{mode}' is not valid.")
    approvers = policy.get("jitApprovers") or []
    if not isinstance(approvers, list) or not all(
        isinstance(a, dict) and isinstance(a.get("id"), str) and a.get("type") in ("user", "group")
        for a in approvers
    ):
        return _error(400, "InvalidJitAccessPolicy", "jitApprovers is malformed.")
    if mode == "ManualApprove" and not approvers:
        return _error(
            400, "InvalidJitAccessPolicy", "ManualApprove needs at least one JIT approver."
        )
    maximum = policy.get("maximumJitAccessDuration")
    if maximum is not None and (not isinstance(maximum, str) or _iso_duration(maximum) is None):
        return _error(
            400, "InvalidJitAccessPolicy", "maximumJitAccessDuration must be an ISO 8601 duration."
        )
    return None


def _iso_duration(text: Any) -> dt.timedelta | None:
    if not isinstance(text, str):
        return None
    match = _ISO_DURATION.match(text)
    if match is None or not any(match.groupdict().values()):
        return None
    parts = {k: int(v) for k, v in match.groupdict().items() if v}
    value = dt.timedelta(
        days=parts.get("d", 0),
        hours=parts.get("h", 0),
        minutes=parts.get("m", 0),
        seconds=parts.get("s", 0),
    )
    return value if value > dt.timedelta(0) else None


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _guid(role_definition_id: str) -> str:
    return role_definition_id.rstrip("/").rsplit("/", 1)[-1].lower()


def _at_or_below(resource_scope: str, scope: str) -> bool:
    r, s = resource_scope.rstrip("/").lower(), scope.rstrip("/").lower()
    return r == s or r.startswith(s + "/")


def _error(status: int, code: str, message: str) -> Reply:
    return status, {"error": {"code": code, "message": message}}, {}


def _not_found(what: str, name: str) -> Reply:
    return _error(404, "ResourceNotFound", f"The {what} '{name}' was not found.")


def _bad_version(api_version: str) -> Reply:
    return _error(
        400,
        "InvalidApiVersionParameter",
        f"The api-version '{api_version}' is not one the fake serves here "
        f"(Microsoft.Solutions {SOLUTIONS_API}, approvals {APPROVALS_API}, schedule requests "
        f"{SCHEDULE_REQUESTS_API}).",
    )


def _no_p2() -> Reply:
    return _error(400, "AadPremiumLicenseRequired", "The tenant needs an AAD Premium 2 license.")
