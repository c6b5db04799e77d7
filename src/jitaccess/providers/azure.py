"""Azure RBAC provider: a role assignment at the application's managed resource group.

Two assignment modes (provider config ``assignment_mode``):

- ``scheduled`` (the default): the grant is a PIM for Azure resources *role assignment
  schedule request* (``AdminAssign`` with an expiration at ``ends_at``), so Azure itself
  removes the access at the end even if jitaccess is down. jitaccess still revokes at
  the end (``AdminRemove``), moves the end on an extension (``AdminExtend``), and
  reconciles. Request names are UUIDs derived from the grant and the action
  (:func:`schedule_request_name`), so a retried call is the same request. Where the
  tenant has no PIM (Azure answers ``AadPremiumLicenseRequired``) the grant falls back to
  a plain role assignment, says so (:meth:`AzureProvider.take_notice`), and the
  subscription is remembered as PIM-less for :data:`PIM_FALLBACK_TTL`.
- ``direct``: one request is one plain role assignment, named deterministically from the
  request id (:func:`assignment_name`), and removed by jitaccess at the end.

Standing grants have no end, so they are always plain role assignments. Every
assignment is described (or justified) ``jitaccess request <id> ...`` so that it can be
found again (:meth:`AzureProvider.list_grants`) and never confused with anyone else's.

Each call is a single attempt bounded in time: the core retries with backoff, so the
Azure SDK's own retry policy is kept short (``retry_total``, default 2) and its
``Retry-After`` sleeps are capped.

Provider config (the application's ``provider_config``)::

    principals:            # Slack user -> Azure AD object
      U123: {object_id: 00000000-..., type: User}        # User | Group | ServicePrincipal
    default_principal: {object_id: 00000000-..., type: Group}
    role_definitions:      # extra role names -> role definition GUID or full id
      Custom Ops: 11111111-...
    assignment_mode: scheduled   # or direct (no PIM: jitaccess alone enforces the end)

The scope is the managed resource group ID:
``/subscriptions/<subscription-id>/resourceGroups/<name>``.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.mgmt.authorization.v2020_10_01 import (
    AuthorizationManagementClient as PimManagementClient,
)
from azure.mgmt.authorization.v2020_10_01.models import (
    RoleAssignmentSchedule,
    RoleAssignmentScheduleRequest,
    RoleAssignmentScheduleRequestPropertiesScheduleInfo,
    RoleAssignmentScheduleRequestPropertiesScheduleInfoExpiration,
)
from azure.mgmt.authorization.v2022_04_01 import AuthorizationManagementClient
from azure.mgmt.authorization.v2022_04_01.models import (
    RoleAssignment,
    RoleAssignmentCreateParameters,
)

from jitaccess.providers.arm import (
    ArmConnection,
    credential_from_settings,
    error_code,
    error_message,
    shorten,
)
from jitaccess.providers.base import GrantSpec, ProviderError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger("jitaccess.provider.azure")

#: Namespace of the deterministic role assignment names. Never change it: existing
#: assignments would no longer be found by revoke.
ASSIGNMENT_NAMESPACE = uuid.UUID("2c9b9925-6fb7-4c26-8665-87a4a598b974")

#: Every assignment we create has a description starting with this.
DESCRIPTION_PREFIX = "jitaccess request"
STANDING_PREFIX = "jitaccess standing"


BUILTIN_ROLES: Mapping[str, str] = {
    "owner": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
    "contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "reader": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
}

PRINCIPAL_TYPES = ("User", "Group", "ServicePrincipal", "ForeignGroup", "Device")

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_SCOPE_RE = re.compile(
    rf"^/subscriptions/(?P<sub>{_GUID})"
    r"(?:/resourceGroups/[-\w.()]{1,90}(?:/providers/[^/]+/.+)?)?$",
    re.IGNORECASE,
)
_ROLE_ID_RE = re.compile(
    rf"^(?:/subscriptions/{_GUID})?/providers/Microsoft\.Authorization/roleDefinitions/{_GUID}$",
    re.IGNORECASE,
)
_DESCRIPTION_RE = re.compile(rf"^{DESCRIPTION_PREFIX} (\d+)\b")
_MAX_DETAIL = 300

SCHEDULED = "scheduled"
DIRECT = "direct"
ASSIGNMENT_MODES = (SCHEDULED, DIRECT)
#: How long a subscription whose tenant answered "no PIM" gets plain role assignments
#: before the schedule endpoint is tried again (a licence may be bought meanwhile).
PIM_FALLBACK_TTL = timedelta(hours=1)
#: What ARM answers on a PIM endpoint when the tenant has no Entra ID P2 / Governance.
PIM_UNAVAILABLE_CODES = frozenset({"AadPremiumLicenseRequired"})
#: "already assigned" / "nothing to remove" from PIM: success for an idempotent port.
_PIM_EXISTS = frozenset({"RoleAssignmentExists"})
_PIM_ABSENT = frozenset({"RoleAssignmentDoesNotExist", "RoleAssignmentNotFound"})


def assignment_name(request_id: int, *, standing: bool = False) -> str:
    """The role assignment name (a GUID) that request ``request_id`` (or standing grant)
    uses, always the same."""
    seed = f"jitaccess:standing:{request_id}" if standing else f"jitaccess:{request_id}"
    return str(uuid.uuid5(ASSIGNMENT_NAMESPACE, seed))


def schedule_request_name(spec: GrantSpec, action: str) -> str:
    """The PIM schedule request name (a GUID) for ``action`` on ``spec``'s grant.

    The end time is part of it: a retry of the same call is the same request (Azure
    keeps one), while a later extension to a new end is a new one."""
    seed = f"jitaccess:{spec.key}:{action}:{spec.ends_at.isoformat()}"
    return str(uuid.uuid5(ASSIGNMENT_NAMESPACE, seed))


def assignment_mode(config: Mapping[str, Any]) -> str:
    """The provider config's ``assignment_mode`` (default scheduled); ProviderError if bad."""
    mode = config.get("assignment_mode", SCHEDULED)
    if mode not in ASSIGNMENT_MODES:
        raise ProviderError(
            f"Azure provider config assignment_mode is {mode!r}: use scheduled (Azure enforces "
            "the end through PIM) or direct (plain role assignments, jitaccess enforces it)"
        )
    return str(mode)


