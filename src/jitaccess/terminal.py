"""What people typed, made safe to print on a terminal.

Justifications, reasons, application names and backend errors are stored exactly as
given. Printed raw, an escape sequence could recolour or rewrite the operator's screen
and a bidi override could make ``exe.txt`` read as ``txt.exe``; so every human-readable
output path shows such characters as visible escapes (``\\x1b``, ``\\u202e``).
JSON output escapes them by itself; files and pipes keep the exact data.
"""

from __future__ import annotations

import re

#: C0 controls, DEL, C1 controls, and the invisible direction marks, embeddings,
#: overrides and isolates (U+061C, U+200E-F, U+202A-E, U+2066-9), and the Unicode line
#: and paragraph separators (U+2028-9).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with every control or bidi character shown as ``\\xNN`` or ``\\uNNNN``."""
    return _UNSAFE.sub(_escape, text)
