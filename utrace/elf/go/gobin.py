"""An opened Go binary: file access for the Go format modules, with their results cached per file.

Everything is read from the file with `struct` through `ElfImage` (no pyelftools: its symbol and section
objects cost seconds on a 100k-function table). The formats are decoded by the modules beside this one:
`buildinfo` (version, module info, ABI), `pclntab` (the function table), `moduledata`, `rtype` (runtime
type names) and `inline` (inline trees); `GoBinary` opens the file once and caches what they find.
They are checked against real 1.15, 1.19 and 1.21-1.24 binaries by tests/e2e/test_go_tables.py.

Addresses are link-time virtual addresses (what `go tool nm` prints). For a PIE the caller subtracts the
load bias before asking about a runtime address. Words that a PIE relocates at load time
(R_X86_64_RELATIVE / R_AARCH64_RELATIVE) are read through the relocation's addend, because the linker may
leave the in-file word zero.

Supported: ELF64 little-endian (what `ElfImage` opens), pclntab magics 1.2 (Go 1.2-1.15), 1.16 (1.16-1.17),
1.18 (1.18-1.19) and 1.20 (1.20+). Inline trees: Go 1.13 and later. Type names: Go 1.7 and later.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

from utrace.elf.go import buildinfo
from utrace.elf.reader import EM_AARCH64, EM_X86_64, PF_X, ElfImage
from utrace.errors import ElfError

if TYPE_CHECKING:
    from utrace.elf.go.buildinfo import GoInfo
    from utrace.elf.go.pclntab import Pclntab

# (the decoders of the function table, module data and type descriptors are imported where they are
# used: whether a file is Go at all, which every `utrace native` asks, needs the build id and info only)

SHT_RELA = 4
R_X86_64_RELATIVE = 8
R_AARCH64_RELATIVE = 1027
_RELATIVE = {EM_X86_64: R_X86_64_RELATIVE, EM_AARCH64: R_AARCH64_RELATIVE}


@contextlib.contextmanager
def corrupt_is_elf_error(path: str, what: str) -> Iterator[None]:
    """Turn what a decoder raises on bytes it did not expect into the one-line ElfError of a corrupt file."""
    try:
        yield
    except (struct.error, IndexError, ValueError, OverflowError) as e:
        raise ElfError(f"{path}: corrupt {what} ({e})") from None


class GoBinary:
    """An opened Go ELF file with lazily computed, cached tables. Use as a context manager or close().

    Raises (constructor):
        ElfError: not an ELF file, unreadable, or corrupt headers.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.img = ElfImage(path)
        self._symbols: dict[str, int] | None = None
        self._relocs: dict[int, int] | None = None
        self._reloc_keys: list[int] | None = None
        self._info: GoInfo | None = None
        self._info_done = False
        self._pclntab: Pclntab | None = None
        self._moduledata: dict[str, int] | None = None
        self._moduledata_done = False
        self._type_cache: dict[int, str | None] = {}

    def close(self) -> None:
        self.img.close()

    def __enter__(self) -> GoBinary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- raw access

    def read_va(self, va: int, size: int) -> bytes:
        """Bytes at a virtual address, from the file (raises ElfError when not file-backed)."""
        off = self.img.vaddr_to_offset(va)
        if off is None or size < 0:
            raise ElfError(f"{self.path}: address {va:#x} is not in the file")
        for seg in self.img.segments:
            if seg.vaddr <= va < seg.vaddr + seg.filesz and va + size > seg.vaddr + seg.filesz:
                raise ElfError(f"{self.path}: {size} bytes at {va:#x} run past their segment")
        return self.img.read(off, size)

    def read_va_memory(self, va: int, size: int) -> bytes:
        """Bytes at `va` as the loaded image holds them: the zero-filled tail of a segment (.bss) reads as 0.

        Go < 1.18 build info points at runtime.modinfo, which is in .bss when it is empty (GOPATH builds).
        """
        for seg in self.img.segments:
            if seg.vaddr <= va and va + size <= seg.vaddr + seg.memsz and size >= 0:
                in_file = max(0, min(size, seg.vaddr + seg.filesz - va))
                head = self.img.read(va - seg.vaddr + seg.offset, in_file) if in_file else b""
                return head + bytes(size - in_file)
        raise ElfError(f"{self.path}: address {va:#x} is not in any segment")

    def read_upto(self, va: int, size: int) -> bytes:
        """Up to `size` bytes at `va`, fewer at the end of its segment."""
        for seg in self.img.segments:
            if seg.vaddr <= va < seg.vaddr + seg.filesz:
                return self.read_va(va, min(size, seg.vaddr + seg.filesz - va))
        raise ElfError(f"{self.path}: address {va:#x} is not in the file")

    def read_word(self, va: int) -> int:
        """A relocated pointer-sized word: a RELATIVE relocation's addend wins over the in-file bytes."""
        if self.img.is_shared:
            rel = self.relocations().get(va)
            if rel is not None:
                return rel
        return int(struct.unpack("<Q", self.read_va(va, 8))[0])

    def relocations(self) -> dict[int, int]:
        """RELATIVE relocations of the file: target VA -> addend (empty for ET_EXEC)."""
        if self._relocs is None:
            relocs: dict[int, int] = {}
            rtype = _RELATIVE.get(self.img.machine)
            if rtype is not None:
                for sec in self.img.sections:
                    if sec.type != SHT_RELA or sec.entsize not in (0, 24):
                        continue
                    raw = self.img.section_bytes(sec)
                    raw = raw[: len(raw) - len(raw) % 24]
                    for r_off, r_info, r_add in struct.iter_unpack("<QQq", raw):
                        if r_info & 0xFFFFFFFF == rtype:
                            relocs[r_off] = r_add & 0xFFFFFFFFFFFFFFFF
            self._relocs = relocs
        return self._relocs

    def apply_relocs(self, buf: bytearray, va: int) -> None:
        """Patch the relocated words of `buf` (the bytes at `va`) with their addends."""
        if not self.img.is_shared:
            return
        relocs = self.relocations()
        if not relocs:
            return
        if self._reloc_keys is None:
            self._reloc_keys = sorted(relocs)
        keys = self._reloc_keys
        i = bisect.bisect_left(keys, va)
        end = va + len(buf) - 8
        while i < len(keys) and keys[i] <= end:
            struct.pack_into("<Q", buf, keys[i] - va, relocs[keys[i]])
            i += 1

    def symbols(self) -> dict[str, int]:
        """The few `.symtab` symbols this module uses, name -> value (empty when there is no .symtab)."""
        if self._symbols is None:
            wanted = {
                b"runtime.text",
                b"runtime.buildVersion",
                b"runtime.types",
                b"runtime.firstmoduledata",
                b"go.func.*",
                b"go:func.*",
                b"x_cgo_init",
            }
            found: dict[str, int] = {}
            symtab = next((s for s in self.img.sections if s.name == ".symtab" and s.type == 2), None)
            if symtab is not None and symtab.size:
                strtab = self.img.section_at(symtab.link)
                names = self.img.section_bytes(strtab) if strtab is not None else b""
                raw = self.img.section_bytes(symtab)
                raw = raw[: len(raw) - len(raw) % 24]
                for st_name, _info, _other, _shndx, value, _size in struct.iter_unpack("<IBBHQQ", raw):
                    # Cheap filter first: the wanted names start with "r", "g" or "x".
                    if st_name >= len(names) or names[st_name] not in b"rgx":
                        continue
                    end = names.find(b"\0", st_name)
                    name = names[st_name : end if end >= 0 else len(names)]
                    if name in wanted and name.decode() not in found:
                        found[name.decode()] = value
            self._symbols = found
        return self._symbols

    def abi0_entries(self) -> set[int] | None:
        """Addresses of `.symtab` symbols whose name ends in `.abi0`; None without a `.symtab`."""
        if not self.has_symtab:
            return None
        symtab = next(s for s in self.img.sections if s.name == ".symtab" and s.type == 2 and s.size > 0)
        strtab = self.img.section_at(symtab.link)
        names = self.img.section_bytes(strtab) if strtab is not None else b""
        # Start offsets of the strings that end in ".abi0": one byte search instead of decoding every name.
        starts: set[int] = set()
        pos = 0
        while True:
            pos = names.find(b".abi0\0", pos)
            if pos < 0:
                break
            starts.add(names.rfind(b"\0", 0, pos) + 1)
            pos += 6
        out: set[int] = set()
        if starts:
            raw = self.img.section_bytes(symtab)
            raw = raw[: len(raw) - len(raw) % 24]
            for st_name, _info, _other, _shndx, value, _size in struct.iter_unpack("<IBBHQQ", raw):
                if st_name in starts:
                    out.add(value)
        return out

    @property
    def has_symtab(self) -> bool:
        return any(s.name == ".symtab" and s.type == 2 and s.size > 0 for s in self.img.sections)

    def offset_to_va(self, off: int) -> int | None:
        """The VA of file offset `off` through the segment whose file bytes hold it, or None."""
        for seg in self.img.segments:
            if seg.offset <= off < seg.offset + seg.filesz:
                return off - seg.offset + seg.vaddr
        return None

    def executable_span(self, lo: int, hi: int) -> bool:
        """True when [lo, hi) lies inside one executable PT_LOAD segment's file bytes."""
        return lo < hi and any(s.flags & PF_X and s.vaddr <= lo and hi <= s.vaddr + s.filesz for s in self.img.segments)

    # -------------------------------------------------------------- what the format modules decode (cached)

    def build_id(self) -> str | None:
        """The Go build ID from `.note.go.buildid` (section, else any PT_NOTE segment)."""
        return buildinfo.build_id(self)

    def buildinfo_blob(self) -> bytes | None:
        """The `.go.buildinfo` bytes from the magic on, or None (`gosyms.is_go_program` asks for them)."""
        return buildinfo.buildinfo_blob(self)

    def info(self) -> GoInfo | None:
        """Go build information, or None when the file is not a Go binary.

        Raises:
            ElfError: corrupt Go build info (or headers the decoders trip over).
        """
        if self._info_done:
            return self._info
        with corrupt_is_elf_error(self.path, "Go binary"):
            info = buildinfo.read_info(self)
        self._info, self._info_done = info, True
        return info

    def pclntab(self) -> Pclntab:
        """The decoded function table (cached).

        Raises:
            ElfError: no pclntab, or a corrupt one.
        """
        if self._pclntab is None:
            from utrace.elf.go.pclntab import Pclntab

            with corrupt_is_elf_error(self.path, "Go pclntab"):
                self._pclntab = Pclntab.load(self)
        return self._pclntab

    def moduledata(self) -> dict[str, int] | None:
        """The moduledata fields this module uses ("va", "text", "types", "etypes", "gofunc"), or None."""
        if not self._moduledata_done:
            self._moduledata_done = True
            from utrace.elf.go import moduledata

            self._moduledata = moduledata.find_moduledata(self)
        return self._moduledata

    def module_text(self, tab: Pclntab, first: int, end: int, *, absolute: bool = False) -> tuple[int, int] | None:
        """(module data VA, moduledata.text) of the module data that describes `tab`: see moduledata.module_text."""
        from utrace.elf.go import moduledata

        return moduledata.module_text(self, tab, first, end, absolute=absolute)

    def gofunc(self) -> int | None:
        """moduledata.gofunc: base of the 1.18+ funcdata offsets (`go.func.*` / `go:func.*`)."""
        from utrace.elf.go import moduledata

        return moduledata.gofunc(self)

    def types_base(self) -> int | None:
        """moduledata.types: base of the nameOff/typeOff offsets in runtime type descriptors."""
        from utrace.elf.go import moduledata

        return moduledata.types_base(self)

    def type_name(self, type_addr: int) -> str | None:
        """The name of the runtime `_type` at link-time VA `type_addr` ("*errors.errorString"), or None.

        None when the address is not a type descriptor in this file (or is 0). Cached per address.
        """
        if type_addr in self._type_cache:
            return self._type_cache[type_addr]
        try:
            from utrace.elf.go import rtype

            with corrupt_is_elf_error(self.path, "Go type descriptor"):
                name = rtype.type_name(self, type_addr)
        except ElfError:
            name = None
        self._type_cache[type_addr] = name
        return name

    def itab_type(self, itab_addr: int) -> str | None:
        """The dynamic type name of an itab (an interface value's first word): its `_type` at offset 8."""
        from utrace.elf.go import rtype

        return rtype.itab_type(self, itab_addr)


