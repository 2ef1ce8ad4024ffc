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

from dataclasses import dataclass

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


def alignment(t: GoType) -> int:
    """Go's alignment of a type on a 64-bit target."""
    if t.kind in (GoKind.STRING, GoKind.SLICE, GoKind.IFACE, GoKind.EFACE, GoKind.POINTER):
        return PTR
    if t.kind is GoKind.COMPLEX:
        return max(1, min(PTR, t.size // 2))
    if t.kind is GoKind.STRUCT:
        return max((alignment(f.type) for f in t.fields), default=1)
    if t.kind is GoKind.ARRAY:
        return alignment(t.elem) if t.elem is not None else 1
    return max(1, min(PTR, t.size))


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def parts(t: GoType, path: str = "", base: int = 0) -> list[Part] | None:
    """The scalar parts of a value in register-assignment order, or None if `t` can never go in registers."""
    k = t.kind
    if k in (GoKind.BOOL, GoKind.INT, GoKind.UINT, GoKind.POINTER):
        if t.size > PTR:
            return None
        return [Part(path, t, base, t.size, False)]
    if k is GoKind.FLOAT:
        return [Part(path, t, base, t.size, True)]
    if k is GoKind.COMPLEX:
        half = t.size // 2
        ft = GoType(f"float{half * 8}", GoKind.FLOAT, half)
        return [Part(path + ".real", ft, base, half, True), Part(path + ".imag", ft, base + half, half, True)]
    if k is GoKind.STRING:
        return [Part(path + ".ptr", _BYTEPTR, base, PTR, False), Part(path + ".len", _INT, base + PTR, PTR, False)]
    if k is GoKind.SLICE:
        elem = t.elem.name if t.elem is not None else "?"
        p = GoType(f"*{elem}", GoKind.POINTER, PTR, elem=t.elem)
        return [
            Part(path + ".ptr", p, base, PTR, False),
            Part(path + ".len", _INT, base + PTR, PTR, False),
            Part(path + ".cap", _INT, base + 2 * PTR, PTR, False),
        ]
    if k in (GoKind.IFACE, GoKind.EFACE):
        first = _UINTPTR if k is GoKind.IFACE else _UNSAFE
        tab = ".itab" if k is GoKind.IFACE else ".type"
        return [Part(path + tab, first, base, PTR, False), Part(path + ".data", _UNSAFE, base + PTR, PTR, False)]
    if k is GoKind.STRUCT:
        out: list[Part] = []
        for f in t.fields:
            sub = parts(f.type, f"{path}.{f.name}", base + f.offset)
            if sub is None:
                return None
            out += sub
        return out
    if k is GoKind.ARRAY:
        if t.length == 0:
            return []
        if t.length == 1 and t.elem is not None:
            return parts(t.elem, path + "[0]", base)
        return None
    return None


def memory_parts(t: GoType, path: str = "", base: int = 0) -> list[Part]:
    """The parts of a value laid out in memory (arrays element by element), for stack-assigned values."""
    if t.kind is GoKind.ARRAY and t.elem is not None and t.length > 1:
        out: list[Part] = []
        stride = t.elem.size
        for i in range(t.length):
            out += memory_parts(t.elem, f"{path}[{i}]", base + i * stride)
        return out
    if t.kind is GoKind.STRUCT:
        out = []
        for f in t.fields:
            out += memory_parts(f.type, f"{path}.{f.name}", base + f.offset)
        return out
    return parts(t, path, base) or []


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
        placed = [Part(p.path, p.type, p.offset, p.size, p.is_float, stack=at + p.offset) for p in memory_parts(t)]
        return Assigned(name, t, is_result, tuple(placed), False, at)

    arg_regs = [0, 0]
    args = [one(n, t, False, arg_regs) for n, t in params]
    stack = _align(stack, PTR)
    res_regs = [0, 0]
    res = [one(n, t, True, res_regs) for n, t in results]
    return args, res
