"""`--where EXPR`: a predicate over a probe's decoded arguments, parsed here, evaluated in BPF.

Grammar (loosest first; `&` binds tighter than comparisons, unlike C):

    expr    := and ('||' and)*
    and     := not ('&&' not)*
    not     := '!' not | cmp
    cmp     := bits (('==' | '!=' | '<' | '<=' | '>' | '>=') bits | '~' STRING)?
    bits    := primary ('&' primary)*
    primary := NAME | NUMBER | '-' NUMBER | STRING | 'true' | 'false' | '(' expr ')'

NAME is an argument as events show it (`n`, `url`, `t.Base`), `argN` (the N-th argument an event
shows, from 0), or `pid`, `tid`, `comm`, and any context value of the probe (Go's `goid`). An argument
of that name wins over those. NUMBER is decimal or 0x hex; STRING is in double or single quotes with
\\n \\t \\\\ \\" \\' \\xHH escapes. `s ~ "http://api/*"` is a glob with one `*` (no `*`: equality).

The text is parsed once into an untyped tree (`parse`), then bound against each probe (`bind`): every
name is looked up in that probe's arguments and every operator checked against their types, into the
typed nodes of utrace.predicate that utrace.probes turns into C. Errors are one line with the column.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from utrace.errors import UsageError
from utrace.model import STRING_KINDS, ArgKind, ArgSpec, ProbeKind, ProbeSpec
from utrace.predicate import (
    STRING_MAX,
    AfterEntry,
    And,
    BitAnd,
    BoolExpr,
    BoolLit,
    CmpOp,
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
    StrRef,
    StrTest,
    glob_test,
)
from utrace.runtimes.go.plan import PC_CONTEXT

# bytes of string buffers (each constant + 16) one predicate may use on the 512-byte BPF stack: each
# buffer lives in its own block, and three 128-byte compares pass the verifier (tests/e2e/test_where.py)
STRING_BUDGET = 440
BUILTINS = ("pid", "tid", "comm")


class WhereError(UsageError):
    """A --where expression that cannot be parsed or does not fit the probe: one line with the column."""

    def __init__(self, text: str, col: int, message: str) -> None:
        super().__init__(f"--where {text!r}: column {col}: {message}")
        self.col = col


# --- the untyped tree --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Name:
    name: str
    col: int


@dataclass(frozen=True, slots=True)
class Num:
    value: int
    col: int


@dataclass(frozen=True, slots=True)
class Str:
    value: bytes
    col: int


@dataclass(frozen=True, slots=True)
class Bool:
    value: bool
    col: int


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "!"
    x: Node
    col: int


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # "||" "&&" "==" "!=" "<" "<=" ">" ">=" "~" "&"
    a: Node
    b: Node
    col: int  # the operator's


Node = Name | Num | Str | Bool | Unary | Binary


# --- tokens ------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<num>0[xX][0-9a-fA-F]+|[0-9]+)(?![A-Za-z0-9_])
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
      | (?P<op>\|\||&&|==|!=|<=|>=|[<>!~&()\-])
      | (?P<str>["'])""",
    re.X,
)
_ESCAPES = {"n": 10, "t": 9, "r": 13, "0": 0, "\\": 92, '"': 34, "'": 39}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # num name op str end
    text: str
    col: int
    value: int | bytes | None = None


def _string(text: str, start: int) -> tuple[bytes, int]:
    """The string literal whose quote is at `start`: its bytes and the index after its closing quote."""
    quote = text[start]
    out = bytearray()
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == quote:
            return bytes(out), i + 1
        if c == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2 : i + 4]):
                out.append(int(text[i + 2 : i + 4], 16))
                i += 4
                continue
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            raise WhereError(text, i + 1, f"unknown escape \\{nxt}" if nxt else "unterminated string")
        out += c.encode()
        i += 1
    raise WhereError(text, start + 1, "unterminated string")


def tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            raise WhereError(text, i + 1, f"unexpected {text[i]!r}")
        kind = m.lastgroup or ""
        if kind == "str":
            value, end = _string(text, i)
            out.append(_Tok("str", text[i:end], i + 1, value))
            i = end
            continue
        if kind == "num":
            out.append(_Tok("num", m.group(), i + 1, int(m.group(), 0)))
        elif kind != "ws":
            out.append(_Tok(kind, m.group(), i + 1))
        i = m.end()
    out.append(_Tok("end", "", len(text) + 1))
    return out


