"""The fake Microsoft identity platform's own rules, over raw HTTPS: what a client that
gets the protocol wrong is told, and that its tokens are real RS256 JWTs its JWKS
verifies (with PyJWT, which msal brings)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
import requests

from fakes.fake_entra import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, TENANT_ID, FakeEntra

AVA = "0f1e2d3c-4b5a-4697-8877-665544332211"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def entra(clock: Clock) -> Iterator[FakeEntra]:
    with FakeEntra(now=clock) as fake:
        fake.add_user(AVA, "ava@contoso.example", "Ava Adams", mail="ava@contoso.example")
        yield fake


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def authorize_url(entra: FakeEntra, challenge: str, **extra: str) -> str:
    params = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": "https://management.azure.com/user_impersonation openid profile offline_access",
        "state": "st",
        "nonce": "nonce-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return f"{entra.authority}/oauth2/v2.0/authorize?{urlencode(params)}"


def token(entra: FakeEntra, **form: str) -> requests.Response:
    body = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **form}
    return requests.post(
        f"{entra.authority}/oauth2/v2.0/token", data=body, verify=str(entra.ca_file), timeout=5
    )


def redeem(entra: FakeEntra, code: str, verifier: str, **extra: str) -> requests.Response:
    return token(
        entra,
        grant_type="authorization_code",
        code=code,
        redirect_uri=REDIRECT_URI,
        code_verifier=verifier,
        scope="https://management.azure.com/user_impersonation openid profile offline_access",
        **extra,
    )


def signed_in(entra: FakeEntra, *, mfa: bool = False, **extra: str) -> tuple[str, str]:
    verifier, challenge = pkce()
    answer = entra.sign_in(authorize_url(entra, challenge, **extra), "ava@contoso.example", mfa=mfa)
    return answer.params["code"], verifier


def error_of(response: requests.Response) -> tuple[int, str, list[int]]:
    body = response.json()
    assert set(body) == {
        "error",
        "error_description",
        "error_codes",
        "timestamp",
        "trace_id",
        "correlation_id",
        "error_uri",
    }
    assert body["error_description"].startswith(f"AADSTS{body['error_codes'][0]}: ")
    return response.status_code, body["error"], body["error_codes"]


def test_discovery_points_at_the_fake_and_the_jwks_verifies_its_tokens(entra: FakeEntra) -> None:
    config = requests.get(
        f"{entra.authority}/v2.0/.well-known/openid-configuration",
        verify=str(entra.ca_file),
        timeout=5,
    ).json()
    assert config["issuer"] == f"{entra.base_url}/{TENANT_ID}/v2.0"
    assert config["authorization_endpoint"] == f"{entra.authority}/oauth2/v2.0/authorize"
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    keys = requests.get(config["jwks_uri"], verify=str(entra.ca_file), timeout=5).json()
    (key,) = keys["keys"]
    assert key["kid"] == key["x5t"] and key["kty"] == "RSA" and key["use"] == "sig"

    code, verifier = signed_in(entra)
    answer = redeem(entra, code, verifier).json()
    public = jwt.PyJWK(key).key
    assert jwt.get_unverified_header(answer["id_token"]) == {
        "typ": "JWT",
        "alg": "RS256",
        "kid": key["kid"],
    }
    claims = jwt.decode(
        answer["id_token"],
        public,
        algorithms=["RS256"],
        audience=CLIENT_ID,
        issuer=config["issuer"],
    )
    assert claims["oid"] == AVA and claims["nonce"] == "nonce-1"
    access = jwt.decode(
        answer["access_token"],
        public,
        algorithms=["RS256"],
        audience="https://management.azure.com",
    )
    assert access["iss"] == f"https://sts.windows.net/{TENANT_ID}/"
    assert entra.verify_access_token(answer["access_token"]) == access


def test_a_code_is_single_use(entra: FakeEntra) -> None:
    code, verifier = signed_in(entra)
    assert redeem(entra, code, verifier).status_code == 200
    assert error_of(redeem(entra, code, verifier)) == (400, "invalid_grant", [54005])


def test_a_wrong_verifier_is_refused_and_does_not_spend_the_code(entra: FakeEntra) -> None:
    code, verifier = signed_in(entra)
    assert error_of(redeem(entra, code, "x" * 43)) == (400, "invalid_grant", [501481])
    assert error_of(redeem(entra, code, "")) == (400, "invalid_grant", [501481])
    assert redeem(entra, code, verifier).status_code == 200


def test_a_code_lives_ten_minutes(entra: FakeEntra, clock: Clock) -> None:
    code, verifier = signed_in(entra)
    clock.now += timedelta(minutes=10, seconds=1)
    assert error_of(redeem(entra, code, verifier)) == (400, "invalid_grant", [70008])


def test_the_redirect_uri_must_be_the_one_the_code_was_given_to(entra: FakeEntra) -> None:
    code, verifier = signed_in(entra)
    response = token(
        entra,
        grant_type="authorization_code",
        code=code,
        code_verifier=verifier,
        redirect_uri="https://elsewhere.example/cb",
        scope="https://management.azure.com/user_impersonation openid",
    )
    assert error_of(response) == (400, "invalid_grant", [500112])


def test_the_client_secret_in_basic_auth_works_and_a_wrong_one_is_401(entra: FakeEntra) -> None:
    code, verifier = signed_in(entra)
    basic = requests.post(
        f"{entra.authority}/oauth2/v2.0/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
            "scope": "https://management.azure.com/.default openid",
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
        verify=str(entra.ca_file),
        timeout=5,
    )
    assert basic.status_code == 200 and "refresh_token" not in basic.json()  # no offline_access
    code, verifier = signed_in(entra)
    assert error_of(redeem(entra, code, verifier, client_secret="wrong")) == (
        401,
        "invalid_client",
        [7000215],
    )


def test_an_unknown_client_or_redirect_uri_gets_an_error_page_not_a_redirect(
    entra: FakeEntra,
) -> None:
    _verifier, challenge = pkce()
    for url, code in [
        (authorize_url(entra, challenge, client_id="someone-else"), "AADSTS700016"),
        (authorize_url(entra, challenge, redirect_uri="https://evil.example/cb"), "AADSTS50011"),
    ]:
        page = requests.get(url, verify=str(entra.ca_file), timeout=5, allow_redirects=False)
        assert page.status_code == 400 and "Location" not in page.headers
        assert code in page.text


def test_prompt_none_has_no_session_to_use(entra: FakeEntra) -> None:
    _verifier, challenge = pkce()
    answer = entra.sign_in(authorize_url(entra, challenge, prompt="none"), "ava@contoso.example")
    assert answer.method == "GET" and answer.params["error"] == "login_required"
    assert answer.params["state"] == "st"


def test_query_and_form_post_answers(entra: FakeEntra) -> None:
    _verifier, challenge = pkce()
    query = entra.sign_in(authorize_url(entra, challenge), "ava@contoso.example")
    assert (query.method, query.url) == ("GET", REDIRECT_URI) and set(query.params) == {
        "code",
        "state",
    }
    posted = entra.sign_in(
        authorize_url(entra, challenge, response_mode="form_post"), "ava@contoso.example"
    )
    assert (posted.method, posted.url) == ("POST", REDIRECT_URI)
    assert set(posted.params) == {"code", "state"}


def test_an_unknown_person_stays_on_the_page_and_cancel_is_access_denied(
    entra: FakeEntra,
) -> None:
    _verifier, challenge = pkce()
    with pytest.raises(AssertionError, match="AADSTS50034"):
        entra.sign_in(authorize_url(entra, challenge), "nobody@contoso.example")
    page = requests.get(authorize_url(entra, challenge), verify=str(entra.ca_file), timeout=5)
    ctx = page.text.split('name="ctx" value="')[1].split('"')[0]
    cancelled = requests.post(
        f"{entra.authority}/login",
        data={"ctx": ctx, "action": "cancel"},
        verify=str(entra.ca_file),
        timeout=5,
        allow_redirects=False,
    )
    assert cancelled.status_code == 302
    assert "error=access_denied" in cancelled.headers["Location"]
    assert "AADSTS65004" in cancelled.headers["Location"]


@pytest.mark.parametrize(
    ("claims", "mfa", "id_acrs", "access_acrs"),
    [
        ({"id_token": {"acrs": {"essential": True, "values": ["c1"]}}}, True, ["c1"], None),
        ({"id_token": {"acrs": {"essential": True, "value": "c2"}}}, True, ["c2"], None),
        ({"access_token": {"acrs": {"essential": True, "value": "c1"}}}, True, None, ["c1"]),
        ({"id_token": {"acrs": {"essential": True, "values": ["c1"]}}}, False, None, None),
        ({"id_token": {"acrs": {"values": ["c1"]}}}, True, None, None),  # not essential
        ({}, True, None, None),
    ],
)
def test_acrs_only_where_asked_and_only_after_mfa(
    entra: FakeEntra,
    claims: dict[str, Any],
    mfa: bool,
    id_acrs: list[str] | None,
    access_acrs: list[str] | None,
) -> None:
    extra = {"claims": json.dumps(claims)} if claims else {}
    code, verifier = signed_in(entra, mfa=mfa, **extra)
    answer = redeem(entra, code, verifier).json()
    id_claims = jwt.decode(answer["id_token"], options={"verify_signature": False})
    access = jwt.decode(answer["access_token"], options={"verify_signature": False})
    assert id_claims.get("acrs") == id_acrs and access.get("acrs") == access_acrs
    assert "amr" not in id_claims and access["amr"] == (["pwd", "mfa"] if mfa else ["pwd"])
    assert "auth_time" not in id_claims  # no max_age asked


def test_auth_time_only_when_max_age_was_asked(entra: FakeEntra, clock: Clock) -> None:
    code, verifier = signed_in(entra, max_age="0")
    id_claims = jwt.decode(
        redeem(entra, code, verifier).json()["id_token"], options={"verify_signature": False}
    )
    assert id_claims["auth_time"] == int(clock.now.timestamp())


def test_refresh_rotates_and_the_old_token_still_works_as_entra_documents(
    entra: FakeEntra,
) -> None:
    code, verifier = signed_in(entra)
    first = redeem(entra, code, verifier).json()["refresh_token"]
    scope = "https://management.azure.com/user_impersonation openid profile offline_access"
    second = token(entra, grant_type="refresh_token", refresh_token=first, scope=scope).json()
    assert second["refresh_token"] != first
    refreshed = jwt.decode(second["id_token"], options={"verify_signature": False})
    assert "nonce" not in refreshed and "auth_time" not in refreshed
    again = token(entra, grant_type="refresh_token", refresh_token=first, scope=scope)
    assert again.status_code == 200
    entra.revoke_sign_ins(AVA)
    for refresh_token in (first, second["refresh_token"]):
        response = token(
            entra, grant_type="refresh_token", refresh_token=refresh_token, scope=scope
        )
        assert error_of(response) == (400, "invalid_grant", [50173])


def test_an_expired_access_token_or_another_audience_is_not_verified(
    entra: FakeEntra, clock: Clock
) -> None:
    code, verifier = signed_in(entra)
    access = redeem(entra, code, verifier).json()["access_token"]
    assert entra.verify_access_token(access) is not None
    assert entra.verify_access_token(access, audience="https://graph.microsoft.com") is None
    head, body, signature = access.split(".")
    assert entra.verify_access_token(f"{head}.{body}x.{signature}") is None
    clock.now += timedelta(hours=1)
    assert entra.verify_access_token(access) is None


def test_client_credentials_give_an_app_only_token(entra: FakeEntra) -> None:
    answer = token(
        entra, grant_type="client_credentials", scope="https://graph.microsoft.com/.default"
    ).json()
    assert list(answer) == ["token_type", "expires_in", "ext_expires_in", "access_token"]
    claims = entra.verify_access_token(
        answer["access_token"], audience="https://graph.microsoft.com"
    )
    assert claims is not None and claims["idtyp"] == "app" and "scp" not in claims
    bad = token(entra, grant_type="client_credentials", scope="User.Read")
    assert error_of(bad)[1] == "invalid_scope"
