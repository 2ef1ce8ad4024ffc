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
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import compress, repeat
from operator import and_, contains, itemgetter, not_
from typing import AnyStr, TypeVar

from utrace.elf.demangle import clone_suffix, demangle_bytes, demangle_serial
from utrace.elf.reader import SHT_DYNSYM, SHT_SYMTAB, ElfImage, Section, Segment
from utrace.model import Binding, Symbol
from utrace.store.parallel import ChildFailed, in_child, worth_a_child

STT_FUNC = 2
STT_GNU_IFUNC = 10
SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00
_SYM = struct.Struct("<IBBHQQ")
_FUNC_TYPES = bytes(1 if (b & 0xF) in (STT_FUNC, STT_GNU_IFUNC) else 0 for b in range(256))
_BINDINGS = {0: Binding.LOCAL, 1: Binding.GLOBAL, 2: Binding.WEAK}


class SymbolTable:
    """All function symbols of one ELF file, in columns, in file order.

    `segments` are the PT_LOAD segments (vaddr, offset, filesz) used to turn an address into the file
    offset a uprobe needs. A table read from the file keeps its names as the bytes the file holds
    (`name_bytes`, `raw_bytes`) and decodes them the first time `names` or `raws` is asked for: a plain
    listing renders from the bytes, and its cache file is written (and the names decoded) by another
    process after it has exited.
    """

    __slots__ = (
        "_by_address",
        "_holding",
        "_name_bytes",
        "_names",
        "_raw_bytes",
        "_raws",
        "addresses",
        "bindings",
        "build_id",
        "clones",
        "go",
        "module",
        "segments",
        "sizes",
    )

    def __init__(
        self,
        module: str,
        build_id: str | None,
        names: list[str] | None = None,
        raws: list[str] | None = None,
        addresses: list[int] | None = None,
        sizes: list[int] | None = None,
        bindings: list[int] | None = None,
        clones: list[str] | None = None,
        segments: list[tuple[int, int, int]] | None = None,
        *,
        name_bytes: list[bytes] | None = None,
        raw_bytes: list[bytes] | None = None,
    ) -> None:
        self.module = module
        self.build_id = build_id
        self._names = names if names is not None or name_bytes is not None else []
        self._raws = raws if raws is not None or raw_bytes is not None else []
        self._name_bytes = name_bytes
        self._raw_bytes = raw_bytes
        self.addresses = [] if addresses is None else addresses
        self.sizes = [] if sizes is None else sizes
        self.bindings = [] if bindings is None else bindings
        self.clones = [] if clones is None else clones
        self.segments = [] if segments is None else segments
        self._by_address: tuple[list[int], list[int]] | None = None
        self._holding: dict[str, set[int]] = {}  # `holding`'s answers (tables never change)
        self.go = False  # named by a Go pclntab (`gosyms.go_function_table`): Go's globs apply

    def __repr__(self) -> str:
        return f"SymbolTable({self.module!r}, {len(self)} functions)"

    @property
    def names(self) -> list[str]:
        """Demangled names (the raw name where there is nothing to demangle)."""
        if self._names is None:
            self._names = _decode(self._name_bytes or [])
        return self._names

    @property
    def raws(self) -> list[str]:
        """Symbol names as the file spells them."""
        if self._raws is None:
            self._raws = _decode(self._raw_bytes or [])
        return self._raws

    def names_as_bytes(self) -> list[bytes]:
        """`names` encoded as the file held them, without decoding them if they were never decoded."""
        if self._name_bytes is not None:
            return self._name_bytes
        return [n.encode("utf-8", "surrogateescape") for n in self.names]

    def raws_as_bytes(self) -> list[bytes]:
        """`raws` encoded as the file held them, without decoding them if they were never decoded."""
        if self._raw_bytes is not None:
            return self._raw_bytes
        return [n.encode("utf-8", "surrogateescape") for n in self.raws]

    def __len__(self) -> int:
        return len(self.addresses)

    def offset_of(self, address: int) -> int | None:
        for vaddr, offset, filesz in self.segments:
            if vaddr <= address < vaddr + filesz:
                return address - vaddr + offset
        return None

    def name_at(self, i: int) -> str:
        """`names[i]`, decoding only that name while the table holds its names as bytes."""
        if self._names is None and self._name_bytes is not None:
            return self._name_bytes[i].decode("utf-8", "surrogateescape")
        return self.names[i]

    def raw_at(self, i: int) -> str:
        """`raws[i]`, decoding only that name while the table holds its raw names as bytes."""
        if self._raws is None and self._raw_bytes is not None:
            return self._raw_bytes[i].decode("utf-8", "surrogateescape")
        return self.raws[i]

    def has_raw(self, raw: str) -> bool:
        """Whether a symbol is spelled `raw` in the file (`raw in raws`, without decoding them all)."""
        if self._raws is None and self._raw_bytes is not None:
            return raw.encode("utf-8", "surrogateescape") in self._raw_bytes
        return raw in self.raws

    def holding(self, text: str) -> set[int]:
        """Indices of the symbols whose name or raw name may contain `text`: every one that does, found
        by a test in C per name on the names as the table holds them (bytes until something decodes
        them: a first trace of node 26 need not decode its 137k names).

        Answers are kept: a text that contains one asked before is looked for only among that one's
        holders (`match.share_literal` asks for what several names to be tried have in common)."""
        known = self._holding.get(text)
        if known is not None:
            return known
        among = min((found for t, found in self._holding.items() if t in text), key=len, default=None)
        found: set[int] = set()
        for column, raw in ((self._names, self._name_bytes), (self._raws, self._raw_bytes)):
            if column is None and raw is not None:
                try:  # (UTF-8 keeps substrings substrings; an escaped byte may match more: a superset)
                    key = text.encode("utf-8", "surrogateescape")
                except UnicodeEncodeError:
                    column, raw = self.names if raw is self._name_bytes else self.raws, None
                else:
                    found.update(_containing(raw, key, among))
                    continue
            assert column is not None
            found.update(_containing(column, text, among))
        if len(self._holding) >= 16:
            self._holding.clear()
        self._holding[text] = found
        return found

    def symbol(self, i: int) -> Symbol:
        address = self.addresses[i]
        offset = self.offset_of(address)
        return Symbol(
            name=self.name_at(i),
            raw=self.raw_at(i),
            address=address,
            size=self.sizes[i],
            binding=_BINDINGS.get(self.bindings[i], Binding.OTHER),
            offset=-1 if offset is None else offset,
            module=self.module,
            clone=self.clones[i],
        )

    def entries(self, start: int = 0) -> Iterator[int]:
        """Indices (from `start` on) of symbols that are function entries (everything but `.cold` parts)."""
        clones = self.clones
        keep = bytearray(b"\1") * len(clones)
        for i in compress(range(len(clones)), clones):  # only the few clone parts are looked at
            if ".cold" in clones[i]:
                keep[i] = 0
        return compress(range(start, len(clones)), keep[start:])

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


