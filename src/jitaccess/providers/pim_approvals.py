"""PIM approvals for Azure resources, as the signed-in approver: the
:class:`~jitaccess.domain.native.PimApprovalsPort` of native mode, through
azure-mgmt-authorization.

- Finding the stage (:meth:`PimApprovals.find_stage`): the public API has no field on a
  ``jitRequests`` resource naming its approval. The nearest honest link is PIM's own:
  list the role assignment schedule requests at the managed resource group that the
  caller approves (API 2020-10-01, ``$filter=asApprover()``), take the one for the
  jitRequest's principal and role (role definitions compared by GUID, case-insensitively)
  whose start is within a minute of the jitRequest's and whose status is
  ``PendingApproval``, and follow its ``approvalId`` to the approval (API
  2021-01-01-preview, ``roleAssignmentApprovals/{id}``), whose stage assigned to the
  caller and ``InProgress`` is the one to decide. Whether Azure really files a managed
  application's JIT request this way is UNVERIFIED against real Azure; when nothing
  matches, None says so and the portal is where the approver decides.
- Deciding (:meth:`PimApprovals.decide`): PATCH ``roleAssignmentApprovals/{id}/stages/
  {stageId}`` with ``reviewResult`` Approve or Deny and the reason as ``justification``.
  Azure answers 403 to someone who is not an assigned approver.

Every call carries the person's own access token (:class:`UserTokenCredential`); a 401
is a lapsed sign-in (:class:`~jitaccess.domain.native.SignInLapsed`). Answers are read
from the raw JSON (``native_answers``); anything else is an
:class:`~jitaccess.domain.native.ExternalLookupFailed` naming the call. The SDK is
imported when used.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from jitaccess.domain.native import (
    ExternalLookupFailed,
    NativeRequest,
    PendingApprovalStage,
)
from jitaccess.providers import native_answers as answers
from jitaccess.providers.arm import ArmConnection
from jitaccess.providers.native_calls import Capture, UserTokenCredential, guarded

SCHEDULE_REQUESTS_API = "2020-10-01"
APPROVALS_API = "2021-01-01-preview"
#: How far apart the jitRequest's start and the schedule request's may be.
START_TOLERANCE = timedelta(minutes=1)
#: The most pages one list may take.
MAX_PAGES = 200
_SUBSCRIPTION_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)", re.IGNORECASE)
_APPROVAL_ID_RE = re.compile(r"^[-\w.]+$")
NOT_AN_APPROVER = (
    "Azure refused the decision because you are not an assigned approver of this "
    "request (directly or through a group)"
)


def _guid(role_definition_id: str) -> str:
    return role_definition_id.rstrip("/").rsplit("/", 1)[-1].lower()


def _approval_name(approval_id: str, call: str) -> str:
    """An ``approvalId`` as the approval's name: a bare id, or the last segment of a
    ``…/roleAssignmentApprovals/{id}`` path."""
    name = approval_id.rstrip("/").rsplit("/", 1)[-1]
    if not _APPROVAL_ID_RE.match(name):
        raise answers.reject(call, "an approvalId that is not an approval's id")
    return name


class PimApprovals:
    """PIM approval stages, found and decided as the signed-in approver."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        connection_verify: str | bool = True,
        timeout: float = 30,
        retry_total: int = 2,
    ) -> None:
        # No credential of jitaccess's own: every call is made with a person's token.
        self._arm = ArmConnection(
            None,
            base_url=base_url,
            connection_verify=connection_verify,
            timeout=timeout,
            retry_total=retry_total,
        )

    def close(self) -> None:
        pass

    def find_stage(
        self, user_access_token: str, scope: str, request: NativeRequest
    ) -> PendingApprovalStage | None:
        """The approval stage assigned to the user for ``request``, or None when the
        public API shows none (see the module docstring)."""
        from azure.mgmt.authorization.v2020_10_01 import AuthorizationManagementClient

        call = "find the PIM approval of the JIT request"
        if _SUBSCRIPTION_RE.match(scope) is None:
            raise ExternalLookupFailed(f"{call}: '{scope[:200]}' is not an Azure scope")
        wanted = {
            (a.principal_id.lower(), _guid(a.role_definition_id)) for a in request.authorizations
        }
        capture = Capture(lambda body: answers.page(answers.body_json(body, call), call)[0])
        with guarded(call, as_user=True):
            client = AuthorizationManagementClient(
                UserTokenCredential(user_access_token), **self._arm.client_options()
            )
            try:
                pager: Any = client.role_assignment_schedule_requests.list_for_scope(
                    scope, filter="asApprover()", raw_response_hook=capture
                )
                for count, _page in enumerate(pager.by_page(), start=1):
                    if count > MAX_PAGES:
                        raise ExternalLookupFailed(f"{call}: more than {MAX_PAGES} pages")
            finally:
                client.close()
        approval_ids: list[str] = []
        for item in (i for page in capture.results for i in page):
            facts = answers.schedule_request(item, call)
            if (
                facts.status != "PendingApproval"
                or not facts.approval_id
                or facts.starts_at is None
                or (facts.principal_id.lower(), _guid(facts.role_definition_id)) not in wanted
                or abs(facts.starts_at - request.starts_at) > START_TOLERANCE
            ):
                continue
            name = _approval_name(facts.approval_id, call)
            if name.lower() not in (a.lower() for a in approval_ids):
                approval_ids.append(name)
        if not approval_ids:
            return None
        if len(approval_ids) > 1:
            raise ExternalLookupFailed(
                f"{call}: {len(approval_ids)} pending PIM approvals match this request, so "
                "jitaccess cannot tell which is its own: decide in the Azure portal"
            )
        return self._my_stage(user_access_token, approval_ids[0])

    def _my_stage(self, user_access_token: str, approval_id: str) -> PendingApprovalStage | None:
        from azure.mgmt.authorization.v2021_01_01_preview import AuthorizationManagementClient

        call = f"read PIM approval {approval_id}"
        capture = Capture(lambda body: answers.approval_stages(answers.body_json(body, call), call))
        with guarded(call, as_user=True):
            client = AuthorizationManagementClient(
                UserTokenCredential(user_access_token), **self._arm.client_options()
            )
            try:
                client.role_assignment_approval.get_by_id(approval_id, raw_response_hook=capture)
            finally:
                client.close()
        for stage in capture.last(call):
            if stage.assigned_to_me and stage.status == "InProgress":
                return PendingApprovalStage(approval_id=approval_id, stage_id=stage.stage_id)
        return None

    def decide(
        self,
        user_access_token: str,
        stage: PendingApprovalStage,
        approve: bool,
        justification: str,
    ) -> None:
        """Record the approver's decision on the stage, as the approver."""
        from azure.mgmt.authorization.v2021_01_01_preview import AuthorizationManagementClient
        from azure.mgmt.authorization.v2021_01_01_preview.models import (
            RoleAssignmentApprovalStepProperties,
        )

        verdict = "Approve" if approve else "Deny"
        call = f"{verdict.lower()} PIM approval {stage.approval_id}"
        capture = Capture(lambda body: answers.stage(answers.body_json(body, call), call))
        with guarded(call, as_user=True, forbidden=NOT_AN_APPROVER):
            client = AuthorizationManagementClient(
                UserTokenCredential(user_access_token), **self._arm.client_options()
            )
            try:
                client.role_assignment_approval_step.patch(
                    stage.approval_id,
                    stage.stage_id,
                    RoleAssignmentApprovalStepProperties(
                        review_result=verdict, justification=justification
                    ),
                    raw_response_hook=capture,
                )
            finally:
                client.close()
        decided = capture.last(call)
        if decided.review_result != verdict:
            raise answers.reject(
                call, f"a stage whose reviewResult is not {verdict} after deciding it"
            )
