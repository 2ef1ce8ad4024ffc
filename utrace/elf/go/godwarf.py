"""Go DWARF: functions with typed parameters and their locations, inlined call sites, types, CFA rules.

The Go compiler emits one compile unit per package, named by its import path ("main", "net/http"), and
the linker appends every type to the last "runtime" unit. Walking every DIE of a net/http binary with
pyelftools costs about 1.7 s, so every question here is answered from the units that can hold the
answer: the function's package unit, the caller's units for inlined call sites, the "runtime" units for
types. A function or type DIE is first found by searching the unit's bytes for its name (Go writes
DW_AT_name first) and checking the hit against the unit's DIE boundaries (an attribute skipper, ~12x
faster than pyelftools); only when that fails is a unit walked and indexed, once per `GoDwarf`.

Locations are decoded into a closed model (`Piece`, `RegLoc`, `FrameLoc`, `Unavailable`): the tracer
turns them into register reads or stack reads at a probe pc, and anything this module cannot express
becomes `Unavailable` with the reason instead of an exception. `.debug_frame` is scanned with `struct`
(pyelftools decodes all FDEs up front: 0.5 s on net/http) and only the FDE covering the asked pc is run.
"""

from __future__ import annotations

import bisect
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from utrace.elf.buildid import check_elf_magic, file_error
from utrace.errors import ElfError
from utrace.model import GoField, GoKind, GoType

# Go's own DWARF attributes (cmd/internal/dwarf: DW_AT_go_kind = 0x2900, ...).
DW_AT_GO_KIND = 0x2900
DW_AT_GO_KEY = 0x2901
DW_AT_GO_ELEM = 0x2902
DW_AT_GO_PACKAGE_NAME = 0x2905

# reflect.Kind values carried in DW_AT_go_kind.
_KIND_BOOL = 1
_KIND_ARRAY = 17
_KIND_CHAN = 18
_KIND_FUNC = 19
_KIND_INTERFACE = 20
_KIND_MAP = 21
_KIND_PTR = 22
_KIND_SLICE = 23
_KIND_STRING = 24
_KIND_STRUCT = 25
_KIND_UNSAFE_POINTER = 26

_SCALAR_KINDS: dict[int, GoKind] = {_KIND_BOOL: GoKind.BOOL}
_SCALAR_KINDS.update(dict.fromkeys(range(2, 7), GoKind.INT))
_SCALAR_KINDS.update(dict.fromkeys(range(7, 13), GoKind.UINT))
_SCALAR_KINDS.update({13: GoKind.FLOAT, 14: GoKind.FLOAT, 15: GoKind.COMPLEX, 16: GoKind.COMPLEX})
# One machine word whose pointee this module does not describe (abi-internal.md: "pointer, map, chan, func").
_WORD_KINDS = {_KIND_CHAN, _KIND_FUNC, _KIND_MAP, _KIND_UNSAFE_POINTER}
# DW_AT_encoding fallback for base types without DW_AT_go_kind.
_ENCODINGS: dict[int, GoKind] = {
    2: GoKind.BOOL,
    3: GoKind.COMPLEX,
    4: GoKind.FLOAT,
    5: GoKind.INT,
    6: GoKind.INT,
    7: GoKind.UINT,
    8: GoKind.UINT,
}
# How many pointers deep a parameter's type is described (`*Response` gets its fields, their pointers don't).
_POINTER_DEPTH = 1
_MAX_TYPE_NESTING = 24  # arrays of structs of arrays ...: deeper than any real Go type, shallower than the stack

# ------------------------------------------------------------------------------------------- locations

_X86_64_REGS = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", *(f"r{i}" for i in range(8, 16)), "rip")


def dwarf_reg_name(regno: int, arch: str = "x86_64") -> str | None:
    """The register a DWARF register number names (System V psABI numbering), or None.

    Args:
        regno: DWARF register number.
        arch: "x86_64" (default) or "aarch64".

    Returns:
        "rax".."r15", "rip", "xmm0".."xmm15" on x86-64; "x0".."x30", "sp", "v0".."v31" on arm64.
    """
    if arch == "aarch64":
        if 0 <= regno <= 30:
            return f"x{regno}"
        if regno == 31:
            return "sp"
        if 64 <= regno <= 95:
            return f"v{regno - 64}"
        return None
    if 0 <= regno < len(_X86_64_REGS):
        return _X86_64_REGS[regno]
    if 17 <= regno <= 32:
        return f"xmm{regno - 17}"
    return None


@dataclass(frozen=True, slots=True)
class RegLoc:
    """The piece is the value of a register."""

    regno: int
    name: str


@dataclass(frozen=True, slots=True)
class FrameLoc:
    """The piece is in memory at CFA + offset (Go's frame base is DW_OP_call_frame_cfa); see GoDwarf.cfa."""

    offset: int


@dataclass(frozen=True, slots=True)
class Unavailable:
    """The piece cannot be read: optimized out, no location at this pc, or an expression not modelled."""

    reason: str


Where = RegLoc | FrameLoc | Unavailable


@dataclass(frozen=True, slots=True)
class Piece:
    """One piece of a value.

    Attributes:
        size: bytes. `decode_location` reports 0 for an expression without DW_OP_piece (the whole
            value); GoDwarf replaces that 0 with the type's size.
        where: where the bytes are.
    """

    size: int
    where: Where


Location = tuple[Piece, ...]


def unavailable(reason: str, size: int = 0) -> Location:
    """A location that is one unreadable piece."""
    return (Piece(size, Unavailable(reason)),)


