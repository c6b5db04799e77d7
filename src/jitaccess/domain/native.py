"""Native mode: Azure Managed Applications' own JIT, as jitaccess sees it.

An application in native mode keeps its policy in Azure (the managed application's
``properties.jitAccessPolicy``), its requests are ``Microsoft.Solutions/jitRequests``
resources, approval is a PIM approval stage decided by the approver as themselves, and
Azure grants and ends the access. jitaccess is the Slack front end and the witness.

This module holds the plain facts (what Azure said, already checked for shape by the
adapters in ``providers/``), the rules over them, and the ports the application layer
calls. It imports nothing outside the standard library and the domain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from jitaccess.domain.durations import format_duration
from jitaccess.domain.errors import RuleViolation

#: The provider name a native application carries: jitaccess writes nothing there.
NATIVE_PROVIDER = "azure-managed-app"


class JitRequestState(StrEnum):
    """``properties.jitRequestState`` of a ``Microsoft.Solutions/jitRequests`` resource
    (Microsoft.Solutions 2021-07-01, ``JitRequestState``)."""

    NOT_SPECIFIED = "NotSpecified"
    PENDING = "Pending"
    APPROVED = "Approved"
    DENIED = "Denied"
    FAILED = "Failed"
    CANCELED = "Canceled"
    EXPIRED = "Expired"
    TIMEOUT = "Timeout"


class JitApprovalMode(StrEnum):
    """``jitAccessPolicy.jitApprovalMode``; NotSpecified is not a policy jitaccess keeps."""

    AUTO = "AutoApprove"
    MANUAL = "ManualApprove"


class ApproverKind(StrEnum):
    """``JitApproverDefinition.type``: an Entra user or an Entra group."""

    USER = "user"
    GROUP = "group"


@dataclass(frozen=True)
class JitApprover:
    """One entry of ``jitAccessPolicy.jitApprovers``: an Entra object id."""

    id: str
    kind: ApproverKind
    display_name: str | None = None


@dataclass(frozen=True)
class NativePolicy:
    """A managed application's ``jitAccessPolicy`` as jitaccess keeps it."""

    enabled: bool
    approval_mode: JitApprovalMode
    approvers: tuple[JitApprover, ...]
    #: ``maximumJitAccessDuration`` (ISO 8601), parsed.
    max_duration: timedelta

    def differences(self, other: NativePolicy) -> list[str]:
        """What changed from ``self`` to ``other``, one line each, for people to read."""
        lines: list[str] = []
        if self.enabled != other.enabled:
            lines.append(f"JIT access enabled: {self.enabled} → {other.enabled}")
        if self.approval_mode != other.approval_mode:
            lines.append(f"approval mode: {self.approval_mode} → {other.approval_mode}")
        if self.max_duration != other.max_duration:
            lines.append(
                f"maximum duration: {format_duration(self.max_duration)} → "
                f"{format_duration(other.max_duration)}"
            )
        before = {a.id for a in self.approvers}
        after = {a.id for a in other.approvers}
        for added in sorted(after - before):
            lines.append(f"approver added: {added}")
        for removed in sorted(before - after):
            lines.append(f"approver removed: {removed}")
        return lines


@dataclass(frozen=True)
class RoleAuthorization:
    """``JitAuthorizationPolicies``/``ApplicationAuthorization``: a principal and a role
    definition id (``/subscriptions/…/providers/Microsoft.Authorization/roleDefinitions/…``
    or the bare GUID, as Azure returns it)."""

    principal_id: str
    role_definition_id: str


@dataclass(frozen=True)
class ManagedApp:
    """A ``Microsoft.Solutions/applications`` resource, checked for shape."""

    id: str
    name: str
    managed_resource_group_id: str
    #: None when the application carries no ``jitAccessPolicy`` (JIT never enabled).
    policy: NativePolicy | None
    #: The publisher's authorizations from the definition (``properties.authorizations``).
    authorizations: tuple[RoleAuthorization, ...] = ()
    publisher_tenant_id: str | None = None


@dataclass(frozen=True)
class NativeRequest:
    """A ``Microsoft.Solutions/jitRequests`` resource, checked for shape."""

    id: str
    application_id: str
    state: JitRequestState
    authorizations: tuple[RoleAuthorization, ...]
    starts_at: datetime
    duration: timedelta
    #: ``createdBy.oid`` when Azure reports it.
    created_by: str | None = None


@dataclass(frozen=True)
class PendingApprovalStage:
    """A PIM approval stage the signed-in approver may decide
    (``Microsoft.Authorization/roleAssignmentApprovals/{approvalId}/stages/{stageId}``)."""

    approval_id: str
    stage_id: str


@dataclass(frozen=True)
class SignedInUser:
    """What a verified Entra v2.0 ID token says about a person (``tid``, ``oid``,
    ``preferred_username``, ``acrs``, ``auth_time``)."""

    tenant_id: str
    object_id: str
    username: str
    #: The authentication context class references the sign-in satisfied (``acrs``).
    acrs: tuple[str, ...] = ()
    #: ``auth_time``: when the person last signed in interactively.
    authenticated_at: datetime | None = None


@dataclass(frozen=True)
class UserTokens:
    """An access token for ARM as the person, and the refresh token to keep (rotated)."""

    access_token: str
    expires_at: datetime
    refresh_token: str
    user: SignedInUser


class ExternalLookupFailed(Exception):
    """Azure, Entra or Graph answered with something that is not the documented shape,
    refused, or answered too late. ``str(err)`` says which call and why; the caller
    refuses the action and records nothing."""


