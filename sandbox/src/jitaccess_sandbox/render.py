"""Block Kit to HTML, for the sandbox page.

Pure functions: Block Kit JSON (as the app sent it to the fake Slack) in, an HTML
fragment out. Every piece of text goes through :func:`html.escape`; the only markup
produced is this module's own. The subset is what jitaccess sends and a little more:

* text objects: ``plain_text`` and ``mrkdwn`` with *bold*, _italic_, ~strike~,
  ``code``, fenced code, ``>`` quotes, newlines, emoji shortcodes, ``<@U…>``
  mentions (shown as @name), ``<#C…|name>``, ``<!here>``, links ``<url|text>``
  (http, https and mailto only) and dates ``<!date^EPOCH^TOKENS^link|fallback>``,
  formatted in the viewer's time zone as Slack does (:func:`format_date`);
* blocks: header, section (text, fields, button accessory), context, divider,
  actions (buttons), image (its alt text: the sandbox fetches nothing) and input
  with plain_text_input (single and multi-line), static_select (with
  ``initial_option`` and option groups), multi_users_select and users_select (the
  workspace's people), datetimepicker (an ``<input type=datetime-local>`` in the
  viewer's time zone), datepicker and timepicker, with label, ``optional``, hint and
  the error a ``response_action: errors`` gave.

Interactive elements carry ``data-`` attributes (block id, action id, value, element
type) that the page's script turns into the payload Slack would send.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

__all__ = [
    "action_id_of",
    "block_id_of",
    "datetime_local",
    "format_date",
    "local_time",
    "mrkdwn",
    "parse_datetime_local",
    "render_blocks",
    "render_message",
    "render_view",
    "text_object",
]

#: Emoji shortcodes jitaccess uses (and a few common ones); others stay as text.
EMOJI = {
    "hourglass_flowing_sand": "\u23f3",
    "hourglass": "\u231b",
    "white_check_mark": "\u2705",
    "robot_face": "\U0001f916",
    "large_green_circle": "\U0001f7e2",
    "checkered_flag": "\U0001f3c1",
    "no_entry": "\u26d4",
    "heavy_multiplication_x": "\u2716\ufe0f",
    "alarm_clock": "\u23f0",
    "lock": "\U0001f512",
    "unlock": "\U0001f513",
    "x": "\u274c",
    "warning": "\u26a0\ufe0f",
    "rotating_light": "\U0001f6a8",
    "tada": "\U0001f389",
    "wave": "\U0001f44b",
    "key": "\U0001f511",
    "bell": "\U0001f514",
    "information_source": "\u2139\ufe0f",
    "mag": "\U0001f50d",
    "large_blue_diamond": "\U0001f537",
}
_LINK_SCHEMES = ("http://", "https://", "mailto:")
_FENCE = re.compile(r"```(.*?)```", re.DOTALL)
_CODE = re.compile(r"`([^`\n]+)`")
_SPECIAL = re.compile(r"<([^<>\n]+)>")
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]*?\S)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_(?=\S)([^_\n]*?\S)_(?![\w_])")
_STRIKE = re.compile(r"(?<![\w~])~(?=\S)([^~\n]*?\S)~(?![\w~])")
_EMOJI = re.compile(r":([a-z0-9_+\-]+):")
_PLACEHOLDER = re.compile("\x00(\\d+)\x00")
_DATETIME_LOCAL = "%Y-%m-%dT%H:%M"

Users = Mapping[str, str]


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _unescape_slack(text: str) -> str:
    """Undo the three escapes Slack's mrkdwn uses (``&amp;`` last)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _emoji(escaped: str) -> str:
    return _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), escaped)


# -- text ------------------------------------------------------------------------------
class _Holder:
    """Stores finished HTML pieces behind ``\\x00n\\x00`` markers while text is formatted."""

    def __init__(self) -> None:
        self.pieces: list[str] = []

    def hold(self, piece: str) -> str:
        self.pieces.append(piece)
        return f"\x00{len(self.pieces) - 1}\x00"

    def restore(self, text: str) -> str:
        # Pieces may themselves hold markers (a link label is formatted text).
        for _ in range(3):
            if "\x00" not in text:
                break
            text = _PLACEHOLDER.sub(lambda m: self.pieces[int(m.group(1))], text)
        return text


