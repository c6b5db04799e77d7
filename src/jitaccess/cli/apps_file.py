"""The shape of an apps file (``jitaccess apps apply -f FILE``): offers and
applications as code. Its own module so that only ``apps apply`` pays for building
these pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jitaccess.domain.policy import DEFAULT_ROLES, ApprovalMode


class PolicyDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: ApprovalMode = ApprovalMode.AUTOMATIC
    max_duration: str = "8h"
    approvers: list[str] = Field(default_factory=list)
    approval_timeout: str = "24h"


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