def assignment_description(spec: GrantSpec) -> str:
    if spec.standing:
        return (
            f"{STANDING_PREFIX} {spec.request_id}: {spec.role} for Slack user "
            f"{spec.principal} on app {spec.app} (standing access)"
        )
    return (
        f"{DESCRIPTION_PREFIX} {spec.request_id}: {spec.role} for Slack user "
        f"{spec.principal} on app {spec.app} until {spec.ends_at.isoformat()}"
    )


def parse_request_id(description: str | None) -> int | None:
    """The request id in a jitaccess assignment description, or None."""
    match = _DESCRIPTION_RE.match(description or "")
    return int(match.group(1)) if match else None


#: Only formats role definition ids while validating a role; never sent anywhere.
_ANY_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
_MANAGEMENT_GROUP_RE = re.compile(
    r"^/providers/Microsoft\.Management/managementGroups/[^/]+$", re.IGNORECASE
)


def check_scope(scope: str) -> None:
    """ProviderError unless ``scope`` is an ARM scope this provider can grant at: a
    subscription, a resource group in it, or a resource in that."""
    if _MANAGEMENT_GROUP_RE.match(scope):
        raise ProviderError(
            f"Azure scope '{scope}' is a management group: jitaccess grants at a "
            "subscription, a resource group or a resource, "
            "/subscriptions/<subscription-id>/resourceGroups/<resource-group-name>"
        )
    subscription_of(scope)


def subscription_of(scope: str) -> str:
    """The subscription id in an ARM scope; ProviderError if the scope is not an ARM scope."""
    match = _SCOPE_RE.match(scope)
    if match is None:
        raise ProviderError(
            f"Azure scope '{scope}' is malformed: expected the managed resource group ID, "
            "/subscriptions/<subscription-id>/resourceGroups/<resource-group-name>"
        )
    return match.group("sub").lower()


@dataclass(frozen=True)
class AzurePrincipal:
    object_id: str
    type: str | None


@dataclass(frozen=True)
class HeldGrant:
    """A role assignment that jitaccess created and Azure still holds."""

    request_id: int | None
    principal_id: str
    role_definition_id: str
    assignment_name: str
    scope: str
    standing: bool = False


def _is_guid(value: str) -> bool:
    return re.fullmatch(_GUID, value) is not None


def _principal_from(entry: Any, where: str) -> AzurePrincipal:
    if not isinstance(entry, Mapping):
        raise ProviderError(
            f"Azure provider config {where} must be a mapping like "
            "{object_id: <Entra object id>, type: User|Group|ServicePrincipal}"
        )
    object_id = entry.get("object_id")
    if not isinstance(object_id, str) or not _is_guid(object_id.strip()):
        raise ProviderError(
            f"Azure provider config {where}.object_id must be the principal's Entra object id "
            f"(a GUID), got {object_id!r}"
        )
    kind = entry.get("type")
    if kind is not None and kind not in PRINCIPAL_TYPES:
        raise ProviderError(
            f"Azure provider config {where}.type is {kind!r}; "
            f"use one of {', '.join(PRINCIPAL_TYPES)}"
        )
    return AzurePrincipal(object_id=object_id.strip().lower(), type=kind)


