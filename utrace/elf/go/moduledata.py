"""The Go module data (runtime.moduledata): where the runtime itself finds text, types and funcdata.

Candidates are the `runtime.firstmoduledata` symbol, `.go.module`, and every aligned writable word (or
RELATIVE relocation) that points at the pclntab; a candidate counts only when its fields agree with the
table (the runtime's own moduledataverify1 checks).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from utrace.elf.go.pclntab import MAGIC_12, MAGIC_116, MAGIC_118, MAGIC_120, Pclntab
from utrace.elf.reader import PF_W
from utrace.errors import ElfError

if TYPE_CHECKING:
    from utrace.elf.go.gobin import GoBinary


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


def find_moduledata(binary: GoBinary) -> dict[str, int] | None:
    """The moduledata fields this module uses ("va", "text", "types", "etypes", "gofunc"), or None.

    GoBinary.moduledata caches the answer.
    """
    tab = binary.pclntab()
    if tab.va is None:
        return None
    candidates: list[int] = [tab.module_va] if tab.module_va is not None else []
    sym = binary.symbols().get("runtime.firstmoduledata")
    if sym:
        candidates.append(sym)
    # moduledata's first word points at the pclntab (pcHeader, or pclntable's data before 1.16).
    candidates.extend(_words_pointing_at(binary, tab.va, None))
    if binary.img.is_shared:
        candidates.extend(_relocated_to(binary, tab.va))
    layouts = _MODULEDATA_FOR_MAGIC[tab.magic]
    info = binary.info()
    if info is not None and info.version_tuple is not None and info.version_tuple >= (1, 27, 0):
        layouts = ("1.27", *(x for x in layouts if x != "1.27"))
    for va in candidates:
        for layout in layouts:
            md = _try_moduledata(binary, va, layout, tab)
            if md is not None:
                return md
    return None


def _words_pointing_at(binary: GoBinary, target: int, room: int | None) -> list[int]:
    """VAs of the 8-byte aligned words of writable segments that hold `target` (at most `room` of them)."""
    out: list[int] = []
    needle = struct.pack("<Q", target & 0xFFFFFFFFFFFFFFFF)
    for seg in binary.img.segments:
        if not seg.flags & PF_W or seg.offset >= binary.img.size:
            continue
        # Program headers are not bounds-checked by ElfImage: clamp to the file.
        pos, end = seg.offset, min(seg.offset + seg.filesz, binary.img.size)
        while room is None or len(out) < room:
            pos = binary.img.find(needle, pos, end)
            if pos < 0:
                break
            if (pos - seg.offset) % 8 == 0:
                out.append(pos - seg.offset + seg.vaddr)
            pos += 1
    return out


def _relocated_to(binary: GoBinary, target: int) -> list[int]:
    """VAs that a RELATIVE relocation sets to `target`, sorted."""
    return sorted(va for va, add in binary.relocations().items() if add == target)


def _try_moduledata(binary: GoBinary, va: int, layout: str, tab: Pclntab) -> dict[str, int] | None:
    f = _MODULEDATA[layout]
    try:
        if binary.read_word(va) != tab.va:
            return None
        text = binary.read_word(va + f["text"])
        types, etypes = binary.read_word(va + f["types"]), binary.read_word(va + f["etypes"])
        gofunc = binary.read_word(va + f["gofunc"]) if f["gofunc"] >= 0 else 0
    except ElfError:
        return None
    if text != tab.text_start or not 0 < types <= etypes or etypes - types > 1 << 32:
        return None
    if binary.img.vaddr_to_offset(types) is None:
        return None
    if f["gofunc"] >= 0 and (gofunc == 0 or binary.img.vaddr_to_offset(gofunc) is None):
        return None
    return {"va": va, "text": text, "types": types, "etypes": etypes, "gofunc": gofunc}


def _module_candidates(binary: GoBinary, table_va: int) -> list[int]:
    """VAs that may hold the module data: `.go.module`, runtime.firstmoduledata, then every aligned
    word of a writable segment (or relocation) that points at the pclntab."""
    out: list[int] = []
    sec = binary.img.section(".go.module")
    if sec is not None and sec.addr:
        out.append(sec.addr)
    sym = binary.symbols().get("runtime.firstmoduledata")
    if sym:
        out.append(sym)
    out.extend(_words_pointing_at(binary, table_va, 64 - len(out)))
    if binary.img.is_shared:
        out.extend(_relocated_to(binary, table_va)[:64])
    return list(dict.fromkeys(out))


def module_text(
    binary: GoBinary, tab: Pclntab, first: int, end: int, *, absolute: bool = False
) -> tuple[int, int] | None:
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
    for va in _module_candidates(binary, tab.va):
        try:
            if binary.read_word(va) != tab.va or binary.read_word(va + ftab_at) != ftab_va:
                continue
            nftab = int(struct.unpack("<Q", binary.read_va(va + ftab_at + 8, 8))[0])
            minpc, maxpc = binary.read_word(va + minpc_at), binary.read_word(va + minpc_at + 8)
            text, etext = binary.read_word(va + minpc_at + 16), binary.read_word(va + minpc_at + 24)
        except ElfError:
            continue
        lo, hi = (first, end) if absolute else (text + first, text + end)
        if nftab != hdr.nfunc + 1 or (minpc, maxpc) != (lo, hi) or not text <= minpc < maxpc <= etext:
            continue
        if binary.executable_span(minpc, maxpc):
            return va, text
    return None


def gofunc(binary: GoBinary) -> int | None:
    """moduledata.gofunc: base of the 1.18+ funcdata offsets (`go.func.*` / `go:func.*`)."""
    syms = binary.symbols()
    for name in ("go:func.*", "go.func.*"):
        if name in syms:
            return syms[name]
    md = binary.moduledata()
    return md["gofunc"] if md and md["gofunc"] else None


def types_base(binary: GoBinary) -> int | None:
    """moduledata.types: base of the nameOff/typeOff offsets in runtime type descriptors."""
    sym = binary.symbols().get("runtime.types")
    if sym:
        return sym
    md = binary.moduledata()
    return md["types"] if md else None
