"""The seed's five-step flow: offer, deploy (with JIT and policy), change the policy,
request, approve; standing access made real; removing an application; the
per-application views in Slack."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from conftest import ADMIN, APPROVER, APPROVER2, OUTSIDER, PUBLISHER, START, Cli, utc
from fakes.fake_arm import FakeArm
from jitaccess.app.service import JitService
from jitaccess.store.db import Database
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SlackWorld, texts

T0 = utc(START)
H = timedelta(hours=1)
SCOPE = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/mrg-crm"
OID = "11111111-2222-3333-4444-555555555555"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"


def offer(cli: Cli, *extra: str) -> None:
    cli(
        "offers",
        "register",
        "crm-offer",
        "--publisher",
        PUBLISHER,
        "--role",
        "Contributor",
        "--role",
        "Owner",
        *extra,
    )


def deploy(cli: Cli, *extra: str, code: int = 0):  # type: ignore[no-untyped-def]
    return cli(
        "apps",
        "register",
        "crm",
        "--offer",
        "crm-offer",
        "--scope",
        SCOPE,
        "--admin",
        ADMIN,
        *extra,
        code=code,
    )


def test_offer_with_jit_deployed_by_default_enables_jit_and_grants_reader(cli: Cli) -> None:
    offer(cli)
    assert cli.json("offers", "show", "crm-offer")["jit_available"] is True
    out = deploy(cli).stdout
    assert "JIT enabled" in out and "Standing access: Reader for UPUB1: held" in out
    app = cli.json("apps", "show", "crm")
    assert app["jit_enabled"] is True
    assert app["policy"] == {
        "mode": "automatic",
        "max_duration": "8h",
        "approvers": [],
        "approval_timeout": "24h",
        "breakglass": [],
        "breakglass_max": "1h",
        "required_approvals": 1,
        "feed_channel": None,
    }
    assert (app["publishers"], app["roles"]) == ([PUBLISHER], ["Contributor", "Owner"])
    assert [(g["role"], g["held"]) for g in app["standing"]] == [("Reader", True)]


def test_deployed_without_jit_the_publisher_holds_the_eligible_roles_for_good(cli: Cli) -> None:
    offer(cli)
    out = deploy(cli, "--no-jit").stdout
    assert "JIT disabled" in out
    standing = cli.json("apps", "show", "crm")["standing"]
    assert sorted((g["role"], g["held"]) for g in standing) == [
        ("Contributor", True),
        ("Owner", True),
    ]
    refused = cli(
        "requests",
        "submit",
        "crm",
        "--as",
        PUBLISHER,
        "--role",
        "Owner",
        "--duration",
        "1h",
        "--reason",
        "x",
        code=1,
    )
    assert "the publisher already has permanent access" in refused.stderr


def test_jit_on_an_offer_without_jit_available_is_refused_with_the_reason(cli: Cli) -> None:
    offer(cli, "--no-jit-available")
    refused = deploy(cli, "--jit", code=1)
    assert "does not make JIT available" in refused.stderr
    assert cli.json("apps", "list") == []
    # without --jit it deploys with JIT disabled (the offer's default)
    deploy(cli)
    assert cli.json("apps", "show", "crm")["jit_enabled"] is False


def test_policy_customised_at_deployment_is_applied(cli: Cli) -> None:
    offer(cli)
    deploy(
        cli,
        "--mode",
        "manual",
        "--approver",
        APPROVER,
        "--max-duration",
        "2h",
        "--approval-timeout",
        "4h",
    )
    assert cli.json("apps", "show", "crm")["policy"] == {
        "mode": "manual",
        "max_duration": "2h",
        "approvers": [APPROVER],
        "approval_timeout": "4h",
        "breakglass": [],
        "breakglass_max": "1h",
        "required_approvals": 1,
        "feed_channel": None,
    }


def test_offers_and_instances_in_one_yaml(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "apps.yaml").write_text(
        textwrap.dedent(f"""
        offers:
          - name: crm-offer
            publishers: [{PUBLISHER}]
            roles: [Contributor, Owner]
            standing_role: Reader
        apps:
          - name: crm
            offer: crm-offer
            scope: {SCOPE}
            admins: [{ADMIN}]
            policy: {{mode: manual, approvers: [{APPROVER}], max_duration: 4h}}
          - name: legacy
            offer: crm-offer
            scope: {SCOPE}-legacy
            jit_enabled: false
    """)
    )
    out = cli("apps", "apply", "-f", tmp_path / "apps.yaml").stdout
    assert "offers created: crm-offer" in out and "created: crm, legacy" in out
    crm, legacy = cli.json("apps", "show", "crm"), cli.json("apps", "show", "legacy")
    assert (crm["jit_enabled"], crm["policy"]["mode"], crm["roles"]) == (
        True,
        "manual",
        ["Contributor", "Owner"],
    )
    assert [g["role"] for g in crm["standing"]] == ["Reader"]
    assert legacy["jit_enabled"] is False
    assert sorted(g["role"] for g in legacy["standing"]) == ["Contributor", "Owner"]
    again = cli("apps", "apply", "-f", tmp_path / "apps.yaml").stdout
    assert "unchanged: crm, legacy" in again


def test_removing_an_application_closes_everything_it_granted(cli: Cli) -> None:
    offer(cli)
    with freeze_time(T0) as clock:
        deploy(cli, "--mode", "manual", "--approver", APPROVER)
        submit = (
            "requests",
            "submit",
            "crm",
            "--as",
            PUBLISHER,
            "--role",
            "Owner",
            "--duration",
            "2h",
            "--reason",
            "x",
        )
        pending = cli.json(*submit, "--start", "2026-11-27T12:00Z")["id"]
        # (back to back: one person's windows for a role may not overlap)
        approved = cli.json(*submit, "--start", "2026-11-27T14:00Z")["id"]
        active = cli.json(*submit)["id"]
        cli("requests", "approve", approved, "--as", APPROVER, "--reason", "ok")
        cli("requests", "approve", active, "--as", APPROVER, "--reason", "ok")
        assert cli.json("requests", "show", active)["state"] == "active"
        clock.tick(timedelta(minutes=5))
        refused = cli("apps", "remove", "crm", "--as", PUBLISHER, code=1)
        assert "consumer admins" in refused.stderr
        out = cli("apps", "remove", "crm", "--as", ADMIN).stdout
    assert "Cancelled 2 requests, revoked 1 grants and 1 standing grants" in out
    states = {r["id"]: r["state"] for r in cli.json("requests", "history", "crm")}
    assert states == {pending: "cancelled", approved: "cancelled", active: "revoked"}
    assert cli.json("apps", "list") == []
    log = [json.loads(line) for line in cli("audit", "export").stdout.splitlines()]
    tail = [(e["action"], e["request_id"]) for e in log][-5:]
    assert tail == [
        ("cancel", pending),
        ("cancel", approved),
        ("revoke", active),
        ("standing_revoked", None),
        ("app_removed", None),
    ]
    assert cli("audit", "verify").exit_code == 0
    again = cli("apps", "register", "crm", "--offer", "crm-offer", "--scope", SCOPE, code=1)
    assert "was removed" in again.stderr


def test_apps_remove_json_reports_what_was_closed_and_refusals_exit_1(cli: Cli) -> None:
    """`apps remove --json` prints what it closed; a refusal exits 1 with the message on stderr."""
    offer(cli)
    with freeze_time(T0):
        deploy(cli, "--mode", "manual", "--approver", APPROVER)
        rid = cli.json(
            "requests", "submit", "crm", "--as", PUBLISHER, "--role", "Owner",
            "--duration", "2h", "--reason", "x", "--start", "2026-11-27T12:00Z",
        )["id"]  # fmt: skip
        refused = cli("apps", "remove", "crm", "--as", PUBLISHER, "--json", code=1)
        assert refused.stdout == ""
        assert refused.stderr.startswith("error:") and "consumer admins" in refused.stderr
        missing = cli("apps", "remove", "nope", "--as", ADMIN, "--json", code=1)
        assert missing.stdout == "" and "nope" in missing.stderr
        removed = cli.json("apps", "remove", "crm", "--as", ADMIN)
    assert removed == {
        "name": "crm",
        "removed": True,
        "cancelled": [rid],
        "revoked": [],
        "standing_revoked": 1,
        "still_active": [],
        "standing_failing": [],
    }
    assert cli.json("apps", "list") == []


def test_removal_is_refused_while_a_revoke_is_failing_unless_forced(db: Database) -> None:
    from conftest import make_service
    from test_sweep import FlakyProvider

    service, _ = make_service(db)
    flaky = FlakyProvider(revoke_failures=99)
    service.providers.register(flaky)
    catalog = service.catalog
    from jitaccess.app.service import AppSpec
    from jitaccess.domain.policy import Policy

    catalog.deploy(
        AppSpec(
            name="crm",
            scope=SCOPE,
            publishers=(PUBLISHER,),
            admins=(ADMIN,),
            policy=Policy(),
            provider="flaky",
        ),
        offer=None,
        jit=None,
        actor="test",
        now=T0,
    )
    rid = service.submit(
        "crm", requester=PUBLISHER, role="Contributor", duration=H, justification="x", now=T0
    ).id
    service.sweep(T0 + H)  # the expiry's revoke fails
    assert service.get_request(rid).revoke_failing_since is not None
    with pytest.raises(Exception, match="revoke is failing .*--force"):
        catalog.remove("crm", actor=ADMIN, now=T0 + H)
    with pytest.raises(Exception, match="reason is required"):
        catalog.remove("crm", actor=ADMIN, now=T0 + H, force=True)
    report = catalog.remove(
        "crm", actor=ADMIN, now=T0 + H, force=True, reason="backend decommissioned"
    )
    assert report.removed and report.still_active == [rid]


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    with freeze_time(START):
        yield SlackWorld(fake_slack, db)


def test_slack_per_application_pending_and_history(world: SlackWorld) -> None:
    from conftest import register

    register(world.service)
    register(world.service, "erp")
    crm = world.say(PUBLISHER, "request crm Owner 1h crm work")
    world.say(PUBLISHER, "request erp Owner 1h erp work")
    assert "crm" in crm
    pending = world.say(APPROVER, "pending crm")
    assert "crm work" not in pending  # the list shows requests, not justifications
    assert "#1" in pending and "#2" not in pending and "Waiting for approval on crm" in pending
    [rid] = [r.id for r in world.service.list_requests(app="crm")]
    world.say(APPROVER2, f"deny {rid} not this week")
    history = world.say(PUBLISHER, "history crm")
    assert f"#{rid}" in history and "denied" in history and "not this week" in history
    assert f"<@{APPROVER2}>" in history
    for command in ("pending crm", "history crm"):
        refused = world.say(OUTSIDER, command)
        assert "publishers, approvers and consumer admins" in refused
    assert "not a page number" in world.say(PUBLISHER, "history crm zero")


def test_history_pages(world: SlackWorld) -> None:
    from conftest import register
    from jitaccess.domain.policy import ApprovalMode

    register(world.service, mode=ApprovalMode.AUTOMATIC, approvers=())
    for i in range(12):  # back to back: one person's windows for a role may not overlap
        world.service.submit(
            "crm",
            requester=PUBLISHER,
            role="Owner",
            duration=H,
            justification=f"job {i}",
            starts_at=T0 + (i + 1) * H,
            now=T0,
        )
    first, second = world.say(ADMIN, "history crm"), world.say(ADMIN, "history crm 2")
    assert "#12" in first and "#3" in first and "#2" not in first
    assert "More: `/jit history crm 2`" in first
    assert "#2" in second and "#1" in second and "More:" not in second


# -- the five steps, through the CLI and Slack, with real grants on the fake Azure ------
PLUGIN = """
import os
from fakes.fake_arm import FakeCredential
from jitaccess.providers.azure import AzureProvider

