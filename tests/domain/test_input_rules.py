"""Hardened input handling (issue 10): invisible text is blank, durations are whole
ASCII minutes or more, unstorable text (NUL, lone surrogates) is refused with a
message on every database, free text never pings anyone, and an early end reads
"being revoked", not "now active"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from conftest import (
    ADMIN,
    APPROVER,
    APPROVER2,
    PUBLISHER,
    START,
    Cli,
    flat,
    make_service,
    register,
    utc,
)
from jitaccess.app.service import AppSpec, JitService
from jitaccess.domain.durations import parse_duration
from jitaccess.domain.errors import RuleViolation
from jitaccess.domain.policy import (
    ApprovalMode,
    AppRules,
    Policy,
    check_reason,
    check_submission,
)
from jitaccess.slack.blocks import ids
from jitaccess.slack.listeners.base import SORRY
from jitaccess.slack.principals import SLACK_PRINCIPALS
from jitaccess.store.db import Database
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import DATE_TOKEN, SlackWorld, texts

T0 = utc(START)
H = timedelta(hours=1)
APP = AppRules(
    name="crm",
    jit_enabled=True,
    publishers=(PUBLISHER,),
    eligible_roles=("Contributor", "Owner"),
    policy=Policy(max_duration=timedelta(hours=8)),
)
INVISIBLE = [
    "\u200b",  # zero-width space
    "\u200c\u200d",  # zero-width non-joiner, joiner
    "\u2060",  # word joiner
    "\ufeff",  # byte order mark
    "\u00ad",  # soft hyphen
    "\u3164",  # Hangul filler
    "\u115f\u1160",  # Hangul choseong/jungseong fillers
    "\u2800",  # braille blank
    "\u180e",  # Mongolian vowel separator
    "\u00a0\u2003\u3000",  # no-break, em and ideographic spaces
    "\u200b \u2060\n\ufeff\t",  # mixed with ordinary whitespace
    "\u202e\u2066",  # bidi controls
]
UNSTORABLE = ["fix\x00it", "fix\ud800it", "\udcff"]


def submit(justification: str, duration: timedelta = H) -> tuple[str, object, str]:
    return check_submission(APP, PUBLISHER, "Owner", duration, None, justification, T0)


# -- 1. invisible text is blank ------------------------------------------------------
@pytest.mark.parametrize("text", INVISIBLE)
def test_invisible_only_justification_is_refused_as_blank(text: str) -> None:
    """A justification of only invisible characters gets the "required" message."""
    with pytest.raises(RuleViolation, match="A justification is required: say why"):
        submit(text)


@pytest.mark.parametrize("text", INVISIBLE)
def test_invisible_only_reason_is_refused_as_blank(text: str) -> None:
    """A decision reason of only invisible characters gets the "required" message."""
    with pytest.raises(RuleViolation, match="A reason is required to approve: say why"):
        check_reason(text, "approve")


def test_visible_text_with_invisible_characters_is_kept() -> None:
    """Text that shows something is accepted, joiners and all (emoji sequences use them)."""
    assert submit("deploy \u200bhotfix 👩\u200d💻")[2] == "deploy \u200bhotfix 👩\u200d💻"


# -- 2. durations ----------------------------------------------------------------------
@pytest.mark.parametrize("text", ["30s", "59s", "PT30S", "pt59s", "0m59s"])
def test_durations_under_a_minute_are_refused(text: str) -> None:
    """Anything shorter than a minute is refused, as the message says."""
    with pytest.raises(RuleViolation, match="too short: ask for at least a minute"):
        submit("deploy", parse_duration(text))


def test_a_minute_and_a_minute_and_a_bit_are_accepted() -> None:
    """One minute is the shortest access there is."""
    assert submit("deploy", parse_duration("1m"))[1].ends_at == T0 + timedelta(minutes=1)  # type: ignore[attr-defined]
    assert submit("deploy", parse_duration("1m30s"))[1].ends_at == T0 + timedelta(seconds=90)  # type: ignore[attr-defined]


@pytest.mark.parametrize("text", ["٢h", "２h", "²h", "1٣m", "PT٢H", "۲h", "0.5m", "1h\n"])
def test_durations_take_ascii_digits_only(text: str) -> None:
    """Other scripts' digits, superscripts and fractions are not durations."""
    with pytest.raises(ValueError, match="use forms like 90m, 2h, 1h30m or PT8H"):
        parse_duration(text if text != "1h\n" else "1h\n1h")


