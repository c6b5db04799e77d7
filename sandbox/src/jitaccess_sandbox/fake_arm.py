"""A fake Azure Resource Manager (role assignments, PIM schedules and the Activity Log),
over HTTPS on 127.0.0.1.

azure-core refuses to send bearer tokens over plain HTTP, so the fake serves TLS with
a certificate made at start-up by a throwaway CA; clients trust it through
``connection_verify=fake.ca_file``. It holds role assignments in memory, behaves like
ARM where it matters to us (409 RoleAssignmentExists for a duplicate, 204 for
deleting what is not there, names unique across the tenant, ``atScope()`` lists) and
fails on demand (:meth:`FakeArm.fail_next`). It also serves the subscription's
Activity Log (``Microsoft.Insights/eventtypes/management/values``) from events a test
adds (:meth:`FakeArm.add_event`), honouring the filter patterns Azure allows (time
window, then resource group or resource URI) and paging with ``nextLink``.

It also serves PIM for Azure resources: role assignment schedule requests
(``AdminAssign`` / ``AdminExtend`` / ``AdminRemove``), the schedules they make, and
their instances. An ``AdminAssign`` materialises a role assignment (with a name ARM
picks, like Azure) that carries its end time; once :attr:`FakeArm.clock` passes that
end, the fake removes it by itself, as Azure does, whether or not anyone calls.
``pim_available = False`` makes it answer like a tenant without Entra ID P2
(400 ``AadPremiumLicenseRequired``).

It also serves Azure Managed Applications' own JIT (``Microsoft.Solutions`` applications
and jitRequests, PIM approvals): :attr:`FakeArm.managed_apps`, a
:class:`~jitaccess_sandbox.fake_managed_apps.FakeManagedApps`. Those routes take a
person's token as well as :data:`TOKEN` (jitaccess's own identity), checked by
:attr:`FakeArm.user_token_verifier`; every other route takes only :data:`TOKEN`.

Tests use it, and so does ``jitaccess serve --sandbox``: there its :attr:`FakeArm.clock`
is the sandbox's clock, :attr:`FakeArm.on_scheduled` writes a few demo Activity Log
events for each new scheduled assignment, and :meth:`FakeArm.snapshot` is what the
sandbox page's Azure panel shows.

    with FakeArm() as arm:
        client = AuthorizationManagementClient(FakeCredential(), sub, base_url=arm.base_url,
                                               connection_verify=arm.ca_file)
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import json
import re
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jitaccess_sandbox.fake_managed_apps import SERVICE_OBJECT_ID, Caller, FakeManagedApps

ARM_SCOPE = "https://management.azure.com/.default"
TOKEN = "fake-arm-token"
_ACTIVITY_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Insights/eventtypes/management/values/?$",
    re.IGNORECASE,
)
_ACTIVITY_FILTER_RE = re.compile(
    r"^eventTimestamp ge '(?P<start>[^']+)' and eventTimestamp le '(?P<end>[^']+)'"
    r"(?: and (?P<field>resourceGroupName|resourceUri) eq '(?P<value>[^']+)')?$",
    re.IGNORECASE,
)
OBJECT_ID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
_PATH_RE = re.compile(
    r"^(?P<scope>/subscriptions/.+?)/providers/Microsoft\.Authorization/"
    r"(?P<kind>roleAssignments|roleAssignmentScheduleRequests|roleAssignmentSchedules"
    r"|roleAssignmentScheduleInstances)"
    r"(?:/(?P<name>[^/]+))?/?$",
    re.IGNORECASE,
)
#: Built-in role definition GUIDs, for showing an assignment's role by name.
_ROLE_NAMES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "acdd72a7-3385-48ef-bd42-f606fba81ae7": "Reader",
}
#: PIM refuses to remove an assignment this soon after it started (ActiveDurationTooShort).
PIM_MINIMUM_ACTIVE = dt.timedelta(minutes=5)


class FakeCredential:
    """A TokenCredential that hands out a fixed token valid for a year."""

    def __init__(self) -> None:
        self.scopes_requested: list[tuple[str, ...]] = []

    def _expiry(self) -> int:
        return int(time.time()) + 365 * 24 * 3600

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes_requested.append(scopes)
        return AccessToken(TOKEN, self._expiry())

    def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        self.scopes_requested.append(scopes)
        return AccessTokenInfo(TOKEN, self._expiry())

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeCredential:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@dataclass
class Failure:
    status: int
    code: str
    message: str
    method: str | None = None
    retry_after: int | None = None
    times: int = 1
    #: ``answer_next``: only requests whose path contains this.
    path: str | None = None
    #: ``answer_next``: this body as it is, with ``status``, instead of an ARM error.
    body: Any = None
    raw: bool = False


@dataclass
class Assignment:
    scope: str
    name: str
    role_definition_id: str
    principal_id: str
    principal_type: str | None
    description: str | None
    created_on: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    #: Set for an assignment PIM made from a schedule request: Azure removes it then.
    starts_at: dt.datetime | None = None
    ends_at: dt.datetime | None = None
    #: The schedule request that made (or last extended) it.
    schedule_request: str | None = None

    @property
    def scheduled(self) -> bool:
        return self.ends_at is not None

    def schedule_name(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"schedule:{self.name}"))

    def schedule_resource(self, kind: str) -> dict[str, Any]:
        """This assignment as a PIM roleAssignmentSchedule(Instance)."""
        assert self.starts_at is not None and self.ends_at is not None
        name = self.schedule_name()
        schedule_id = (
            f"{self.scope}/providers/Microsoft.Authorization/roleAssignmentSchedules/{name}"
        )
        properties: dict[str, Any] = {
            "scope": self.scope,
            "roleDefinitionId": self.role_definition_id,
            "principalId": self.principal_id,
            "principalType": self.principal_type or "User",
            "status": "Provisioned",
            "assignmentType": "Assigned",
            "memberType": "Direct",
            "startDateTime": self.starts_at.isoformat(),
            "endDateTime": self.ends_at.isoformat(),
            "createdOn": self.created_on,
        }
        if kind == "roleAssignmentSchedules":
            properties["roleAssignmentScheduleRequestId"] = (
                f"{self.scope}/providers/Microsoft.Authorization/roleAssignmentScheduleRequests/"
                f"{self.schedule_request}"
            )
            return {
                "id": schedule_id,
                "name": name,
                "type": "Microsoft.Authorization/roleAssignmentSchedules",
                "properties": properties,
            }
        properties["roleAssignmentScheduleId"] = schedule_id
        properties["originRoleAssignmentId"] = (
            f"{self.scope}/providers/Microsoft.Authorization/roleAssignments/{self.name}"
        )
        return {
            "id": f"{self.scope}/providers/Microsoft.Authorization/"
            f"roleAssignmentScheduleInstances/{name}",
            "name": name,
            "type": "Microsoft.Authorization/roleAssignmentScheduleInstances",
            "properties": properties,
        }

    def resource(self) -> dict[str, Any]:
        return {
            "id": f"{self.scope}/providers/Microsoft.Authorization/roleAssignments/{self.name}",
            "name": self.name,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "scope": self.scope,
                "roleDefinitionId": self.role_definition_id,
                "principalId": self.principal_id,
                "principalType": self.principal_type or "User",
                "description": self.description,
                "createdOn": self.created_on,
                "updatedOn": self.created_on,
            },
        }


@dataclass
class ActivityEvent:
    """One Activity Log record, as ARM serves it."""

    subscription_id: str
    caller: str
    operation_name: str
    resource_id: str
    status: str
    event_timestamp: dt.datetime
    object_id: str | None = None
    operation_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @functools.cached_property
    def resource_group(self) -> str:
        match = re.search(r"/resourceGroups/([^/]+)", self.resource_id, re.IGNORECASE)
        return match.group(1) if match else ""

    def resource(self) -> dict[str, Any]:
        event_id = str(uuid.uuid4())
        return {
            "id": f"{self.resource_id}/events/{event_id}/ticks/0",
            "eventDataId": event_id,
            "caller": self.caller,
            "claims": {OBJECT_ID_CLAIM: self.object_id} if self.object_id else {},
            "operationId": self.operation_id,
            "operationName": {"value": self.operation_name, "localizedValue": self.operation_name},
            "status": {"value": self.status, "localizedValue": self.status},
            "resourceId": self.resource_id,
            "resourceGroupName": self.resource_group,
            "eventTimestamp": self.event_timestamp.isoformat().replace("+00:00", "Z"),
            "subscriptionId": self.subscription_id,
            "category": {"value": "Administrative", "localizedValue": "Administrative"},
            "level": "Informational",
        }


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost: (ca, cert, key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jitaccess test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    cert_file = directory / "server.pem"
    key_file = directory / "server-key.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


class HttpsServer:
    """A threaded HTTPS server on 127.0.0.1 (an OS-picked port) whose certificate a
    throwaway CA signed: clients trust ``ca_file``. The fakes here serve on one."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], prefix: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.ca_file, cert_file, key_file = make_tls_files(Path(self._tmp.name))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port: int = self._server.server_address[1]
        self.base_url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._tmp.cleanup()


