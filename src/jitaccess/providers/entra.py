"""Sign in with Microsoft: the authorization code flow with PKCE through ``msal``
(:class:`~jitaccess.domain.native.SignInPort`).

jitaccess is a confidential client (a web app with a client secret). ``start`` makes the
URL to send the person to and the flow to keep until the callback; ``finish`` redeems the
code the callback brings; ``refresh`` trades a stored refresh token for a new access
token (for ARM, as the person) and a new refresh token. msal adds PKCE, ``state`` and
``nonce`` and checks the last two; since msal 1.38 it no longer validates the ID token
(``msal/oauth2cli/oidc.py``), so this module checks what it reads: the ID token came
straight from the token endpoint over verified TLS, which OIDC Core 3.1.3.7 (6) accepts
in place of the signature, and its ``iss``, ``aud``, ``tid``, ``exp`` and the claims
jitaccess uses must be exactly as documented (``id-token-claims-reference.md``,
``optional-claims-reference.md`` for ``acrs`` and ``auth_time``).

Step-up (``require_mfa``): v2.0 ID tokens carry no ``amr``. ``start(claims_acrs="c1")``
sends the claims request ``{"id_token":{"acrs":{"essential":true,"value":"c1"}}}`` (the
form of ``claims-challenge.md`` and of Microsoft's own step-up sample,
Azure-Samples/ms-identity-msal-java-samples ``sign-in-auth-context``) with
``prompt=login``; Entra puts ``"acrs": ["c1"]`` in the ID token only when the sign-in
satisfied the Conditional Access policies on that authentication context
(``developer-guide-conditional-access-authentication-context.md``). ``max_age`` makes the
ID token carry ``auth_time`` (msal refuses one that lacks it or is too old).

Every failure (Entra unreachable or slow, an error answer, an answer of the wrong shape,
a callback that does not match its flow) is :class:`ExternalLookupFailed`, whose message
says which call and why and never carries a token, a code or the secret; a refresh token
Entra no longer honours (``invalid_grant``, ``interaction_required``) is
:class:`SignInLapsed`.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import msal
import requests

from jitaccess.answers import rejected
from jitaccess.domain.native import (
    ExternalLookupFailed,
    SignedInUser,
    SignInLapsed,
    UserTokens,
)

log = logging.getLogger(__name__)

SERVICE = "entra"
#: How each call is named in the rejected-answers metric.
_CALLS = {"finishing the sign-in": "redeemCode", "refreshing a sign-in": "redeemRefreshToken"}

#: The delegated permission jitaccess asks for: Azure Resource Manager, as the person.
ARM_USER_SCOPE = "https://management.azure.com/user_impersonation"
#: Entra's public cloud; any other authority host is a test or sovereign cloud and skips
#: msal's instance discovery (which asks login.microsoftonline.com about the host).
PUBLIC_AUTHORITY_HOST = "https://login.microsoftonline.com"
#: The errors after which a refresh token is of no more use: the person signs in again.
_LAPSED = frozenset({"invalid_grant", "interaction_required"})
#: Clock skew allowed on ``exp`` (msal uses the same two minutes for ``auth_time``).
_SKEW = timedelta(minutes=2)


class _NoTokenCache(msal.TokenCache):  # type: ignore[misc]
    """jitaccess keeps the one refresh token it needs itself, encrypted; msal's in-memory
    cache would only hold every user's tokens for the life of the process."""

    def add(self, event: Any, now: Any = None) -> None:
        return None