@pytest.mark.parametrize("field", ["max_duration", "approval_timeout"])
def test_policy_durations_under_a_minute_are_refused(field: str) -> None:
    """A policy cannot allow (or wait for) less than a minute."""
    policy = Policy(**{field: timedelta(seconds=30)})  # type: ignore[arg-type]
    with pytest.raises(RuleViolation, match="30s is too short: at least 1m"):
        policy.validated(SLACK_PRINCIPALS)


# -- 3. unstorable text on every database ----------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'j.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    database = Database(url)
    database.upgrade()
    yield database
    database.dispose()


def _counts(service: JitService) -> tuple[int, int]:
    from sqlalchemy import func, select

    from jitaccess.store.models import AccessRequest, AuditEvent

    with service.db.transaction(readonly=True) as s:
        return (
            s.execute(select(func.count()).select_from(AccessRequest)).scalar_one(),
            s.execute(select(func.count()).select_from(AuditEvent)).scalar_one(),
        )


@pytest.mark.parametrize("bad", UNSTORABLE)
def test_unstorable_text_is_refused_with_a_message_on_every_database(
    any_db: Database, bad: str
) -> None:
    """NUL bytes and lone surrogates anywhere a person types are refused, nothing changes."""
    service = make_service(any_db)[0]
    register(service)
    with freeze_time(START):
        rid = service.submit(
            "crm", requester=PUBLISHER, role="Owner", duration=H, justification="ok", now=T0
        ).id
        before = _counts(service)
        attempts = [
            lambda: service.submit(
                "crm", requester=PUBLISHER, role="Owner", duration=H, justification=bad, now=T0
            ),
            lambda: service.submit(
                "crm", requester=PUBLISHER, role=bad, duration=H, justification="x", now=T0
            ),
            lambda: service.submit(
                bad, requester=PUBLISHER, role="Owner", duration=H, justification="x", now=T0
            ),
            lambda: service.submit(
                "crm", requester=bad, role="Owner", duration=H, justification="x", now=T0
            ),
            lambda: service.approve(rid, actor=APPROVER, reason=bad, now=T0),
            lambda: service.get_app(bad),
            lambda: service.history(bad),
            lambda: service.check_can_read(bad, PUBLISHER),
            lambda: service.list_requests(requester=bad),
            lambda: service.pending_for(APPROVER, app=bad),
            lambda: service.set_policy("crm", actor=ADMIN, now=T0, approvers=[APPROVER, bad]),
            lambda: service.register_app(
                AppSpec(name="erp", scope=f"/s/{bad}", publishers=(PUBLISHER,)),
                actor="test",
                now=T0,
            ),
            lambda: service.register_app(
                AppSpec(name="erp", scope="/s/erp", publishers=(PUBLISHER,), roles=(bad,)),
                actor="test",
                now=T0,
            ),
            lambda: service.register_app(
                AppSpec(
                    name="erp",
                    scope="/s/erp",
                    publishers=(PUBLISHER,),
                    provider_config={"principals": {PUBLISHER: bad}},
                ),
                actor="test",
                now=T0,
            ),
        ]
        for attempt in attempts:
            with pytest.raises(RuleViolation, match="cannot be stored: remove it") as caught:
                attempt()
            assert "\x00" not in str(caught.value) and "\ud800" not in str(caught.value)
        assert _counts(service) == before
        assert service.get_request(rid).state == "pending"
        assert [a.name for a in service.list_apps()] == ["crm"]


