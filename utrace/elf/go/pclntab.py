"""The Go pclntab: the function table every Go binary carries, with names, entries and pc-value tables.

Formats by magic: 1.2 (Go 1.2-1.15), 1.16 (1.16-1.17), 1.18 (1.18-1.19) and 1.20 (1.20+), from
runtime/symtab.go and debug/gosym of each release. Entries of 1.18+ tables are offsets from a text base
that is proven from the module data (see `moduledata.module_text`), never guessed.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from utrace.elf.dwarf import uleb128
from utrace.elf.reader import SHT_NOBITS
from utrace.errors import ElfError

if TYPE_CHECKING:
    from utrace.elf.go.gobin import GoBinary

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

_FUNCFLAG_ASM = 1 << 2  # internal/abi FuncFlagAsm (runtime funcFlag_ASM in 1.18-1.19)
MAX_NAME = 1 << 16  # longest name read from a Go table
_MAX_FUNCS = 1 << 24
_MAX_INSTANCES = 256


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


def _locate_pclntab(binary: GoBinary) -> tuple[int, int, int | None, str]:
    """(file offset, max size, VA or None, how found) of the pclntab header."""
    for name in (".gopclntab", ".data.rel.ro.gopclntab"):
        sec = binary.img.section(name)
        if sec is not None and sec.type != SHT_NOBITS and sec.size >= 16:
            return sec.offset, sec.size, sec.addr or binary.offset_to_va(sec.offset), f"section {name}"
    # Externally linked PIE merges the table anonymously into .data.rel.ro: scan for magic + 00 00.
    regions: list[tuple[int, int, str]] = []
    for name in (".data.rel.ro", ".rodata"):
        sec = binary.img.section(name)
        if sec is not None and sec.type != SHT_NOBITS:
            regions.append((sec.offset, sec.size, f"scan of {name}"))
    regions.append((0, binary.img.size, "scan of the whole file"))
    for start, size, how in regions:
        found = _scan_pclntab(binary, start, size)
        if found is not None:
            end = start + size
            return found, end - found, binary.offset_to_va(found), how
    raise ElfError(f"{binary.path}: no Go pclntab found (not a Go binary, or the table was removed)")


def _scan_pclntab(binary: GoBinary, start: int, size: int) -> int | None:
    img = binary.img
    end = start + size
    for magic in (MAGIC_120, MAGIC_118, MAGIC_116, MAGIC_12):
        sig = struct.pack("<I", magic) + b"\0\0"
        pos = start
        while True:
            pos = img.find(sig, pos, end)
            if pos < 0:
                break
            # The table is pointer aligned in memory; a plausible header decodes without error.
            if pos % 4 == 0:
                try:
                    hdr = parse_pclntab_header(img.read(pos, min(128, img.size - pos)), size=end - pos)
                    if hdr.nfunc > 0:
                        return int(pos)
                except ElfError:
                    pass
            pos += 1
    return None


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
    def load(cls, binary: GoBinary) -> Pclntab:
        """Find and decode the table of `binary` (GoBinary.pclntab caches it and names the file in errors)."""
        off, size, va, how = _locate_pclntab(binary)
        buf = bytearray(binary.img.read(off, size))
        if va is not None:
            binary.apply_relocs(buf, va)
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
            if nameoff < 0 or start >= size or end < 0 or end - start > MAX_NAME:
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

    @property
    def data(self) -> bytes:
        """The table's bytes (relocated words patched in)."""
        return self._data

    def name_table(self) -> tuple[int, int]:
        """[start, end) of the function name strings in `data`: funcnametab (1.16+), the whole table (1.2)."""
        hdr = self.header
        if self.magic == MAGIC_12 or hdr is None:
            return 0, len(self._data)
        start = hdr.funcname_off
        ends = (hdr.cu_off, hdr.filetab_off, hdr.pctab_off, hdr.pcln_off, len(self._data))
        return start, min(x for x in ends if x > start)

    def _cstring(self, off: int) -> str:
        data = self._data
        if not 0 <= off < len(data):
            raise ElfError(f"{self.path}: corrupt Go pclntab (name offset {off:#x})")
        end = data.find(b"\0", off)
        if end < 0 or end - off > MAX_NAME:
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
            uv, pos = uleb128(data, pos)
            val += -(uv & 1) ^ (uv >> 1)
            pcd, pos = uleb128(data, pos)
            new_pc = pc + pcd * self.quantum
            out.append((pc, new_pc, val))
            pc, first = new_pc, False
            if pc > fn.end or len(out) > 1 << 20:
                raise ElfError(f"{self.path}: corrupt Go pc-value table of {fn.name!r}")
        return out

    def inline_indexes(self) -> tuple[int, int]:
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

    def funcdata_va(self, fn: GoFunc, index: int) -> int | None:
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


def instance_names(tab: Pclntab, generic: str) -> list[str]:
    """Names in the pclntab's name table of instantiations of the generic function `generic`.

    "main.Max" -> ["main.Max[go.shape.int]", "main.Max[go.shape.string]"], "main.(*S).Push" ->
    ["main.(*S[go.shape.int]).Push"]: also instances that were only ever inlined (they are in the name
    table for the inline trees, not in the function table). At most 256, sorted.
    """
    hdr = tab.header
    if hdr is None or "[" in generic or not generic:
        return []
    data = tab.data
    start, end = tab.name_table()
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
            stop = data.find(b"\0", pos + 1, min(end, pos + 1 + MAX_NAME))
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
