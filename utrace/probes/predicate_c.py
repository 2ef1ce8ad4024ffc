"""utrace.predicate's typed predicates -> C statements in a probe's body (called by codegen).

Every leaf (a comparison, a string test) is computed into its own `int` before the combined test, so
the C has no short-circuit surprises and each string buffer lives only in its own block. Strings are
compared as little-endian 8-byte words XORed with constants (as codegen's PrefixFilter): the only
text in the C is integers this module formats.
"""

from __future__ import annotations

from typing import Protocol

from utrace.model import ArgKind, Location
from utrace.predicate import (
    STRING_MAX,
    And,
    BitAnd,
    BoolExpr,
    BoolLit,
    Comm,
    Ident,
    IntArg,
    IntCmp,
    IntExpr,
    IntLit,
    Not,
    Or,
    Predicate,
    StrArg,
    StrOp,
    StrTest,
)
from utrace.probes.codegen import _C_INT, CodegenError, _int, words_differ

COMM_LEN = 16


class Emitter(Protocol):
    def new(self) -> str: ...
    def emit(self, line: str) -> None: ...
    def value(self, loc: Location) -> str: ...


_SIGNED = frozenset({ArgKind.S64, ArgKind.S32, ArgKind.S16, ArgKind.S8})


def emit_predicate(em: Emitter, p: Predicate) -> None:
    """Statements that return 0 from the probe unless `p` holds."""
    cond = _bool(em, p.expr)
    em.emit(f"if (!({cond})) return 0;")


def _bool(em: Emitter, e: BoolExpr) -> str:
    if isinstance(e, BoolLit):
        return "1" if e.value else "0"
    if isinstance(e, Not):
        return f"!({_bool(em, e.x)})"
    if isinstance(e, And):
        return f"({_bool(em, e.a)} && {_bool(em, e.b)})"
    if isinstance(e, Or):
        return f"({_bool(em, e.a)} || {_bool(em, e.b)})"
    if isinstance(e, IntCmp):
        t = "s64" if e.signed else "u64"
        a, b = _intexpr(em, e.a), _intexpr(em, e.b)
        return f"(({t})({a}) {e.op.value} ({t})({b}))"
    if isinstance(e, StrTest):
        return _string(em, e)
    raise CodegenError(f"unknown predicate node {e!r}")


def _intexpr(em: Emitter, e: IntExpr) -> str:
    if isinstance(e, IntLit):
        return _int(e.value)
    if isinstance(e, Ident):
        if e.which not in ("pid", "tid"):
            raise CodegenError(f"unknown identity {e.which!r}")
        return f"(u64){e.which}"
    if isinstance(e, BitAnd):
        return f"((u64)({_intexpr(em, e.a)}) & (u64)({_intexpr(em, e.b)}))"
    if isinstance(e, IntArg):
        v = em.value(e.loc)
        if e.kind is ArgKind.BOOL:
            return f"(u64)((u8){v} != 0)"
        ctype = _C_INT.get(e.kind)
        if ctype is None:
            raise CodegenError(f"cannot compare a {e.kind} value")
        return f"(u64)(s64)({ctype}){v}" if e.kind in _SIGNED else f"(u64)({ctype}){v}"
    raise CodegenError(f"unknown integer node {e!r}")


def _string(em: Emitter, t: StrTest) -> str:
    if len(t.value) > STRING_MAX:
        raise CodegenError(f"string constants are at most {STRING_MAX} bytes")
    s = t.s
    out = em.new()
    if isinstance(s, Comm):
        _comm(em, t, out)
    elif s.kind is ArgKind.PTRLEN_STR:
        _ptrlen(em, t, s, out)
    elif s.kind is ArgKind.CSTR:
        _cstr(em, t, s, out)
    else:
        raise CodegenError(f"not a string: {s.kind}")
    return out


