"""Parse and print durations as people type them: ``90m``, ``2h``, ``1h30m``, ``PT8H``."""

from __future__ import annotations

import re
from datetime import timedelta

from jitaccess.domain.text import shown

# ASCII digits only: ``\d`` (and ``int()``) also take Arabic-Indic, fullwidth and other digits.
_COMPACT = re.compile(
    r"(?:(?P<d>[0-9]+)d)?(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m)?(?:(?P<s>[0-9]+)s)?", re.ASCII
)
_ISO = re.compile(
    r"P(?:(?P<d>[0-9]+)D)?(?:T(?:(?P<h>[0-9]+)H)?(?:(?P<m>[0-9]+)M)?(?:(?P<s>[0-9]+)S)?)?",
    re.ASCII,
)


def parse_duration(text: str) -> timedelta:
    """Return the duration ``text`` names, or raise ``ValueError`` saying what is accepted."""
    cleaned = text.strip().replace(" ", "")
    if len(cleaned) > 40:
        raise ValueError(
            f"'{shown(text, 40)}' is not a duration: use forms like 90m, 2h, 1h30m or PT8H"
        )
    match = _ISO.fullmatch(cleaned.upper()) if cleaned.upper().startswith("P") else None
    if match is None:
        match = _COMPACT.fullmatch(cleaned.lower())
    if not cleaned or match is None or not any(match.groupdict().values()):
        raise ValueError(
            f"'{shown(text)}' is not a duration: use forms like 90m, 2h, 1h30m or PT8H"
        )
    parts = {k: int(v) for k, v in match.groupdict().items() if v}
    try:
        return timedelta(
            days=parts.get("d", 0),
            hours=parts.get("h", 0),
            minutes=parts.get("m", 0),
            seconds=parts.get("s", 0),
        )
    except OverflowError:
        raise ValueError(f"'{shown(text)}' is far too long a duration") from None


def format_duration(value: timedelta) -> str:
    """Print a duration compactly, the inverse of :func:`parse_duration` (``1h30m``)."""
    total = int(value.total_seconds())
    if total <= 0:
        return "0m"
    # Whole days only from two days on: people say "24h", not "1d".
    days, rest = divmod(total, 86400) if total >= 2 * 86400 else (0, total)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    out = ""
    if days:
        out += f"{days}d"
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if seconds:
        out += f"{seconds}s"
    return out
