"""The callback ids (modals) and action ids (buttons) the listeners route on: the one
place both the Block Kit that shows them and the listeners that receive them read."""

from __future__ import annotations

# callback ids (modals) and action ids (buttons); listeners route on these.
REQUEST_MODAL = "jit_request"
DECISION_MODAL = "jit_decision"
CONFIG_MODAL = "jit_config"
APPROVE = "jit_approve"
DENY = "jit_deny"
REVOKE = "jit_revoke"
CANCEL = "jit_cancel"
RELEASE = "jit_release"
APP_PICKED = "jit_request_app"
BREAKGLASS_ACK = "jit_breakglass_ack"
REVIEW_MODAL = "jit_breakglass_review"
EXTEND = "jit_extend"
EXTEND_MODAL = "jit_extend_modal"
APPROVE_EXTENSION = "jit_approve_extension"
DENY_EXTENSION = "jit_deny_extension"
