"""The fake ARM now ships with the sandbox (``jitaccess_sandbox.fake_arm``); tests and
benchmarks keep importing it from here."""

from jitaccess_sandbox.fake_arm import (
    ARM_SCOPE,
    TOKEN,
    ActivityEvent,
    Assignment,
    FakeArm,
    FakeCredential,
    make_tls_files,
)

__all__ = [
    "ARM_SCOPE",
    "TOKEN",
    "ActivityEvent",
    "Assignment",
    "FakeArm",
    "FakeCredential",
    "make_tls_files",
]