class _Malformed(Exception):
    """Internal: the expression bytes end early or are not DWARF."""


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise _Malformed("truncated LEB128")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos
        if shift > 70:  # a real 64-bit value fits in 10 bytes; garbage should not grow without bound
            raise _Malformed("LEB128 too long")


def _sleb(data: bytes, pos: int) -> tuple[int, int]:
    start = pos
    value, pos = _uleb(data, pos)
    bits = 7 * (pos - start)
    if data[pos - 1] & 0x40:
        value -= 1 << bits
    return value, pos


def _fixed(data: bytes, pos: int, size: int, signed: bool) -> tuple[int, int]:
    if pos + size > len(data):
        raise _Malformed("truncated operand")
    return int.from_bytes(data[pos : pos + size], "little", signed=signed), pos + size


# Operand layouts of ops this decoder only steps over (so later pieces can still be read).
_CONST_OPS: dict[int, tuple[int, bool]] = {
    0x08: (1, False),  # DW_OP_const1u
    0x09: (1, True),
    0x0A: (2, False),
    0x0B: (2, True),
    0x0C: (4, False),
    0x0D: (4, True),
    0x0E: (8, False),
    0x0F: (8, True),
}
_OP_NAMES = {
    0x06: "DW_OP_deref",
    0x12: "DW_OP_dup",
    0x13: "DW_OP_drop",
    0x16: "DW_OP_swap",
    0x1A: "DW_OP_and",
    0x1E: "DW_OP_mul",
    0x94: "DW_OP_deref_size",
    0x96: "DW_OP_nop",
    0x9E: "DW_OP_implicit_value",
    0x9F: "DW_OP_stack_value",
    0xA0: "DW_OP_implicit_pointer",
    0xA3: "DW_OP_entry_value",
    0xF3: "DW_OP_GNU_entry_value",
}


def decode_location(expr: bytes, arch: str = "x86_64") -> Location:
    """Decode a DWARF location expression into pieces. Never raises.

    Modelled: DW_OP_reg0..31 / regx (RegLoc), DW_OP_fbreg N and DW_OP_call_frame_cfa followed by
    constant arithmetic (FrameLoc), DW_OP_piece (one Piece each; an empty piece is Unavailable).
    Anything else (DW_OP_breg*, DW_OP_addr, DW_OP_stack_value, ...) makes its piece Unavailable with
    the reason; bytes that are not a valid expression make the whole value Unavailable.

    Args:
        expr: the expression bytes (DW_FORM_exprloc/block contents or one location list entry).
        arch: register numbering, see dwarf_reg_name.

    Returns:
        The pieces in order; an empty expression is one Unavailable piece ("optimized out").
    """
    try:
        return _decode(bytes(expr), arch)
    except _Malformed as e:
        return unavailable(f"malformed DWARF expression: {e}")
    except (IndexError, ValueError, OverflowError) as e:  # pragma: no cover - defensive, the decoder bounds-checks
        return unavailable(f"malformed DWARF expression: {e}")


