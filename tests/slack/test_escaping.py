"""No text a person typed reaches Slack as markup (issue 16, item 4).

Every flow runs through the real Bolt app and WebClient against the fake Slack, with a
hostile value in every field a person types (justification, reasons, incident
reference, role, scope, command words). Every payload Slack received (its call log),
every ``respond()`` body and every ack is then walked: in each field Slack renders as
mrkdwn (a message's top-level ``text``, section and context blocks, attachments), the
only ``<…>`` left are the people and channels the service itself names, every ``&``
starts an entity and every ``>`` quotes a line. ``plain_text`` fields (option text,
buttons, headers, modal titles) follow their own rule: shown as typed, never escaped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from freezegun import freeze_time

from conftest import ADMIN, APPROVER, APPROVER2, OUTSIDER, PUBLISHER, START, utc
from jitaccess.app.service import AppSpec
from jitaccess.domain.activity import ActivitySummary
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.slack.blocks import cards, ids, markup
from jitaccess.store.db import Database
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SlackWorld, select, text_value

T0 = utc(START)
H = timedelta(hours=1)
FEED = "C0FEED"
PEOPLE = {PUBLISHER, APPROVER, APPROVER2, ADMIN, OUTSIDER}
#: What a hostile person types: mentions that would ping a channel, a person or a
#: group, a link whose label lies about where it goes, and bare markup characters.
HOSTILE = [
    "https://x/<!here>",
    "<!channel>",
    "<@U123>",
    "<!subteam^S1>",
    "<https://evil|https://good>",
    "a & b > c",
]
#: The Slack calls whose arguments carry a message's mrkdwn ``text`` and blocks.
MESSAGE_METHODS = {"chat.postMessage", "chat.update", "chat.postEphemeral"}
VIEW_METHODS = {"views.open", "views.update", "views.push", "views.publish"}


def token(value: str) -> str:
    """The value as one word, for the fields a command splits on spaces (app, role)."""
    return value.replace(" ", "")


def incident(value: str) -> str:
    """The value as an incident reference: a word with a digit, or a link."""
    word = token(value)
    return word if word.startswith("http") or any(c.isdigit() for c in word) else f"INC-1{word}"


# -- walking what Slack received ------------------------------------------------------
_TAG = re.compile(r"<([^<>]*)>")
_ENTITY = re.compile(r"&(amp|lt|gt);")
#: A date token the service writes (markup.date_token): an epoch, Slack's formatting
#: tokens, and a fallback of digits, letters, spaces, ':' and '-' only.
_DATE_TOKEN = re.compile(r"!date\^\d{1,12}\^[{}a-z_ ]+\|[0-9A-Za-z :-]+")


def markup_problems(text: str, *, where: str) -> list[str]:
    """What in one mrkdwn string Slack would parse that the service did not write:
    a ``<…>`` other than a person of the workspace or the feed channel, an ``&`` that
    starts no entity, a ``>`` that does not quote a line."""
    problems = []
    for tag in _TAG.findall(text):
        if tag.startswith("@") and tag[1:] in PEOPLE:
            continue
        if tag == f"#{FEED}":
            continue
        if _DATE_TOKEN.fullmatch(tag):
            continue
        problems.append(f"{where}: markup <{tag}> in {text!r}")
    rest = _TAG.sub("", text)
    if "<" in rest:
        problems.append(f"{where}: a bare '<' in {text!r}")
    if "&" in _ENTITY.sub("", rest):
        problems.append(f"{where}: an '&' that starts no entity in {text!r}")
    unquoted = re.sub(r"(^|\n)>", r"\1", rest)
    if ">" in unquoted:
        problems.append(f"{where}: a '>' that quotes no line in {text!r}")
    return problems


def walk(node: Any, *, where: str, mrkdwn: list[tuple[str, str]], plain: list[str]) -> None:
    """Collect every mrkdwn text (with where it was) and every plain_text text."""
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "mrkdwn" and isinstance(node.get("text"), str):
            mrkdwn.append((where, node["text"]))
        elif kind == "plain_text" and isinstance(node.get("text"), str):
            plain.append(node["text"])
        for key, value in node.items():
            if key == "attachments" and isinstance(value, list):
                for attachment in value:
                    for field in ("text", "pretext", "fallback"):
                        if isinstance(attachment.get(field), str):
                            mrkdwn.append((f"{where}.attachments", attachment[field]))
            walk(value, where=f"{where}.{key}", mrkdwn=mrkdwn, plain=plain)
    elif isinstance(node, list):
        for item in node:
            walk(item, where=where, mrkdwn=mrkdwn, plain=plain)


def message_texts(fake: FakeSlack, acks: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Every mrkdwn string and every plain_text string Slack was given: API calls,
    ``respond()`` bodies and acks."""
    mrkdwn: list[tuple[str, str]] = []
    plain: list[str] = []
    for call in fake.calls:
        if call.method in MESSAGE_METHODS:
            text = call.args.get("text")
            if isinstance(text, str):  # the top-level text is mrkdwn unless mrkdwn=false
                assert call.args.get("mrkdwn") in (None, True)
                mrkdwn.append((f"{call.method} text", text))
        if call.method in MESSAGE_METHODS | VIEW_METHODS:
            walk(call.args, where=call.method, mrkdwn=mrkdwn, plain=plain)
    for key, bodies in fake.responses.items():
        for body in bodies:
            if isinstance(body.get("text"), str):
                mrkdwn.append((f"respond {key} text", body["text"]))
            walk(body, where=f"respond {key}", mrkdwn=mrkdwn, plain=plain)
    for body in acks:
        if body:
            ack = json.loads(body)
            # Inline form errors are plain text, shown under the input as given.
            ack.pop("errors", None)
            walk(ack, where="ack", mrkdwn=mrkdwn, plain=plain)
    return mrkdwn, plain


