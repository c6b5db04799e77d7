"""The sandbox shows Slack's date tokens as Slack does: in each viewer's own zone
(api.slack.com, "Formatting text for app surfaces", Date formatting)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from jitaccess.slack.blocks import markup
from jitaccess_sandbox import demo, render
from jitaccess_sandbox.run import Sandbox
from test_sandbox import call, eventually, start_sandbox, state

#: Tuesday 2026-12-08 18:32:05 UTC.
MOMENT = datetime(2026, 12, 8, 18, 32, 5, tzinfo=UTC)
EPOCH = int(MOMENT.timestamp())
PARIS, NEW_YORK, TOKYO = (
    ZoneInfo("Europe/Paris"),
    ZoneInfo("America/New_York"),
    ZoneInfo("Asia/Tokyo"),
)
NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)


def shown(template: str, tz: ZoneInfo = PARIS, now: datetime = NOW, link: str = "") -> str:
    """The HTML a mrkdwn date token renders to, for a viewer in ``tz`` at ``now``."""
    token = f"<!date^{EPOCH}^{template}{'^' + link if link else ''}|2026-12-08 18:32 UTC>"
    return render.mrkdwn(f"Ends {token}.", tz=tz, now=now)


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("{date_num}", "2026-12-08"),
        ("{date}", "December 8th, 2026"),
        ("{date_short}", "Dec 8, 2026"),
        ("{date_long}", "Tuesday, December 8th, 2026"),
        ("{date_pretty}", "today"),
        ("{date_short_pretty}", "today"),
        ("{date_long_pretty}", "today"),
        ("{time}", "19:32"),
        ("{time_secs}", "19:32:05"),
        ("{ago}", "in 6 hours"),
        ("{date_short_pretty} {time}", "today 19:32"),
        ("at {time} on {date_num}", "at 19:32 on 2026-12-08"),
    ],
)
def test_each_documented_token_in_the_viewer_s_zone(template: str, text: str) -> None:
    """Paris is UTC+1 in December: 18:32 UTC reads 19:32."""
    assert f'title="2026-12-08 18:32 UTC">{text}</span>.' in shown(template)


def test_the_same_token_reads_in_each_viewer_s_own_zone() -> None:
    template = "{date_short_pretty} {time}"
    assert ">today 13:32<" in shown(template, NEW_YORK)
    assert ">tomorrow 03:32<" in shown(template, TOKYO)  # already the 9th there
    assert ">today 18:32<" in shown(template, ZoneInfo("UTC"))


def test_pretty_dates_say_yesterday_and_otherwise_the_date() -> None:
    template = "{date_short_pretty}"
    assert ">yesterday<" in shown(template, now=NOW + timedelta(days=1))
    assert ">Dec 8, 2026<" in shown(template, now=NOW + timedelta(days=3))
    assert ">December 8th, 2026<" in shown("{date_pretty}", now=NOW - timedelta(days=2))


@pytest.mark.parametrize(
    ("now", "text"),
    [
        (MOMENT + timedelta(seconds=20), "just now"),
        (MOMENT + timedelta(minutes=3), "3 minutes ago"),
        (MOMENT + timedelta(hours=1, minutes=5), "1 hour ago"),
        (MOMENT + timedelta(days=2), "2 days ago"),
        (MOMENT - timedelta(minutes=1), "in 1 minute"),
    ],
)
def test_ago_counts_from_the_viewer_s_now(now: datetime, text: str) -> None:
    assert f">{text}<" in shown("{ago}", now=now)


def test_ordinals() -> None:
    for day, text in ((1, "1st"), (2, "2nd"), (3, "3rd"), (11, "11th"), (12, "12th"), (22, "22nd")):
        moment = datetime(2026, 1, day, 12, tzinfo=UTC)
        assert render.format_date(int(moment.timestamp()), "{date}", UTC, moment) == (
            f"January {text}, 2026"
        )


def test_a_link_wraps_the_date_and_only_a_web_address_does() -> None:
    linked = shown("{date_num}", link="https://portal.azure.com/x?a=1&amp;b=2")
    assert '<a class="bk-date" href="https://portal.azure.com/x?a=1&amp;b=2"' in linked
    assert ">2026-12-08</a>" in linked
    unsafe = shown("{date_num}", link="javascript:alert(1)")
    assert "<a " not in unsafe and ">2026-12-08</span>" in unsafe


@pytest.mark.parametrize(
    "token",
    [
        f"<!date^{EPOCH}^{{date_unknown}}|2026-12-08 18:32 UTC>",  # undocumented token
        "<!date^soon^{date_num}|2026-12-08 18:32 UTC>",  # not an epoch
        f"<!date^{EPOCH}|2026-12-08 18:32 UTC>",  # no format
        "<!date^99999999999999999^{date_num}|2026-12-08 18:32 UTC>",  # out of range
    ],
)
def test_anything_else_shows_the_fallback_text(token: str) -> None:
    out = render.mrkdwn(token, tz=PARIS, now=NOW)
    assert out == '<span class="bk-date bk-date-fallback">2026-12-08 18:32 UTC</span>'


def test_the_fallback_and_format_cannot_become_markup() -> None:
    out = render.mrkdwn(
        f"<!date^{EPOCH}^<b>{{time}}|&lt;script&gt;x>", tz=PARIS, now=NOW
    ) + render.mrkdwn("<!date^1^{bogus}|&lt;img src=x&gt;>", tz=PARIS, now=NOW)
    assert "<script" not in out and "<img" not in out and "<b>" not in out


def test_what_the_service_writes_renders_in_blocks_views_and_plain_messages() -> None:
    token = markup.when(MOMENT)
    block = {"type": "section", "text": {"type": "mrkdwn", "text": f"Ends {token}"}}
    assert ">today 19:32<" in render.render_blocks([block], tz=PARIS, now=NOW)
    assert ">today 19:32<" in render.render_message({"text": token}, tz=PARIS, now=NOW)
    view = {"type": "modal", "title": {"type": "plain_text", "text": "x"}, "blocks": [block]}
    assert ">today 13:32<" in render.render_view(view, tz=NEW_YORK, now=NOW)
    # A plain_text field shows what it was given: Slack formats no token there.
    header = {"type": "header", "text": {"type": "plain_text", "text": token}}
    assert "&lt;!date^" in render.render_blocks([header], tz=PARIS, now=NOW)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    instance: Sandbox = start_sandbox(tmp_path)
    yield instance
    instance.stop()


def test_the_page_shows_one_card_in_each_viewer_s_zone(sandbox: Sandbox) -> None:
    """Pat (Berlin), Ava (New York) and Abe (Tokyo) read the same window each in their
    own zone: the card's date tokens are rendered per viewer, as Slack does."""
    pat, ava, abe = demo.PUBLISHER, demo.APPROVER, demo.APPROVER2
    call(sandbox, "command", {"user": pat, "text": "request contoso-crm Contributor 1h fix"})
    eventually(lambda: "Access request #1" in json.dumps(state(sandbox, ava)["timeline"]))
    eventually(lambda: "Access request #1" in json.dumps(state(sandbox, abe)["timeline"]))

    def window_in(user: str, zone: str) -> None:
        [view] = sandbox.server.container.service.list_requests(requester=pat, limit=1)
        start = view.starts_at.astimezone(ZoneInfo(zone))
        html = " ".join(i["html"] for i in state(sandbox, user)["timeline"])
        assert f"{start:%H:%M}</span>" in html, (user, zone, f"{start:%H:%M}")
        assert "|2026" not in html and "!date^" not in html  # no raw token left

    window_in(ava, "America/New_York")
    window_in(abe, "Asia/Tokyo")