def test_cli_refuses_undecodable_arguments_and_nul_with_a_message(cli: Cli) -> None:
    """Bytes that are not UTF-8 (a lone surrogate in argv) or NUL get exit 1 and a message."""
    with freeze_time(START):
        cli("apps", "register", "crm", "--scope", "/s/crm", "--publisher", PUBLISHER)
        for reason in ("fix\udcffit", "fix\x00it"):
            args = ("requests", "submit", "crm", "--as", PUBLISHER, "--role", "Contributor")
            result = cli(*args, "--duration", "1h", "--reason", reason, code=1)
            assert "justification contains" in flat(result.stderr)
            assert "cannot be stored: remove it" in flat(result.stderr)
        assert "cannot be stored" in flat(cli("apps", "show", "cr\x00m", code=1).stderr)
        assert cli.json("requests", "list") == []


def test_cli_refuses_a_lone_surrogate_in_yaml(cli: Cli, tmp_path: Path) -> None:
    """An escaped lone surrogate in `apps apply` YAML is refused, nothing is applied."""
    spec = tmp_path / "apps.yaml"
    spec.write_text(
        'apps:\n  - name: crm\n    scope: /s/crm\n    publishers: [UPUB1]\n    roles: ["Own\\ud800er"]\n'
    )
    with freeze_time(START):
        result = cli("apps", "apply", "--file", str(spec), code=1)
        assert "roles contains an invalid character (U+D800)" in flat(result.stderr)
        assert cli.json("apps", "list") == []


# -- Slack, on SQLite and PostgreSQL ---------------------------------------------------
@pytest.fixture
def world(fake_slack: FakeSlack, any_db: Database) -> Iterator[SlackWorld]:
    with freeze_time(START):
        yield SlackWorld(fake_slack, any_db)


def _request_form(world: SlackWorld, justification: str, duration: str = "2h") -> str:
    world.command(PUBLISHER, "request")
    response = world.submit_request(
        PUBLISHER, app="crm", role="Contributor", duration=duration, justification=justification
    )
    assert response.status == 200, response.body
    return response.body


@pytest.mark.parametrize("bad", ["fix\x00it", "fix\ud800it"])
def test_slack_refuses_unstorable_text_with_the_rule_message(world: SlackWorld, bad: str) -> None:
    """Unstorable text in a form, a command or a reason is refused in Slack, never "sorry"."""
    register(world.service)
    errors = json.loads(_request_form(world, bad))["errors"]
    assert "justification contains" in errors["justification"]
    rid = world.service.submit(
        "crm", requester=PUBLISHER, role="Owner", duration=H, justification="ok", now=T0
    ).id
    if "\x00" in bad:  # a form-encoded command can carry NUL, not a lone surrogate
        for command in (f"request crm Owner 1h {bad}", f"approve {rid} {bad}", f"history {bad}"):
            reply = world.say(APPROVER if "approve" in command else PUBLISHER, command)
            assert "cannot be stored: remove it" in reply and SORRY not in reply, reply
    world.deliver()
    world.click(APPROVER, world.card_for(APPROVER, rid), ids.DENY)
    response = world.submit_reason(APPROVER, bad)
    assert "reason contains" in json.loads(response.body)["errors"]["reason"]
    assert [v.state for v in world.service.list_requests()] == ["pending"]


@pytest.mark.parametrize("text", ["\u200b\u2060", "\u3164", "\ufeff \u00ad"])
def test_slack_refuses_invisible_justification_and_reason(world: SlackWorld, text: str) -> None:
    """Invisible-only text in the form, a command or the reason modal reads as blank."""
    register(world.service)
    errors = json.loads(_request_form(world, text))["errors"]
    assert "justification is required" in errors["justification"]
    assert "justification is required" in world.say(PUBLISHER, f"request crm Owner 1h {text}")
    rid = world.service.submit(
        "crm", requester=PUBLISHER, role="Owner", duration=H, justification="ok", now=T0
    ).id
    assert "reason is required to approve" in world.say(APPROVER, f"approve {rid} {text}")
    world.deliver()
    world.click(APPROVER, world.card_for(APPROVER, rid), ids.APPROVE)
    errors = json.loads(world.submit_reason(APPROVER, text).body)["errors"]
    assert "reason is required to approve" in errors["reason"]
    assert [v.state for v in world.service.list_requests()] == ["pending"]