# -- every flow, with hostile values ----------------------------------------------------
class Hostile:
    """A world where every typed field holds ``value``; every ack is kept."""

    def __init__(self, world: SlackWorld, value: str) -> None:
        self.world = world
        self.value = value
        self.acks: list[str] = []

    def say(self, user: str, text: str) -> None:
        response, _ = self.world.command(user, text)
        assert response.status == 200, response.body
        self.acks.append(response.body)

    def reply(self, user: str, text: str) -> str:
        response, key = self.world.command(user, text)
        self.acks.append(response.body)
        return json.dumps(self.world.fake.responses.get(key, []))

    def click(self, user: str, message: dict[str, Any], action: str) -> None:
        response = self.world.click(user, message, action)
        assert response.status == 200, response.body
        self.acks.append(response.body)

    def reason(self, user: str, reason: str) -> None:
        response = self.world.submit_reason(user, reason)
        assert response.status == 200, response.body
        self.acks.append(response.body)

    def latest(self, rid: int) -> int:
        [view] = self.world.service.list_requests(requester=PUBLISHER, limit=1)
        assert view.id == rid + 1, view
        return view.id

    def card(self, person: str, title: str) -> dict[str, Any]:
        posted = [m for m in self.world.fake.dms_to(person) if title in json.dumps(m["blocks"])]
        assert posted, f"{person} has no card {title!r}"
        return posted[-1]


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    with freeze_time(START):
        yield SlackWorld(fake_slack, db)


