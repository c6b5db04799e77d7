"""Settings that must be right before anyone signs in: each bad one is named at start
(a secret's value never repeated), and half a Sign in with Microsoft set-up is listed
setting by setting rather than failing at someone's first sign-in."""

from __future__ import annotations

import pytest

from jitaccess.app.signins import TokenCipher
from jitaccess.settings import Settings, SettingsError, load_settings

SIGNIN = {
    "ENTRA_AUTHORITY": "https://login.microsoftonline.com/72f988bf-0000-4000-8000-00000000c0de",
    "ENTRA_CLIENT_ID": "0b6a1f7e-4c1d-4e8b-9a53-7d0c2f1e9a10",
    "ENTRA_CLIENT_SECRET": "s3cret",
    "JITACCESS_PUBLIC_URL": "https://jitaccess.example.com",
}


def settings(**values: str) -> Settings:
    return load_settings(_env_file=None, **values)


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*SIGNIN, "JITACCESS_TOKEN_KEYS", "JITACCESS_MFA_AUTH_CONTEXT"]:
        monkeypatch.delenv(name, raising=False)


def test_no_sign_in_settings_is_no_problem() -> None:
    assert settings().signin_problems() == []


def test_a_complete_sign_in_set_up_is_no_problem() -> None:
    full = settings(**SIGNIN, JITACCESS_TOKEN_KEYS=TokenCipher.new_key())
    assert full.signin_problems() == []


def test_half_a_sign_in_set_up_names_each_missing_setting() -> None:
    half = settings(ENTRA_CLIENT_ID=SIGNIN["ENTRA_CLIENT_ID"])
    problems = half.signin_problems()
    assert [line.split(":")[0] for line in problems] == [
        "ENTRA_AUTHORITY",
        "ENTRA_CLIENT_SECRET",
        "JITACCESS_PUBLIC_URL",
        "JITACCESS_TOKEN_KEYS",
    ]
    assert all(line.endswith("(Sign in with Microsoft is half set up)") for line in problems)
    assert "jitaccess signins new-key" in problems[-1]


def test_keys_alone_are_no_problem() -> None:
    """Keys without Entra settings: sign-in is off, nothing is half set up."""
    assert settings(JITACCESS_TOKEN_KEYS=TokenCipher.new_key()).signin_problems() == []


@pytest.mark.parametrize("keys", ["not-a-key", f"{TokenCipher.new_key()},not-a-key", "c2VjcmV0"])
def test_a_malformed_key_is_named_and_never_repeated(keys: str) -> None:
    with pytest.raises(SettingsError) as bad:
        settings(JITACCESS_TOKEN_KEYS=keys)
    assert bad.value.lines == [
        "JITACCESS_TOKEN_KEYS is not valid: expected comma-separated Fernet keys (make one "
        "with `jitaccess signins new-key`) (environment or .env)"
    ]
    for part in keys.split(","):
        assert part not in str(bad.value)


def test_two_keys_and_blank_ones_are_accepted() -> None:
    keys = f" {TokenCipher.new_key()}, {TokenCipher.new_key()},"
    assert settings(JITACCESS_TOKEN_KEYS=keys).token_keys == keys
    assert settings(JITACCESS_TOKEN_KEYS="").token_keys is None


@pytest.mark.parametrize("context", ["c1", "c42", "c99"])
def test_authentication_contexts_c1_to_c99(context: str) -> None:
    assert settings(JITACCESS_MFA_AUTH_CONTEXT=context).mfa_auth_context == context


@pytest.mark.parametrize("context", ["c0", "c100", "C1", "mfa", "", "c01"])
def test_anything_else_is_not_an_authentication_context(context: str) -> None:
    with pytest.raises(SettingsError) as bad:
        settings(JITACCESS_MFA_AUTH_CONTEXT=context)
    assert bad.value.lines == [
        f"JITACCESS_MFA_AUTH_CONTEXT is {context!r}: expected a Conditional Access "
        "authentication context id, c1 to c99 (environment or .env)"
    ]


@pytest.mark.parametrize(
    "authority",
    [
        "https://login.microsoftonline.com/contoso.onmicrosoft.com",
        "https://login.microsoftonline.us/72f988bf-0000-4000-8000-00000000c0de/",
        "https://127.0.0.1:8443/72f988bf-0000-4000-8000-00000000c0de",
    ],
)
def test_an_authority_is_an_https_host_and_a_tenant(authority: str) -> None:
    assert settings(ENTRA_AUTHORITY=authority).entra_authority == authority


@pytest.mark.parametrize(
    "authority",
    [
        "login.microsoftonline.com/contoso",
        "http://login.microsoftonline.com/contoso",
        "https://login.microsoftonline.com",
        "https://login.microsoftonline.com/contoso/v2.0",
    ],
)
def test_anything_else_is_not_an_authority(authority: str) -> None:
    with pytest.raises(SettingsError) as bad:
        settings(ENTRA_AUTHORITY=authority)
    (line,) = bad.value.lines
    assert line.startswith(f"ENTRA_AUTHORITY is {authority!r}: expected https://<login host>/")


@pytest.mark.parametrize("url", ["jitaccess.example.com", "ftp://x.example", "https://x/?a=1"])
def test_a_public_url_is_absolute_and_without_a_query(url: str) -> None:
    with pytest.raises(SettingsError) as bad:
        settings(JITACCESS_PUBLIC_URL=url)
    (line,) = bad.value.lines
    assert line.startswith(f"JITACCESS_PUBLIC_URL is {url!r}: expected an absolute http(s)://")
