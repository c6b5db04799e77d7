"""Rules for the text people type: what cannot be stored, and what counts as blank.

Pure: no Slack, SQL or clock. Every piece of text a person supplies (justifications,
reasons, application names, user ids, roles, configuration) passes
:func:`check_text` before the core acts on it, so a NUL byte or a lone surrogate is
refused with a message instead of failing deep inside a database driver
(PostgreSQL rejects NUL in text; psycopg and sqlite3 cannot encode lone surrogates).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any

from jitaccess.domain.errors import RuleViolation

#: Characters that render as nothing but are not Unicode Cf/Zs/Zl/Zp/Cc: Hangul
#: fillers, the braille blank, the combining grapheme joiner, Khmer inherent vowels,
#: the Mongolian vowel separator and the variation selectors.
_ALSO_INVISIBLE = frozenset(
    "\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5\u180e"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
)
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def _invisible(char: str) -> bool:
    return (
        char.isspace()
        or char in _ALSO_INVISIBLE
        or 0xE0100 <= ord(char) <= 0xE01EF  # variation selectors supplement
        or unicodedata.category(char) in _INVISIBLE_CATEGORIES
    )


def is_blank(text: str) -> bool:
    """True if ``text`` shows nothing: only whitespace and invisible characters
    (zero-width space and joiners, word joiner, BOM, soft hyphen, Hangul filler…)."""
    return all(_invisible(char) for char in text)


def _bad_char(text: str) -> str | None:
    for char in text:
        if char == "\x00" or 0xD800 <= ord(char) <= 0xDFFF:
            return char
    return None


def shown(text: str, limit: int = 50) -> str:
    """``text`` cut to ``limit`` characters, safe to print anywhere: NUL, other
    control characters and lone surrogates appear as ``\\uXXXX`` escapes."""
    out = []
    for char in text[:limit]:
        code = ord(char)
        if code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out) + ("…" if len(text) > limit else "")


def check_text(value: str, what: str, *, field: str | None = None) -> str:
    """Return ``value`` if it can be stored; refuse a NUL byte or a lone surrogate.

    ``what`` names the input for the message ("The justification", "Role")."""
    bad = _bad_char(value)
    if bad is not None:
        kind = "a NUL character" if bad == "\x00" else "an invalid character"
        raise RuleViolation(
            f"{what} contains {kind} (U+{ord(bad):04X}) that cannot be stored: "
            "remove it and type the text again",
            field=field,
        )
    return value


def check_texts(value: Any, what: str, *, field: str | None = None) -> None:
    """:func:`check_text` on every string in ``value`` (and in its keys), however
    deeply it nests in mappings and sequences (configuration, JSON)."""
    if isinstance(value, str):
        check_text(value, what, field=field)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_texts(key, what, field=field)
            check_texts(item, what, field=field)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            check_texts(item, what, field=field)
