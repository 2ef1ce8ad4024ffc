"""Go signatures written on the command line: `main.Greet(name string, n int) (string, error)`.

Used when a binary has no DWARF (stripped with `-ldflags='-s -w'`): the user says the types, the
ABI says where they are. Only types whose size and passing follow from the text are accepted;
named types (`main.T`, `time.Duration`) need their underlying type written instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from utrace.errors import UsageError
from utrace.model import GoKind, GoType

_BASIC: dict[str, GoType] = {}
for _n, _k, _s in [
    ("bool", GoKind.BOOL, 1),
    ("int", GoKind.INT, 8), ("int8", GoKind.INT, 1), ("int16", GoKind.INT, 2), ("int32", GoKind.INT, 4),
    ("int64", GoKind.INT, 8), ("rune", GoKind.INT, 4),
    ("uint", GoKind.UINT, 8), ("uint8", GoKind.UINT, 1), ("uint16", GoKind.UINT, 2), ("uint32", GoKind.UINT, 4),
    ("uint64", GoKind.UINT, 8), ("uintptr", GoKind.UINT, 8), ("byte", GoKind.UINT, 1),
    ("float32", GoKind.FLOAT, 4), ("float64", GoKind.FLOAT, 8),
    ("complex64", GoKind.COMPLEX, 8), ("complex128", GoKind.COMPLEX, 16),
    ("string", GoKind.STRING, 16),
    ("error", GoKind.IFACE, 16), ("any", GoKind.EFACE, 16), ("interface{}", GoKind.EFACE, 16),
    ("unsafe.Pointer", GoKind.POINTER, 8),
]:  # fmt: skip
    _BASIC[_n] = GoType("uint8" if _n == "byte" else "int32" if _n == "rune" else _n, _k, _s)


@dataclass(frozen=True, slots=True)
class GoSignature:
    """A function name with the parameters and results the user wrote."""

    function: str
    params: tuple[tuple[str, GoType], ...]
    results: tuple[tuple[str, GoType], ...] | None  # None: results not given


def parse_type(text: str) -> GoType:
    """A Go type expression -> GoType.

    Raises:
        UsageError: unknown or named types, whose layout the text does not give.
    """
    t = text.strip().replace(" ", "") if text.strip().startswith(("interface", "func")) else text.strip()
    if t in _BASIC:
        return _BASIC[t]
    if t.startswith("*"):
        elem = None
        try:
            elem = parse_type(t[1:])
        except UsageError:
            pass  # a pointer to a named type is still one word
        return GoType(t, GoKind.POINTER, 8, elem=elem)
    if t.startswith("[]"):
        elem = parse_type(t[2:])
        return GoType("[]" + elem.name, GoKind.SLICE, 24, elem=elem)
    m = re.fullmatch(r"\[(\d+)\](.+)", t)
    if m:
        elem = parse_type(m.group(2))
        if len(m.group(1)) > 18:  # past any int64 length (and int() refuses 4300 digits)
            raise UsageError(f"array length {m.group(1)[:19]}... is too large for Go")
        n = int(m.group(1))
        return GoType(f"[{n}]{elem.name}", GoKind.ARRAY, n * elem.size, elem=elem, length=n)
    if t.startswith(("map[", "chan ", "chan<-", "<-chan", "func(")):
        return GoType(t, GoKind.POINTER, 8)
    if t.startswith("interface{") and t.endswith("}"):
        return GoType(t, GoKind.IFACE, 16)
    raise UsageError(
        f"cannot use Go type {t!r} without debug info: write its underlying type "
        "(e.g. int64 for time.Duration, *T for a pointer)"
    )


def _split_top(s: str) -> list[str]:
    """Split on commas that are not inside brackets or parentheses."""
    out: list[str] = []
    depth = 0
    cur = ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return [p.strip() for p in out]


def _fields(text: str, prefix: str) -> tuple[tuple[str, GoType], ...]:
    """`name string, a, b int` -> named types; `string, error` -> r0, r1 (Go's grouping rules)."""
    items = _split_top(text)
    if not items:
        return ()
    named = all(" " in it for it in items[-1:]) and any(" " in it for it in items)
    if not named:
        return tuple((f"{prefix}{i}", parse_type(it)) for i, it in enumerate(items))
    out: list[tuple[str, GoType]] = []
    pending: list[str] = []
    for it in items:
        if " " in it:
            name, typ = it.split(None, 1)
            gt = parse_type(typ)
            for p in pending:
                out.append((p, gt))
            pending = []
            out.append((name, gt))
        else:
            pending.append(it)
    if pending:
        raise UsageError(f"parameters {', '.join(pending)} have no type")
    return tuple(out)


def _matching_paren(s: str, start: int) -> int:
    depth = 0
    for i in range(start, len(s)):
        if s[i] == "(":
            depth += 1
        elif s[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise UsageError(f"unbalanced parentheses in {s!r}")


def parse_signature(text: str) -> GoSignature | None:
    """`pkg.Func(params) results` -> GoSignature, or None when `text` has no parameter list.

    The function name may itself contain parentheses (`main.(*T).M(x int)`): the parameter list is
    the last top-level parenthesised group before the results.
    """
    s = text.strip()
    if not s.endswith(")") and "(" not in s:
        return None
    # find the parameter list: the first "(" that is not part of a "(*T)" receiver in the name
    i = 0
    while True:
        j = s.find("(", i)
        if j < 0:
            return None
        if s.startswith("(*", j) and s.find(").", j) >= 0 and s.find(").", j) < s.find(")", j) + 1:
            i = s.find(").", j) + 2
            continue
        break
    close = _matching_paren(s, j)
    name = s[:j].strip()
    params = _fields(s[j + 1 : close], "arg")
    rest = s[close + 1 :].strip()
    results: tuple[tuple[str, GoType], ...] | None = None
    if rest:
        if rest.startswith("("):
            end = _matching_paren(rest, 0)
            results = _fields(rest[1:end], "r")
        else:
            results = (("r0", parse_type(rest)),)
    return GoSignature(name, params, results)