def fake_azure(settings):
    return AzureProvider(FakeCredential(), base_url=os.environ["TEST_ARM_URL"],
                         connection_verify=os.environ["TEST_ARM_CA"], timeout=5, retry_total=0)
"""


@pytest.fixture
def arm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeArm]:
    """The `azure` provider, pointed at the fake ARM through a real entry-point plug-in."""
    with FakeArm() as server:
        (tmp_path / "fake_azure_plugin.py").write_text(PLUGIN)
        dist = tmp_path / "fake_azure_plugin-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: fake-azure-plugin\nVersion: 1.0\n"
        )
        (dist / "entry_points.txt").write_text(
            "[jitaccess.providers]\nazure = fake_azure_plugin:fake_azure\n"
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.setenv("TEST_ARM_URL", server.base_url)
        monkeypatch.setenv("TEST_ARM_CA", str(server.ca_file))
        yield server


def test_five_steps_through_the_cli_and_slack_with_real_azure_grants(
    cli: Cli, arm: FakeArm, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    from jitaccess.container import build
    from jitaccess.settings import Settings

    principals = json.dumps({"principals": {PUBLISHER: {"object_id": OID, "type": "User"}}})
    # 1. The publisher offers the application, with JIT available.
    cli(
        "offers",
        "register",
        "crm-offer",
        "--publisher",
        PUBLISHER,
        "--role",
        "Contributor",
        "--provider-config",
        principals,
    )
    # 2. The consumer deploys it with JIT (the default) and a policy.
    cli(
        "apps",
        "register",
        "crm",
        "--offer",
        "crm-offer",
        "--scope",
        SCOPE,
        "--admin",
        ADMIN,
        "--provider",
        "azure",
        "--mode",
        "manual",
        "--approver",
        APPROVER,
    )
    assert [(a.role_definition_id.rsplit("/", 1)[-1], a.principal_id) for a in arm.at(SCOPE)] == [
        (READER, OID)
    ]  # standing Reader, really granted

    container = build(Settings(JITACCESS_DATABASE_URL=f"sqlite:///{tmp_path / 'j.db'}"))
    with freeze_time(START) as clock:
        world = SlackWorld.__new__(SlackWorld)
        world_init(world, fake_slack, container)
        # 3. The consumer's admin changes the policy from Slack.
        world.command(ADMIN, "config crm")
        modal = world.last_modal(ADMIN)
        world.submit(
            ADMIN,
            modal,
            {
                "mode": {"mode": {"type": "static_select", "selected_option": {"value": "manual"}}},
                "max_duration": {
                    "max_duration": {"type": "static_select", "selected_option": {"value": "4h"}}
                },
                "approvers": {
                    "approvers": {
                        "type": "multi_users_select",
                        "selected_users": [APPROVER, APPROVER2],
                    }
                },
                "approval_timeout": {
                    "approval_timeout": {
                        "type": "static_select",
                        "selected_option": {"value": "8h"},
                    }
                },
            },
        )
        assert cli.json("apps", "show", "crm")["policy"]["approvers"] == [APPROVER, APPROVER2]
        # 4. The publisher requests in Slack.
        assert "submitted" in world.say(PUBLISHER, "request crm Contributor 2h patch CVE-1")
        [request] = container.service.list_requests(app="crm")
        world.deliver()
        # 5. An approver approves, from the application's own list.
        assert f"#{request.id}" in world.say(APPROVER2, "pending crm")
        world.click(APPROVER2, world.card_for(APPROVER2, request.id), "jit_approve")
        world.submit_reason(APPROVER2, "CVE fix approved")
        world.tick()
        # Scheduled (PIM) by default: the JIT assignment carries its end, Azure enforces it.
        [jit] = [a for a in arm.at(SCOPE) if a.scheduled]
        assert (jit.principal_id, jit.ends_at) == (OID, request.ends_at)
        assert len(arm.at(SCOPE)) == 2  # standing Reader + the JIT Contributor
        clock.tick(2 * H)
        world.tick()
    assert [a.role_definition_id.rsplit("/", 1)[-1] for a in arm.at(SCOPE)] == [READER]
    shown = cli.json("requests", "show", request.id)
    assert (shown["state"], shown["decided_by"]) == ("expired", APPROVER2)
    assert "CVE fix approved" in texts(world.card_for(APPROVER, request.id))
    container.close()


def world_init(world: SlackWorld, fake: FakeSlack, container) -> None:  # type: ignore[no-untyped-def]
    """A SlackWorld on the CLI's own container (its providers include the plug-in)."""
    from jitaccess.app.outbox import OutboxRelay
    from jitaccess.slack.runtime import build_slack, slack_client
    from slack_harness import SECRET, now

    world.fake = fake
    world.db = container.db
    # The container's use cases, with clicks that never wait on a backend (as under serve).
    deps = container.service.deps
    world.service = JitService(replace(deps, after_change=replace(deps.after_change, inline=False)))
    world.runtime = build_slack(
        world.service,
        slack_client("xoxb-t", fake.base_url),
        signing_secret=SECRET,
        clock=now,
        process_before_response=True,
    )
    world.relay = OutboxRelay(container.db, world.runtime.notifier)
    world._responses = 0
