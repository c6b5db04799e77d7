"""Native mode's pure rules: Azure's jitRequestState in jitaccess's words, the
multi-factor proof, the policy difference shown when the portal changed it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jitaccess.domain.errors import RuleViolation
from jitaccess.domain.native import (
    ApproverKind,
    ExternalLookupFailed,
    JitApprovalMode,
    JitApprover,
    JitRequestState,
    NativePolicy,
    SignedInUser,
    check_jit_can_be_enabled,
    check_step_up,
    native_refusal,
    state_for,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
START = NOW + timedelta(hours=1)
END = START + timedelta(hours=2)


@pytest.mark.parametrize(
    ("azure", "ours"),
    [
        (JitRequestState.PENDING, "pending"),
        (JitRequestState.APPROVED, "approved"),
        (JitRequestState.DENIED, "denied"),
        (JitRequestState.CANCELED, "cancelled"),
        (JitRequestState.TIMEOUT, "timed_out"),
        (JitRequestState.EXPIRED, "expired"),
        (JitRequestState.FAILED, "failed"),
    ],
)
def test_each_jit_request_state_has_its_state_here(azure: JitRequestState, ours: str) -> None:
    assert state_for(azure, START, END, NOW) == ours


def test_approved_is_active_within_its_window_and_expired_after() -> None:
    assert state_for(JitRequestState.APPROVED, START, END, START) == "active"
    assert state_for(JitRequestState.APPROVED, START, END, END - timedelta(seconds=1)) == "active"
    assert state_for(JitRequestState.APPROVED, START, END, END) == "expired"


def test_not_specified_is_a_failed_lookup_never_a_state() -> None:
    with pytest.raises(ExternalLookupFailed, match="NotSpecified"):
        state_for(JitRequestState.NOT_SPECIFIED, START, END, NOW)


def test_jit_cannot_be_enabled_after_deployment() -> None:
    with pytest.raises(RuleViolation, match="redeploy"):
        check_jit_can_be_enabled(False, True)
    check_jit_can_be_enabled(True, True)
    check_jit_can_be_enabled(False, False)


def _user(acrs: tuple[str, ...], signed_in: datetime | None) -> SignedInUser:
    return SignedInUser("tid", "oid", "ava@contoso.example", acrs, signed_in)


def test_step_up_needs_the_authentication_context_and_a_recent_sign_in() -> None:
    window = timedelta(hours=1)
    assert check_step_up(_user(("c1",), NOW - timedelta(minutes=5)), "c1", window, NOW) is None
    missing = check_step_up(_user((), NOW), "c1", window, NOW)
    assert missing is not None and "multi-factor" in missing
    other = check_step_up(_user(("c2",), NOW), "c1", window, NOW)
    assert other is not None
    stale = check_step_up(_user(("c1",), NOW - timedelta(hours=2)), "c1", window, NOW)
    assert stale is not None and "older" in stale
    unknown_time = check_step_up(_user(("c1",), None), "c1", window, NOW)
    assert unknown_time is not None


def test_the_difference_names_each_change() -> None:
    before = NativePolicy(
        True,
        JitApprovalMode.MANUAL,
        (JitApprover("a", ApproverKind.USER), JitApprover("g", ApproverKind.GROUP)),
        timedelta(hours=8),
    )
    after = NativePolicy(
        True,
        JitApprovalMode.AUTO,
        (JitApprover("a", ApproverKind.USER), JitApprover("b", ApproverKind.USER)),
        timedelta(hours=4),
    )
    lines = before.differences(after)
    assert "approval mode: ManualApprove → AutoApprove" in lines
    assert "maximum duration: 8h → 4h" in lines
    assert "approver added: b" in lines
    assert "approver removed: g" in lines
    assert before.differences(before) == []


def test_the_refusal_says_why_and_where() -> None:
    refusal = native_refusal("extending it", "See the portal.")
    assert "extending it" in str(refusal) and "only be tagged" in str(refusal)
    assert str(refusal).endswith("See the portal.")