def resolve_principal(slack_user: str, config: Mapping[str, Any]) -> AzurePrincipal:
    principals = config.get("principals") or {}
    if not isinstance(principals, Mapping):
        raise ProviderError(
            "Azure provider config 'principals' must map Slack user ids to principals"
        )
    if slack_user in principals:
        return _principal_from(principals[slack_user], f"principals.{slack_user}")
    default = config.get("default_principal")
    if default:
        return _principal_from(default, "default_principal")
    raise ProviderError(
        f"no Azure principal mapped for Slack user {slack_user}: add it to the app's provider "
        "config principals (principals: {"
        f"{slack_user}: {{object_id: <Entra object id>, type: User}}}}) or set default_principal"
    )


def resolve_role_definition_id(role: str, config: Mapping[str, Any], subscription_id: str) -> str:
    """The full role definition ID for ``role`` (a name, a GUID or a full ID)."""
    custom = config.get("role_definitions") or {}
    if not isinstance(custom, Mapping):
        raise ProviderError(
            "Azure provider config 'role_definitions' must map role names to role definition ids"
        )
    value: Any = custom.get(role)
    if value is None:
        lowered = {str(k).lower(): v for k, v in custom.items()}
        value = lowered.get(role.lower())
    if value is None:
        value = BUILTIN_ROLES.get(role.lower())
    if value is None and (_is_guid(role) or _ROLE_ID_RE.match(role)):
        value = role
    if value is None:
        known = ["Owner", "Contributor", "Reader", *(str(k) for k in custom)]
        raise ProviderError(
            f"unknown Azure role '{role}': use one of {', '.join(known)}, a role definition "
            "GUID or a full role definition ID, or map the name in the app's provider config "
            f"role_definitions ({role}: <role definition GUID>)"
        )
    text = str(value).strip()
    if _is_guid(text):
        return (
            f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/"
            f"roleDefinitions/{text.lower()}"
        )
    if _ROLE_ID_RE.match(text):
        return text
    raise ProviderError(
        f"Azure role definition for '{role}' is {text!r}: expected a role definition GUID or "
        "/subscriptions/<sub>/providers/Microsoft.Authorization/roleDefinitions/<guid>"
    )