class SignInLapsed(ExternalLookupFailed):
    """The person's stored sign-in can no longer get a token (expired, revoked, or the
    consent was withdrawn): they must sign in again."""


# -- rules ---------------------------------------------------------------------------

#: jitRequestState → jitaccess state, for a request whose window has not started.
#: Approved becomes ``active`` between its start and its end (see :func:`state_for`).
_STATE_MAP: Mapping[JitRequestState, str] = {
    JitRequestState.PENDING: "pending",
    JitRequestState.APPROVED: "approved",
    JitRequestState.DENIED: "denied",
    JitRequestState.CANCELED: "cancelled",
    JitRequestState.TIMEOUT: "timed_out",
    JitRequestState.EXPIRED: "expired",
    JitRequestState.FAILED: "failed",
}


def state_for(azure: JitRequestState, starts_at: datetime, ends_at: datetime, now: datetime) -> str:
    """The jitaccess state a native request is in when Azure says ``azure``.

    NotSpecified (or anything not in the table) is a failed lookup, never a state."""
    try:
        ours = _STATE_MAP[azure]
    except KeyError:
        raise ExternalLookupFailed(
            f"Azure reported the JIT request state '{azure}', which jitaccess cannot act on"
        ) from None
    if ours == "approved" and starts_at <= now < ends_at:
        return "active"
    if ours == "approved" and now >= ends_at:
        return "expired"
    return ours


def check_jit_can_be_enabled(was_enabled_at_deployment: bool, enabling: bool) -> None:
    """Azure refuses to turn JIT on for an application deployed without it."""
    if enabling and not was_enabled_at_deployment:
        raise RuleViolation(
            "JIT access was not enabled when this managed application was deployed, and "
            "Azure does not allow enabling it afterwards: redeploy the application with "
            "JIT access enabled"
        )


def check_step_up(
    user: SignedInUser, required_acrs: str, window: timedelta, now: datetime
) -> str | None:
    """Why ``user``'s sign-in does not prove multi-factor authentication, or None.

    Entra v2.0 ID tokens carry no ``amr``; the proof is a Conditional Access
    authentication context (``acrs`` contains ``required_acrs``) requested through a
    claims challenge, on an interactive sign-in (``auth_time``) within ``window``."""
    if required_acrs not in user.acrs:
        return (
            "your sign-in did not satisfy the multi-factor authentication this application "
            "requires: sign in again"
        )
    if user.authenticated_at is None or now - user.authenticated_at > window:
        return "your multi-factor sign-in is older than this application allows: sign in again"
    return None


def native_refusal(verb: str, portal_hint: str) -> RuleViolation:
    """Extend, release, revoke and cancel do not exist for a jitRequests resource."""
    return RuleViolation(
        f"this is a native Azure managed-application JIT request: Azure does not allow "
        f"{verb} once a request is made (a jitRequests resource can only be tagged). "
        f"{portal_hint}"
    )


# -- ports -----------------------------------------------------------------------------


class ManagedAppsPort(Protocol):
    """``Microsoft.Solutions`` as jitaccess's own identity sees it (listing, reading and
    writing applications' policies, following jitRequests) and, for ``create_request``,
    as the publisher (their own access token)."""

    def list_applications(
        self, subscription_id: str, resource_group: str | None = None
    ) -> list[ManagedApp]: ...

    def get_application(self, application_id: str) -> ManagedApp: ...

    def write_policy(self, application_id: str, policy: NativePolicy) -> ManagedApp:
        """PATCH ``properties.jitAccessPolicy`` and wait for the long-running operation."""
        ...

    def create_request(
        self,
        user_access_token: str,
        request_id: str,
        application_id: str,
        authorizations: Sequence[RoleAuthorization],
        starts_at: datetime,
        duration: timedelta,
    ) -> NativeRequest:
        """PUT a jitRequests resource (``request_id`` is its full resource id) as the user."""
        ...

    def get_request(self, request_id: str) -> NativeRequest: ...

    def list_requests(self, subscription_id: str) -> list[NativeRequest]: ...


class PimApprovalsPort(Protocol):
    """PIM approvals for Azure resources, as the signed-in approver."""

    def find_stage(
        self, user_access_token: str, scope: str, request: NativeRequest
    ) -> PendingApprovalStage | None:
        """The approval stage assigned to the user for ``request``, or None when the
        public API shows none (then the portal is the only place to decide)."""
        ...

    def decide(
        self,
        user_access_token: str,
        stage: PendingApprovalStage,
        approve: bool,
        justification: str,
    ) -> None: ...


class DirectoryPort(Protocol):
    """Microsoft Graph, as jitaccess's own identity."""

    def user_email(self, object_id: str) -> str | None:
        """``mail`` (or ``userPrincipalName`` when mail is empty); None: no such user."""
        ...

    def group_member_ids(self, group_id: str) -> frozenset[str]:
        """The user object ids in the group, transitively."""
        ...


class SignInPort(Protocol):
    """Sign in with Microsoft (authorization code flow with PKCE, through msal)."""

    def start(
        self, state: str, *, claims_acrs: str | None = None, max_age: int | None = None
    ) -> tuple[str, dict[str, object]]:
        """The URL to send the person to, and the flow to keep until the callback."""
        ...

    def finish(self, flow: Mapping[str, object], query: Mapping[str, str]) -> UserTokens: ...

    def refresh(self, refresh_token: str) -> UserTokens:
        """Raise :class:`SignInLapsed` when the refresh token no longer works."""
        ...


@dataclass
class ImportReport:
    """What ``apps import`` did: registered, updated, and what it could not map."""

    registered: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