def load_segments(image: ElfImage) -> list[tuple[int, int, int]]:
    return [(s.vaddr, s.offset, s.filesz) for s in sorted(image.segments, key=_seg_key)]


def _seg_key(s: Segment) -> int:
    return s.vaddr


def read_symbols(
    image: ElfImage, build_id: str | None, first_part: Callable[[SymbolTable], None] | None = None
) -> SymbolTable:
    """Read every defined function symbol of `image` (both tables, duplicates merged).

    Entries keep file order (`.symtab` first, then what only `.dynsym` has). For a big file a child,
    forked at the start, finds what the second table adds and demangles that and the second half of
    the first table, while this process reads the first table and demangles its first half.

    Args:
        first_part: may be called, before the rest is known, with a table of the first symbol table's
            first functions (all of them, or its first half when a child shares the work), which the
            returned table then starts with (same entries, same order): work on them can overlap the
            child's.

    Raises:
        ElfError: a symbol table or its string table lies outside the file.
    """
    gc_was_on = gc.isenabled()
    gc.disable()  # ~200k new objects and no cycles: collections here only cost time (a fifth of it)
    try:
        return _read_symbols(image, build_id, first_part)
    finally:
        if gc_was_on:
            gc.enable()


_PARALLEL_ROWS = 30000  # symbol table entries from which a second process pays off

T = TypeVar("T")
Columns = tuple[list[bytes], list[int], list[int], list[int]]  # names, values, sizes, bindings


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


