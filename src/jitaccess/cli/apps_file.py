"""The apps file (``jitaccess apps apply -f FILE``): offers and applications as code,
its shape (pydantic models) and reading it into specs. Its own module so that only
``apps apply`` pays for building these pydantic models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jitaccess.catalog import OfferSpec
from jitaccess.cli.params import to_duration_or
from jitaccess.domain.policy import (
    DEFAULT_APPROVAL_TIMEOUT,
    DEFAULT_BREAKGLASS_MAX,
    DEFAULT_MAX_DURATION,
    DEFAULT_ROLES,
    ApprovalMode,
    Policy,
)
from jitaccess.service import AppSpec

AppEntry = tuple[AppSpec, str | None, bool | None]


class PolicyDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: ApprovalMode = ApprovalMode.AUTOMATIC
    max_duration: str = "8h"
    approvers: list[str] = Field(default_factory=list)
    approval_timeout: str = "24h"
    breakglass: list[str] = Field(default_factory=list)
    breakglass_max: str = "1h"
    #: How many approvers must approve; approvers may be people (U…) or groups (S…).
    required_approvals: int = 1
    #: Slack channel ID every request is posted to; absent or empty: no feed.
    feed_channel: str | None = None


class AppDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    scope: str
    offer: str | None = None
    publishers: list[str] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=lambda: list(DEFAULT_ROLES))
    admins: list[str] = Field(default_factory=list)
    jit_enabled: bool | None = None
    policy: PolicyDoc = Field(default_factory=PolicyDoc)
    provider: str = "log"
    provider_config: dict[str, Any] = Field(default_factory=dict)


class OfferDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    publishers: list[str]
    roles: list[str] = Field(default_factory=lambda: list(DEFAULT_ROLES))
    standing_role: str = "Reader"
    jit_available: bool = True
    provider_config: dict[str, Any] = Field(default_factory=dict)


class AppsDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    offers: list[OfferDoc] = Field(default_factory=list)
    apps: list[AppDoc] = Field(default_factory=list)


def load_apps(path: Path) -> tuple[list[OfferSpec], list[AppEntry]]:
    """The offers and the applications (with the offer each deploys and its JIT choice)
    that the file at ``path`` declares; anything wrong in it is a usage error."""
    try:
        raw = yaml.safe_load(path.read_text())
        doc = AppsDoc.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise typer.BadParameter(f"{path} is not a valid apps file: {problems}") from None
    if not doc.apps and not doc.offers:
        raise typer.BadParameter(f"{path} has no `apps:` or `offers:` entries")
    offers = [
        OfferSpec(
            name=o.name,
            publishers=tuple(o.publishers),
            roles=tuple(o.roles),
            standing_role=o.standing_role,
            jit_available=o.jit_available,
            provider_config=o.provider_config,
        )
        for o in doc.offers
    ]
    apps: list[AppEntry] = []
    for item in doc.apps:
        if item.offer is None and not item.publishers:
            raise typer.BadParameter(f"{path}: app {item.name} needs `offer:` or `publishers:`")
        policy = Policy(
            mode=item.policy.mode,
            max_duration=to_duration_or(item.policy.max_duration, DEFAULT_MAX_DURATION),
            approvers=tuple(item.policy.approvers),
            approval_timeout=to_duration_or(item.policy.approval_timeout, DEFAULT_APPROVAL_TIMEOUT),
            breakglass=tuple(item.policy.breakglass),
            breakglass_max=to_duration_or(item.policy.breakglass_max, DEFAULT_BREAKGLASS_MAX),
            required_approvals=item.policy.required_approvals,
            feed_channel=item.policy.feed_channel,
        )
        spec = AppSpec(
            name=item.name,
            scope=item.scope,
            publishers=tuple(item.publishers),
            roles=tuple(item.roles),
            admins=tuple(item.admins),
            policy=policy,
            provider=item.provider,
            provider_config=item.provider_config,
        )
        apps.append((spec, item.offer, item.jit_enabled))
    return offers, apps
