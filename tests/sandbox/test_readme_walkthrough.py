"""The README's sandbox walkthrough, followed in order in a real browser.

The steps are read from README.md itself, never copied here: the numbered steps of
"Try it in a minute", "Azure in the sandbox" and "Azure's own JIT in the sandbox", in
that order, against one fresh sandbox (so request numbers count up across sections as
they do for a newcomer). When a step and the app disagree, the test fails and names the
step: fix whichever one is wrong.

The convention the README keeps in those steps (also in an HTML comment beside them):

- ``**Pat**`` (a demo person's first name in bold): act as that person;
- ```/jit …``` (backticks, starting with ``/jit``): typed in the message box and sent;
  ```/jit signin``` followed by ```someone@example.com``` signs in as them on the fake
  Microsoft page;
- ``*Label*`` (italics): press that button: the open form's submit button when it has
  that label, otherwise the button with that label on the newest message that has one;
- another ```value``` while a form is open: pick that option in the form's select (one
  when no form is open is prose, e.g. an application's name, and is ignored);
- ``**+15 min**``, ``**+1 h**``: the sandbox clock buttons (no sleeping for deadlines);
- ``"text"`` (double quotes): this text must then be on the page (the open tab of the
  person acted as, the Azure panel, the open form), waited for up to 20 s.

Text fields a form leaves empty (a justification, a reason) are filled with
:data:`FILLER`. Bold that is neither a person nor a clock button is refused, and every
italic is pressed (a button that is not there fails the step), so a step cannot silently
stop being followed. Promises are looked for in what the app shows (the open tab, the
Azure panel, a form, a toast), never in the page's own guide.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jitaccess_sandbox import demo
from jitaccess_sandbox.run import Sandbox
from test_sandbox_browser import (
    ARTIFACTS,
    act_as,
    browser,
    sandbox,
    sign_in_with_microsoft,
    visible,
    wait,
)

try:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # the browser fixture skips (or fails in CI) with the reason
    pass

__all__ = ["browser", "sandbox"]  # the fixtures, shared with the other browser test

README = Path(__file__).resolve().parents[2] / "README.md"
SECTIONS = (
    "## Try it in a minute",
    "### Azure in the sandbox",
    "### Azure's own JIT in the sandbox",
)
CLOCK = {"+15 min": 15, "+1 h": 60}
PEOPLE = {user.real_name.split()[0]: user.id for user in demo.USERS}
FILLER = "following the README"
FORM_OPENS_WITHIN = 15  # seconds; the machine may be busy
#: Where the app's output shows: the open tab, the Azure panel, a form, a toast.
SHOWN = "main .pane, #azure, #modal, #toast"
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
TOKEN = re.compile(
    r"\*\*(?P<bold>[^*]+)\*\*|`(?P<code>[^`]+)`|\*(?P<italic>[^*\s][^*]*)\*|\"(?P<quote>[^\"]+)\""
)


@dataclass(frozen=True)
class Action:
    kind: str  # person, command, signin, press, pick, clock, promise
    value: str


@dataclass(frozen=True)
class Step:
    section: str
    number: int
    text: str
    actions: tuple[Action, ...]

    def __str__(self) -> str:
        return f"{self.section.lstrip('# ')}, step {self.number}"


def section_lines(readme: str, heading: str) -> list[str]:
    lines = readme.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(heading)]
    assert len(starts) == 1, f"README.md has no single section {heading!r}"
    body: list[str] = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("#"):
            break
        body.append(line)
    return body


def numbered_steps(lines: list[str]) -> list[tuple[int, str]]:
    """The numbered list items (``1. …`` and their indented continuation lines)."""
    steps: list[tuple[int, list[str]]] = []
    for line in lines:
        item = re.match(r"^(\d+)\. (.*)$", line)
        if item:
            steps.append((int(item.group(1)), [item.group(2)]))
        elif steps and line.startswith("   ") and line.strip():
            steps[-1][1].append(line.strip())
        elif steps and not line.strip():
            continue
        elif steps:
            steps.append((0, []))  # the list ended: a later list is another walkthrough
    return [(n, " ".join(text)) for n, text in steps if n]


def actions_of(text: str, where: str) -> tuple[Action, ...]:
    found: list[Action] = []
    tokens = list(TOKEN.finditer(text))
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token["bold"] is not None:
            bold = token["bold"]
            if bold in CLOCK:
                found.append(Action("clock", bold))
            elif bold in PEOPLE:
                found.append(Action("person", bold))
            else:
                raise AssertionError(
                    f"{where}: **{bold}** is neither a person ({', '.join(PEOPLE)}) nor a "
                    f"clock button ({', '.join(CLOCK)})"
                )
        elif token["code"] is not None:
            code = token["code"]
            if code == "/jit signin":
                email = next(
                    (t["code"] for t in tokens[index:] if t["code"] and EMAIL.fullmatch(t["code"])),
                    None,
                )
                assert email, f"{where}: `/jit signin` is not followed by whom to sign in as"
                found.append(Action("signin", email))
            elif code.startswith("/jit "):
                found.append(Action("command", code))
            elif not EMAIL.fullmatch(code):
                found.append(Action("pick", code))
        elif token["italic"] is not None:
            found.append(Action("press", token["italic"]))
        else:
            found.append(Action("promise", token["quote"]))
    return tuple(found)


def walkthrough(readme: str) -> list[Step]:
    text = re.sub(r"<!--.*?-->", "", readme, flags=re.DOTALL)
    steps = []
    for heading in SECTIONS:
        for number, body in numbered_steps(section_lines(text, heading)):
            step = f"{heading.lstrip('# ')}, step {number}"
            steps.append(Step(heading, number, body, actions_of(body, step)))
    return steps


def test_the_parser_reads_the_readmes_convention() -> None:
    """The walkthrough's shape: the parts this test relies on are there, in order."""
    sample = (
        "## Try it in a minute\n\n"
        '1. As **Pat**, `/jit request`, fill it in and press *Request*: "Request #1 was\n'
        '   sent". On `contoso-crm`, press **+1 h**.\n'
        "2. As **Ava**, `/jit signin`, follow the link, sign in as `ava@example.com`.\n\n"
        "Not a step: *Approve*.\n\n### Azure in the sandbox\n\n### Azure's own JIT in the "
        "sandbox\n"
    )
    (first, second) = walkthrough(sample)
    assert [(a.kind, a.value) for a in first.actions] == [
        ("person", "Pat"),
        ("command", "/jit request"),
        ("press", "Request"),
        ("promise", "Request #1 was sent"),
        ("pick", "contoso-crm"),
        ("clock", "+1 h"),
    ]
    assert [(a.kind, a.value) for a in second.actions] == [
        ("person", "Ava"),
        ("signin", "ava@example.com"),
    ]
    with pytest.raises(AssertionError, match=r"\*\*Bob\*\* is neither a person"):
        walkthrough(sample.replace("**Ava**", "**Bob**"))


