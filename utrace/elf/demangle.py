"""C++ demangling with libstdc++'s __cxa_demangle, bulk and parallel.

Demangling dominates a cold listing of a big binary (node has about 66k C++ names). cxxfilt finds
libstdc++ and wraps __cxa_demangle, but its per-name wrapper costs about 3 µs on top of the 0.8 µs the
demangling itself takes, and its library search runs `ldconfig -p` at import (about 15 ms). So bulk
demangling calls the same __cxa_demangle through ctypes directly, loading libstdc++ by its soname;
cxxfilt stays the fallback when that soname cannot be loaded. Large inputs are split with one forked
child: two cores finish in about half the time. Names that the demangler rejects keep their raw
spelling.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from utrace.store.parallel import ChildFailed, in_child, worth_a_child

_PARALLEL_THRESHOLD = 20000
_CLONE_RE = re.compile(r"(?:\.(?:cold|part|isra|constprop|lto_priv|localalias|llvm)(?:\.\d+)?)+$")


def clone_suffix(raw: str) -> str:
    """The GCC clone suffix of a raw symbol name (".cold", ".part.0", ".isra.0.cold"...), or ""."""
    if "." not in raw:
        return ""
    m = _CLONE_RE.search(raw)
    return m.group(0) if m else ""


def demangle(raw: str) -> str:
    """Demangle one name; the raw name when it is not a C++ name or the demangler rejects it."""
    return demangle_many([raw])[0]


def demangle_many(names: list[str]) -> list[str]:
    """Demangle a list of names, preserving order (in parallel when large)."""
    out = demangle_bytes([n.encode("utf-8", "surrogateescape") for n in names])
    return [n.decode("utf-8", "surrogateescape") for n in out]


def demangle_bytes(names: list[bytes]) -> list[bytes]:
    """Demangle raw (undecoded) names, preserving order: in two processes when the list is large.

    The names must not contain NUL (no ELF string does).
    """
    if len(names) < _PARALLEL_THRESHOLD or not worth_a_child():
        return demangle_serial(names)
    cut = len(names) // 2
    demangle_serial([])  # load the library once, before the fork
    collect = in_child(lambda: b"\0".join(demangle_serial(names[cut:])))
    mine = demangle_serial(names[:cut])
    try:
        theirs = collect().split(b"\0")
        if len(theirs) == len(names) - cut:
            return mine + theirs
    except ChildFailed:
        pass
    return mine + demangle_serial(names[cut:])  # do it here rather than lose names


_Demangler = Callable[[list[bytes]], list[bytes]]
_chunk_impl: _Demangler | None = None


def demangle_serial(names: list[bytes]) -> list[bytes]:
    global _chunk_impl
    if _chunk_impl is None:
        _chunk_impl = _make_demangler()
    return _chunk_impl(names)


def _make_demangler() -> _Demangler:
    import ctypes

    try:
        cxx = ctypes.CDLL("libstdc++.so.6")
        libc = ctypes.CDLL("libc.so.6")
        cxa = cxx.__cxa_demangle
        malloc = libc.malloc
    except (OSError, AttributeError):
        return _cxxfilt_demangler()
    # One foreign call per name: __cxa_demangle writes into a malloc'd buffer of ours and returns it,
    # read as bytes by the c_char_p result type. The arguments go without `argtypes` (a ctypes buffer
    # object, byref pointers, bytes: converted in C, which halves the cost of a call). A name that
    # does not fit (64 KiB or longer) makes it free our buffer and return a new block, whose address
    # c_char_p does not keep (that block is left; it happens for almost no name): it reports the new
    # size in `length`, and a fresh buffer goes into the same argument object before the next call.
    malloc.restype = ctypes.c_void_p
    malloc.argtypes = [ctypes.c_size_t]
    cxa.restype = ctypes.c_char_p
    size = 1 << 16
    status = ctypes.byref(ctypes.c_int())

    def run(names: list[bytes]) -> list[bytes]:
        buf = ctypes.c_void_p(malloc(size))
        length = ctypes.c_size_t(size)
        length_p = ctypes.byref(length)

        def renew(r: bytes) -> bytes:
            buf.value = malloc(size)
            length.value = size
            if not buf.value:
                raise MemoryError("malloc failed")
            return r

        if not buf.value:
            raise MemoryError("malloc failed")
        try:
            # ELF names hold no NUL, which the char* conversion would cut at
            return [
                (r if length.value == size else renew(r))
                if n.startswith(b"_Z") and (r := cxa(n, buf, length_p, status)) is not None
                else n
                for n in names
            ]
        finally:
            libc.free(buf)

    return run


def _cxxfilt_demangler() -> _Demangler:
    import cxxfilt

    d = cxxfilt.default_demangler.demangleb

    def run(names: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for n in names:
            try:
                out.append(d(n) if n.startswith(b"_Z") else n)
            except Exception:  # cxxfilt.InvalidName and friends: keep the raw spelling
                out.append(n)
        return out

    return run


# The <operator-name>s of the Itanium C++ ABI (section 5.1.5) as libiberty's demangler prints them after
# `operator`: symbols directly (`operator<<=`), lowercase words after a space (`operator new[]`). Longest
# first, so `operator<<=` is not read as `operator<` and `operator->*` not as `operator->`.
# fmt: off
_SYMBOL_OPERATORS = (
    "->*", "<<=", ">>=", "<=>",
    "+=", "-=", "*=", "/=", "%=", "^=", "&=", "|=", "<<", ">>", "==", "!=", "<=", ">=", "&&", "||", "++", "--",
    "->", "()", "[]",
    "+", "-", "*", "/", "%", "^", "&", "|", "~", "!", "=", "<", ">", ",",
)
# fmt: on
_WORD_OPERATORS = ("new[]", "delete[]", "new", "delete", "co_await")
_OPEN = "<([{"
_CLOSE = ">)]}"
_KEYWORD = "operator"


def _ident(s: str, i: int) -> bool:
    return 0 <= i < len(s) and (s[i].isalnum() or s[i] == "_" or s[i] == "$")


def _is_operator(s: str, i: int) -> bool:
    """`s[i:]` starts with the keyword `operator` (not `my_operator`, not `operators`)."""
    return s.startswith(_KEYWORD, i) and not _ident(s, i - 1) and not _ident(s, i + len(_KEYWORD))


# What the scanners below stop at: brackets, and the keyword `operator` as a whole word (the rest is
# skipped by the regex engine: most of a long name is identifiers)
_BRACKET_OR_OPERATOR = re.compile(r"[<(\[{>)\]}]|(?<![\w$])operator(?![\w$])")
_NAME_TOKEN = re.compile(r"[<(\[{ ]|(?<![\w$])operator(?![\w$])")


def _group_end(s: str, i: int) -> int:
    """Index just past the bracket group opening at s[i] (any of `<([{`, nested, operator names skipped);
    -1 when it is not closed."""
    depth = 0
    search = _BRACKET_OR_OPERATOR.search
    while (m := search(s, i)) is not None:
        tok = m.group()
        if tok == _KEYWORD:
            i = _operator_end(s, m.start())
            continue
        i = m.end()
        if tok in _OPEN:
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return i
    return -1


def operator_at(s: str, i: int) -> int:
    """When an operator name (`operator<`, `operator new[]`, `operator unsigned long`) starts at s[i]:
    the index just past it; -1 otherwise."""
    return _operator_end(s, i) if _is_operator(s, i) else -1


def _conversion_end(s: str, i: int) -> int:
    """Index just past the type of a conversion operator starting at s[i] (`unsigned long`,
    `char const*`, `std::basic_string<...>`, `void (*)()`): up to its parameter list's `(`."""
    n = len(s)
    while i < n:
        ch = s[i]
        if ch == "(":
            if s[i + 1 : i + 2] not in ("*", "&", "^") and not re.match(r"\(\w[\w:]*::\*", s[i:]):
                return i  # the parameter list
            end = _group_end(s, i)  # a declarator, `(*)`, and the function type's own parameters
            if end < 0:
                return n
            i = end
            if s.startswith("(", i):
                end = _group_end(s, i)
                i = n if end < 0 else end
            continue
        if ch in _OPEN:
            end = _group_end(s, i)
            if end < 0:
                return n
            i = end
            continue
        i += 1
    return n