def _decode(data: bytes, arch: str) -> Location:
    if not data:
        return unavailable("optimized out (no location)")
    pieces: list[Piece] = []
    # The value of the current piece: a register, or a stack of symbolic values ("cfa", k) / ("const", k).
    reg: RegLoc | None = None
    stack: list[tuple[str, int]] = []
    problem: str | None = None
    pos = 0

    def finish() -> Where:
        if problem is not None:
            return Unavailable(problem)
        if reg is not None:
            if stack:
                return Unavailable("register location followed by more operations")
            return reg
        if not stack:
            return Unavailable("optimized out")
        kind, value = stack[-1]
        if kind == "cfa":
            return FrameLoc(value)
        return Unavailable(f"fixed address {value:#x} (not a parameter slot)")

    def binary(op: Callable[[int, int], int], name: str) -> None:
        nonlocal problem
        if len(stack) < 2:
            problem = problem or f"{name} on a short stack"
            return
        (kb, b), (ka, a) = stack.pop(), stack.pop()
        if ka == "cfa" and kb == "cfa":
            problem = problem or f"{name} of two CFA values"
            stack.append(("const", 0))
        elif ka == "cfa" or kb == "cfa":
            if name == "DW_OP_minus" and kb == "cfa":
                problem = problem or "CFA subtracted from a constant"
            stack.append(("cfa", op(a, b)))
        else:
            stack.append(("const", op(a, b)))

    while pos < len(data):
        op = data[pos]
        pos += 1
        if 0x50 <= op <= 0x6F or op == 0x90:  # DW_OP_reg0..31, DW_OP_regx
            if op == 0x90:
                regno, pos = _uleb(data, pos)
            else:
                regno = op - 0x50
            name = dwarf_reg_name(regno, arch)
            if name is None:
                problem = problem or f"DWARF register {regno} has no {arch} name"
            else:
                reg = RegLoc(regno, name)
        elif op == 0x93:  # DW_OP_piece
            size, pos = _uleb(data, pos)
            pieces.append(Piece(size, finish()))
            reg, stack, problem = None, [], None
        elif op == 0x9D:  # DW_OP_bit_piece
            size, pos = _uleb(data, pos)
            _off, pos = _uleb(data, pos)
            pieces.append(Piece(0, Unavailable(f"bit piece of {size} bits")))
            reg, stack, problem = None, [], None
        elif op == 0x9C:  # DW_OP_call_frame_cfa
            stack.append(("cfa", 0))
        elif op == 0x91:  # DW_OP_fbreg: Go's frame base is the CFA
            off, pos = _sleb(data, pos)
            stack.append(("cfa", off))
        elif 0x30 <= op <= 0x4F:  # DW_OP_lit0..31
            stack.append(("const", op - 0x30))
        elif op in _CONST_OPS:
            size, signed = _CONST_OPS[op]
            value, pos = _fixed(data, pos, size, signed)
            stack.append(("const", value))
        elif op == 0x10:  # DW_OP_constu
            value, pos = _uleb(data, pos)
            stack.append(("const", value))
        elif op == 0x11:  # DW_OP_consts
            value, pos = _sleb(data, pos)
            stack.append(("const", value))
        elif op == 0x03:  # DW_OP_addr
            value, pos = _fixed(data, pos, 8, False)
            stack.append(("const", value))
        elif op == 0x22:  # DW_OP_plus
            binary(lambda a, b: a + b, "DW_OP_plus")
        elif op == 0x1C:  # DW_OP_minus
            binary(lambda a, b: a - b, "DW_OP_minus")
        elif op == 0x23:  # DW_OP_plus_uconst
            value, pos = _uleb(data, pos)
            if stack:
                kind, top = stack.pop()
                stack.append((kind, top + value))
            else:
                problem = problem or "DW_OP_plus_uconst on an empty stack"
        elif 0x70 <= op <= 0x8F or op == 0x92:  # DW_OP_breg0..31, DW_OP_bregx: register-relative address
            if op == 0x92:
                regno, pos = _uleb(data, pos)
            else:
                regno = op - 0x70
            _off, pos = _sleb(data, pos)
            problem = problem or f"address relative to DWARF register {regno} (DW_OP_breg) is not modelled"
            stack.append(("const", 0))
        elif op == 0x94:  # DW_OP_deref_size
            _size, pos = _fixed(data, pos, 1, False)
            problem = problem or "DW_OP_deref_size is not modelled"
        elif op == 0x9E:  # DW_OP_implicit_value
            size, pos = _uleb(data, pos)
            if pos + size > len(data):
                raise _Malformed("truncated DW_OP_implicit_value")
            pos += size
            problem = problem or "constant value (DW_OP_implicit_value)"
            stack.append(("const", 0))
        elif op in (0xA3, 0xF3):  # DW_OP_entry_value: a sub-expression of given length
            size, pos = _uleb(data, pos)
            if pos + size > len(data):
                raise _Malformed("truncated DW_OP_entry_value")
            pos += size
            problem = problem or "DW_OP_entry_value is not modelled"
            stack.append(("const", 0))
        elif op == 0x96:  # DW_OP_nop
            pass
        elif op in (0x06, 0x12, 0x13, 0x16, 0x1A, 0x1E, 0x9F):
            problem = problem or f"{_OP_NAMES[op]} is not modelled"
            if op == 0x9F:
                problem = "computed value (DW_OP_stack_value)"
        else:
            raise _Malformed(f"unsupported opcode {op:#04x} at byte {pos - 1}")
    if reg is not None or stack or problem is not None:
        pieces.append(Piece(0, finish()))
    if not pieces:
        return unavailable("optimized out")
    return tuple(pieces)


def _sized(loc: Location, size: int) -> Location:
    """Give a whole-value location (one piece of size 0) the value's size."""
    if len(loc) == 1 and loc[0].size == 0:
        return (Piece(size, loc[0].where),)
    return loc


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