class EntraSignIn:
    """:class:`~jitaccess.domain.native.SignInPort` for one tenant and one app
    registration. ``authority_host`` is Entra's public cloud unless a test or the
    sandbox points it at a fake (``verify``: the CA file that fake's TLS uses).

    ``response_mode`` is ``form_post`` (what msal and RFC 9700 4.3.1 recommend: the code
    never sits in a URL): Entra's page POSTs ``code`` and ``state`` (or ``error`` and
    ``error_description``) as a form to the redirect URI, and ``finish`` takes those
    fields. ``query`` sends them in the query string of a GET instead."""

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        authority_host: str = PUBLIC_AUTHORITY_HOST,
        verify: bool | str = True,
        timeout: float = 10.0,
        response_mode: str = "form_post",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        self._client_secret = client_secret
        self._verify = verify
        self._timeout = timeout
        self._response_mode = response_mode
        self._now = now
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the secret
        return f"EntraSignIn(authority={self.authority!r}, client_id={self.client_id!r})"

    # -- the port ------------------------------------------------------------------------

    def start(
        self, state: str, *, claims_acrs: str | None = None, max_age: int | None = None
    ) -> tuple[str, dict[str, object]]:
        claims = None
        if claims_acrs is not None:
            claims = json.dumps(
                {"id_token": {"acrs": {"essential": True, "value": claims_acrs}}},
                separators=(",", ":"),
            )
        step_up = claims_acrs is not None or max_age is not None
        app = self._application("starting a sign-in")
        try:
            flow = app.initiate_auth_code_flow(
                scopes=[ARM_USER_SCOPE],
                redirect_uri=self.redirect_uri,
                state=state,
                prompt="login" if step_up else None,
                claims_challenge=claims,
                max_age=max_age,
                response_mode=self._response_mode,
            )
        except Exception as exc:
            raise self._failed("starting a sign-in", type(exc).__name__) from None
        auth_uri = flow.get("auth_uri") if isinstance(flow, dict) else None
        if not isinstance(auth_uri, str):
            raise self._failed("starting a sign-in", "msal made no authorization URL")
        return auth_uri, dict(flow)

    def finish(self, flow: Mapping[str, object], query: Mapping[str, str]) -> UserTokens:
        call = "finishing the sign-in"
        auth_response = {k: v for k, v in query.items() if isinstance(v, str)}
        if auth_response.get("error"):
            # Entra sent the person back with an error (they cancelled, or were refused).
            raise self._failed(call, f"Entra answered {_code(auth_response)}")
        state = flow.get("state")
        if not isinstance(state, str) or not state or auth_response.get("state") != state:
            # msal checks this too; checked here first so that a ValueError from msal
            # below can only be about Entra's answer.
            raise self._failed(call, "the answer does not belong to this sign-in (state)")
        app = self._application(call)
        flow_copy = dict(flow)  # msal pops from it
        try:
            result = app.acquire_token_by_auth_code_flow(flow_copy, auth_response)
        except RuntimeError:  # msal: the nonce, or auth_time against max_age
            raise self._failed(
                call, "the ID token does not answer this sign-in (nonce or auth_time)"
            ) from None
        except requests.RequestException as exc:  # unreachable, too slow, or a 5xx
            raise self._failed(call, f"Entra did not answer ({type(exc).__name__})") from None
        except Exception as exc:  # msal could not read what came back
            raise self._reject(
                call, f"an answer msal could not read ({type(exc).__name__})"
            ) from None
        return self._tokens(call, result, lapsed_on_refusal=False)

    def refresh(self, refresh_token: str) -> UserTokens:
        call = "refreshing a sign-in"
        app = self._application(call)
        try:
            result = app.acquire_token_by_refresh_token(refresh_token, scopes=[ARM_USER_SCOPE])
        except requests.RequestException as exc:  # unreachable, too slow, or a 5xx
            raise self._failed(call, f"Entra did not answer ({type(exc).__name__})") from None
        except Exception as exc:  # msal could not read what came back
            raise self._reject(
                call, f"an answer msal could not read ({type(exc).__name__})"
            ) from None
        return self._tokens(call, result, lapsed_on_refusal=True)

    # -- helpers -------------------------------------------------------------------------

    def _application(self, call: str) -> msal.ConfidentialClientApplication:
        """The msal application, made on first use (it reads the tenant's discovery
        document then) and kept."""
        with self._lock:
            if self._app is not None:
                return self._app
            public = self.authority.lower().startswith(PUBLIC_AUTHORITY_HOST + "/")
            # Our own session, so every call carries ``verify`` and ``timeout`` itself:
            # a session-wide ``verify`` loses to REQUESTS_CA_BUNDLE in the environment.
            session = requests.Session()
            session.request = functools.partial(  # type: ignore[method-assign]
                session.request, timeout=self._timeout, verify=self._verify
            )
            try:
                self._app = msal.ConfidentialClientApplication(
                    self.client_id,
                    client_credential=self._client_secret,
                    authority=self.authority,
                    instance_discovery=None if public else False,
                    http_client=session,
                    token_cache=_NoTokenCache(),
                )
            except Exception as exc:
                raise self._failed(
                    call,
                    f"the tenant's OpenID configuration could not be read ({type(exc).__name__})",
                ) from None
            return self._app

    def _issuer(self) -> str:
        """The ``iss`` of this tenant's v2.0 ID tokens: ``{authority}/v2.0``
        (``https://login.microsoftonline.com/{tid}/v2.0``)."""
        return f"{self.authority}/v2.0"

    def _failed(self, call: str, reason: str) -> ExternalLookupFailed:
        log.warning("Microsoft sign-in: %s failed: %s", call, reason)
        return ExternalLookupFailed(f"Microsoft sign-in: {call} failed: {reason}")

    def _reject(self, call: str, reason: str) -> ExternalLookupFailed:
        """An answer of the wrong shape: logged and counted like every service's
        (``jitaccess_external_answer_rejected_total{service="entra"}``)."""
        rejected(SERVICE, _CALLS.get(call, call), reason)
        return ExternalLookupFailed(f"Microsoft sign-in: {call} failed: {reason}")

    def _tokens(self, call: str, result: Any, *, lapsed_on_refusal: bool) -> UserTokens:
        if not isinstance(result, dict):
            raise self._reject(call, "the token endpoint's answer is not an object")
        error = result.get("error")
        if error is not None:
            reason = f"Entra answered {_code(result)}"
            if lapsed_on_refusal and error in _LAPSED:
                log.warning("Microsoft sign-in: %s: %s", call, reason)
                raise SignInLapsed(
                    "your Microsoft sign-in has expired or was revoked: sign in again"
                )
            raise self._failed(call, reason)
        access_token = result.get("access_token")
        refresh_token = result.get("refresh_token")
        token_type = result.get("token_type")
        expires_in = result.get("expires_in")
        if not isinstance(access_token, str) or not access_token:
            raise self._reject(call, "the answer has no access_token string")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise self._reject(call, "the answer's token_type is not Bearer")
        if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
            raise self._reject(call, "the answer's expires_in is not a positive number")
        if not isinstance(refresh_token, str) or not refresh_token:
            raise self._reject(call, "the answer has no refresh_token string")
        if not isinstance(result.get("id_token"), str):
            raise self._reject(call, "the answer has no id_token string")
        user = self._user(call, result.get("id_token_claims"))
        now = self._now()
        return UserTokens(
            access_token=access_token,
            expires_at=now + timedelta(seconds=expires_in),
            refresh_token=refresh_token,
            user=user,
        )

    def _user(self, call: str, claims: Any) -> SignedInUser:
        if not isinstance(claims, dict):
            raise self._reject(call, "the ID token's claims are not an object")
        for name in ("iss", "aud", "tid", "oid", "preferred_username"):
            value = claims.get(name)
            if not isinstance(value, str) or not value:
                raise self._reject(call, f"the ID token has no {name} string")
        if claims.get("ver") != "2.0":
            raise self._reject(call, "the ID token is not a v2.0 token")
        if claims["aud"] != self.client_id:
            raise self._reject(call, "the ID token was issued to another application")
        if claims["tid"] != self.tenant_id:
            raise self._reject(call, "the ID token is from another tenant")
        if claims["iss"] != self._issuer():
            raise self._reject(call, "the ID token's issuer is not this tenant's")
        expires = _instant(claims.get("exp"))
        if expires is None:
            raise self._reject(call, "the ID token has no exp time")
        if expires + _SKEW < self._now():
            raise self._reject(call, "the ID token has expired")
        acrs = claims.get("acrs", [])
        if not isinstance(acrs, list) or not all(isinstance(a, str) for a in acrs):
            raise self._reject(call, "the ID token's acrs is not a list of strings")
        authenticated_at = _instant(claims.get("auth_time"))
        if "auth_time" in claims and authenticated_at is None:
            raise self._reject(call, "the ID token's auth_time is not a time")
        return SignedInUser(
            tenant_id=claims["tid"],
            object_id=claims["oid"],
            username=claims["preferred_username"],
            acrs=tuple(acrs),
            authenticated_at=authenticated_at,
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _instant(value: Any) -> datetime | None:
    """A JWT NumericDate (whole seconds since the epoch, as Entra writes them), or None."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _code(answer: Mapping[str, Any]) -> str:
    """``error`` and the AADSTS numbers of an error answer, never its description (free
    text that may echo what was sent)."""
    error = answer.get("error")
    text = error if isinstance(error, str) and error.isascii() and len(error) < 80 else "?"
    codes = answer.get("error_codes")
    if isinstance(codes, list) and codes and all(_is_int(c) for c in codes):
        return text + " (" + ", ".join(f"AADSTS{c}" for c in codes) + ")"
    description = answer.get("error_description")
    found = re.match(r"AADSTS(\d{1,9})\b", description) if isinstance(description, str) else None
    return text + f" (AADSTS{found.group(1)})" if found else text