class Viewer:
    """Who reads: their time zone and the current time, for date tokens."""

    def __init__(self, tz: tzinfo = UTC, now: datetime | None = None) -> None:
        self.tz = tz
        self.now = now


def _special(token: str, users: Users, viewer: Viewer | None = None) -> str:
    """``<…>`` in mrkdwn: a mention, channel, special mention, date or link."""
    target, _, label = token.partition("|")
    if target.startswith("!date^"):
        return _date(target, label, viewer or Viewer())
    if target.startswith("@"):
        user_id = target[1:]
        name = users.get(user_id) or label or user_id
        return f'<span class="bk-mention" data-user="{_e(user_id)}">@{_e(name)}</span>'
    if target.startswith("#"):
        # A channel by ID shows its name, as Slack does (``users`` carries channels too).
        name = label or users.get(target[1:]) or target[1:]
        return f'<span class="bk-mention">#{_e(_unescape_slack(name))}</span>'
    if target.startswith("!"):
        if label:
            return f'<span class="bk-mention">{_e(_unescape_slack(label))}</span>'
        return f'<span class="bk-mention">@{_e(target[1:].split("^")[0])}</span>'
    url = _unescape_slack(target)
    text = _e(_unescape_slack(label or target))
    if url.lower().startswith(_LINK_SCHEMES):
        return f'<a href="{_e(url)}" target="_blank" rel="noopener noreferrer">{text}</a>'
    return text


def _inline(line: str, users: Users, holder: _Holder, viewer: Viewer | None = None) -> str:
    line = _CODE.sub(lambda m: holder.hold(f"<code>{_e(_unescape_slack(m.group(1)))}</code>"), line)
    line = _SPECIAL.sub(lambda m: holder.hold(_special(m.group(1), users, viewer)), line)
    out = _emoji(_e(_unescape_slack(line)))
    out = _BOLD.sub(r"<b>\1</b>", out)
    out = _ITALIC.sub(r"<i>\1</i>", out)
    return _STRIKE.sub(r"<s>\1</s>", out)


def mrkdwn(
    text: str, users: Users | None = None, *, tz: tzinfo = UTC, now: datetime | None = None
) -> str:
    """Slack mrkdwn (as the app wrote it, ``&``, ``<`` and ``>`` escaped) to HTML; dates
    in ``tz``, "today" and "ago" counted from ``now`` (default: the wall clock)."""
    viewer = Viewer(tz, now)
    users = users or {}
    holder = _Holder()
    text = text.replace("\x00", "")
    text = _FENCE.sub(
        lambda m: holder.hold(f"<pre>{_e(_unescape_slack(m.group(1).strip(chr(10))))}</pre>"),
        text,
    )
    parts: list[str] = []
    quote: list[str] = []
    for line in text.split("\n"):
        # A quote starts with a literal ">" (a ">" in the content is escaped as &gt;).
        if line.startswith(">"):
            quote.append(_inline(line[1:].lstrip(" "), users, holder, viewer))
            continue
        if quote:
            parts.append("<blockquote>" + "<br>".join(quote) + "</blockquote>")
            quote = []
        parts.append(_inline(line, users, holder, viewer))
    if quote:
        parts.append("<blockquote>" + "<br>".join(quote) + "</blockquote>")
    joined = ""
    for i, part in enumerate(parts):
        if (
            i
            and not part.startswith("<blockquote>")
            and not parts[i - 1].startswith("<blockquote>")
        ):
            joined += "<br>"
        joined += part
    return holder.restore(joined)


def plain_text(obj: Mapping[str, Any] | str | None) -> str:
    """A ``plain_text`` object (or a bare string) as escaped HTML; emoji as characters."""
    if obj is None:
        return ""
    if isinstance(obj, str):
        return _emoji(_e(obj))
    escaped = _e(obj.get("text", ""))
    return _emoji(escaped) if obj.get("emoji", True) else escaped


def text_object(
    obj: Mapping[str, Any] | str | None,
    users: Users | None = None,
    *,
    tz: tzinfo = UTC,
    now: datetime | None = None,
) -> str:
    """A text object of either type as HTML (dates in mrkdwn in ``tz``)."""
    if isinstance(obj, Mapping) and obj.get("type") in ("mrkdwn", "verbatim"):
        return mrkdwn(str(obj.get("text", "")), users, tz=tz, now=now)
    return plain_text(obj)