def _ptrlen(em: Emitter, t: StrTest, s: StrArg, out: str) -> None:
    if s.length is None:
        raise CodegenError("a pointer+length string needs a length location")
    p = em.value(s.loc)
    ln = em.value(s.length)
    ltype = _C_INT.get(s.length_kind, "s64")
    n = len(t.value)
    w, buf = em.new(), em.new()
    em.emit(f"int {out} = 0;")
    em.emit("{")
    em.emit(f"    s64 {w} = (s64)({ltype}){ln};")
    # readable: (NULL, 0) is Go's empty string; a NULL with a length, or a negative length, is not a string
    readable = f"({w} == 0 || ({p} != 0 && {w} > 0))"
    if t.op is StrOp.MIN_LEN:
        em.emit(f"    {out} = {readable} && {w} >= {_int(t.length)};")
    elif n == 0:
        cond = {
            StrOp.EQ: f"{w} == 0",
            StrOp.NE: f"{w} > 0 && {p} != 0",
            StrOp.PREFIX: readable,
            StrOp.SUFFIX: readable,
        }[t.op]
        em.emit(f"    {out} = {cond};")
    else:
        words = (n + 7) // 8
        at = f"(void *)({p} + (u64)({w} - {n}))" if t.op is StrOp.SUFFIX else f"(void *){p}"
        size = f"{w} == {n}" if t.op in (StrOp.EQ, StrOp.NE) else f"{w} >= {n}"
        if t.op is StrOp.NE:
            em.emit(f"    if ({readable} && {w} != {n}) {out} = 1;")
        em.emit(f"    if ({p} != 0 && {size}) {{")
        em.emit(f"        u64 {buf}[{words}] = {{}};")
        match = "!=" if t.op is StrOp.NE else "=="
        differ = words_differ(buf, t.value)
        em.emit(f"        if (bpf_probe_read_user({buf}, {n}, {at}) == 0 && ({differ}) {match} 0) {out} = 1;")
        em.emit("    }")
    em.emit("}")


def _cstr(em: Emitter, t: StrTest, s: StrArg, out: str) -> None:
    if t.op not in (StrOp.EQ, StrOp.NE, StrOp.PREFIX):
        raise CodegenError(f"{t.op} needs a string with a known length, not a C string")
    if b"\0" in t.value:
        raise CodegenError("a C string never holds a NUL byte")
    p = em.value(s.loc)
    # equality compares the constant and its NUL, read with one byte more (a longer string read in
    # len + 1 bytes would end in a forced NUL just where the constant's is)
    data = t.value if t.op is StrOp.PREFIX else t.value + b"\0"
    size = len(data) + 1  # the helper always ends the buffer with a NUL
    buf, r = em.new(), em.new()
    em.emit(f"int {out} = 0;")
    em.emit(f"if ({p} != 0) {{")
    em.emit(f"    u64 {buf}[{(size + 7) // 8}] = {{}};")
    em.emit(f"    long {r} = bpf_probe_read_user_str({buf}, {size}, (void *){p});")
    match = "!=" if t.op is StrOp.NE else "=="
    em.emit(f"    if ({r} > 0 && ({words_differ(buf, data)}) {match} 0) {out} = 1;")
    em.emit("}")


def _comm(em: Emitter, t: StrTest, out: str) -> None:
    if t.op not in (StrOp.EQ, StrOp.NE, StrOp.PREFIX):
        raise CodegenError(f"{t.op} does not apply to comm")
    data = t.value if t.op is StrOp.PREFIX else t.value + b"\0"
    if len(data) > COMM_LEN:
        raise CodegenError(f"comm is at most {COMM_LEN - 1} bytes")
    buf = em.new()
    em.emit(f"int {out} = 0;")
    em.emit("{")
    em.emit(f"    u64 {buf}[{COMM_LEN // 8}] = {{}};")
    em.emit(f"    bpf_get_current_comm({buf}, {COMM_LEN});")
    match = "!=" if t.op is StrOp.NE else "=="
    em.emit(f"    if (({words_differ(buf, data)}) {match} 0) {out} = 1;")
    em.emit("}")
