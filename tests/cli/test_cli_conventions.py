"""What a CLI of the gh/kubectl/az family is expected to have: ``--version``, and
``serve --port`` overriding JITACCESS_PORT."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from importlib.metadata import version
from pathlib import Path

from conftest import Cli
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SECRET, free_port, wait_until


def test_version_prints_the_installed_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.stdout.strip() == f"jitaccess {version('jitaccess')}"


def test_a_port_out_of_range_is_a_usage_error_that_starts_nothing(cli: Cli) -> None:
    for bad in ("0", "65536", "http"):
        result = cli("serve", "--port", bad, code=2)
        assert "--port" in result.stderr


def test_serve_port_overrides_the_configured_port(fake_slack: FakeSlack, tmp_path: Path) -> None:
    wanted, configured = free_port(), free_port()
    env = {
        **os.environ,
        "JITACCESS_DATABASE_URL": f"sqlite:///{tmp_path}/port.db",
        "SLACK_BOT_TOKEN": "xoxb-port",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake_slack.base_url,
        "JITACCESS_PORT": str(configured),
        "JITACCESS_HOST": "127.0.0.1",
    }
    env.pop("SLACK_APP_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "jitaccess.cli", "serve", "--port", str(wanted)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{wanted}/healthz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        assert wait_until(healthy, 60), "serve did not listen on --port"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{configured}/healthz", timeout=1)
            listened_on_configured = True
        except OSError:
            listened_on_configured = False
        assert not listened_on_configured
    finally:
        process.terminate()
        process.wait(timeout=30)
