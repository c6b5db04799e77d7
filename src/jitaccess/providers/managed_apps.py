"""``Microsoft.Solutions`` (API 2021-07-01) through azure-mgmt-resource-managedapplications:
the :class:`~jitaccess.domain.native.ManagedAppsPort` of native mode.

The SDK's ``ApplicationClient`` defaults to API 2019-07-01; every client here is made
with ``api_version="2021-07-01"``, the version whose applications carry
``jitAccessPolicy`` as the issue describes. Two calls do not fit the SDK as generated:

- ``Applications_UpdateById`` (PATCH) is long-running in 2021-07-01 (200 or 202,
  ``final-state-via: azure-async-operation``), while the SDK's ``update_by_id`` is a
  plain call that takes the first answer. So the PATCH goes through the SDK client's own
  pipeline (the same credential, endpoint, TLS trust, timeouts and retries) and its 202
  is followed with azure-mgmt-core's ``ARMPolling`` until the operation ends, bounded by
  ``operation_timeout``; the application's final state is the answer. The body sends
  only ``properties.jitAccessPolicy``: whether Azure accepts a PATCH of the policy alone
  is UNVERIFIED against real Azure (the spec allows it: ``ApplicationPatchable``).
- ``jitRequests_ListBySubscription`` is not pageable in the spec, so the SDK would drop
  a ``nextLink``; one that comes anyway is followed through the same pipeline rather
  than lose requests.

Every answer is read from the raw JSON ARM sent (``native_answers``), never from the
SDK's lenient models; every failure is an
:class:`~jitaccess.domain.native.ExternalLookupFailed` naming the call, and a person's
rejected token on ``create_request`` a :class:`~jitaccess.domain.native.SignInLapsed`.
The SDK is imported when a client is first made, not when this module is imported.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jitaccess.domain.native import (
    ExternalLookupFailed,
    ManagedApp,
    NativePolicy,
    NativeRequest,
    RoleAuthorization,
)
from jitaccess.providers import native_answers as answers
from jitaccess.providers.arm import ArmConnection
from jitaccess.providers.native_calls import (
    Capture,
    UserTokenCredential,
    bounded_polling,
    guarded,
    raw_body,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

API_VERSION = "2021-07-01"
#: The most pages one list may take (a bound, not a limit anyone should reach).
MAX_PAGES = 200
_NAME = r"[-\w._()]+"
_APPLICATION_RE = re.compile(
    rf"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>{_NAME})/providers/"
    rf"Microsoft\.Solutions/applications/(?P<name>{_NAME})$",
    re.IGNORECASE,
)
_JIT_REQUEST_RE = re.compile(
    rf"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>{_NAME})/providers/"
    rf"Microsoft\.Solutions/jitRequests/(?P<name>{_NAME})$",
    re.IGNORECASE,
)


def _parts(resource_id: str, pattern: re.Pattern[str], what: str) -> re.Match[str]:
    match = pattern.match(resource_id.rstrip("/"))
    if match is None:
        raise ExternalLookupFailed(
            f"'{resource_id[:200]}' is not a {what} id: expected /subscriptions/<id>/"
            f"resourceGroups/<name>/providers/Microsoft.Solutions/{what}s/<name>"
        )
    return match


class ManagedApps:
    """Reads and writes managed applications' JIT policies and follows jitRequests as
    jitaccess's own identity; creates a jitRequest as the publisher (their token)."""

    def __init__(
        self,
        credential: TokenCredential | None = None,
        *,
        base_url: str | None = None,
        connection_verify: str | bool = True,
        timeout: float = 30,
        retry_total: int = 2,
        owns_credential: bool = False,
        polling_interval: float = 5.0,
        operation_timeout: float = 120.0,
    ) -> None:
        self._arm = ArmConnection(
            credential,
            base_url=base_url,
            connection_verify=connection_verify,
            timeout=timeout,
            retry_total=retry_total,
            owns_credential=owns_credential,
        )
        self.polling_interval = polling_interval
        self.operation_timeout = operation_timeout
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
        self._arm.close()

    def _new_client(self, subscription_id: str, credential: TokenCredential) -> Any:
        from azure.mgmt.resource.managedapplications import ApplicationClient

        return ApplicationClient(
            credential,
            subscription_id,
            api_version=API_VERSION,
            polling_interval=self.polling_interval,
            **self._arm.client_options(),
        )

    def _client(self, subscription_id: str) -> Any:
        key = subscription_id.lower()
        with self._lock:
            client = self._clients.get(key)
        if client is None:
            client = self._new_client(subscription_id, self._arm.credential())
            with self._lock:
                client = self._clients.setdefault(key, client)
        return client

    # -- applications ------------------------------------------------------------------

    def list_applications(
        self, subscription_id: str, resource_group: str | None = None
    ) -> list[ManagedApp]:
        """Every managed application in the subscription (or its resource group)."""
        client = self._client(subscription_id)
        if resource_group is None:
            call = f"list managed applications in subscription {subscription_id}"
            capture = self._page_reader(call)
            pager = lambda: client.applications.list_by_subscription(  # noqa: E731
                raw_response_hook=capture
            )
        else:
            call = f"list managed applications in resource group {resource_group}"
            capture = self._page_reader(call)
            pager = lambda: client.applications.list_by_resource_group(  # noqa: E731
                resource_group, raw_response_hook=capture
            )
        self._drive(call, pager)
        return [answers.application(item, call) for page in capture.results for item in page]

    def get_application(self, application_id: str) -> ManagedApp:
        match = _parts(application_id, _APPLICATION_RE, "application")
        call = f"read managed application {match['name']}"
        client = self._client(match["sub"])
        capture = Capture(lambda body: answers.application(answers.body_json(body, call), call))
        with guarded(call):
            client.applications.get_by_id(application_id, raw_response_hook=capture)
        return capture.last(call)

    def write_policy(self, application_id: str, policy: NativePolicy) -> ManagedApp:
        """PATCH ``properties.jitAccessPolicy`` and wait for the long-running operation
        (see the module docstring); the answer is the application once it finished."""
        from azure.core.exceptions import HttpResponseError
        from azure.core.polling import LROPoller
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        match = _parts(application_id, _APPLICATION_RE, "application")
        call = f"write the JIT policy of managed application {match['name']}"
        client = self._client(match["sub"])
        request = HttpRequest(
            "PATCH",
            client._client.format_url(application_id),
            params={"api-version": API_VERSION},
            json={"properties": {"jitAccessPolicy": answers.policy_body(policy)}},
        )
        with guarded(call):
            initial = client._client._pipeline.run(request, stream=False)
            if initial.http_response.status_code not in (200, 202):
                raise HttpResponseError(response=initial.http_response, error_format=ARMErrorFormat)
            poller = LROPoller(
                client._client,
                initial,
                lambda response: response.http_response.body(),
                bounded_polling(
                    call,
                    self.polling_interval,
                    self.operation_timeout,
                    final_state_via="azure-async-operation",
                ),
            )
            body = poller.result()
        return answers.application(answers.body_json(body, call), call)

    # -- jitRequests ---------------------------------------------------------------------

    def create_request(
        self,
        user_access_token: str,
        request_id: str,
        application_id: str,
        authorizations: Sequence[RoleAuthorization],
        starts_at: datetime,
        duration: timedelta,
    ) -> NativeRequest:
        """PUT the jitRequest as the publisher (``jitRequests_CreateOrUpdate``, long-running)
        and wait for it; the answer is the request as Azure then holds it.

        The body is sent as the spec's JSON, not the SDK's ``JitRequestDefinition``: the
        SDK's ``JitSchedulingPolicy`` marks ``type`` read-only, so it would drop the
        required ``"Once"``."""
        match = _parts(request_id, _JIT_REQUEST_RE, "jitRequest")
        call = f"create JIT request {match['name']}"
        if not authorizations:
            raise ExternalLookupFailed(f"{call}: a JIT request needs a principal and a role")
        if duration <= timedelta(0):
            raise ExternalLookupFailed(f"{call}: a JIT request needs a positive duration")
        # The body as the 2021-07-01 spec has it. Not the SDK's model: it marks
        # jitSchedulingPolicy.type read-only and would leave out the required "Once".
        parameters = json.dumps(
            {
                "properties": {
                    "applicationResourceId": application_id,
                    "jitAuthorizationPolicies": [
                        {"principalId": a.principal_id, "roleDefinitionId": a.role_definition_id}
                        for a in authorizations
                    ],
                    "jitSchedulingPolicy": {
                        "type": "Once",
                        "duration": answers.format_iso_duration(duration),
                        "startTime": starts_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                    },
                }
            }
        ).encode()
        with guarded(call, as_user=True):
            client = self._new_client(match["sub"], UserTokenCredential(user_access_token))
            try:
                poller = client.jit_requests.begin_create_or_update(
                    match["rg"],
                    match["name"],
                    parameters,
                    cls=raw_body,
                    polling=bounded_polling(call, self.polling_interval, self.operation_timeout),
                )
                body = poller.result()
            finally:
                client.close()
        return answers.jit_request(answers.body_json(body, call), call)

    def get_request(self, request_id: str) -> NativeRequest:
        match = _parts(request_id, _JIT_REQUEST_RE, "jitRequest")
        call = f"read JIT request {match['name']}"
        client = self._client(match["sub"])
        capture = Capture(lambda body: answers.jit_request(answers.body_json(body, call), call))
        with guarded(call):
            client.jit_requests.get(match["rg"], match["name"], raw_response_hook=capture)
        return capture.last(call)

    def list_requests(self, subscription_id: str) -> list[NativeRequest]:
        """Every jitRequest in the subscription (``jitRequests_ListBySubscription``)."""
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        call = f"list JIT requests in subscription {subscription_id}"
        client = self._client(subscription_id)
        capture = Capture(lambda body: answers.page(answers.body_json(body, call), call))
        with guarded(call):
            client.jit_requests.list_by_subscription(raw_response_hook=capture)
        items, next_link = capture.last(call)
        items = list(items)
        pages = 1
        while next_link:
            pages += 1
            if pages > MAX_PAGES:
                raise ExternalLookupFailed(f"{call}: more than {MAX_PAGES} pages")
            with guarded(call):
                http = client._client._pipeline.run(HttpRequest("GET", next_link)).http_response
                if http.status_code != 200:
                    raise HttpResponseError(response=http, error_format=ARMErrorFormat)
                found, next_link = answers.page(answers.body_json(http.body(), call), call)
            items.extend(found)
        return [answers.jit_request(item, call) for item in items]

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _page_reader(call: str) -> Capture[list[dict[str, Any]]]:
        return Capture(lambda body: answers.page(answers.body_json(body, call), call)[0])

    @staticmethod
    def _drive(call: str, pager: Callable[[], Any]) -> None:
        """Follow an SDK pager to its last page (each read by its capture as it comes)."""
        with guarded(call):
            for count, _page in enumerate(pager().by_page(), start=1):
                if count > MAX_PAGES:
                    raise ExternalLookupFailed(f"{call}: more than {MAX_PAGES} pages")