class FakeArm:
    """In-memory role assignments behind an HTTPS server; see the module docstring."""

    def __init__(self, *, page_size: int = 100) -> None:
        self.page_size = page_size
        self.assignments: dict[str, Assignment] = {}  # by lower-case name (tenant-wide)
        #: PIM role assignment schedule requests, by lower-case name, as ARM answers them.
        self.schedule_requests: dict[str, dict[str, Any]] = {}
        #: False: the tenant has no Entra ID P2, every PIM endpoint answers 400.
        self.pim_available = True
        #: What "now" is for PIM expiry; tests freeze or replace it.
        self.clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
        self.events: list[ActivityEvent] = []
        #: Called (outside the lock) with each assignment an ``AdminAssign`` made.
        self.on_scheduled: Callable[[Assignment], None] | None = None
        #: The ``$filter`` of every Activity Log query (first pages only).
        self.activity_filters: list[str] = []
        self._activity_cache: dict[tuple[str, str], tuple[int, list[ActivityEvent]]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path?query)
        self.api_versions: set[str] = set()
        self._failures: list[Failure] = []
        self._lock = threading.Lock()
        self._https = HttpsServer(_handler_for(self), "fake-arm-")
        self.ca_file, self.port, self.base_url = (
            self._https.ca_file,
            self._https.port,
            self._https.base_url,
        )
        #: Verifies a signed-in person's access token (a JWT from the fake Entra): the
        #: verified claims (``oid``, ``tid``…), or None for a bad token (401). Only the
        #: managed-application and PIM-approval routes take user tokens; kept by reset().
        self.user_token_verifier: Callable[[str], dict[str, Any] | None] | None = None
        #: Managed applications, jitRequests and PIM approvals (fake_managed_apps).
        self.managed_apps = FakeManagedApps(self)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeArm:
        self._https.start()
        return self

    def stop(self) -> None:
        self._https.stop()

    def __enter__(self) -> FakeArm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self.assignments.clear()
            self.schedule_requests.clear()
            self.events.clear()
            self._activity_cache.clear()
            self.activity_filters.clear()
            self.requests.clear()
            self._failures.clear()
            self.pim_available = True
            self.clock = lambda: dt.datetime.now(dt.UTC)
            self.on_scheduled = None
        self.managed_apps.reset()

    # -- test controls -----------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        code: str,
        message: str = "",
        *,
        method: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` requests (of ``method``, if given) get this ARM error."""
        with self._lock:
            self._failures.append(
                Failure(status, code, message or code, method, retry_after, times)
            )

    def answer_next(
        self,
        body: Any,
        *,
        path: str,
        method: str = "GET",
        status: int = 200,
        times: int = 1,
    ) -> None:
        """The next ``times`` ``method`` requests whose path contains ``path`` are
        answered with ``body`` as it is (any JSON value: ``{"value": {"a": 1}}``, a
        string, ``None``…): what an ARM that changed, broke or was impersonated might
        send, for the shape tests of the providers' strict reading."""
        with self._lock:
            self._failures.append(
                Failure(status, "", "", method, None, times, path=path, body=body, raw=True)
            )

    def add(
        self,
        scope: str,
        name: str,
        role_definition_id: str,
        principal_id: str,
        *,
        principal_type: str = "User",
        description: str | None = None,
    ) -> Assignment:
        """Put an assignment in place directly, as if someone else had made it."""
        assignment = Assignment(
            scope, name, role_definition_id, principal_id, principal_type, description
        )
        with self._lock:
            self.assignments[name.lower()] = assignment
        return assignment

    def add_event(
        self,
        scope: str,
        *,
        operation: str,
        at: dt.datetime,
        object_id: str | None,
        caller: str | None = None,
        resource: str = "",
        status: str = "Succeeded",
        operation_id: str | None = None,
    ) -> ActivityEvent:
        """Put an event in the Activity Log: ``operation`` on ``scope`` + ``resource``
        (e.g. ``/providers/Microsoft.Storage/storageAccounts/st1``) by ``object_id``."""
        subscription = scope.split("/")[2]
        event = ActivityEvent(
            subscription_id=subscription,
            caller=caller or object_id or "someone@example.com",
            operation_name=operation,
            resource_id=scope.rstrip("/") + resource,
            status=status,
            event_timestamp=at,
            object_id=object_id,
        )
        if operation_id is not None:
            event.operation_id = operation_id
        with self._lock:
            self.events.append(event)
        return event

    def at(self, scope: str) -> list[Assignment]:
        self.expire_due()
        with self._lock:
            return [a for a in self.assignments.values() if _same(a.scope, scope)]

    def snapshot(self) -> dict[str, Any]:
        """What the fake holds now (after removing what has expired): role assignments
        (scheduled ones with their end) and PIM schedule requests, newest first, as
        plain JSON for the sandbox page."""
        self.expire_due()
        with self._lock:
            assignments = [
                {
                    "name": a.name,
                    "scope": a.scope,
                    "role": _ROLE_NAMES.get(
                        a.role_definition_id.rsplit("/", 1)[-1].lower(), a.role_definition_id
                    ),
                    "principal_id": a.principal_id,
                    "principal_type": a.principal_type or "User",
                    "starts_at": a.starts_at.isoformat() if a.starts_at else None,
                    "ends_at": a.ends_at.isoformat() if a.ends_at else None,
                    "description": a.description,
                }
                for a in sorted(self.assignments.values(), key=lambda a: a.created_on)
            ]
            requests = [
                {
                    "name": r["name"],
                    "type": r["properties"].get("requestType"),
                    "status": r["properties"].get("status"),
                    "scope": r["properties"].get("scope"),
                    "principal_id": r["properties"].get("principalId"),
                    "created_on": r["properties"].get("createdOn"),
                    "ends_at": (
                        (r["properties"].get("scheduleInfo") or {}).get("expiration") or {}
                    ).get("endDateTime"),
                }
                for r in self.schedule_requests.values()
            ]
            events = len(self.events)
        requests.sort(key=lambda r: str(r["created_on"] or ""), reverse=True)
        assignments.reverse()
        return {
            "now": self.clock().isoformat(),
            "assignments": assignments,
            "schedule_requests": requests,
            "activity_events": events,
            "managed_apps": self.managed_apps.snapshot(),
        }

    def arm_calls(self) -> int:
        """Requests received so far (each SDK call that reached ARM)."""
        with self._lock:
            return len(self.requests)

    def expire_due(self) -> list[Assignment]:
        """Remove scheduled assignments whose end has passed, as Azure does on its own."""
        now = self.clock()
        with self._lock:
            due = [a for a in self.assignments.values() if a.ends_at and a.ends_at <= now]
            for assignment in due:
                del self.assignments[assignment.name.lower()]
        return due

    # -- request handling (server threads) -------------------------------------------------

    def _take_failure(self, method: str, path: str = "") -> Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.path is not None and failure.path not in path:
                    continue
                if failure.method in (None, method):
                    failure.times -= 1
                    if failure.times <= 0:
                        self._failures.remove(failure)
                    return failure
        return None

    def handle(
        self, method: str, target: str, headers: Any, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self.requests.append((method, target))
        native = self._managed_apps_route(method, target, headers, body)
        if native is not None:
            return native
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            return _error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        api_version = query.get("api-version")
        if not api_version:
            return _error(400, "MissingApiVersionParameter", "The api-version is missing.")
        with self._lock:
            self.api_versions.add(api_version)
        path = "/" + parts.path.lstrip("/")
        activity = _ACTIVITY_RE.match(path)
        if activity is not None:
            failure = self._take_failure(method, path)
            if failure is not None and failure.raw:
                return failure.status, json.dumps(failure.body).encode(), {}
            if failure is not None:
                extra = {"Retry-After": str(failure.retry_after)} if failure.retry_after else {}
                status, payload, _ = _error(failure.status, failure.code, failure.message)
                return status, payload, extra
            return self._activity(activity.group("sub"), query)
        match = _PATH_RE.match(path)
        if match is None:
            return _error(404, "InvalidResourceType", f"No route for {path}")
        failure = self._take_failure(method, path)
        if failure is not None and failure.raw:
            return failure.status, json.dumps(failure.body).encode(), {}
        if failure is not None:
            extra = {"Retry-After": str(failure.retry_after)} if failure.retry_after else {}
            status, payload, _ = _error(failure.status, failure.code, failure.message)
            return status, payload, extra
        self.expire_due()
        scope, name, kind = match.group("scope"), match.group("name"), match.group("kind")
        if kind != "roleAssignments":
            return self._pim(method, kind, scope, name, body, query)
        if name is None:
            if method != "GET":
                return _error(405, "MethodNotAllowed", method)
            return self._list(scope, query)
        if method == "PUT":
            return self._put(scope, name, body)
        if method == "DELETE":
            return self._delete(scope, name)
        if method == "GET":
            with self._lock:
                found = self.assignments.get(name.lower())
            if found is None or not _same(found.scope, scope):
                return _error(404, "RoleAssignmentNotFound", "The role assignment does not exist.")
            return 200, found.resource(), {}
        return _error(405, "MethodNotAllowed", method)

    def _caller(self, headers: Any) -> Caller | None:
        """The service identity for :data:`TOKEN`, a person for a token the
        :attr:`user_token_verifier` accepts, None otherwise."""
        authorization = headers.get("Authorization") or ""
        if not authorization.startswith("Bearer "):
            return None
        token = authorization[len("Bearer ") :]
        if token == TOKEN:
            return Caller(SERVICE_OBJECT_ID, service=True)
        verifier = self.user_token_verifier
        claims = verifier(token) if verifier is not None else None
        if not isinstance(claims, dict) or not isinstance(claims.get("oid"), str):
            return None
        tenant = claims.get("tid")
        return Caller(
            claims["oid"], tenant if isinstance(tenant, str) else None, claims=dict(claims)
        )

    def _managed_apps_route(
        self, method: str, target: str, headers: Any, body: bytes
    ) -> tuple[int, Any, dict[str, str]] | None:
        """Managed applications, jitRequests and PIM approvals (FakeManagedApps), which
        take a person's token as well as the service's; None for any other path."""
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = "/" + parts.path.lstrip("/")
        if not self.managed_apps.owns(path, query):
            return None
        caller = self._caller(headers)
        if caller is None:
            return _error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        api_version = query.get("api-version")
        if not api_version:
            return _error(400, "MissingApiVersionParameter", "The api-version is missing.")
        with self._lock:
            self.api_versions.add(api_version)
        failure = self._take_failure(method, path)
        if failure is not None and failure.raw:
            return failure.status, json.dumps(failure.body).encode(), {}
        if failure is not None:
            extra = {"Retry-After": str(failure.retry_after)} if failure.retry_after else {}
            status, payload, _ = _error(failure.status, failure.code, failure.message)
            return status, payload, extra
        self.expire_due()
        return self.managed_apps.handle(method, path, query, caller, body)

    def _put(self, scope: str, name: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        try:
            props = json.loads(body)["properties"]
            role_definition_id = props["roleDefinitionId"]
            principal_id = props["principalId"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "InvalidRequestContent", "properties.roleDefinitionId/principalId")
        with self._lock:
            existing = self.assignments.get(name.lower())
            if existing is not None:
                same = (
                    _same(existing.scope, scope)
                    and existing.role_definition_id.lower() == role_definition_id.lower()
                    and existing.principal_id.lower() == principal_id.lower()
                )
                if same:
                    return _error(
                        409, "RoleAssignmentExists", "The role assignment already exists."
                    )
                return _error(
                    409,
                    "RoleAssignmentUpdateNotPermitted",
                    "Tenant ID, application ID, principal ID, and scope are not allowed to be "
                    "updated.",
                )
            for other in self.assignments.values():
                if (
                    _same(other.scope, scope)
                    and other.role_definition_id.lower() == role_definition_id.lower()
                    and other.principal_id.lower() == principal_id.lower()
                ):
                    return _error(
                        409, "RoleAssignmentExists", "The role assignment already exists."
                    )
            assignment = Assignment(
                scope,
                name,
                role_definition_id,
                principal_id,
                props.get("principalType"),
                props.get("description"),
            )
            self.assignments[name.lower()] = assignment
        return 201, assignment.resource(), {}

    def _delete(self, scope: str, name: str) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            found = self.assignments.get(name.lower())
            if found is None or not _same(found.scope, scope):
                return 204, None, {}
            del self.assignments[name.lower()]
        return 200, found.resource(), {}

    def _list(self, scope: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        flt = (query.get("$filter") or "").strip()
        with self._lock:
            items = sorted(self.assignments.values(), key=lambda a: a.name)
        if flt == "atScope()":
            items = [a for a in items if _at_or_above(a.scope, scope)]
        elif flt.startswith("principalId eq"):
            wanted = flt.split("eq", 1)[1].strip().strip("'\"").lower()
            items = [a for a in items if a.principal_id.lower() == wanted]
        elif flt:
            return _error(400, "UnsupportedFilter", f"fake does not support $filter={flt}")
        else:
            items = [
                a for a in items if _at_or_above(a.scope, scope) or _at_or_above(scope, a.scope)
            ]
        skip = int(query.get("$skipToken") or 0)
        page = items[skip : skip + self.page_size]
        payload: dict[str, Any] = {"value": [a.resource() for a in page]}
        if skip + self.page_size < len(items):
            payload["nextLink"] = (
                f"{self.base_url}{scope}/providers/Microsoft.Authorization/roleAssignments"
                f"?$skipToken={skip + self.page_size}&api-version={query['api-version']}"
                + (f"&$filter={flt}" if flt else "")
            )
        return 200, payload, {}

    # -- PIM for Azure resources ---------------------------------------------------------

    def _pim(
        self,
        method: str,
        kind: str,
        scope: str,
        name: str | None,
        body: bytes,
        query: dict[str, str],
    ) -> tuple[int, Any, dict[str, str]]:
        if not self.pim_available:
            return _error(
                400, "AadPremiumLicenseRequired", "The tenant needs an AAD Premium 2 license."
            )
        if kind == "roleAssignmentScheduleRequests" and name is not None:
            if method == "PUT":
                return self._schedule_request(scope, name, body)
            if method == "GET":
                with self._lock:
                    found = self.schedule_requests.get(name.lower())
                if found is None:
                    return _error(404, "RoleAssignmentScheduleRequestNotFound", "Not found.")
                return 200, found, {}
            return _error(405, "MethodNotAllowed", method)
        if name is not None or method != "GET":
            return _error(405, "MethodNotAllowed", method)
        flt = (query.get("$filter") or "").strip()
        if flt not in ("", "atScope()"):
            return _error(400, "UnsupportedFilter", f"fake does not support $filter={flt}")
        with self._lock:
            if kind == "roleAssignmentScheduleRequests":
                items = [
                    r
                    for r in self.schedule_requests.values()
                    if _at_or_above(r["properties"]["scope"], scope)
                ]
            else:
                items = [
                    a.schedule_resource(kind)
                    for a in sorted(self.assignments.values(), key=lambda a: a.name)
                    if a.scheduled and _at_or_above(a.scope, scope)
                ]
        return 200, {"value": items}, {}

    def _schedule_request(
        self, scope: str, name: str, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        try:
            props = json.loads(body)["properties"]
            request_type = props["requestType"]
            role_definition_id = props["roleDefinitionId"]
            principal_id = props["principalId"]
        except (ValueError, KeyError, TypeError):
            return _error(
                400, "InvalidRequestContent", "properties.requestType/roleDefinitionId/principalId"
            )
        now = self.clock()
        schedule = props.get("scheduleInfo") or {}
        start = _parse_time(schedule.get("startDateTime")) or now
        expiration = schedule.get("expiration") or {}
        end = _parse_time(expiration.get("endDateTime"))
        with self._lock:
            held = [
                a
                for a in self.assignments.values()
                if _same(a.scope, scope)
                and a.role_definition_id.lower() == role_definition_id.lower()
                and a.principal_id.lower() == principal_id.lower()
            ]
            scheduled = next((a for a in held if a.scheduled), None)
            if request_type == "AdminAssign":
                if held:
                    return _error(
                        400, "RoleAssignmentExists", "The Role assignment already exists."
                    )
                if expiration.get("type") != "AfterDateTime" or end is None or end <= now:
                    return _error(
                        400, "InvalidScheduleInfo", "expiration AfterDateTime with a future end"
                    )
                assignment = Assignment(
                    scope,
                    str(uuid.uuid4()),
                    role_definition_id,
                    principal_id,
                    props.get("principalType"),
                    None,
                    starts_at=start,
                    ends_at=end,
                    schedule_request=name,
                )
                self.assignments[assignment.name.lower()] = assignment
            elif request_type in ("AdminExtend", "AdminUpdate"):
                if scheduled is None:
                    return _error(
                        400, "RoleAssignmentDoesNotExist", "The Role assignment does not exist."
                    )
                if end is None or end <= now:
                    return _error(400, "InvalidScheduleInfo", "expiration needs a future end")
                scheduled.ends_at = end
                scheduled.schedule_request = name
            elif request_type == "AdminRemove":
                if scheduled is None:
                    return _error(
                        400, "RoleAssignmentDoesNotExist", "The Role assignment does not exist."
                    )
                assert scheduled.starts_at is not None
                if now - scheduled.starts_at < PIM_MINIMUM_ACTIVE:
                    return _error(
                        400,
                        "ActiveDurationTooShort",
                        "The role assignment cannot be removed within 5 minutes of its start.",
                    )
                del self.assignments[scheduled.name.lower()]
            else:
                return _error(400, "InvalidRequestType", f"fake does not support {request_type}")
            resource = {
                "id": f"{scope}/providers/Microsoft.Authorization/"
                f"roleAssignmentScheduleRequests/{name}",
                "name": name,
                "type": "Microsoft.Authorization/roleAssignmentScheduleRequests",
                "properties": {
                    **props,
                    "scope": scope,
                    "status": "Revoked" if request_type == "AdminRemove" else "Provisioned",
                    "createdOn": now.isoformat(),
                },
            }
            self.schedule_requests[name.lower()] = resource
        if request_type == "AdminAssign" and self.on_scheduled is not None:
            self.on_scheduled(assignment)
        return 201, resource, {}

    def _activity(
        self, subscription: str, query: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        """The Activity Log: only the filter patterns Azure allows; newest first, paged."""
        flt = (query.get("$filter") or "").strip()
        match = _ACTIVITY_FILTER_RE.match(flt)
        if match is None:
            return _error(400, "BadRequest", f"The $filter is not supported: {flt!r}")
        start = dt.datetime.fromisoformat(match.group("start").replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(match.group("end").replace("Z", "+00:00"))
        field_name, value = (match.group("field") or "").lower(), match.group("value")
        skip = int(query.get("$skipToken") or 0)
        if not skip:
            with self._lock:
                self.activity_filters.append(flt)
        with self._lock:
            # The pages of one query see the same list (and pay for filtering it once).
            cached = self._activity_cache.get((subscription, flt))
        if cached is not None and cached[0] == len(self.events):
            events = cached[1]
        else:
            events = self._matching(subscription, start, end, field_name, value)
            with self._lock:
                self._activity_cache[(subscription, flt)] = (len(self.events), events)
        page = events[skip : skip + self.page_size]
        # $select returns only the named properties, as ARM does.
        wanted = {p.strip() for p in (query.get("$select") or "").split(",") if p.strip()}
        values = [e.resource() for e in page]
        if wanted:
            values = [{k: v for k, v in item.items() if k in wanted} for item in values]
        payload: dict[str, Any] = {"value": values}
        if skip + self.page_size < len(events):
            params = {"api-version": query["api-version"], "$filter": flt}
            if wanted:
                params["$select"] = query["$select"]
            params["$skipToken"] = str(skip + self.page_size)
            payload["nextLink"] = (
                f"{self.base_url}/subscriptions/{subscription}/providers/Microsoft.Insights/"
                f"eventtypes/management/values?{urlencode(params)}"
            )
        return 200, payload, {}

    def _matching(
        self,
        subscription: str,
        start: dt.datetime,
        end: dt.datetime,
        field_name: str,
        value: str,
    ) -> list[ActivityEvent]:
        with self._lock:
            events = [
                e
                for e in self.events
                if e.subscription_id.lower() == subscription.lower()
                and start <= e.event_timestamp <= end
                and (
                    not field_name
                    or (
                        field_name == "resourcegroupname"
                        and e.resource_group.lower() == value.lower()
                    )
                    or (field_name == "resourceuri" and _same(e.resource_id, value))
                )
            ]
        events.sort(key=lambda e: e.event_timestamp, reverse=True)
        return events


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _same(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def _at_or_above(assignment_scope: str, scope: str) -> bool:
    """True if an assignment at ``assignment_scope`` applies at ``scope``."""
    a, s = assignment_scope.rstrip("/").lower(), scope.rstrip("/").lower()
    return s == a or s.startswith(a + "/")


def _error(status: int, code: str, message: str) -> tuple[int, Any, dict[str, str]]:
    return status, {"error": {"code": code, "message": message}}, {}


def _handler_for(arm: FakeArm) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, payload, extra = arm.handle(self.command, self.path, self.headers, body)
            if isinstance(payload, bytes):  # answer_next: the body as given
                data = payload
            else:
                data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-ms-request-id", "fake")
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            if data:
                self.wfile.write(data)

        do_GET = do_PUT = do_DELETE = do_POST = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