def run_every_flow(h: Hostile) -> None:
    """Request (command and form), approve, deny, cancel, release, extend and its
    decision, revoke, time out, break-glass and its review, the listings, the feed
    and the App Home, each with the hostile value wherever a person types."""
    world, value, role = h.world, h.value, token(h.value)
    world.fake.add_channel(FEED, "jit-requests", bot_member=True)
    world.service.register_app(
        AppSpec(
            name="crm",
            scope=f"/subscriptions/s1/resourceGroups/mrg-{token(value)}",
            publishers=(PUBLISHER,),
            roles=("Contributor", "Owner", role),
            admins=(ADMIN,),
            jit_enabled=True,
            policy=Policy(
                mode=ApprovalMode.MANUAL, max_duration=8 * H, approvers=(APPROVER, APPROVER2)
            ),
            provider="log",
        ),
        actor="test",
        now=T0,
    )
    world.service.set_policy("crm", actor=ADMIN, now=T0, feed_channel=FEED, breakglass=[PUBLISHER])

    # Refusals that repeat what was typed.
    h.say(PUBLISHER, token(value))
    h.say(PUBLISHER, f"pending {token(value)}")
    h.say(PUBLISHER, f"history {token(value)}")
    h.say(PUBLISHER, f"request nowhere {role} 1h {value}")
    h.say(PUBLISHER, f"breakglass crm Janitor 30m {incident(value)} {value}")

    # 1. A one-line request with the hostile role and justification; approved with a
    #    hostile reason on the card; active; extended (asked on the card, approved on
    #    the extension card); revoked with a hostile reason.
    h.say(PUBLISHER, f"request crm {role} 2h {value}")
    [first] = world.service.list_requests(requester=PUBLISHER, limit=1)
    world.deliver()
    h.click(APPROVER, world.card_for(APPROVER, first.id), ids.APPROVE)
    h.reason(APPROVER, value)
    world.tick()
    assert world.service.get_request(first.id).state == "active"
    h.click(PUBLISHER, world.requester_card(PUBLISHER, first.id), ids.EXTEND)
    modal = world.last_modal(PUBLISHER)
    values = {"duration": {"duration": select("30m")}, "reason": {"reason": text_value(value)}}
    h.acks.append(world.submit(PUBLISHER, modal, values).body)
    world.deliver()
    h.click(
        APPROVER2, h.card(APPROVER2, f"Extension of request #{first.id}"), "jit_approve_extension"
    )
    h.reason(APPROVER2, value)
    assert world.service.get_request(first.id).ends_at == T0 + 2 * H + 30 * timedelta(minutes=1)
    world.deliver()
    h.say(PUBLISHER, f"extend {first.id} 30m {value}")
    world.deliver()
    h.click(APPROVER, h.card(APPROVER, f"Extension of request #{first.id}"), "jit_deny_extension")
    h.reason(APPROVER, value)
    world.deliver()
    h.say(PUBLISHER, "list")
    h.say(APPROVER, "pending")
    world.home_opened(APPROVER, "Ev-active")
    h.say(APPROVER, f"revoke {first.id} {value}")
    world.tick()
    assert world.service.get_request(first.id).state == "revoked"

    # 2. The request form, with the hostile role picked; denied with a hostile reason.
    h.say(PUBLISHER, "request")
    form = world.last_modal(PUBLISHER)
    shown = [o["text"]["text"] for o in form["view"]["blocks"][2]["element"]["options"]]
    assert role in shown, shown  # plain_text: the role as typed, not escaped
    response = world.submit_request(
        PUBLISHER, app="crm", role=role, duration="1h", justification=value
    )
    h.acks.append(response.body)
    second = h.latest(first.id)
    world.deliver()
    world.home_opened(APPROVER2, "Ev-pending")
    h.say(APPROVER2, f"deny {second} {value}")
    world.deliver()

    # 3. Approved by command, then released; 4. cancelled; 5. left to time out.
    h.say(PUBLISHER, f"request crm Contributor 1h {value}")
    third = h.latest(second)
    h.say(APPROVER, f"approve {third} {value}")
    world.tick()
    h.say(PUBLISHER, f"release {third}")
    world.tick()
    h.say(PUBLISHER, f"request crm Contributor 1h {value}")
    fourth = h.latest(third)
    h.say(PUBLISHER, f"cancel {fourth}")
    world.tick()
    h.say(PUBLISHER, f"request crm Contributor 1h {value}")
    fifth = h.latest(fourth)
    world.tick()

    # 6. Break-glass with a hostile incident reference and reason, reviewed on the card
    #    with a hostile reason; the later /jit ack is refused (already reviewed).
    h.say(PUBLISHER, f"breakglass crm Owner 30m {incident(value)} {value}")
    sixth = h.latest(fifth)
    world.tick()
    with freeze_time(T0 + H):
        world.tick()
        h.say(ADMIN, "pending")
        world.home_opened(ADMIN, "Ev-review")
        h.click(APPROVER2, h.card(APPROVER2, f"Break-glass access #{sixth}"), ids.BREAKGLASS_ACK)
        modal = world.last_modal(APPROVER2)
        reason = {"reason": {"reason": text_value(value)}}
        h.acks.append(world.submit(APPROVER2, modal, reason).body)
        world.deliver()
        h.say(APPROVER, f"ack {sixth} {value}")
        h.say(PUBLISHER, "history crm")
        h.say(PUBLISHER, "apps")
    with freeze_time(T0 + 30 * H):
        world.tick()
        assert world.service.get_request(fifth).state == "timed_out"
        for person in (PUBLISHER, APPROVER, ADMIN):
            world.home_opened(person, f"Ev-end-{person}")


