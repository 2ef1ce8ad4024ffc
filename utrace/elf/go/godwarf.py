"""Go DWARF: functions with typed parameters and their locations, inlined call sites, types, CFA rules.

The Go compiler emits one compile unit per package, named by its import path ("main", "net/http"), and
the linker appends every type to the last "runtime" unit. Walking every DIE of a net/http binary with
pyelftools costs about 1.7 s, so every question here is answered from the units that can hold the
answer: the function's package unit, the caller's units for inlined call sites, the "runtime" units for
types. A function or type DIE is first found by searching the unit's bytes for its name (Go writes
DW_AT_name first) and checking the hit against the unit's DIE boundaries (an attribute skipper, ~12x
faster than pyelftools); only when that fails is a unit walked and indexed, once per `GoDwarf`.

Locations are decoded by `utrace.elf.dwarf` into a closed model (`Piece`, `RegLoc`, `FrameLoc`,
`Unavailable`): the tracer turns them into register reads or stack reads at a probe pc, and anything it
cannot express becomes `Unavailable` with the reason instead of an exception. CFA rules come from
`dwarf.FrameTable` (only the FDE covering the asked pc is run); types from `dwarftypes`.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from utrace.elf.buildid import check_elf_magic, file_error
from utrace.elf.dwarf import (
    DieLocations,
    FrameLoc,
    FrameTable,
    Location,
    die_name,
    die_ranges,
    die_ref,
    die_starts,
    dwarf_reg_name,
    frame_base_is_cfa,
    guard,
    line_file_name,
    low_high,
    member_offset,
    sized,
    stream_bytes,
    text,
    unavailable,
)
from utrace.elf.go.dwarftypes import POINTER_DEPTH, TYPE_TAGS, GoTypeReader
from utrace.errors import ElfError
from utrace.model import GoKind, GoType

# ------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class DwarfParam:
    """A formal parameter or result.

    Attributes:
        name: as in DWARF; unnamed results are "~r0", "~r1" (Go writes them so; callers decide display).
        type: the Go type.
        is_result: DW_AT_variable_parameter (Go marks results with it).
        location: where the value is at the pc it was evaluated for (a function's low_pc, an inlined
            instance's entry pc, or the pc passed to GoDwarf.function).
    """

    name: str
    type: GoType
    is_result: bool
    location: Location


@dataclass(frozen=True, slots=True)
class DwarfFunction:
    """An out-of-line function (DW_TAG_subprogram with code).

    Attributes:
        name: DWARF name, e.g. "main.(*T).M".
        low_pc: first instruction (link-time address: add the load bias for PIE).
        high_pc: one past the last instruction.
        cu: compile unit (package import path).
        params: receiver, arguments, then results, in DWARF order.
        pc: the pc the parameter locations were evaluated at.
    """

    name: str
    low_pc: int
    high_pc: int
    cu: str
    params: tuple[DwarfParam, ...]
    pc: int


@dataclass(frozen=True, slots=True)
class InlinedInstance:
    """One place where a function was inlined (DW_TAG_inlined_subroutine).

    Attributes:
        name: the inlined function ("net/http.Get").
        caller: the out-of-line function that contains the inlined code ("main.main"), or "" if unknown.
        cu: compile unit that holds it.
        entry_pc: DW_AT_entry_pc, else DW_AT_low_pc, else the lowest range start.
        ranges: [low, high) pc ranges of the inlined code, sorted.
        call_file: source file of the call, when the line table names it.
        call_line: source line of the call, 0 if unknown.
        params: from the abstract origin (names, types, order) with locations at entry_pc.
    """

    name: str
    caller: str
    cu: str
    entry_pc: int
    ranges: tuple[tuple[int, int], ...]
    call_file: str | None
    call_line: int
    params: tuple[DwarfParam, ...]


def package_of(func_name: str) -> str:
    """The import path of the package that defines a Go function, from its symbol name.

    "net/http.(*Client).Do" -> "net/http"; "main.Greet" -> "main"; "main.Map[...]" -> "main".
    """
    head = re.split(r"[\[(]", func_name, maxsplit=1)[0]
    slash = head.rfind("/")
    dot = head.find(".", slash + 1)
    return head[:dot] if dot > 0 else head


@dataclass(slots=True)
class _CUIndex:
    """What one walk of a compile unit found."""

    name: str
    offset: int
    concrete: dict[str, list[int]]  # function name -> offsets of subprograms with code
    abstract: dict[str, list[int]]  # function name -> offsets of abstract (DW_AT_inline) subprograms
    inlined: list[tuple[int, int, int]]  # (abstract origin offset, inlined_subroutine offset, caller offset)
    types: dict[str, int]  # top-level type DIE name -> offset (the first one of that name)


_T = TypeVar("_T")


class GoDwarf:
    """The DWARF of one Go binary, opened on first use. Thread-unsafe; close() or use as a context manager.

    Addresses are link-time virtual addresses as DWARF states them (PIE: add the load bias).
    A binary without DWARF (built with -ldflags=-w or stripped) is not an error: `has_dwarf` is False,
    lookups return None or []. Corrupt DWARF raises ElfError with one line naming the file.
    """

    def __init__(self, path: str, arch: str = "x86_64") -> None:
        self.path = path
        self.arch = arch
        self._opened = False
        self._error: ElfError | None = None
        self._file: Any = None
        self._dwarf: Any = None
        self._cus: list[tuple[int, str, Any]] | None = None  # (offset, name, CompileUnit)
        self._indexes: dict[int, _CUIndex] = {}
        self._go_types = GoTypeReader(self._die)
        self._names: dict[int, str] = {}
        self._locations: DieLocations | None = None
        self._producer: str | None = None
        self._frames: FrameTable | None = None
        self._info: bytes | None = None
        self._die_starts: dict[int, frozenset[int]] = {}
        self._type_offsets: dict[str, int | None] = {}

    # ---- lifecycle

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._dwarf = None

    def __enter__(self) -> GoDwarf:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> Any:
        if self._error is not None:
            raise self._error
        if self._opened:
            return self._dwarf
        self._opened = True
        from elftools.elf.elffile import ELFFile  # imported here: pyelftools costs ~50 ms to import

        try:
            from utrace.process.procfs import open_file

            self._file = open_file(self.path)
        except OSError as e:
            self._error = file_error(self.path, e)
            raise self._error from None

        def load() -> Any:
            check_elf_magic(self._file.read(64), self.path)
            self._file.seek(0)
            elf = ELFFile(self._file)
            if elf.get_section_by_name(".debug_info") is None and elf.get_section_by_name(".zdebug_info") is None:
                return None
            return elf.get_dwarf_info()

        try:
            self._dwarf = self._guard(load)
        except ElfError as e:
            self._error = e
            self.close()
            raise
        return self._dwarf

    def _guard(self, fn: Callable[[], _T]) -> _T:
        """Run a pyelftools call; whatever it raises on a corrupt file becomes one ElfError."""
        return guard(self.path, fn)

    # ---- producer

    @property
    def has_dwarf(self) -> bool:
        """True when the binary has a .debug_info section."""
        return self._open() is not None

    @property
    def producer(self) -> str | None:
        """DW_AT_producer of the first compile unit, e.g. "Go cmd/compile go1.19.8; regabi"."""
        units = self._units()
        if self._producer is None and units:
            top = self._guard(lambda: units[0][2].get_top_DIE())
            attr = top.attributes.get("DW_AT_producer")
            self._producer = text(attr.value) if attr is not None else ""
        return self._producer or None

    @property
    def regabi(self) -> bool | None:
        """True for the register ABI ("; regabi" in the producer), False for ABI0, None without DWARF."""
        p = self.producer
        if p is None:
            return None
        return "regabi" in p

    @property
    def go_version(self) -> str | None:
        """The Go version named in the producer ("go1.19.8"), or None."""
        m = re.search(r"\bgo\d+(?:\.\d+)*\S*", self.producer or "")
        return m.group(0).rstrip(";") if m else None

    def compile_units(self) -> list[str]:
        """Compile unit names in file order (a package may have several units, e.g. "runtime")."""
        return [name for _off, name, _cu in self._units()]

    # ---- functions

    def function(self, name: str, pc: int | None = None) -> DwarfFunction | None:
        """The out-of-line function `name` with its parameters, or None (no DWARF, no such function, or
        only inlined copies: see inlined_instances).

        The DIE is first looked for by its name bytes within the units of the function's package
        (package_of(name)): a few ms. Failing that, those units are walked and indexed (0.1-0.7 s for
        net/http); when no unit has the package's name, all units are (about 1.7 s on a net/http binary).

        Args:
            name: DWARF name, e.g. "main.Greet", "main.(*T).M", "net/http.(*Client).Do".
            pc: where to evaluate parameter locations; default the function's low_pc (the entry).
        """
        pkg = package_of(name)
        units = [u for u in self._units() if u[1] == pkg]
        for off, cu in self._guard(lambda: self._find_function_by_name_bytes(name, units)):
            fn = self._guard(lambda off=off, cu=cu: self._function_at(off, name, cu, pc))  # type: ignore[misc]
            if fn is not None:
                return fn
        for idx in self._indexes_for([pkg], fallback_all=True):
            for off in idx.concrete.get(name, ()):
                fn = self._guard(lambda off=off, idx=idx: self._function_at(off, name, idx.name, pc))  # type: ignore[misc]
                if fn is not None:
                    return fn
        return None

    def _bare_die(self, off: int, units: list[tuple[int, str, Any]]) -> Any | None:
        """Parse the DIE at a guessed offset without pyelftools' per-unit cache (a wrong guess must leave
        no trace there); None when the guess is not a DIE of one of `units`."""
        from elftools.dwarf.die import DIE

        for start, _, cu in units:
            if cu.cu_die_offset <= off < start + cu.size:
                try:
                    return DIE(cu=cu, stream=self._dwarf.debug_info_sec.stream, offset=off)
                except Exception:
                    return None
        return None

    def _info_bytes(self) -> bytes:
        if self._info is None:
            self._info = stream_bytes(self._dwarf.debug_info_sec.stream)
        return self._info

    def _candidates(self, needle: bytes, units: list[tuple[int, str, Any]]) -> Iterator[Any]:
        """DIEs whose first attribute is `needle` (Go writes DW_AT_name or DW_AT_abstract_origin first,
        right after a one- or two-byte abbreviation code), searched within `units`' bytes."""
        data = self._info_bytes()
        for start, _n, cu in units:
            end = start + cu.size
            pos = data.find(needle, start, end)
            tries = 0
            while pos >= 0 and tries < 256:
                tries += 1
                for back in (1, 2):
                    # The needle may sit inside a longer string ("bool" in "*bool"); only an offset where the
                    # unit's DIE sequence really has a DIE is a candidate.
                    if not self._is_die_start(cu, pos - back):
                        continue
                    die = self._bare_die(pos - back, [(start, _n, cu)])
                    if die is not None:
                        yield die
                pos = data.find(needle, pos + 1, end)

    def _is_die_start(self, cu: Any, off: int) -> bool:
        starts = self._die_starts.get(cu.cu_offset)
        if starts is None:
            starts = die_starts(self._info_bytes(), cu)
            self._die_starts[cu.cu_offset] = starts
        return off in starts

    def _find_function_by_name_bytes(self, name: str, units: list[tuple[int, str, Any]]) -> list[tuple[int, str]]:
        """Offsets (and unit names) of out-of-line subprograms named `name`, found without a unit walk.

        A function that is also inlined somewhere has an abstract DIE with the name and a nameless
        concrete DIE pointing at it (DW_AT_abstract_origin, CU-relative ref4 or ref_addr); both are found
        by their bytes. An empty answer only means "not found this way": the caller then walks.
        """
        if self._open() is None or not units:
            return []
        found: list[tuple[int, str]] = []
        names = {id(cu): n for _s, n, cu in units}
        for die in self._candidates(name.encode() + b"\0", units):
            if die.tag != "DW_TAG_subprogram" or die_name(die) != name:
                continue
            cu_name = names.get(id(die.cu), "")
            if "DW_AT_low_pc" in die.attributes:
                found.append((die.offset, cu_name))
            elif "DW_AT_inline" in die.attributes:
                unit = [u for u in units if u[2] is die.cu]
                rel = die.offset - die.cu.cu_offset
                for needle in {struct.pack("<I", rel), struct.pack("<I", die.offset)}:
                    for conc in self._candidates(needle, unit):
                        if (
                            conc.tag == "DW_TAG_subprogram"
                            and "DW_AT_low_pc" in conc.attributes
                            and die_ref(conc, "DW_AT_abstract_origin") == die.offset
                        ):
                            found.append((conc.offset, cu_name))
        return sorted(set(found))

    def _function_at(self, offset: int, name: str, cu_name: str, pc: int | None) -> DwarfFunction | None:
        die = self._die(offset)
        low, high = low_high(die)
        if low is None or high is None:
            return None
        at = low if pc is None else pc
        cfa_frame = frame_base_is_cfa(die)
        origin = die_ref(die, "DW_AT_abstract_origin")
        abstract_params = self._params_of(self._die(origin)) if origin is not None else []
        concrete: dict[int, Any] = {}
        own: list[Any] = []
        for child in die.iter_children():
            if child.tag != "DW_TAG_formal_parameter":
                continue
            o = die_ref(child, "DW_AT_abstract_origin")
            if o is not None:
                concrete[o] = child
            else:
                own.append(child)
        params: list[DwarfParam] = []
        if abstract_params:
            for ap in abstract_params:
                params.append(self._param(ap, concrete.get(ap.offset), at, cfa_frame))
        for child in own:
            params.append(self._param(child, child, at, cfa_frame))
        return DwarfFunction(name, low, high, cu_name, _dedupe(params), at)

    def _params_of(self, die: Any) -> list[Any]:
        return [c for c in die.iter_children() if c.tag == "DW_TAG_formal_parameter"]

    def _param(self, decl: Any, holder: Any | None, pc: int, cfa_frame: bool) -> DwarfParam:
        """A parameter: name, type and result flag from `decl`, location from `holder` (same DIE when
        out of line, the concrete child of an inlined_subroutine otherwise)."""
        name = text(decl.attributes["DW_AT_name"].value) if "DW_AT_name" in decl.attributes else "?"
        vp = decl.attributes.get("DW_AT_variable_parameter")
        is_result = bool(vp.value) if vp is not None else False
        toff = die_ref(decl, "DW_AT_type")
        gtype = self._type(toff, POINTER_DEPTH, 0) if toff is not None else GoType("?", GoKind.STRUCT, 0)
        if holder is None:
            loc = unavailable("no concrete parameter DIE at this call site")
        else:
            loc = self._location(holder, pc)
            if not cfa_frame and any(isinstance(p.where, FrameLoc) for p in loc):
                loc = unavailable("frame base is not DW_OP_call_frame_cfa")
        return DwarfParam(name, gtype, is_result, sized(loc, gtype.size))

    def _location(self, die: Any, pc: int) -> Location:
        if self._locations is None:
            self._locations = DieLocations(self._dwarf, self.path, self.arch)
        return self._locations.at(die, pc)

    # ---- inlined call sites

    def inlined_instances(self, name: str, cu_names: list[str] | None = None) -> list[InlinedInstance]:
        """Every place where `name` was inlined, with parameter locations at each entry pc.

        Go puts the abstract DIE of an inlined function into the unit of the caller, so pass the
        callers' packages (e.g. ["main"], known from pclntab's inline tree or the user) to walk only
        those units. None walks every unit: about 1.7 s for net/http's 100k DIEs, cached afterwards.

        Args:
            name: DWARF name of the inlined function, e.g. "net/http.Get".
            cu_names: compile unit names (package import paths) to search, or None for all.
        """
        found: list[InlinedInstance] = []
        for idx in self._indexes_for(cu_names, fallback_all=False):
            for origin, off, caller in idx.inlined:
                if self._guard(lambda origin=origin: self._name_of(origin)) != name:  # type: ignore[misc]
                    continue
                inst = self._guard(lambda off=off, caller=caller, idx=idx: self._inlined_at(off, caller, idx, name))  # type: ignore[misc]
                if inst is not None:
                    found.append(inst)
        found.sort(key=lambda i: i.entry_pc)
        return found

    def _inlined_at(self, offset: int, caller: int, idx: _CUIndex, name: str) -> InlinedInstance | None:
        die = self._die(offset)
        ranges = die_ranges(self._dwarf, die, self.path)
        if not ranges:
            return None
        entry_attr = die.attributes.get("DW_AT_entry_pc")
        low, _high = low_high(die)
        if entry_attr is not None and entry_attr.form == "DW_FORM_addr":
            entry = int(entry_attr.value)
        elif entry_attr is not None:  # DWARF 5 allows a constant: an offset from low_pc / first range
            entry = (low if low is not None else ranges[0][0]) + int(entry_attr.value)
        elif low is not None:
            entry = low
        else:
            entry = ranges[0][0]
        origin = die_ref(die, "DW_AT_abstract_origin")
        assert origin is not None  # indexed only with one
        caller_die = self._die(caller)
        cfa_frame = frame_base_is_cfa(caller_die)
        concrete: dict[int, Any] = {}
        for child in die.iter_children():
            if child.tag == "DW_TAG_formal_parameter":
                o = die_ref(child, "DW_AT_abstract_origin")
                if o is not None:
                    concrete.setdefault(o, child)
        params = [
            self._param(ap, concrete.get(ap.offset), entry, cfa_frame)
            for ap in self._params_of(self._die(origin))
            if die_name(ap) != ".dict"  # a shaped generic body's dictionary (Go 1.27 lists it): no declared argument
        ]
        file_attr = die.attributes.get("DW_AT_call_file")
        line_attr = die.attributes.get("DW_AT_call_line")
        call_file = line_file_name(self._dwarf, die.cu, int(file_attr.value)) if file_attr is not None else None
        return InlinedInstance(
            name=name,
            caller=self._name_of(caller),
            cu=idx.name,
            entry_pc=entry,
            ranges=tuple(ranges),
            call_file=call_file,
            call_line=int(line_attr.value) if line_attr is not None else 0,
            params=_dedupe(params),
        )

    # ---- types

    def type_named(self, name: str) -> GoType | None:
        """The Go type with this DWARF name ("runtime.g", "*net/http.Request"), or None.

        Found by name bytes in the last "runtime" unit, where the linker puts all types (~10-60 ms);
        falls back to indexing the "runtime" units (0.2-0.7 s, once).
        """
        off = self._type_offset(name)
        if off is None:
            return None
        return self._guard(lambda: self._type(off, POINTER_DEPTH, 0))

    def struct_member_offset(self, type_name: str, member: str) -> int | None:
        """Byte offset of `member` in struct `type_name`, e.g. ("runtime.g", "goid") -> 152 (Go 1.19).

        None when there is no DWARF, no such type or no such member.
        """
        off = self._type_offset(type_name)
        if off is None:
            return None

        def find() -> int | None:
            die = self._go_types.strip_typedefs(self._die(off))
            for child in die.iter_children():
                if child.tag == "DW_TAG_member" and die_name(child) == member:
                    return member_offset(child)
            return None

        return self._guard(find)

    def _type_offset(self, name: str) -> int | None:
        if name in self._type_offsets:
            return self._type_offsets[name]
        off = self._guard(lambda: self._find_type_by_name_bytes(name))
        if off is None:
            # Types live in a "runtime" unit (the linker appends them to the last one): index those.
            for idx in self._indexes_for(["runtime"], fallback_all=False, reverse=True):
                if name in idx.types:
                    off = idx.types[name]
                    break
        self._type_offsets[name] = off
        return off

    def _find_type_by_name_bytes(self, name: str) -> int | None:
        """Find a type DIE by searching .debug_info for its name string instead of walking DIEs.

        Go writes DW_AT_name (DW_FORM_string) as the first attribute, right after a one- or two-byte
        abbreviation code, so a type DIE starts 1 or 2 bytes before its name. Each candidate is parsed
        and kept only if it really is a type DIE of that name: a bytes.find over 3 MB costs ~1 ms,
        indexing the types unit with pyelftools 0.2-0.7 s.
        """
        units = self._units()
        if self._open() is None or not units:
            return None
        # The linker appends all types to the last "runtime" unit: look there first.
        runtime = [u for u in units if u[1] == "runtime"][-1:]
        for group in (runtime, units):
            for die in self._candidates(name.encode() + b"\0", group):
                if die.tag in TYPE_TAGS and die_name(die) == name:
                    return int(die.offset)
        return None

    def _type(self, offset: int, ptr_depth: int, nesting: int) -> GoType:
        return self._go_types.type(offset, ptr_depth, nesting)

    # ---- CFA

    def cfa(self, pc: int) -> tuple[str, int] | None:
        """The canonical frame address rule at `pc` from .debug_frame: (register, offset), e.g. ("rsp", 8).

        None when there is no DWARF, no FDE covers pc, or the rule is an expression.
        """
        table = self._frame_table()
        if table is None:
            return None
        rule = table.cfa(pc)
        if rule is None:
            return None
        reg = dwarf_reg_name(rule[0], self.arch)
        return (reg, rule[1]) if reg is not None else None

    def frame_address(self, offset: int, pc: int) -> tuple[str, int] | None:
        """Turn FrameLoc(offset) at `pc` into register + offset, e.g. FrameLoc(-400) -> ("rsp", 152)."""
        rule = self.cfa(pc)
        if rule is None:
            return None
        return (rule[0], rule[1] + offset)

    def _frame_table(self) -> FrameTable | None:
        if self._frames is None:
            d = self._open()
            if d is None or d.debug_frame_sec is None:
                return None
            data = self._guard(lambda: stream_bytes(d.debug_frame_sec.stream))
            self._frames = FrameTable(data, self.path)
        return self._frames

    # ---- DIE plumbing

    def _units(self) -> list[tuple[int, str, Any]]:
        if self._cus is None:
            d = self._open()
            if d is None:
                self._cus = []
            else:

                def scan() -> list[tuple[int, str, Any]]:
                    out = []
                    for cu in d.iter_CUs():
                        top = cu.get_top_DIE()
                        out.append((cu.cu_offset, die_name(top) or "", cu))
                    return out

                self._cus = self._guard(scan)
        return self._cus

    def _indexes_for(self, names: list[str] | None, fallback_all: bool, reverse: bool = False) -> Iterator[_CUIndex]:
        units = self._units()
        chosen = units if names is None else [u for u in units if u[1] in names]
        if not chosen and fallback_all:
            chosen = units
        if reverse:
            chosen = list(reversed(chosen))
        for off, name, cu in chosen:
            idx = self._indexes.get(off)
            if idx is None:
                idx = self._guard(lambda cu=cu, name=name, off=off: self._index(cu, name, off))  # type: ignore[misc]
                self._indexes[off] = idx
            yield idx

    def _index(self, cu: Any, name: str, offset: int) -> _CUIndex:
        idx = _CUIndex(name, offset, {}, {}, [], {})
        top = cu.get_top_DIE()
        for die in top.iter_children():
            tag = die.tag
            if tag == "DW_TAG_subprogram":
                fname = die_name(die)
                if "DW_AT_inline" in die.attributes:
                    if fname:
                        idx.abstract.setdefault(fname, []).append(die.offset)
                    continue
                if fname is None:
                    origin = die_ref(die, "DW_AT_abstract_origin")
                    fname = self._name_of(origin) if origin is not None else None
                if fname and ("DW_AT_low_pc" in die.attributes or "DW_AT_ranges" in die.attributes):
                    idx.concrete.setdefault(fname, []).append(die.offset)
                if die.has_children:
                    self._collect_inlined(die, die.offset, idx)
            elif tag in TYPE_TAGS:
                tname = die_name(die)
                if tname:
                    idx.types.setdefault(tname, die.offset)
        return idx

    def _collect_inlined(self, die: Any, caller: int, idx: _CUIndex) -> None:
        stack = [die]
        while stack:
            for child in stack.pop().iter_children():
                if child.tag == "DW_TAG_inlined_subroutine":
                    origin = die_ref(child, "DW_AT_abstract_origin")
                    if origin is not None:
                        idx.inlined.append((origin, child.offset, caller))
                if child.has_children and child.tag in ("DW_TAG_inlined_subroutine", "DW_TAG_lexical_block"):
                    stack.append(child)

    def _die(self, offset: int) -> Any:
        return self._dwarf.get_DIE_from_refaddr(offset)

    def _name_of(self, offset: int) -> str:
        name = self._names.get(offset)
        if name is None:
            die = self._die(offset)
            name = die_name(die)
            if name is None:
                origin = die_ref(die, "DW_AT_abstract_origin")
                name = self._name_of(origin) if origin is not None and origin != offset else ""
            self._names[offset] = name
        return name


# ------------------------------------------------------------------------------------------- helpers


def _dedupe(params: list[DwarfParam]) -> tuple[DwarfParam, ...]:
    """Drop repeated parameter DIEs (Go 1.18 emits some twice: golang/go#51725)."""
    seen: set[tuple[str, bool, str]] = set()
    out: list[DwarfParam] = []
    for p in params:
        key = (p.name, p.is_result, p.type.name)
        if key in seen and p.name not in ("_", "?"):
            continue
        seen.add(key)
        out.append(p)
    return tuple(out)
