"""Sign in with Microsoft: the real msal (authorization code flow with PKCE) over HTTPS
against the fake Microsoft identity platform, as an approver signs in from Slack."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fakes.fake_entra import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    TENANT_ID,
    Callback,
    FakeEntra,
)
from jitaccess.answers import REJECTED
from jitaccess.domain.native import ExternalLookupFailed, SignInLapsed, check_step_up
from jitaccess.providers.entra import EntraSignIn

AVA = "0f1e2d3c-4b5a-4697-8877-665544332211"
BEN = "1a2b3c4d-5e6f-4071-8293-a4b5c6d7e8f9"


class Clock:
    """A settable clock near real time (msal checks ``auth_time`` against the real one)."""

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
        fake.add_user(BEN, "ben@contoso.example", "Ben Brown")
        yield fake


@pytest.fixture
def sign_in(entra: FakeEntra, clock: Clock) -> EntraSignIn:
    return EntraSignIn(
        tenant_id=TENANT_ID,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=REDIRECT_URI,
        authority_host=entra.base_url,
        verify=str(entra.ca_file),
        timeout=5,
        now=clock,
    )


def rejected() -> float:
    return sum(
        sample.value
        for metric in REJECTED.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["service"] == "entra"
    )


def callback(answer: Callback) -> dict[str, str]:
    """The form the callback receives (Entra's form_post)."""
    assert (answer.method, answer.url) == ("POST", REDIRECT_URI)
    return answer.params


def claims_of(jwt: str) -> dict[str, Any]:
    body = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_a_full_sign_in_gives_the_person_and_an_arm_token_as_them(
    entra: FakeEntra, sign_in: EntraSignIn, clock: Clock
) -> None:
    auth_uri, flow = sign_in.start("state-ava")
    assert auth_uri.startswith(f"{entra.base_url}/{TENANT_ID}/oauth2/v2.0/authorize?")
    query = parse_qs(urlsplit(auth_uri).query)
    assert query["code_challenge_method"] == ["S256"]
    assert "prompt" not in query and "claims" not in query

    tokens = sign_in.finish(flow, callback(entra.sign_in(auth_uri, "ava@contoso.example")))

    assert tokens.user.object_id == AVA
    assert tokens.user.tenant_id == TENANT_ID
    assert tokens.user.username == "ava@contoso.example"
    assert tokens.user.acrs == ()
    assert tokens.user.authenticated_at is None
    assert tokens.expires_at == clock.now + timedelta(seconds=3599)
    arm = entra.verify_access_token(tokens.access_token)
    assert arm is not None and arm["oid"] == AVA and arm["scp"] == "user_impersonation"
    assert arm["aud"] == "https://management.azure.com" and "acrs" not in arm


def test_the_id_token_carries_entra_s_v2_claims_and_no_others(
    entra: FakeEntra, sign_in: EntraSignIn
) -> None:
    """Checked here on the wire, not only through the client: what the fake sends."""
    auth_uri, flow = sign_in.start("s", claims_acrs="c1", max_age=0)
    query = parse_qs(urlsplit(auth_uri).query)
    nonce = query["nonce"][0]
    code = callback(entra.sign_in(auth_uri, "ava@contoso.example", mfa=True))["code"]
    import requests

    answer = requests.post(
        f"{entra.authority}/oauth2/v2.0/token",
        data={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": flow["code_verifier"],
            "scope": "https://management.azure.com/user_impersonation openid profile "
            "offline_access",
        },
        verify=str(entra.ca_file),
        timeout=5,
    ).json()
    assert list(answer) == [
        "token_type",
        "scope",
        "expires_in",
        "ext_expires_in",
        "access_token",
        "refresh_token",
        "id_token",
    ]
    id_token = claims_of(answer["id_token"])
    assert set(id_token) == {
        "aud",
        "iss",
        "iat",
        "nbf",
        "exp",
        "acrs",
        "aio",
        "auth_time",
        "name",
        "nonce",
        "oid",
        "preferred_username",
        "rh",
        "sub",
        "tid",
        "uti",
        "ver",
    }
    assert id_token["acrs"] == ["c1"] and id_token["nonce"] == nonce and "amr" not in id_token
    assert id_token["iss"] == f"{entra.base_url}/{TENANT_ID}/v2.0" and id_token["ver"] == "2.0"
    access = claims_of(answer["access_token"])
    assert set(access) == {
        "aud",
        "iss",
        "iat",
        "nbf",
        "exp",
        "acr",
        "aio",
        "amr",
        "appid",
        "appidacr",
        "name",
        "oid",
        "rh",
        "scp",
        "sub",
        "tid",
        "unique_name",
        "upn",
        "uti",
        "ver",
    }
    assert access["amr"] == ["pwd", "mfa"] and access["ver"] == "1.0"


def test_mfa_requested_and_done_puts_the_context_in_the_id_token(
    entra: FakeEntra, sign_in: EntraSignIn, clock: Clock
) -> None:
    auth_uri, flow = sign_in.start("state-2", claims_acrs="c1", max_age=0)
    query = parse_qs(urlsplit(auth_uri).query)
    assert query["prompt"] == ["login"] and query["max_age"] == ["0"]
    assert json.loads(query["claims"][0]) == {
        "id_token": {"acrs": {"essential": True, "value": "c1"}}
    }

    tokens = sign_in.finish(
        flow, callback(entra.sign_in(auth_uri, "ava@contoso.example", mfa=True))
    )

    assert tokens.user.acrs == ("c1",)
    assert tokens.user.authenticated_at == clock.now
    assert check_step_up(tokens.user, "c1", timedelta(minutes=10), clock.now) is None


def test_mfa_requested_but_not_done_leaves_the_context_out(
    entra: FakeEntra, sign_in: EntraSignIn, clock: Clock
) -> None:
    auth_uri, flow = sign_in.start("state-3", claims_acrs="c1", max_age=0)
    tokens = sign_in.finish(
        flow, callback(entra.sign_in(auth_uri, "ava@contoso.example", mfa=False))
    )
    assert tokens.user.acrs == ()
    assert check_step_up(tokens.user, "c1", timedelta(minutes=10), clock.now) is not None


def test_mfa_without_asking_for_a_context_puts_none_in(
    entra: FakeEntra, sign_in: EntraSignIn
) -> None:
    auth_uri, flow = sign_in.start("state-4")
    tokens = sign_in.finish(
        flow, callback(entra.sign_in(auth_uri, "ava@contoso.example", mfa=True))
    )
    assert tokens.user.acrs == ()


def test_refresh_gives_new_tokens_and_a_new_refresh_token(
    entra: FakeEntra, sign_in: EntraSignIn, clock: Clock
) -> None:
    auth_uri, flow = sign_in.start("state-5")
    first = sign_in.finish(flow, callback(entra.sign_in(auth_uri, "ben@contoso.example")))
    clock.now += timedelta(minutes=70)

    second = sign_in.refresh(first.refresh_token)

    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert second.user.object_id == BEN and second.user.username == "ben@contoso.example"
    assert second.expires_at == clock.now + timedelta(seconds=3599)
    # A refresh is no interactive sign-in: it proves no step-up.
    assert second.user.acrs == () and second.user.authenticated_at is None
    assert sign_in.refresh(second.refresh_token).user.object_id == BEN


def test_a_revoked_sign_in_has_lapsed(entra: FakeEntra, sign_in: EntraSignIn) -> None:
    auth_uri, flow = sign_in.start("state-6")
    tokens = sign_in.finish(flow, callback(entra.sign_in(auth_uri, "ava@contoso.example")))
    entra.revoke_sign_ins(AVA)

    with pytest.raises(SignInLapsed):
        sign_in.refresh(tokens.refresh_token)

    # Signing in again works.
    auth_uri, flow = sign_in.start("state-6b")
    again = sign_in.finish(flow, callback(entra.sign_in(auth_uri, "ava@contoso.example")))
    assert sign_in.refresh(again.refresh_token).user.object_id == AVA


def test_an_expired_refresh_token_has_lapsed(entra: FakeEntra, sign_in: EntraSignIn) -> None:
    auth_uri, flow = sign_in.start("state-7")
    tokens = sign_in.finish(flow, callback(entra.sign_in(auth_uri, "ava@contoso.example")))
    entra.expire_refresh_tokens()
    with pytest.raises(SignInLapsed, match="sign in again"):
        sign_in.refresh(tokens.refresh_token)


def test_a_refresh_token_unused_for_90_days_has_lapsed(
    entra: FakeEntra, sign_in: EntraSignIn, clock: Clock
) -> None:
    auth_uri, flow = sign_in.start("state-8")
    tokens = sign_in.finish(flow, callback(entra.sign_in(auth_uri, "ava@contoso.example")))
    clock.now += timedelta(days=91)
    with pytest.raises(SignInLapsed):
        sign_in.refresh(tokens.refresh_token)


def test_an_unknown_refresh_token_has_lapsed(sign_in: EntraSignIn) -> None:
    with pytest.raises(SignInLapsed):
        sign_in.refresh("1.Anot-a-real-refresh-token")


def test_a_tampered_state_is_refused_and_the_code_is_not_redeemed(
    entra: FakeEntra, sign_in: EntraSignIn
) -> None:
    auth_uri, flow = sign_in.start("state-9")
    answer = callback(entra.sign_in(auth_uri, "ava@contoso.example"))
    with pytest.raises(ExternalLookupFailed, match="does not belong to this sign-in"):
        sign_in.finish(flow, {**answer, "state": "someone-else"})
    assert ("POST", f"/{TENANT_ID}/oauth2/v2.0/token") not in entra.requests
    # The untouched answer still works.
    assert sign_in.finish(flow, answer).user.object_id == AVA


def test_a_code_is_redeemed_once(entra: FakeEntra, sign_in: EntraSignIn) -> None:
    auth_uri, flow = sign_in.start("state-10")
    answer = callback(entra.sign_in(auth_uri, "ava@contoso.example"))
    sign_in.finish(flow, answer)
    with pytest.raises(ExternalLookupFailed, match=r"invalid_grant \(AADSTS54005\)") as err:
        sign_in.finish(flow, answer)
    assert answer["code"] not in str(err.value)


def test_a_code_from_another_sign_in_is_refused(entra: FakeEntra, sign_in: EntraSignIn) -> None:
    """The code of one flow replayed into another (same state, to get past msal): PKCE
    refuses it, since the other flow's verifier does not match the code's challenge."""
    auth_uri, _flow = sign_in.start("state-11")
    _other_uri, other_flow = sign_in.start("state-11")
    answer = callback(entra.sign_in(auth_uri, "ava@contoso.example"))
    with pytest.raises(ExternalLookupFailed, match="AADSTS501481"):
        sign_in.finish(other_flow, answer)


def test_an_old_code_is_refused(entra: FakeEntra, sign_in: EntraSignIn, clock: Clock) -> None:
    auth_uri, flow = sign_in.start("state-12")
    answer = callback(entra.sign_in(auth_uri, "ava@contoso.example"))
    clock.now += timedelta(minutes=11)
    with pytest.raises(ExternalLookupFailed, match="AADSTS70008"):
        sign_in.finish(flow, answer)


def test_a_cancelled_sign_in_is_a_failed_lookup(entra: FakeEntra, sign_in: EntraSignIn) -> None:
    with pytest.raises(ExternalLookupFailed, match=r"access_denied \(AADSTS65004\)"):
        sign_in.finish(
            {"state": "s"},
            {"state": "s", "error": "access_denied", "error_description": "AADSTS65004: declined"},
        )


def test_a_stale_step_up_is_refused_by_msal(
    entra: FakeEntra, sign_in: EntraSignIn, clock: Clock
) -> None:
    """max_age asked for a fresh sign-in; an auth_time older than that is refused."""
    auth_uri, flow = sign_in.start("state-13", claims_acrs="c1", max_age=60)
    clock.now -= timedelta(hours=1)  # the fake signs the person in an hour ago
    answer = callback(entra.sign_in(auth_uri, "ava@contoso.example", mfa=True))
    with pytest.raises(ExternalLookupFailed, match="nonce or auth_time"):
        sign_in.finish(flow, answer)


def test_a_wrong_client_secret_is_a_failed_lookup(entra: FakeEntra, clock: Clock) -> None:
    wrong = EntraSignIn(
        tenant_id=TENANT_ID,
        client_id=CLIENT_ID,
        client_secret="not-the-secret",
        redirect_uri=REDIRECT_URI,
        authority_host=entra.base_url,
        verify=str(entra.ca_file),
        now=clock,
    )
    auth_uri, flow = wrong.start("state-14")
    with pytest.raises(ExternalLookupFailed, match="AADSTS7000215") as err:
        wrong.finish(flow, callback(entra.sign_in(auth_uri, "ava@contoso.example")))
    assert "not-the-secret" not in str(err.value) and "not-the-secret" not in repr(wrong)
    with pytest.raises(ExternalLookupFailed) as err:
        wrong.refresh("some-refresh-token")
    assert not isinstance(err.value, SignInLapsed)


def test_an_untrusted_certificate_is_a_failed_lookup(entra: FakeEntra) -> None:
    untrusted = EntraSignIn(
        tenant_id=TENANT_ID,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=REDIRECT_URI,
        authority_host=entra.base_url,
    )
    with pytest.raises(ExternalLookupFailed, match="OpenID configuration"):
        untrusted.start("state-15")


def good_answer(entra: FakeEntra, sign_in: EntraSignIn) -> tuple[dict[str, object], dict[str, str]]:
    auth_uri, flow = sign_in.start("state-x")
    return flow, callback(entra.sign_in(auth_uri, "ava@contoso.example"))


def token_answer(entra: FakeEntra, flow: dict[str, object], **id_claims: Any) -> dict[str, Any]:
    """A token answer shaped like Entra's for ``flow`` (its nonce, which msal checks),
    its ID token's claims changed by ``id_claims`` (None removes one)."""
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, Any] = {
        "nonce": parse_nonce(flow),
        "aud": CLIENT_ID,
        "iss": f"{entra.base_url}/{TENANT_ID}/v2.0",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "name": "Ava Adams",
        "oid": AVA,
        "preferred_username": "ava@contoso.example",
        "sub": "x",
        "tid": TENANT_ID,
        "ver": "2.0",
    }
    for key, value in id_claims.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    segment = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return {
        "token_type": "Bearer",
        "scope": "https://management.azure.com/user_impersonation",
        "expires_in": 3599,
        "ext_expires_in": 3599,
        "access_token": "eyJ.access.token",
        "refresh_token": "1.Arefresh",
        "id_token": f"eyJhbGciOiJSUzI1NiJ9.{segment}.c2ln",
    }