@pytest.mark.parametrize("value", HOSTILE)
def test_no_typed_markup_reaches_any_payload(world: SlackWorld, value: str) -> None:
    """Whatever a person types, no payload Slack receives pings, links or formats with
    it: in every mrkdwn field it arrives escaped; in plain_text fields, as typed."""
    h = Hostile(world, value)
    run_every_flow(h)
    mrkdwn, plain = message_texts(world.fake, h.acks)
    problems = [p for where, text in mrkdwn for p in markup_problems(text, where=where)]
    assert problems == [], "\n".join(problems[:20])
    # The values did reach Slack, escaped: the flows showed what was typed.
    escaped = markup.escape(value)
    assert sum(escaped in text for _, text in mrkdwn) >= 20
    # The break-glass alert's notification text names the incident, escaped.
    alerts = [
        c.args["text"]
        for c in world.fake.calls_to("chat.postMessage")
        if str(c.args.get("text", "")).startswith("Break-glass:")
    ]
    assert len(alerts) == 3 and all(markup.escape(incident(value)) in a for a in alerts), alerts
    # plain_text is never escaped: the role shows as typed in the request form.
    assert token(value) in plain
    assert not any(markup.escape(token(value)) in text for text in plain if text != token(value))


def test_the_breakglass_alert_text_escapes_the_incident(world: SlackWorld) -> None:
    """The reported case: a break-glass incident given as a URL with a mention in it
    reaches every approver's and admin's notification text escaped."""
    h = Hostile(world, "https://x/<!here>")
    world.service.register_app(
        AppSpec(
            name="crm",
            scope="/subscriptions/s1/resourceGroups/mrg-crm",
            publishers=(PUBLISHER,),
            roles=("Owner",),
            admins=(ADMIN,),
            jit_enabled=True,
            policy=Policy(mode=ApprovalMode.MANUAL, max_duration=8 * H, approvers=(APPROVER,)),
            provider="log",
        ),
        actor="test",
        now=T0,
    )
    world.service.set_policy("crm", actor=ADMIN, now=T0, breakglass=[PUBLISHER])
    h.say(PUBLISHER, "breakglass crm Owner 30m https://x/<!here> database down")
    world.deliver()
    texts = {
        c.args["channel"]: c.args["text"]
        for c in world.fake.calls_to("chat.postMessage")
        if str(c.args.get("text", "")).startswith("Break-glass:")
    }
    assert len(texts) == 2
    for text in texts.values():
        assert "<!here>" not in text and "https://x/&lt;!here&gt;" in text, text


def test_payloads_built_from_backend_and_activity_text_are_escaped(world: SlackWorld) -> None:
    """A backend's error and the Activity Log's names are text from outside too."""
    h = Hostile(world, "<!channel>")
    world.service.register_app(
        AppSpec(
            name="crm",
            scope="/subscriptions/s1/resourceGroups/mrg-crm",
            publishers=(PUBLISHER,),
            roles=("Owner", "<!channel>"),
            admins=(ADMIN,),
            jit_enabled=True,
            policy=Policy(mode=ApprovalMode.AUTOMATIC, max_duration=8 * H, approvers=()),
            provider="log",
        ),
        actor="test",
        now=T0,
    )
    h.say(PUBLISHER, "request crm <!channel> 1h <@U123> look")
    [view] = world.service.list_requests(requester=PUBLISHER, limit=1)
    failing = replace(view, last_error="<!here> 500 from <https://evil|backend>", attempts=3)
    summary = ActivitySummary.from_dict(
        {
            "window_start": T0.isoformat(),
            "window_end": (T0 + H).isoformat(),
            "operations_total": 1,
            "failures_total": 1,
            "resources_total": 1,
            "operations": [["<!here>/write", 1]],
            "resources": ["<@U123>"],
            "failures": [{"at": T0.isoformat(), "operation": "<!here>", "resource": "<@U1>"}],
        }
    )
    payloads = [
        cards.revoke_failing(failing),
        cards.activity_summary(view, summary, "ab" * 32),
        cards.requester_card(failing),
    ]
    for text, body in payloads:
        mrkdwn: list[tuple[str, str]] = [("text", text)]
        walk(body, where="blocks", mrkdwn=mrkdwn, plain=[])
        assert [p for w, t in mrkdwn for p in markup_problems(t, where=w)] == []


