"""``jitaccess serve --sandbox`` (being written)."""

from __future__ import annotations


def run_sandbox(*, reset: bool = False) -> None:
    raise SystemExit("the sandbox is not written yet")
