"""Names: the one glob matcher over function and probe names, and the one "did you mean".

`name_matcher` is what `utrace list`, every runtime's resolution and completion's filters use, so a
pattern that lists a function also traces it. When a name matches nothing, the suggestions come from
`close_names` (difflib's ratio over the names the file really has), tuned per kind of name:

- functions (`function_suggestions`): raw and demangled base names; a name that shares every word of
  the one typed is offered too (`uv_tcp_listen` -> `uv__tcp_listen`, libuv's 1.44 rename);
- USDT probes (`probe_not_found`): the `provider:name`s of the file;
- Go (`go_not_found`): pclntab names, the same method on other receivers, and why nothing matched
  (a package that is linked in without that function, or not part of the program at all);
- fixed vocabularies (node's aliases, the JVM's probe names): `close_names` itself.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Collection, Iterable

from utrace.elf.demangle import base_name, display_name, name_parts
from utrace.elf.symbols import SymbolTable
from utrace.errors import NotFoundError
from utrace.model import UsdtProbe

LIMIT = 5  # suggestions offered at most


def name_matcher(pattern: str | None) -> Callable[[str], bool] | None:
    """A predicate for a glob over names; None when everything matches.

    Without a parameter list in the pattern, a demangled C++ name also matches with its parameter list
    ignored, so `node::TCPWrap::Listen` finds `node::TCPWrap::Listen(v8::FunctionCallbackInfo<v8::Value>
    const&)` and `demo::Shape::area` finds every overload (`demo::Shape::operator()` every overload of
    the call operator: its parentheses are its name); a template's leading return type may be left out.
    """
    if pattern is None or pattern in ("*", ""):
        return None
    body = fnmatch.translate(pattern)
    if body.endswith(r"\Z"):
        body = body[:-2]
    if "(" not in pattern or name_parts(pattern)[1] < 0:
        body += r"(?:\(.*)?"
    rx = re.compile(body + r"\Z")
    # A pattern that starts with `*` matches s wherever it matches a suffix of s: the search below
    # could only find what the match did (and costs the square of the name's length: 40 s in node 26)
    starred = pattern.startswith("*")

    def matches(s: str) -> bool:
        if rx.match(s):
            return True
        if starred:
            return False
        # Demangled function templates carry their return type first ("int demo::twice<int>(int)"):
        # a pattern may leave it out. Only names with a space before their parameters can have one.
        # display_name(s) is a suffix of s, so it can match only where a search of s finds a match:
        # that search (in C) first spares the Python scan of the name (node 26: 20 s for uv_tcp_listen)
        paren = s.find("(")
        return paren > 0 and " " in s[:paren] and rx.search(s) is not None and rx.match(display_name(s)) is not None

    return matches


def match_functions(table: SymbolTable, pattern: str | None, start: int = 0) -> list[int]:
    """Indices (from `start` on) of function entries (never `.cold` parts) whose demangled or raw name
    matches (Go's globs for a table named by a Go pclntab)."""
    key = (id(table), pattern or "", start)
    if (known := _matched.get(key)) is not None and known[0] is table:
        return list(known[1])  # asked again (an old libuv name is tried as itself, then as its aliases)
    m = go_name_matcher(pattern) if table.go else name_matcher(pattern)
    if m is None:
        return list(table.entries(start))
    entries: Iterable[int] = table.entries(start)
    assert pattern is not None
    # a test in C first: most names lack the pattern's longest literal (not for Go's names, which a
    # pattern also matches without their type arguments); the few others are decoded one by one
    if not table.go and (text := required_text(pattern)):
        name, raw = table.name_at, table.raw_at
        found = [
            i
            for i in filter(table.holding(text).__contains__, entries)
            if m(n := name(i)) or ((r := raw(i)) != n and m(r))
        ]
    else:
        names, raws = table.names, table.raws
        found = [i for i in entries if m(names[i]) or (raws[i] != names[i] and m(raws[i]))]
    if len(_matched) >= 64:
        _matched.clear()
    _matched[key] = (table, found)
    return list(found)


_matched: dict[tuple[int, str, int], tuple[SymbolTable, list[int]]] = {}  # (table, its matches): tables never change


_GLOB_SPECIAL = re.compile(r"\*|\?|\[!?\]?[^\]]*\]")  # fnmatch's wildcards and [classes] (an unclosed [ is literal)


def required_text(pattern: str) -> str:
    """The longest run of literal characters in a glob: every name `name_matcher(pattern)` accepts
    contains it (a match is a prefix of the name, or of its suffix without a return type)."""
    return max(_GLOB_SPECIAL.split(pattern), key=len)


def share_literal(tables: Iterable[SymbolTable], patterns: list[str]) -> None:
    """Several patterns are about to be tried in turn (an old name, then what it was renamed): the text
    they all contain is looked for once per table, and each pattern then only among its holders
    (`SymbolTable.holding`), so trying three names costs about what one does."""
    texts = [required_text(p) for p in patterns]
    common = _common_text(texts)
    if common:
        for table in tables:
            if not table.go:
                table.holding(common)


def _common_text(texts: list[str]) -> str:
    """The longest text of 3 characters or more that every one of `texts` contains, or ""."""
    shortest = min(texts, key=len, default="")
    for size in range(len(shortest), 2, -1):
        for i in range(len(shortest) - size + 1):
            part = shortest[i : i + size]
            if all(part in t for t in texts):
                return part
    return ""


def match_probes(probes: list[UsdtProbe], pattern: str | None) -> list[UsdtProbe]:
    m = name_matcher(pattern)
    if m is None:
        return probes
    return [p for p in probes if m(p.full_name) or m(p.name)]


def close_names(name: str, pool: Collection[str], limit: int = LIMIT, cutoff: float = 0.75) -> list[str]:
    """The names of `pool` closest to `name`, best first (difflib's similarity ratio >= `cutoff`)."""
    import difflib

    return difflib.get_close_matches(name, pool, n=limit, cutoff=cutoff)


def function_suggestions(tables: Iterable[SymbolTable], name: str, limit: int = LIMIT) -> list[str]:
    """Existing function names closest to a name that matched nothing: raw and demangled base names,
    then names that contain every word of the one typed (uv_tcp_listen -> uv__tcp_listen)."""
    pool: set[str] = set()
    for t in tables:
        for i in t.entries():
            pool.add(t.raws[i])
            if t.names[i] is not t.raws[i]:
                pool.add(base_name(t.names[i]))
    key = name.split("(", 1)[0]
    close = close_names(key, pool, limit)
    if len(close) < limit and "::" not in key:
        parts = [p for p in key.replace("::", "_").split("_") if len(p) > 2]
        extra = sorted(n for n in pool if parts and all(p in n for p in parts) and n not in close)
        close += extra[: limit - len(close)]
    return close


def function_not_found(tables: Iterable[SymbolTable], name: str, where: str) -> NotFoundError:
    return NotFoundError(f"no function matches {name!r} in {where}", function_suggestions(tables, name))


def probe_not_found(probes: Iterable[UsdtProbe], pattern: str, where: str) -> NotFoundError:
    """A `provider:name` pattern no USDT probe matches, with the closest `provider:name`s there are."""
    pool = {p.full_name for p in probes}
    return NotFoundError(f"no USDT probe matches {pattern!r} in {where}", close_names(pattern, pool))


def go_suggestions(names: Collection[str], name: str, limit: int = LIMIT) -> list[str]:
    """Go names closest to `name`, then those that end with its last element (the same function or
    method elsewhere: `main.(*T).Serve` for `main.Serve`)."""
    close = close_names(name, names, limit, cutoff=0.7)
    short = name.rsplit(".", 1)[-1]
    if len(close) < limit and len(short) > 2:
        close += sorted(n for n in names if n.endswith("." + short) and n not in close)[: limit - len(close)]
    return close


def go_not_found(
    names: Collection[str], name: str, base: str, where: str, c_functions: Collection[str] = ()
) -> NotFoundError:
    """A Go name (`base`: without type arguments) that is neither a function nor inlined anywhere: why
    (a C function of the program, unknown package, or a package linked in without that function) and the
    closest names. `c_functions`: the program's C functions (outside Go's function table) `name` matches."""
    if c_functions:
        shown = sorted(c_functions)
        which = ", ".join(shown[:LIMIT]) + (f" and {len(shown) - LIMIT} more" if len(shown) > LIMIT else "")
        what = "a C function" if len(shown) == 1 and shown[0] == name else f"C functions ({which})"
        return NotFoundError(
            f"no Go function {name!r} in {where}: it names {what} of this program, not Go code: "
            "trace C functions with `utrace native`"
        )
    pkg = base.rsplit(".", 1)[0] if "." in base.rsplit("/", 1)[-1] else ""
    pkg = re.sub(r"\.\(\*?[^)]*\)$", "", pkg)
    if pkg and any(n.startswith(pkg + ".") for n in names):
        why = (
            f"no Go function {name!r} in {where}: package {pkg} is linked in, but this function is not "
            "(the linker drops functions nothing calls) and no inlined copy of it was found"
        )
    elif pkg:
        why = f"no Go function {name!r} in {where}: package {pkg} is not part of this program"
    else:
        why = f"no Go function {name!r} in {where} (not in the pclntab, and not inlined anywhere)"
    return NotFoundError(why, go_suggestions(names, name))


# ----------------------------------------------------------------------------- Go names


def bracket_groups(name: str) -> list[tuple[int, int]]:
    """[start, end) of each top-level `[...]` group of a Go symbol name (type arguments)."""
    out: list[tuple[int, int]] = []
    depth = start = 0
    for i, ch in enumerate(name):
        if ch == "[":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
            if depth == 0:
                out.append((start, i + 1))
    return out


def generic_base(name: str) -> str:
    """The generic name of an instantiation: its type-argument groups removed.

    "main.Scale[go.shape.int]" -> "main.Scale", "main.(*Stack[go.shape.string]).Push" ->
    "main.(*Stack).Push"; a name without type arguments is returned as it is.
    """
    groups = bracket_groups(name)
    if not groups:
        return name
    out, pos = [], 0
    for a, b in groups:
        out.append(name[pos:a])
        pos = b
    out.append(name[pos:])
    return "".join(out)


def go_name_matcher(pattern: str | None) -> Callable[[str], bool] | None:
    """A predicate for a name or glob over Go names; None when everything matches.

    Only `*` and `?` are wildcards: `[` (type arguments) and `(*` (a pointer receiver) are literal. A
    generic function's name stands for all its instantiations ("main.Scale" for
    "main.Scale[go.shape.int]"), and so does a glob over it.
    """
    if pattern is None or pattern in ("*", ""):
        return None
    if any(c in pattern for c in "*?["):
        rx = re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".").replace(r"\(.*", r"\(\*"))
        return lambda s: rx.fullmatch(s) is not None or ("[" in s and rx.fullmatch(generic_base(s)) is not None)
    return lambda s: s == pattern or ("[" in s and generic_base(s) == pattern)