_REF_FORMS = {"DW_FORM_ref1", "DW_FORM_ref2", "DW_FORM_ref4", "DW_FORM_ref8", "DW_FORM_ref_udata"}
_BLOCK_FORMS = {"DW_FORM_exprloc", "DW_FORM_block", "DW_FORM_block1", "DW_FORM_block2", "DW_FORM_block4"}
_LOCLIST_FORMS = {"DW_FORM_sec_offset", "DW_FORM_data4", "DW_FORM_data8", "DW_FORM_loclistx"}
_TYPE_TAGS = {
    "DW_TAG_base_type",
    "DW_TAG_structure_type",
    "DW_TAG_typedef",
    "DW_TAG_pointer_type",
    "DW_TAG_array_type",
    "DW_TAG_subroutine_type",
    "DW_TAG_unspecified_type",
}


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
        self._types: dict[tuple[int, int], GoType] = {}
        self._names: dict[int, str] = {}
        self._loclists: Any = None
        self._producer: str | None = None
        self._frames: _FrameTable | None = None
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
        try:
            return fn()
        except ElfError:
            raise
        except Exception as e:  # pyelftools raises construct, zlib, struct, DWARF errors ...
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ElfError(f"{self.path}: corrupt DWARF debug info ({msg[:200]})") from None

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
            self._producer = _text(attr.value) if attr is not None else ""
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
            self._info = _stream_bytes(self._dwarf.debug_info_sec.stream)
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
            starts = _die_starts(self._info_bytes(), cu)
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
            if die.tag != "DW_TAG_subprogram" or _name(die) != name:
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
                            and self._ref(conc, "DW_AT_abstract_origin") == die.offset
                        ):
                            found.append((conc.offset, cu_name))
        return sorted(set(found))

    def _function_at(self, offset: int, name: str, cu_name: str, pc: int | None) -> DwarfFunction | None:
        die = self._die(offset)
        low, high = _low_high(die)
        if low is None or high is None:
            return None
        at = low if pc is None else pc
        cfa_frame = _frame_base_is_cfa(die)
        origin = self._ref(die, "DW_AT_abstract_origin")
        abstract_params = self._params_of(self._die(origin)) if origin is not None else []
        concrete: dict[int, Any] = {}
        own: list[Any] = []
        for child in die.iter_children():
            if child.tag != "DW_TAG_formal_parameter":
                continue
            o = self._ref(child, "DW_AT_abstract_origin")
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
        name = _text(decl.attributes["DW_AT_name"].value) if "DW_AT_name" in decl.attributes else "?"
        vp = decl.attributes.get("DW_AT_variable_parameter")
        is_result = bool(vp.value) if vp is not None else False
        toff = self._ref(decl, "DW_AT_type")
        gtype = self._type(toff, _POINTER_DEPTH, 0) if toff is not None else GoType("?", GoKind.STRUCT, 0)
        if holder is None:
            loc = unavailable("no concrete parameter DIE at this call site")
        else:
            loc = self._location(holder, pc)
            if not cfa_frame and any(isinstance(p.where, FrameLoc) for p in loc):
                loc = unavailable("frame base is not DW_OP_call_frame_cfa")
        return DwarfParam(name, gtype, is_result, _sized(loc, gtype.size))

    def _location(self, die: Any, pc: int) -> Location:
        attr = die.attributes.get("DW_AT_location")
        if attr is None:
            return unavailable("no DW_AT_location")
        if attr.form in _BLOCK_FORMS:
            return decode_location(bytes(attr.value), self.arch)
        if attr.form not in _LOCLIST_FORMS:
            return unavailable(f"location in unexpected form {attr.form}")
        entries = self._loclist(attr, die)
        base = _cu_base(die.cu)
        from elftools.dwarf.locationlists import BaseAddressEntry, LocationEntry

        for e in entries:
            if isinstance(e, BaseAddressEntry):
                base = e.base_address
            elif isinstance(e, LocationEntry):
                lo, hi = (
                    (e.begin_offset, e.end_offset) if e.is_absolute else (base + e.begin_offset, base + e.end_offset)
                )
                if lo <= pc < hi:
                    return decode_location(bytes(e.loc_expr), self.arch)
        return unavailable(f"no location list entry covers pc {pc:#x}")

    def _loclist(self, attr: Any, die: Any) -> list[Any]:
        if self._loclists is None:
            self._loclists = self._dwarf.location_lists()
            if self._loclists is None:
                raise ElfError(f"{self.path}: corrupt DWARF debug info (location list but no .debug_loc)")
        if attr.form == "DW_FORM_loclistx":
            from elftools.dwarf.locationlists import LocationParser

            return list(LocationParser(self._loclists).parse_from_attribute(attr, die.cu["version"], die))
        return list(self._loclists.get_location_list_at_offset(attr.value, die))

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
        ranges = self._ranges(die)
        if not ranges:
            return None
        entry_attr = die.attributes.get("DW_AT_entry_pc")
        low, _high = _low_high(die)
        if entry_attr is not None and entry_attr.form == "DW_FORM_addr":
            entry = int(entry_attr.value)
        elif entry_attr is not None:  # DWARF 5 allows a constant: an offset from low_pc / first range
            entry = (low if low is not None else ranges[0][0]) + int(entry_attr.value)
        elif low is not None:
            entry = low
        else:
            entry = ranges[0][0]
        origin = self._ref(die, "DW_AT_abstract_origin")
        assert origin is not None  # indexed only with one
        caller_die = self._die(caller)
        cfa_frame = _frame_base_is_cfa(caller_die)
        concrete: dict[int, Any] = {}
        for child in die.iter_children():
            if child.tag == "DW_TAG_formal_parameter":
                o = self._ref(child, "DW_AT_abstract_origin")
                if o is not None:
                    concrete.setdefault(o, child)
        params = [
            self._param(ap, concrete.get(ap.offset), entry, cfa_frame)
            for ap in self._params_of(self._die(origin))
            if _name(ap) != ".dict"  # a shaped generic body's dictionary (Go 1.27 lists it): no declared argument
        ]
        file_attr = die.attributes.get("DW_AT_call_file")
        line_attr = die.attributes.get("DW_AT_call_line")
        call_file = self._file_name(die.cu, int(file_attr.value)) if file_attr is not None else None
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

    def _ranges(self, die: Any) -> list[tuple[int, int]]:
        low, high = _low_high(die)
        if low is not None and high is not None:
            return [(low, high)] if high > low else []
        attr = die.attributes.get("DW_AT_ranges")
        if attr is None:
            return []
        rl = self._dwarf.range_lists()
        if rl is None:
            raise ElfError(f"{self.path}: corrupt DWARF debug info (ranges but no .debug_ranges)")
        if attr.form == "DW_FORM_rnglistx":
            return []  # DWARF 5 indexed range lists: Go does not emit them (it uses DW_FORM_sec_offset)
        from elftools.dwarf.ranges import BaseAddressEntry, RangeEntry

        base = _cu_base(die.cu)
        out: list[tuple[int, int]] = []
        for e in rl.get_range_list_at_offset(attr.value, cu=die.cu):
            if isinstance(e, BaseAddressEntry):
                base = e.base_address
            elif isinstance(e, RangeEntry):
                lo, hi = (
                    (e.begin_offset, e.end_offset) if e.is_absolute else (base + e.begin_offset, base + e.end_offset)
                )
                if hi > lo:
                    out.append((lo, hi))
        return sorted(out)

    def _file_name(self, cu: Any, index: int) -> str | None:
        """A line-table file name; DWARF 4 counts from 1, DWARF 5 from 0."""
        try:
            lp = self._dwarf.line_program_for_CU(cu)
        except Exception:  # a broken line table should not hide the call site itself
            return None
        if lp is None:
            return None
        files = lp.header.file_entry
        i = index if cu["version"] >= 5 else index - 1
        if not 0 <= i < len(files):
            return None
        fname = _text(files[i].name)
        dirs = lp.header.include_directory
        d = files[i].dir_index
        dir_i = d if cu["version"] >= 5 else d - 1
        if 0 <= dir_i < len(dirs) and not fname.startswith("/"):
            return f"{_text(dirs[dir_i])}/{fname}"
        return fname

    # ---- types

    def type_named(self, name: str) -> GoType | None:
        """The Go type with this DWARF name ("runtime.g", "*net/http.Request"), or None.

        Found by name bytes in the last "runtime" unit, where the linker puts all types (~10-60 ms);
        falls back to indexing the "runtime" units (0.2-0.7 s, once).
        """
        off = self._type_offset(name)
        if off is None:
            return None
        return self._guard(lambda: self._type(off, _POINTER_DEPTH, 0))

    def struct_member_offset(self, type_name: str, member: str) -> int | None:
        """Byte offset of `member` in struct `type_name`, e.g. ("runtime.g", "goid") -> 152 (Go 1.19).

        None when there is no DWARF, no such type or no such member.
        """
        off = self._type_offset(type_name)
        if off is None:
            return None

        def find() -> int | None:
            die = self._strip_typedefs(self._die(off))
            for child in die.iter_children():
                if child.tag == "DW_TAG_member" and _name(child) == member:
                    return _member_offset(child)
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
                if die.tag in _TYPE_TAGS and _name(die) == name:
                    return int(die.offset)
        return None

    def _strip_typedefs(self, die: Any) -> Any:
        for _ in range(16):
            if die.tag != "DW_TAG_typedef":
                return die
            t = self._ref(die, "DW_AT_type")
            if t is None:
                return die
            die = self._die(t)
        return die

    def _type(self, offset: int, ptr_depth: int, nesting: int) -> GoType:
        key = (offset, ptr_depth)
        hit = self._types.get(key)
        if hit is not None:
            return hit
        t = self._build_type(offset, ptr_depth, nesting)
        self._types[key] = t
        return t

    def _build_type(self, offset: int, ptr_depth: int, nesting: int) -> GoType:
        die = self._die(offset)
        name = _name(die) or "?"
        if nesting > _MAX_TYPE_NESTING:
            return GoType(name, GoKind.STRUCT, _byte_size(die))
        attrs = die.attributes
        kind_attr = attrs.get(DW_AT_GO_KIND)
        gk = int(kind_attr.value) if kind_attr is not None else None
        tag = die.tag
        if tag == "DW_TAG_typedef":
            target = self._ref(die, "DW_AT_type")
            if name.startswith(".param") and target is not None:
                # a shaped generic body's type parameter (".param1" = go.shape.float64): its shape is the type
                return self._type(target, ptr_depth, nesting + 1)
            if gk in (None, 0) or target is None:
                if target is None:
                    return GoType(name, GoKind.STRUCT, 0)
                inner = self._type(target, ptr_depth, nesting + 1)
                return _renamed(inner, name)
            under = self._strip_typedefs(self._die(target))
            size = _byte_size(under) or 8
            if gk == _KIND_INTERFACE:
                empty = _name(under) == "runtime.eface" or name in ("interface {}", "any")
                return GoType(name, GoKind.EFACE if empty else GoKind.IFACE, size or 16)
            if gk in _WORD_KINDS:
                return GoType(name, GoKind.POINTER, 8)
            inner = self._type(target, ptr_depth, nesting + 1)
            return _renamed(inner, name)
        size = _byte_size(die)
        if gk in _SCALAR_KINDS:
            return GoType(name, _SCALAR_KINDS[gk], size)
        if tag == "DW_TAG_base_type":
            enc = attrs.get("DW_AT_encoding")
            return GoType(name, _ENCODINGS.get(int(enc.value), GoKind.UINT) if enc is not None else GoKind.UINT, size)
        if gk == _KIND_STRING:
            return GoType(name, GoKind.STRING, size or 16)
        if gk == _KIND_INTERFACE:
            empty = name in ("interface {}", "any", "runtime.eface")
            return GoType(name, GoKind.EFACE if empty else GoKind.IFACE, size or 16)
        if gk == _KIND_SLICE:
            elem_off = self._ref(die, DW_AT_GO_ELEM)
            if elem_off is None:  # older Go: element type is the pointee of the "array" member
                for child in die.iter_children():
                    if child.tag == "DW_TAG_member" and _name(child) == "array":
                        ptr = self._ref(child, "DW_AT_type")
                        elem_off = self._ref(self._die(ptr), "DW_AT_type") if ptr is not None else None
            elem = self._type(elem_off, min(ptr_depth, 0), nesting + 1) if elem_off is not None else None
            return GoType(name, GoKind.SLICE, size or 24, elem=elem)
        if gk in _WORD_KINDS or tag == "DW_TAG_subroutine_type":
            return GoType(name, GoKind.POINTER, size or 8)
        if tag == "DW_TAG_pointer_type":
            target = self._ref(die, "DW_AT_type")
            elem = None
            if target is not None and ptr_depth > 0:
                elem = self._type(target, ptr_depth - 1, nesting + 1)
            return GoType(name, GoKind.POINTER, size or 8, elem=elem)
        if tag == "DW_TAG_array_type":
            length = 0
            for child in die.iter_children():
                if child.tag == "DW_TAG_subrange_type":
                    if "DW_AT_count" in child.attributes:
                        length = int(child.attributes["DW_AT_count"].value)
                    elif "DW_AT_upper_bound" in child.attributes:
                        length = int(child.attributes["DW_AT_upper_bound"].value) + 1
                    break
            target = self._ref(die, "DW_AT_type")
            elem = self._type(target, ptr_depth, nesting + 1) if target is not None else None
            if not size and elem is not None:
                size = elem.size * length
            return GoType(name, GoKind.ARRAY, size, elem=elem, length=length)
        if tag == "DW_TAG_structure_type":
            fields: list[GoField] = []
            for child in die.iter_children():
                if child.tag != "DW_TAG_member":
                    continue
                ft = self._ref(child, "DW_AT_type")
                ftype = self._type(ft, ptr_depth, nesting + 1) if ft is not None else GoType("?", GoKind.STRUCT, 0)
                fields.append(GoField(_name(child) or "?", _member_offset(child) or 0, ftype))
            return GoType(name, GoKind.STRUCT, size, fields=tuple(fields))
        return GoType(name, GoKind.STRUCT, size)

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

    def _frame_table(self) -> _FrameTable | None:
        if self._frames is None:
            d = self._open()
            if d is None or d.debug_frame_sec is None:
                return None
            data = self._guard(lambda: _stream_bytes(d.debug_frame_sec.stream))
            self._frames = _FrameTable(data, self.path)
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
                        out.append((cu.cu_offset, _name(top) or "", cu))
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
                fname = _name(die)
                if "DW_AT_inline" in die.attributes:
                    if fname:
                        idx.abstract.setdefault(fname, []).append(die.offset)
                    continue
                if fname is None:
                    origin = self._ref(die, "DW_AT_abstract_origin")
                    fname = self._name_of(origin) if origin is not None else None
                if fname and ("DW_AT_low_pc" in die.attributes or "DW_AT_ranges" in die.attributes):
                    idx.concrete.setdefault(fname, []).append(die.offset)
                if die.has_children:
                    self._collect_inlined(die, die.offset, idx)
            elif tag in _TYPE_TAGS:
                tname = _name(die)
                if tname:
                    idx.types.setdefault(tname, die.offset)
        return idx

    def _collect_inlined(self, die: Any, caller: int, idx: _CUIndex) -> None:
        stack = [die]
        while stack:
            for child in stack.pop().iter_children():
                if child.tag == "DW_TAG_inlined_subroutine":
                    origin = self._ref(child, "DW_AT_abstract_origin")
                    if origin is not None:
                        idx.inlined.append((origin, child.offset, caller))
                if child.has_children and child.tag in ("DW_TAG_inlined_subroutine", "DW_TAG_lexical_block"):
                    stack.append(child)

    def _die(self, offset: int) -> Any:
        return self._dwarf.get_DIE_from_refaddr(offset)

    def _ref(self, die: Any, attr_name: str | int) -> int | None:
        """A reference attribute as a .debug_info offset (CU-relative forms made absolute)."""
        attr = die.attributes.get(attr_name)
        if attr is None:
            return None
        if attr.form in _REF_FORMS:
            return int(attr.value) + int(die.cu.cu_offset)
        if attr.form == "DW_FORM_ref_addr":
            return int(attr.value)
        return None

    def _name_of(self, offset: int) -> str:
        name = self._names.get(offset)
        if name is None:
            die = self._die(offset)
            name = _name(die)
            if name is None:
                origin = self._ref(die, "DW_AT_abstract_origin")
                name = self._name_of(origin) if origin is not None and origin != offset else ""
            self._names[offset] = name
        return name


