"""Pat's DMs in the sandbox, photographed: the README's before/after pictures.

Runs the real sandbox (a fresh one in a temporary directory) and headless Chromium at a
fixed window size, plays two stories as a person would on the sandbox page, and saves
what Pat Publisher's Messages tab shows:

- ``PREFIX-requester-dm.png``: a ``contoso-crm`` request approved by Ava, active, then
  expired (the sandbox clock moves past its end);
- ``PREFIX-extension.png``: a ``fabrikam-erp`` request (automatic approval) extended
  twice.

Each step waits for the request's state in the sandbox's database and for every queued
Slack message to be settled, not for any wording, so the script keeps working when the
messages change::

    .venv/bin/python docs/screenshots.py --prefix before   # docs/before-*.png
    .venv/bin/python docs/screenshots.py --prefix after    # docs/after-*.png

Needs the dev extras (Selenium) and Chromium with chromedriver (``/usr/bin/chromium``,
``/usr/bin/chromedriver``, or ``JITACCESS_CHROMIUM``/``JITACCESS_CHROMEDRIVER``).
Not part of the product or its tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from jitaccess.settings import Settings
from jitaccess_sandbox import demo
from jitaccess_sandbox.run import Sandbox

DOCS = Path(__file__).resolve().parent
WINDOW = (1100, 1500)
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-extensions",
    "--lang=en-US",
    "--hide-scrollbars",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)


def until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except StaleElementReferenceException:
            found = None
        if found:
            return found
        time.sleep(0.1)
    raise SystemExit(f"screenshots: timed out waiting for {what}")


class Story:
    """One fresh sandbox and one browser on its page."""

    def __init__(self, workdir: Path, driver: WebDriver) -> None:
        self.db = workdir / "jitaccess-sandbox.db"
        settings = Settings(
            _env_file=None,
            database_url=f"sqlite:///{workdir / 'real.db'}",
            slack_bot_token=None,
            slack_app_token=None,
            slack_signing_secret=None,
            log_level="WARNING",
        )
        self.sandbox = Sandbox(
            db_path=self.db, port=0, configured=settings, sweep_interval=0.5, relay_interval=0.1
        )
        self.sandbox.start()
        self.driver = driver
        driver.get(self.sandbox.url)
        until(lambda: driver.find_elements(By.CSS_SELECTOR, "button.user.active"), "the page")

    def stop(self) -> None:
        self.sandbox.stop()

    def act_as(self, user_id: str) -> None:
        selector = f'button.user[data-user="{user_id}"]'

        def click() -> bool:
            self.driver.find_element(By.CSS_SELECTOR, selector).click()
            return "active" in (
                self.driver.find_element(By.CSS_SELECTOR, selector).get_attribute("class") or ""
            )

        until(click, f"acting as {user_id}")

    def type(self, command: str) -> None:
        box = self.driver.find_element(By.ID, "command")
        box.clear()
        box.send_keys(command, Keys.ENTER)

    def clock(self, minutes: int) -> None:
        self.driver.find_element(By.CSS_SELECTOR, f'button[data-minutes="{minutes}"]').click()

    def query(self, sql: str, *args: object) -> Any:
        with sqlite3.connect(self.db, timeout=10) as db:
            row = db.execute(sql, args).fetchone()
        return row[0] if row else None

    def settled(self, request_id: int, state: str, moved_from: str | None = None) -> None:
        """Wait until the request is in ``state`` (and no longer ends at ``moved_from``), every
        message due by the sandbox's clock is settled (a reminder queued for later is not
        due), and the page has shown it."""

        def done() -> bool:
            now = self.query("SELECT state FROM access_requests WHERE id = ?", request_id)
            end = self.query("SELECT ends_at FROM access_requests WHERE id = ?", request_id)
            now_here = self.sandbox.clock().replace(tzinfo=None).isoformat(sep=" ")
            waiting = self.query(
                "SELECT count(*) FROM outbox WHERE settled_at IS NULL AND available_at <= ?",
                now_here,
            )
            return now == state and waiting == 0 and (moved_from is None or end != moved_from)

        until(done, f"request {request_id} to be {state} with every message delivered")
        self.quiet()

    def ends_at(self, request_id: int) -> str:
        end: str = self.query("SELECT ends_at FROM access_requests WHERE id = ?", request_id)
        return end

    def quiet(self) -> None:
        """The timeline unchanged for a second and a half (the page polls)."""
        last, since = "", time.monotonic()
        while time.monotonic() - since < 1.5:
            text = self.driver.find_element(By.ID, "timeline").text
            if text != last:
                last, since = text, time.monotonic()
            time.sleep(0.2)

    def photograph(self, path: Path) -> None:
        self.driver.execute_script(
            "var box = document.getElementById('messages'); box.scrollTop = box.scrollHeight;"
        )
        time.sleep(0.3)
        self.driver.save_screenshot(str(path))
        print(f"screenshots: wrote {path}")


def requester_dm(story: Story, path: Path) -> None:
    """Pat asks, Ava approves, it is active at once, and the clock moves past its end."""
    story.type("/jit request contoso-crm Contributor 1h look at the failed import")
    story.settled(1, "pending")
    story.act_as(demo.APPROVER)
    story.type("/jit approve 1 CHG-1 checked with the customer")
    story.settled(1, "active")
    story.act_as(demo.PUBLISHER)
    story.clock(60)
    story.settled(1, "expired")
    story.photograph(path)


def extension(story: Story, path: Path) -> None:
    """Pat's automatically approved request, extended twice."""
    story.type("/jit request fabrikam-erp Reader 1h look around")
    story.settled(1, "active")
    end = story.ends_at(1)
    story.type("/jit extend 1 30m the report is still running")
    story.settled(1, "active", moved_from=end)
    end = story.ends_at(1)
    story.type("/jit extend 1 1h and the export after it")
    story.settled(1, "active", moved_from=end)
    story.photograph(path)


def browser(workdir: Path) -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("JITACCESS_CHROMIUM", "/usr/bin/chromium")
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={workdir / 'chromium'}")
    driver_path = os.environ.get("JITACCESS_CHROMEDRIVER", "/usr/bin/chromedriver")
    return webdriver.Chrome(service=Service(driver_path), options=options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default="after", help="before or after (default: after)")
    parser.add_argument("--out", type=Path, default=DOCS, help="directory (default: docs/)")
    args = parser.parse_args()
    stories = {"requester-dm": requester_dm, "extension": extension}
    for name, play in stories.items():
        workdir = Path(tempfile.mkdtemp(prefix="jitaccess-screenshots-"))
        driver = browser(workdir)
        story = Story(workdir, driver)
        try:
            play(story, args.out / f"{args.prefix}-{name}.png")
        finally:
            story.stop()
            driver.quit()
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
