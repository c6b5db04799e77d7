"""Azure RBAC provider: a role assignment at the application's managed resource group.

One request is one role assignment, named deterministically from the request id
(:func:`assignment_name`) and described ``jitaccess request <id> ...`` so that it can be
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
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.mgmt.authorization.v2022_04_01 import AuthorizationManagementClient
from azure.mgmt.authorization.v2022_04_01.models import (
    RoleAssignment,
    RoleAssignmentCreateParameters,
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

DEFAULT_BASE_URL = "https://management.azure.com"

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
_MAX_RETRY_AFTER = 5.0
_MAX_DETAIL = 300


def assignment_name(request_id: int, *, standing: bool = False) -> str:
    """The role assignment name (a GUID) that request ``request_id`` (or standing grant)
    uses, always the same."""
    seed = f"jitaccess:standing:{request_id}" if standing else f"jitaccess:{request_id}"
    return str(uuid.uuid5(ASSIGNMENT_NAMESPACE, seed))


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
            f"unknown Azure role '{role}' (known: {', '.join(known)}): add it to the app's "
            f"provider config role_definitions ({role}: <role definition GUID>)"
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


class _CappedRetryPolicy(RetryPolicy[Any, Any]):
    """azure-core's retry policy, but a server's Retry-After cannot stall us for long."""

    def get_retry_after(self, response: PipelineResponse[Any, Any]) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, _MAX_RETRY_AFTER)


def _shorten(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _error_code(err: HttpResponseError) -> str:
    code = err.error.code if err.error is not None else None
    return code or (err.reason or "")


def _error_message(err: HttpResponseError) -> str:
    message = err.error.message if err.error is not None else None
    return _shorten(message or err.message)


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
    ) -> None:
        self._credential = credential
        self._owns_credential = False
        self._base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._verify = connection_verify
        self._timeout = float(timeout)
        self._retry_total = retry_total
        self._clients: dict[str, AuthorizationManagementClient] = {}
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
    ) -> AzureProvider:
        """A service principal (client secret) if all three are given, else DefaultAzureCredential.

        DefaultAzureCredential covers managed identity, workload identity, the AZURE_*
        environment variables and ``az login``; it is created at first use.
        """
        given = {"tenant_id": tenant_id, "client_id": client_id, "client_secret": client_secret}
        credential: TokenCredential | None = None
        if tenant_id and client_id and client_secret:
            from azure.identity import ClientSecretCredential

            credential = ClientSecretCredential(tenant_id, client_id, client_secret)
        elif any(given.values()):
            missing = ", ".join(k for k, v in given.items() if not v)
            raise ProviderError(
                f"Azure settings are incomplete (missing {missing}): set tenant id, client id and "
                "client secret together, or none of them to use managed identity / "
                "DefaultAzureCredential"
            )
        provider = cls(
            credential,
            base_url=base_url,
            connection_verify=connection_verify,
            timeout=timeout,
            retry_total=retry_total,
        )
        provider._owns_credential = credential is not None
        return provider

    # -- the port -----------------------------------------------------------------

    def grant(self, spec: GrantSpec, now: datetime) -> None:
        subscription_id = subscription_of(spec.scope)
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
            if err.status_code == 409 and _error_code(err) == "RoleAssignmentExists":
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
        name = assignment_name(spec.request_id, standing=spec.standing)
        client = self._client(subscription_id)
        try:
            deleted = client.role_assignments.delete(spec.scope, name)
        except HttpResponseError as err:
            code = _error_code(err)
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
        client = self._client(subscription_of(scope))
        wanted = scope.rstrip("/").lower()
        held: list[HeldGrant] = []
        try:
            for item in client.role_assignments.list_for_scope(scope, filter="atScope()"):
                grant = _held_grant(item)
                if grant is not None and grant.scope.rstrip("/").lower() == wanted:
                    held.append(grant)
        except AzureError as err:
            raise self._translate(err, "read", scope, None, None) from None
        return held

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
        close = getattr(self._credential, "close", None)
        if self._owns_credential and callable(close):
            close()

    # -- internals ------------------------------------------------------------------

    def _client(self, subscription_id: str) -> AuthorizationManagementClient:
        with self._lock:
            client = self._clients.get(subscription_id)
            if client is None:
                if self._credential is None:
                    from azure.identity import DefaultAzureCredential

                    self._credential = DefaultAzureCredential()
                    self._owns_credential = True
                client = AuthorizationManagementClient(
                    self._credential,
                    subscription_id,
                    base_url=self._base_url,
                    connection_verify=self._verify,
                    connection_timeout=min(self._timeout, 10.0),
                    read_timeout=self._timeout,
                    retry_policy=_CappedRetryPolicy(
                        retry_total=self._retry_total,
                        retry_backoff_factor=0.5,
                        retry_backoff_max=_MAX_RETRY_AFTER,
                        timeout=self._timeout,
                    ),
                )
                self._clients[subscription_id] = client
            return client

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
    ) -> ProviderError:
        permission = f"Microsoft.Authorization/roleAssignments/{verb}"
        action = {
            "write": "create the role assignment",
            "delete": "delete the role assignment",
            "read": "list role assignments",
        }[verb]
        if isinstance(err, ClientAuthenticationError) and err.status_code is None:
            return ProviderError(
                f"could not get an Azure token to {action} at {scope}: {_shorten(err.message)}. "
                "Give jitaccess a managed identity, set the AZURE_* environment variables, or "
                "configure tenant id, client id and client secret"
            )
        if isinstance(err, HttpResponseError) and err.status_code is not None:
            status = err.status_code
            code = _error_code(err)
            detail = _error_message(err)
            if status == 401:
                return ProviderError(
                    f"Azure rejected jitaccess's credentials (401 {code}): {detail}. Check the "
                    "tenant id, client id and secret (or the managed identity)"
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
                f"Azure Resource Manager at {self._base_url} did not answer in time "
                f"(timeout {self._timeout:g}s) or dropped the connection: {_shorten(err.message)}"
            )
        if isinstance(err, ServiceRequestError):
            return ProviderError(
                f"could not reach Azure Resource Manager at {self._base_url}: "
                f"{_shorten(err.message)}"
            )
        return ProviderError(
            f"Azure error while trying to {action} at {scope}: {_shorten(err.message)}"
        )


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
