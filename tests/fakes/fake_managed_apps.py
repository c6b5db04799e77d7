"""The managed-application half of the fake ARM (``jitaccess_sandbox.fake_managed_apps``),
and what tests need to call it as a person: HS256 user tokens standing in for the fake
Entra's, and the verifier FakeArm checks them with."""

from __future__ import annotations

import time
from typing import Any

import jwt

from jitaccess_sandbox.fake_managed_apps import (
    APPROVALS_API,
    SCHEDULE_REQUESTS_API,
    SERVICE_OBJECT_ID,
    SOLUTIONS_API,
    FakeManagedApps,
)

#: The key of the tests' own user tokens (never a real one).
TEST_KEY = "jitaccess-tests-only-user-token-key-0123456789"
TENANT = "0b1e2c3d-0000-4000-8000-00000000aaaa"
ARM_AUDIENCE = "https://management.azure.com"


def user_token(oid: str, *, tid: str = TENANT, expired: bool = False, **claims: Any) -> str:
    """An access token for ARM as the person ``oid``."""
    now = int(time.time())
    payload = {
        "aud": ARM_AUDIENCE,
        "iss": f"https://sts.windows.net/{tid}/",
        "oid": oid,
        "tid": tid,
        "azp": "11111111-aaaa-4000-8000-000000000001",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now - 1 if expired else now + 3600,
        **claims,
    }
    return jwt.encode(payload, TEST_KEY, algorithm="HS256")


def verify_user_token(token: str) -> dict[str, Any] | None:
    """FakeArm.user_token_verifier for :func:`user_token`'s tokens."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, TEST_KEY, algorithms=["HS256"], audience=ARM_AUDIENCE
        )
    except jwt.PyJWTError:
        return None
    return claims


__all__ = [
    "APPROVALS_API",
    "ARM_AUDIENCE",
    "SCHEDULE_REQUESTS_API",
    "SERVICE_OBJECT_ID",
    "SOLUTIONS_API",
    "TENANT",
    "TEST_KEY",
    "FakeManagedApps",
    "user_token",
    "verify_user_token",
]
