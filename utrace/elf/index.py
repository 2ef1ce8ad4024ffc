"""The per-module symbol index, cached by GNU build-id.

A cold read of node (about 86k distinct functions, 66k C++ names to demangle) is dominated by
demangling; the cache stores the finished columns with `marshal`, the fastest (de)serialiser in the
standard library for lists of str and int, so a warm listing only reads one file. Files without a
build-id are keyed by path, size and mtime instead.
"""

from __future__ import annotations

import hashlib
import marshal
import os
from collections.abc import Callable

from utrace.cache import cache_dir, write_atomic
from utrace.elf.buildid import read_build_id
from utrace.elf.reader import ElfImage
from utrace.elf.symbols import SymbolTable, read_symbols
from utrace.errors import ElfError

_FORMAT = 1


def _key(path: str, build_id: str | None) -> str:
    if build_id:
        return f"buildid-{build_id}"
    st = os.stat(path)
    raw = f"{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}".encode()
    return "file-" + hashlib.sha1(raw).hexdigest()


def symbols_for(
    path: str, *, use_cache: bool = True, on_cold: Callable[[str], None] | None = None
) -> SymbolTable:
    """The function symbols of the ELF file at `path`, from the cache when it has them.

    Args:
        path: the file to read (for a process, a path under /proc/PID/root).
        use_cache: read and write the on-disk cache.
        on_cold: called with the path before a cold (uncached) read, e.g. to show progress.

    Raises:
        ElfError: missing, unreadable, non-ELF or corrupt file.
    """
    try:
        build_id = read_build_id(path)
    except IsADirectoryError:
        raise ElfError(f"{path}: is a directory, not an ELF file") from None
    except FileNotFoundError:
        raise ElfError(f"{path}: no such file") from None
    except PermissionError:
        raise ElfError(f"{path}: permission denied") from None
    except OSError as e:
        raise ElfError(f"{path}: cannot read: {e.strerror}") from None
    file = cache_dir() / f"symbols-v{_FORMAT}-{_key(path, build_id)}.marshal"
    if use_cache:
        table = _load(file, path, build_id)
        if table is not None:
            return table
    if on_cold is not None:
        on_cold(path)
    with ElfImage(path) as image:
        table = read_symbols(image, build_id)
    if use_cache:
        payload = (
            _FORMAT,
            table.names,
            table.raws,
            table.addresses,
            table.sizes,
            table.bindings,
            table.clones,
            table.segments,
        )
        try:
            write_atomic(file, marshal.dumps(payload))
        except OSError:
            pass  # a read-only or full cache only costs speed
    return table


def _load(file: os.PathLike[str], path: str, build_id: str | None) -> SymbolTable | None:
    try:
        with open(file, "rb") as f:
            payload = marshal.load(f)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(payload, tuple) or len(payload) != 8 or payload[0] != _FORMAT:
        return None
    _v, names, raws, addresses, sizes, bindings, clones, segments = payload
    return SymbolTable(
        module=path,
        build_id=build_id,
        names=names,
        raws=raws,
        addresses=addresses,
        sizes=sizes,
        bindings=bindings,
        clones=clones,
        segments=[tuple(s) for s in segments],
    )
