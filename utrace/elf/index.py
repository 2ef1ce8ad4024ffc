"""The per-module symbol index, cached by the file's identity and content.

A cold read of node (about 86k distinct functions, 66k C++ names to demangle) is dominated by
demangling; the cache stores the finished columns with `marshal`, the fastest (de)serialiser in the
standard library for lists of str and int, so a warm listing only reads one file.

Cached addresses become uprobe offsets, so an entry must describe exactly the file it is used for. A
build-id alone does not prove that: anyone can build a file with another file's build-id and size
(a traced process's library, say) and, once utrace has read it, the entry for that build-id would
place probes in the real file at the forged addresses. So entries are keyed by the file itself: its
device, inode, size, modification and change times (the change time cannot be set by a user), with
its build-id; the entry repeats these and its load segments, which are compared with the file on
every read. Entries live only in a trusted cache directory (`cache.trusted_cache_dir`).
"""

from __future__ import annotations

import marshal
import os
from array import array
from collections.abc import Callable
from typing import Any

from utrace.elf.buildid import build_id_of, file_error
from utrace.elf.reader import ElfImage
from utrace.elf.symbols import SymbolTable, load_segments, read_symbols
from utrace.errors import ElfError
from utrace.process import procfs
from utrace.store.cache import CacheJob, read_sealed, seal, trusted_cache_dir, write_behind, write_jobs

_FORMAT = 4  # 4: keyed by identity, which the entry repeats; 3: a CRC-32 of the marshal data precedes it

_WRITE_BEHIND_COUNT = 20000  # functions; below that, writing the cache file here costs a few ms
Identity = tuple[str, int, int, int, int, int]  # build-id or "", size, device, inode, mtime_ns, ctime_ns