def test_the_strict_reader_accepts_a_well_formed_answer(
    entra: FakeEntra, sign_in: EntraSignIn
) -> None:
    """The shape tests below change one thing each from this answer."""
    flow, answer = good_answer(entra, sign_in)
    entra.answer_next(token_answer(entra, flow), path="/oauth2/v2.0/token")
    assert sign_in.finish(flow, answer).user.object_id == AVA


MALFORMED: dict[str, Any] = {
    "not JSON": b"<html>busy</html>",
    "a list": [{"access_token": "x"}],
    "null": None,
    "no access token": {"token_type": "Bearer", "expires_in": 3599},
    "no refresh token": "drop:refresh_token",
    "no id token": "drop:id_token",
    "a string expires_in": "set:expires_in=3599s",
    "a boolean expires_in": "set:expires_in=True",
    "a MAC token": "set:token_type=MAC",
    "an id token that is not a JWT": "set:id_token=garbage",
}
ID_CLAIMS: dict[str, dict[str, Any]] = {
    "another tenant": {"tid": "00000000-0000-0000-0000-000000000000"},
    "another audience": {"aud": "someone-else"},
    "another issuer": {"iss": "https://login.microsoftonline.com/evil/v2.0"},
    "a v1.0 token": {"ver": "1.0"},
    "no oid": {"oid": None},
    "an oid number": {"oid": 7},
    "no preferred_username": {"preferred_username": None},
    "no tid": {"tid": None},
    "acrs as a string": {"acrs": "c1"},
    "acrs with a number": {"acrs": ["c1", 2]},
    "auth_time as a string": {"auth_time": "yesterday"},
    "auth_time as a float": {"auth_time": 1.5},
    "expired": {"exp": 1_000_000_000},
    "no exp": {"exp": None},
}


