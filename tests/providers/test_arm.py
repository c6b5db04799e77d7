"""jitaccess's own Azure identity, from settings: where it signs in."""

from __future__ import annotations

import pytest

from jitaccess.providers.arm import authority_options, credential_from_settings
from jitaccess.providers.base import ProviderError


@pytest.mark.parametrize("host", [None, ""])
def test_no_authority_host_leaves_azure_identity_its_default(host: str | None) -> None:
    assert authority_options(host) == {}


@pytest.mark.parametrize(
    "host",
    [
        "login.microsoftonline.us",
        "https://login.microsoftonline.com",
        "https://login.chinacloudapi.cn/",
        "https://LOGIN.microsoftonline.com",
    ],
)
def test_microsofts_own_hosts_keep_instance_discovery(host: str) -> None:
    assert authority_options(host) == {"authority": host}


@pytest.mark.parametrize(
    "host", ["https://127.0.0.1:8443", "adfs.contoso.example", "https://login.example.com"]
)
def test_any_other_host_turns_instance_discovery_off(host: str) -> None:
    """msal would ask Microsoft about a host Microsoft does not know, and fail."""
    assert authority_options(host) == {"authority": host, "disable_instance_discovery": True}


def test_part_of_a_service_principal_is_refused_naming_the_rest() -> None:
    with pytest.raises(ProviderError, match=r"missing client_id, client_secret"):
        credential_from_settings("tenant", None, None, authority_host="https://127.0.0.1:1")


def test_none_of_it_is_default_azure_credential_later() -> None:
    assert credential_from_settings(None, None, None, authority_host="x.example") is None
