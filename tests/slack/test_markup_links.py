"""Links the service puts in its messages (``domain.errors.WebLink``): Slack shows them as
a labelled mrkdwn link, the CLI as plain ``label: url``; an address that could break out
of the link's markup is shown as escaped text, never as markup."""

from __future__ import annotations

import html
import re

import pytest

from jitaccess.app.native import NeedsSignIn
from jitaccess.domain.errors import Mention, RuleViolation, WebLink
from jitaccess.slack.blocks.markup import link, mention_users
from jitaccess_sandbox.render import mrkdwn

URL = "https://login.example/tenant/oauth2/v2.0/authorize?client_id=c&state=s&scope=a+b"
#: How the address stands in mrkdwn: Slack escapes ``&`` outside control sequences.
IN_MRKDWN = URL.replace("&", "&amp;")


def test_a_sign_in_refusal_is_a_link_in_slack_and_plain_text_for_the_cli() -> None:
    refusal = NeedsSignIn("To approve this request, sign in with Microsoft first", URL)
    assert refusal.link == URL
    assert f"Sign in with Microsoft: {URL}" in str(refusal)  # the CLI prints str()
    shown = mention_users(refusal)
    assert f"<{IN_MRKDWN}|Sign in with Microsoft>" in shown
    assert shown.startswith("To approve this request, sign in with Microsoft first. ")
    assert "10 minutes" in shown


def test_text_around_a_link_is_still_escaped_and_people_still_mentioned() -> None:
    message = RuleViolation(
        "<!channel> ", Mention("U0AVA0001"), " see ", WebLink(URL, "a & b <label>")
    )
    assert mention_users(message) == (
        f"&lt;!channel&gt; <@U0AVA0001> see <{IN_MRKDWN}|a &amp; b &lt;label&gt;>"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/|Sign in with Microsoft",  # a | would relabel the link
        "https://evil.example/> <!channel",  # a > would end it
        "https://evil.example/a b",
        "javascript:alert(1)",
        "ftp://files.example/x",
        "https://evil.example/\nnext",
    ],
)
def test_an_address_that_is_not_a_plain_web_link_is_shown_as_text(url: str) -> None:
    shown = link(url, "Sign in with Microsoft")
    assert "<" not in shown and ">" not in shown  # no markup at all: no link, no mention
    assert shown.startswith("Sign in with Microsoft: ")


def test_the_sandbox_page_follows_the_link_to_the_very_address() -> None:
    shown = mrkdwn(mention_users(NeedsSignIn("Sign in first", URL)))
    found = re.search(r'<a href="([^"]+)"[^>]*>Sign in with Microsoft</a>', shown)
    assert found and html.unescape(found.group(1)) == URL
