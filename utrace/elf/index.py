"""The per-module symbol index, cached by GNU build-id.

A cold read of node (about 86k distinct functions, 66k C++ names to demangle) is dominated by
demangling; the cache stores the finished columns with `marshal`, the fastest (de)serialiser in the
standard library for lists of str and int, so a warm listing only reads one file. Files without a
build-id are keyed by path, size and mtime instead; a build-id is paired with the file's size, because a
stripped copy keeps the build-id of the file it was stripped from.
"""

from __future__ import annotations

import marshal
import os
from array import array
from collections.abc import Callable
from typing import Any

from utrace.cache import CacheJob, cache_dir, read_sealed, seal, write_jobs
from utrace.elf.buildid import file_error, read_build_id
from utrace.elf.reader import ElfImage
from utrace.elf.symbols import SymbolTable, read_symbols

_FORMAT = 3  # 3: a CRC-32 of the marshal data precedes it


def _key(path: str, build_id: str | None) -> str:
    st = os.stat(path)
    if build_id:
        # `strip` and `objcopy` keep the build-id and drop symbols: the size tells those copies apart
        return f"buildid-{build_id}-{st.st_size}"
    import hashlib  # here: loading OpenSSL costs 5 ms, and most files have a build-id

    raw = f"{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}".encode()
    return "file-" + hashlib.sha1(raw).hexdigest()


def cache_key(path: str) -> str:
    """The key of `path`'s derived data in the cache: its build-id, else its path, size and mtime.

    Raises:
        ElfError: missing or unreadable file.
    """
    try:
        return _key(path, read_build_id(path))
    except OSError as e:
        raise file_error(path, e) from None


def symbols_for(
    path: str,
    *,
    use_cache: bool = True,
    on_cold: Callable[[str], None] | None = None,
    defer_write: list[CacheJob] | None = None,
    first_part: Callable[[SymbolTable], None] | None = None,
) -> SymbolTable:
    """The function symbols of the ELF file at `path`, from the cache when it has them.

    Args:
        path: the file to read (for a process, a path under /proc/PID/root).
        use_cache: read and write the on-disk cache.
        on_cold: called with the path before a cold (uncached) read, e.g. to show progress.
        defer_write: a cold read appends its cache file write here instead of writing it, for the
            caller to hand to `cache.write_behind` (see there).
        first_part: passed to `read_symbols` on a cold read (see there).

    Raises:
        ElfError: missing, unreadable, non-ELF or corrupt file.
    """
    try:
        build_id = read_build_id(path)
    except OSError as e:
        raise file_error(path, e) from None
    file = cache_dir() / f"symbols-v{_FORMAT}-{_key(path, build_id)}.marshal"
    if use_cache:
        table = _load(file, path, build_id)
        if table is not None:
            return table
    if on_cold is not None:
        on_cold(path)
    with ElfImage(path) as image:
        table = read_symbols(image, build_id, first_part)
    if use_cache:
        job = (file, lambda: seal(marshal.dumps(_pack(table))))
        if defer_write is not None:
            defer_write.append(job)
        else:
            write_jobs([job])
    return table


def _pack(t: SymbolTable) -> tuple[Any, ...]:
    # Few large objects load far faster than 200k small ones: strings are joined with NUL (which no
    # symbol name contains), integers packed as machine words.
    raws = ["" if r == n else r for r, n in zip(t.raws, t.names, strict=True)]
    return (
        _FORMAT,
        "\0".join(t.names),
        "\0".join(raws),
        array("Q", t.addresses).tobytes(),
        array("Q", t.sizes).tobytes(),
        bytes(t.bindings),
        "\0".join(t.clones),
        t.segments,
    )


def _load(file: os.PathLike[str], path: str, build_id: str | None) -> SymbolTable | None:
    body = read_sealed(file)
    if body is None:
        return None
    # marshal trusts the counts it reads: one flipped byte in a tuple or list header makes it allocate
    # and fill gigabytes (a minute, or MemoryError) before it finds the data short. read_sealed's
    # checksum rejects a damaged file first; loads() (not load()) bounds string lengths too.
    try:
        payload = marshal.loads(body)
        fmt, names_blob, raws_blob, addr_bytes, size_bytes, bindings, clones_blob, segments = payload
        if fmt != _FORMAT:
            return None
        names = names_blob.split("\0") if names_blob else []
        raws = [r or n for r, n in zip(raws_blob.split("\0"), names, strict=True)] if names else []
        addresses = array("Q", addr_bytes).tolist()
        sizes = array("Q", size_bytes).tolist()
        clones = clones_blob.split("\0") if names else []
        if not (len(addresses) == len(sizes) == len(bindings) == len(clones) == len(names)):
            return None
        binding_list = list(bytes(bindings))
        segment_list = [(int(a), int(b), int(c)) for a, b, c in segments]
    except (OSError, EOFError, ValueError, TypeError, AttributeError):
        return None
    return SymbolTable(
        module=path,
        build_id=build_id,
        names=names,
        raws=raws,
        addresses=addresses,
        sizes=sizes,
        bindings=binding_list,
        clones=clones,
        segments=segment_list,
    )
