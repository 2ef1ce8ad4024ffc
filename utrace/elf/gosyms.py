"""Functions of a Go binary without `.symtab` (`-ldflags='-s -w'`, or stripped): from its pclntab."""

from __future__ import annotations

import struct

from utrace.elf.buildid import file_error
from utrace.elf.gobin import open_binary
from utrace.elf.symbols import SymbolTable
from utrace.errors import ElfError

_GLOBAL = 1


def go_function_table(path: str) -> SymbolTable | None:
    """The pclntab's functions as a SymbolTable (names as Go writes them), or None if `path` is not Go.

    Raises:
        ElfError: a Go binary (Go build info, build ID or runtime.buildVersion) whose build info or pclntab
            is missing or corrupt: an empty listing would hide that.
    """
    try:
        binary = open_binary(path)
    except ElfError:
        return None  # the caller has read the file as ELF already; nothing Go to add
    except OSError as e:
        raise file_error(path, e) from None
    try:
        info = binary.info()
        if info is None:
            return None
        tab = binary.pclntab()
    except (struct.error, IndexError, ValueError, OverflowError) as e:
        raise ElfError(f"{path}: corrupt Go pclntab ({e})") from None
    t = SymbolTable(path, info.build_id)
    for fn in tab.functions:
        t.names.append(fn.name)
        t.raws.append(fn.symbol)
        t.addresses.append(fn.entry)
        t.sizes.append(fn.end - fn.entry)
        t.bindings.append(_GLOBAL)
        t.clones.append("")
    t.segments = [(s.vaddr, s.offset, s.filesz) for s in binary.img.segments]
    return t
