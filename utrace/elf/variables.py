"""Addresses of named global variables (`STT_OBJECT` symbols), for reading a flag out of a live process.

`symbols.py` indexes functions only, for every name; this looks up a handful of exact variable names
(HotSpot's `DTraceMethodProbes` is a local `.bss` byte in `.symtab`), so it searches the string table
for each name first and scans the symbol table only for those string offsets.
"""

from __future__ import annotations

from collections.abc import Iterable

from utrace.elf.reader import SHT_DYNSYM, SHT_SYMTAB, ElfImage

STT_OBJECT = 1
_SYM_SIZE = 24


def _string_offsets(strtab: bytes, name: bytes) -> set[int]:
    out: set[int] = set()
    needle = name + b"\0"
    start = 0
    while (i := strtab.find(needle, start)) >= 0:
        if i == 0 or strtab[i - 1] == 0:
            out.add(i)
        start = i + 1
    return out


def read_variables(image: ElfImage, names: Iterable[str]) -> dict[str, int]:
    """The address (`st_value`) of each named object symbol defined in `image`; missing names are absent.

    Raises:
        ElfError: a symbol table or its string table lies outside the file.
    """
    wanted = set(names)
    found: dict[str, int] = {}
    for sec in [s for s in image.sections if s.type in (SHT_SYMTAB, SHT_DYNSYM)]:
        strsec = image.section_at(sec.link)
        if strsec is None:
            continue
        strtab = image.section_bytes(strsec)
        by_offset: dict[int, str] = {}
        for name in wanted - found.keys():
            for off in _string_offsets(strtab, name.encode()):
                by_offset[off] = name
        if not by_offset:
            continue
        n = sec.size // _SYM_SIZE
        words = memoryview(image.section_bytes(sec)[: n * _SYM_SIZE]).cast("Q")
        w0 = words[0::3].tolist()
        for i, w in enumerate(w0):
            name_hit = by_offset.get(w & 0xFFFFFFFF)
            # st_info is byte 4 of the first word; st_shndx its top 16 bits (0 = undefined)
            if name_hit is not None and (w >> 32) & 0xF == STT_OBJECT and w >> 48:
                found.setdefault(name_hit, words[3 * i + 1])
    return found


def variables_for(path: str, names: Iterable[str]) -> dict[str, int]:
    """Open `path` and look up variables by exact name. Raises ElfError for bad files."""
    with ElfImage(path) as image:
        return read_variables(image, names)
