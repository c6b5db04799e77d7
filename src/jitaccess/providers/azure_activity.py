"""The Azure Activity Log of a managed resource group, read with azure-mgmt-monitor.

``MonitorManagementClient.activity_logs.list`` with the one filter Azure allows for a
resource group (``eventTimestamp ge … and eventTimestamp le … and resourceGroupName eq
…``); the SDK's pager follows ``nextLink``. The log holds everyone's events, so only
the publisher's are kept: the principal the grant went to (the application's provider
config, as for the role assignment), matched on the event's object-id claim or caller.
It uses the same credentials, endpoint and CA bundle as the ``azure`` provider; the
identity needs ``Microsoft.Insights/eventtypes/values/read`` on the resource group
(the built-in Reader or Monitoring Reader role).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, HttpResponseError
from azure.mgmt.monitor import MonitorManagementClient
from azure.mgmt.monitor.models import EventData

from jitaccess.domain.activity import ActivityEvent
from jitaccess.providers.arm import ArmConnection, credential_from_settings
from jitaccess.providers.azure import resolve_principal, subscription_of
from jitaccess.providers.base import ProviderError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from jitaccess.settings import Settings

#: The claim that carries the caller's Entra object id.
OBJECT_ID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
#: Only what the summary needs travels back.
SELECT = "eventTimestamp,operationName,resourceId,status,caller,claims,operationId"
_RESOURCE_GROUP_RE = re.compile(r"/resourceGroups/(?P<name>[^/]+)", re.IGNORECASE)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def activity_filter(scope: str, start: datetime, end: datetime) -> str:
    """The ``$filter`` for the resource group of ``scope`` between ``start`` and ``end``
    (what lies outside ``scope`` within its group is dropped when read)."""
    window = f"eventTimestamp ge '{_timestamp(start)}' and eventTimestamp le '{_timestamp(end)}'"
    match = _RESOURCE_GROUP_RE.search(scope)
    if match is None:
        return window  # a whole subscription: Azure's subscription-wide pattern
    return f"{window} and resourceGroupName eq '{match.group('name')}'"


def _within(resource_id: str, scope: str) -> bool:
    wanted, found = scope.rstrip("/").lower(), resource_id.rstrip("/").lower()
    return found == wanted or found.startswith(wanted + "/")


class AzureActivityLog:
    """Reads one principal's events in a managed resource group (see the module doc)."""

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
        self._clients: dict[str, MonitorManagementClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, credential: TokenCredential | None = None
    ) -> AzureActivityLog:
        """The ``azure`` provider's identity: ``credential`` if given (the sandbox's),
        else a service principal if its three settings are given, else
        DefaultAzureCredential (managed identity, az login …)."""
        owned = credential is None
        if credential is None:
            credential = credential_from_settings(
                settings.azure_tenant_id,
                settings.azure_client_id,
                settings.azure_client_secret,
                authority_host=settings.azure_authority_host,
                connection_verify=settings.entra_ca_bundle or True,
            )
        return cls(
            credential,
            base_url=settings.azure_arm_url or None,
            connection_verify=settings.azure_ca_bundle or True,
            owns_credential=owned,
        )

    def read(
        self,
        scope: str,
        principal: str,
        config: Mapping[str, Any],
        start: datetime,
        end: datetime,
    ) -> list[ActivityEvent]:
        subscription_id = subscription_of(scope)
        who = resolve_principal(principal, config).object_id
        client = self._client(subscription_id)
        events: list[ActivityEvent] = []
        try:
            for item in client.activity_logs.list(
                filter=activity_filter(scope, start, end), select=SELECT
            ):
                event = _event(item, who, scope)
                if event is not None:
                    events.append(event)
        except HttpResponseError as err:
            raise _translate(err, scope) from None
        except AzureError as err:
            raise ProviderError(
                f"could not read the Azure Activity Log of {scope} at {self._arm.base_url}: "
                f"{err.message}"
            ) from None
        return events

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
        self._arm.close()

    def _client(self, subscription_id: str) -> MonitorManagementClient:
        with self._lock:
            client = self._clients.get(subscription_id)
            if client is None:
                client = MonitorManagementClient(
                    self._arm.credential(), subscription_id, **self._arm.client_options()
                )
                self._clients[subscription_id] = client
            return client


def _event(item: EventData, object_id: str, scope: str) -> ActivityEvent | None:
    """The event as the summary reads it, if ``object_id`` made it within ``scope``."""
    claims = item.claims or {}
    callers = {str(claims.get(OBJECT_ID_CLAIM) or "").lower(), (item.caller or "").lower()}
    if object_id.lower() not in callers or item.event_timestamp is None:
        return None
    resource_id = item.resource_id or ""
    if resource_id and not _within(resource_id, scope):
        return None
    operation = item.operation_name.value if item.operation_name is not None else None
    status = item.status.value if item.status is not None else None
    return ActivityEvent(
        at=item.event_timestamp.astimezone(UTC),
        operation=operation or "(unnamed operation)",
        resource_id=resource_id or scope,
        status=status or "",
        operation_id=item.operation_id,
    )


def _translate(err: HttpResponseError, scope: str) -> ProviderError:
    code = (err.error.code if err.error is not None else None) or err.reason or ""
    message = (err.error.message if err.error is not None else None) or err.message
    status = err.status_code
    if status == 403:
        return ProviderError(
            f"jitaccess's Azure identity may not read the Activity Log of {scope}: give it "
            "Reader or Monitoring Reader on the managed resource group "
            f"(Azure said 403 {code}: {message})"
        )
    if status == 429:
        return ProviderError(f"Azure throttled reading the Activity Log of {scope}; retrying")
    if status is not None and status >= 500:
        return ProviderError(
            f"Azure failed to read the Activity Log of {scope} ({status} {code}: {message}); "
            "retrying"
        )
    return ProviderError(
        f"Azure refused to read the Activity Log of {scope}: {status} {code}: {message}"
    )
