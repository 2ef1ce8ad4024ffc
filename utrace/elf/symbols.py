"""Function symbols from `.symtab` and `.dynsym`, read in bulk with `struct.iter_unpack`.

pyelftools' per-symbol objects cost about 8 s for node's 230k symbol entries; unpacking the raw
tables costs about 0.1 s. The result is columnar (`SymbolTable`), so a listing of 150k functions never
builds 150k objects; `Symbol` objects are made only for what a caller asks for.
"""

from __future__ import annotations

import bisect
import gc
import marshal
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import and_, itemgetter, not_
from typing import TypeVar

from utrace.elf.demangle import clone_suffix, demangle_bytes, demangle_serial
from utrace.elf.reader import SHT_DYNSYM, SHT_SYMTAB, ElfImage, Section, Segment
from utrace.model import Binding, Symbol
from utrace.parallel import ChildFailed, in_child, worth_a_child

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
        return compress(range(len(clones)), map(not_, map(str.__contains__, clones, repeat(".cold"))))

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

    Entries keep file order (`.symtab` first, then what only `.dynsym` has). For a big file a child,
    forked at the start, reads the tables too: it demangles the last `_CHILD_SHARE` of the first
    table's names and finds (and demangles) what the second table adds, while this process demangles
    the rest of the first table.

    Raises:
        ElfError: a symbol table or its string table lies outside the file.
    """
    gc_was_on = gc.isenabled()
    gc.disable()  # ~200k new objects and no cycles: collections here only cost time (a fifth of it)
    try:
        return _read_symbols(image, build_id)
    finally:
        if gc_was_on:
            gc.enable()


_PARALLEL_ROWS = 30000  # symbol table entries from which a second process pays off
_CHILD_SHARE = 0.25  # of the first table's names; the child also reads and merges the second table

T = TypeVar("T")
Columns = tuple[list[bytes], list[int], list[int], list[int]]  # names, values, sizes, bindings


def _child_cut(n: int) -> int:
    return n - int(n * _CHILD_SHARE)


def _gather(seq: Sequence[T], idx: list[int]) -> list[T]:
    """[seq[i] for i in idx], with the loop in C."""
    if len(idx) > 1:
        return list(itemgetter(*idx)(seq))
    return [seq[i] for i in idx]


def _function_columns(image: ElfImage, sec: Section) -> tuple[list[bytes], list[int], list[int], list[int]]:
    """(names, values, sizes, bindings) of the defined function symbols of one symbol table."""
    strsec = image.section_at(sec.link)
    if strsec is None:
        return [], [], [], []
    strtab = image.section_bytes(strsec)
    table = image.section_bytes(sec)
    n = min(sec.size, len(table)) // _SYM.size
    table = table[: n * _SYM.size]
    if not n:
        return [], [], [], []
    # Elf64_Sym is (u32 name, u8 info, u8 other, u16 shndx, u64 value, u64 size), little-endian.
    # Column views turn into Python ints in C, the info bytes are filtered through a translation table
    # and the columns gathered with itemgetter, so only two loops here run in Python.
    view = memoryview(table)
    values = view.cast("Q")[1::3].tolist()
    shndx = view.cast("H")[3::12].tolist()
    wanted = [
        i
        for i in compress(range(n), table[4 :: _SYM.size].translate(_FUNC_TYPES))
        if values[i] and SHN_UNDEF < shndx[i] < SHN_LORESERVE
    ]
    find = strtab.find
    limit = len(strtab)
    offsets = _gather(view.cast("I")[0::6].tolist(), wanted)
    names = [strtab[o : e if (e := find(b"\0", o)) >= 0 else limit] for o in offsets]
    if not all(names):  # unnamed function symbols: rare
        keep = [k for k, nm in enumerate(names) if nm]
        names = [names[k] for k in keep]
        wanted = [wanted[k] for k in keep]
    sizes = _gather(view.cast("Q")[2::3].tolist(), wanted)
    bindings = [b >> 4 for b in _gather(table[4 :: _SYM.size], wanted)]
    return names, _gather(values, wanted), sizes, bindings


def _read_symbols(image: ElfImage, build_id: str | None) -> SymbolTable:
    tables = [s for s in image.sections if s.type == SHT_SYMTAB]
    tables += [s for s in image.sections if s.type == SHT_DYNSYM]
    if not tables:
        return _table(image, build_id, ([], [], [], []), [])  # no symbol table
    first, rest = tables[0], tables[1:]
    if first.size // _SYM.size < _PARALLEL_ROWS or not worth_a_child():
        cols = _function_columns(image, first)
        cols = _concat(cols, _extra_columns(image, rest, cols))
        return _table(image, build_id, cols, _decode(demangle_bytes(cols[0])))

    demangle_serial([])  # load the library once, before the fork

    def child() -> bytes:
        cols = _function_columns(image, first)
        theirs = demangle_serial(cols[0][_child_cut(len(cols[0])) :])
        extra = _extra_columns(image, rest, cols)
        return marshal.dumps(
            (
                b"\0".join(theirs),
                b"\0".join(extra[0]),
                extra[1],
                extra[2],
                extra[3],
                b"\0".join(demangle_serial(extra[0])),
            )
        )

    collect = in_child(child)
    cols = _function_columns(image, first)
    cut = _child_cut(len(cols[0]))
    # what does not depend on the child is done before waiting for it
    mine = _decode(demangle_serial(cols[0][:cut]))
    raws = _decode(cols[0])
    clones = _clones(raws)
    try:
        theirs_blob, extra_blob, values, sizes, bindings, extra_demangled = marshal.loads(collect())
        theirs = theirs_blob.split(b"\0") if len(cols[0]) > cut else []
        extra_names = extra_blob.split(b"\0") if values else []
        demangled_extra = extra_demangled.split(b"\0") if values else []
        extra = (extra_names, list(values), list(sizes), list(bindings))
        if len(theirs) != len(cols[0]) - cut or not len(extra_names) == len(values) == len(demangled_extra):
            raise ChildFailed("short result")
    except (ChildFailed, ValueError, TypeError, EOFError):  # do it here rather than lose names
        theirs = demangle_serial(cols[0][cut:])
        extra = _extra_columns(image, rest, cols)
        demangled_extra = demangle_serial(extra[0])
    names = mine + _decode(theirs + demangled_extra)
    raws_extra = _decode(extra[0])
    return _table(image, build_id, _concat(cols, extra), names, raws + raws_extra, clones + _clones(raws_extra))


def _concat(a: Columns, b: Columns) -> Columns:
    if not b[0]:
        return a
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


def _extra_columns(image: ElfImage, tables: list[Section], first: Columns) -> Columns:
    """The function symbols of `tables` (normally just `.dynsym`) that `first` lacks.

    `.dynsym` repeats most of `.symtab`: an entry is kept when its name or its address is missing from
    the first table, such as an alias at a known address or a symbol stripped from `.symtab` alone.
    (Tested with set lookups in C, which matters for 70k entries; an exact (address, name) pair test
    would also keep a name the first table has elsewhere at an address it knows under other names,
    which only symbol versioning produces, and the function is then listed under its versioned name.)
    """
    names = set(first[0])
    addresses = set(first[1])
    out: Columns = ([], [], [], [])
    for sec in tables:
        names_t, vals_t, sz_t, bind_t = _function_columns(image, sec)
        if names.issuperset(names_t) and addresses.issuperset(vals_t):
            continue  # the usual case: .dynsym repeats .symtab (set operations in C, no per-entry flags)
        known = map(and_, map(names.__contains__, names_t), map(addresses.__contains__, vals_t))
        keep = list(compress(range(len(vals_t)), map(not_, known)))
        if keep:
            out = _concat(
                out, (_gather(names_t, keep), _gather(vals_t, keep), _gather(sz_t, keep), _gather(bind_t, keep))
            )
    return out


def _decode(names: list[bytes]) -> list[str]:
    return b"\0".join(names).decode("utf-8", "surrogateescape").split("\0") if names else []


def _table(
    image: ElfImage,
    build_id: str | None,
    cols: Columns,
    names: list[str],
    raws: list[str] | None = None,
    clones: list[str] | None = None,
) -> SymbolTable:
    if raws is None:
        raws = _decode(cols[0])
    return SymbolTable(
        module=image.path,
        build_id=build_id,
        names=names,
        raws=raws,
        addresses=cols[1],
        sizes=cols[2],
        bindings=cols[3],
        clones=_clones(raws) if clones is None else clones,
        segments=_segments(image),
    )


def _clones(raws: list[str]) -> list[str]:
    """The clone suffix of every name; only names with a dot are looked at in Python."""
    clones = [""] * len(raws)
    for i in compress(range(len(raws)), map(str.__contains__, raws, repeat("."))):
        clones[i] = clone_suffix(raws[i])
    return clones
