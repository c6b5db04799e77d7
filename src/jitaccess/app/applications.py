"""The application use cases: register, apply, change the policy.

Each public method is one use case in one transaction; ``now`` is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jitaccess.domain import policy as rules
from jitaccess.domain.policy import Policy


@dataclass(frozen=True)
class AppSpec:
    """A managed application as registered (CLI flags or ``apps apply`` YAML)."""

    name: str
    scope: str
    publishers: tuple[str, ...]
    roles: tuple[str, ...] = rules.DEFAULT_ROLES
    admins: tuple[str, ...] = ()
    jit_enabled: bool = True
    policy: Policy = field(default_factory=Policy)
    provider: str = "log"
    provider_config: dict[str, Any] = field(default_factory=dict)


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