def _identity(st: os.stat_result, build_id: str | None) -> Identity:
    return (build_id or "", st.st_size, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


def _key(ident: Identity) -> str:
    # (a hostile build-id can be long: the first 64 digits name the file, the entry holds all of it)
    bid, size, dev, ino, mtime, ctime = ident
    return f"{bid[:64] or 'none'}-{size}-{dev:x}-{ino:x}-{mtime:x}-{ctime:x}"


def cache_key(path: str) -> str:
    """The key of `path`'s derived data in the cache (see the module doc).

    Raises:
        ElfError: missing, unreadable or non-ELF file.
    """
    try:
        with procfs.open_file(path) as f:
            return _key(_identity(os.fstat(f.fileno()), build_id_of(f, path)))
    except OSError as e:
        raise file_error(path, e) from None


def symbols_for(
    path: str,
    *,
    use_cache: bool = True,
    on_cold: Callable[[str], None] | None = None,
    defer_write: list[CacheJob] | None = None,
    first_part: Callable[[SymbolTable], None] | None = None,
    identity: tuple[int, int] | None = None,
) -> SymbolTable:
    """The function symbols of the ELF file at `path`, from the cache when it has them.

    Args:
        path: the file to read (for a process, a path under /proc/PID/root), opened once with
            `procfs.open_file`; key, check and cold read all use that one descriptor.
        use_cache: read and write the on-disk cache.
        on_cold: called with the path before a cold (uncached) read, e.g. to show progress.
        defer_write: a cold read appends its cache file write here instead of writing it, for the
            caller to hand to `cache.write_behind` (see there).
        first_part: passed to `read_symbols` on a cold read (see there).
        identity: (st_dev, st_ino) the opened file must have (the file a process maps).

    Raises:
        ElfError: missing, unreadable, non-ELF or corrupt file, or not the file `identity` names.
    """
    try:
        f = procfs.open_file(path)
    except OSError as e:
        raise file_error(path, e) from None
    try:
        st = os.fstat(f.fileno())
        if identity is not None and (st.st_dev, st.st_ino) != identity:
            raise ElfError(f"{path}: not the file the process maps (replaced since)")
        build_id = build_id_of(f, path)
    except OSError as e:
        f.close()
        raise file_error(path, e) from None
    except BaseException:
        f.close()
        raise
    ident = _identity(st, build_id)
    if use_cache and (known := _read.get((path, ident))) is not None:
        f.close()  # read already by this process (node's is asked for twice: 0.4 s each)
        return known
    cache = trusted_cache_dir() if use_cache else None
    file = cache / f"symbols-v{_FORMAT}-{_key(ident)}.marshal" if cache is not None else None
    with ElfImage(path, f) as image:
        if file is not None:
            table = _load(file, path, ident, image)
            if table is not None:
                _remember(path, ident, table)
                return table
        if on_cold is not None:
            on_cold(path)
        table = read_symbols(image, build_id, first_part)
    if use_cache:
        _remember(path, ident, table)
    if file is not None:
        job = (file, lambda: seal(marshal.dumps(_pack(table, ident))))
        if defer_write is not None:
            defer_write.append(job)
        elif len(table) >= _WRITE_BEHIND_COUNT:  # packing node 26's takes 0.5-1.5 s: a child does it
            write_behind([job])
        else:
            write_jobs([job])
    return table


_read: dict[tuple[str, Identity], SymbolTable] = {}  # this process's tables (never changed once read)


def _remember(path: str, ident: Identity, table: SymbolTable) -> None:
    if len(_read) >= 32:
        _read.clear()
    _read[(path, ident)] = table


def _pack(t: SymbolTable, ident: Identity) -> tuple[Any, ...]:
    # Few large objects load far faster than 200k small ones: strings are joined with NUL (which no
    # symbol name contains), integers packed as machine words.
    raws = ["" if r == n else r for r, n in zip(t.raws, t.names, strict=True)]
    return (
        _FORMAT,
        ident,
        "\0".join(t.names),
        "\0".join(raws),
        array("Q", t.addresses).tobytes(),
        array("Q", t.sizes).tobytes(),
        bytes(t.bindings),
        "\0".join(t.clones),
        t.segments,
    )


def _load(file: os.PathLike[str], path: str, ident: Identity, image: ElfImage) -> SymbolTable | None:
    body = read_sealed(file)
    if body is None:
        return None
    # marshal trusts the counts it reads: one flipped byte in a tuple or list header makes it allocate
    # and fill gigabytes (a minute, or MemoryError) before it finds the data short. read_sealed's
    # checksum rejects a damaged file first; loads() (not load()) bounds string lengths too.
    try:
        payload = marshal.loads(body)
        fmt, stored, names_blob, raws_blob, addr_bytes, size_bytes, bindings, clones_blob, segments = payload
        if fmt != _FORMAT or tuple(stored) != ident:
            return None  # an entry for another file (a key collision, or a file changed in place)
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
    if segment_list != load_segments(image):
        return None  # not this file's layout: addresses from it would be offsets in another file
    return SymbolTable(
        module=path,
        build_id=ident[0] or None,
        names=names,
        raws=raws,
        addresses=addresses,
        sizes=sizes,
        bindings=binding_list,
        clones=clones,
        segments=segment_list,
    )


def function_table(
    path: str,
    *,
    use_cache: bool = True,
    on_cold: Callable[[str], None] | None = None,
    defer_write: list[CacheJob] | None = None,
    first_part: Callable[[SymbolTable], None] | None = None,
    identity: tuple[int, int] | None = None,
) -> SymbolTable:
    """The functions of the file at `path`, from its one symbol source: what listing, tracing, stack
    symbolisation and completion all use, so they agree.

    A Go program (a Go build ID or build info, or no ELF function symbols at all and a pclntab) is
    named by its pclntab plus the ELF functions outside the Go text (`gosyms.go_function_table`); any
    other file by its ELF function symbols (`.symtab`, else `.dynsym`, as `symbols_for` reads them).
    The arguments are those of `symbols_for`; `first_part` is called only for a file named by its ELF
    symbols. With `identity`, the Go table is read only while `path` still names that file.

    Raises:
        ElfError: as `symbols_for`; also a Go program whose pclntab is corrupt or whose text base
            cannot be proven.
    """
    from utrace.elf.go.gosyms import go_function_table, is_go_program

    go = is_go_program(path)
    elf = symbols_for(
        path,
        use_cache=use_cache,
        on_cold=on_cold,
        defer_write=defer_write,
        first_part=None if go else first_part,
        identity=identity,
    )
    if not go and len(elf):
        return elf
    if identity is not None:
        st = procfs.identity(path)
        if st is None or (st.st_dev, st.st_ino) != identity:
            return elf  # replaced since: its pclntab is not the mapped file's
    return go_function_table(path, elf) or elf
