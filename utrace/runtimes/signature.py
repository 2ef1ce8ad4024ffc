"""C and C++ parameter lists -> ArgSpecs in SysV x86-64 argument registers.

Integer-class parameters take rdi, rsi, rdx, rcx, r8, r9 in order; float and double go to xmm registers,
which BPF cannot read from a uprobe, so they are shown as unavailable (and take no integer register).
A parameter of unknown type passed by value (a struct) may take several registers or the stack, so
it and every later parameter are marked unavailable rather than shown wrong.
"""

from __future__ import annotations

import re

from utrace.elf.demangle import name_parts
from utrace.model import ArgKind, ArgSpec, Reg, Stack

SYSV_INT_ARGS = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")

_INTS: dict[str, ArgKind] = {
    "bool": ArgKind.BOOL, "_Bool": ArgKind.BOOL,
    "char": ArgKind.S8, "signed char": ArgKind.S8, "unsigned char": ArgKind.U8,
    "short": ArgKind.S16, "short int": ArgKind.S16, "unsigned short": ArgKind.U16,
    "unsigned short int": ArgKind.U16, "int": ArgKind.S32, "signed": ArgKind.S32,
    "signed int": ArgKind.S32, "unsigned": ArgKind.U32, "unsigned int": ArgKind.U32,
    "long": ArgKind.S64, "long int": ArgKind.S64, "long long": ArgKind.S64,
    "long long int": ArgKind.S64, "unsigned long": ArgKind.U64, "unsigned long int": ArgKind.U64,
    "unsigned long long": ArgKind.U64, "unsigned long long int": ArgKind.U64,
    "size_t": ArgKind.U64, "ssize_t": ArgKind.S64, "off_t": ArgKind.S64, "pid_t": ArgKind.S32,
    "int8_t": ArgKind.S8, "uint8_t": ArgKind.U8, "int16_t": ArgKind.S16, "uint16_t": ArgKind.U16,
    "int32_t": ArgKind.S32, "uint32_t": ArgKind.U32, "int64_t": ArgKind.S64, "uint64_t": ArgKind.U64,
    "intptr_t": ArgKind.S64, "uintptr_t": ArgKind.U64, "wchar_t": ArgKind.S32,
    "char16_t": ArgKind.U16, "char32_t": ArgKind.U32, "uv_file": ArgKind.S32,
}  # fmt: skip
_FLOATS = {"float", "double", "long double"}
_CHAR_TYPES = {"char", "signed char", "unsigned char"}


def split_params(params: str) -> list[str]:
    """Split a parameter list at top-level commas (templates and function pointers kept whole)."""
    out: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in params:
        if ch in "<([":
            depth += 1
        elif ch in ">)]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    last = "".join(cur).strip()
    if last:
        out.append(last)
    return [p for p in out if p]


def param_list(demangled: str) -> tuple[str, str] | None:
    """(parameters, trailing qualifiers) of a demangled function name, or None if it has none (operator
    names are names: `operator()(int)` has the parameters `int`)."""
    _start, paren, close = name_parts(demangled)
    if paren < 0 or close < 0:
        return None
    return demangled[paren + 1 : close], demangled[close + 1 :].strip()


def _normalise(t: str) -> str:
    t = re.sub(r"\b(const|volatile|struct|enum|class|union)\b", " ", t)
    t = re.sub(r"\s+", " ", t).strip()
    t = re.sub(r"\s*([*&])", r"\1", t)
    return t


def _split_type_and_name(param: str) -> tuple[str, str]:
    """`const char *name` -> ("const char *", "name"); a bare type keeps an empty name."""
    arr = re.match(r"^(.*?[\s*&])([A-Za-z_]\w*)\s*((?:\[[^\]]*\])+)$", param.strip())
    if arr:  # `char buf[16]`: the name sits before the brackets
        return arr.group(1).strip() + arr.group(3), arr.group(2)
    m = re.match(r"^(.*?[\s*&])([A-Za-z_]\w*)$", param.strip())
    if (
        m
        and _normalise(m.group(1))
        and (m.group(2) not in _INTS and m.group(2) not in ("char", "int", "long", "short", "double", "float", "const"))
    ):
        return m.group(1).strip(), m.group(2)
    return param.strip(), ""


def kind_of(ctype: str) -> tuple[ArgKind, str]:
    """ArgKind for a C/C++ type, and a note when it cannot be read."""
    t = _normalise(ctype)
    if t.endswith("]"):  # an array parameter is a pointer
        base = t[: t.index("[")].strip()
        return (ArgKind.CSTR if base in _CHAR_TYPES else ArgKind.PTR), ""
    if t.endswith("&&") or t.endswith("&"):
        return ArgKind.PTR, ""
    if t.endswith("*"):
        base = t.rstrip("*")
        if t.count("*") == 1 and base in _CHAR_TYPES:
            return ArgKind.CSTR, ""
        return ArgKind.PTR, ""
    if "(*)" in t or t.endswith(")"):
        return ArgKind.PTR, ""
    if t in _INTS:
        return _INTS[t], ""
    if t in _FLOATS:
        return ArgKind.UNAVAILABLE, "floating-point register"
    if t in ("...", "void"):
        return ArgKind.UNAVAILABLE, ""
    return ArgKind.UNAVAILABLE, f"{t} passed by value"


def sysv_args(params: list[str], *, this: bool = False, max_len: int = 128) -> list[ArgSpec]:
    """ArgSpecs for an ordered parameter list (each `type name` or a bare type)."""
    specs: list[ArgSpec] = []
    slot = 0
    if this:
        specs.append(ArgSpec("this", ArgKind.PTR, Reg("rdi")))
        slot = 1
    broken = ""
    for n, p in enumerate(params):
        if p.strip() in ("void", ""):
            continue
        ctype, name = _split_type_and_name(p)
        name = name or f"arg{n}"
        kind, note = kind_of(ctype)
        if broken:
            specs.append(ArgSpec(name, ArgKind.UNAVAILABLE, note=f"after {broken}"))
            continue
        if kind is ArgKind.UNAVAILABLE:
            specs.append(ArgSpec(name, kind, note=note or "unknown type"))
            if note.endswith("passed by value"):
                broken = note
            continue
        # the seventh integer argument onwards is on the stack, just past the return address
        n_regs = len(SYSV_INT_ARGS)
        loc: Reg | Stack = Reg(SYSV_INT_ARGS[slot]) if slot < n_regs else Stack(8 * (slot - n_regs + 1))
        slot += 1
        specs.append(ArgSpec(name, kind, loc, max_len=max_len))
    return specs


def default_args(count: int = 6) -> list[ArgSpec]:
    """arg0..arg5 as signed 64-bit integers: what a C symbol without a signature gets."""
    return [ArgSpec(f"arg{i}", ArgKind.S64, Reg(r)) for i, r in enumerate(SYSV_INT_ARGS[:count])]


def parse_user_probe(expr: str) -> tuple[str, list[str] | None]:
    """`name(type a, type b)` -> ("name", ["type a", "type b"]); a bare name -> (name, None).

    The split is at the parameter list, operator names read as names (`ns::S::operator()(int x)`,
    `ns::S::operator<(ns::S const& o)`); a name that does not end with its parameter list
    (`ns::S::f(int) const`) is a name.
    """
    expr = expr.strip()
    _start, paren, close = name_parts(expr)
    if paren < 0 or close != len(expr) - 1:
        return expr, None
    return expr[:paren].strip(), split_params(expr[paren + 1 : close])