# ------------------------------------------------------------------------------------------- helpers


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _name(die: Any) -> str | None:
    attr = die.attributes.get("DW_AT_name")
    return _text(attr.value) if attr is not None else None


def _byte_size(die: Any) -> int:
    attr = die.attributes.get("DW_AT_byte_size")
    return int(attr.value) if attr is not None and isinstance(attr.value, int) else 0


def _renamed(t: GoType, name: str) -> GoType:
    if t.name == name:
        return t
    return GoType(name, t.kind, t.size, t.fields, t.elem, t.length)


def _member_offset(die: Any) -> int | None:
    """DW_AT_data_member_location: a constant, or an expression (DW_OP_plus_uconst N) in old producers."""
    attr = die.attributes.get("DW_AT_data_member_location")
    if attr is None:
        return 0  # DWARF: a member without a location is at offset 0 (unions; Go never omits it)
    if isinstance(attr.value, int):
        return int(attr.value)
    data = bytes(attr.value)
    if data[:1] == b"\x23":  # DW_OP_plus_uconst
        try:
            value, end = _uleb(data, 1)
        except _Malformed:
            return None
        return value if end == len(data) else None
    if data and 0x30 <= data[0] <= 0x4F and len(data) == 1:  # DW_OP_litN
        return data[0] - 0x30
    return None


