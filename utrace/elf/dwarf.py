"""Generic DWARF reading, for Go and C/C++ alike: LEB128, location expressions, location lists, CFA rules.

Nothing here knows about a language: `utrace.elf.go.godwarf` uses it for Go's DWARF, `utrace.elf.cxxdwarf`
for C++. Decoders bounds-check the bytes they are given and raise `Malformed` (an `ElfError`) on bytes
that end early or do not decode.
"""

from __future__ import annotations

from utrace.errors import ElfError

_MAX_LEB_BYTES = 10  # a 64-bit value takes at most 10 (Go's binary.MaxVarintLen64)


class Malformed(ElfError):
    """The bytes end early or are not what the format says (a LEB128 too long, an expression cut short)."""


def uleb128(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 number (DWARF ULEB128, Go's binary.Uvarint) at `pos`: (value, next position).

    Raises:
        Malformed: truncated, or longer than 10 bytes.
    """
    value = shift = 0
    end = len(data)
    for i in range(_MAX_LEB_BYTES):
        if pos + i >= end:
            raise Malformed("truncated LEB128")
        b = data[pos + i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos + i + 1
        shift += 7
    raise Malformed(f"LEB128 longer than {_MAX_LEB_BYTES} bytes")


def sleb128(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode a signed LEB128 number at `pos`: (value, next position). Raises Malformed like `uleb128`."""
    start = pos
    value, pos = uleb128(data, pos)
    if data[pos - 1] & 0x40:
        value -= 1 << (7 * (pos - start))
    return value, pos
