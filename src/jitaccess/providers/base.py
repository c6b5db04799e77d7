"""The ``AccessProvider`` port: grant and revoke, both idempotent."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class GrantSpec:
    """Everything a backend needs to grant or revoke one request's access."""

    request_id: int
    app: str
    scope: str
    principal: str
    role: str
    starts_at: datetime
    ends_at: datetime
    config: Mapping[str, Any]
    #: True for a publisher's standing (always-on) access; ``request_id`` is then the
    #: standing grant's id, a separate number space.
    standing: bool = False

    @property
    def key(self) -> str:
        """A stable name for this grant, unique across requests and standing grants."""
        return f"standing:{self.request_id}" if self.standing else f"request:{self.request_id}"


class ProviderError(Exception):
    """The backend refused or failed. ``str(err)`` is shown to people as the reason."""


class AccessProvider(Protocol):
    name: str

    def grant(self, spec: GrantSpec, now: datetime) -> None:
        """Give ``spec.principal`` the role at the scope. Granting twice is harmless."""

    def revoke(self, spec: GrantSpec, now: datetime) -> None:
        """Take it away. Revoking what is not (or no longer) granted succeeds."""


@runtime_checkable
class ExpiryAwareProvider(Protocol):
    """Providers whose backend knows when a grant ends (optional): Azure's scheduled
    assignments, the webhook's signed ``ends_at``. When a window is extended the sweep
    calls ``extend`` with ``spec.ends_at`` already moved; the grant itself stays, so
    access never lapses. Providers without it need nothing: jitaccess revokes at
    ``ends_at`` whatever it is."""

    def extend(self, spec: GrantSpec, now: datetime) -> None:
        """Move the backend's end of ``spec``'s grant to ``spec.ends_at``. Idempotent."""


@runtime_checkable
class DefinitionChecker(Protocol):
    """Providers that know what a scope and a role must look like for them (optional):
    an application naming them is refused at registration (``apps register``, ``apps
    apply``) when its scope or a role could never be granted, instead of failing at the
    first request. Each raises :class:`ProviderError` saying what is accepted."""

    def validate_scope(self, scope: str) -> None: ...

    def validate_role(self, role: str, config: Mapping[str, Any]) -> None: ...


@runtime_checkable
class GrantNotices(Protocol):
    """Providers that have something people should know about how a grant was made
    (optional): e.g. Azure granting a plain role assignment because the tenant lacks
    PIM. The sweep takes it after a successful grant and audits it with the activation."""

    def take_notice(self, spec: GrantSpec) -> str | None:
        """The notice for ``spec``'s last grant, once; None when there is nothing to say."""


@runtime_checkable
class BatchProvider(Protocol):
    """Providers that can take a sweep's batch in one call (optional). Each returns, per
    spec and in order, None when done or the error people will see for that spec."""

    def grant_many(self, specs: Sequence[GrantSpec], now: datetime) -> list[str | None]: ...

    def revoke_many(self, specs: Sequence[GrantSpec], now: datetime) -> list[str | None]: ...


class HeldGrantLike(Protocol):
    """A grant a backend reports holding; jitaccess's own carry their request id."""

    @property
    def request_id(self) -> int | None: ...

    @property
    def standing(self) -> bool: ...


@dataclass(frozen=True)
class HeldGrant:
    request_id: int | None
    scope: str
    principal: str
    role: str
    standing: bool = False


@runtime_checkable
class GrantLister(Protocol):
    """Providers that can list what they hold, so reconciliation can compare."""

    def list_grants(self, scope: str, config: Mapping[str, Any]) -> Sequence[HeldGrantLike]:
        """jitaccess's grants the backend holds at ``scope``."""


class ProviderRegistry:
    """Providers by name; applications name theirs at registration.

    A provider whose SDK is slow to import (Azure's) can be registered as a factory,
    and plug-in discovery as a loader: both run on the first lookup that needs them,
    so a command that never calls a backend never imports one."""

    def __init__(self) -> None:
        self._providers: dict[str, AccessProvider] = {}
        self._factories: dict[str, Callable[[], AccessProvider]] = {}
        self._loaders: list[Callable[[ProviderRegistry], None]] = []
        self._lock = threading.RLock()

    def register(self, provider: AccessProvider) -> None:
        with self._lock:
            self._factories.pop(provider.name, None)
            self._providers[provider.name] = provider

    def register_factory(self, name: str, factory: Callable[[], AccessProvider]) -> None:
        """Register the provider ``factory()`` returns, made on first lookup of ``name``."""
        with self._lock:
            self._providers.pop(name, None)
            self._factories[name] = factory

    def add_loader(self, loader: Callable[[ProviderRegistry], None]) -> None:
        """Run ``loader(self)`` (it registers more providers) before the next lookup."""
        with self._lock:
            self._loaders.append(loader)

    def _run_loaders(self) -> None:
        while self._loaders:
            self._loaders.pop(0)(self)

    def load_all(self) -> None:
        """Make every provider now (``serve`` does, to report a misconfigured one at start)."""
        with self._lock:
            self._run_loaders()
            for name in list(self._factories):
                self._make(name)

    def _make(self, name: str) -> AccessProvider:
        provider = self._factories.pop(name)()
        self._providers[name] = provider
        return provider

    def names(self) -> list[str]:
        with self._lock:
            self._run_loaders()
            return sorted({*self._providers, *self._factories})

    def get(self, name: str) -> AccessProvider:
        with self._lock:
            self._run_loaders()
            if name in self._factories:
                return self._make(name)
            try:
                return self._providers[name]
            except KeyError:
                raise ProviderError(
                    f"no access provider named '{name}' (known: {', '.join(self.names())})"
                ) from None