def _read_symbols(
    image: ElfImage, build_id: str | None, first_part: Callable[[SymbolTable], None] | None
) -> SymbolTable:
    tables = [s for s in image.sections if s.type == SHT_SYMTAB]
    tables += [s for s in image.sections if s.type == SHT_DYNSYM]
    if not tables:
        return _table(image, build_id, ([], [], [], []), [])  # no symbol table
    first, rest = tables[0], tables[1:]
    if first.size // _SYM.size < _PARALLEL_ROWS or not worth_a_child():
        cols = _function_columns(image, first)
        cols = _concat(cols, _extra_columns(image, rest, cols))
        return _table(image, build_id, cols, demangle_bytes(cols[0]))

    # The child reads both tables to find what the second adds, and demangles that and the second half
    # of the first table's names; meanwhile this process demangles the first half and the caller works
    # on it (`first_part`, a prefix of the table), so the two cores share the demangling (node 26:
    # 110k C++ names, ~0.35 s on one core).
    demangle_serial([])  # load the library once, before the fork

    def child() -> bytes:
        first_cols = _function_columns(image, first)
        extra = _extra_columns(image, rest, first_cols)
        theirs = first_cols[0][len(first_cols[0]) // 2 :]
        blobs = (b"\0".join(demangle_serial(theirs)), b"\0".join(extra[0]), b"\0".join(demangle_serial(extra[0])))
        return marshal.dumps((len(theirs), *blobs, extra[1], extra[2], extra[3]))

    collect = in_child(child)
    cols = _function_columns(image, first)
    cut = len(cols[0]) // 2
    names = demangle_serial(cols[0][:cut])
    clones = _clones(cols[0])
    if first_part is not None and cut:
        first_part(_table(image, build_id, _prefix(cols, cut), names, clones[:cut]))
    try:
        count, half_blob, extra_blob, demangled_blob, values, sizes, bindings = marshal.loads(collect())
        half = half_blob.split(b"\0") if count else []
        extra = (extra_blob.split(b"\0") if values else [], list(values), list(sizes), list(bindings))
        demangled_extra = demangled_blob.split(b"\0") if values else []
        if count != len(cols[0]) - cut or len(half) != count:
            raise ChildFailed("another first table")
        if not len(extra[0]) == len(values) == len(demangled_extra) == len(sizes) == len(bindings):
            raise ChildFailed("short result")
    except (ChildFailed, ValueError, TypeError, EOFError):  # do it here rather than lose names
        half = demangle_serial(cols[0][cut:])
        extra = _extra_columns(image, rest, cols)
        demangled_extra = demangle_serial(extra[0])
    names = names + half  # (a new list: the early part holds the first)
    if not extra[0]:
        return _table(image, build_id, cols, names, clones)
    return _table(image, build_id, _concat(cols, extra), names + demangled_extra, clones + _clones(extra[0]))


def _prefix(cols: Columns, n: int) -> Columns:
    return (cols[0][:n], cols[1][:n], cols[2][:n], cols[3][:n])


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


def _containing(column: Sequence[AnyStr], key: AnyStr, among: set[int] | None) -> Iterable[int]:
    """Indices of the entries of `column` that contain `key`: all of them tested in C, or only `among`."""
    if among is None:
        return compress(range(len(column)), map(contains, column, repeat(key)))
    return [i for i in among if key in column[i]]


def _decode(names: list[bytes]) -> list[str]:
    return b"\0".join(names).decode("utf-8", "surrogateescape").split("\0") if names else []


def _table(
    image: ElfImage,
    build_id: str | None,
    cols: Columns,
    names: list[bytes],
    clones: list[str] | None = None,
) -> SymbolTable:
    return SymbolTable(
        module=image.path,
        build_id=build_id,
        addresses=cols[1],
        sizes=cols[2],
        bindings=cols[3],
        clones=_clones(cols[0]) if clones is None else clones,
        segments=load_segments(image),
        name_bytes=names,
        raw_bytes=cols[0],
    )


def _clones(raws: list[bytes]) -> list[str]:
    """The clone suffix of every name; only names with a dot are looked at in Python."""
    clones = [""] * len(raws)
    for i in compress(range(len(raws)), map(bytes.__contains__, raws, repeat(b"."))):
        clones[i] = clone_suffix(raws[i].decode("utf-8", "surrogateescape"))
    return clones


STT_OBJECT = 1
_CLASS_PREFIXES = (b"_ZTV", b"_ZTI", b"_ZTS")  # vtable, typeinfo, typeinfo name: only classes have them
_CLASS_WORDS = ("vtable for ", "typeinfo for ", "typeinfo name for ")


def _raw_entries(image: ElfImage, sec: Section) -> Iterator[tuple[bytes, int, int]]:
    """(name, st_info, st_shndx) of every named entry of one symbol table."""
    strsec = image.section_at(sec.link)
    if strsec is None:
        return
    strtab = image.section_bytes(strsec)
    table = image.section_bytes(sec)
    n = min(sec.size, len(table)) // _SYM.size
    for name_off, info, _other, shndx, _value, _size in _SYM.iter_unpack(table[: n * _SYM.size]):
        if not name_off or name_off >= len(strtab):
            continue
        end = strtab.find(b"\0", name_off)
        yield strtab[name_off : end if end >= 0 else len(strtab)], info, shndx


def class_names(path: str) -> set[str]:
    """Demangled names of the types a file has a vtable or typeinfo for (defined or referenced):
    evidence that those scopes are classes, not namespaces.

    Raises:
        ElfError: the file cannot be read or a symbol table lies outside it.
    """
    raws: set[bytes] = set()
    with ElfImage(path) as image:
        for sec in image.sections:
            if sec.type in (SHT_SYMTAB, SHT_DYNSYM):
                raws.update(nm for nm, _i, _s in _raw_entries(image, sec) if nm.startswith(_CLASS_PREFIXES))
    out: set[str] = set()
    for d in demangle_bytes(sorted(raws)):
        text = d.decode("utf-8", "surrogateescape")
        for word in _CLASS_WORDS:
            if text.startswith(word):
                out.add(text[len(word) :])
    return out


def imported_functions(path: str) -> set[str]:
    """Names (without symbol versions) of the functions a file imports: undefined `.dynsym` functions
    (and untyped undefined symbols, which some linkers leave for functions).

    Raises:
        ElfError: the file cannot be read or `.dynsym` lies outside it.
    """
    out: set[str] = set()
    with ElfImage(path) as image:
        for sec in image.sections:
            if sec.type != SHT_DYNSYM:
                continue
            for nm, info, shndx in _raw_entries(image, sec):
                if shndx == SHN_UNDEF and (info & 0xF) in (0, STT_FUNC, STT_GNU_IFUNC):
                    out.add(nm.split(b"@", 1)[0].decode("utf-8", "surrogateescape"))
    return out
