"""Parse and print durations as people type them: ``90m``, ``2h``, ``1h30m``, ``PT8H``."""

from __future__ import annotations

import re
from datetime import timedelta

_COMPACT = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")
_ISO = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$")


def parse_duration(text: str) -> timedelta:
    """Return the duration ``text`` names, or raise ``ValueError`` saying what is accepted."""
    cleaned = text.strip().replace(" ", "")
    if len(cleaned) > 40:
        raise ValueError(f"'{text[:40]}…' is not a duration: use forms like 90m, 2h, 1h30m or PT8H")
    match = _ISO.match(cleaned.upper()) if cleaned.upper().startswith("P") else None
    if match is None:
        match = _COMPACT.match(cleaned.lower())
    if not cleaned or match is None or not any(match.groupdict().values()):
        raise ValueError(f"'{text}' is not a duration: use forms like 90m, 2h, 1h30m or PT8H")
    parts = {k: int(v) for k, v in match.groupdict().items() if v}
    try:
        return timedelta(
            days=parts.get("d", 0),
            hours=parts.get("h", 0),
            minutes=parts.get("m", 0),
            seconds=parts.get("s", 0),
        )
    except OverflowError:
        raise ValueError(f"'{text}' is far too long a duration") from None


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
