"""C++ demangling through cxxfilt (libstdc++'s __cxa_demangle), bulk and parallel.

Demangling dominates a cold listing of a big binary (node has about 60k distinct mangled names), so
`demangle_many` deduplicates and, for large inputs, splits the work with one forked child: two cores
finish in about half the time. Names that cxxfilt rejects keep their raw spelling.
"""

from __future__ import annotations

import os
import re

_PARALLEL_THRESHOLD = 20000
_CLONE_RE = re.compile(r"(?:\.(?:cold|part|isra|constprop|lto_priv|localalias|llvm)(?:\.\d+)?)+$")


def clone_suffix(raw: str) -> str:
    """The GCC clone suffix of a raw symbol name (".cold", ".part.0", ".isra.0.cold"...), or ""."""
    if "." not in raw:
        return ""
    m = _CLONE_RE.search(raw)
    return m.group(0) if m else ""


def demangle(raw: str) -> str:
    """Demangle one name; the raw name when it is not a C++ name or cxxfilt rejects it."""
    return _demangle_chunk([raw])[0]


def _demangle_chunk(names: list[str]) -> list[str]:
    import cxxfilt

    d = cxxfilt.default_demangler.demangleb
    out: list[str] = []
    append = out.append
    for n in names:
        if n.startswith("_Z"):
            try:
                append(d(n.encode()).decode("utf-8", "replace"))
            except Exception:  # cxxfilt.InvalidName and friends: keep the raw spelling
                append(n)
        else:
            append(n)
    return out


def demangle_many(names: list[str]) -> list[str]:
    """Demangle a list of names, preserving order, deduplicated and in parallel when large."""
    unique = list({n for n in names if n.startswith("_Z")})
    import cxxfilt  # noqa: F401 - loaded once before a fork, not once per process

    mapping: dict[str, str]
    if len(unique) >= _PARALLEL_THRESHOLD and (os.cpu_count() or 1) > 1:
        mapping = _parallel(unique)
    else:
        mapping = dict(zip(unique, _demangle_chunk(unique), strict=True))
    get = mapping.get
    return [get(n, n) for n in names]


def _parallel(unique: list[str]) -> dict[str, str]:
    half = len(unique) // 2
    first, second = unique[:half], unique[half:]
    # The child gets one bytes object, not 30k str objects: touching their reference counts would
    # copy-on-write half of the parent's heap.
    blob = "\0".join(second).encode("utf-8", "surrogateescape")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: demangle the second half, send it back, exit without cleanup handlers
        try:
            os.close(r)
            names = blob.decode("utf-8", "surrogateescape").split("\0")
            out = "\0".join(_demangle_chunk(names)).encode("utf-8", "surrogateescape")
            view = memoryview(out)
            while view:
                n = os.write(w, view)
                view = view[n:]
        finally:
            os._exit(0)
    os.close(w)
    mine = _demangle_chunk(first)
    chunks = []
    with os.fdopen(r, "rb") as pipe:
        while True:
            b = pipe.read(1 << 20)
            if not b:
                break
            chunks.append(b)
    os.waitpid(pid, 0)
    theirs = b"".join(chunks).decode("utf-8", "surrogateescape").split("\0")
    if len(theirs) != len(second):  # the child failed: do it here rather than lose names
        theirs = _demangle_chunk(second)
    result = dict(zip(first, mine, strict=True))
    result.update(zip(second, theirs, strict=True))
    return result


def base_name(demangled: str) -> str:
    """`ns::f(int) const` -> `ns::f`: a demangled name without its parameter list."""
    depth = 0
    for i, ch in enumerate(demangled):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and i > 0:
            return demangled[:i]
    return demangled


def display_name(demangled: str) -> str:
    """A C++ name as people write it: parameters kept (they tell overloads apart), a template's
    leading return type dropped: "long demo::twice<long>(long)" -> "demo::twice<long>(long)"."""
    depth = 0
    cut = -1
    for i, ch in enumerate(demangled):
        if ch == "(" and depth == 0 and i > 0:
            break
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        elif ch == " " and depth == 0 and not demangled[:i].endswith("operator"):
            cut = i
    return demangled[cut + 1 :] if cut >= 0 else demangled