def _low_high(die: Any) -> tuple[int | None, int | None]:
    low = die.attributes.get("DW_AT_low_pc")
    if low is None:
        return None, None
    lo = int(low.value)
    high = die.attributes.get("DW_AT_high_pc")
    if high is None:
        return lo, None
    # DWARF 4+: high_pc in a constant form is a length.
    hi = int(high.value) if high.form == "DW_FORM_addr" else lo + int(high.value)
    return lo, hi


def _cu_base(cu: Any) -> int:
    top = cu.get_top_DIE()
    low = top.attributes.get("DW_AT_low_pc")
    return int(low.value) if low is not None else 0


def _frame_base_is_cfa(die: Any) -> bool:
    attr = die.attributes.get("DW_AT_frame_base")
    if attr is None:
        return True  # Go always emits it; absent means nothing to contradict the CFA convention
    return attr.form in _BLOCK_FORMS and bytes(attr.value) == b"\x9c"


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


_FIXED_FORM_SIZES = {
    "DW_FORM_addr": 8,
    "DW_FORM_data1": 1,
    "DW_FORM_ref1": 1,
    "DW_FORM_flag": 1,
    "DW_FORM_strx1": 1,
    "DW_FORM_addrx1": 1,
    "DW_FORM_data2": 2,
    "DW_FORM_ref2": 2,
    "DW_FORM_strx2": 2,
    "DW_FORM_addrx2": 2,
    "DW_FORM_strx3": 3,
    "DW_FORM_addrx3": 3,
    "DW_FORM_data4": 4,
    "DW_FORM_ref4": 4,
    "DW_FORM_strx4": 4,
    "DW_FORM_addrx4": 4,
    "DW_FORM_data8": 8,
    "DW_FORM_ref8": 8,
    "DW_FORM_ref_sig8": 8,
    "DW_FORM_data16": 16,
    "DW_FORM_flag_present": 0,
    "DW_FORM_implicit_const": 0,
}
_OFFSET_FORMS = {"DW_FORM_ref_addr", "DW_FORM_sec_offset", "DW_FORM_strp", "DW_FORM_line_strp", "DW_FORM_strp_sup"}
_ULEB_FORMS = {
    "DW_FORM_udata",
    "DW_FORM_sdata",
    "DW_FORM_ref_udata",
    "DW_FORM_strx",
    "DW_FORM_addrx",
    "DW_FORM_loclistx",
    "DW_FORM_rnglistx",
}

