"""The witness for native applications: the sweep's provider that writes nothing.

On a native application Azure grants and ends the access (the managed resource group's
deny assignment would refuse jitaccess's own writes anyway). The sweep still walks an
approved request through ``active`` and ``expired`` so cards, feed and audit follow the
window; at each step it asks this provider, which *reads* the jitRequests resource:

- ``grant`` succeeds when Azure reports the request Approved (Azure grants it at its
  start); any other state is a refusal the request shows;
- ``revoke`` succeeds once Azure no longer grants it: the request is no longer Approved,
  or its scheduled window (Azure's own start + duration) is over.
"""

from __future__ import annotations

from datetime import datetime

from jitaccess.domain.durations import format_duration
from jitaccess.domain.native import (
    NATIVE_PROVIDER,
    ExternalLookupFailed,
    JitRequestState,
    ManagedAppsPort,
)
from jitaccess.providers.base import GrantSpec, ProviderError

#: ``GrantSpec.config`` key carrying the jitRequests resource id.
REQUEST_KEY = "native_request_id"


class NativeWitness:
    name = NATIVE_PROVIDER

    def __init__(self, managed_apps: ManagedAppsPort | None) -> None:
        self.managed_apps = managed_apps

    def _read(self, spec: GrantSpec) -> tuple[JitRequestState, datetime]:
        request_id = spec.config.get(REQUEST_KEY)
        if not isinstance(request_id, str) or not request_id:
            raise ProviderError("this request has no Azure JIT request behind it")
        if self.managed_apps is None:
            raise ProviderError("native mode needs Azure Resource Manager configured")
        try:
            native = self.managed_apps.get_request(request_id)
        except ExternalLookupFailed as exc:
            raise ProviderError(str(exc)) from None
        return native.state, native.starts_at + native.duration

    def grant(self, spec: GrantSpec, now: datetime) -> None:
        state, _ends = self._read(spec)
        if state is not JitRequestState.APPROVED:
            raise ProviderError(
                f"Azure reports this JIT request {state.value}, not Approved: Azure grants "
                "nothing for it"
            )

    def revoke(self, spec: GrantSpec, now: datetime) -> None:
        state, ends = self._read(spec)
        if state is JitRequestState.APPROVED and now < ends:
            raise ProviderError(
                # A backend's error is shown on Slack cards as it is: no clock time in it
                # (it would be in nobody's zone), the time left instead.
                f"Azure still grants this access for another {format_duration(ends - now)}, "
                "until its window ends; a JIT request cannot be ended early through Azure's API"
            )
