"""A fake Microsoft identity platform (v2.0 endpoints) for one tenant, and the two
Microsoft Graph v1.0 reads jitaccess makes, over HTTPS on 127.0.0.1.

What it plays, and where each format comes from (MicrosoftDocs/entra-docs, folder
``docs/identity-platform/``, unless said otherwise):

- ``GET /{tenant}/v2.0/.well-known/openid-configuration``: the tenant's discovery
  document, with the fields and values Entra's own carries (as recorded from
  ``login.microsoftonline.com`` in the Azure SDKs' test recordings), its URLs pointing
  at this server. The issuer is ``{base_url}/{tid}/v2.0``: Entra's
  ``https://login.microsoftonline.com/{tid}/v2.0`` with the host swapped.
- ``GET /{tenant}/discovery/v2.0/keys``: the JWKS (one RSA key; ``kid`` = ``x5t`` =
  the base64url SHA-1 thumbprint of its certificate, ``x5c``, ``issuer``).
- ``GET /{tenant}/oauth2/v2.0/authorize`` (``v2-oauth2-auth-code-flow.md``): a small
  sign-in page; its form posts to ``/{tenant}/login``, which sends the browser to the
  ``redirect_uri`` with ``code`` and ``state``, or with ``error`` and
  ``error_description``: a 302 with them in the query (``response_mode=query``) or the
  fragment, or Entra's self-submitting form (``form_post``, what msal recommends). An
  unknown client or redirect URI gets an error page, never a redirect (AADSTS700016,
  AADSTS50011). PKCE (``S256`` and ``plain``),
  ``nonce``, ``prompt`` (``none`` has no session to use here: ``login_required``),
  ``max_age`` (the ID token then carries ``auth_time``, as OIDC Core 3.1.2.1 requires and
  Entra does) and the ``claims`` request parameter (``claims-challenge.md``,
  ``developer-guide-conditional-access-authentication-context.md``): an ``acrs`` claim
  requested with ``essential: true`` and ``value``/``values`` is put in the token it was
  requested for (``id_token`` or ``access_token``) only when the sign-in used
  multi-factor authentication. (Real Entra, with a Conditional Access policy on the
  context, would refuse a sign-in that cannot satisfy it; the fake issues the token
  without ``acrs``, which is what a client must refuse either way.)
- ``POST /{tenant}/oauth2/v2.0/token``: ``authorization_code`` (client secret in the
  body or HTTP Basic, PKCE ``code_verifier``, ``redirect_uri``, codes single-use and
  valid 10 minutes), ``refresh_token`` and ``client_credentials``. The answer is
  ``token_type``, ``scope``, ``expires_in``, ``ext_expires_in``, ``access_token``,
  ``refresh_token``, ``id_token`` (and ``client_info`` when the client sends
  ``client_info=1``, as MSAL does). Errors are Entra's JSON (``error``,
  ``error_description`` starting with the AADSTS code, ``error_codes``, ``timestamp``,
  ``trace_id``, ``correlation_id``, ``error_uri``; ``reference-error-codes.md``):
  AADSTS54005 code already redeemed, AADSTS70008 code expired, AADSTS501481 PKCE
  mismatch (the code is not spent), AADSTS50173 grant revoked
  (:meth:`FakeEntra.revoke_sign_ins`), AADSTS700082 refresh token expired
  (:meth:`FakeEntra.expire_refresh_tokens`, or 90 days unused), AADSTS7000215 wrong
  secret (401 ``invalid_client``). A refresh answers a new refresh token; as the
  auth-code-flow page says, the old one is not revoked by being used.
- Tokens (``id-token-claims-reference.md``, ``access-token-claims-reference.md``,
  ``optional-claims-reference.md``), signed RS256:
  the v2.0 ID token carries ``aud`` (client id), ``iss``, ``iat``, ``nbf``, ``exp``,
  ``aio``, ``name``, ``nonce`` (authorization code only), ``oid``,
  ``preferred_username``, ``rh``, ``sub`` (pairwise per application), ``tid``, ``uti``,
  ``ver`` "2.0", and ``acrs``/``auth_time`` only as above. No ``amr``: v2.0 ID tokens
  have none. The ARM access token is a v1.0 token (header ``x5t`` and ``kid``):
  ``aud`` ``https://management.azure.com``, ``iss`` ``https://sts.windows.net/{tid}/``,
  ``iat``, ``nbf``, ``exp``, ``acr`` "1", ``acrs`` (as above), ``aio``, ``amr``
  (``pwd``, plus ``mfa``), ``appid``, ``appidacr`` "1", ``name``, ``oid``, ``rh``,
  ``scp``, ``sub``, ``tid``, ``unique_name``, ``upn``, ``uti``, ``ver`` "1.0". An
  app-only Graph token (client credentials) has ``idtyp`` "app" and ``roles``.
- Graph (microsoftgraph/microsoft-graph-docs-contrib, ``api-reference/v1.0/api/``):
  ``GET /v1.0/users/{id}`` with ``$select`` (``user-get.md``), and
  ``GET /v1.0/groups/{id}/transitiveMembers/microsoft.graph.user`` with ``$select``,
  ``$top``, ``$count`` (``group-list-transitivemembers.md``), paged with
  ``@odata.nextLink`` (``$top`` up to 999, at most :attr:`FakeEntra.page_size` a page;
  the cast is answered with or without ``ConsistencyLevel: eventual``, which one
  version of that page requires for casts and a later one does not); errors in Graph's
  shape (404 ``Request_ResourceNotFound``, 401 ``InvalidAuthenticationToken``). Graph
  takes the sandbox's service token (``fake_arm.TOKEN``, what ``FakeCredential`` hands
  out) or an app-only token from this server's token endpoint.

Tests complete a sign-in without a browser with :meth:`FakeEntra.sign_in`, which GETs the
sign-in page and POSTs its form over HTTPS exactly as a browser would, and returns the
:class:`Callback` the browser would then make.

    with FakeEntra() as entra:
        entra.add_user(AVA, "ava@contoso.example", "Ava Adams", mail="ava@contoso.example")
        auth_uri, flow = sign_in_client.start("state-1", claims_acrs="c1", max_age=0)
        answer = entra.sign_in(auth_uri, "ava@contoso.example", mfa=True)
        tokens = sign_in_client.finish(flow, answer.params)   # answer.method == "POST"
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import http.client
import json
import re
import secrets
import ssl
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit, urlunsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from jitaccess_sandbox.fake_arm import TOKEN as SERVICE_TOKEN
from jitaccess_sandbox.fake_arm import HttpsServer

TENANT_ID = "72f988bf-0000-4000-8000-00000000c0de"
TENANT_DOMAIN = "contoso.example"
CLIENT_ID = "0b6a1f7e-4c1d-4e8b-9a53-7d0c2f1e9a10"
CLIENT_SECRET = "fake-client-secret"
REDIRECT_URI = "https://jitaccess.example/auth/microsoft/callback"
ARM_RESOURCE = "https://management.azure.com"
GRAPH_RESOURCE = "https://graph.microsoft.com"
#: "Authorization codes are short lived. Typically, they expire after about 10 minutes."
CODE_LIFETIME = dt.timedelta(minutes=10)
ACCESS_TOKEN_LIFETIME = dt.timedelta(seconds=3599)
#: Refresh tokens unused this long expire (AADSTS700082).
REFRESH_INACTIVITY = dt.timedelta(days=90)
#: The OIDC scopes; the rest of a scope string names one resource.
OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})

_TENANT_PATH = re.compile(r"^/(?P<tenant>[^/]+)/(?P<rest>.+)$")
_USER_PATH = re.compile(r"^/v1\.0/users/(?P<id>[^/]+)$")
_MEMBERS_PATH = re.compile(
    r"^/v1\.0/groups/(?P<id>[^/]+)/transitiveMembers/microsoft\.graph\.user$", re.IGNORECASE
)
_USER_PROPERTIES = ("id", "displayName", "mail", "userPrincipalName")


@dataclass
class DirectoryUser:
    id: str
    username: str
    name: str
    mail: str | None
    #: Refresh grants numbered up to this are revoked (``revokeSignInSessions``).
    revoked_up_to: int = 0


@dataclass
class _Authorize:
    """One /authorize request waiting for its sign-in form."""

    client_id: str
    redirect_uri: str
    state: str | None
    nonce: str | None
    scopes: tuple[str, ...]
    code_challenge: str | None
    code_challenge_method: str
    claims: Mapping[str, Any]
    max_age: int | None
    login_hint: str | None
    response_mode: str


@dataclass
class _Code:
    request: _Authorize
    user_id: str
    mfa: bool
    auth_time: dt.datetime
    issued_at: dt.datetime
    redeemed: bool = False


@dataclass
class _RefreshGrant:
    client_id: str
    user_id: str
    mfa: bool
    #: Grants are numbered in the order they are issued (revocation is by number, so a
    #: frozen test clock cannot make a later sign-in look revoked).
    number: int
    issued_at: dt.datetime
    last_used: dt.datetime
    expired: bool = False


@dataclass
class _Canned:
    path: str
    status: int
    body: Any
    method: str | None
    times: int


@dataclass
class _Answer:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _epoch(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def _opaque(prefix: str = "") -> str:
    return prefix + _b64url(secrets.token_bytes(33))


def _wanted_acrs(claims: Mapping[str, Any], token: str) -> list[str]:
    """The ``acrs`` values the ``claims`` request asks for in ``token`` ("id_token" or
    "access_token"), given ``essential: true`` and ``value`` or ``values``."""
    request = claims.get(token)
    if not isinstance(request, dict):
        return []
    acrs = request.get("acrs")
    if not isinstance(acrs, dict) or acrs.get("essential") is not True:
        return []
    values: list[str] = []
    if isinstance(acrs.get("value"), str):
        values.append(acrs["value"])
    if isinstance(acrs.get("values"), list):
        values.extend(v for v in acrs["values"] if isinstance(v, str))
    return values


class FakeEntra:
    """The fake Microsoft identity platform and Graph; see the module docstring."""

    def __init__(
        self,
        *,
        tenant_id: str = TENANT_ID,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        redirect_uris: Iterable[str] = (REDIRECT_URI,),
        now: Callable[[], dt.datetime] | None = None,
        page_size: int = 100,
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = set(redirect_uris)
        #: What "now" is for every token, code and expiry; tests replace it.
        self.clock: Callable[[], dt.datetime] = now or (lambda: dt.datetime.now(dt.UTC))
        #: Graph's page size for transitive members (Graph's own default is 100).
        self.page_size = page_size
        self.users: dict[str, DirectoryUser] = {}
        #: group id -> member ids (users or groups, nested groups are followed).
        self.groups: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path without query)
        self._authorize: dict[str, _Authorize] = {}
        self._codes: dict[str, _Code] = {}
        self._refresh: dict[str, _RefreshGrant] = {}
        self._issued = 0  # refresh grants issued so far
        self._canned: list[_Canned] = []
        self._lock = threading.Lock()
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._cert = self._signing_certificate()
        self.kid = _b64url(self._cert.fingerprint(hashes.SHA1()))  # x5t: a SHA-1 thumbprint
        self._https = HttpsServer(_handler_for(self), "fake-entra-")
        self.ca_file, self.port, self.base_url = (
            self._https.ca_file,
            self._https.port,
            self._https.base_url,
        )
        #: What a client passes to msal as its authority.
        self.authority = f"{self.base_url}/{tenant_id}"
        self.issuer = f"{self.base_url}/{tenant_id}/v2.0"
        #: Graph's root for this fake (``https://graph.microsoft.com/v1.0`` for real).
        self.graph_url = f"{self.base_url}/v1.0"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeEntra:
        self._https.start()
        return self

    def stop(self) -> None:
        self._https.stop()

    def __enter__(self) -> FakeEntra:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls -------------------------------------------------------------------

    def add_user(
        self, object_id: str, username: str, name: str, mail: str | None = None
    ) -> DirectoryUser:
        user = DirectoryUser(object_id, username, name, mail)
        with self._lock:
            self.users[object_id] = user
        return user

    def add_group(self, group_id: str, members: Iterable[str]) -> None:
        """A group whose members are user ids or other groups' ids."""
        with self._lock:
            self.groups[group_id] = list(members)

    def revoke_sign_ins(self, object_id: str) -> None:
        """Graph's ``revokeSignInSessions``: every refresh token issued to the user so
        far stops working (AADSTS50173)."""
        with self._lock:
            self.users[object_id].revoked_up_to = self._issued

    def expire_refresh_tokens(self) -> None:
        """Every refresh token issued so far has expired (AADSTS700082)."""
        with self._lock:
            for grant in self._refresh.values():
                grant.expired = True

    def answer_next(
        self,
        body: Any,
        *,
        path: str,
        status: int = 200,
        method: str | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` requests whose path contains ``path`` get ``body`` (any
        JSON value, or ``bytes`` as they are) with ``status``: for the clients' strict
        reading of what comes back."""
        with self._lock:
            self._canned.append(_Canned(path, status, body, method, times))

    def verify_access_token(
        self, token: str, audience: str = ARM_RESOURCE
    ) -> dict[str, Any] | None:
        """The claims of an access token this fake issued for ``audience``, still valid
        now; None for anything else (for the fake ARM to know who is calling)."""
        claims = self._verify(token)
        if claims is None or claims.get("aud") != audience:
            return None
        if claims.get("iss") != f"https://sts.windows.net/{self.tenant_id}/":
            return None
        now = _epoch(self.clock())
        if not (claims.get("nbf", 0) <= now < claims.get("exp", 0)):
            return None
        return claims

    def sign_in(self, auth_uri: str, username: str, *, mfa: bool = False) -> Callback:
        """Do what a person does on the sign-in page (open it, type ``username``, tick
        "Use multi-factor authentication" or not, press Sign in), over HTTPS; where the
        browser is then sent, with what (the code and state, or an error)."""
        parts = urlsplit(auth_uri)
        target = urlunsplit(("", "", parts.path, parts.query, ""))
        status, headers, page = self._http("GET", target)
        if status != 200 or 'name="ctx"' not in page:  # an error, or prompt=none
            return _callback(status, headers, page)
        match = re.search(r'name="ctx" value="([^"]+)"', page)
        assert match is not None
        form = {"ctx": html.unescape(match.group(1)), "username": username, "action": "sign-in"}
        if mfa:
            form["mfa"] = "on"
        status, headers, page = self._http("POST", f"/{self.tenant_id}/login", urlencode(form))
        return _callback(status, headers, page)

    # -- HTTP ----------------------------------------------------------------------------

    def _http(
        self, method: str, target: str, body: str | None = None
    ) -> tuple[int, dict[str, str], str]:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context)
        try:
            headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
            return response.status, {k.lower(): v for k, v in response.getheaders()}, text
        finally:
            connection.close()

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> _Answer:
        """One request; ``headers`` with lower-case names."""
        parts = urlsplit(target)
        path = parts.path
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self._lock:
            self.requests.append((method, path))
            canned = self._take_canned(method, path)
        if canned is not None:
            data = canned.body if isinstance(canned.body, bytes) else json.dumps(canned.body)
            return _Answer(canned.status, data.encode() if isinstance(data, str) else data)
        if path.startswith("/v1.0/"):
            return self._graph(method, path, query, headers)
        match = _TENANT_PATH.match(path)
        if match is None or match["tenant"] not in (self.tenant_id, TENANT_DOMAIN):
            return _Answer(404, b'{"error":"invalid_tenant"}')
        rest = match["rest"]
        if method == "GET" and rest == "v2.0/.well-known/openid-configuration":
            return self._json(200, self.openid_configuration())
        if method == "GET" and rest == "discovery/v2.0/keys":
            return self._json(200, self.jwks())
        if method == "GET" and rest == "oauth2/v2.0/authorize":
            return self._authorize_page(query)
        if method == "POST" and rest == "login":
            return self._login(_form(body))
        if method == "POST" and rest == "oauth2/v2.0/token":
            return self._token(_form(body), headers)
        return _Answer(404, b"")

    def _take_canned(self, method: str, path: str) -> _Canned | None:
        for canned in self._canned:
            if canned.path in path and canned.method in (None, method):
                canned.times -= 1
                if canned.times <= 0:
                    self._canned.remove(canned)
                return canned
        return None

    @staticmethod
    def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Answer:
        return _Answer(status, json.dumps(payload).encode(), headers=headers or {})

    # -- discovery -----------------------------------------------------------------------

    def openid_configuration(self) -> dict[str, Any]:
        """The tenant's v2.0 discovery document, in Entra's field order and values."""
        base = f"{self.base_url}/{self.tenant_id}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": self.issuer,
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "cloud_instance_name",
                "cloud_instance_host_name",
                "cloud_graph_host_name",
                "msgraph_host",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "acr",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "ver",
                "at_hash",
                "c_hash",
                "email",
            ],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "WW",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        der = self._cert.public_bytes(serialization.Encoding.DER)
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "kid": self.kid,
                    "x5t": self.kid,
                    "n": _b64url(n),
                    "e": _b64url(e),
                    "x5c": [base64.b64encode(der).decode("ascii")],
                    "issuer": self.issuer,
                }
            ]
        }

    def _signing_certificate(self) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accounts.accesscontrol")])
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .sign(self._key, hashes.SHA256())
        )

    # -- tokens --------------------------------------------------------------------------

    def _sign(self, header: dict[str, Any], payload: dict[str, Any]) -> str:
        head = _b64url(json.dumps(header, separators=(",", ":")).encode())
        body = _b64url(json.dumps(payload, separators=(",", ":")).encode())
        signing_input = f"{head}.{body}".encode("ascii")
        signature = self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{head}.{body}.{_b64url(signature)}"

    def _verify(self, token: str) -> dict[str, Any] | None:
        try:
            head, body, signature = token.split(".")
            header = json.loads(_b64url_decode(head))
            if header.get("alg") != "RS256" or header.get("kid") != self.kid:
                return None
            self._key.public_key().verify(
                _b64url_decode(signature),
                f"{head}.{body}".encode("ascii"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
            claims = json.loads(_b64url_decode(body))
        except Exception:
            return None
        return claims if isinstance(claims, dict) else None

    def _subject(self, user_id: str) -> str:
        """``sub``: pairwise, the same for one user and one application."""
        digest = hashlib.sha256(f"{self.client_id}:{user_id}".encode()).digest()
        return _b64url(digest)[:43]

    def _id_token(
        self,
        user: DirectoryUser,
        now: dt.datetime,
        *,
        nonce: str | None,
        acrs: list[str],
        auth_time: dt.datetime | None,
    ) -> str:
        payload: dict[str, Any] = {
            "aud": self.client_id,
            "iss": self.issuer,
            "iat": _epoch(now),
            "nbf": _epoch(now),
            "exp": _epoch(now + dt.timedelta(hours=1)),
        }
        if acrs:
            payload["acrs"] = acrs
        payload["aio"] = _opaque()
        if auth_time is not None:
            payload["auth_time"] = _epoch(auth_time)
        payload["name"] = user.name
        if nonce is not None:
            payload["nonce"] = nonce
        payload.update(
            {
                "oid": user.id,
                "preferred_username": user.username,
                "rh": _opaque("1.A"),
                "sub": self._subject(user.id),
                "tid": self.tenant_id,
                "uti": _opaque()[:22],
                "ver": "2.0",
            }
        )
        return self._sign({"typ": "JWT", "alg": "RS256", "kid": self.kid}, payload)

    def _user_access_token(
        self,
        user: DirectoryUser,
        now: dt.datetime,
        resource: str,
        scp: str,
        *,
        mfa: bool,
        acrs: list[str],
    ) -> str:
        payload: dict[str, Any] = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": _epoch(now),
            "nbf": _epoch(now),
            "exp": _epoch(now + ACCESS_TOKEN_LIFETIME),
            "acr": "1",
        }
        if acrs:
            payload["acrs"] = acrs
        payload.update(
            {
                "aio": _opaque(),
                "amr": ["pwd", "mfa"] if mfa else ["pwd"],
                "appid": self.client_id,
                "appidacr": "1",
                "name": user.name,
                "oid": user.id,
                "rh": _opaque("1.A"),
                "scp": scp,
                "sub": self._subject(user.id),
                "tid": self.tenant_id,
                "unique_name": user.username,
                "upn": user.username,
                "uti": _opaque()[:22],
                "ver": "1.0",
            }
        )
        header = {"typ": "JWT", "alg": "RS256", "x5t": self.kid, "kid": self.kid}
        return self._sign(header, payload)

    def _app_access_token(self, now: dt.datetime, resource: str) -> str:
        app_object = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{self.client_id}"))
        payload = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": _epoch(now),
            "nbf": _epoch(now),
            "exp": _epoch(now + ACCESS_TOKEN_LIFETIME),
            "aio": _opaque(),
            "app_displayname": "jitaccess",
            "appid": self.client_id,
            "appidacr": "1",
            "idp": f"https://sts.windows.net/{self.tenant_id}/",
            "idtyp": "app",
            "oid": app_object,
            "rh": _opaque("1.A"),
            "roles": ["User.Read.All", "GroupMember.Read.All"],
            "sub": app_object,
            "tid": self.tenant_id,
            "uti": _opaque()[:22],
            "ver": "1.0",
        }
        header = {"typ": "JWT", "alg": "RS256", "x5t": self.kid, "kid": self.kid}
        return self._sign(header, payload)

    # -- /authorize and the sign-in page ---------------------------------------------------

    def _error_page(self, status: int, code: str, message: str) -> _Answer:
        page = (
            "<!doctype html><html><head><title>Sign in to your account</title></head><body>"
            f"<h1>Sorry, but we're having trouble signing you in.</h1><p id='error'>{code}: "
            f"{html.escape(message)}</p></body></html>"
        )
        return _Answer(status, page.encode(), "text/html; charset=utf-8")

    def _redirect(self, redirect_uri: str, mode: str, params: Mapping[str, str | None]) -> _Answer:
        """The answer to the client, as ``response_mode`` says: a redirect with the
        parameters in the query (or the fragment), or Entra's self-submitting form."""
        fields = {k: v for k, v in params.items() if v is not None}
        if mode == "form_post":
            inputs = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}" />'
                for k, v in fields.items()
            )
            page = (
                "<html><head><title>Working...</title></head><body>"
                f'<form method="POST" name="hiddenform" action="{html.escape(redirect_uri)}">'
                f"{inputs}<noscript><p>Script is disabled. Click Submit to continue.</p>"
                '<input type="submit" value="Submit" /></noscript></form>'
                '<script language="javascript">document.forms[0].submit();</script>'
                "</body></html>"
            )
            return _Answer(200, page.encode(), "text/html; charset=utf-8")
        separator = "#" if mode == "fragment" else ("&" if "?" in redirect_uri else "?")
        location = f"{redirect_uri}{separator}{urlencode(fields)}"
        return _Answer(302, b"", "text/html", {"Location": location})

    def _redirect_error(
        self,
        redirect_uri: str,
        mode: str,
        state: str | None,
        error: str,
        code: str,
        message: str,
    ) -> _Answer:
        description = (
            f"{code}: {message}\r\nTrace ID: {uuid.uuid4()}\r\nCorrelation ID: "
            + str(uuid.uuid4())
            + f"\r\nTimestamp: {self.clock():%Y-%m-%d %H:%M:%SZ}"
        )
        return self._redirect(
            redirect_uri,
            mode,
            {"error": error, "error_description": description, "state": state},
        )

    def _authorize_page(self, query: Mapping[str, str]) -> _Answer:
        client_id = query.get("client_id", "")
        redirect_uri = query.get("redirect_uri", "")
        state = query.get("state")
        if client_id != self.client_id:
            return self._error_page(
                400,
                "AADSTS700016",
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{TENANT_DOMAIN}'.",
            )
        if redirect_uri not in self.redirect_uris:
            return self._error_page(
                400,
                "AADSTS50011",
                f"The redirect URI '{redirect_uri}' specified in the request does not match "
                f"the redirect URIs configured for the application '{client_id}'.",
            )
        mode = query.get("response_mode", "query")
        if mode not in ("query", "fragment", "form_post"):
            mode = "query"
        if query.get("response_type") != "code":
            return self._redirect_error(
                redirect_uri,
                mode,
                state,
                "unsupported_response_type",
                "AADSTS700054",
                "response_type 'id_token' is not enabled for the application.",
            )
        scopes = tuple(query.get("scope", "").split())
        method = query.get("code_challenge_method", "plain")
        claims: Mapping[str, Any] = {}
        if query.get("claims"):
            try:
                parsed = json.loads(query["claims"])
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                return self._redirect_error(
                    redirect_uri,
                    mode,
                    state,
                    "invalid_request",
                    "AADSTS90014",
                    "The claims parameter is not valid JSON.",
                )
            claims = parsed
        max_age: int | None = None
        if "max_age" in query:
            try:
                max_age = int(query["max_age"])
            except ValueError:
                return self._redirect_error(
                    redirect_uri,
                    mode,
                    state,
                    "invalid_request",
                    "AADSTS90014",
                    "max_age must be a number.",
                )
        if method not in ("S256", "plain") or "openid" not in scopes:
            return self._redirect_error(
                redirect_uri,
                mode,
                state,
                "invalid_request",
                "AADSTS9002313",
                "Invalid request. Request is malformed or invalid.",
            )
        if query.get("prompt") == "none":  # no session cookie here: nobody is signed in
            return self._redirect_error(
                redirect_uri,
                mode,
                state,
                "login_required",
                "AADSTS50058",
                "A silent sign-in request was sent but no user is signed in.",
            )
        request = _Authorize(
            client_id=client_id,
            redirect_uri=redirect_uri,
            state=state,
            nonce=query.get("nonce"),
            scopes=scopes,
            code_challenge=query.get("code_challenge"),
            code_challenge_method=method,
            claims=claims,
            max_age=max_age,
            login_hint=query.get("login_hint"),
            response_mode=mode,
        )
        ctx = _opaque()
        with self._lock:
            self._authorize[ctx] = request
            usernames = sorted(u.username for u in self.users.values())
        return _Answer(200, self._sign_in_page(ctx, request, usernames).encode(), "text/html")

    def _sign_in_page(
        self, ctx: str, request: _Authorize, usernames: list[str], error: str = ""
    ) -> str:
        options = "".join(f'<option value="{html.escape(u)}"></option>' for u in usernames)
        listed = "".join(f"<li><code>{html.escape(u)}</code></li>" for u in usernames)
        wanted = _wanted_acrs(request.claims, "id_token") + _wanted_acrs(
            request.claims, "access_token"
        )
        step_up = (
            f"<p id='step-up'>This application asks for the authentication context "
            f"{html.escape(', '.join(wanted))}: sign in with multi-factor authentication.</p>"
            if wanted
            else ""
        )
        shown_error = f"<p id='error' role='alert'>{html.escape(error)}</p>" if error else ""
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>Sign in to your account</title>
<style>body{{font-family:sans-serif;max-width:28rem;margin:3rem auto}}
label{{display:block;margin:.6rem 0}}input[type=text]{{width:100%;padding:.4rem}}</style>
</head><body>
<h1>Sign in</h1>
<p>Fake Microsoft Entra ID, tenant <code>{html.escape(TENANT_DOMAIN)}</code>.</p>
{step_up}{shown_error}
<form method="post" action="/{self.tenant_id}/login">
<input type="hidden" name="ctx" value="{html.escape(ctx)}">
<label for="username">Email, phone, or Skype</label>
<input type="text" id="username" name="username" list="directory" autocomplete="off"
 value="{html.escape(request.login_hint or "")}">
<datalist id="directory">{options}</datalist>
<label><input type="checkbox" id="mfa" name="mfa"> Use multi-factor authentication</label>
<button type="submit" id="sign-in" name="action" value="sign-in">Sign in</button>
<button type="submit" id="cancel" name="action" value="cancel">Cancel</button>
</form>
<p>People in this directory:</p><ul>{listed}</ul>
</body></html>"""

    def _login(self, form: Mapping[str, str]) -> _Answer:
        ctx = form.get("ctx", "")
        with self._lock:
            request = self._authorize.get(ctx)
            user = next(
                (
                    u
                    for u in self.users.values()
                    if u.username.lower() == form.get("username", "").strip().lower()
                ),
                None,
            )
            usernames = sorted(u.username for u in self.users.values())
        if request is None:
            return self._error_page(
                400, "AADSTS90014", "The sign-in session is unknown or has already been used."
            )
        if form.get("action") == "cancel":
            with self._lock:
                self._authorize.pop(ctx, None)
            return self._redirect_error(
                request.redirect_uri,
                request.response_mode,
                request.state,
                "access_denied",
                "AADSTS65004",
                "User declined to consent to access the app.",
            )
        if user is None:
            message = (
                f"AADSTS50034: The user account {form.get('username', '')} does not exist in "
                f"the {TENANT_DOMAIN} directory."
            )
            page = self._sign_in_page(ctx, request, usernames, message)
            return _Answer(200, page.encode(), "text/html")
        now = self.clock()
        code = _opaque("1.A")
        with self._lock:
            self._authorize.pop(ctx, None)
            self._codes[code] = _Code(request, user.id, "mfa" in form, now, now)
        return self._redirect(
            request.redirect_uri, request.response_mode, {"code": code, "state": request.state}
        )

    # -- /token ----------------------------------------------------------------------------

    def _token_error(self, status: int, error: str, code: int, message: str) -> _Answer:
        now = self.clock()
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = f"{now:%Y-%m-%d %H:%M:%SZ}"
        return self._json(
            status,
            {
                "error": error,
                "error_description": f"AADSTS{code}: {message} Trace ID: {trace} "
                f"Correlation ID: {correlation} Timestamp: {stamp}",
                "error_codes": [code],
                "timestamp": stamp,
                "trace_id": trace,
                "correlation_id": correlation,
                "error_uri": f"{self.base_url}/error?code={code}",
            },
        )

    def _token(self, form: Mapping[str, str], headers: Mapping[str, str]) -> _Answer:
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        basic = headers.get("authorization", "")
        if basic.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", ""
            client_id = client_id or unquote_plus(user)
            secret = secret or unquote_plus(password)
        if client_id != self.client_id:
            return self._token_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{TENANT_DOMAIN}'.",
            )
        if secret != self.client_secret:
            return self._token_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request "
                "is the client secret value, not the client secret ID.",
            )
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return self._redeem_code(form)
        if grant == "refresh_token":
            return self._redeem_refresh_token(form)
        if grant == "client_credentials":
            scope = form.get("scope", "")
            if not scope.endswith("/.default") or " " in scope:
                return self._token_error(
                    400,
                    "invalid_scope",
                    1002012,
                    f"The provided value for scope {scope} is not valid. Client credential "
                    "flows must have a scope value with /.default suffixed to the resource "
                    "identifier (application ID URI).",
                )
            now = self.clock()
            return self._json(
                200,
                {
                    "token_type": "Bearer",
                    "expires_in": int(ACCESS_TOKEN_LIFETIME.total_seconds()),
                    "ext_expires_in": int(ACCESS_TOKEN_LIFETIME.total_seconds()),
                    "access_token": self._app_access_token(now, scope.removesuffix("/.default")),
                },
            )
        return self._token_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        )

    def _resource_scopes(self, scope: str) -> tuple[str, list[str]] | None:
        """The one resource a token-request ``scope`` names, and its scopes in full."""
        wanted = [s for s in scope.split() if s not in OIDC_SCOPES]
        resources = {s.rsplit("/", 1)[0] for s in wanted if "/" in s}
        if len(resources) != 1 or any("/" not in s for s in wanted):
            return None
        return resources.pop(), wanted

    def _redeem_code(self, form: Mapping[str, str]) -> _Answer:
        now = self.clock()
        with self._lock:
            code = self._codes.get(form.get("code", ""))
            if code is None:
                return self._token_error(
                    400,
                    "invalid_grant",
                    9002313,
                    "Invalid request. Request is malformed or invalid.",
                )
            if code.redeemed:
                return self._token_error(
                    400,
                    "invalid_grant",
                    54005,
                    "OAuth2 Authorization code was already redeemed, please retry with a new "
                    "valid code or use an existing refresh token.",
                )
            if now - code.issued_at > CODE_LIFETIME:
                return self._token_error(
                    400,
                    "invalid_grant",
                    70008,
                    "The provided authorization code or refresh token has expired due to "
                    "inactivity. Send a new interactive authorization request for this user "
                    "and resource.",
                )
            request = code.request
            if form.get("redirect_uri") != request.redirect_uri:
                return self._token_error(
                    400,
                    "invalid_grant",
                    500112,
                    "The reply address does not match the reply address provided when "
                    "requesting Authorization code.",
                )
            if request.code_challenge is not None:
                verifier = form.get("code_verifier", "")
                if request.code_challenge_method == "S256":
                    computed = _b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
                else:
                    computed = verifier
                if not verifier or not secrets.compare_digest(computed, request.code_challenge):
                    return self._token_error(
                        400,
                        "invalid_grant",
                        501481,
                        "The Code_Verifier does not match the code_challenge supplied in the "
                        "authorization request.",
                    )
            code.redeemed = True
            user = self.users.get(code.user_id)
        if user is None:
            return self._token_error(
                400, "invalid_grant", 50034, "The user account does not exist in the directory."
            )
        return self._issue(
            user,
            now,
            form.get("scope") or " ".join(request.scopes),
            mfa=code.mfa,
            claims=request.claims,
            nonce=request.nonce,
            auth_time=code.auth_time if request.max_age is not None else None,
            client_info=form.get("client_info") == "1",
        )

    def _redeem_refresh_token(self, form: Mapping[str, str]) -> _Answer:
        now = self.clock()
        with self._lock:
            grant = self._refresh.get(form.get("refresh_token", ""))
            user = self.users.get(grant.user_id) if grant is not None else None
            if grant is None or user is None:
                return self._token_error(
                    400,
                    "invalid_grant",
                    9002313,
                    "Invalid request. Request is malformed or invalid.",
                )
            if grant.number <= user.revoked_up_to:
                return self._token_error(
                    400,
                    "invalid_grant",
                    50173,
                    "The provided grant has expired due to it being revoked, a fresh auth "
                    "token is needed. The user might have changed or reset their password.",
                )
            if grant.expired or now - grant.last_used > REFRESH_INACTIVITY:
                issued = f"{grant.issued_at:%Y-%m-%dT%H:%M:%S}Z"
                return self._token_error(
                    400,
                    "invalid_grant",
                    700082,
                    f"The refresh token has expired due to inactivity. The token was issued "
                    f"on {issued} and was inactive for 90.00:00:00.",
                )
            grant.last_used = now
        claims: Mapping[str, Any] = {}
        if form.get("claims"):
            try:
                parsed = json.loads(form["claims"])
            except ValueError:
                parsed = None
            claims = parsed if isinstance(parsed, dict) else {}
        return self._issue(
            user,
            now,
            form.get("scope", ""),
            mfa=grant.mfa,
            claims=claims,
            nonce=None,
            auth_time=None,
            client_info=form.get("client_info") == "1",
        )

    def _issue(
        self,
        user: DirectoryUser,
        now: dt.datetime,
        scope: str,
        *,
        mfa: bool,
        claims: Mapping[str, Any],
        nonce: str | None,
        auth_time: dt.datetime | None,
        client_info: bool,
    ) -> _Answer:
        resource = self._resource_scopes(scope)
        if resource is None:
            return self._token_error(
                400,
                "invalid_scope",
                70011,
                f"The provided value for the input parameter 'scope' is not valid. The scope "
                f"{scope} is not valid.",
            )
        audience, scopes = resource
        scp = " ".join(s.rsplit("/", 1)[1] for s in scopes)
        id_acrs = _wanted_acrs(claims, "id_token") if mfa else []
        access_acrs = _wanted_acrs(claims, "access_token") if mfa else []
        refresh_token = _opaque("1.A")
        with self._lock:
            self._issued += 1
            self._refresh[refresh_token] = _RefreshGrant(
                self.client_id, user.id, mfa, self._issued, now, now
            )
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(scopes),
            "expires_in": int(ACCESS_TOKEN_LIFETIME.total_seconds()),
            "ext_expires_in": int(ACCESS_TOKEN_LIFETIME.total_seconds()),
            "access_token": self._user_access_token(
                user, now, audience, scp, mfa=mfa, acrs=access_acrs
            ),
        }
        if "offline_access" in scope.split():
            answer["refresh_token"] = refresh_token
        if "openid" in scope.split():
            answer["id_token"] = self._id_token(
                user, now, nonce=nonce, acrs=id_acrs, auth_time=auth_time
            )
        if client_info:
            info = json.dumps({"uid": user.id, "utid": self.tenant_id}).encode()
            answer["client_info"] = _b64url(info)
        return self._json(
            200, answer, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}
        )

    # -- Graph -----------------------------------------------------------------------------

    def _graph_error(self, status: int, code: str, message: str) -> _Answer:
        now = self.clock()
        return self._json(
            status,
            {
                "error": {
                    "code": code,
                    "message": message,
                    "innerError": {
                        "date": now.strftime("%Y-%m-%dT%H:%M:%S"),
                        "request-id": str(uuid.uuid4()),
                        "client-request-id": str(uuid.uuid4()),
                    },
                }
            },
        )

    def _graph_caller_ok(self, headers: Mapping[str, str]) -> bool:
        authorization = headers.get("authorization", "")
        if not authorization.startswith("Bearer "):
            return False
        token = authorization[len("Bearer ") :]
        if token == SERVICE_TOKEN:
            return True
        return self.verify_access_token(token, audience=GRAPH_RESOURCE) is not None

    def _graph(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> _Answer:
        if not headers.get("authorization"):
            return self._graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
        if not self._graph_caller_ok(headers):
            return self._graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            )
        if method != "GET":
            return self._graph_error(405, "Request_BadRequest", "Method not allowed.")
        select = [s for s in query.get("$select", "").split(",") if s]
        unknown = [s for s in select if s not in _USER_PROPERTIES]
        if unknown:
            return self._graph_error(
                400,
                "Request_BadRequest",
                f"Could not find a property named '{unknown[0]}' on type 'microsoft.graph.user'.",
            )
        match = _USER_PATH.match(path)
        if match is not None:
            with self._lock:
                user = self.users.get(match["id"]) or next(
                    (u for u in self.users.values() if u.username.lower() == match["id"].lower()),
                    None,
                )
            if user is None:
                return self._not_found(match["id"])
            fields = select or list(_USER_PROPERTIES)
            body: dict[str, Any] = {
                "@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users"
                f"({','.join(select)})/$entity"
                if select
                else "https://graph.microsoft.com/v1.0/$metadata#users/$entity"
            }
            values = {
                "id": user.id,
                "displayName": user.name,
                "mail": user.mail,
                "userPrincipalName": user.username,
            }
            body.update({f: values[f] for f in fields})
            return self._json(200, body)
        match = _MEMBERS_PATH.match(path)
        if match is not None:
            return self._members(match["id"], query, select)
        return self._graph_error(
            400, "BadRequest", f"Resource not found for the segment '{path.rsplit('/', 1)[-1]}'."
        )

    def _not_found(self, object_id: str) -> _Answer:
        return self._graph_error(
            404,
            "Request_ResourceNotFound",
            f"Resource '{object_id}' does not exist or one of its queried reference-property "
            "objects are not present.",
        )

    def _transitive_users(self, group_id: str) -> list[str]:
        seen_groups: set[str] = set()
        users: list[str] = []
        pending = [group_id]
        while pending:
            current = pending.pop(0)
            if current in seen_groups:
                continue
            seen_groups.add(current)
            for member in self.groups.get(current, []):
                if member in self.groups:
                    pending.append(member)
                elif member in self.users and member not in users:
                    users.append(member)
        return users

    def _members(self, group_id: str, query: Mapping[str, str], select: list[str]) -> _Answer:
        with self._lock:
            if group_id not in self.groups:
                return self._not_found(group_id)
            members = [self.users[m] for m in self._transitive_users(group_id)]
        try:
            top = int(query.get("$top", self.page_size))
            skip = int(query.get("$skiptoken", "0") or 0)
        except ValueError:
            return self._graph_error(400, "Request_BadRequest", "Invalid $top or $skiptoken.")
        if not 1 <= top <= 999:
            return self._graph_error(
                400,
                "Request_BadRequest",
                f"Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive.",
            )
        size = min(top, self.page_size)
        page = members[skip : skip + size]
        fields = select or list(_USER_PROPERTIES)
        context = "https://graph.microsoft.com/v1.0/$metadata#users" + (
            f"({','.join(select)})" if select else ""
        )
        body: dict[str, Any] = {"@odata.context": context}
        if query.get("$count") == "true":
            body["@odata.count"] = len(members)
        if skip + size < len(members):
            following = dict(query)
            following["$skiptoken"] = str(skip + size)
            body["@odata.nextLink"] = (
                f"{self.graph_url}/groups/{group_id}/transitiveMembers/microsoft.graph.user?"
                + urlencode(following)
            )
        values = [
            {
                "id": u.id,
                "displayName": u.name,
                "mail": u.mail,
                "userPrincipalName": u.username,
            }
            for u in page
        ]
        body["value"] = [{f: v[f] for f in fields} for v in values]
        return self._json(200, body)


@dataclass(frozen=True)
class Callback:
    """Where the sign-in page sends the browser: ``method`` GET (``response_mode=query``)
    or POST (``form_post``, Entra's self-submitting form) to ``url`` (the redirect URI as
    registered), with ``params`` (the query, or the form's fields): ``code`` and
    ``state``, or ``error``, ``error_description`` and ``state``."""

    method: str
    url: str
    params: dict[str, str]

    @property
    def location(self) -> str:
        """The URL with the parameters in its query (what a GET callback receives)."""
        return f"{self.url}?{urlencode(self.params)}"


def _callback(status: int, headers: Mapping[str, str], page: str) -> Callback:
    if status == 302:
        parts = urlsplit(headers["location"])
        params = {k: v[0] for k, v in parse_qs(parts.fragment or parts.query).items()}
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return Callback("GET", url, params)
    form = re.search(r'<form method="POST" name="hiddenform" action="([^"]+)">', page)
    if status == 200 and form is not None:
        fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)" />', page)
        return Callback(
            "POST",
            html.unescape(form.group(1)),
            {html.unescape(k): html.unescape(v) for k, v in fields},
        )
    shown = re.search(r"id='error'[^>]*>([^<]*)<", page)
    detail = html.unescape(shown.group(1)) if shown else page[:300]
    raise AssertionError(f"the sign-in page answered {status}: {detail}")


def _form(body: bytes) -> dict[str, str]:
    return {
        k: v[0]
        for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()
    }


def _handler_for(entra: FakeEntra) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = entra.handle(self.command, self.path, headers, body)
            self.send_response(answer.status)
            if answer.body:
                self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            for key, value in answer.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if answer.body:
                self.wfile.write(answer.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
