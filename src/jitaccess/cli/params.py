"""Options several command groups share, and the parsers of what people type in them
(durations, instants, provider settings); a bad value is a usage error (exit 2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

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


def _times_in_utc(value: bool) -> bool:
    from jitaccess.cli.output import print_times_in_utc

    print_times_in_utc(value)
    return value


Utc = Annotated[
    bool,
    typer.Option(
        "--utc", help="Print times in UTC, not in your local zone (TZ)", callback=_times_in_utc
    ),
]
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


# --- How `--help` reads ------------------------------------------------------------------
# Typer writes each value's Python type (`<str>`, `<list[str]>`, `<bool>`) and puts a
# required argument in braces (`{name}`); gh, kubectl and az users expect a word that
# says what to type (`NAME`, `ID`, `DURATION`) and nothing after a flag. The root group
# (:class:`ConventionalGroup`) gives every parameter of every command such a word once
# the command tree is built, so a new command gets it without thinking about it.

#: The word after an option, by its long name, where upper-casing the name says too
#: little (``--as AS``) or too much (``--max-duration MAX_DURATION``).
OPTION_METAVARS: dict[str, str] = {
    "--as": "U…",
    "--publisher": "U…",
    "--admin": "U…",
    "--approver": "U…|S…",
    "--breakglass": "U…|S…",
    "--feed-channel": "C…",
    "--duration": "DURATION",
    "--max-duration": "DURATION",
    "--approval-timeout": "DURATION",
    "--breakglass-max": "DURATION",
    "--required-approvals": "N",
    "--start": "ISO8601",
    "--provider-config": "JSON|@FILE",
    "--subscription": "SUB",
    "--resource-group": "RG",
    "--requests-resource-group": "RG_ID",
    "--file": "FILE",
    "--output": "FILE",
}

#: The word for a positional argument, by its parameter name; otherwise the name upper-cased.
ARGUMENT_METAVARS: dict[str, str] = {"request_id": "ID", "app_name": "APP", "user": "U…"}


class _Argument(TyperArgument):
    """A positional argument shown as its word alone: ``NAME``, or ``[NAME]`` when it
    may be left out; never its Python type."""

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        name = name if self.required else f"[{name}]"
        return name + ("…" if self.nargs != 1 else "")

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _option_metavar(option: TyperOption) -> str:
    """The word shown after an option: nothing for a flag, the choices for a choice."""
    if option.is_flag or option.count:
        return ""
    long_name = next((o for o in option.opts if o.startswith("--")), option.opts[0])
    if long_name in OPTION_METAVARS:
        return OPTION_METAVARS[long_name]
    descriptor = option.type_descriptor
    if descriptor.is_choice:
        return "|".join(str(getattr(c, "value", c)) for c in descriptor.choices or ())
    return long_name.lstrip("-").replace("-", "_").upper()


def plain_help(command: Any) -> None:
    """Give every parameter of ``command`` and its subcommands a word instead of a type.

    Typer makes the arguments itself, with no hook to choose their class, so each one
    is given :class:`_Argument`'s way of showing itself after the fact; the help test
    (tests/cli/test_cli_conventions.py) fails if a Typer upgrade changes what it prints."""
    # `--help` is made on first use; made now, it gets the same treatment.
    help_option = command.get_help_option(typer.Context(command))
    for param in [*command.params, *([help_option] if help_option else [])]:
        if isinstance(param, TyperArgument):
            if param.metavar is None:
                name = param.name or "value"
                param.metavar = ARGUMENT_METAVARS.get(name, name.upper())
            param.__class__ = _Argument
        elif isinstance(param, TyperOption) and param.metavar is None:
            param.metavar = _option_metavar(param)
    for sub in getattr(command, "commands", {}).values():
        plain_help(sub)


class ConventionalGroup(TyperGroup):
    """The ``jitaccess`` command: its help reads as gh's, kubectl's and az's do."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain_help(self)