# -- time --------------------------------------------------------------------------------
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_TOKEN = re.compile(r"\{([a-z_]*)\}")
_EPOCH = re.compile(r"-?\d{1,12}")


def _ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _date_long(moment: datetime) -> str:
    return f"{_MONTHS[moment.month - 1]} {_ordinal(moment.day)}, {moment.year}"


def _date_short(moment: datetime) -> str:
    return f"{_MONTHS[moment.month - 1][:3]} {moment.day}, {moment.year}"


def _ago(moment: datetime, now: datetime) -> str:
    """Relative time as Slack's ``{ago}`` shows it: "3 minutes ago", "in 2 hours"."""
    seconds = int((now - moment).total_seconds())
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 60:
        return "just now"
    for size, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400, "day"),
                       (3600, "hour"), (60, "minute")):  # fmt: skip
        if seconds >= size:
            count = seconds // size
            amount = f"{count} {unit}{'s' * (count != 1)}"
            return f"in {amount}" if future else f"{amount} ago"
    return "just now"  # pragma: no cover - the loop ends at one minute


def format_date(epoch: int, template: str, tz: tzinfo, now: datetime) -> str | None:
    """A date token's template (``{date_short_pretty} {time}``) for ``epoch`` as Slack
    shows it to a reader in ``tz`` at ``now`` (api.slack.com, "Formatting text for app
    surfaces", Date formatting): ``{date_num}`` 2014-02-18, ``{date}`` February 18th,
    2014, ``{date_short}`` Feb 18, 2014, ``{date_long}`` Tuesday, February 18th, 2014,
    their ``_pretty`` forms ("today", "yesterday" or "tomorrow" where that applies),
    ``{time}`` 18:39 and ``{time_secs}`` 18:39:42 (the sandbox reader prefers a 24-hour
    clock) and ``{ago}`` (3 minutes ago). None for a token Slack does not document:
    the caller then shows the fallback text, as Slack does."""
    try:
        moment = datetime.fromtimestamp(epoch, UTC).astimezone(tz)
    except (OverflowError, OSError, ValueError):
        return None
    today = now.astimezone(tz).date()
    near = {0: "today", -1: "yesterday", 1: "tomorrow"}.get((moment.date() - today).days)
    plain_forms = {
        "date_num": f"{moment:%Y-%m-%d}",
        "date": _date_long(moment),
        "date_short": _date_short(moment),
        "date_long": f"{_DAYS[moment.weekday()]}, {_date_long(moment)}",
        "time": f"{moment:%H:%M}",
        "time_secs": f"{moment:%H:%M:%S}",
        "ago": _ago(moment, now),
    }
    forms = dict(plain_forms)
    for name in ("date", "date_short", "date_long"):
        forms[f"{name}_pretty"] = near or plain_forms[name]
    if any(name not in forms for name in _TOKEN.findall(template)):
        return None
    # The documented words are lowercase ("today"): a date reads as part of a sentence.
    return _TOKEN.sub(lambda m: forms[m.group(1)], template)


def _date(target: str, fallback: str, viewer: Viewer) -> str:
    """``<!date^EPOCH^TOKENS(^LINK)|fallback>`` as the viewer reads it: formatted in
    their zone, linked where a link is given, the fallback text if it cannot be."""
    parts = target.split("^", 3)
    shown: str | None = None
    if len(parts) >= 3 and _EPOCH.fullmatch(parts[1]):
        now = viewer.now or datetime.now(UTC)
        shown = format_date(int(parts[1]), _unescape_slack(parts[2]), viewer.tz, now)
    if shown is None:
        return f'<span class="bk-date bk-date-fallback">{_e(_unescape_slack(fallback))}</span>'
    title = f' title="{_e(_unescape_slack(fallback))}"' if fallback else ""
    link = _unescape_slack(parts[3]) if len(parts) == 4 else ""
    if link.lower().startswith(_LINK_SCHEMES):
        return (
            f'<a class="bk-date" href="{_e(link)}" target="_blank" rel="noopener noreferrer"'
            f"{title}>{_e(shown)}</a>"
        )
    return f'<span class="bk-date"{title}>{_e(shown)}</span>'


def local_time(moment: datetime, tz: tzinfo) -> str:
    """A moment as plain text in ``tz``, for the page's own labels: ``Mon 07 Dec 19:32 CET``."""
    local = moment.astimezone(tz)
    return f"{local:%a %d %b %H:%M} {local.tzname() or 'UTC'}"


