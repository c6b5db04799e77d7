"""Tests for the fake Slack Web API, driven by the real ``slack_sdk.WebClient``."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from jitaccess_sandbox.fake_slack import FakeSlack, RateLimit, SlackRateLimiter

BLOCKS: list[dict[str, Any]] = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "*Access request*"}}
]
MODAL: dict[str, Any] = {
    "type": "modal",
    "callback_id": "request",
    "title": {"type": "plain_text", "text": "Request access"},
    "blocks": BLOCKS,
}
HOME: dict[str, Any] = {"type": "home", "blocks": BLOCKS}


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(
        users={"U1": {"name": "alice", "real_name": "Alice A", "tz": "Europe/Paris"}}
    ) as f:
        yield f


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    return WebClient(token="xoxb-test", base_url=fake.base_url, timeout=5)


def error_of(exc: pytest.ExceptionInfo[SlackApiError]) -> Any:
    return exc.value.response["error"]


def test_urls_and_lifecycle() -> None:
    f = FakeSlack()
    with pytest.raises(RuntimeError):
        _ = f.url
    with f:
        assert f.url.startswith("http://127.0.0.1:")
        assert f.base_url == f.url + "/api/"
        assert f.response_url("abc") == f.url + "/response/abc"
    f.stop()  # idempotent


def test_auth_test(fake: FakeSlack, client: WebClient) -> None:
    resp = client.auth_test()
    assert resp["ok"] is True
    assert resp["user_id"] == "UBOT"
    assert resp["bot_id"] == "B0001"
    assert resp["team_id"] == "T0001"
    assert resp["user"] == "jitaccess"
    assert resp["url"]
    (call,) = fake.calls_to("auth.test")
    assert call.token == "xoxb-test"
    assert call.at <= time.monotonic()


def test_not_authed_and_unknown_method(fake: FakeSlack) -> None:
    anonymous = WebClient(base_url=fake.base_url, timeout=5)
    with pytest.raises(SlackApiError) as exc:
        anonymous.auth_test()
    assert error_of(exc) == "not_authed"
    assert fake.calls_to("auth.test")[0].token is None

    client = WebClient(token="xoxb-test", base_url=fake.base_url, timeout=5)
    with pytest.raises(SlackApiError) as exc:
        client.api_call("emoji.list")
    assert error_of(exc) == "unknown_method"
    assert exc.value.response.status_code == 200
    assert len(fake.calls_to("emoji.list")) == 1


def test_post_message_to_user_lands_in_dm_and_updates_in_place(
    fake: FakeSlack, client: WebClient
) -> None:
    resp = client.chat_postMessage(channel="U1", text="pending", blocks=BLOCKS)
    channel, ts = resp["channel"], resp["ts"]
    assert channel == fake.dm_channel_for("U1") == "DU1"
    assert resp["message"]["text"] == "pending"

    second = client.chat_postMessage(channel="U1", text="reply", thread_ts=ts)
    assert float(second["ts"]) > float(ts)

    client.chat_update(channel=channel, ts=ts, text="approved")
    dms = fake.dms_to("U1")
    assert [m["text"] for m in dms] == ["approved", "reply"]
    first = dms[0]
    assert first["ts"] == ts
    assert first["channel"] == "DU1"
    assert first["user"] == "UBOT"
    assert first["blocks"] == BLOCKS  # omitted blocks are kept, as on Slack
    # A message with replies is a thread's parent: its own ts is its thread_ts.
    assert first["thread_ts"] == ts and first["reply_count"] == 1
    assert dms[1]["thread_ts"] == ts
    assert fake.messages_in("DU1") == fake.messages_in("U1") == dms

    client.chat_update(channel=channel, ts=ts, text="revoked", blocks=[])
    assert fake.dms_to("U1")[0]["blocks"] == []


def test_a_reply_counts_on_its_parent_and_a_broadcast_one_is_also_in_the_conversation(
    fake: FakeSlack, client: WebClient
) -> None:
    """As Slack documents threads: the parent carries ``reply_count``,
    ``reply_users``, ``reply_users_count`` and ``latest_reply``; a reply posted with
    ``reply_broadcast`` is a ``thread_broadcast`` message with the parent as its
    ``root``, shown in the conversation too; a quiet one only in the thread."""
    card = client.chat_postMessage(channel="U1", text="Pending", blocks=BLOCKS)["ts"]
    quiet = client.chat_postMessage(channel="U1", text="sent to the approvers", thread_ts=card)
    loud = client.chat_postMessage(
        channel="U1", text="approved by Ava", thread_ts=card, reply_broadcast=True
    )
    assert "subtype" not in quiet["message"]
    assert loud["message"]["subtype"] == "thread_broadcast"
    assert loud["message"]["thread_ts"] == card
    assert loud["message"]["root"]["ts"] == card
    assert loud["message"]["root"]["reply_count"] == 2

    parent = fake.cards_to("U1")
    assert [m["ts"] for m in parent] == [card]
    assert parent[0]["reply_count"] == 2
    assert parent[0]["latest_reply"] == loud["ts"]
    assert parent[0]["reply_users"] == ["UBOT"] and parent[0]["reply_users_count"] == 1
    assert [m["text"] for m in fake.conversation_in("U1")] == ["Pending", "approved by Ava"]
    assert [m["text"] for m in fake.thread_to("U1", card)] == [
        "sent to the approvers",
        "approved by Ava",
    ]

    # A reply to a reply goes in the parent's thread (threads are one level deep).
    deeper = client.chat_postMessage(channel="U1", text="and more", thread_ts=quiet["ts"])
    assert deeper["message"]["thread_ts"] == card

    # An edited reply stays in its thread.
    client.chat_update(channel="DU1", ts=loud["ts"], text="approved by Ava: ok")
    assert [m["text"] for m in fake.thread_to("U1", card)][1] == "approved by Ava: ok"


def test_conversations_replies_returns_the_parent_then_its_replies(
    fake: FakeSlack, client: WebClient
) -> None:
    card = client.chat_postMessage(channel="U1", text="card")["ts"]
    client.chat_postMessage(channel="U1", text="one", thread_ts=card)
    client.chat_postMessage(channel="U1", text="two", thread_ts=card, reply_broadcast=True)
    answer = client.conversations_replies(channel="DU1", ts=card)
    assert [m["text"] for m in answer["messages"]] == ["card", "one", "two"]
    assert answer["has_more"] is False
    with pytest.raises(SlackApiError) as exc:
        client.conversations_replies(channel="DU1", ts="1.000000")
    assert error_of(exc) == "thread_not_found"


def test_post_message_validation(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.api_call("chat.postMessage", json={"channel": "C1"})
    assert error_of(exc) == "no_text"
    with pytest.raises(SlackApiError) as exc:
        client.api_call("chat.postMessage", json={"text": "hi"})
    assert error_of(exc) == "channel_not_found"


def test_update_unknown_message(fake: FakeSlack, client: WebClient) -> None:
    client.chat_postMessage(channel="C1", text="hello")
    with pytest.raises(SlackApiError) as exc:
        client.chat_update(channel="C1", ts="1.000001", text="nope")
    assert error_of(exc) == "message_not_found"
    assert fake.messages_in("C1")[0]["text"] == "hello"


def test_post_ephemeral(fake: FakeSlack, client: WebClient) -> None:
    resp = client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    assert resp["message_ts"]
    (eph,) = fake.ephemerals_to("U1")
    assert (eph["channel"], eph["user"], eph["text"]) == ("C1", "U1", "only you")
    assert fake.ephemerals_to("U2") == []


def test_views_open_requires_trigger(fake: FakeSlack, client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.views_open(view=MODAL)
    assert error_of(exc) == "invalid_trigger_id"
    assert fake.views == {}


def test_views_open_update_push(fake: FakeSlack, client: WebClient) -> None:
    trigger = fake.new_trigger_id("U1")
    opened = client.views_open(trigger_id=trigger, view={**MODAL, "external_id": "req-1"})
    view_id = opened["view"]["id"]
    assert view_id.startswith("V")
    assert opened["view"]["hash"]
    assert opened["view"]["callback_id"] == "request"
    (rec,) = fake.opened_views("U1")
    assert rec["id"] == view_id
    assert rec["user"] == "U1"
    assert rec["view"]["title"]["text"] == "Request access"

    new_title = {**MODAL, "title": {"type": "plain_text", "text": "Updated"}}
    updated = client.views_update(view_id=view_id, view=new_title, hash=opened["view"]["hash"])
    assert updated["view"]["id"] == view_id
    assert updated["view"]["hash"] != opened["view"]["hash"]
    assert fake.views[view_id]["view"]["title"]["text"] == "Updated"
    client.views_update(external_id="req-1", view=MODAL)
    assert fake.views[view_id]["view"]["title"]["text"] == "Request access"

    with pytest.raises(SlackApiError) as exc:
        client.views_update(view_id=view_id, view=MODAL, hash=opened["view"]["hash"])
    assert error_of(exc) == "hash_conflict"
    with pytest.raises(SlackApiError) as exc:
        client.views_update(view_id="VNOPE", view=MODAL)
    assert error_of(exc) == "not_found"

    pushed = client.views_push(trigger_id=fake.new_trigger_id("U1"), view=MODAL)
    assert pushed["view"]["previous_view_id"] == view_id
    assert pushed["view"]["root_view_id"] == view_id
    assert [r["id"] for r in fake.opened_views("U1")] == [view_id, pushed["view"]["id"]]


def test_views_publish_sets_home(fake: FakeSlack, client: WebClient) -> None:
    assert fake.current_home("U1") is None
    first = client.views_publish(user_id="U1", view=HOME)
    assert first["view"]["type"] == "home"
    assert fake.current_home("U1") == HOME
    newer = {"type": "home", "blocks": []}
    second = client.views_publish(user_id="U1", view=newer)
    assert second["view"]["id"] == first["view"]["id"]  # one Home per user
    assert fake.current_home("U1") == newer
    assert fake.current_home("U2") is None
    assert fake.opened_views("U1") == []


def test_conversations_open(fake: FakeSlack, client: WebClient) -> None:
    resp = client.conversations_open(users="U1")
    assert resp["channel"]["id"] == "DU1"
    call = fake.calls_to("conversations.open")[0]
    assert call.content_type == "application/x-www-form-urlencoded"
    assert call.args == {"users": "U1"}


def test_users_info(fake: FakeSlack, client: WebClient) -> None:
    fake.add_user("U2", name="bob", tz="America/New_York", tz_offset=-18000, email="b@x.io")
    resp = client.users_info(user="U2")
    user = resp["user"]
    assert (user["id"], user["name"], user["tz"], user["tz_offset"]) == (
        "U2",
        "bob",
        "America/New_York",
        -18000,
    )
    assert user["is_bot"] is False
    assert user["profile"]["display_name"] == "bob"
    assert client.users_info(user="U1")["user"]["tz"] == "Europe/Paris"
    assert client.users_info(user="U1")["user"]["profile"]["real_name"] == "Alice A"
    assert client.users_info(user="UBOT")["user"]["is_bot"] is True
    assert client.users_lookupByEmail(email="b@x.io")["user"]["id"] == "U2"
    with pytest.raises(SlackApiError) as exc:
        client.users_info(user="UNOPE")
    assert error_of(exc) == "user_not_found"


def test_rate_limit_retry(fake: FakeSlack) -> None:
    client = WebClient(
        token="xoxb-test",
        base_url=fake.base_url,
        timeout=5,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )
    fake.fail_next("chat.postMessage", status=429, retry_after=1)
    resp = client.chat_postMessage(channel="C1", text="hi")
    assert resp["ok"] is True
    calls = fake.calls_to("chat.postMessage")
    assert len(calls) == 2
    assert calls[1].at - calls[0].at >= 1.0
    assert [m["text"] for m in fake.messages_in("C1")] == ["hi"]


def test_rate_limit_without_retry_handler(fake: FakeSlack, client: WebClient) -> None:
    fake.fail_next(None, status=429, retry_after=7)
    with pytest.raises(SlackApiError) as exc:
        client.auth_test()
    assert exc.value.response.status_code == 429
    assert error_of(exc) == "ratelimited"
    assert exc.value.response.headers["Retry-After"] == "7"
    assert client.auth_test()["ok"] is True


def test_fail_next_error_and_times(fake: FakeSlack, client: WebClient) -> None:
    fake.fail_next("chat.postMessage", status=200, error="channel_not_found", times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as exc:
            client.chat_postMessage(channel="C1", text="x")
        assert error_of(exc) == "channel_not_found"
    client.auth_test()  # other methods unaffected
    assert client.chat_postMessage(channel="C1", text="x")["ok"] is True
    fake.fail_next(None)
    with pytest.raises(SlackApiError) as exc:
        client.auth_test()
    assert exc.value.response.status_code == 500


def test_set_down(fake: FakeSlack, client: WebClient) -> None:
    fake.set_down(True)
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel="C1", text="hi")
    assert exc.value.response.status_code == 503
    assert fake.messages_in("C1") == []
    fake.set_down(False)
    assert client.chat_postMessage(channel="C1", text="hi")["ok"] is True
    assert len(fake.calls_to("chat.postMessage")) == 2


def test_form_encoded_and_json_bodies_parse(fake: FakeSlack, client: WebClient) -> None:
    client.api_call(
        "chat.postMessage", params={"channel": "C1", "text": "form", "blocks": json.dumps(BLOCKS)}
    )
    client.chat_postMessage(channel="C1", text="json", blocks=BLOCKS)
    form_call, json_call = fake.calls_to("chat.postMessage")
    assert form_call.content_type == "application/x-www-form-urlencoded"
    assert json_call.content_type == "application/json"
    assert form_call.args["blocks"] == json_call.args["blocks"] == BLOCKS
    assert "token" not in form_call.args
    assert form_call.token == json_call.token == "xoxb-test"
    assert [m["blocks"] for m in fake.messages_in("C1")] == [BLOCKS, BLOCKS]

    # A token passed as a parameter instead of the Authorization header.
    anonymous = WebClient(base_url=fake.base_url, timeout=5)
    anonymous.api_call("auth.test", params={"token": "xoxb-param"})
    assert fake.calls_to("auth.test")[-1].token == "xoxb-param"


def test_response_url_and_wait_for(fake: FakeSlack) -> None:
    url = fake.response_url("req-1")

    def deliver() -> None:
        time.sleep(0.05)
        WebhookClient(url).send(text="done", replace_original=True)

    thread = threading.Thread(target=deliver)
    thread.start()
    assert fake.wait_for(lambda: bool(fake.responses.get("req-1")), timeout=3)
    thread.join()
    assert fake.responses["req-1"] == [{"text": "done", "replace_original": True}]
    assert fake.calls == []  # response_url posts are not API calls
    assert fake.wait_for(lambda: False, timeout=0.05) is False

    fake.set_down(True)
    assert WebhookClient(url).send(text="again").status_code == 503
    fake.set_down(False)
    fake.fail_next("response_url", status=500)
    assert WebhookClient(url).send(text="again").status_code == 500
    assert len(fake.responses["req-1"]) == 1

    req = urllib.request.Request(url, data=b"not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5)
    assert exc.value.code == 400
    exc.value.close()
    assert fake.server_errors == []


class ManualClock:
    """A clock that only moves when told to (the limiter's injectable clock)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_rate_limits_are_off_unless_asked_for(fake: FakeSlack, client: WebClient) -> None:
    msg = client.chat_postMessage(channel="C1", text="hello")
    for _ in range(60):
        client.chat_postMessage(channel="C1", text="hello")
        client.chat_update(channel="C1", ts=msg["ts"], text="again")
    assert all(c.status == 200 for c in fake.calls)


def test_rate_limiter_enforces_chat_update_per_workspace_with_retry_after() -> None:
    clock = ManualClock()
    limiter = SlackRateLimiter(clock=clock)
    with FakeSlack(rate_limits=limiter) as fake:
        client = WebClient(token="xoxb-test", base_url=fake.base_url, timeout=5)
        posted = [client.chat_postMessage(channel=f"C{i}", text="v1") for i in range(3)]
        # chat.update: one every 60 / 50 = 1.2 s, whatever the channel.
        client.chat_update(channel=posted[0]["channel"], ts=posted[0]["ts"], text="v2")
        with pytest.raises(SlackApiError) as exc:
            client.chat_update(channel=posted[1]["channel"], ts=posted[1]["ts"], text="v2")
        assert exc.value.response.status_code == 429
        assert error_of(exc) == "ratelimited"
        assert exc.value.response.headers["Retry-After"] == "2"  # 1.2 s, in whole seconds
        clock.t += 1.1
        with pytest.raises(SlackApiError):
            client.chat_update(channel=posted[1]["channel"], ts=posted[1]["ts"], text="v2")
        clock.t += 0.1
        client.chat_update(channel=posted[1]["channel"], ts=posted[1]["ts"], text="v2")
        # The refused calls changed nothing and are recorded with their status.
        assert fake.messages_in("C2")[0]["text"] == "v1"
        assert [c.status for c in fake.calls_to("chat.update")] == [200, 429, 429, 200]
        assert limiter.refused == {"chat.update": 2}
        # Other methods are not held back by chat.update's limit.
        assert client.users_info(user="UBOT")["ok"]


def test_rate_limiter_holds_chat_post_message_per_channel() -> None:
    clock = ManualClock()
    with FakeSlack(rate_limits=SlackRateLimiter(clock=clock)) as fake:
        fake.add_user("U1", name="alice")
        client = WebClient(token="xoxb-test", base_url=fake.base_url, timeout=5)
        client.chat_postMessage(channel="U1", text="one")
        client.chat_postMessage(channel="C9", text="another channel is fine")
        with pytest.raises(SlackApiError) as exc:  # the same DM, by its channel id
            client.chat_postMessage(channel=fake.dm_channel_for("U1"), text="two")
        assert exc.value.response.headers["Retry-After"] == "1"
        clock.t += 1.0
        client.chat_postMessage(channel="U1", text="two")
        assert [m["text"] for m in fake.dms_to("U1")] == ["one", "two"]


def test_rate_limiter_speed_bursts_and_switching_off() -> None:
    clock = ManualClock()
    limiter = SlackRateLimiter({"chat.update": RateLimit(50, burst=2)}, speed=10, clock=clock)
    assert limiter.interval("chat.update") == pytest.approx(0.12)
    with FakeSlack(rate_limits=limiter) as fake:
        client = WebClient(token="xoxb-test", base_url=fake.base_url, timeout=5)
        msg = client.chat_postMessage(channel="C1", text="v1")
        for _ in range(2):  # a burst of two
            client.chat_update(channel="C1", ts=msg["ts"], text="v2")
        with pytest.raises(SlackApiError) as exc:
            client.chat_update(channel="C1", ts=msg["ts"], text="v3")
        assert exc.value.response.headers["Retry-After"] == "0.2"  # 2 s / 10, rounded up
        fake.set_rate_limits(None)
        client.chat_update(channel="C1", ts=msg["ts"], text="v3")
        assert fake.messages_in("C1")[0]["text"] == "v3"


def test_rate_limited_call_is_retried_by_the_sdk_after_retry_after() -> None:
    # The SDK's own handler sleeps Retry-After (1 s) on the wall clock: one real wait.
    with FakeSlack(rate_limits=SlackRateLimiter()) as fake:
        client = WebClient(token="xoxb-test", base_url=fake.base_url, timeout=5)
        client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=1))
        client.chat_postMessage(channel="C1", text="one")
        client.chat_postMessage(channel="C1", text="two")
        assert [c.status for c in fake.calls_to("chat.postMessage")] == [200, 429, 200]


def test_a_section_with_empty_text_is_refused_as_slack_refuses_it(
    fake: FakeSlack, client: WebClient
) -> None:
    """Block Kit: a section's text has at least one character, unless it has fields."""
    empty = [{"type": "section", "text": {"type": "mrkdwn", "text": ""}}]
    missing = [{"type": "section", "text": {"type": "mrkdwn"}}]
    for blocks in (empty, missing):
        with pytest.raises(SlackApiError) as refused:
            client.chat_postMessage(channel="U1", text="card", blocks=blocks)
        assert refused.value.response["error"] == "invalid_blocks"
    assert fake.dms_to("U1") == []
    fields = [{"type": "section", "fields": [{"type": "mrkdwn", "text": "*Role*\nOwner"}]}]
    client.chat_postMessage(channel="U1", text="card", blocks=fields)
    assert len(fake.dms_to("U1")) == 1
