"""Typed predicates over a probe's captured values, evaluated in BPF before anything is sent.

Plain data, like utrace.model: `utrace.where` builds these from the user's `--where` text (after
checking every name and type against the probe), the JVM runtime builds them from `method:` globs, and
only `utrace.probes.predicate` turns them into C. Strings are bytes compared in fixed-size chunks, so
no text ever reaches the C source and every loop the verifier sees is bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from utrace.model import ArgKind, Location

STRING_MAX = 128  # longest string constant compared in BPF (bytes; a stack buffer holds it)


@dataclass(frozen=True, slots=True)
class IntArg:
    """An integer captured at the probe: the value at `loc` read as `kind` (a BOOL is 0 or 1)."""

    loc: Location
    kind: ArgKind


@dataclass(frozen=True, slots=True)
class Ident:
    """The process id (`pid`) or thread id (`tid`) of the hit, as events show them."""

    which: str


@dataclass(frozen=True, slots=True)
class IntLit:
    value: int


@dataclass(frozen=True, slots=True)
class BitAnd:
    a: IntExpr
    b: IntExpr


IntExpr = IntArg | Ident | IntLit | BitAnd


class CmpOp(StrEnum):
    EQ = "=="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


@dataclass(frozen=True, slots=True)
class IntCmp:
    """`a OP b`, compared as signed 64-bit integers when `signed`, else unsigned."""

    op: CmpOp
    a: IntExpr
    b: IntExpr
    signed: bool


@dataclass(frozen=True, slots=True)
class StrArg:
    """A string captured at the probe: NUL-terminated at `loc` (CSTR) or `length` bytes at `loc`."""

    kind: ArgKind
    loc: Location
    length: Location | None = None
    length_kind: ArgKind = ArgKind.S64


@dataclass(frozen=True, slots=True)
class Comm:
    """The thread's name (the kernel's comm, at most 15 bytes)."""


StrRef = StrArg | Comm


class StrOp(StrEnum):
    EQ = "eq"  # the whole string is `value`
    NE = "ne"  # readable, and not `value`
    PREFIX = "prefix"  # starts with `value`
    SUFFIX = "suffix"  # ends with `value` (pointer+length strings only)
    MIN_LEN = "min_len"  # at least `length` bytes long (pointer+length strings only)


@dataclass(frozen=True, slots=True)
class StrTest:
    """A test on a string; false whenever the string cannot be read (NULL pointer, a fault)."""

    op: StrOp
    s: StrRef
    value: bytes = b""
    length: int = 0


@dataclass(frozen=True, slots=True)
class Not:
    x: BoolExpr


@dataclass(frozen=True, slots=True)
class And:
    a: BoolExpr
    b: BoolExpr


@dataclass(frozen=True, slots=True)
class Or:
    a: BoolExpr
    b: BoolExpr


@dataclass(frozen=True, slots=True)
class BoolLit:
    value: bool


BoolExpr = IntCmp | StrTest | Not | And | Or | BoolLit


@dataclass(frozen=True, slots=True)
class Predicate:
    """A ProbeSpec filter: emit only when `expr` holds at the probe."""

    expr: BoolExpr


@dataclass(frozen=True, slots=True)
class AfterEntry:
    """A ProbeSpec filter for a return probe: emit only when its entry (the same `pair`) passed its
    own filters, i.e. when the entry's time is in the `starts` map. A return whose entry was not seen
    is then not reported either."""


def any_of(exprs: list[BoolExpr]) -> BoolExpr:
    if not exprs:
        return BoolLit(False)
    out = exprs[0]
    for e in exprs[1:]:
        out = Or(out, e)
    return out


def all_of(exprs: list[BoolExpr]) -> BoolExpr:
    if not exprs:
        return BoolLit(True)
    out = exprs[0]
    for e in exprs[1:]:
        out = And(out, e)
    return out


def glob_test(s: StrRef, pattern: bytes) -> BoolExpr:
    """`s` matches `pattern`, where one `*` stands for any bytes: no `*` is equality, `X*` a prefix,
    `*Y` a suffix, `X*Y` both (and at least len(X)+len(Y) bytes, so they do not overlap).

    Raises:
        ValueError: more than one `*`, or a suffix on a C string (its length is not known up front).
    """
    if pattern.count(b"*") > 1:
        raise ValueError("at most one * is supported in a pattern")
    if b"*" not in pattern:
        return StrTest(StrOp.EQ, s, pattern)
    head, _, tail = pattern.partition(b"*")
    if tail and not (isinstance(s, StrArg) and s.kind is ArgKind.PTRLEN_STR):
        raise ValueError("a * before the end needs a string with a known length (not a C string)")
    tests: list[BoolExpr] = []
    if head:
        tests.append(StrTest(StrOp.PREFIX, s, head))
    if tail:
        tests.append(StrTest(StrOp.SUFFIX, s, tail))
    if head and tail:
        tests.append(StrTest(StrOp.MIN_LEN, s, length=len(head) + len(tail)))
    if not tests:  # "*": any readable string
        return StrTest(StrOp.PREFIX, s, b"")
    return all_of(tests)


def java_method_glob(cls: StrArg, method: StrArg, pattern: str) -> BoolExpr:
    """A HotSpot method probe's class (internal form, `com/shop/Cart`) and method name match `pattern`,
    a glob over the Java name `com.shop.Cart.total` with at most one `*` (which spans dots, so
    `com.shop.*.total` takes sub-packages too).

    Without a `*`, the name is an exact `Class.method` or, as `method:CLASS` always was, a class-name
    prefix (`Demo`, `java.util.TreeMap`): both readings are compared, as they cannot be told apart.

    Raises:
        ValueError: the pattern cannot be compared in BPF (see `glob_test`), or is empty.
    """
    if not pattern or any(c in pattern for c in "?[]"):
        raise ValueError("give Class.method, a class name prefix, or a glob with one * (? and [ ] are not supported)")
    if pattern.count("*") > 1:
        raise ValueError("at most one * is supported")

    def internal(text: str) -> bytes:
        return text.replace(".", "/").encode()

    if "*" not in pattern:
        reads: list[BoolExpr] = [StrTest(StrOp.PREFIX, cls, internal(pattern))]
        owner, dot, name = pattern.rpartition(".")
        if dot and owner and name:
            reads.append(And(StrTest(StrOp.EQ, cls, internal(owner)), StrTest(StrOp.EQ, method, name.encode())))
        return any_of(reads)
    # The full name is C + "." + M, and M has no dot. F ~ X*Y holds iff F starts with X, ends with Y,
    # and is at least |X| + |Y| long.
    head, _, tail = pattern.partition("*")
    ends: list[BoolExpr]
    if "." in tail:
        # Y = Ya.Yb: M is Yb and C ends with Ya
        ya, _, yb = tail.rpartition(".")
        ends = [StrTest(StrOp.EQ, method, yb.encode())]
        if ya:
            ends.append(StrTest(StrOp.SUFFIX, cls, internal(ya)))
        # F starts with X inside C (C ending with Ya, the two must not overlap); the other way, C a
        # proper prefix of X, would make F shorter than |X| + |Y|
        starts: list[BoolExpr] = []
        if head:
            starts.append(StrTest(StrOp.PREFIX, cls, internal(head)))
        if head and ya:
            starts.append(StrTest(StrOp.MIN_LEN, cls, length=len(head) + len(ya)))
        return all_of(starts + ends)
    # Y has no dot: M ends with Y. F starts with X either inside C, or C is X up to its last dot and M
    # starts with the rest (then M holds both ends, which must not overlap)
    mtail = [StrTest(StrOp.SUFFIX, method, tail.encode())] if tail else []
    alts: list[BoolExpr] = [all_of([StrTest(StrOp.PREFIX, cls, internal(head))] if head else [])]
    owner, dot, rest = head.rpartition(".")
    if dot:
        inner: list[BoolExpr] = [StrTest(StrOp.EQ, cls, internal(owner))]
        if rest:
            inner.append(StrTest(StrOp.PREFIX, method, rest.encode()))
        if rest and tail:
            inner.append(StrTest(StrOp.MIN_LEN, method, length=len(rest) + len(tail)))
        alts.append(all_of(inner))
    return all_of([any_of(alts), *mtail])