@pytest.mark.parametrize(
    ("duration", "message"),
    [
        ("30s", "30s is too short: ask for at least a minute"),
        ("PT59S", "59s is too short: ask for at least a minute"),
        ("٢h", "is not a duration"),
        ("２h", "is not a duration"),
        ("0.5m", "is not a duration"),
    ],
)
def test_slack_refuses_short_and_non_ascii_durations(
    world: SlackWorld, duration: str, message: str
) -> None:
    """`/jit request` with under a minute or non-ASCII digits says what to change."""
    register(world.service)
    assert message in world.say(PUBLISHER, f"request crm Owner {duration} fix")
    assert world.service.list_requests() == []


# -- 4. mentions -------------------------------------------------------------------------
NASTY = "deploy at 10:00 UTC <!channel> <@UFAKE> & ask UAPP2"


def test_free_text_in_replies_shows_literally_and_pings_nobody(world: SlackWorld) -> None:
    """A reason with UTC, <!channel> and <@id> is shown as typed; only the decider is mentioned."""
    register(world.service)
    rid = world.service.submit(
        "crm", requester=PUBLISHER, role="Owner", duration=H, justification=NASTY, now=T0
    ).id
    world.deliver()
    stale = world.card_for(APPROVER2, rid)
    world.click(APPROVER, world.card_for(APPROVER, rid), ids.DENY)
    world.submit_reason(APPROVER, NASTY)
    world.deliver()
    world.click(APPROVER2, stale, ids.APPROVE)  # too late: told who won, and why
    shown = [e["text"] for e in world.fake.ephemerals_to(APPROVER2)]
    shown += [texts(world.last_modal(APPROVER2)["view"])]
    shown.append(world.say(APPROVER2, f"approve {rid} me too"))
    # Pat's one card (Denied, by whom and why) and the reply telling the denial.
    card = world.requester_card(PUBLISHER, rid)
    shown += [texts(card), texts(world.thread(PUBLISHER, card)[-1])]
    shown += [texts(world.card_for(APPROVER2, rid))]
    literal = "deploy at 10:00 UTC &lt;!channel&gt; &lt;@UFAKE&gt; &amp; ask UAPP2"
    for text in shown:
        assert literal in text, text
        # The service's own date tokens are markup it wrote: no one is pinged by them.
        untokened = DATE_TOKEN.sub("", text)
        for ping in ("<!channel>", "<@UTC>", "<@UFAKE>", "<@UAPP2>", "<!"):
            assert ping not in untokened, (ping, text)
    assert f"already denied by <@{APPROVER}>" in shown[0]


def test_usage_errors_echo_what_was_typed_without_pinging(world: SlackWorld) -> None:
    """A mistyped command that contains <!here> is echoed as text, not as an @here."""
    reply = world.say(PUBLISHER, "<!here> please")
    assert "&lt;!here&gt;" in reply and "<!here>" not in reply


# -- 5. early end reads "being revoked" -------------------------------------------------
def test_revoke_and_release_commands_say_being_revoked(world: SlackWorld) -> None:
    """`/jit revoke` and `/jit release` answer "being revoked", then the sweep revokes."""
    register(world.service, mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,))
    first = world.say(PUBLISHER, "request crm Owner 1h deploy")
    second = world.say(PUBLISHER, "request crm Contributor 1h deploy again")  # no overlap
    assert "submitted" in first and "submitted" in second
    world.tick()
    revokes, releases = (v.id for v in world.service.list_requests()[::-1])
    revoked = world.say(ADMIN, f"revoke {revokes} security review")
    released = world.say(PUBLISHER, f"release {releases}")
    for reply, rid in ((revoked, revokes), (released, releases)):
        assert f"Request #{rid} is now being revoked." in reply, reply
        assert "active" not in reply
    world.tick()
    assert {world.service.get_request(r).state for r in (revokes, releases)} == {"revoked"}
    assert "is already revoked" in world.say(ADMIN, f"revoke {revokes} again")
    assert "being revoked" not in world.say(PUBLISHER, "list")
