"""ELF headers, sections and load segments, read with `struct` (bounded, defensive).

Opening node through pyelftools costs about 65 ms (import and header objects) before a single symbol
is read; the header tables are a few kilobytes of fixed-layout records, so this module reads them
directly. pyelftools stays the tool for DWARF, where its value is. Every inconsistency (offsets past the
end, absurd counts) becomes one `ElfError` naming the file.

The file is read with bounded `pread`s, not memory-mapped: a traced process may truncate its own file
while utrace reads it, which in a mapping is a SIGBUS that ends utrace; a short read is one `ElfError`.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from utrace.elf.buildid import PT_NOTE, check_elf_magic, file_error
from utrace.errors import ElfError
from utrace.process import procfs

SHT_NULL = 0
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_NOTE = 7
SHT_NOBITS = 8
SHT_DYNSYM = 11
PT_LOAD = 1
PF_X = 1
PF_W = 2
ET_EXEC = 2
ET_DYN = 3
EM_X86_64 = 62
EM_AARCH64 = 183
_MAX_SECTIONS = 1 << 16
_MAX_SEGMENTS = 1 << 12
_SHDR = struct.Struct("<IIQQQQIIQQ")
_PHDR = struct.Struct("<IIQQQQQQ")
_CHUNK = 4 << 20  # find() reads this much at a time


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    type: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


@dataclass(frozen=True, slots=True)
class Segment:
    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int


class ElfImage:
    """An opened ELF64 little-endian file. Use as a context manager, or close().

    The file is opened with `procfs.open_file` (inside its process's root, never a FIFO or a device,
    at most `procfs.MAX_ELF_BYTES`), or given already opened as `file` (then it is closed with the image).
    """

    def __init__(self, path: str, file: BinaryIO | None = None) -> None:
        self.path = path
        if file is None:
            try:
                file = procfs.open_file(path)
            except OSError as e:
                raise file_error(path, e) from None
        self._file = file
        self._fd = -1
        try:
            self._fd = self._file.fileno()
            self.size = os.fstat(self._fd).st_size
            check_elf_magic(os.pread(self._fd, 64, 0), path)
            self._parse()
        except ElfError:
            self.close()
            raise
        except (OSError, ValueError, struct.error) as e:
            self.close()
            raise ElfError(f"{path}: corrupt or truncated ELF file ({e})") from None

    def _parse(self) -> None:
        d = self.read(0, 64)
        self.e_type, self.machine = struct.unpack_from("<HH", d, 16)
        phoff, shoff = struct.unpack_from("<QQ", d, 32)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", d, 54)
        self.segments: list[Segment] = []
        self.note_segments: list[tuple[int, int]] = []  # (file offset, size) of each PT_NOTE
        if phnum:
            if phentsize < _PHDR.size or phnum > _MAX_SEGMENTS or phoff + phnum * phentsize > self.size:
                raise ElfError(f"{self.path}: corrupt or truncated ELF file (program headers)")
            table = self.read(phoff, phnum * phentsize)
            for i in range(phnum):
                p_type, flags, off, vaddr, _pa, filesz, memsz, _al = _PHDR.unpack_from(table, i * phentsize)
                if p_type == PT_LOAD:
                    self.segments.append(Segment(vaddr, off, filesz, memsz, flags))
                elif p_type == PT_NOTE:
                    self.note_segments.append((off, filesz))
        self.sections: list[Section] = []
        if not shoff:
            return
        if shentsize < _SHDR.size or shoff + _SHDR.size > self.size:
            raise ElfError(f"{self.path}: corrupt or truncated ELF file (section headers)")
        first = _SHDR.unpack(self.read(shoff, _SHDR.size))
        if shnum == 0:  # more than 0xff00 sections: the real count is in section 0's sh_size
            shnum = first[5]
        if shstrndx == 0xFFFF:
            shstrndx = first[6]
        if shnum > _MAX_SECTIONS or shoff + shnum * shentsize > self.size:
            raise ElfError(f"{self.path}: corrupt or truncated ELF file (section headers)")
        table = self.read(shoff, shnum * shentsize)
        raw = [_SHDR.unpack_from(table, i * shentsize) for i in range(shnum)]
        names = b""
        if 0 < shstrndx < shnum:
            _n, t, _f, _a, off, size, *_ = raw[shstrndx]
            if t != SHT_NOBITS and off + size <= self.size:
                names = self.read(off, size)
        for name_off, t, _flags, addr, off, size, link, _info, _align, entsize in raw:
            if t != SHT_NOBITS and t != SHT_NULL and off + size > self.size:
                raise ElfError(f"{self.path}: truncated ELF file (a section lies past the end)")
            end = names.find(b"\0", name_off)
            name = names[name_off : end if end >= 0 else len(names)].decode("utf-8", "replace")
            self.sections.append(Section(name, t, addr, off, size, link, entsize))

    def close(self) -> None:
        self._fd = -1
        self._file.close()

    def __enter__(self) -> ElfImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_shared(self) -> bool:
        """True for ET_DYN: PIE executables and shared libraries (addresses are load-relative)."""
        return bool(self.e_type == ET_DYN)

    def section(self, name: str) -> Section | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None

    def section_at(self, index: int) -> Section | None:
        if 0 <= index < len(self.sections):
            return self.sections[index]
        return None

    def read(self, offset: int, size: int) -> bytes:
        """`size` bytes at `offset`; an ElfError past the end, or when the file shrank since it was opened."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ElfError(f"{self.path}: truncated ELF file (read past the end)")
        try:
            data = os.pread(self._fd, size, offset)
            while 0 < len(data) < size:  # a regular file reads short only at its end (or past 2 GiB)
                more = os.pread(self._fd, size - len(data), offset + len(data))
                if not more:
                    break
                data += more
        except OSError as e:
            raise ElfError(f"{self.path}: cannot read ({e.strerror or e})") from None
        if len(data) != size:
            raise ElfError(f"{self.path}: the file shrank while utrace read it (truncated by another process?)")
        return data

    def find(self, needle: bytes, start: int, end: int) -> int:
        """File offset of the first `needle` wholly inside [start, end), or -1 (read a chunk at a time)."""
        end = min(end, self.size)
        pos, overlap = max(start, 0), max(len(needle) - 1, 0)
        while end - pos >= len(needle) > 0:
            n = min(max(_CHUNK, 2 * len(needle)), end - pos)
            i = self.read(pos, n).find(needle)
            if i >= 0:
                return pos + i
            if pos + n >= end:
                break
            pos += n - overlap
        return -1

    def section_bytes(self, sec: Section) -> bytes:
        if sec.type == SHT_NOBITS:
            return b""
        return self.read(sec.offset, sec.size)

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        """File offset of a virtual address, through the PT_LOAD segment that maps it.

        Correct for ET_EXEC, PIE and shared libraries alike: uprobes want this file offset.
        """
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return vaddr - seg.vaddr + seg.offset
        return None
