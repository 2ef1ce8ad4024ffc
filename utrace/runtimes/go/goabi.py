"""Where Go passes arguments and results: the register ABI (ABIInternal) and the stack ABI (ABI0).

A faithful implementation of "Function call argument and result passing" in Go's
`src/cmd/compile/abi-internal.md`:

- each value goes entirely in registers or entirely on the stack; when a value does not fit, the
  register counters are reset to where they were, so later smaller values back-fill free registers;
- strings are (ptr, len), slices (ptr, len, cap), interfaces (type or itab, data); structs are their
  fields in order; `[0]T` is nothing, `[1]T` its element, `[N>1]T` always goes on the stack;
- after the arguments the stack offset is pointer-aligned and the register counters start again
  from zero for the results;
- the stack ABI is the same algorithm with zero registers.

Offsets are relative to the stack pointer at the function's entry (where `[rsp]` is the return
address), which is also the stack pointer at each of its `ret` instructions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from utrace.elf.match import bracket_groups
from utrace.model import GoKind, GoType

AMD64_INT_REGS = ("rax", "rbx", "rcx", "rdi", "rsi", "r8", "r9", "r10", "r11")
AMD64_FLOAT_REGS = tuple(f"xmm{i}" for i in range(15))
PTR = 8


@dataclass(frozen=True, slots=True)
class Abi:
    """Register sets of one calling convention (empty for the stack ABI)."""

    name: str
    int_regs: tuple[str, ...]
    float_regs: tuple[str, ...]
    goroutine_reg: str | None  # the register holding `g` (R14 on amd64), None when g lives in TLS
    stack_base: int = PTR  # first stack argument at sp + this (the return address is below it)


REGABI_AMD64 = Abi("register ABI (ABIInternal)", AMD64_INT_REGS, AMD64_FLOAT_REGS, "r14")
STACK_AMD64 = Abi("stack ABI (ABI0)", (), (), None)


class UnsupportedArch(ValueError):
    """No ABI tables for this architecture."""


def abi_for(arch: str, regabi: bool) -> Abi:
    """The ABI of a Go function on `arch` ("amd64").

    Raises:
        UnsupportedArch: for architectures the tables do not cover.
    """
    if arch != "amd64":
        raise UnsupportedArch(f"no Go ABI tables for {arch} (utrace covers amd64)")
    return REGABI_AMD64 if regabi else STACK_AMD64


@dataclass(frozen=True, slots=True)
class Part:
    """One machine word (or float) of a value.

    Attributes:
        path: where in the value ("" for the value itself, ".len", ".Base", "[0]", ".data").
        type: the scalar Go type of this part (for strings: the pointer or the length).
        offset: byte offset of the part in the value's memory layout.
        size: bytes.
        is_float: passed in a floating-point register when the value is in registers.
        reg: the register holding it, or None when the value is on the stack.
        stack: offset from the entry stack pointer when the value is on the stack, else None.
        missing: why the part cannot be read at the probe ("" when it can): a DWARF location list
            with no entry at that pc, an optimized-out piece.
    """

    path: str
    type: GoType
    offset: int
    size: int
    is_float: bool
    reg: str | None = None
    stack: int | None = None
    missing: str = ""


@dataclass(frozen=True, slots=True)
class Assigned:
    """One argument or result and where each of its parts is."""

    name: str
    type: GoType
    is_result: bool
    parts: tuple[Part, ...]
    in_registers: bool
    stack: int | None  # offset of the whole value from the entry stack pointer, when on the stack


_INT = GoType("int", GoKind.INT, 8)
_UINTPTR = GoType("uintptr", GoKind.UINT, 8)
_BYTEPTR = GoType("*uint8", GoKind.POINTER, 8)
_UNSAFE = GoType("unsafe.Pointer", GoKind.POINTER, 8)


# Bounds on walking a type: each node of the type tree is visited once per walk, and a damaged DWARF can
# describe a struct holding itself by value (a tree of 2**24 nodes), so every walk counts its steps.
MAX_TYPE_NODES = 4096  # nodes one walk visits at most (a real argument's type has a few dozen)
MAX_REGISTER_PARTS = 64  # more parts than any ABI has registers: such a value goes on the stack
MAX_VALUE_SIZE = 1 << 30  # cmd/compile refuses stack frames over 1 GB: a larger argument is a damaged type


class _Budget:
    def __init__(self, nodes: int = MAX_TYPE_NODES) -> None:
        self.left = nodes

    def step(self) -> bool:
        self.left -= 1
        return self.left >= 0


def alignment(t: GoType, budget: _Budget | None = None) -> int:
    """Go's alignment of a type on a 64-bit target."""
    b = budget or _Budget()
    if not b.step():
        return PTR
    if t.kind in (GoKind.STRING, GoKind.SLICE, GoKind.IFACE, GoKind.EFACE, GoKind.POINTER):
        return PTR
    if t.kind is GoKind.COMPLEX:
        return max(1, min(PTR, t.size // 2))
    if t.kind is GoKind.STRUCT:
        return max((alignment(f.type, b) for f in t.fields), default=1)
    if t.kind is GoKind.ARRAY:
        return alignment(t.elem, b) if t.elem is not None else 1
    return max(1, min(PTR, t.size))


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def parts(t: GoType, path: str = "", base: int = 0) -> list[Part] | None:
    """The scalar parts of a value in register-assignment order, or None if `t` can never go in registers
    (including values with more parts than any register set holds)."""
    out: list[Part] = []
    return out if _reg_parts(t, path, base, out, _Budget()) else None


def _reg_parts(t: GoType, path: str, base: int, out: list[Part], budget: _Budget) -> bool:
    if not budget.step() or len(out) > MAX_REGISTER_PARTS:
        return False
    k = t.kind
    if k in (GoKind.BOOL, GoKind.INT, GoKind.UINT, GoKind.POINTER):
        if t.size > PTR:
            return False
        out.append(Part(path, t, base, t.size, False))
    elif k is GoKind.FLOAT:
        out.append(Part(path, t, base, t.size, True))
    elif k is GoKind.COMPLEX:
        half = t.size // 2
        ft = GoType(f"float{half * 8}", GoKind.FLOAT, half)
        out += [Part(path + ".real", ft, base, half, True), Part(path + ".imag", ft, base + half, half, True)]
    elif k is GoKind.STRING:
        out += [Part(path + ".ptr", _BYTEPTR, base, PTR, False), Part(path + ".len", _INT, base + PTR, PTR, False)]
    elif k is GoKind.SLICE:
        elem = t.elem.name if t.elem is not None else "?"
        p = GoType(f"*{elem}", GoKind.POINTER, PTR, elem=t.elem)
        out += [
            Part(path + ".ptr", p, base, PTR, False),
            Part(path + ".len", _INT, base + PTR, PTR, False),
            Part(path + ".cap", _INT, base + 2 * PTR, PTR, False),
        ]
    elif k in (GoKind.IFACE, GoKind.EFACE):
        first = _UINTPTR if k is GoKind.IFACE else _UNSAFE
        tab = ".itab" if k is GoKind.IFACE else ".type"
        out += [Part(path + tab, first, base, PTR, False), Part(path + ".data", _UNSAFE, base + PTR, PTR, False)]
    elif k is GoKind.STRUCT:
        for f in t.fields:
            if not _reg_parts(f.type, f"{path}.{f.name}", base + f.offset, out, budget):
                return False
    elif k is GoKind.ARRAY:
        if t.length == 1 and t.elem is not None:
            return _reg_parts(t.elem, path + "[0]", base, out, budget)
        return t.length == 0
    else:
        return False
    return len(out) <= MAX_REGISTER_PARTS


def memory_parts(t: GoType, path: str = "", base: int = 0) -> list[Part]:
    """The parts of a value laid out in memory (arrays element by element), for stack-assigned values.

    At most MAX_TYPE_NODES type nodes are walked: the parts of a bigger value stop there (captures
    never show more than the first elements of an array anyway).
    """
    out: list[Part] = []
    _mem_parts(t, path, base, out, _Budget())
    return out


def _mem_parts(t: GoType, path: str, base: int, out: list[Part], budget: _Budget) -> bool:
    """Append the memory parts of `t` to `out`; False once the budget is spent."""
    if t.kind is GoKind.ARRAY and t.elem is not None and t.length > 1:
        if not budget.step():
            return False
        stride, elem = t.elem.size, t.elem
        return all(_mem_parts(elem, f"{path}[{i}]", base + i * stride, out, budget) for i in range(t.length))
    if t.kind is GoKind.STRUCT:
        if not budget.step():
            return False
        return all(_mem_parts(f.type, f"{path}.{f.name}", base + f.offset, out, budget) for f in t.fields)
    scalar: list[Part] = []
    ok = _reg_parts(t, path, base, scalar, budget)
    out += scalar if ok else []
    return budget.left >= 0


def assign(
    params: list[tuple[str, GoType]], results: list[tuple[str, GoType]], abi: Abi
) -> tuple[list[Assigned], list[Assigned]]:
    """Locations of a function's parameters (receiver first) and results under `abi`.

    Returns:
        (arguments, results), each in declaration order.
    """
    stack = 0  # offset within the stack argument area, which starts at sp + abi.stack_base

    def one(name: str, t: GoType, is_result: bool, regs: list[int]) -> Assigned:
        nonlocal stack
        ps = parts(t) if t.size > 0 else None
        if ps is not None:
            n_int = sum(1 for p in ps if not p.is_float)
            n_fp = len(ps) - n_int
            if regs[0] + n_int <= len(abi.int_regs) and regs[1] + n_fp <= len(abi.float_regs):
                placed: list[Part] = []
                for p in ps:
                    if p.is_float:
                        reg = abi.float_regs[regs[1]]
                        regs[1] += 1
                    else:
                        reg = abi.int_regs[regs[0]]
                        regs[0] += 1
                    placed.append(Part(p.path, p.type, p.offset, p.size, p.is_float, reg=reg))
                return Assigned(name, t, is_result, tuple(placed), True, None)
        # On the stack, whole; the register counters are untouched, so later values back-fill them.
        stack = _align(stack, alignment(t))
        at = abi.stack_base + stack
        stack += t.size
        if stack > MAX_VALUE_SIZE:  # only a damaged type (or signature) gets here; nothing after it is placed
            why = f"{t.name} not placed: the values up to it take {stack} bytes, more than any Go stack frame"
            return Assigned(name, t, is_result, (Part("", t, 0, 0, False, missing=why),), False, None)
        placed = [Part(p.path, p.type, p.offset, p.size, p.is_float, stack=at + p.offset) for p in memory_parts(t)]
        return Assigned(name, t, is_result, tuple(placed), False, at)

    arg_regs = [0, 0]
    args = [one(n, t, False, arg_regs) for n, t in params]
    stack = _align(stack, PTR)
    res_regs = [0, 0]
    res = [one(n, t, True, res_regs) for n, t in results]
    return args, res


# ----------------------------------------------------------------------------- generic instantiations

DICT_PARAM = ".dict"  # the name cmd/compile gives the hidden dictionary parameter (noder.dictParamName)
_DICT_TYPE = GoType("*uint8", GoKind.POINTER, 8, elem=GoType("uint8", GoKind.UINT, 1))
_CLOSURE = re.compile(r"(func|gowrap|deferwrap)\d+(\.\d+)*$")


def dictionary_index(name: str) -> int | None:
    """Where the hidden dictionary pointer goes among a function's ABI parameters, None: it takes none.

    cmd/compile (noder.shapeSig, Go 1.18 to 1.27 alike) compiles each generic function once per GC shape,
    named with `go.shape.` type arguments ("main.Scale[go.shape.int]"), and gives the shaped body a first
    parameter `.dict` (the instantiation's dictionary); a method keeps its receiver first, so there the
    dictionary is the second ABI parameter. Function literals inside a shaped body
    ("main.Scale[go.shape.int].func1") reach the dictionary through their closure instead. Go 1.18-1.19
    pclntabs write every type-argument list as "[...]": callers pass the ELF symbol's name when there is one.
    """
    groups = bracket_groups(name)
    if not groups:
        return None
    a, b = groups[-1]
    args = name[a:b]
    if "go.shape." not in args and args != "[...]":
        return None  # a concrete instantiation (a wrapper that calls the shaped body with a dictionary)
    rest = name[b:]
    if rest == "":
        return 0  # pkg.F[shapes]
    m = re.fullmatch(r"\)?\.([^.()\[\]]+)", rest)
    if m is None or _CLOSURE.fullmatch(m.group(1)):
        return None  # a closure of a shaped body, or something else
    return 1  # pkg.(*T[shapes]).M / pkg.T[shapes].M: receiver, dictionary, arguments


def with_dictionary(name: str, params: list[tuple[str, GoType]]) -> list[tuple[str, GoType]]:
    """`params` (declared, receiver first) with the dictionary inserted where the ABI passes it.

    Unchanged when the function takes no dictionary or the list already has it (Go 1.27's DWARF lists
    `.dict`; up to 1.26 it leaves it out, though the ABI passes it all the same).
    """
    at = dictionary_index(name)
    if at is None or any(n == DICT_PARAM for n, _t in params) or at > len(params):
        return params
    return [*params[:at], (DICT_PARAM, _DICT_TYPE), *params[at:]]