def test_the_readme_walkthrough_has_the_steps_a_newcomer_follows() -> None:
    steps = walkthrough(README.read_text(encoding="utf-8"))
    numbers = {section: [s.number for s in steps if s.section == section] for section in SECTIONS}
    assert numbers[SECTIONS[0]][:6] == [1, 2, 3, 4, 5, 6]
    assert numbers[SECTIONS[1]][:3] == [1, 2, 3]
    for step in steps:
        kinds = {action.kind for action in step.actions}
        assert kinds - {"person", "pick"}, f"{step} has nothing to do"
    promised = [a for s in steps for a in s.actions if a.kind == "promise"]
    assert len(promised) >= 10, "the walkthrough promises too little to be checked"


class Walker:
    """Does what the README's steps say, in the browser, one action at a time."""

    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver

    def modal(self) -> WebElement | None:
        return visible(self.driver, "#modal")

    def do(self, step: Step, action: Action) -> None:
        driver = self.driver
        if action.kind == "person":
            act_as(driver, PEOPLE[action.value])
        elif action.kind == "clock":
            driver.find_element(
                By.CSS_SELECTOR, f'button[data-minutes="{CLOCK[action.value]}"]'
            ).click()
        elif action.kind == "command":
            box = driver.find_element(By.ID, "command")
            box.clear()
            box.send_keys(action.value, Keys.ENTER)
        elif action.kind == "signin":
            sign_in_with_microsoft(driver, action.value)
        elif action.kind == "pick":
            if self.modal() is None:
                return  # prose, e.g. an application's name
            self.pick(step, action.value)
        elif action.kind == "press":
            self.press(step, action.value)
        else:
            self.expect(step, action.value)

    def pick(self, step: Step, value: str) -> None:
        for control in self.driver.find_elements(By.CSS_SELECTOR, "#modal select.bk-control"):
            choice = Select(control)
            if value in [option.text for option in choice.options]:
                choice.select_by_visible_text(value)
                return
        raise AssertionError(f"{step}: the open form has no option `{value}`")

    def press(self, step: Step, label: str) -> None:
        driver = self.driver

        def click() -> str | None:
            # The timeline is redrawn as the page polls: find the button again each time,
            # until one click lands (a stale element is retried by wait).
            if self.modal() is not None:
                submit = visible(driver, "#modal .bk-submit")
                if submit is None or submit.text != label:
                    return None
                self.fill_empty_fields()
                submit.click()
                return "form"
            buttons = [
                b
                for b in driver.find_elements(By.CSS_SELECTOR, "#timeline .msg button")
                if b.text == label and b.is_displayed()
            ]
            if not buttons:
                return None
            buttons[-1].click()
            return "message"

        pressed = wait(driver, click, f"{step}: the *{label}* button")
        if pressed == "form":
            wait(driver, lambda: self.modal() is None, f"{step}: the form to close after *{label}*")
            return
        # A button that opens a form: let it open before the next action (a button that
        # opens none costs this wait; the walkthrough's buttons all open one).
        with contextlib.suppress(TimeoutException):
            WebDriverWait(driver, FORM_OPENS_WITHIN, poll_frequency=0.1).until(
                lambda _: self.modal()
            )

    def fill_empty_fields(self) -> None:
        for field in self.driver.find_elements(
            By.CSS_SELECTOR, "#modal textarea.bk-control, #modal input.bk-control[type=text]"
        ):
            if field.is_displayed() and not field.get_attribute("value"):
                field.send_keys(FILLER)

    def expect(self, step: Step, text: str) -> None:
        def shown() -> bool:
            # What the app shows (not the page's own guide in the sidebar, which could
            # satisfy a promise by itself).
            regions = self.driver.find_elements(By.CSS_SELECTOR, SHOWN)
            page = " ".join(r.text for r in regions if r.is_displayed())
            return text in " ".join(page.split())

        wait(self.driver, shown, f'{step}: "{text}" on the page')


@pytest.fixture
def walker(browser: WebDriver, sandbox: Sandbox) -> Iterator[Walker]:
    browser.get(sandbox.url)
    wait(browser, lambda: visible(browser, "button.user.active"), "the sandbox page")
    yield Walker(browser)


def test_the_readmes_sandbox_walkthrough_does_what_it_says(walker: Walker) -> None:
    """Every step of the README's sandbox sections, in order, in one fresh sandbox."""
    ARTIFACTS.mkdir(exist_ok=True)
    steps = walkthrough(README.read_text(encoding="utf-8"))
    for step in steps:
        for action in step.actions:
            walker.do(step, action)
    walker.driver.save_screenshot(str(ARTIFACTS / "readme-walkthrough.png"))
    severe = [e for e in walker.driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == [], severe