class AzureProvider:
    """Grants access as an Azure RBAC role assignment at the application's scope."""

    name = "azure"

    def __init__(
        self,
        credential: TokenCredential | None = None,
        *,
        base_url: str | None = None,
        connection_verify: str | bool = True,
        timeout: float = 30,
        retry_total: int = 2,
        owns_credential: bool = False,
    ) -> None:
        self._arm = ArmConnection(
            credential,
            base_url=base_url,
            connection_verify=connection_verify,
            timeout=timeout,
            retry_total=retry_total,
            owns_credential=owns_credential,
        )
        self._clients: dict[str, AuthorizationManagementClient] = {}
        self._pim: PimManagementClient | None = None
        #: subscription id -> until when it gets plain assignments (its tenant has no PIM)
        self._pim_unavailable: dict[str, datetime] = {}
        #: grant key -> what people should know about how it was granted (taken once)
        self._notices: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        tenant_id: str | None,
        client_id: str | None,
        client_secret: str | None,
        base_url: str | None = None,
        *,
        connection_verify: str | bool = True,
        timeout: float = 30,
        retry_total: int = 2,
        authority_host: str | None = None,
        token_verify: str | bool = True,
    ) -> AzureProvider:
        """A service principal (client secret) if all three are given, else DefaultAzureCredential.

        DefaultAzureCredential covers managed identity, workload identity, the AZURE_*
        environment variables and ``az login``; it is created at first use. The service
        principal signs in at ``authority_host`` (``AZURE_AUTHORITY_HOST``), trusting
        ``token_verify`` for it (``connection_verify`` is for ARM).
        """
        return cls(
            credential_from_settings(
                tenant_id,
                client_id,
                client_secret,
                authority_host=authority_host,
                connection_verify=token_verify,
            ),
            base_url=base_url,
            connection_verify=connection_verify,
            timeout=timeout,
            retry_total=retry_total,
            owns_credential=True,
        )

    # -- the port -----------------------------------------------------------------

    def validate_scope(self, scope: str) -> None:
        """The application's scope must be one this provider can grant at."""
        check_scope(scope)

    def validate_role(self, role: str, config: Mapping[str, Any]) -> None:
        """The role must be one this provider can resolve: a built-in name it knows, a
        role definition GUID or full ID, or a name mapped in ``role_definitions``."""
        resolve_role_definition_id(role, config, _ANY_SUBSCRIPTION)

    def grant(self, spec: GrantSpec, now: datetime) -> None:
        subscription_id = subscription_of(spec.scope)
        if self._schedules(spec, subscription_id, now):
            try:
                self._grant_scheduled(spec, subscription_id, now)
                return
            except _PimUnavailable as missing:
                self._fall_back(subscription_id, now, missing.detail)
        self._grant_direct(spec, subscription_id)
        if not spec.standing and assignment_mode(spec.config) == SCHEDULED:
            self._fallback_notice(spec, subscription_id)

    def extend(self, spec: GrantSpec, now: datetime) -> None:
        """Move Azure's end of a scheduled grant to ``spec.ends_at`` (``AdminExtend``).

        A plain (direct or fallback) assignment has no end in Azure: nothing to move. If
        Azure already removed the scheduled one (it ended before the extension reached
        us), it is assigned again with the new end, so the window is honoured."""
        subscription_id = subscription_of(spec.scope)
        if not self._may_be_scheduled(spec):
            log.info(
                "Azure: request %s is a plain role assignment; its new end %s is enforced by "
                "jitaccess",
                spec.request_id,
                spec.ends_at.isoformat(),
            )
            return
        owner = self._held_by_another(spec, subscription_id)
        if owner is not False:
            log.warning(
                "Azure: the PIM assignment of %s at %s is %s, not request %s's: its end is "
                "left alone; request %s's new end %s is enforced by jitaccess",
                spec.role,
                spec.scope,
                f"request {owner}'s" if owner is not None else "not jitaccess's",
                spec.request_id,
                spec.request_id,
                spec.ends_at.isoformat(),
            )
            return
        try:
            absent = self._schedule_request(spec, subscription_id, now, "AdminExtend")
        except _PimUnavailable as missing:
            self._fall_back(subscription_id, now, missing.detail)
            return
        if absent:
            log.warning(
                "Azure: no scheduled assignment to extend for request %s at %s; assigning it "
                "again until %s",
                spec.request_id,
                spec.scope,
                spec.ends_at.isoformat(),
            )
            self.grant(spec, now)
            return
        log.info(
            "Azure: request %s at %s now ends at %s (AdminExtend)",
            spec.request_id,
            spec.scope,
            spec.ends_at.isoformat(),
        )

    def take_notice(self, spec: GrantSpec) -> str | None:
        """What people should know about how ``spec`` was granted (once), e.g. that the
        tenant lacks PIM and the end is enforced by jitaccess only."""
        with self._lock:
            return self._notices.pop(spec.key, None)

    def _grant_direct(self, spec: GrantSpec, subscription_id: str) -> None:
        principal = resolve_principal(spec.principal, spec.config)
        role_definition_id = resolve_role_definition_id(spec.role, spec.config, subscription_id)
        name = assignment_name(spec.request_id, standing=spec.standing)
        parameters = RoleAssignmentCreateParameters(
            role_definition_id=role_definition_id,
            principal_id=principal.object_id,
            description=assignment_description(spec),
        )
        # The SDK defaults principal_type to "User"; unknown types are left to Azure.
        parameters.principal_type = principal.type  # type: ignore[assignment]
        client = self._client(subscription_id)
        try:
            client.role_assignments.create(spec.scope, name, parameters)
        except HttpResponseError as err:
            if err.status_code == 409 and error_code(err) == "RoleAssignmentExists":
                self._note_existing(client, spec, name, principal.object_id)
                return
            raise self._translate(err, "write", spec.scope, principal, spec.principal) from None
        except AzureError as err:
            raise self._translate(err, "write", spec.scope, principal, spec.principal) from None
        log.info(
            "Azure: assigned %s (%s) to %s %s at %s as %s (request %s)",
            spec.role,
            role_definition_id,
            principal.type or "principal",
            principal.object_id,
            spec.scope,
            name,
            spec.request_id,
        )

    def revoke(self, spec: GrantSpec, now: datetime) -> None:
        subscription_id = subscription_of(spec.scope)
        if self._may_be_scheduled(spec):
            owner = self._held_by_another(spec, subscription_id)
            if owner is not False:
                log.info(
                    "Azure: the PIM assignment of %s at %s is %s, not request %s's: left in place",
                    spec.role,
                    spec.scope,
                    f"request {owner}'s" if owner is not None else "not jitaccess's",
                    spec.request_id,
                )
                self._revoke_direct(spec, subscription_id)
                return
            try:
                absent = self._schedule_request(spec, subscription_id, now, "AdminRemove")
            except _PimUnavailable as missing:
                self._fall_back(subscription_id, now, missing.detail)
            else:
                if not absent:
                    log.info(
                        "Azure: removed scheduled assignment of request %s at %s (AdminRemove)",
                        spec.request_id,
                        spec.scope,
                    )
                    return
                # No scheduled assignment: Azure ended it already, or the grant was a
                # plain assignment (made during a fallback): remove that one if present.
        self._revoke_direct(spec, subscription_id)

    def _revoke_direct(self, spec: GrantSpec, subscription_id: str) -> None:
        name = assignment_name(spec.request_id, standing=spec.standing)
        client = self._client(subscription_id)
        try:
            deleted = client.role_assignments.delete(spec.scope, name)
        except HttpResponseError as err:
            code = error_code(err)
            if err.status_code == 404 and code in (
                "RoleAssignmentNotFound",
                "ResourceNotFound",
                "ResourceGroupNotFound",
                "NotFound",
                "",
            ):
                log.info(
                    "Azure: role assignment %s at %s already gone (%s; request %s)",
                    name,
                    spec.scope,
                    code or "404",
                    spec.request_id,
                )
                return
            raise self._translate(err, "delete", spec.scope, None, spec.principal) from None
        except AzureError as err:
            raise self._translate(err, "delete", spec.scope, None, spec.principal) from None
        if deleted is None:
            log.info(
                "Azure: role assignment %s at %s was already gone (request %s)",
                name,
                spec.scope,
                spec.request_id,
            )
        else:
            log.info(
                "Azure: removed role assignment %s at %s (request %s)",
                name,
                spec.scope,
                spec.request_id,
            )

    # -- reconciliation -------------------------------------------------------------

    def list_grants(self, scope: str, config: Mapping[str, Any]) -> list[HeldGrant]:
        """Role assignments made by jitaccess exactly at ``scope`` (not inherited ones)."""
        subscription_id = subscription_of(scope)
        client = self._client(subscription_id)
        wanted = scope.rstrip("/").lower()
        held: list[HeldGrant] = []
        try:
            for item in client.role_assignments.list_for_scope(scope, filter="atScope()"):
                grant = _held_grant(item)
                if grant is not None and grant.scope.rstrip("/").lower() == wanted:
                    held.append(grant)
        except AzureError as err:
            raise self._translate(err, "read", scope, None, None) from None
        if assignment_mode(config) == SCHEDULED:
            held.extend(self._scheduled_grants(scope, subscription_id))
        return held

    def _scheduled_grants(self, scope: str, subscription_id: str) -> list[HeldGrant]:
        """PIM schedules at ``scope`` that jitaccess's requests made. Azure materialises
        each as a role assignment with a name of its own and no description, so they are
        found through the schedule and the justification of the request behind it."""
        return [g for g in self._live_schedules(scope) if g.request_id is not None]

    def _live_schedules(self, scope: str) -> list[HeldGrant]:
        """Every PIM assignment schedule at exactly ``scope``, with the jitaccess request
        behind it (None: not made by jitaccess)."""
        client = self._pim_client()
        wanted = scope.rstrip("/").lower()
        try:
            requests = {
                (item.name or "").lower(): parse_request_id(item.justification)
                for item in client.role_assignment_schedule_requests.list_for_scope(
                    scope, filter="atScope()"
                )
            }
            schedules = list(
                client.role_assignment_schedules.list_for_scope(scope, filter="atScope()")
            )
        except HttpResponseError as err:
            if error_code(err) in PIM_UNAVAILABLE_CODES:
                return []  # no PIM: every grant is a plain assignment, listed above
            raise self._translate(err, "read", scope, None, None) from None
        except AzureError as err:
            raise self._translate(err, "read", scope, None, None) from None
        return [
            HeldGrant(
                request_id=_request_of(schedule, requests),
                principal_id=schedule.principal_id or "",
                role_definition_id=schedule.role_definition_id or "",
                assignment_name=schedule.name or "",
                scope=schedule.scope or "",
            )
            for schedule in schedules
            if (schedule.scope or "").rstrip("/").lower() == wanted
        ]

    def _held_by_another(self, spec: GrantSpec, subscription_id: str) -> int | bool | None:
        """Whether the PIM assignment of this role to this principal at the scope belongs
        to another jitaccess request (its id), to nobody we know (None), or to ``spec``'s
        own request or none at all (False).

        PIM keys an assignment by principal, role and scope, not by request: two Slack
        users mapped to one principal (``default_principal``), or back-to-back windows
        whose first revoke is late, meet on one assignment, and a request that did not
        create it must neither remove nor move it. Two reads, bounded whatever the
        history: the scope's live schedules, and the one request behind the match."""
        principal = resolve_principal(spec.principal, spec.config).object_id.lower()
        role = _guid_of(resolve_role_definition_id(spec.role, spec.config, subscription_id))
        client = self._pim_client()
        wanted = spec.scope.rstrip("/").lower()
        try:
            for schedule in client.role_assignment_schedules.list_for_scope(
                spec.scope, filter="atScope()"
            ):
                if (
                    (schedule.scope or "").rstrip("/").lower() != wanted
                    or (schedule.principal_id or "").lower() != principal
                    or _guid_of(schedule.role_definition_id or "") != role
                ):
                    continue
                name = (schedule.role_assignment_schedule_request_id or "").rstrip("/")
                request = client.role_assignment_schedule_requests.get(
                    spec.scope, name.rsplit("/", 1)[-1]
                )
                owner = parse_request_id(request.justification)
                return False if owner == spec.request_id else owner
        except HttpResponseError as err:
            if error_code(err) in PIM_UNAVAILABLE_CODES:
                return False
            raise self._translate(err, "read", spec.scope, None, None) from None
        except AzureError as err:
            raise self._translate(err, "read", spec.scope, None, None) from None
        return False

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        with self._lock:
            pim_clients, self._pim = [self._pim] if self._pim else [], None
        for client in clients:
            client.close()
        for pim_client in pim_clients:
            pim_client.close()
        self._arm.close()

    # -- internals ------------------------------------------------------------------

    def _client(self, subscription_id: str) -> AuthorizationManagementClient:
        with self._lock:
            client = self._clients.get(subscription_id)
            if client is None:
                client = AuthorizationManagementClient(
                    self._arm.credential(), subscription_id, **self._arm.client_options()
                )
                self._clients[subscription_id] = client
            return client

    def _pim_client(self) -> PimManagementClient:
        """The PIM API (2020-10-01: role assignment schedule requests and schedules); it
        is addressed by scope, so one client serves every subscription."""
        with self._lock:
            if self._pim is None:
                self._pim = PimManagementClient(
                    self._arm.credential(), **self._arm.client_options()
                )
            return self._pim

    # -- PIM (scheduled mode) ---------------------------------------------------------

    def _schedules(self, spec: GrantSpec, subscription_id: str, now: datetime) -> bool:
        """True when ``spec`` goes through PIM: scheduled mode, not standing, and the
        subscription's tenant not recently found without PIM."""
        if spec.standing or assignment_mode(spec.config) != SCHEDULED:
            return False
        with self._lock:
            until = self._pim_unavailable.get(subscription_id)
            if until is not None and until <= now:
                del self._pim_unavailable[subscription_id]
                until = None
        return until is None

    def _may_be_scheduled(self, spec: GrantSpec) -> bool:
        """True when ``spec``'s grant may be held through PIM: scheduled mode and not
        standing. Revoke and extend ask this, never the remembered "no PIM": a grant
        made through PIM before the tenant answered "no PIM" must still be removed
        there (asking PIM of a tenant without it costs one call and falls back)."""
        return not spec.standing and assignment_mode(spec.config) == SCHEDULED

    def _fall_back(self, subscription_id: str, now: datetime, detail: str) -> None:
        with self._lock:
            self._pim_unavailable[subscription_id] = now + PIM_FALLBACK_TTL
        log.warning(
            "Azure: PIM is not available for subscription %s (%s); plain role assignments "
            "until %s, whose end jitaccess alone enforces",
            subscription_id,
            detail,
            (now + PIM_FALLBACK_TTL).isoformat(),
        )

    def _fallback_notice(self, spec: GrantSpec, subscription_id: str) -> None:
        notice = (
            f"Azure PIM is not available in the tenant of subscription {subscription_id} "
            "(Azure answered AadPremiumLicenseRequired), so this access is a plain role "
            f"assignment: its end at {spec.ends_at.isoformat()} is enforced by jitaccess only. "
            "Give the tenant Microsoft Entra ID P2 (or Governance) to have Azure enforce it "
            "too, or set assignment_mode: direct in the app's provider config"
        )
        with self._lock:
            self._notices[spec.key] = notice
        log.info("Azure: request %s: %s", spec.request_id, notice)

    def _grant_scheduled(self, spec: GrantSpec, subscription_id: str, now: datetime) -> None:
        already = self._schedule_request(spec, subscription_id, now, "AdminAssign")
        if already:
            owner = self._held_by_another(spec, subscription_id)
            if owner is not False and owner is not None:
                # Another request's assignment (its revoke may still be due, or two Slack
                # users share this principal): relying on it would lose the access when
                # that one is removed. Not granted yet; the sweep retries.
                raise ProviderError(
                    f"Azure PIM already holds {spec.role} at {spec.scope} for this principal "
                    f"through request {owner}'s assignment; granting once that one is removed"
                )
        log.info(
            "Azure: %s %s to %s at %s until %s (PIM AdminAssign, request %s)",
            "already assigned" if already else "assigned",
            spec.role,
            spec.principal,
            spec.scope,
            spec.ends_at.isoformat(),
            spec.request_id,
        )

    def _schedule_request(
        self, spec: GrantSpec, subscription_id: str, now: datetime, request_type: str
    ) -> bool:
        """Send one PIM role assignment schedule request. True when Azure answered that it
        is already done (assigned for AdminAssign, nothing held for AdminRemove/Extend).

        Raises :class:`_PimUnavailable` when the tenant has no PIM."""
        principal = resolve_principal(spec.principal, spec.config)
        role_definition_id = resolve_role_definition_id(spec.role, spec.config, subscription_id)
        schedule = None
        if request_type != "AdminRemove":
            schedule = RoleAssignmentScheduleRequestPropertiesScheduleInfo(
                start_date_time=now if request_type == "AdminAssign" else spec.starts_at,
                expiration=RoleAssignmentScheduleRequestPropertiesScheduleInfoExpiration(
                    type="AfterDateTime", end_date_time=spec.ends_at
                ),
            )
        request = RoleAssignmentScheduleRequest(
            role_definition_id=role_definition_id,
            principal_id=principal.object_id,
            request_type=request_type,
            schedule_info=schedule,
            justification=assignment_description(spec),
        )
        name = schedule_request_name(spec, request_type)
        verb = "delete" if request_type == "AdminRemove" else "write"
        try:
            self._pim_client().role_assignment_schedule_requests.create(spec.scope, name, request)
        except HttpResponseError as err:
            code = error_code(err)
            if code in PIM_UNAVAILABLE_CODES:
                raise _PimUnavailable(f"{code}: {error_message(err, _MAX_DETAIL)}") from None
            if (
                err.status_code in (400, 409)
                and code in _PIM_EXISTS
                and request_type == "AdminAssign"
            ):
                return True
            if (
                err.status_code in (400, 404)
                and code in _PIM_ABSENT
                and request_type != "AdminAssign"
            ):
                return True
            raise self._translate(
                err, verb, spec.scope, principal, spec.principal, pim=True
            ) from None
        except AzureError as err:
            raise self._translate(
                err, verb, spec.scope, principal, spec.principal, pim=True
            ) from None
        return False

    def _note_existing(
        self,
        client: AuthorizationManagementClient,
        spec: GrantSpec,
        name: str,
        object_id: str,
    ) -> None:
        """409 RoleAssignmentExists is success; say through which assignment it is held."""
        try:
            client.role_assignments.get(spec.scope, name)
        except HttpResponseError as err:
            if err.status_code != 404:
                log.info("Azure: could not read back role assignment %s: %s", name, err.message)
                return
        except AzureError as err:
            log.info("Azure: could not read back role assignment %s: %s", name, err.message)
            return
        else:
            log.info(
                "Azure: role assignment %s at %s already exists (request %s)",
                name,
                spec.scope,
                spec.request_id,
            )
            return
        log.warning(
            "Azure: %s already holds role %s at %s through another role assignment; request %s "
            "is treated as granted, and revoking it will not remove that other assignment",
            object_id,
            spec.role,
            spec.scope,
            spec.request_id,
        )

    def _translate(
        self,
        err: AzureError,
        verb: str,
        scope: str,
        principal: AzurePrincipal | None,
        slack_user: str | None,
        *,
        pim: bool = False,
    ) -> ProviderError:
        if pim:
            permission = (
                "Microsoft.Authorization/roleAssignmentSchedules/read"
                if verb == "read"
                else "Microsoft.Authorization/roleAssignmentScheduleRequests/write"
            )
            action = {
                "write": "create the PIM role assignment schedule request",
                "delete": "send the PIM AdminRemove request",
                "read": "list PIM role assignment schedules",
            }[verb]
        else:
            permission = f"Microsoft.Authorization/roleAssignments/{verb}"
            action = {
                "write": "create the role assignment",
                "delete": "delete the role assignment",
                "read": "list role assignments",
            }[verb]
        if isinstance(err, ClientAuthenticationError) and err.status_code is None:
            return ProviderError(
                f"could not get an Azure token to {action} at {scope}: "
                f"{shorten(err.message, _MAX_DETAIL)}. "
                "Give jitaccess a managed identity, set the AZURE_* environment variables, or "
                "configure tenant id, client id and client secret"
            )
        if isinstance(err, HttpResponseError) and err.status_code is not None:
            status = err.status_code
            code = error_code(err)
            detail = error_message(err, _MAX_DETAIL)
            if status == 401:
                return ProviderError(
                    f"Azure rejected jitaccess's credentials (401 {code}): {detail}. Check the "
                    "tenant id, client id and secret (or the managed identity)"
                )
            if (
                status == 403
                and pim
                and code in ("AuthorizationFailed", "LinkedAuthorizationFailed")
            ):
                return ProviderError(
                    f"jitaccess's Azure identity lacks {permission} at {scope}: assign it "
                    '"User Access Administrator" on the managed resource group, or set '
                    "assignment_mode: direct to use plain role assignments "
                    f"(Azure said 403 {code}: {detail})"
                )
            if status == 403 and code in ("AuthorizationFailed", "LinkedAuthorizationFailed"):
                return ProviderError(
                    f"jitaccess's Azure identity lacks {permission} at {scope}: assign it "
                    '"User Access Administrator" or "Role Based Access Control Administrator" '
                    f"on the managed resource group (Azure said 403 {code}: {detail})"
                )
            if status == 404:
                return ProviderError(
                    f"Azure scope not found: {scope} (404 {code}: {detail}). Check the "
                    "application's managed resource group ID and subscription"
                )
            if status == 429:
                headers = getattr(err.response, "headers", None) or {}
                retry_after = headers.get("Retry-After")
                wait = f" (Retry-After {retry_after}s)" if retry_after else ""
                return ProviderError(
                    f"Azure throttled the request to {action} at {scope}{wait}; retrying"
                )
            if status == 400 and code == "PrincipalNotFound":
                who = principal.object_id if principal else "the principal"
                mapped = f" mapped for Slack user {slack_user}" if slack_user else ""
                return ProviderError(
                    f"Azure principal {who}{mapped} does not exist yet in the tenant (new "
                    "principals can take minutes to replicate); retrying. If this persists, "
                    "check the object id in the app's provider config"
                )
            if code == "ActiveDurationTooShort":
                return ProviderError(
                    f"Azure PIM does not remove an assignment within 5 minutes of its start "
                    f"({status} {code}: {detail}); retrying"
                )
            if status == 409 and code == "RoleAssignmentUpdateNotPermitted":
                return ProviderError(
                    f"a different role assignment already uses jitaccess's name for this request "
                    f"at {scope} (409 {code}: {detail}); remove it or check that two jitaccess "
                    "installations do not share the tenant"
                )
            if status >= 500:
                return ProviderError(
                    f"Azure Resource Manager failed to {action} at {scope} "
                    f"({status} {code}: {detail}); retrying"
                )
            return ProviderError(f"Azure refused to {action} at {scope}: {status} {code}: {detail}")
        if isinstance(err, ServiceResponseError):
            return ProviderError(
                f"Azure Resource Manager at {self._arm.base_url} did not answer in time "
                f"(timeout {self._arm.timeout:g}s) or dropped the connection: "
                f"{shorten(err.message, _MAX_DETAIL)}"
            )
        if isinstance(err, ServiceRequestError):
            return ProviderError(
                f"could not reach Azure Resource Manager at {self._arm.base_url}: "
                f"{shorten(err.message, _MAX_DETAIL)}"
            )
        return ProviderError(
            f"Azure error while trying to {action} at {scope}: {shorten(err.message, _MAX_DETAIL)}"
        )


class _PimUnavailable(Exception):
    """The tenant has no PIM for Azure resources (no Entra ID P2 / Governance)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _guid_of(role_definition_id: str) -> str:
    """A role definition's GUID, whichever form (bare, or with or without subscription)."""
    return role_definition_id.rstrip("/").rsplit("/", 1)[-1].lower()


def _request_of(schedule: RoleAssignmentSchedule, requests: Mapping[str, int | None]) -> int | None:
    """The jitaccess request id behind a PIM schedule, from its schedule request's name."""
    request = (schedule.role_assignment_schedule_request_id or "").rstrip("/")
    return requests.get(request.rsplit("/", 1)[-1].lower())


def _held_grant(item: RoleAssignment) -> HeldGrant | None:
    description = item.description or ""
    standing = description.startswith(STANDING_PREFIX)
    if not description.startswith(DESCRIPTION_PREFIX) and not standing:
        return None
    number = re.match(r"^jitaccess (?:request|standing) (\d+):", description)
    return HeldGrant(
        request_id=int(number.group(1)) if number else None,
        principal_id=item.principal_id or "",
        role_definition_id=item.role_definition_id or "",
        assignment_name=item.name or "",
        scope=item.scope or "",
        standing=standing,
    )
