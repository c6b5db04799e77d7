"""Which providers exist: the built-in ones and third-party plug-ins.

A plug-in is an entry point in the ``jitaccess.providers`` group whose object is
called with the settings and returns an ``AccessProvider``::

    [project.entry-points."jitaccess.providers"]
    vault = "my_package.vault:VaultProvider"   # VaultProvider(settings) -> provider
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from jitaccess.providers.base import AccessProvider, GrantSpec, ProviderError, ProviderRegistry
from jitaccess.providers.log import LogProvider
from jitaccess.settings import Settings
from jitaccess.store.db import Database

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger("jitaccess.providers")
ENTRY_POINT_GROUP = "jitaccess.providers"


def build_registry(
    settings: Settings, db: Database, *, azure_credential: TokenCredential | None = None
) -> ProviderRegistry:
    """The built-in providers and the plug-ins. Only the log provider is made now: the
    others (Azure's SDK, the webhook's HTTP client) and the plug-in scan are slow to
    import, so they are made on the first lookup (or ``load_all()``), in the same
    order as ever: a plug-in of the same name replaces a built-in provider.
    ``azure_credential`` replaces the one the settings describe (the sandbox's fake ARM)."""
    registry = ProviderRegistry()
    registry.register(LogProvider(db))
    registry.register_factory("webhook", _webhook)
    registry.register_factory("azure", lambda: _azure(settings, azure_credential))
    registry.add_loader(lambda registry: _plugins(registry, settings))
    return registry


def _plugins(registry: ProviderRegistry, settings: Settings) -> None:
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            registry.register(entry.load()(settings))
        except Exception:  # a broken plug-in must not stop the built-in providers
            log.exception("could not load access provider plug-in %s", entry.name)


def _webhook() -> AccessProvider:
    from jitaccess.providers.webhook import WebhookProvider

    return WebhookProvider()


def _azure(settings: Settings, credential: TokenCredential | None = None) -> AccessProvider:
    from jitaccess.providers.azure import AzureProvider

    verify: str | bool = settings.azure_ca_bundle or True
    if credential is not None:
        return AzureProvider(
            credential, base_url=settings.azure_arm_url or None, connection_verify=verify
        )
    if settings.azure_client_secret or settings.azure_client_id or settings.azure_tenant_id:
        try:
            return AzureProvider.from_settings(
                settings.azure_tenant_id,
                settings.azure_client_id,
                settings.azure_client_secret,
                settings.azure_arm_url or None,
                connection_verify=verify,
                authority_host=settings.azure_authority_host,
                token_verify=settings.entra_ca_bundle or True,
            )
        except ProviderError as exc:
            log.error("the azure provider is not usable: %s", exc)
            return Unavailable("azure", str(exc))
    # DefaultAzureCredential (managed identity, workload identity, az login …),
    # created on first use, not now.
    return AzureProvider(base_url=settings.azure_arm_url or None, connection_verify=verify)


class Unavailable:
    """Stands in for a misconfigured provider: every call fails with the reason,
    so requests show what to fix instead of the service failing to start."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def grant(self, spec: GrantSpec, now: datetime) -> None:
        raise ProviderError(self.reason)

    def revoke(self, spec: GrantSpec, now: datetime) -> None:
        raise ProviderError(self.reason)
