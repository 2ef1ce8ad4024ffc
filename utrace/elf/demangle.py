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


def base_name(demangled: str) -> str:
    """`ns::f(int) const` -> `ns::f`: a demangled name without its parameter list (`operator()`'s own
    parentheses are part of the name)."""
    depth = 0
    for i, ch in enumerate(demangled):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and i > 0 and not demangled[:i].endswith("operator"):
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
