"""GNU build-id, read with `struct` straight from the program headers.

This is on the warm path of every command (the symbol cache is keyed by build-id), so it avoids
importing pyelftools: one header read, the PT_NOTE segments, done.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from utrace.errors import ElfError

ELF_MAGIC = b"\x7fELF"
PT_NOTE = 4
NT_GNU_BUILD_ID = 3
_MAX_NOTE_BYTES = 1 << 20


def file_error(path: str, e: OSError) -> ElfError:
    """One clear ElfError for a file that cannot be opened or read."""
    if isinstance(e, IsADirectoryError):
        return ElfError(f"{path}: is a directory, not an ELF file")
    if isinstance(e, FileNotFoundError):
        return ElfError(f"{path}: no such file")
    if isinstance(e, PermissionError):
        return ElfError(f"{path}: permission denied")
    return ElfError(f"{path}: cannot read: {e.strerror or e}")


def check_elf_magic(head: bytes, path: str) -> None:
    """Raise ElfError unless `head` starts an ELF64 little-endian file (the only kind traced here)."""
    if len(head) < 64:
        raise ElfError(f"{path}: not an ELF file (too short)")
    if head[:4] != ELF_MAGIC:
        raise ElfError(f"{path}: not an ELF file")
    if head[4] != 2 or head[5] != 1:
        raise ElfError(f"{path}: only 64-bit little-endian ELF files are supported")


def iter_notes(data: bytes) -> list[tuple[bytes, int, bytes]]:
    """Split a note segment/section into (name, type, desc) triples; stops at the first bad header."""
    notes: list[tuple[bytes, int, bytes]] = []
    pos = 0
    end = len(data)
    while pos + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        pos += 12
        name_end = pos + namesz
        desc_start = pos + ((namesz + 3) & ~3)
        desc_end = desc_start + descsz
        if name_end > end or desc_end > end:
            break
        notes.append((data[pos:name_end].rstrip(b"\0"), ntype, data[desc_start:desc_end]))
        pos = desc_start + ((descsz + 3) & ~3)
    return notes


def read_build_id(path: str) -> str | None:
    """Return the GNU build-id of `path` as lowercase hex, or None if the file has none.

    The file is opened with `procfs.open_file` (see there).

    Raises:
        ElfError: the file is not a 64-bit little-endian ELF file or its headers are out of range.
        OSError: the file cannot be opened, or is not a regular file.
    """
    from utrace.process.procfs import open_file

    with open_file(path) as f:
        return build_id_of(f, path)


def build_id_of(f: BinaryIO, path: str) -> str | None:
    """`read_build_id` of an opened file (read from its start; `path` names it in errors)."""
    f.seek(0)
    head = f.read(64)
    check_elf_magic(head, path)
    (phoff,) = struct.unpack_from("<Q", head, 32)
    phentsize, phnum = struct.unpack_from("<HH", head, 54)
    if phnum == 0:
        return None
    if phentsize < 56 or phnum > 4096:
        raise ElfError(f"{path}: corrupt ELF program header table")
    size = os.fstat(f.fileno()).st_size
    if phoff + phentsize * phnum > size:
        raise ElfError(f"{path}: truncated ELF file (program headers past the end)")
    f.seek(phoff)
    table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
        if p_type != PT_NOTE or p_filesz == 0 or p_filesz > _MAX_NOTE_BYTES:
            continue
        if p_offset + p_filesz > size:
            raise ElfError(f"{path}: truncated ELF file (note segment past the end)")
        f.seek(p_offset)
        for name, ntype, desc in iter_notes(f.read(p_filesz)):
            if name == b"GNU" and ntype == NT_GNU_BUILD_ID and desc:
                return desc.hex()
    return None