@pytest.mark.parametrize(
    ("typed", "escaped"),
    [
        ("<!here>", "&lt;!here&gt;"),
        ("<https://evil|https://good>", "&lt;https://evil|https://good&gt;"),
        ("a & b > c", "a &amp; b &gt; c"),
        ("&lt; stays visible", "&amp;lt; stays visible"),
        ("*bold* _it_ :tada:", "*bold* _it_ :tada:"),
    ],
)
def test_escape_turns_only_the_three_control_characters_into_entities(
    typed: str, escaped: str
) -> None:
    """Slack's documented escaping: &, <, > and nothing else; an entity someone typed
    shows as typed (its & is escaped first)."""
    assert markup.escape(typed) == escaped
    assert markup_problems(escaped, where="escape") == []


def test_truncating_escaped_text_never_cuts_an_entity() -> None:
    text = markup.escape("x" * 80 + "<" * 10)
    cut = markup.truncate(text, 90)
    assert cut.endswith(markup.TRUNCATED) and len(cut) <= 90
    assert markup_problems(cut[: -len(markup.TRUNCATED)], where="cut") == []


@pytest.mark.parametrize(
    ("typed", "limit", "shown"),
    [
        ("<!here>", 75, "<!here>"),  # not parsed in plain_text: as typed, never &lt;
        ("a & b > c", 75, "a & b > c"),
        ("two\nlines\r\tand\x00more", 75, "two lines and more"),
        ("   ", 75, "-"),  # Slack refuses an empty plain_text
        ("R" * 100, 75, "R" * (75 - len(markup.TRUNCATED)) + markup.TRUNCATED),
        ("Extend #123456789012345678", 24, "Extend #123… (truncated)"),
    ],
)
def test_plain_text_shows_what_was_typed_within_its_limit(
    typed: str, limit: int, shown: str
) -> None:
    """plain_text fields (option text, buttons, headers, modal titles): one line, never
    empty, within Block Kit's limit, and not escaped (Slack shows entities literally)."""
    assert markup.plain(typed, limit) == shown
    assert len(markup.plain(typed, limit)) <= limit


def test_the_request_form_offers_a_hostile_role_as_typed(world: SlackWorld) -> None:
    """The role picker's option text is plain_text: the role as registered, cut to 75."""
    long_role = "<!here>" + "R" * 100
    world.service.register_app(
        AppSpec(
            name="crm",
            scope="/subscriptions/s1/resourceGroups/mrg-crm",
            publishers=(PUBLISHER,),
            roles=("<!channel> & co", long_role),
            admins=(ADMIN,),
            jit_enabled=True,
            policy=Policy(mode=ApprovalMode.AUTOMATIC, max_duration=8 * H, approvers=()),
            provider="log",
        ),
        actor="test",
        now=T0,
    )
    world.command(PUBLISHER, "request")
    view = world.last_modal(PUBLISHER)["view"]
    options = view["blocks"][2]["element"]["options"]
    assert [o["text"]["text"] for o in options] == [
        "<!channel> & co",
        markup.plain(long_role, markup.OPTION_TEXT_MAX),
    ]
    assert [o["value"] for o in options] == ["<!channel> & co", long_role]


@pytest.mark.parametrize(
    ("named", "shown"),
    [
        ("UAPP1", "<@UAPP1>"),
        ("SONCALL", "<!subteam^SONCALL>"),
        ("U1><!here", "U1&gt;&lt;!here"),  # not an id: text, never a mention
        ("<!channel>", "&lt;!channel&gt;"),
        ("policy:automatic", "the policy (automatic mode)"),
    ],
)
def test_only_real_ids_become_mentions(named: str, shown: str) -> None:
    """The people the service names are mentions only when they are Slack ids; an
    answer from a directory that is not one stays escaped text."""
    assert markup.user(named) == shown