# --- the parser --------------------------------------------------------------------------------------

_CMP = ("==", "!=", "<", "<=", ">", ">=")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = tokens(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def fail(self, t: _Tok, what: str) -> WhereError:
        found = "the end" if t.kind == "end" else repr(t.text)
        return WhereError(self.text, t.col, f"expected {what}, found {found}")

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise WhereError(self.text, 1, "empty expression")
        node = self.expr()
        if self.peek().kind != "end":
            raise self.fail(self.peek(), "&&, || or the end")
        return node

    def expr(self) -> Node:
        node = self.conj()
        while self.peek().text == "||" and self.peek().kind == "op":
            op = self.take()
            node = Binary("||", node, self.conj(), op.col)
        return node

    def conj(self) -> Node:
        node = self.neg()
        while self.peek().text == "&&" and self.peek().kind == "op":
            op = self.take()
            node = Binary("&&", node, self.neg(), op.col)
        return node

    def neg(self) -> Node:
        if self.peek().kind == "op" and self.peek().text == "!":
            op = self.take()
            return Unary("!", self.neg(), op.col)
        return self.cmp()

    def cmp(self) -> Node:
        node = self.bits()
        t = self.peek()
        if t.kind == "op" and t.text in _CMP:
            self.take()
            node = Binary(t.text, node, self.bits(), t.col)
        elif t.kind == "op" and t.text == "~":
            self.take()
            pat = self.take()
            if pat.kind != "str":
                raise self.fail(pat, 'a quoted pattern after ~ (such as "http://api/*")')
            assert isinstance(pat.value, bytes)
            node = Binary("~", node, Str(pat.value, pat.col), t.col)
        nxt = self.peek()
        if nxt.kind == "op" and (nxt.text in _CMP or nxt.text == "~"):
            raise WhereError(self.text, nxt.col, "comparisons do not chain: join them with && or ||")
        return node

    def bits(self) -> Node:
        node = self.primary()
        while self.peek().kind == "op" and self.peek().text == "&":
            op = self.take()
            node = Binary("&", node, self.primary(), op.col)
        return node

    def primary(self) -> Node:
        t = self.take()
        if t.kind == "num":
            assert isinstance(t.value, int)
            return Num(t.value, t.col)
        if t.kind == "str":
            assert isinstance(t.value, bytes)
            return Str(t.value, t.col)
        if t.kind == "name":
            if t.text in ("true", "false"):
                return Bool(t.text == "true", t.col)
            return Name(t.text, t.col)
        if t.kind == "op" and t.text == "-":
            n = self.take()
            if n.kind != "num":
                raise self.fail(n, "a number after -")
            assert isinstance(n.value, int)
            return Num(-n.value, t.col)
        if t.kind == "op" and t.text == "(":
            node = self.expr()
            close = self.take()
            if close.kind != "op" or close.text != ")":
                raise self.fail(close, f"')' to close the '(' at column {t.col}")
            return node
        raise self.fail(t, "a name, a number, a string or '('")


def parse(text: str) -> Node:
    """The untyped tree of a --where expression.

    Raises:
        WhereError: a malformed expression (with the column of the mistake).
    """
    return _Parser(text).parse()


# --- binding: names and types against one probe -------------------------------------------------------


_SIGNED = frozenset({ArgKind.S64, ArgKind.S32, ArgKind.S16, ArgKind.S8})
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1


class _Binder:
    def __init__(self, text: str, spec: ProbeSpec) -> None:
        self.text = text
        self.spec = spec
        self.names: dict[str, ArgSpec] = {}
        for n, a in enumerate(spec.args):
            self.names.setdefault(f"arg{n}", a)
        context = [a for a in spec.context if a.name != PC_CONTEXT]  # Go's pc is not shown in events
        for a in (*spec.args, *context):
            self.names[a.name] = a
        self.strings = 0  # bytes of string buffers used

    def err(self, col: int, message: str) -> WhereError:
        return WhereError(self.text, col, message)

    def available(self) -> str:
        shown = [a.name for a in self.spec.args if a.kind is not ArgKind.UNAVAILABLE]
        shown += [a.name for a in self.spec.context if a.name != PC_CONTEXT]
        return ", ".join(dict.fromkeys([*shown, *BUILTINS]))

    def arg(self, node: Name) -> ArgSpec | None:
        """The argument `node` names, None for pid/tid/comm."""
        a = self.names.get(node.name)
        if a is None:
            if node.name in BUILTINS:
                return None
            raise self.err(node.col, f"{self.spec.name} has no argument {node.name!r} (names: {self.available()})")
        if a.kind is ArgKind.UNAVAILABLE:
            raise self.err(
                node.col, f"{node.name} of {self.spec.name} cannot be read in BPF ({a.note or 'unavailable'})"
            )
        if a.uncertain is not None:
            raise self.err(
                node.col,
                f"{node.name} of {self.spec.name} is uncertain ({a.uncertain}): not filtered on a value that "
                "may not be that argument (give the signature to make it certain)",
            )
        return a

    def is_string(self, node: Node) -> bool:
        if isinstance(node, Str):
            return True
        if isinstance(node, Name):
            a = self.arg(node)
            return node.name == "comm" if a is None else a.kind in STRING_KINDS
        return False

    def boolean(self, node: Node) -> BoolExpr:
        if isinstance(node, Bool):
            return BoolLit(node.value)
        if isinstance(node, Unary):
            return Not(self.boolean(node.x))
        if isinstance(node, Binary) and node.op in ("&&", "||"):
            left, right = self.boolean(node.a), self.boolean(node.b)
            return And(left, right) if node.op == "&&" else Or(left, right)
        if isinstance(node, Binary) and node.op == "~":
            return self.glob(node)
        if isinstance(node, Binary) and node.op in _CMP:
            labelled = self.label(node.a, node.b, node) or self.label(node.b, node.a, node)
            if labelled is not None:
                return labelled
            if self.is_string(node.a) or self.is_string(node.b):
                return self.string_cmp(node)
            a, b = self.integer(node.a), self.integer(node.b)
            return IntCmp(CmpOp(node.op), a, b, self.signed(node, a, b))
        if self.is_string(node):
            col = node.col
            raise self.err(col, 'a string is not a condition: compare it (== "text", ~ "prefix*")')
        # an integer (or a bool argument) alone: true when not 0
        return IntCmp(CmpOp.NE, self.integer(node), IntLit(0), False)

    def integer(self, node: Node) -> IntExpr:
        if isinstance(node, Num):
            if not _INT_MIN <= node.value <= _INT_MAX:
                raise self.err(node.col, f"{node.value} does not fit in 64 bits")
            return IntLit(node.value)
        if isinstance(node, Bool):
            return IntLit(int(node.value))
        if isinstance(node, Binary) and node.op == "&":
            return BitAnd(self.integer(node.a), self.integer(node.b))
        if isinstance(node, Name):
            a = self.arg(node)
            if a is None:
                if node.name == "comm":
                    raise self.err(node.col, "comm is a string, not a number")
                return Ident(node.name)
            if a.kind in STRING_KINDS:
                raise self.err(node.col, f"{node.name} is a string, not a number")
            return IntArg(a.loc, a.kind)
        if isinstance(node, Str):
            raise self.err(node.col, "a string where a number is expected")
        raise self.err(node.col, "a condition where a number is expected: put it in ( ) with && or ||")

    def signed(self, node: Binary, a: IntExpr, b: IntExpr) -> bool:
        kinds = [e.kind for e in (a, b) if isinstance(e, IntArg)]
        if any(k in _SIGNED for k in kinds):
            return True
        unsigned = bool(kinds) or any(isinstance(e, (Ident, BitAnd)) for e in (a, b))
        neg = [e for e in (a, b) if isinstance(e, IntLit) and e.value < 0]
        if unsigned and neg:
            raise self.err(node.col, f"{neg[0].value} compared with an unsigned value")
        return not unsigned

    def string_ref(self, node: Node) -> tuple[StrRef, bool]:
        """The string `node` names, and whether it is a JVM class name (internal form: dots are slashes)."""
        if not isinstance(node, Name):
            raise self.err(node.col, "compare a string argument (or comm) with a quoted string")
        a = self.arg(node)
        if a is None:
            if node.name != "comm":
                raise self.err(node.col, f"{node.name} is a number, not a string")
            return Comm(), False
        if a.kind not in STRING_KINDS:
            raise self.err(node.col, f"{node.name} is a number, not a string")
        java_class = self.spec.name.startswith("hotspot:") and a.name == "class"
        return StrArg(a.kind, a.loc, a.length, a.length_kind), java_class

    def literal(self, node: Node, java_class: bool) -> bytes:
        if not isinstance(node, Str):
            raise self.err(node.col, "compare a string with a quoted string")
        value = node.value.replace(b".", b"/") if java_class else node.value
        if len(value) > STRING_MAX:
            raise self.err(node.col, f"strings compared in BPF are at most {STRING_MAX} bytes")
        self.strings += len(value) + 16
        if self.strings > STRING_BUDGET:
            raise self.err(node.col, f"the strings of one --where add up to more than {STRING_BUDGET} bytes")
        return value

    def string_cmp(self, node: Binary) -> BoolExpr:
        if node.op not in ("==", "!="):
            raise self.err(node.col, f"strings are compared with ==, != or ~, not {node.op}")
        left, right = (node.b, node.a) if isinstance(node.a, Str) else (node.a, node.b)
        ref, java = self.string_ref(left)
        value = self.literal(right, java)
        test = StrTest(StrOp.EQ if node.op == "==" else StrOp.NE, ref, value)
        self.check_ref(ref, test, right.col)
        return test

    def label(self, left: Node, right: Node, node: Binary) -> BoolExpr | None:
        """`type == "tcp"` for an integer shown by name (an enum such as libuv's handle types)."""
        a = self.arg(left) if isinstance(left, Name) else None
        if a is None or not a.labels or not isinstance(right, Str) or node.op not in ("==", "!="):
            return None
        values = [v for v, text in a.labels if text.encode() == right.value]
        if not values:
            known = ", ".join(text for _, text in a.labels)
            raise self.err(right.col, f"{a.name} is one of {known} (or a number)")
        return IntCmp(CmpOp(node.op), IntArg(a.loc, a.kind), IntLit(values[0]), a.kind in _SIGNED)

    def glob(self, node: Binary) -> BoolExpr:
        ref, java = self.string_ref(node.a)
        value = self.literal(node.b, java)
        try:
            out = glob_test(ref, value)
        except ValueError as e:
            raise self.err(node.b.col, str(e)) from None
        self.check_ref(ref, out, node.b.col)
        return out

    def check_ref(self, ref: StrRef, e: BoolExpr, col: int) -> None:
        tests = [e] if isinstance(e, StrTest) else []
        if isinstance(ref, Comm) and any(len(t.value) > 15 for t in tests):
            raise self.err(col, "comm is at most 15 bytes")
        if isinstance(ref, (Comm, StrArg)) and any(
            b"\0" in t.value for t in tests if isinstance(ref, Comm) or ref.kind is ArgKind.CSTR
        ):
            raise self.err(col, "a C string never holds a NUL byte")


def bind(text: str, tree: Node, spec: ProbeSpec) -> Predicate:
    """The typed predicate of `tree` for `spec`'s arguments.

    Raises:
        WhereError: an unknown name (the probe's names are listed), a type mismatch, an uncertain value.
    """
    return Predicate(_Binder(text, spec).boolean(tree))


def apply_where(text: str, specs: Sequence[ProbeSpec]) -> list[ProbeSpec]:
    """`specs` with the predicate added to each entry and USDT probe; a return is then reported only
    when its entry passed (AfterEntry), since a return probe has no arguments to test.

    Raises:
        WhereError: see `parse` and `bind`.
    """
    tree = parse(text)
    entries = {s.pair: s for s in specs if s.kind is ProbeKind.ENTRY and s.pair}
    out: list[ProbeSpec] = []
    for s in specs:
        if s.kind in (ProbeKind.RETURN, ProbeKind.EXIT):
            entry = entries.get(s.pair)
            if entry is None:
                raise WhereError(text, 1, f"{s.name}'s return has no entry probe to test the arguments at")
            bind(text, tree, entry)
            out.append(replace(s, filters=(*s.filters, AfterEntry())))
        else:
            out.append(replace(s, filters=(*s.filters, bind(text, tree, s))))
    return out