def datetime_local(epoch: int | float, tz: tzinfo) -> str:
    """The ``<input type=datetime-local>`` value for ``epoch`` in ``tz`` (minutes)."""
    return datetime.fromtimestamp(int(epoch), UTC).astimezone(tz).strftime(_DATETIME_LOCAL)


def parse_datetime_local(value: str, tz: tzinfo) -> int:
    """Epoch seconds of a ``datetime-local`` value read in ``tz``; ``ValueError`` if bad."""
    moment = datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return int(moment.timestamp())


# -- blocks ------------------------------------------------------------------------------
def block_id_of(block: Mapping[str, Any], index: int) -> str:
    """The block's id, or the stand-in the sandbox uses when the app gave none."""
    return str(block.get("block_id") or f"sandbox-block-{index}")


def action_id_of(element: Mapping[str, Any], index: int) -> str:
    return str(element.get("action_id") or f"sandbox-action-{index}")


class _Renderer:
    def __init__(
        self,
        users: Users,
        people: Sequence[str] | None,
        tz: tzinfo,
        errors: Mapping[str, str],
        now: datetime | None = None,
    ) -> None:
        self.users = users
        self.people = list(people) if people is not None else list(users)
        self.tz = tz
        self.errors = errors
        self.now = now

    def text(self, obj: Mapping[str, Any] | str | None) -> str:
        return text_object(obj, self.users, tz=self.tz, now=self.now)

    def blocks(self, blocks: Sequence[Any]) -> str:
        out = []
        for index, block in enumerate(blocks):
            if not isinstance(block, Mapping):
                continue
            kind = str(block.get("type", ""))
            method: Callable[[Mapping[str, Any], str], str] | None = getattr(
                self, "block_" + kind, None
            )
            block_id = block_id_of(block, index)
            if method is None:
                out.append(
                    f'<div class="bk-block bk-unsupported">(a {_e(kind or "?")} block, '
                    "which the sandbox does not show)</div>"
                )
            else:
                out.append(method(block, block_id))
        return "".join(out)

    # -- display blocks
    def block_header(self, block: Mapping[str, Any], block_id: str) -> str:
        return f'<div class="bk-block bk-header">{plain_text(block.get("text"))}</div>'

    def block_divider(self, block: Mapping[str, Any], block_id: str) -> str:
        return '<hr class="bk-block bk-divider">'

    def block_section(self, block: Mapping[str, Any], block_id: str) -> str:
        inner = ""
        if block.get("text"):
            inner += f'<div class="bk-text">{self.text(block["text"])}</div>'
        fields = block.get("fields") or []
        if fields:
            inner += (
                '<div class="bk-fields">'
                + "".join(f'<div class="bk-field">{self.text(f)}</div>' for f in fields)
                + "</div>"
            )
        accessory = block.get("accessory")
        side = ""
        if isinstance(accessory, Mapping):
            side = f'<div class="bk-accessory">{self.element(accessory, block_id, 0)}</div>'
        return (
            f'<div class="bk-block bk-section" data-block-id="{_e(block_id)}">'
            f'<div class="bk-section-body">{inner}</div>{side}</div>'
        )

    def block_context(self, block: Mapping[str, Any], block_id: str) -> str:
        parts = []
        for element in block.get("elements") or []:
            if isinstance(element, Mapping) and element.get("type") == "image":
                parts.append(
                    f'<span class="bk-image">[{_e(element.get("alt_text", "image"))}]</span>'
                )
            else:
                parts.append(f"<span>{self.text(element)}</span>")
        return f'<div class="bk-block bk-context">{"".join(parts)}</div>'

    def block_image(self, block: Mapping[str, Any], block_id: str) -> str:
        title = plain_text(block.get("title")) if block.get("title") else ""
        return (
            f'<div class="bk-block bk-image">[image: {_e(block.get("alt_text", ""))}]'
            f"{' ' + title if title else ''}</div>"
        )

    def block_actions(self, block: Mapping[str, Any], block_id: str) -> str:
        elements = [
            self.element(element, block_id, i)
            for i, element in enumerate(block.get("elements") or [])
            if isinstance(element, Mapping)
        ]
        return (
            f'<div class="bk-block bk-actions" data-block-id="{_e(block_id)}">'
            f"{''.join(elements)}</div>"
        )

    def block_input(self, block: Mapping[str, Any], block_id: str) -> str:
        element = block.get("element")
        if not isinstance(element, Mapping):
            element = {}
        optional = bool(block.get("optional"))
        label = plain_text(block.get("label"))
        if optional:
            label += ' <span class="bk-optional">(optional)</span>'
        action_id = action_id_of(element, 0)
        kind = str(element.get("type", ""))
        control_id = f"in-{block_id}"
        hint = (
            f'<div class="bk-hint">{plain_text(block.get("hint"))}</div>'
            if block.get("hint")
            else ""
        )
        error = self.errors.get(block_id)
        error_html = f'<div class="bk-error" role="alert">{_e(error)}</div>' if error else ""
        dispatch = ' data-dispatch="1"' if block.get("dispatch_action") else ""
        return (
            f'<div class="bk-block bk-input{" bk-has-error" if error else ""}" '
            f'data-block-id="{_e(block_id)}" data-action-id="{_e(action_id)}" '
            f'data-type="{_e(kind)}" data-optional="{int(optional)}"{dispatch}>'
            f'<label class="bk-label" for="{_e(control_id)}">{label}</label>'
            f"{self.control(element, control_id, block_id)}{hint}{error_html}</div>"
        )

    # -- elements
    def element(self, element: Mapping[str, Any], block_id: str, index: int) -> str:
        kind = element.get("type")
        if kind == "button":
            return self.button(element, block_id, index)
        if kind == "image":
            return f'<span class="bk-image">[{_e(element.get("alt_text", "image"))}]</span>'
        return (
            f'<span class="bk-unsupported">(a {_e(kind or "?")} element, which the sandbox '
            "does not handle)</span>"
        )

    def button(self, element: Mapping[str, Any], block_id: str, index: int) -> str:
        style = element.get("style")
        classes = "bk-button" + (f" bk-{style}" if style in ("primary", "danger") else "")
        attrs = [
            f'class="{classes}"',
            'type="button"',
            f'data-block-id="{_e(block_id)}"',
            f'data-action-id="{_e(action_id_of(element, index))}"',
        ]
        if element.get("value") is not None:
            attrs.append(f'data-value="{_e(element["value"])}"')
        if element.get("url"):
            url = str(element["url"])
            if url.lower().startswith(_LINK_SCHEMES):
                attrs.append(f'data-url="{_e(url)}"')
        confirm = element.get("confirm")
        if isinstance(confirm, Mapping):
            question = " ".join(
                str((confirm.get(k) or {}).get("text", "")) for k in ("title", "text")
            ).strip()
            attrs.append(f'data-confirm="{_e(question)}"')
        return f"<button {' '.join(attrs)}>{plain_text(element.get('text'))}</button>"

    def control(self, element: Mapping[str, Any], control_id: str, name: str) -> str:
        kind = element.get("type")
        common = f'id="{_e(control_id)}" name="{_e(name)}" class="bk-control"'
        placeholder = element.get("placeholder")
        ph = (
            f' placeholder="{_e(placeholder.get("text", ""))}"'
            if isinstance(placeholder, Mapping)
            else ""
        )
        if kind == "plain_text_input":
            limits = ""
            if element.get("max_length"):
                limits += f' maxlength="{int(element["max_length"])}"'
            if element.get("min_length"):
                limits += f' minlength="{int(element["min_length"])}"'
            value = str(element.get("initial_value") or "")
            if element.get("multiline"):
                return f'<textarea {common} rows="4"{ph}{limits}>{_e(value)}</textarea>'
            return f'<input type="text" {common} value="{_e(value)}"{ph}{limits}>'
        if kind == "static_select":
            return self.static_select(element, common, placeholder)
        if kind in ("multi_users_select", "users_select"):
            multiple = kind == "multi_users_select"
            chosen = (
                set(element.get("initial_users") or [])
                if multiple
                else {element.get("initial_user")}
            )
            options = (
                [] if multiple else [f'<option value="">{self._placeholder(placeholder)}</option>']
            )
            for user_id in self.people:
                sel = " selected" if user_id in chosen else ""
                name = self.users.get(user_id, user_id)
                options.append(f'<option value="{_e(user_id)}"{sel}>{_e(name)}</option>')
            size = f' multiple size="{min(max(len(self.people), 2), 6)}"' if multiple else ""
            return f"<select {common}{size}>{''.join(options)}</select>"
        if kind == "datetimepicker":
            initial = element.get("initial_date_time")
            value = datetime_local(initial, self.tz) if initial is not None else ""
            zone = getattr(self.tz, "key", None) or datetime.now(self.tz).tzname() or "UTC"
            return (
                f'<input type="datetime-local" {common} value="{_e(value)}" '
                f'data-initial="{_e(value)}"> <span class="bk-zone">{_e(zone)}</span>'
            )
        if kind == "datepicker":
            return f'<input type="date" {common} value="{_e(element.get("initial_date") or "")}">'
        if kind == "timepicker":
            return f'<input type="time" {common} value="{_e(element.get("initial_time") or "")}">'
        return (
            f'<span class="bk-unsupported">(a {_e(kind or "?")} input, which the sandbox '
            "does not handle)</span>"
        )

    @staticmethod
    def _placeholder(placeholder: Any) -> str:
        if isinstance(placeholder, Mapping) and placeholder.get("text"):
            return _e(placeholder["text"])
        return "Select an item"

    def static_select(self, element: Mapping[str, Any], common: str, placeholder: Any) -> str:
        initial = element.get("initial_option")
        initial_value = initial.get("value") if isinstance(initial, Mapping) else None

        def option(opt: Mapping[str, Any]) -> str:
            sel = " selected" if opt.get("value") == initial_value else ""
            label = plain_text(opt.get("text"))
            return f'<option value="{_e(opt.get("value", ""))}"{sel}>{label}</option>'

        parts = []
        if initial_value is None:
            parts.append(f'<option value="">{self._placeholder(placeholder)}</option>')
        for opt in element.get("options") or []:
            if isinstance(opt, Mapping):
                parts.append(option(opt))
        for group in element.get("option_groups") or []:
            if isinstance(group, Mapping):
                inner = "".join(
                    option(o) for o in group.get("options") or [] if isinstance(o, Mapping)
                )
                label = _e((group.get("label") or {}).get("text", ""))
                parts.append(f'<optgroup label="{label}">{inner}</optgroup>')
        return f"<select {common}>{''.join(parts)}</select>"


