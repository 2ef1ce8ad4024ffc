"""Function symbols from `.symtab` and `.dynsym`, read in bulk with `struct.iter_unpack`.

pyelftools' per-symbol objects cost about 8 s for node's 230k symbol entries; unpacking the raw
tables costs about 0.1 s. The result is columnar (`SymbolTable`), so a listing of 150k functions never
builds 150k objects; `Symbol` objects are made only for what a caller asks for.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import compress

from utrace.elf.demangle import clone_suffix, demangle_many
from utrace.elf.reader import SHT_DYNSYM, SHT_SYMTAB, ElfImage, Segment
from utrace.model import Binding, Symbol

STT_FUNC = 2
STT_GNU_IFUNC = 10
SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00
_SYM = struct.Struct("<IBBHQQ")
_FUNC_TYPES = bytes(1 if (b & 0xF) in (STT_FUNC, STT_GNU_IFUNC) else 0 for b in range(256))
_BINDINGS = {0: Binding.LOCAL, 1: Binding.GLOBAL, 2: Binding.WEAK}


@dataclass(slots=True)
class SymbolTable:
    """All function symbols of one ELF file, in columns, sorted by address.

    `segments` are the PT_LOAD segments (vaddr, offset, filesz) used to turn an address into the file
    offset a uprobe needs.
    """

    module: str
    build_id: str | None
    names: list[str] = field(default_factory=list)
    raws: list[str] = field(default_factory=list)
    addresses: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    bindings: list[int] = field(default_factory=list)
    clones: list[str] = field(default_factory=list)
    segments: list[tuple[int, int, int]] = field(default_factory=list)
    _by_address: tuple[list[int], list[int]] | None = None

    def __len__(self) -> int:
        return len(self.raws)

    def offset_of(self, address: int) -> int | None:
        for vaddr, offset, filesz in self.segments:
            if vaddr <= address < vaddr + filesz:
                return address - vaddr + offset
        return None

    def symbol(self, i: int) -> Symbol:
        address = self.addresses[i]
        offset = self.offset_of(address)
        return Symbol(
            name=self.names[i],
            raw=self.raws[i],
            address=address,
            size=self.sizes[i],
            binding=_BINDINGS.get(self.bindings[i], Binding.OTHER),
            offset=-1 if offset is None else offset,
            module=self.module,
            clone=self.clones[i],
        )

    def entries(self) -> Iterator[int]:
        """Indices of symbols that are function entries (everything but `.cold` parts)."""
        clones = self.clones
        return (i for i in range(len(clones)) if ".cold" not in clones[i])

    def containing(self, address: int) -> int | None:
        """Index of the function whose [address, address+size) holds `address`, if any."""
        if self._by_address is None:
            order = sorted(range(len(self.addresses)), key=self.addresses.__getitem__)
            self._by_address = (order, [self.addresses[i] for i in order])
        order, sorted_addresses = self._by_address
        k = bisect.bisect_right(sorted_addresses, address) - 1
        while k >= 0:
            i = order[k]
            if address < self.addresses[i] + max(self.sizes[i], 1):
                return i
            if address - self.addresses[i] > (1 << 24):
                break
            k -= 1
        return None


def _segments(image: ElfImage) -> list[tuple[int, int, int]]:
    return [(s.vaddr, s.offset, s.filesz) for s in sorted(image.segments, key=_seg_key)]


def _seg_key(s: Segment) -> int:
    return s.vaddr


def read_symbols(image: ElfImage, build_id: str | None) -> SymbolTable:
    """Read every defined function symbol of `image` (both tables, duplicates merged).

    Entries keep file order (`.symtab` first); `sorted_view()` gives address order when needed.

    Raises:
        ElfError: a symbol table or its string table lies outside the file.
    """
    by_value: dict[int, bytes] = {}
    first_names: list[bytes] = []
    first_values: list[int] = []
    raw_bytes: list[bytes] = []
    addresses: list[int] = []
    sizes: list[int] = []
    bindings: list[int] = []
    tables = [s for s in image.sections if s.type == SHT_SYMTAB]
    tables += [s for s in image.sections if s.type == SHT_DYNSYM]
    for number, sec in enumerate(tables):
        strsec = image.section_at(sec.link)
        if strsec is None:
            continue
        strtab = image.section_bytes(strsec)
        n = sec.size // _SYM.size
        table = image.section_bytes(sec)[: n * _SYM.size]
        if not n:
            continue
        # Elf64_Sym is three little-endian u64 words: (name | info<<32 | other<<40 | shndx<<48),
        # value, size. Column views turn into Python ints in C, and the info bytes are filtered
        # through a translation table, so the Python-level loop only sees function symbols.
        words = memoryview(table).cast("Q")
        w0 = words[0::3].tolist()
        values = words[1::3].tolist()
        sz = words[2::3].tolist()
        wanted = [
            i
            for i in compress(range(n), table[4 :: _SYM.size].translate(_FUNC_TYPES))
            if values[i] and SHN_UNDEF < (w0[i] >> 48) < SHN_LORESERVE
        ]
        find = strtab.find
        limit = len(strtab)
        offs = [w0[i] & 0xFFFFFFFF for i in wanted]
        names_t = [strtab[o : e if (e := find(b"\0", o)) >= 0 else limit] for o in offs]
        vals_t = [values[i] for i in wanted]
        if number == 0:
            keep = [k for k, nm in enumerate(names_t) if nm]
            if len(tables) > 1:
                by_value.update(zip(vals_t, names_t, strict=True))
                first_names.extend(names_t)
                first_values.extend(vals_t)
        else:
            # .dynsym repeats most of .symtab. An address maps to one name in almost every case;
            # aliases (two names at one address) fall back to an exact set built only then.
            get = by_value.get
            keep = [k for k, v in enumerate(vals_t) if names_t[k] and get(v) != names_t[k]]
            if keep and first_values:
                # C++ constructors and destructors (C1/C2, D1/D2) alias one address, so this is
                # common: build the exact set only for the addresses in question.
                wanted_values = {vals_t[k] for k in keep}
                exact = {(v, nm) for v, nm in zip(first_values, first_names, strict=True) if v in wanted_values}
                keep = [k for k in keep if (vals_t[k], names_t[k]) not in exact]
        raw_bytes += [names_t[k] for k in keep]
        addresses += [vals_t[k] for k in keep]
        sizes += [sz[wanted[k]] for k in keep]
        bindings += [(w0[wanted[k]] >> 36) & 0xF for k in keep]
    raws = b"\0".join(raw_bytes).decode("utf-8", "surrogateescape").split("\0") if raw_bytes else []
    return SymbolTable(
        module=image.path,
        build_id=build_id,
        names=demangle_many(raws),
        raws=raws,
        addresses=addresses,
        sizes=sizes,
        bindings=bindings,
        clones=[clone_suffix(r) if "." in r else "" for r in raws],
        segments=_segments(image),
    )
