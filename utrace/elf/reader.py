"""ELF headers, sections and load segments, read with `struct` (bounded, defensive).

Opening node through pyelftools costs about 65 ms (import and header objects) before a single symbol
is read; the header tables are a few kilobytes of fixed-layout records, so this module reads them
directly. pyelftools stays the tool for DWARF, where its value is. Every inconsistency (offsets past the
end, absurd counts) becomes one `ElfError` naming the file.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from utrace.elf.buildid import check_elf_magic, file_error
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
    """An opened, memory-mapped ELF64 little-endian file. Use as a context manager, or close().

    The file is opened with `procfs.open_file` (inside its process's root, never a FIFO or a device,
    at most `procfs.MAX_ELF_BYTES`), or given already opened as `file` (then it is closed with the image).
    """

    def __init__(self, path: str, file: BinaryIO | None = None) -> None:
        self.path = path
        self.data: Any = None
        if file is None:
            try:
                file = procfs.open_file(path)
            except OSError as e:
                raise file_error(path, e) from None
        self._file = file
        try:
            self.size = os.fstat(self._file.fileno()).st_size
            self._file.seek(0)
            check_elf_magic(self._file.read(64), path)
            self.data = mmap.mmap(self._file.fileno(), 0, prot=mmap.PROT_READ)
            self._parse()
        except ElfError:
            self.close()
            raise
        except (OSError, ValueError, struct.error) as e:
            self.close()
            raise ElfError(f"{path}: corrupt or truncated ELF file ({e})") from None

    def _parse(self) -> None:
        d = self.data
        self.e_type, self.machine = struct.unpack_from("<HH", d, 16)
        phoff, shoff = struct.unpack_from("<QQ", d, 32)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", d, 54)
        self.segments: list[Segment] = []
        if phnum:
            if phentsize < _PHDR.size or phnum > _MAX_SEGMENTS or phoff + phnum * phentsize > self.size:
                raise ElfError(f"{self.path}: corrupt or truncated ELF file (program headers)")
            for i in range(phnum):
                p_type, flags, off, vaddr, _pa, filesz, memsz, _al = _PHDR.unpack_from(d, phoff + i * phentsize)
                if p_type == PT_LOAD:
                    self.segments.append(Segment(vaddr, off, filesz, memsz, flags))
        self.sections: list[Section] = []
        if not shoff:
            return
        if shentsize < _SHDR.size or shoff + _SHDR.size > self.size:
            raise ElfError(f"{self.path}: corrupt or truncated ELF file (section headers)")
        if shnum == 0:  # more than 0xff00 sections: the real count is in section 0's sh_size
            shnum = _SHDR.unpack_from(d, shoff)[5]
        if shstrndx == 0xFFFF:
            shstrndx = _SHDR.unpack_from(d, shoff)[6]
        if shnum > _MAX_SECTIONS or shoff + shnum * shentsize > self.size:
            raise ElfError(f"{self.path}: corrupt or truncated ELF file (section headers)")
        raw = [_SHDR.unpack_from(d, shoff + i * shentsize) for i in range(shnum)]
        names = b""
        if 0 < shstrndx < shnum:
            _n, t, _f, _a, off, size, *_ = raw[shstrndx]
            if t != SHT_NOBITS and off + size <= self.size:
                names = bytes(d[off : off + size])
        for name_off, t, _flags, addr, off, size, link, _info, _align, entsize in raw:
            if t != SHT_NOBITS and t != SHT_NULL and off + size > self.size:
                raise ElfError(f"{self.path}: truncated ELF file (a section lies past the end)")
            end = names.find(b"\0", name_off)
            name = names[name_off : end if end >= 0 else len(names)].decode("utf-8", "replace")
            self.sections.append(Section(name, t, addr, off, size, link, entsize))

    def close(self) -> None:
        if self.data is not None:
            self.data.close()
            self.data = None
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
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ElfError(f"{self.path}: truncated ELF file (read past the end)")
        return bytes(self.data[offset : offset + size])

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
