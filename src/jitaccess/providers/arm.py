"""One connection to Azure Resource Manager, shared by every ARM client here.

The ``azure`` provider (role assignments, PIM schedule requests) and the Activity Log
reader talk to the same endpoint with the same identity, TLS trust, timeouts and
retry policy, and every answer is checked for its shape (``arm_answers``); this is
where those live, so the two cannot drift apart.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy

from jitaccess.providers import arm_answers
from jitaccess.providers.base import ProviderError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.exceptions import HttpResponseError

DEFAULT_BASE_URL = "https://management.azure.com"
#: The longest a server's Retry-After may hold up a call (the sweep has work to do).
MAX_RETRY_AFTER = 5.0


def shorten(text: str | None, limit: int) -> str:
    """Azure's text on one line, at most ``limit`` characters, for people to read."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def error_code(err: HttpResponseError) -> str:
    """ARM's error code (``RoleAssignmentExists``…), else the HTTP reason."""
    code = err.error.code if err.error is not None else None
    return code or (err.reason or "")


def error_message(err: HttpResponseError, limit: int) -> str:
    """ARM's error message, else the SDK's, shortened."""
    message = err.error.message if err.error is not None else None
    return shorten(message or err.message, limit)


class CappedRetryPolicy(RetryPolicy[Any, Any]):
    """azure-core's retry policy, but a server's Retry-After cannot stall us for long."""

    def get_retry_after(self, response: PipelineResponse[Any, Any]) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, MAX_RETRY_AFTER)


def credential_from_settings(
    tenant_id: str | None,
    client_id: str | None,
    client_secret: str | None,
    *,
    authority_host: str | None = None,
    connection_verify: str | bool = True,
) -> TokenCredential | None:
    """A service principal (client secret) if all three are given; None (then
    DefaultAzureCredential, made at first use) if none is; refused if only some are.

    ``authority_host`` (``AZURE_AUTHORITY_HOST``) is the Entra host it signs in at,
    Microsoft's public cloud by default. msal validates a host it does not know by asking
    Microsoft's instance discovery, which answers only for Microsoft's own clouds; for
    any other host (Azure Stack, a private cloud, a local stand-in) discovery is turned
    off, as azure-identity documents for those. ``connection_verify`` is the CA bundle
    the token requests trust (True: the system's)."""
    given = {"tenant_id": tenant_id, "client_id": client_id, "client_secret": client_secret}
    if tenant_id and client_id and client_secret:
        from azure.identity import ClientSecretCredential

        return ClientSecretCredential(
            tenant_id,
            client_id,
            client_secret,
            **authority_options(authority_host),
            **({} if connection_verify is True else {"connection_verify": connection_verify}),
        )
    if any(given.values()):
        missing = ", ".join(k for k, v in given.items() if not v)
        raise ProviderError(
            f"Azure settings are incomplete (missing {missing}): set tenant id, client id and "
            "client secret together, or none of them to use managed identity / "
            "DefaultAzureCredential"
        )
    return None


def authority_options(authority_host: str | None) -> dict[str, Any]:
    """azure-identity's keyword arguments for signing in at ``authority_host`` (None:
    its default, which is ``AZURE_AUTHORITY_HOST`` from the environment or Microsoft's
    public cloud). See :func:`credential_from_settings`."""
    if not authority_host:
        return {}
    from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS

    host = urlsplit(authority_host if "//" in authority_host else f"//{authority_host}").hostname
    options: dict[str, Any] = {"authority": authority_host}
    if (host or "").lower() not in WELL_KNOWN_AUTHORITY_HOSTS:
        options["disable_instance_discovery"] = True
    return options


class ArmConnection:
    """The endpoint, TLS trust, timeouts and retries every ARM client shares, and one
    credential: the one given, or DefaultAzureCredential (managed identity, workload
    identity, the AZURE_* variables, ``az login``) made at first use. ``close`` closes
    the credential only when this connection owns it."""

    def __init__(
        self,
        credential: TokenCredential | None = None,
        *,
        base_url: str | None = None,
        connection_verify: str | bool = True,
        timeout: float = 30,
        retry_total: int = 2,
        owns_credential: bool = False,
    ) -> None:
        self._credential = credential
        self._owns_credential = owns_credential and credential is not None
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.verify = connection_verify
        self.timeout = float(timeout)
        self.retry_total = retry_total
        self._lock = threading.Lock()

    def credential(self) -> TokenCredential:
        with self._lock:
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
                self._owns_credential = True
            return self._credential

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for any azure-mgmt client's constructor."""
        return {
            "base_url": self.base_url,
            "connection_verify": self.verify,
            "connection_timeout": min(self.timeout, 10.0),
            "read_timeout": self.timeout,
            # Every successful answer is checked for its documented shape before the
            # SDK deserializes it (providers/arm_answers.py).
            "raw_response_hook": arm_answers.check,
            "retry_policy": CappedRetryPolicy(
                retry_total=self.retry_total,
                retry_backoff_factor=0.5,
                retry_backoff_max=MAX_RETRY_AFTER,
                timeout=self.timeout,
            ),
        }

    def close(self) -> None:
        with self._lock:
            credential, owned = self._credential, self._owns_credential
        close = getattr(credential, "close", None)
        if owned and callable(close):
            close()
