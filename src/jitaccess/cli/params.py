"""Options several command groups share, and the parsers of what people type in them
(durations, instants, provider settings); a bad value is a usage error (exit 2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from jitaccess.terminal import visible


def as_person(value: str | None) -> str | None:
    """``--as`` names a person by the chat front end's rules (the container's, Slack's
    today): the same check the config form and ``--approver`` get."""
    if value is None:
        return None
    from jitaccess.container import PRINCIPALS
    from jitaccess.domain.errors import JitError
    from jitaccess.domain.policy import check_user_id

    try:
        return check_user_id(value, "User", PRINCIPALS)
    except JitError as exc:
        raise typer.BadParameter(visible(str(exc))) from None


AsUser = Annotated[
    str, typer.Option("--as", help="Slack user ID you act as (U…)", callback=as_person)
]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output")]
Reason = Annotated[str, typer.Option("--reason", help="Why (recorded in the audit log)")]


def to_duration(value: str | None) -> timedelta | None:
    from jitaccess.domain.durations import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(visible(str(exc))) from None


def to_duration_or(value: str | None, default: timedelta) -> timedelta:
    parsed = to_duration(value)
    return default if parsed is None else parsed


def to_instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"'{visible(value)}' is not an ISO 8601 time: use e.g. 2026-11-27T14:00 (UTC) "
            "or 2026-11-27T15:00+01:00"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def parse_provider_config(value: str | None) -> dict[str, Any]:
    """Parse --provider-config: inline JSON, or @path to a JSON or YAML file."""
    import yaml

    if not value:
        return {}
    try:
        text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
        parsed = yaml.safe_load(text)  # YAML is a superset of JSON
    except UnicodeDecodeError:
        raise typer.BadParameter(
            f"cannot read the provider config: {visible(value[1:])} is not UTF-8 text; save "
            "it as UTF-8"
        ) from None
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read the provider config: {exc}") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("the provider config must be a mapping, e.g. '{\"url\": …}'")
    return parsed
