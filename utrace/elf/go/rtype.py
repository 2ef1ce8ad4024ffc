"""Go runtime type descriptors (`_type`, itabs): the name of a dynamic type from its address.

Layouts from runtime/type.go and internal/abi (Go 1.7 to 1.24, 64-bit): `_type.str` is a nameOff from
moduledata.types; the name's length is a uvarint since Go 1.17, two big-endian bytes before.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from utrace.elf.dwarf import uleb128
from utrace.elf.go.pclntab import MAGIC_12, MAGIC_118, MAGIC_120, MAX_NAME
from utrace.errors import ElfError

if TYPE_CHECKING:
    from utrace.elf.go.gobin import GoBinary

_TFLAG_EXTRA_STAR = 1 << 1


def _name_varint(binary: GoBinary) -> bool | None:
    """True when type names use a uvarint length (Go 1.17+), False for the 2-byte form, None: unknown."""
    info = binary.info()
    if info is not None and info.version_tuple is not None:
        return info.version_tuple >= (1, 17, 0)
    try:
        magic = binary.pclntab().magic
    except ElfError:
        return None
    if magic == MAGIC_12:
        return False
    if magic in (MAGIC_118, MAGIC_120):
        return True
    return None


def type_name(binary: GoBinary, type_addr: int) -> str | None:
    """The name of the runtime `_type` at link-time VA `type_addr`, or None (GoBinary.type_name caches it).

    Raises:
        struct.error, IndexError, ...: on bytes that are not a type descriptor (the caller turns them into
            ElfError).
    """
    if type_addr <= 0:
        return None
    base = binary.types_base()
    if base is None:
        return None
    try:
        # _type: size, ptrdata (uintptr), hash u32, tflag u8, align, fieldAlign, kind u8, equal, gcdata
        # (pointers), str nameOff i32 @40, ptrToThis @44 -- unchanged from Go 1.7 to 1.24 (64-bit).
        raw = binary.read_va(type_addr, 48)
        tflag = raw[20]
        (name_off,) = struct.unpack_from("<i", raw, 40)
        if name_off <= 0:
            return None
        head = binary.read_va(base + name_off, 3)
        varint = _name_varint(binary)
        if varint is None:
            # 1.16 (2-byte big-endian length) and 1.17 (uvarint) share a pclntab format: a name is never
            # empty, so a zero second byte means the 2-byte form.
            varint = head[1] != 0
        if varint:
            n, pos = uleb128(binary.read_upto(base + name_off + 1, 10), 0)
            start = base + name_off + 1 + pos
        else:
            n = head[1] << 8 | head[2]
            start = base + name_off + 3
        if not 0 < n <= MAX_NAME:
            return None
        name = binary.read_va(start, n).decode("utf-8", "replace")
    except ElfError:
        return None
    if tflag & _TFLAG_EXTRA_STAR:
        name = name[1:]
    return name


def itab_type(binary: GoBinary, itab_addr: int) -> str | None:
    """The dynamic type name of an itab (an interface value's first word): its `_type` at offset 8."""
    if itab_addr <= 0:
        return None
    try:
        typ = binary.read_word(itab_addr + 8)
    except ElfError:
        return None
    return binary.type_name(typ)
