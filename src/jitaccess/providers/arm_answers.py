"""Azure Resource Manager's answers, read strictly: the one parsing layer for every ARM
read, whatever client makes it (azure-mgmt-authorization, azure-mgmt-monitor, and any
added later through :meth:`~jitaccess.providers.arm.ArmConnection.client_options`).

The SDK deserializes what ARM sends into models, and is lenient where it matters: a
list answer without ``value`` (or with ``value: null``) fails with a ``TypeError`` deep
in the pager, and list items that are objects without the fields we read become models
whose fields are all ``None``, which the provider would take for "not jitaccess's" (a
grant missed by reconciliation, a PIM assignment taken for nobody's). So every
successful answer is checked *before* the SDK sees it, as a ``raw_response_hook``: the
body is a JSON object; a list is ``{"value": [objects], "nextLink": string|null}``; and
each item (or single resource) has the fields the provider reads with their documented
types (:data:`FIELDS`). Anything else raises :class:`ArmAnswerRejected`, an
``AzureError``, so every caller fails it as it fails an unreachable ARM (a
:class:`~jitaccess.providers.base.ProviderError`; the sweep retries), after it was
logged as one line and counted (``service="azure"``). A new read adds its fields here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError
from azure.core.pipeline import PipelineResponse

from jitaccess.answers import describe, rejected

SERVICE = "azure"

STRING = "string"
OBJECT = "object"
#: A field that may be absent or null; otherwise as named.
OPTIONAL = "?"

#: What the provider reads of each resource type, by the path segment naming its
#: collection: field path -> type ("string", "object"; "?" suffix: may be absent/null).
FIELDS: Mapping[str, Mapping[str, str]] = {
    "roleAssignments": {
        "name": STRING,
        "properties": OBJECT,
        "properties.principalId": STRING,
        "properties.roleDefinitionId": STRING,
        "properties.scope": STRING,
        "properties.description": STRING + OPTIONAL,
    },
    "roleAssignmentSchedules": {
        "name": STRING,
        "properties": OBJECT,
        "properties.principalId": STRING,
        "properties.roleDefinitionId": STRING,
        "properties.scope": STRING,
        "properties.roleAssignmentScheduleRequestId": STRING + OPTIONAL,
    },
    "roleAssignmentScheduleRequests": {
        "name": STRING,
        "properties": OBJECT,
        "properties.justification": STRING + OPTIONAL,
    },
    # The Activity Log (``eventtypes/management/values``), read with ``$select``.
    "values": {
        "eventTimestamp": STRING,
        "caller": STRING + OPTIONAL,
        "claims": OBJECT + OPTIONAL,
        "resourceId": STRING + OPTIONAL,
        "operationId": STRING + OPTIONAL,
        "operationName": OBJECT + OPTIONAL,
        "operationName.value": STRING + OPTIONAL,
        "status": OBJECT + OPTIONAL,
        "status.value": STRING + OPTIONAL,
    },
}


#: How a collection is named in logs and in the metric's ``call`` label.
CALLS = {"values": "activityLogs"}


class ArmAnswerRejected(AzureError):
    """ARM answered something other than the documented shape (already logged and
    counted); callers handle it as any ARM failure."""


def _kind(path: str) -> tuple[str, bool]:
    """The resource type a URL path addresses and whether it is a list (the path ends
    with the collection) rather than one resource (it ends with a name)."""
    parts = [p for p in path.split("/") if p]
    if parts and parts[-1] in FIELDS:
        return parts[-1], True
    if len(parts) >= 2 and parts[-2] in FIELDS:
        return parts[-2], False
    return (parts[-1] if parts else ""), False


def _check_item(call: str, item: Any, kind: str, where: str) -> None:
    if not isinstance(item, dict):
        raise _reject(call, f"{describe(item)} {where}, not an object")
    for path, wanted in FIELDS.get(kind, {}).items():
        optional = wanted.endswith(OPTIONAL)
        expected = wanted.rstrip(OPTIONAL)
        value: Any = item
        present = True
        for key in path.split("."):
            if not isinstance(value, dict) or value.get(key) is None:
                present = False
                break
            value = value[key]
        if not present:
            if optional:
                continue
            raise _reject(call, f"no {path} {where}")
        ok = isinstance(value, str) if expected == STRING else isinstance(value, dict)
        if not ok:
            raise _reject(call, f"{path} as {describe(value)} {where}, not a {expected}")


def _reject(call: str, reason: str) -> ArmAnswerRejected:
    return ArmAnswerRejected(str(rejected(SERVICE, call, reason)))


def check(response: PipelineResponse[Any, Any]) -> None:
    """The ``raw_response_hook`` of every ARM client: raise :class:`ArmAnswerRejected`
    unless a successful answer has the documented shape. Errors (4xx/5xx) are the
    SDK's to raise, with ARM's own error body."""
    http = response.http_response
    if not 200 <= http.status_code < 300:
        return
    request = response.http_request
    kind, listing = _kind(urlsplit(request.url).path)
    call = f"{request.method} {CALLS.get(kind, kind)}{' (list)' if listing else ''}"
    raw = http.body()
    if not raw:
        if listing or (request.method == "GET" and http.status_code == 200):
            raise _reject(call, "an empty body")
        return  # 201/202/204 without a body: nothing to read
    try:
        data = json.loads(raw)
    except ValueError:
        raise _reject(call, "a body that is not JSON") from None
    if not isinstance(data, dict):
        raise _reject(call, f"{describe(data)} as the body, not an object")
    if not listing:
        if kind in FIELDS and request.method == "GET":
            _check_item(call, data, kind, "in the resource")
        return
    if "value" not in data or data["value"] is None:
        raise _reject(call, "no value list")
    items = data["value"]
    if not isinstance(items, list):
        raise _reject(call, f"value as {describe(items)}, not a list")
    next_link = data.get("nextLink")
    if next_link is not None and not isinstance(next_link, str):
        raise _reject(call, f"nextLink as {describe(next_link)}, not a string")
    for item in items:
        _check_item(call, item, kind, "in value")
