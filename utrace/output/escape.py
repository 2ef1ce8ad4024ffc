"""Text from a traced process, made safe for a terminal.

Process names, symbol names, perf-map names, string arguments, file names and USDT operands come from
the traced process and its files: they can hold control bytes, escape sequences (`ESC ]0;title BEL`
retitles a terminal, `CSI` sequences move the cursor or recolour it) and rich markup (`[/x]`). Every
such string goes through `safe` before text output shows it, and into rich only as a `Text` (never
parsed as markup). JSON output stays exact: `json_safe` writes the characters `safe` would escape as
JSON's own `\\uXXXX` escapes, which a JSON reader turns back into the same string.

`safe` shows every character `str.isprintable()` refuses as a visible escape: C0 controls, DEL and C1
controls (`\\x1b`, `\\x7f`, `\\x9b`), the bytes of a name that was not UTF-8 (decoded with
surrogateescape: `\\xff`, the byte itself), bidirectional overrides and other format or separator
characters (`\\u202e`, `\\u2028`). A backslash itself is not escaped: this is a display, not an
encoding (`--json` gives the exact value).
"""

from __future__ import annotations

_CONTROL_BYTES = bytes([*range(0x20), 0x7F])


def _escape_char(c: str) -> str:
    o = ord(c)
    if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape: show the byte
        return f"\\x{o - 0xDC00:02x}"
    if o < 0x100:
        return f"\\x{o:02x}"
    if o < 0x10000:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def safe(s: str) -> str:
    """`s` with every non-printable character shown as an escape (`\\x1b`, `\\x9b`, `\\u202e`)."""
    if s.isprintable():  # nearly always: one pass in C, no copy
        return s
    return "".join(c if c.isprintable() else _escape_char(c) for c in s)


def safe_bytes(name: bytes) -> bytes:
    """A name as the file holds it (UTF-8 or not), escaped as `safe` escapes its surrogateescape decoding."""
    return safe(name.decode("utf-8", "surrogateescape")).encode("utf-8")


def needs_escape(names: list[bytes]) -> bool:
    """Whether any of `names` has a byte `safe_bytes` may change: a control byte or any non-ASCII byte.

    Cheap for a whole symbol table (a few milliseconds for node's 86k names): one join, then an
    ASCII check and a deletion of control bytes, both in C.
    """
    joined = b"".join(names)
    return not joined.isascii() or len(joined.translate(None, _CONTROL_BYTES)) != len(joined)


def _json_escape(c: str) -> str:
    o = ord(c)
    if o < 0x10000:
        return f"\\u{o:04x}"
    o -= 0x10000  # JSON spells a character past the BMP as a UTF-16 surrogate pair
    return f"\\u{0xD800 + (o >> 10):04x}\\u{0xDC00 + (o & 0x3FF):04x}"


def json_safe(line: str) -> str:
    """A JSON text (as `json` encodes it with ensure_ascii=False, on one line) with every character
    `safe` would escape written as a JSON `\\uXXXX` escape instead: the same JSON value, and nothing a
    terminal acts on. Such characters can only be inside strings (JSON's own syntax is printable ASCII).
    """
    # nearly always: json escapes controls below 0x20 itself, not DEL (two C scans, faster than isprintable)
    if line.isascii() and "\x7f" not in line:
        return line
    return "".join(c if c.isprintable() or c == "\n" else _json_escape(c) for c in line)


def utf8_text(s: str) -> str:
    """`s` as valid UTF-8 text, for formats whose strings must be (protobuf): a name's byte that was not
    UTF-8 (a surrogateescape) becomes `\\xNN`, any other lone surrogate `\\uNNNN`; all else is kept."""
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return "".join(_escape_char(c) if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)


def markup(s: str) -> str:
    """`s` made safe and escaped for a rich markup string (where a Text object does not fit)."""
    from rich.markup import escape

    return escape(safe(s))


__all__ = ["json_safe", "markup", "needs_escape", "safe", "safe_bytes", "utf8_text"]