def render_blocks(
    blocks: Sequence[Any],
    *,
    users: Users | None = None,
    people: Sequence[str] | None = None,
    tz: tzinfo = UTC,
    errors: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> str:
    """Blocks as HTML. ``users`` names people in mentions; ``people`` are the choices of
    user selects (default: every key of ``users``); ``tz`` is the viewer's time zone
    (date pickers, date tokens) and ``now`` their current time (a token's "today");
    ``errors`` maps an input's block id to the error to show under it."""
    return _Renderer(users or {}, people, tz, errors or {}, now).blocks(blocks)


def render_message(
    message: Mapping[str, Any],
    *,
    users: Users | None = None,
    tz: tzinfo = UTC,
    now: datetime | None = None,
) -> str:
    """A message (or ephemeral) as Slack shows it to a viewer in ``tz``: its blocks,
    or its text without."""
    blocks = message.get("blocks")
    if isinstance(blocks, list) and blocks:
        return render_blocks(blocks, users=users, tz=tz, now=now)
    text = mrkdwn(str(message.get("text") or ""), users, tz=tz, now=now)
    return f'<div class="bk-block bk-section"><div class="bk-text">{text}</div></div>'


def render_view(
    view: Mapping[str, Any],
    *,
    users: Users | None = None,
    people: Sequence[str] | None = None,
    tz: tzinfo = UTC,
    errors: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> str:
    """A modal: its title, its blocks (with ``errors`` under the inputs) and its
    close and submit buttons."""
    title = plain_text(view.get("title")) or "&nbsp;"
    body = render_blocks(
        view.get("blocks") or [], users=users, people=people, tz=tz, errors=errors, now=now
    )
    close = plain_text(view.get("close")) or "Close"
    submit = (
        '<button type="submit" class="bk-button bk-primary bk-submit">'
        f"{plain_text(view['submit'])}</button>"
        if view.get("submit")
        else ""
    )
    return (
        f'<div class="bk-modal-title">{title}</div>'
        f'<div class="bk-modal-body">{body}</div>'
        '<div class="bk-modal-footer">'
        f'<button type="button" class="bk-button bk-close">{close}</button>'
        f"{submit}</div>"
    )