_VARIABLE_FORMS = {
    "DW_FORM_string",
    "DW_FORM_exprloc",
    "DW_FORM_block",
    "DW_FORM_block1",
    "DW_FORM_block2",
    "DW_FORM_block4",
}


def _die_starts(data: bytes, cu: Any) -> frozenset[int]:
    """Offsets of every DIE in a unit, by skipping attributes per form (no DIE objects: ~5x faster than a
    pyelftools walk). Empty on a form it cannot size, so callers then find nothing this way."""
    table = cu.get_abbrev_table()
    offset_size = 8 if cu.dwarf_format() == 64 else 4
    addr_size = int(cu["address_size"])
    plans: dict[int, list[Any]] = {}
    starts: set[int] = set()
    pos, end = int(cu.cu_die_offset), int(cu.cu_offset + cu.size)
    try:
        while pos < end:
            starts.add(pos)
            code = data[pos]
            if code < 0x80:
                pos += 1
            else:
                code, pos = _uleb(data, pos)
            if code == 0:
                continue
            plan = plans.get(code)
            if plan is None:
                plan = []
                for _name, form in table.get_abbrev(code).iter_attr_specs():
                    if form == "DW_FORM_addr":
                        plan.append(addr_size)
                    elif form in _FIXED_FORM_SIZES:
                        plan.append(_FIXED_FORM_SIZES[form])
                    elif form in _OFFSET_FORMS:
                        plan.append(offset_size)
                    elif form in _ULEB_FORMS or form in _VARIABLE_FORMS:
                        plan.append(form)
                    else:
                        return frozenset()
                plans[code] = plan
            for step in plan:
                if isinstance(step, int):
                    pos += step
                elif step == "DW_FORM_string":
                    pos = data.index(b"\0", pos, end) + 1
                elif step in ("DW_FORM_exprloc", "DW_FORM_block"):
                    n, pos = _uleb(data, pos)
                    pos += n
                elif step == "DW_FORM_block1":
                    pos += 1 + data[pos]
                elif step == "DW_FORM_block2":
                    pos += 2 + int.from_bytes(data[pos : pos + 2], "little")
                elif step == "DW_FORM_block4":
                    pos += 4 + int.from_bytes(data[pos : pos + 4], "little")
                else:
                    _v, pos = _uleb(data, pos)
    except (KeyError, ValueError, IndexError, _Malformed):
        return frozenset()
    return frozenset(starts)


def _stream_bytes(stream: Any) -> bytes:
    if hasattr(stream, "getvalue"):
        return bytes(stream.getvalue())
    stream.seek(0)
    return bytes(stream.read())


# ------------------------------------------------------------------------------------------- .debug_frame