def _operator_end(s: str, i: int) -> int:
    """Index just past the operator name starting at s[i] (`operator<`, `operator new[]`,
    `operator unsigned long`, `operator"" _km`); a template argument list after it is not included,
    but the space the demangler puts before one after a `<` (`operator< <int>`) is."""
    j = i + len(_KEYWORD)
    end = j
    for tok in _SYMBOL_OPERATORS:
        if s.startswith(tok, j):
            end = j + len(tok)
            break
    else:
        if s.startswith('""', j):  # a literal operator: `operator"" _km`
            end = j + 2
            if s.startswith(" ", end):
                end += 1
            while _ident(s, end):
                end += 1
        elif s.startswith(" ", j) and j + 1 < len(s):
            k = j + 1
            for word in _WORD_OPERATORS:
                if s.startswith(word, k) and not _ident(s, k + len(word)):
                    end = k + len(word)
                    break
            else:
                end = _conversion_end(s, k)
    if s[end - 1] == "<" and s.startswith(" <", end):
        end += 1
    return end


_QUALIFIER = re.compile(r"(?: (?:const|volatile|&&|&))*::")


def name_parts(demangled: str) -> tuple[int, int, int]:
    """(start, paren, close) of a demangled function name: where the name starts after a function
    template's return type, the index of its parameter list's `(` and of the matching `)` (-1 for
    either when absent or not closed).

    Operator names are read as names: `<` in `operator<` opens no template argument list, the `()`
    of `operator()` is no parameter list, the spaces in `operator unsigned long` or `operator new`
    start no name. A parenthesised group followed by `::` is part of the name too: a function-local
    entity's scope (`f(int)::Local::g()`) or `(anonymous namespace)::`.
    """
    start = 0
    i = 0
    search = _NAME_TOKEN.search
    while (m := search(demangled, i)) is not None:
        tok = m.group()
        i = m.start()
        if tok == _KEYWORD:
            i = _operator_end(demangled, i)
            continue
        if tok == " ":
            start = i = i + 1
            continue
        end = _group_end(demangled, i)
        if tok != "(":
            if end < 0:
                return start, -1, -1
            i = end
            continue
        if end < 0:
            return start, (i if i > 0 else -1), -1
        scope = _QUALIFIER.match(demangled, end)
        if scope is None and i > 0 and not demangled[:i].rstrip().endswith("decltype"):
            return start, i, end - 1
        i = scope.end() if scope else end
    return start, -1, -1


def base_name(demangled: str) -> str:
    """`ns::f(int) const` -> `ns::f`: a demangled name without its parameter list (operator names
    kept whole: `ns::S::operator<`, `ns::S::operator()`, `ns::S::operator unsigned long`)."""
    _start, paren, _close = name_parts(demangled)
    return demangled[:paren] if paren > 0 else demangled


def display_name(demangled: str) -> str:
    """A C++ name as people write it: parameters kept (they tell overloads apart), a template's
    leading return type dropped: "long demo::twice<long>(long)" -> "demo::twice<long>(long)"."""
    return demangled[name_parts(demangled)[0] :]
