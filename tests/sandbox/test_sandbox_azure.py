"""Azure in the sandbox: the demo app on the real azure provider against the fake ARM,
scheduled expiry, extension and the activity summary, through the sandbox page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jitaccess.app.service import JitService
from jitaccess.providers.azure import AzureProvider
from jitaccess.slack.blocks import ids
from jitaccess_sandbox import demo
from jitaccess_sandbox.run import Sandbox
from test_sandbox import call, eventually, open_modal, start_sandbox, state, timeline_text


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    instance = start_sandbox(tmp_path)
    yield instance
    instance.stop()


def azure(sandbox: Sandbox, user: str = demo.PUBLISHER) -> dict[str, Any]:
    status, body = call(sandbox, f"azure?user={user}")
    assert status == 200, body
    return body


def approve_extension(sandbox: Sandbox, request_id: int) -> None:
    """Ava clicks Approve on the extension card and gives a reason."""
    ava = demo.APPROVER

    def card() -> dict[str, Any] | None:
        return next(
            (
                i
                for i in state(sandbox, ava)["timeline"]
                if f"Extension of request #{request_id}" in i["html"]
                and ids.APPROVE_EXTENSION in i["html"]
                # The extension card is a broadcast reply in the thread of Ava's card:
                # its copy in the conversation is a message of its own (its own ts).
                and "replied to a thread" in i["html"]
            ),
            None,
        )

    found = eventually(card)
    block = re.search(
        rf'data-block-id="([^"]+)" data-action-id="{ids.APPROVE_EXTENSION}"', found["html"]
    )
    assert block, found["html"]
    status, body = call(
        sandbox,
        "click",
        {
            "user": ava,
            "source": "message",
            "channel": found["channel"],
            "ts": found["ts"],
            "block_id": block.group(1),
            "action_id": ids.APPROVE_EXTENSION,
            "value": str(request_id),
        },
    )
    assert body["ok"], body
    decision = open_modal(sandbox, ava, ids.DECISION_MODAL)
    status, body = call(
        sandbox, "submit", {"user": ava, "view_id": decision["id"], "values": {"reason": "CHG-8"}}
    )
    assert body["ok"], body


def test_the_demo_has_an_azure_app_and_the_panel_starts_empty(sandbox: Sandbox) -> None:
    """tailspin-azure is listed on the azure provider; the Azure panel shows nothing held."""
    assert sandbox.server is not None
    app = sandbox.server.container.service.get_app(demo.AZURE_APP)
    assert app.provider == "azure"
    panel = azure(sandbox)
    assert panel["enabled"] is True
    assert (panel["assignments"], panel["schedule_requests"]) == ([], [])
    assert call(sandbox, "azure?user=UNOBODY")[0] == 400


def test_an_older_sandbox_database_gains_the_azure_app_on_its_next_start(
    service: JitService,
) -> None:
    """Seeding registers only the demo apps missing by name, so tailspin-azure appears."""
    now = datetime(2026, 11, 27, 10, 0).astimezone()
    service.providers.register(AzureProvider())  # never called: registering asks no Azure
    for spec in demo.APPS:
        if spec.name != demo.AZURE_APP:
            service.register_app(spec, actor=demo.SEEDED_BY, now=now)
    assert demo.seed(service, now) == [demo.AZURE_APP]
    assert demo.seed(service, now) == []
    assert service.get_app(demo.AZURE_APP).provider == "azure"


def test_azure_grant_extend_expire_and_summary_in_the_sandbox(sandbox: Sandbox) -> None:
    """Approved: PIM assigns with an end; extended: the end moves; past it Azure removes
    the assignment by itself; 15 minutes later Pat and Ava get what Pat did."""
    pat, ava = demo.PUBLISHER, demo.APPROVER
    call(sandbox, "command", {"user": pat, "text": "request tailspin-azure Contributor 1h deploy"})
    eventually(lambda: "submitted" in timeline_text(sandbox, pat))
    call(sandbox, "command", {"user": ava, "text": "approve 1 CHG-7"})
    eventually(lambda: "is active" in timeline_text(sandbox, pat))

    [held] = eventually(lambda: azure(sandbox)["assignments"])
    assert (held["role"], held["who"]) == ("Contributor", "Pat Publisher")
    first_end = datetime.fromisoformat(held["ends_at"])
    assert held["ends_label"]
    [assign] = azure(sandbox)["schedule_requests"]
    assert (assign["type"], assign["status"]) == ("AdminAssign", "Provisioned")
    assert azure(sandbox)["activity_events"] == len(demo.DEMO_ACTIVITY)

    call(sandbox, "command", {"user": pat, "text": "extend 1 30m the deploy is slow"})
    approve_extension(sandbox, 1)
    eventually(lambda: "was extended" in timeline_text(sandbox, pat))

    def moved() -> dict[str, Any] | None:
        held = azure(sandbox)["assignments"]
        if held and datetime.fromisoformat(held[0]["ends_at"]) > first_end:
            return dict(held[0])
        return None

    extended = eventually(moved)
    assert datetime.fromisoformat(extended["ends_at"]) == first_end + timedelta(minutes=30)
    assert extended["name"] == held["name"]  # the same assignment: never revoked in between
    types = [r["type"] for r in azure(sandbox)["schedule_requests"]]
    assert sorted(types) == ["AdminAssign", "AdminExtend"]

    # Past the new end Azure itself removes it; the summary comes after the delay.
    call(sandbox, "time", {"user": pat, "minutes": 95})
    assert azure(sandbox)["assignments"] == []
    eventually(lambda: "has expired" in timeline_text(sandbox, pat))
    call(sandbox, "time", {"user": pat, "minutes": 16})
    for person in (pat, ava):
        summary = eventually(
            lambda person=person: next(
                (i["html"] for i in state(sandbox, person)["timeline"] if "did</b>" in i["html"]),
                None,
            ),
            timeout=20,
        )
        assert "Microsoft.Web/sites/restart/action" in summary
        assert "Failures</b> (1)" in summary and "kv-tailspin" in summary