class _FrameTable:
    """An index of .debug_frame FDEs by pc range; runs only the CFA part of one FDE's program per query."""

    def __init__(self, data: bytes, path: str) -> None:
        self.data = data
        self.path = path
        self.starts: list[int] = []
        self.fdes: list[tuple[int, int, int, int, int]] = []  # (start, end, cie offset, insns, entry end)
        self.cies: dict[int, tuple[int, int, int, int, int] | None] = {}
        self._scan()

    def _scan(self) -> None:
        d, pos, n = self.data, 0, len(self.data)
        found: list[tuple[int, int, int, int, int]] = []
        while pos + 4 <= n:
            (length,) = struct.unpack_from("<I", d, pos)
            if length == 0:  # padding / terminator
                pos += 4
                continue
            if length == 0xFFFFFFFF:
                if pos + 12 > n:
                    break
                (length,) = struct.unpack_from("<Q", d, pos + 4)
                body, idsize, cie_id = pos + 12, 8, 0xFFFFFFFFFFFFFFFF
            else:
                body, idsize, cie_id = pos + 4, 4, 0xFFFFFFFF
            end = body + length
            if end > n or length < idsize:
                raise ElfError(f"{self.path}: corrupt .debug_frame (entry at {pos:#x} runs past the end)")
            ident = int.from_bytes(d[body : body + idsize], "little")
            if ident != cie_id:
                p = body + idsize
                if p + 16 <= end:
                    start, size = struct.unpack_from("<QQ", d, p)
                    found.append((start, start + size, ident, p + 16, end))
            pos = end
        found.sort()
        self.fdes = found
        self.starts = [f[0] for f in found]

    def _cie(self, offset: int) -> tuple[int, int, int, int, int] | None:
        """(code align, data align, return column, initial instructions start, end) of the CIE at offset."""
        if offset in self.cies:
            return self.cies[offset]
        cie = None
        try:
            d = self.data
            (length,) = struct.unpack_from("<I", d, offset)
            if length == 0xFFFFFFFF:
                (length,) = struct.unpack_from("<Q", d, offset + 4)
                p, end = offset + 12 + 8, offset + 12 + length
            else:
                p, end = offset + 4 + 4, offset + 4 + length
            version = d[p]
            p += 1
            aug_end = d.index(b"\0", p)
            aug = d[p:aug_end]
            p = aug_end + 1
            if version >= 4:
                p += 2  # address_size, segment_selector_size
            caf, p = _uleb(d, p)
            daf, p = _sleb(d, p)
            if version == 1:
                ra, p = d[p], p + 1
            else:
                ra, p = _uleb(d, p)
            if aug.startswith(b"z"):
                alen, p = _uleb(d, p)
                p += alen
            elif aug:
                raise _Malformed("unknown CIE augmentation")
            cie = (caf, daf, ra, p, end) if end <= len(d) else None
        except (struct.error, ValueError, IndexError, _Malformed):
            cie = None
        self.cies[offset] = cie
        return cie

    def cfa(self, pc: int) -> tuple[int, int] | None:
        i = bisect.bisect_right(self.starts, pc) - 1
        if i < 0:
            return None
        start, end, cie_off, insns, fde_end = self.fdes[i]
        if not start <= pc < end:
            return None
        cie = self._cie(cie_off)
        if cie is None:
            return None
        caf, daf, _ra, cinsns, cie_end = cie
        state: list[tuple[int, int] | None] = [None]
        saved: list[tuple[int, int] | None] = []
        try:
            if not _run_cfa(self.data, cinsns, cie_end, caf, daf, start, None, state, saved):
                return None
            if not _run_cfa(self.data, insns, fde_end, caf, daf, start, pc, state, saved):
                return None
        except (_Malformed, struct.error, IndexError):
            return None
        return state[0]


def _run_cfa(
    d: bytes,
    pos: int,
    end: int,
    caf: int,
    daf: int,
    loc: int,
    pc: int | None,
    state: list[tuple[int, int] | None],
    saved: list[tuple[int, int] | None],
) -> bool:
    """Run call frame instructions, tracking only the CFA rule in state[0], until the row past `pc`.

    Returns False on an instruction this interpreter does not know (the rule would be a guess).
    """
    while pos < end:
        op = d[pos]
        pos += 1
        hi2, low6 = op & 0xC0, op & 0x3F
        delta = -1
        if hi2 == 0x40:  # DW_CFA_advance_loc
            delta = low6 * caf
        elif hi2 == 0x80:  # DW_CFA_offset reg, uleb
            _v, pos = _uleb(d, pos)
        elif hi2 == 0xC0 or op == 0x00:  # DW_CFA_restore reg (a register rule, not the CFA), DW_CFA_nop
            pass
        elif op == 0x01:  # DW_CFA_set_loc
            (newloc,) = struct.unpack_from("<Q", d, pos)
            pos += 8
            delta = newloc - loc
        elif op in (0x02, 0x03, 0x04):  # DW_CFA_advance_loc1/2/4
            size = {0x02: 1, 0x03: 2, 0x04: 4}[op]
            v, pos = _fixed(d, pos, size, False)
            delta = v * caf
        elif op in (0x05, 0x09, 0x14):  # offset_extended, register, val_offset: uleb, uleb
            _r, pos = _uleb(d, pos)
            _v, pos = _uleb(d, pos)
        elif op in (0x11, 0x15, 0x2F):  # offset_extended_sf, val_offset_sf, GNU_negative_offset_extended
            _r, pos = _uleb(d, pos)
            _s, pos = _sleb(d, pos) if op != 0x2F else _uleb(d, pos)
        elif op in (0x06, 0x07, 0x08, 0x2E):  # restore_extended, undefined, same_value, GNU_args_size
            _r, pos = _uleb(d, pos)
        elif op == 0x0A:  # DW_CFA_remember_state
            saved.append(state[0])
        elif op == 0x0B:  # DW_CFA_restore_state
            state[0] = saved.pop() if saved else state[0]
        elif op == 0x0C:  # DW_CFA_def_cfa reg, uleb offset
            reg, pos = _uleb(d, pos)
            off, pos = _uleb(d, pos)
            state[0] = (reg, off)
        elif op == 0x12:  # DW_CFA_def_cfa_sf reg, sleb factored offset
            reg, pos = _uleb(d, pos)
            soff, pos = _sleb(d, pos)
            state[0] = (reg, soff * daf)
        elif op == 0x0D:  # DW_CFA_def_cfa_register
            reg, pos = _uleb(d, pos)
            state[0] = (reg, state[0][1] if state[0] else 0)
        elif op == 0x0E:  # DW_CFA_def_cfa_offset
            off, pos = _uleb(d, pos)
            if state[0] is not None:
                state[0] = (state[0][0], off)
        elif op == 0x13:  # DW_CFA_def_cfa_offset_sf
            soff, pos = _sleb(d, pos)
            if state[0] is not None:
                state[0] = (state[0][0], soff * daf)
        elif op == 0x0F:  # DW_CFA_def_cfa_expression
            size, pos = _uleb(d, pos)
            pos += size
            state[0] = None
        elif op in (0x10, 0x16):  # DW_CFA_expression, DW_CFA_val_expression: reg, block
            _r, pos = _uleb(d, pos)
            size, pos = _uleb(d, pos)
            pos += size
        else:
            return False
        if delta >= 0:
            if pc is not None and loc + delta > pc:
                return True
            loc += delta
    return True