# ----------------------------------------------------------------------------- module-level API


def go_info(path: str) -> GoInfo | None:
    """Go build information of `path`, or None when it is not a Go binary.

    Raises:
        ElfError: not an ELF file, unreadable, or corrupt Go build info.
    """
    with GoBinary(path) as b:
        try:
            return b.info()
        except (struct.error, IndexError, ValueError, OverflowError) as e:
            raise ElfError(f"{path}: corrupt Go binary ({e})") from None


def pclntab(path: str) -> Pclntab:
    """The pclntab function table of `path` (the file stays open through the returned table).

    Raises:
        ElfError: not a Go binary, no pclntab, or a corrupt one.
    """
    b = open_binary(path)
    try:
        return b.pclntab()
    except (struct.error, IndexError, ValueError, OverflowError) as e:
        raise ElfError(f"{path}: corrupt Go pclntab ({e})") from None


@functools.lru_cache(maxsize=16)
def _cached_binary(path: str, _key: tuple[int, int, int, int]) -> GoBinary:
    return GoBinary(path)


def open_binary(path: str) -> GoBinary:
    """A cached `GoBinary` for `path` (reopened when the file changes); do not close it.

    Keyed by the path as given and the identity of the file it names when opened safely (a path under
    /proc/PID/root resolves inside that root: `os.path.realpath` would resolve it from the host's).
    """
    from utrace.process.procfs import identity

    st = identity(path)
    if st is None:
        return GoBinary(path)  # raises the usual one-line ElfError
    return _cached_binary(path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


def type_name(binary: str | GoBinary, type_addr: int) -> str | None:
    """The Go name of the runtime `_type` at link-time VA `type_addr` ("*errors.errorString"), or None."""
    b = open_binary(binary) if isinstance(binary, str) else binary
    try:
        return b.type_name(type_addr)
    except (struct.error, IndexError, ValueError, OverflowError):
        return None


def itab_type(binary: str | GoBinary, itab_addr: int) -> str | None:
    """The dynamic type name behind a non-empty interface's itab pointer, or None."""
    b = open_binary(binary) if isinstance(binary, str) else binary
    try:
        return b.itab_type(itab_addr)
    except (struct.error, IndexError, ValueError, OverflowError):
        return None


__all__ = [
    "GoBinary",
    "corrupt_is_elf_error",
    "go_info",
    "itab_type",
    "open_binary",
    "pclntab",
    "type_name",
]
