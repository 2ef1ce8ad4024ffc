"""Go binaries without DWARF: build info, the pclntab function table, inline trees and runtime type names.

Everything here is read from the file with `struct` through `ElfImage` (no pyelftools: its symbol and
section objects cost seconds on a 100k-function table). The layouts follow the Go runtime sources of
each release (runtime/symtab.go, runtime/runtime2.go, runtime/type.go, internal/abi, debug/buildinfo,
debug/gosym) and are checked against real 1.15, 1.19 and 1.21-1.24 binaries by tests/e2e/test_go_tables.py.

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
import json
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from utrace.elf.buildid import iter_notes
from utrace.elf.reader import EM_AARCH64, EM_X86_64, ET_DYN, SHT_NOBITS, ElfImage
from utrace.errors import ElfError

# ----------------------------------------------------------------------------- constants

BUILDINFO_MAGIC = b"\xff Go buildinf:"
_BUILDINFO_ALIGN = 16
_BUILDINFO_SCAN = 64 * 1024
_FLAG_BIG_ENDIAN = 0x1
_FLAG_VERSION_INL = 0x2
NT_GO_BUILD_ID = 4

MAGIC_12 = 0xFFFFFFFB
MAGIC_116 = 0xFFFFFFFA
MAGIC_118 = 0xFFFFFFF0
MAGIC_120 = 0xFFFFFFF1
PCLNTAB_MAGICS = {
    MAGIC_12: "go1.2-1.15",
    MAGIC_116: "go1.16-1.17",
    MAGIC_118: "go1.18-1.19",
    MAGIC_120: "go1.20+",
}

PT_LOAD = 1
PT_NOTE = 4
PF_X = 1
PF_W = 2
SHT_RELA = 4
R_X86_64_RELATIVE = 8
R_AARCH64_RELATIVE = 1027
EM_PPC64 = 21
EM_S390 = 22
EM_RISCV = 243
EM_LOONGARCH = 258
_ARCH = {EM_X86_64: "amd64", EM_AARCH64: "arm64", EM_PPC64: "ppc64le", EM_S390: "s390x", EM_RISCV: "riscv64"}
_ARCH[EM_LOONGARCH] = "loong64"
_RELATIVE = {EM_X86_64: R_X86_64_RELATIVE, EM_AARCH64: R_AARCH64_RELATIVE}

# First version with the register ABI per GOARCH (go.md §1.1); absent: stack ABI only.
_REGABI_SINCE = {"amd64": (1, 17), "arm64": (1, 18), "ppc64": (1, 18), "ppc64le": (1, 18)}

_TFLAG_EXTRA_STAR = 1 << 1
_FUNCFLAG_ASM = 1 << 2  # internal/abi FuncFlagAsm (runtime funcFlag_ASM in 1.18-1.19)
_MAX_NAME = 1 << 16
_MAX_FUNCS = 1 << 24

Version = tuple[int, int, int]


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class GoInfo:
    """What a Go binary says about itself.

    Attributes:
        path: the file.
        version: the toolchain version as Go prints it ("go1.19.8", "go1.21rc2", "devel go1.23-abc ..."),
            None when nothing in the file records it (Go < 1.13 stripped).
        version_tuple: (major, minor, patch) for numeric comparison, None when `version` is None or unparsable.
        version_source: where the version came from: "buildinfo", "runtime.buildVersion" or "" (unknown).
        build_id: the Go build ID from `.note.go.buildid` ("actionID/contentID..."), None if absent.
        main_path: the main package path ("path" line of the module info, e.g. "command-line-arguments").
        module_path: the main module path ("mod" line), None for GOPATH builds.
        module_version: the main module version ("(devel)", "v1.2.3"), None when there is no "mod" line.
        deps: (path, version) of each dependency module ("dep" lines).
        settings: build settings, "build KEY=VALUE" lines (Go 1.18+): "-buildmode", "-compiler",
            "CGO_ENABLED", "GOARCH", "GOOS", "GOAMD64", "-ldflags" (unquoted), "vcs.*" ...
        pie: ET_DYN file or -buildmode=pie.
        cgo: CGO_ENABLED from the settings, else whether `.symtab` has `x_cgo_init` (runtime/cgo's C part;
            `_cgo_init` is a plain runtime variable present in every binary); None when unknown.
        arch: GOARCH derived from the ELF machine ("amd64", "arm64", ...; "em<N>" for others).
        has_symtab: a non-empty `.symtab` (not built with -ldflags=-s, not stripped).
        has_dwarf: a `.debug_info` or `.zdebug_info` section.
        abi: "regabi" (ABIInternal, arguments in registers) or "stack" (ABI0).
        abi_source: why: "version go1.19.8" or "pclntab magic go1.18-1.19 (version unknown)".
    """

    path: str
    version: str | None
    version_tuple: Version | None
    version_source: str
    build_id: str | None
    main_path: str | None
    module_path: str | None
    module_version: str | None
    deps: tuple[tuple[str, str], ...]
    settings: dict[str, str]
    pie: bool
    cgo: bool | None
    arch: str
    has_symtab: bool
    has_dwarf: bool
    abi: str
    abi_source: str


@dataclass(frozen=True, slots=True)
class GoFunc:
    """One function of the pclntab.

    Attributes:
        name: the name exactly as the pclntab records it: "net/http.(*Client).Do", "main.(*T).M",
            "type:.eq.main.T" (1.20+) / "type..eq.main.T". Never with the `.abi0` suffix (only ELF symbols
            carry it); Go 1.15 keeps "·" in some names where ELF symbols have "."; 1.18-1.19 write generic
            instances as "F[...]", so a name may appear more than once.
        entry: entry virtual address.
        end: end virtual address (the next function's entry, or the table's end sentinel).
        offset: file offset of the entry (through PT_LOAD), None if no segment maps it.
        index: position in the function table (internal handle for pcdata/funcdata lookups).
        abi0: True when `.symtab` names this entry "<name>.abi0" (an assembly function with the stack ABI in
            a register-ABI binary), False when `.symtab` has it without the suffix or not at all, None when the
            file has no `.symtab` (stripped: unknown; see `asm`).
        asm: the function was written in assembly (FuncFlag ASM, Go 1.18+ tables); None for older tables.
            Most assembly functions are ABI0, but some runtime ones are declared ABIInternal.
    """

    name: str
    entry: int
    end: int
    offset: int | None
    index: int
    abi0: bool | None = None
    asm: bool | None = None

    @property
    def base_name(self) -> str:
        """The name without an `.abi0` suffix (for names given by users or taken from ELF symbols)."""
        return self.name[:-5] if self.name.endswith(".abi0") else self.name

    @property
    def symbol(self) -> str:
        """The ELF symbol name the linker gives this function (`go tool nm` prints it): `.abi0` added if ABI0."""
        return self.name + ".abi0" if self.abi0 and not self.name.endswith(".abi0") else self.name

    @property
    def size(self) -> int:
        return self.end - self.entry


@dataclass(frozen=True, slots=True)
class InlinedCall:
    """One place where a function was inlined into another.

    Attributes:
        function: the inlined function's name (what was asked for).
        caller: the name of the out-of-line function that contains the inlined body.
        caller_entry: entry VA of `caller`.
        ranges: [start, end) VA ranges of `caller` whose inline stack contains this inlined call
            (including code of functions inlined further into it), sorted.
        call_pc: VA of an instruction whose source position is the call site (inlinedCall.parentPc).
        depth: 0 when inlined directly into `caller`, 1 when into a function itself inlined into `caller`...
    """

    function: str
    caller: str
    caller_entry: int
    ranges: tuple[tuple[int, int], ...]
    call_pc: int
    depth: int

    @property
    def low_pc(self) -> int:
        return self.ranges[0][0]


# ----------------------------------------------------------------------------- small decoders


def read_uvarint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 varint (Go's binary.Uvarint) at `pos`: (value, next position).

    Raises:
        ElfError: truncated or longer than 10 bytes.
    """
    value = shift = 0
    end = len(data)
    for i in range(10):
        if pos + i >= end:
            raise ElfError("truncated varint")
        b = data[pos + i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos + i + 1
        shift += 7
    raise ElfError("varint longer than 10 bytes")


_VERSION_RE = re.compile(r"go(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse_version(version: str | None) -> Version | None:
    """Numeric (major, minor, patch) of a Go version string; None when it names no release.

    "go1.19.8" -> (1, 19, 8); "go1.21rc2" and "go1.21" -> (1, 21, 0); "go1.9" -> (1, 9, 0);
    "devel go1.23-abcdef ..." -> (1, 23, 0); "devel +abc" -> None. Compare tuples, never strings:
    "go1.9" < "go1.20" only numerically.
    """
    if not version:
        return None
    s = version.strip()
    # "devel go1.23-abc ..." names its base release somewhere inside; a release string starts with it.
    m = _VERSION_RE.search(s) if s.startswith("devel") else _VERSION_RE.match(s.split()[0] if s.split() else s)
    # No release has a 10-digit number; garbage may have thousands, which int() refuses past 4300.
    if not m or any(len(g) > 9 for g in m.groups() if g):
        return None
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)


def version_at_least(version: str | Version | None, minimum: tuple[int, ...]) -> bool:
    """True when `version` (string or tuple) is numerically >= `minimum` (e.g. (1, 17))."""
    v = parse_version(version) if isinstance(version, str) or version is None else version
    return v is not None and v >= tuple(minimum) + (0,) * (3 - len(minimum))


def strip_modinfo(mod: bytes) -> bytes:
    """Remove the 16-byte sentinels around runtime.modinfo (they are not text), as debug/buildinfo does."""
    if len(mod) >= 33 and mod[-17] == 0x0A:
        return mod[16:-16]
    return mod


def parse_buildinfo(data: bytes, read_va: Callable[[int, int], bytes] | None = None) -> tuple[str, bytes]:
    """Decode a `.go.buildinfo` blob that starts with its magic: (version, raw modinfo with sentinels).

    Args:
        data: the bytes from the magic on (at least 32).
        read_va: for the pointer format (Go < 1.18): read N bytes at a virtual address.

    Raises:
        ElfError: bad magic, truncated, or a pointer that leads nowhere.
    """
    if len(data) < 32 or not data.startswith(BUILDINFO_MAGIC):
        raise ElfError("no Go build info header")
    ptr_size, flags = data[14], data[15]
    if flags & _FLAG_VERSION_INL:
        vers_len, pos = read_uvarint(data, 32)
        if pos + vers_len > len(data):
            raise ElfError("truncated Go build info (version)")
        version = data[pos : pos + vers_len]
        pos += vers_len
        mod_len, pos = read_uvarint(data, pos)
        if pos + mod_len > len(data):
            raise ElfError("truncated Go build info (modinfo)")
        return version.decode("utf-8", "replace"), bytes(data[pos : pos + mod_len])
    if ptr_size not in (4, 8):
        raise ElfError(f"Go build info has pointer size {ptr_size}")
    if read_va is None:
        raise ElfError("Go build info uses pointers but no address reader was given")
    order = ">" if flags & _FLAG_BIG_ENDIAN else "<"
    word = order + ("Q" if ptr_size == 8 else "I")
    if len(data) < 16 + 2 * ptr_size:
        raise ElfError("truncated Go build info (pointers)")
    (vers_ptr,) = struct.unpack_from(word, data, 16)
    (mod_ptr,) = struct.unpack_from(word, data, 16 + ptr_size)

    def go_string(ptr: int) -> bytes:
        hdr = read_va(ptr, 2 * ptr_size)
        s_ptr, s_len = struct.unpack(order + word[1] * 2, hdr)
        if s_len > _MAX_NAME * 16:
            raise ElfError("Go build info string too long")
        return read_va(s_ptr, s_len) if s_len else b""

    version = go_string(vers_ptr)
    mod = go_string(mod_ptr) if mod_ptr else b""
    return version.decode("utf-8", "replace"), mod


def _unquote(value: str) -> str:
    """Undo Go's strconv.Quote that `go build` applies to setting values with spaces or quotes."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            out = json.loads(value)
            return out if isinstance(out, str) else value
        except ValueError:
            return value[1:-1]
    return value


@dataclass(slots=True)
class ModInfo:
    """Parsed runtime.modinfo (the text `go version -m` prints after the first line)."""

    main_path: str | None = None
    module_path: str | None = None
    module_version: str | None = None
    deps: list[tuple[str, str]] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)


def parse_modinfo(mod: bytes) -> ModInfo:
    """Parse the lines of runtime.modinfo (sentinels stripped here if still present)."""
    info = ModInfo()
    text = strip_modinfo(mod).decode("utf-8", "replace")
    for line in text.splitlines():
        parts = line.split("\t")
        kind = parts[0]
        if kind == "path" and len(parts) >= 2:
            info.main_path = parts[1]
        elif kind == "mod" and len(parts) >= 2:
            info.module_path = parts[1]
            info.module_version = parts[2] if len(parts) >= 3 else None
        elif kind == "dep" and len(parts) >= 3:
            info.deps.append((parts[1], parts[2]))
        elif kind == "build" and len(parts) >= 2:
            key, sep, value = "\t".join(parts[1:]).partition("=")
            if sep:
                info.settings[key] = _unquote(value)
    return info


def find_buildinfo(blob: bytes | memoryview) -> int:
    """Offset of the build info magic at a 16-byte aligned offset in `blob`, or -1."""
    pos = 0
    raw = bytes(blob)
    while True:
        pos = raw.find(BUILDINFO_MAGIC, pos)
        if pos < 0:
            return -1
        if pos % _BUILDINFO_ALIGN == 0:
            return pos
        pos += 1


# ----------------------------------------------------------------------------- pclntab header


@dataclass(frozen=True, slots=True)
class PclnHeader:
    """The decoded pcHeader (offsets are relative to the header's start)."""

    magic: int
    quantum: int
    ptr_size: int
    nfunc: int
    text_start: int  # in-file pcHeader.textStart (1.18+), else 0
    funcname_off: int
    cu_off: int
    filetab_off: int
    pctab_off: int
    pcln_off: int  # functab + _func area
    functab_off: int  # where the functab itself starts

    @property
    def version_range(self) -> str:
        return PCLNTAB_MAGICS[self.magic]


def parse_pclntab_header(data: bytes | memoryview, where: str = "pclntab", size: int | None = None) -> PclnHeader:
    """Decode and sanity-check a pclntab header at the start of `data`.

    `size` is the table's size when `data` holds only its head (the offsets are checked against it).

    Raises:
        ElfError: unknown magic, impossible quantum/pointer size, or offsets past the table.
    """
    if len(data) < 16:
        raise ElfError(f"{where}: truncated Go pclntab header")
    magic, pad1, pad2, quantum, ptr_size = struct.unpack_from("<IBBBB", data, 0)
    if magic not in PCLNTAB_MAGICS or pad1 or pad2:
        raise ElfError(f"{where}: not a Go pclntab (magic {magic:#x})")
    if quantum not in (1, 2, 4) or ptr_size not in (4, 8):
        raise ElfError(f"{where}: corrupt Go pclntab header (quantum {quantum}, pointer size {ptr_size})")
    wfmt = "<Q" if ptr_size == 8 else "<I"
    nwords = {MAGIC_12: 1, MAGIC_116: 7, MAGIC_118: 8, MAGIC_120: 8}[magic]
    if len(data) < 8 + nwords * ptr_size:
        raise ElfError(f"{where}: truncated Go pclntab header")
    w = [struct.unpack_from(wfmt, data, 8 + i * ptr_size)[0] for i in range(nwords)]
    nfunc = w[0]
    if nfunc > _MAX_FUNCS:
        raise ElfError(f"{where}: corrupt Go pclntab header ({nfunc} functions)")
    if magic == MAGIC_12:
        hdr = PclnHeader(magic, quantum, ptr_size, nfunc, 0, 0, 0, 0, 0, 0, 8 + ptr_size)
    elif magic == MAGIC_116:
        hdr = PclnHeader(magic, quantum, ptr_size, nfunc, 0, w[2], w[3], w[4], w[5], w[6], w[6])
    else:
        hdr = PclnHeader(magic, quantum, ptr_size, nfunc, w[2], w[3], w[4], w[5], w[6], w[7], w[7])
    n = len(data) if size is None else size
    for off in (hdr.funcname_off, hdr.cu_off, hdr.filetab_off, hdr.pctab_off, hdr.pcln_off):
        if off > n:
            raise ElfError(f"{where}: corrupt Go pclntab header (offset {off:#x} past the table)")
    entry_size = 8 if magic in (MAGIC_118, MAGIC_120) else 2 * ptr_size
    if hdr.functab_off + (nfunc + 1) * entry_size > n:
        raise ElfError(f"{where}: corrupt Go pclntab header (function table past the table)")
    return hdr


# Per-format _func layout: (header size, offset of npcdata, offset of nfuncdata, funcdata are u32 offsets)
_FUNC_LAYOUT = {
    MAGIC_12: (40, 32, 39, False),
    MAGIC_116: (44, 32, 43, False),
    MAGIC_118: (40, 28, 39, True),
    MAGIC_120: (44, 28, 43, True),
}

# moduledata field offsets (64-bit) per layout, from runtime/symtab.go of each release:
# pre-1.16 starts with the pclntable slice; 1.16+ with the pcHeader pointer; 1.18 adds rodata/gofunc;
# 1.20 adds covctrs/ecovctrs before `end`; 1.27 puts typedesclen between types and etypes and
# itaboffset/itabsize before rodata (typelinks/itablinks gone), with the same pclntab magic as 1.20.
_MODULEDATA = {
    "1.2": {"text": 96, "types": 200, "etypes": 208, "gofunc": -1},
    "1.16": {"text": 176, "types": 280, "etypes": 288, "gofunc": -1},
    "1.18": {"text": 176, "types": 280, "etypes": 288, "gofunc": 304},
    "1.20": {"text": 176, "types": 296, "etypes": 304, "gofunc": 320},
    "1.27": {"text": 176, "types": 296, "etypes": 312, "gofunc": 344},
}
_MODULEDATA_FOR_MAGIC = {
    MAGIC_12: ("1.2",),
    MAGIC_116: ("1.16",),
    MAGIC_118: ("1.18",),
    MAGIC_120: ("1.20", "1.27", "1.18"),
}


# ----------------------------------------------------------------------------- the binary


@contextlib.contextmanager
def _corrupt_is_elf_error(path: str, what: str) -> Iterator[None]:
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

    def _read_upto(self, va: int, size: int) -> bytes:
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

    def _apply_relocs(self, buf: bytearray, va: int) -> None:
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

    # -------------------------------------------------------------- detection

    def build_id(self) -> str | None:
        """The Go build ID from `.note.go.buildid` (section, else any PT_NOTE segment)."""
        blobs: list[bytes] = []
        sec = self.img.section(".note.go.buildid")
        if sec is not None and sec.type != SHT_NOBITS:
            blobs.append(self.img.section_bytes(sec))
        else:
            blobs.extend(self._note_segments())
        for blob in blobs:
            for name, ntype, desc in iter_notes(blob):
                if name == b"Go" and ntype == NT_GO_BUILD_ID:
                    return desc.rstrip(b"\0").decode("utf-8", "replace")
        return None

    def _note_segments(self) -> Iterator[bytes]:
        d, size = self.img.data, self.img.size
        phoff = struct.unpack_from("<Q", d, 32)[0]
        phentsize, phnum = struct.unpack_from("<HH", d, 54)
        for i in range(phnum):
            p_type, _fl, off, _va, _pa, filesz = struct.unpack_from("<IIQQQQ", d, phoff + i * phentsize)
            if p_type == PT_NOTE and 0 < filesz <= 1 << 20 and off + filesz <= size:
                yield self.img.read(off, filesz)

    def _buildinfo_blob(self) -> bytes | None:
        sec = self.img.section(".go.buildinfo")
        if sec is not None and sec.type != SHT_NOBITS:
            blob = self.img.read(sec.offset, min(sec.size, _BUILDINFO_SCAN))
        else:
            # debug/buildinfo: without the section, the first writable non-executable PT_LOAD.
            seg = next((s for s in self.img.segments if s.flags & PF_W and not s.flags & PF_X), None)
            if seg is None:
                return None
            blob = self.img.read(seg.offset, min(seg.filesz, _BUILDINFO_SCAN))
        pos = find_buildinfo(blob)
        return blob[pos:] if pos >= 0 else None

    def info(self) -> GoInfo | None:
        """Go build information, or None when the file is not a Go binary.

        Raises:
            ElfError: corrupt Go build info (or headers the decoders trip over).
        """
        if self._info_done:
            return self._info
        with _corrupt_is_elf_error(self.path, "Go binary"):
            info = self._read_info()
        self._info, self._info_done = info, True
        return info

    def _read_info(self) -> GoInfo | None:
        build_id = self.build_id()
        blob = self._buildinfo_blob()
        syms = self.symbols()
        if build_id is None and blob is None and "runtime.buildVersion" not in syms:
            return None
        version: str | None = None
        source = ""
        mod = ModInfo()
        if blob is not None:
            try:
                v, raw_mod = parse_buildinfo(blob, self.read_va_memory)
            except ElfError as e:
                raise ElfError(f"{self.path}: corrupt Go build info ({e})") from None
            version, source = v or None, "buildinfo" if v else ""
            mod = parse_modinfo(raw_mod)
        if version is None and "runtime.buildVersion" in syms:
            try:
                va = syms["runtime.buildVersion"]
                ptr, n = self.read_word(va), int(struct.unpack("<Q", self.read_va(va + 8, 8))[0])
                if 0 < n < 256:
                    version, source = self.read_va(ptr, n).decode("utf-8", "replace"), "runtime.buildVersion"
            except ElfError:
                version = None
        arch = _ARCH.get(self.img.machine, f"em{self.img.machine}")
        vt = parse_version(version)
        pie = self.img.e_type == ET_DYN or mod.settings.get("-buildmode") == "pie"
        cgo_setting = mod.settings.get("CGO_ENABLED")
        cgo: bool | None
        if cgo_setting is not None:
            cgo = cgo_setting == "1"
        elif self.has_symtab:
            cgo = "x_cgo_init" in syms
        else:
            cgo = None
        abi, abi_source = self._abi(arch, version, vt)
        names = {s.name for s in self.img.sections}
        return GoInfo(
            path=self.path,
            version=version,
            version_tuple=vt,
            version_source=source,
            build_id=build_id,
            main_path=mod.main_path,
            module_path=mod.module_path,
            module_version=mod.module_version,
            deps=tuple(mod.deps),
            settings=dict(mod.settings),
            pie=pie,
            cgo=cgo,
            arch=arch,
            has_symtab=self.has_symtab,
            has_dwarf=".debug_info" in names or ".zdebug_info" in names,
            abi=abi,
            abi_source=abi_source,
        )

    def _abi(self, arch: str, version: str | None, vt: Version | None) -> tuple[str, str]:
        since = _REGABI_SINCE.get(arch)
        if vt is not None:
            return ("regabi" if since is not None and vt >= (*since, 0) else "stack"), f"version {version}"
        if since is None:
            return "stack", f"{arch} has no register ABI support here (version unknown)"
        try:
            tab = self.pclntab()
        except ElfError:
            return "stack", "version unknown and no pclntab: assumed stack ABI"
        if tab.magic in (MAGIC_118, MAGIC_120):
            return "regabi", f"pclntab magic {tab.version_range} (version unknown)"
        # 1.16 and 1.17 share the table format; runtime.spillArgs exists only with the 1.17 register ABI.
        if tab.magic == MAGIC_116 and arch == "amd64" and tab.lookup("runtime.spillArgs") is not None:
            return "regabi", "pclntab magic go1.16-1.17 with runtime.spillArgs (version unknown)"
        return "stack", f"pclntab magic {tab.version_range} (version unknown)"

    # -------------------------------------------------------------- pclntab

    def _locate_pclntab(self) -> tuple[int, int, int | None, str]:
        """(file offset, max size, VA or None, how found) of the pclntab header."""
        for name in (".gopclntab", ".data.rel.ro.gopclntab"):
            sec = self.img.section(name)
            if sec is not None and sec.type != SHT_NOBITS and sec.size >= 16:
                return sec.offset, sec.size, sec.addr or self._offset_to_va(sec.offset), f"section {name}"
        # Externally linked PIE merges the table anonymously into .data.rel.ro: scan for magic + 00 00.
        regions: list[tuple[int, int, str]] = []
        for name in (".data.rel.ro", ".rodata"):
            sec = self.img.section(name)
            if sec is not None and sec.type != SHT_NOBITS:
                regions.append((sec.offset, sec.size, f"scan of {name}"))
        regions.append((0, self.img.size, "scan of the whole file"))
        for start, size, how in regions:
            found = self._scan_pclntab(start, size)
            if found is not None:
                end = start + size
                return found, end - found, self._offset_to_va(found), how
        raise ElfError(f"{self.path}: no Go pclntab found (not a Go binary, or the table was removed)")

    def _scan_pclntab(self, start: int, size: int) -> int | None:
        data = self.img.data
        end = start + size
        for magic in (MAGIC_120, MAGIC_118, MAGIC_116, MAGIC_12):
            sig = struct.pack("<I", magic) + b"\0\0"
            pos = start
            while True:
                pos = data.find(sig, pos, end)
                if pos < 0:
                    break
                # The table is pointer aligned in memory; a plausible header decodes without error.
                if pos % 4 == 0:
                    try:
                        hdr = parse_pclntab_header(bytes(data[pos : pos + 128]), size=end - pos)
                        if hdr.nfunc > 0:
                            return int(pos)
                    except ElfError:
                        pass
                pos += 1
        return None

    def _offset_to_va(self, off: int) -> int | None:
        for seg in self.img.segments:
            if seg.offset <= off < seg.offset + seg.filesz:
                return off - seg.offset + seg.vaddr
        return None

    def pclntab(self) -> Pclntab:
        """The decoded function table (cached).

        Raises:
            ElfError: no pclntab, or a corrupt one.
        """
        if self._pclntab is None:
            with _corrupt_is_elf_error(self.path, "Go pclntab"):
                self._pclntab = Pclntab._load(self)
        return self._pclntab

    # -------------------------------------------------------------- moduledata

    def moduledata(self) -> dict[str, int] | None:
        """The moduledata fields this module uses ("va", "text", "types", "etypes", "gofunc"), or None."""
        if self._moduledata_done:
            return self._moduledata
        self._moduledata_done = True
        tab = self.pclntab()
        if tab.va is None:
            return None
        candidates: list[int] = [tab.module_va] if tab.module_va is not None else []
        sym = self.symbols().get("runtime.firstmoduledata")
        if sym:
            candidates.append(sym)
        # moduledata's first word points at the pclntab (pcHeader, or pclntable's data before 1.16).
        needle = struct.pack("<Q", tab.va & 0xFFFFFFFFFFFFFFFF)
        data = self.img.data
        for seg in self.img.segments:
            if not seg.flags & PF_W or seg.offset >= self.img.size:
                continue
            # Program headers are not bounds-checked by ElfImage: clamp to the file.
            pos, end = seg.offset, min(seg.offset + seg.filesz, self.img.size)
            while True:
                pos = data.find(needle, pos, end)
                if pos < 0:
                    break
                if (pos - seg.offset) % 8 == 0:
                    candidates.append(pos - seg.offset + seg.vaddr)
                pos += 1
        if self.img.is_shared:
            candidates.extend(sorted(va for va, add in self.relocations().items() if add == tab.va))
        layouts = _MODULEDATA_FOR_MAGIC[tab.magic]
        info = self.info()
        if info is not None and info.version_tuple is not None and info.version_tuple >= (1, 27, 0):
            layouts = ("1.27", *(x for x in layouts if x != "1.27"))
        for va in candidates:
            for layout in layouts:
                md = self._try_moduledata(va, layout, tab)
                if md is not None:
                    self._moduledata = md
                    return md
        return None

    def _try_moduledata(self, va: int, layout: str, tab: Pclntab) -> dict[str, int] | None:
        f = _MODULEDATA[layout]
        try:
            if self.read_word(va) != tab.va:
                return None
            text = self.read_word(va + f["text"])
            types, etypes = self.read_word(va + f["types"]), self.read_word(va + f["etypes"])
            gofunc = self.read_word(va + f["gofunc"]) if f["gofunc"] >= 0 else 0
        except ElfError:
            return None
        if text != tab.text_start or not 0 < types <= etypes or etypes - types > 1 << 32:
            return None
        if self.img.vaddr_to_offset(types) is None:
            return None
        if f["gofunc"] >= 0 and (gofunc == 0 or self.img.vaddr_to_offset(gofunc) is None):
            return None
        return {"va": va, "text": text, "types": types, "etypes": etypes, "gofunc": gofunc}

    def executable_span(self, lo: int, hi: int) -> bool:
        """True when [lo, hi) lies inside one executable PT_LOAD segment's file bytes."""
        return lo < hi and any(s.flags & PF_X and s.vaddr <= lo and hi <= s.vaddr + s.filesz for s in self.img.segments)

    def _module_candidates(self, table_va: int) -> list[int]:
        """VAs that may hold the module data: `.go.module`, runtime.firstmoduledata, then every aligned
        word of a writable segment (or relocation) that points at the pclntab."""
        out: list[int] = []
        sec = self.img.section(".go.module")
        if sec is not None and sec.addr:
            out.append(sec.addr)
        sym = self.symbols().get("runtime.firstmoduledata")
        if sym:
            out.append(sym)
        needle = struct.pack("<Q", table_va & 0xFFFFFFFFFFFFFFFF)
        data = self.img.data
        for seg in self.img.segments:
            if not seg.flags & PF_W or seg.offset >= self.img.size:
                continue
            pos, end = seg.offset, min(seg.offset + seg.filesz, self.img.size)
            while len(out) < 64:
                pos = data.find(needle, pos, end)
                if pos < 0:
                    break
                if (pos - seg.offset) % 8 == 0:
                    out.append(pos - seg.offset + seg.vaddr)
                pos += 1
        if self.img.is_shared:
            out.extend(sorted(va for va, add in self.relocations().items() if add == table_va)[:64])
        return list(dict.fromkeys(out))

    def module_text(self, tab: Pclntab, first: int, end: int, *, absolute: bool = False) -> tuple[int, int] | None:
        """(module data VA, moduledata.text) of the module data that describes `tab`, or None.

        A candidate counts only when it passes the runtime's own check of its module (moduledataverify1:
        minpc == textAddr(ftab[0].entryoff), maxpc == textAddr(ftab[nftab].entryoff)), its pcHeader (or,
        before 1.16, pclntable) and ftab slices point into this table with nfunc+1 ftab entries, and
        [minpc, maxpc) lies in [text, etext) inside an executable segment. `first` and `end` are the first
        entry and the end sentinel: offsets from text (1.18+), or addresses when `absolute`.
        """
        hdr = tab.header
        if tab.va is None or hdr is None:
            return None
        old = hdr.magic == MAGIC_12
        # moduledata (runtime/symtab.go): 1.16+ pcHeader, funcnametab, cutab, filetab, pctab, pclntable,
        # ftab, findfunctab, minpc, maxpc, text, etext; before 1.16 pclntable, ftab, filetab, findfunctab,
        # minpc, maxpc, text, etext. Slices are 3 words.
        ftab_at, minpc_at = (24, 80) if old else (128, 160)
        ftab_va = tab.va + hdr.functab_off
        for va in self._module_candidates(tab.va):
            try:
                if self.read_word(va) != tab.va or self.read_word(va + ftab_at) != ftab_va:
                    continue
                nftab = int(struct.unpack("<Q", self.read_va(va + ftab_at + 8, 8))[0])
                minpc, maxpc = self.read_word(va + minpc_at), self.read_word(va + minpc_at + 8)
                text, etext = self.read_word(va + minpc_at + 16), self.read_word(va + minpc_at + 24)
            except ElfError:
                continue
            lo, hi = (first, end) if absolute else (text + first, text + end)
            if nftab != hdr.nfunc + 1 or (minpc, maxpc) != (lo, hi) or not text <= minpc < maxpc <= etext:
                continue
            if self.executable_span(minpc, maxpc):
                return va, text
        return None

    def gofunc(self) -> int | None:
        """moduledata.gofunc: base of the 1.18+ funcdata offsets (`go.func.*` / `go:func.*`)."""
        syms = self.symbols()
        for name in ("go:func.*", "go.func.*"):
            if name in syms:
                return syms[name]
        md = self.moduledata()
        return md["gofunc"] if md and md["gofunc"] else None

    def types_base(self) -> int | None:
        """moduledata.types: base of the nameOff/typeOff offsets in runtime type descriptors."""
        sym = self.symbols().get("runtime.types")
        if sym:
            return sym
        md = self.moduledata()
        return md["types"] if md else None

    # -------------------------------------------------------------- types

    def _name_varint(self) -> bool | None:
        """True when type names use a uvarint length (Go 1.17+), False for the 2-byte form, None: unknown."""
        info = self.info()
        if info is not None and info.version_tuple is not None:
            return info.version_tuple >= (1, 17, 0)
        try:
            magic = self.pclntab().magic
        except ElfError:
            return None
        if magic == MAGIC_12:
            return False
        if magic in (MAGIC_118, MAGIC_120):
            return True
        return None

    def type_name(self, type_addr: int) -> str | None:
        """The name of the runtime `_type` at link-time VA `type_addr` ("*errors.errorString"), or None.

        None when the address is not a type descriptor in this file (or is 0). Cached per address.
        """
        if type_addr in self._type_cache:
            return self._type_cache[type_addr]
        try:
            with _corrupt_is_elf_error(self.path, "Go type descriptor"):
                name = self._type_name(type_addr)
        except ElfError:
            name = None
        self._type_cache[type_addr] = name
        return name

    def _type_name(self, type_addr: int) -> str | None:
        if type_addr <= 0:
            return None
        base = self.types_base()
        if base is None:
            return None
        try:
            # _type: size, ptrdata (uintptr), hash u32, tflag u8, align, fieldAlign, kind u8, equal, gcdata
            # (pointers), str nameOff i32 @40, ptrToThis @44 -- unchanged from Go 1.7 to 1.24 (64-bit).
            raw = self.read_va(type_addr, 48)
            tflag = raw[20]
            (name_off,) = struct.unpack_from("<i", raw, 40)
            if name_off <= 0:
                return None
            head = self.read_va(base + name_off, 3)
            varint = self._name_varint()
            if varint is None:
                # 1.16 (2-byte big-endian length) and 1.17 (uvarint) share a pclntab format: a name is never
                # empty, so a zero second byte means the 2-byte form.
                varint = head[1] != 0
            if varint:
                n, pos = read_uvarint(self._read_upto(base + name_off + 1, 10), 0)
                start = base + name_off + 1 + pos
            else:
                n = head[1] << 8 | head[2]
                start = base + name_off + 3
            if not 0 < n <= _MAX_NAME:
                return None
            name = self.read_va(start, n).decode("utf-8", "replace")
        except ElfError:
            return None
        if tflag & _TFLAG_EXTRA_STAR:
            name = name[1:]
        return name

    def itab_type(self, itab_addr: int) -> str | None:
        """The dynamic type name of an itab (an interface value's first word): its `_type` at offset 8."""
        if itab_addr <= 0:
            return None
        try:
            typ = self.read_word(itab_addr + 8)
        except ElfError:
            return None
        return self.type_name(typ)


# ----------------------------------------------------------------------------- the function table


class Pclntab:
    """A decoded Go pclntab: the function table and what `inlined_calls` needs.

    Attributes:
        path: the file.
        magic: pclntab magic (MAGIC_12 / MAGIC_116 / MAGIC_118 / MAGIC_120).
        version_range: the Go releases that write this format ("go1.18-1.19").
        quantum: pc quantum (1 on amd64, 4 on arm64).
        ptr_size: pointer size.
        offset: file offset of the header; `va` its virtual address (None if not in a PT_LOAD segment).
        found: how the table was found ("section .gopclntab", "scan of .data.rel.ro", ...).
        text_start: base of the 1.18+ entry offsets (= runtime.text); the first entry for older tables.
        text_start_source: "moduledata.text (module data at 0x...)" (what the runtime itself uses),
            "runtime.text symbol", "pcHeader.textStart", "R_*_RELATIVE addend of pcHeader.textStart", or
            "absolute entries" (pre-1.18 tables). Never a guess: without a proven base the table is refused.
        module_va: VA of the module data whose pcHeader/ftab/minpc/maxpc agree with this table, if found.
        functions: all functions, sorted by entry.
    """

    def __init__(self) -> None:
        self.path = ""
        self.binary: GoBinary | None = None
        self.header: PclnHeader | None = None
        self.magic = 0
        self.quantum = 1
        self.ptr_size = 8
        self.offset = 0
        self.va: int | None = None
        self.found = ""
        self.text_start = 0
        self.text_start_source = ""
        self.module_va: int | None = None
        self.functions: list[GoFunc] = []
        self._data = b""
        self._funcoffs: list[int] = []
        self._by_name: dict[str, GoFunc] | None = None
        self._entries: list[int] | None = None

    @property
    def version_range(self) -> str:
        return PCLNTAB_MAGICS[self.magic]

    @classmethod
    def _load(cls, binary: GoBinary) -> Pclntab:
        off, size, va, how = binary._locate_pclntab()
        buf = bytearray(binary.img.read(off, size))
        if va is not None:
            binary._apply_relocs(buf, va)
        data = bytes(buf)
        where = f"{binary.path}: pclntab at {off:#x}"
        hdr = parse_pclntab_header(data, where)
        if hdr.ptr_size != 8:
            raise ElfError(f"{where}: 32-bit Go pclntab is not supported")
        tab = cls()
        tab.path, tab.binary, tab.header = binary.path, binary, hdr
        tab.magic, tab.quantum, tab.ptr_size = hdr.magic, hdr.quantum, hdr.ptr_size
        tab.offset, tab.va, tab.found, tab._data = off, va, how, data
        tab._decode_functions(binary, where)
        return tab

    def _text_start(self, binary: GoBinary, hdr: PclnHeader, first_off: int, end_off: int) -> tuple[int, str]:
        """The base of the 1.18+ entry offsets, from where the runtime takes it: moduledata.text.

        The module data is the one the runtime would accept (`module_text`); without it, the linker's own
        records of the same address: the `runtime.text` symbol, then pcHeader.textStart (relocated for a
        PIE; Go 1.26 stopped filling it in). The start of `.text` is never used: an external link puts C
        code before the Go functions. A base is accepted only when the table's first and last entries then
        fall in one executable segment.

        Raises:
            ElfError: no base can be proven (refused rather than guessed).
        """
        found = binary.module_text(self, first_off, end_off)
        if found is not None:
            self.module_va = found[0]
            return found[1], f"moduledata.text (module data at {found[0]:#x})"
        tried: list[tuple[int, str]] = []
        sym = binary.symbols().get("runtime.text")
        if sym:
            tried.append((sym, "runtime.text symbol"))
        if self.va is not None and binary.img.is_shared:
            rel = binary.relocations().get(self.va + 8 + 2 * hdr.ptr_size)
            if rel:
                tried.append((rel, "R_*_RELATIVE addend of pcHeader.textStart"))
        if hdr.text_start:
            tried.append((hdr.text_start, "pcHeader.textStart"))
        for base, source in tried:
            if binary.executable_span(base + first_off, base + end_off):
                return base, source
        raise ElfError(
            f"{binary.path}: cannot prove where the Go functions start (pcHeader.textStart is "
            f"{hdr.text_start:#x}, no module data points at the pclntab with a consistent minpc/maxpc, "
            "no runtime.text symbol): refusing to guess"
        )

    def _decode_functions(self, binary: GoBinary, where: str) -> None:
        hdr = self.header
        assert hdr is not None
        data = self._data
        n = hdr.nfunc
        ft = hdr.functab_off
        if hdr.magic in (MAGIC_118, MAGIC_120):
            raw = struct.unpack_from(f"<{2 * n + 1}I", data, ft)
            base, self.text_start_source = self._text_start(binary, hdr, raw[0], raw[2 * n])
            entries = [base + e for e in raw[0::2]]  # n entries and the end sentinel
            funcoffs = [hdr.pcln_off + f for f in raw[1::2]]
            end_sentinel = entries.pop()
        else:
            raw = struct.unpack_from(f"<{2 * n + 1}Q", data, ft)
            entries = list(raw[0::2])
            # 1.2: funcoff relative to the table start; 1.16: relative to pclntable (pclnOffset).
            rel = 0 if hdr.magic == MAGIC_12 else hdr.pcln_off
            funcoffs = [rel + f for f in raw[1::2]]
            end_sentinel = entries.pop()
            self.text_start_source = "absolute entries"
            if n and not binary.executable_span(entries[0], end_sentinel):
                raise ElfError(f"{where}: the Go function table's addresses are not in an executable segment")
            found = binary.module_text(self, entries[0], end_sentinel, absolute=True)
            self.module_va = found[0] if found is not None else None
        if n == 0:
            raise ElfError(f"{where}: empty Go function table")
        if end_sentinel < entries[-1]:
            raise ElfError(f"{where}: corrupt Go function table (end {end_sentinel:#x} before the last entry)")
        if hdr.magic not in (MAGIC_118, MAGIC_120):
            sym = binary.symbols().get("runtime.text")
            self.text_start = sym if sym else entries[0]
        else:
            self.text_start = base
        names_base = 0 if hdr.magic == MAGIC_12 else hdr.funcname_off
        name_field = 8 if hdr.magic in (MAGIC_12, MAGIC_116) else 4
        size = len(data)
        # File offsets: functions normally all sit in one executable segment; compute its shift once.
        seg = next(
            (s for s in binary.img.segments if s.vaddr <= entries[0] < s.vaddr + s.filesz),
            None,
        )
        abi0 = binary.abi0_entries()
        hsize = _FUNC_LAYOUT[hdr.magic][0]
        flag_off = {MAGIC_118: 37, MAGIC_120: 41}.get(hdr.magic)
        funcs: list[GoFunc] = []
        append = funcs.append
        find = data.find
        unpack_i = struct.Struct("<i").unpack_from
        prev = -1
        for i in range(n):
            entry = entries[i]
            fo = funcoffs[i]
            if fo + hsize > size or entry < prev:
                raise ElfError(f"{where}: corrupt Go function table (function {i})")
            prev = entry
            (nameoff,) = unpack_i(data, fo + name_field)
            start = names_base + nameoff
            end = find(b"\0", start)
            if nameoff < 0 or start >= size or end < 0 or end - start > _MAX_NAME:
                raise ElfError(f"{where}: corrupt Go function name (function {i})")
            name = data[start:end].decode("utf-8", "replace")
            nxt = entries[i + 1] if i + 1 < n else end_sentinel
            if seg is not None and seg.vaddr <= entry < seg.vaddr + seg.filesz:
                foff: int | None = entry - seg.vaddr + seg.offset
            else:
                foff = binary.img.vaddr_to_offset(entry)
            is_asm = bool(data[fo + flag_off] & _FUNCFLAG_ASM) if flag_off is not None else None
            append(GoFunc(name, entry, nxt, foff, i, (entry in abi0) if abi0 is not None else None, is_asm))
        self.functions = funcs
        self._funcoffs = funcoffs

    # -------------------------------------------------------------- lookups

    def lookup(self, name: str) -> GoFunc | None:
        """The first function with exactly this name (the pclntab name, or its `.abi0` ELF symbol name)."""
        if self._by_name is None:
            by: dict[str, GoFunc] = {}
            for f in self.functions:
                by.setdefault(f.name, f)
            for f in self.functions:
                if f.abi0:
                    by.setdefault(f.symbol, f)
            self._by_name = by
        return self._by_name.get(name)

    def lookup_all(self, name: str) -> list[GoFunc]:
        """Every function with this name (1.18-1.19 generic instances share "F[...]" names)."""
        return [f for f in self.functions if f.name == name or f.symbol == name]

    def function_at(self, pc: int) -> GoFunc | None:
        """The function whose [entry, end) contains `pc`."""
        if self._entries is None:
            self._entries = [f.entry for f in self.functions]
        i = bisect.bisect_right(self._entries, pc) - 1
        if i >= 0 and self.functions[i].entry <= pc < self.functions[i].end:
            return self.functions[i]
        return None

    def __len__(self) -> int:
        return len(self.functions)

    def __iter__(self) -> Iterator[GoFunc]:
        return iter(self.functions)

    # -------------------------------------------------------------- pcdata / funcdata

    def _cstring(self, off: int) -> str:
        data = self._data
        if not 0 <= off < len(data):
            raise ElfError(f"{self.path}: corrupt Go pclntab (name offset {off:#x})")
        end = data.find(b"\0", off)
        if end < 0 or end - off > _MAX_NAME:
            raise ElfError(f"{self.path}: corrupt Go pclntab (unterminated name at {off:#x})")
        return data[off:end].decode("utf-8", "replace")

    def _func_fields(self, fn: GoFunc) -> tuple[int, int, int]:
        """(_func offset in the table, npcdata, nfuncdata)."""
        hsize, np_off, nf_off, _ = _FUNC_LAYOUT[self.magic]
        fo = self._funcoffs[fn.index]
        if fo + hsize > len(self._data):
            raise ElfError(f"{self.path}: corrupt Go pclntab (_func of {fn.name!r} past the table)")
        (npcdata,) = struct.unpack_from("<I", self._data, fo + np_off)
        nfuncdata = self._data[fo + nf_off]
        if fo + hsize + 4 * npcdata > len(self._data) or npcdata > 1 << 16:
            raise ElfError(f"{self.path}: corrupt Go pclntab (_func of {fn.name!r})")
        return fo, npcdata, nfuncdata

    def pcdata_table(self, fn: GoFunc, table: int) -> list[tuple[int, int, int]]:
        """Decode pc-value table `table` of `fn`: [(start VA, end VA, value)], value -1 where unset."""
        hsize = _FUNC_LAYOUT[self.magic][0]
        fo, npcdata, _ = self._func_fields(fn)
        if table >= npcdata:
            return []
        (off,) = struct.unpack_from("<I", self._data, fo + hsize + 4 * table)
        if off == 0:
            return []
        base = 0 if self.magic == MAGIC_12 else (self.header.pctab_off if self.header else 0)
        return self._pcvalue(base + off, fn)

    def _pcvalue(self, pos: int, fn: GoFunc) -> list[tuple[int, int, int]]:
        # runtime.step: zig-zag uvarint value delta, then uvarint pc delta * quantum; a zero value
        # delta after the first pair ends the table.
        data = self._data
        out: list[tuple[int, int, int]] = []
        pc, val, first = fn.entry, -1, True
        limit = len(data)
        while True:
            if pos >= limit:
                raise ElfError(f"{self.path}: corrupt Go pc-value table of {fn.name!r}")
            if data[pos] == 0 and not first:
                break
            uv, pos = read_uvarint(data, pos)
            val += -(uv & 1) ^ (uv >> 1)
            pcd, pos = read_uvarint(data, pos)
            new_pc = pc + pcd * self.quantum
            out.append((pc, new_pc, val))
            pc, first = new_pc, False
            if pc > fn.end or len(out) > 1 << 20:
                raise ElfError(f"{self.path}: corrupt Go pc-value table of {fn.name!r}")
        return out

    def _inline_indexes(self) -> tuple[int, int]:
        """(PCDATA_InlTreeIndex, FUNCDATA_InlTree) for this table's Go version."""
        if self.magic != MAGIC_12:
            return 2, 3
        info = self.binary.info() if self.binary is not None else None
        vt = info.version_tuple if info is not None else None
        if vt is not None and vt < (1, 13, 0):
            raise ElfError(
                f"{self.path}: inline trees of Go {info.version if info else ''} (< go1.13) are not supported"
            )
        # Go 1.13-1.15 runtime/funcdata.h: PCDATA_RegMapIndex 0, StackMap 1, InlTreeIndex 2; FUNCDATA_InlTree 4.
        return 2, 4

    def _funcdata_va(self, fn: GoFunc, index: int) -> int | None:
        """VA of funcdata `index` of `fn`, None when absent."""
        binary = self.binary
        assert binary is not None
        hsize, _, _, u32 = _FUNC_LAYOUT[self.magic]
        fo, npcdata, nfuncdata = self._func_fields(fn)
        if index >= nfuncdata:
            return None
        p = fo + hsize + 4 * npcdata
        if u32:
            if p + 4 * (index + 1) > len(self._data):
                raise ElfError(f"{self.path}: corrupt Go pclntab (funcdata of {fn.name!r})")
            (off,) = struct.unpack_from("<I", self._data, p + 4 * index)
            if off == 0xFFFFFFFF:
                return None
            gofunc = binary.gofunc()
            if gofunc is None:
                raise ElfError(f"{self.path}: cannot find go:func.* (moduledata.gofunc) for funcdata offsets")
            return gofunc + int(off)
        # Before 1.18: pointer-sized absolute addresses, aligned to 8 in memory (runtime.funcdata).
        if self.va is None:
            raise ElfError(f"{self.path}: pclntab is not mapped; cannot read funcdata pointers")
        if (self.va + p) & 4:
            p += 4
        if p + 8 * (index + 1) > len(self._data):
            raise ElfError(f"{self.path}: corrupt Go pclntab (funcdata of {fn.name!r})")
        (ptr,) = struct.unpack_from("<Q", self._data, p + 8 * index)
        return int(ptr) or None


# ----------------------------------------------------------------------------- inline trees


def _name_offsets(blob: bytes, start: int, end: int, name: str) -> set[int]:
    """Offsets (relative to `start`) of the C string `name` inside blob[start:end]."""
    want = name.encode()
    found: set[int] = set()
    if blob[start : start + len(want) + 1] == want + b"\0":
        found.add(0)
    needle = b"\0" + want + b"\0"
    pos = start
    while True:
        pos = blob.find(needle, pos, end)
        if pos < 0:
            return found
        found.add(pos + 1 - start)
        pos += 1


_MAX_INSTANCES = 256


def instance_names(tab: Pclntab, generic: str) -> list[str]:
    """Names in the pclntab's name table of instantiations of the generic function `generic`.

    "main.Max" -> ["main.Max[go.shape.int]", "main.Max[go.shape.string]"], "main.(*S).Push" ->
    ["main.(*S[go.shape.int]).Push"]: also instances that were only ever inlined (they are in the name
    table for the inline trees, not in the function table). At most 256, sorted.
    """
    hdr = tab.header
    if hdr is None or "[" in generic or not generic:
        return []
    data = tab._data
    if tab.magic == MAGIC_12:
        start, end = 0, len(data)
    else:
        start = hdr.funcname_off
        end = min(x for x in (hdr.cu_off, hdr.filetab_off, hdr.pctab_off, hdr.pcln_off, len(data)) if x > start)
    # a type-argument list follows an identifier: the name up to there, then "["
    cuts = [i for i in range(1, len(generic) + 1) if i == len(generic) or generic[i] in ".)"]
    found: set[str] = set()
    for i in cuts:
        needle = b"\0" + generic[:i].encode() + b"["
        pos = start
        while len(found) < _MAX_INSTANCES:
            pos = data.find(needle, pos, end)
            if pos < 0:
                break
            stop = data.find(b"\0", pos + 1, min(end, pos + 1 + _MAX_NAME))
            if stop > 0:
                full = bytes(data[pos + 1 : stop]).decode("utf-8", "replace")
                if _drop_type_args(full) == generic:
                    found.add(full)
            pos += 1
    return sorted(found)


def _drop_type_args(name: str) -> str:
    out, depth = [], 0
    for ch in name:
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def inlined_calls(tab: Pclntab, name: str) -> list[InlinedCall]:
    """Every place where the function `name` was inlined, from the pclntab inline trees (no DWARF needed).

    Raises:
        ElfError: corrupt tables, or a Go version whose inline tree layout is not supported (< 1.13).
    """
    binary = tab.binary
    if binary is None or tab.header is None:
        raise ElfError("pclntab without its binary")
    with _corrupt_is_elf_error(tab.path, "Go inline tree"):
        return _inlined_calls(tab, binary, name)


def _inlined_calls(tab: Pclntab, binary: GoBinary, name: str) -> list[InlinedCall]:
    assert tab.header is not None
    pc_idx, fd_idx = tab._inline_indexes()
    new_layout = tab.magic == MAGIC_120
    node_size = 16 if new_layout else 20
    name_field = 4 if new_layout else 12
    hdr = tab.header
    data = tab._data
    # Name offsets in the table the inline tree refers to: funcnametab (1.16+) or the whole table (1.2).
    if tab.magic == MAGIC_12:
        targets = _name_offsets(data, 0, len(data), name)
    else:
        end = min(
            x for x in (hdr.cu_off, hdr.filetab_off, hdr.pctab_off, hdr.pcln_off, len(data)) if x > hdr.funcname_off
        )
        targets = _name_offsets(data, hdr.funcname_off, end, name)
    if not targets:
        return []

    # Inline-tree base of every function that has one; node name fields holding a target offset are
    # found with one byte search per target, then attributed to the tree that starts just before them.
    trees: dict[int, list[GoFunc]] = {}
    for fn in tab.functions:
        va = tab._funcdata_va(fn, fd_idx)
        if va is not None:
            trees.setdefault(va, []).append(fn)
    if not trees:
        return []
    bases = sorted(trees)
    lo, hi = bases[0], bases[-1] + (1 << 20)
    seg = next((s for s in binary.img.segments if s.vaddr <= lo < s.vaddr + s.filesz), None)
    if seg is None:
        raise ElfError(f"{tab.path}: Go inline trees are not in the file")
    hi = min(hi, seg.vaddr + seg.filesz)
    region = binary.read_va(lo, hi - lo)
    candidates: set[int] = set()
    for t in targets:
        needle = struct.pack("<i", t)
        pos = 0
        while True:
            pos = region.find(needle, pos)
            if pos < 0:
                break
            va = lo + pos - name_field
            i = bisect.bisect_right(bases, va) - 1
            if i >= 0 and (va - bases[i]) % node_size == 0:
                candidates.add(bases[i])
            pos += 1

    results: list[InlinedCall] = []
    for base in sorted(candidates):
        for fn in trees[base]:
            results.extend(_inlined_in(tab, fn, base, pc_idx, name, targets, new_layout, node_size))
    results.sort(key=lambda c: (c.caller_entry, c.low_pc))
    return results


def _inlined_in(
    tab: Pclntab,
    fn: GoFunc,
    tree_va: int,
    pc_idx: int,
    name: str,
    targets: set[int],
    new_layout: bool,
    node_size: int,
) -> list[InlinedCall]:
    binary = tab.binary
    assert binary is not None
    spans = tab.pcdata_table(fn, pc_idx)
    if not spans:
        return []
    nodes: dict[int, tuple[int, int, int]] = {}  # index -> (name offset, parentPc, parent index or -2)

    def node(i: int) -> tuple[int, int, int]:
        if i not in nodes:
            if not 0 <= i < 1 << 20:
                raise ElfError(f"{tab.path}: corrupt Go inline tree of {fn.name!r} (node {i})")
            raw = binary.read_va(tree_va + i * node_size, node_size)
            if new_layout:
                # Go 1.20+: funcID u8, _ [3]byte, nameOff i32, parentPc i32, startLine i32 (no parent index).
                _fid, name_off, parent_pc, _line = struct.unpack("<B3xiii", raw)
                nodes[i] = (name_off, parent_pc, -2)
            else:
                # Go 1.12-1.19: parent i16, funcID u8, _ byte, file i32, line i32, func_ i32, parentPc i32.
                parent, _fid, _file, _line, name_off, parent_pc = struct.unpack("<hBxiiii", raw)
                nodes[i] = (name_off, parent_pc, parent)
        return nodes[i]

    def index_at(pc: int) -> int:
        for start, end, val in spans:
            if start <= pc < end:
                return val
        return -1

    def parent_of(i: int) -> int:
        _name_off, parent_pc, parent = node(i)
        if parent != -2:
            return parent
        # 1.20+: the parent is whatever the inline index says at the call site (runtime inlineUnwinder).
        return index_at(fn.entry + parent_pc)

    # For every pc span: the outermost target node on its inline stack, and its depth.
    per_node: dict[int, list[tuple[int, int]]] = {}
    depth_of: dict[int, int] = {}
    for start, end, val in spans:
        if val < 0:
            continue
        chain: list[int] = []
        i = val
        while i >= 0 and len(chain) < 256:
            chain.append(i)
            i = parent_of(i)
        hit = next((j for j in reversed(chain) if node(j)[0] in targets), None)
        if hit is None:
            continue
        per_node.setdefault(hit, []).append((start, end))
        depth_of[hit] = len(chain) - 1 - chain.index(hit)
    out: list[InlinedCall] = []
    for i, ranges in per_node.items():
        merged: list[tuple[int, int]] = []
        for start, end in sorted(ranges):
            if merged and merged[-1][1] == start:
                merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        out.append(
            InlinedCall(
                function=name,
                caller=fn.name,
                caller_entry=fn.entry,
                ranges=tuple(merged),
                call_pc=fn.entry + node(i)[1],
                depth=depth_of[i],
            )
        )
    return out


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
    "MAGIC_12",
    "MAGIC_116",
    "MAGIC_118",
    "MAGIC_120",
    "GoBinary",
    "GoFunc",
    "GoInfo",
    "InlinedCall",
    "ModInfo",
    "PclnHeader",
    "Pclntab",
    "find_buildinfo",
    "go_info",
    "inlined_calls",
    "itab_type",
    "open_binary",
    "parse_buildinfo",
    "parse_modinfo",
    "parse_pclntab_header",
    "parse_version",
    "pclntab",
    "read_uvarint",
    "strip_modinfo",
    "type_name",
    "version_at_least",
]