@pytest.mark.parametrize("shape", MALFORMED)
def test_a_malformed_token_answer_is_refused(
    entra: FakeEntra, sign_in: EntraSignIn, shape: str
) -> None:
    flow, answer = good_answer(entra, sign_in)
    body: Any = MALFORMED[shape]
    if isinstance(body, str) and ":" in body:
        verb, _, rest = body.partition(":")
        body = token_answer(entra, flow)
        if verb == "drop":
            body.pop(rest)
        else:
            key, _, value = rest.partition("=")
            body[key] = {"True": True}.get(value, value)
    entra.answer_next(body, path="/oauth2/v2.0/token")
    before = rejected()
    with pytest.raises(ExternalLookupFailed) as err:
        sign_in.finish(flow, answer)
    assert rejected() == before + 1
    assert not isinstance(err.value, SignInLapsed)
    assert "nonce" not in str(err.value)  # refused for its shape, not for another reason
    assert "eyJ" not in str(err.value) and "1.Arefresh" not in str(err.value)


@pytest.mark.parametrize("shape", ID_CLAIMS)
def test_an_id_token_of_the_wrong_shape_is_refused(
    entra: FakeEntra, sign_in: EntraSignIn, shape: str
) -> None:
    flow, answer = good_answer(entra, sign_in)
    entra.answer_next(token_answer(entra, flow, **ID_CLAIMS[shape]), path="/oauth2/v2.0/token")
    before = rejected()
    with pytest.raises(ExternalLookupFailed, match="ID token"):
        sign_in.finish(flow, answer)
    assert rejected() == before + 1


def parse_nonce(flow: dict[str, object]) -> str:
    return parse_qs(urlsplit(str(flow["auth_uri"])).query)["nonce"][0]


@pytest.mark.parametrize("shape", ["a server error", "a 400 without JSON"])
def test_a_failing_token_endpoint_on_refresh_is_a_failed_lookup_not_a_lapse(
    entra: FakeEntra, sign_in: EntraSignIn, shape: str
) -> None:
    status = 503 if shape == "a server error" else 400
    entra.answer_next(b"busy", path="/oauth2/v2.0/token", status=status)
    with pytest.raises(ExternalLookupFailed) as err:
        sign_in.refresh("1.Asome-refresh-token")
    assert not isinstance(err.value, SignInLapsed)


def test_no_token_is_logged(
    entra: FakeEntra, sign_in: EntraSignIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    auth_uri, flow = sign_in.start("state-16")
    tokens = sign_in.finish(flow, callback(entra.sign_in(auth_uri, "ava@contoso.example")))
    entra.revoke_sign_ins(AVA)
    with pytest.raises(SignInLapsed):
        sign_in.refresh(tokens.refresh_token)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (tokens.access_token, tokens.refresh_token, CLIENT_SECRET):
        assert secret not in logged
