"""Microsoft Graph, as jitaccess's own identity (:class:`~jitaccess.domain.native.DirectoryPort`):
an Entra user's address, and a group's users, transitively.

Two reads (microsoftgraph/microsoft-graph-docs-contrib, ``api-reference/v1.0/api/``):

- ``GET /users/{id}?$select=id,mail,userPrincipalName`` (``user-get.md``): ``mail`` may
  be null (no mailbox); then the UPN is the address Slack is asked about. 404
  ``Request_ResourceNotFound`` is "no such user".
- ``GET /groups/{id}/transitiveMembers/microsoft.graph.user?$select=id&$top=999&$count=true``
  with ``ConsistencyLevel: eventual`` (``group-list-transitivemembers.md``: an OData
  cast on this collection is an advanced query), following ``@odata.nextLink``.

Every answer is read strictly (a JSON object; ``value`` a list of objects whose ``id``
is a string; a ``nextLink`` on Graph's own host), a refusal is told apart from "not
there", paging is bounded, every call has a timeout, and the bearer token is sent only
to the configured Graph host. Anything else is an :class:`ExternalLookupFailed` (logged
and counted as a rejected answer, ``service="graph"``).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from azure.core.credentials import TokenCredential

from jitaccess.answers import describe, rejected
from jitaccess.domain.native import ExternalLookupFailed

log = logging.getLogger(__name__)

SERVICE = "graph"
GRAPH_URL = "https://graph.microsoft.com/v1.0"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
#: Graph's largest page for directory collections.
PAGE_SIZE = 999
#: At most this many pages (about 50 000 users) for one group: more is refused, not cut.
MAX_PAGES = 50


class GraphDirectory:
    """:class:`~jitaccess.domain.native.DirectoryPort` over Graph v1.0 with ``requests``.

    ``credential`` is any azure-core ``TokenCredential`` for jitaccess's own identity
    (its managed identity, a client secret...), asked for ``scope``; ``base_url`` and
    ``verify`` point it at a fake in tests and the sandbox."""

    def __init__(
        self,
        credential: TokenCredential,
        *,
        base_url: str = GRAPH_URL,
        scope: str = GRAPH_SCOPE,
        verify: bool | str = True,
        timeout: float = 10.0,
        max_pages: int = MAX_PAGES,
    ) -> None:
        self._credential = credential
        self._base_url = base_url.rstrip("/")
        self._origin = _origin(self._base_url)
        self._scope = scope
        self._verify = verify
        self._timeout = timeout
        self._max_pages = max_pages
        self._session = requests.Session()

    # -- the port ------------------------------------------------------------------------

    def user_email(self, object_id: str) -> str | None:
        call = "getUser"
        url = f"{self._base_url}/users/{quote(object_id, safe='')}"
        status, body = self._get(call, url, {"$select": "id,mail,userPrincipalName"})
        if status == 404 and _error_code(body) == "Request_ResourceNotFound":
            return None
        if status != 200:
            raise self._refused(call, status, body)
        if not isinstance(body, dict):
            raise self._reject(call, f"{describe(body)}, not an object")
        user_id, mail, upn = body.get("id"), body.get("mail"), body.get("userPrincipalName")
        if not isinstance(user_id, str) or user_id.lower() != object_id.lower():
            raise self._reject(call, "an id that is not the user asked for")
        if mail is not None and not isinstance(mail, str):
            raise self._reject(call, f"mail as {describe(mail)}, not a string or null")
        if not isinstance(upn, str) or not upn:
            raise self._reject(call, f"userPrincipalName as {describe(upn)}, not a string")
        return mail or upn

    def group_member_ids(self, group_id: str) -> frozenset[str]:
        call = "listGroupTransitiveMemberUsers"
        url: str | None = (
            f"{self._base_url}/groups/{quote(group_id, safe='')}"
            "/transitiveMembers/microsoft.graph.user"
        )
        params: dict[str, str] | None = {
            "$select": "id",
            "$top": str(PAGE_SIZE),
            "$count": "true",
        }
        members: set[str] = set()
        pages = 0
        while url is not None:
            pages += 1
            if pages > self._max_pages:
                raise self._failed(
                    call, f"the group has more than {self._max_pages} pages of members"
                )
            status, body = self._get(call, url, params, consistency=True)
            if status == 404 and _error_code(body) == "Request_ResourceNotFound":
                raise self._failed(call, f"Graph has no group {group_id}")
            if status != 200:
                raise self._refused(call, status, body)
            if not isinstance(body, dict):
                raise self._reject(call, f"{describe(body)}, not an object")
            value = body.get("value")
            if not isinstance(value, list):
                raise self._reject(call, f"value as {describe(value)}, not a list")
            for index, item in enumerate(value):
                member = item.get("id") if isinstance(item, dict) else None
                if not isinstance(member, str) or not member:
                    raise self._reject(call, f"item {index} without an id string")
                members.add(member)
            next_link = body.get("@odata.nextLink")
            if next_link is not None and not isinstance(next_link, str):
                raise self._reject(call, f"@odata.nextLink as {describe(next_link)}")
            if next_link is not None and _origin(next_link) != self._origin:
                # Never send our bearer token anywhere but Graph.
                raise self._reject(call, "an @odata.nextLink on another host")
            url, params = next_link, None  # the link carries the query
        return frozenset(members)

    # -- helpers -------------------------------------------------------------------------

    def _get(
        self, call: str, url: str, params: dict[str, str] | None, *, consistency: bool = False
    ) -> tuple[int, Any]:
        try:
            token = self._credential.get_token(self._scope).token
        except Exception as exc:
            raise self._failed(call, f"no token for Graph ({type(exc).__name__})") from None
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if consistency:
            headers["ConsistencyLevel"] = "eventual"
        try:
            response = self._session.get(
                url,
                params=params,
                headers=headers,
                timeout=self._timeout,
                verify=self._verify,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise self._failed(call, f"Graph did not answer ({type(exc).__name__})") from None
        try:
            body = response.json()
        except ValueError:
            if response.status_code == 200:
                raise self._reject(call, "a body that is not JSON") from None
            body = None
        return response.status_code, body

    def _failed(self, call: str, reason: str) -> ExternalLookupFailed:
        log.warning("Microsoft Graph: %s failed: %s", call, reason)
        return ExternalLookupFailed(f"Microsoft Graph: {call} failed: {reason}")

    def _reject(self, call: str, reason: str) -> ExternalLookupFailed:
        return ExternalLookupFailed(str(rejected(SERVICE, call, reason)))

    def _refused(self, call: str, status: int, body: Any) -> ExternalLookupFailed:
        code = _error_code(body)
        return self._failed(call, f"Graph answered {status}" + (f" {code}" if code else ""))


def _error_code(body: Any) -> str | None:
    """``error.code`` of a Graph error answer, when it is a short plain word."""
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and code.isascii() and code.replace("_", "").isalnum():
        return code[:80]
    return None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"
