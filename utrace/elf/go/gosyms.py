"""The one symbol source of a Go program: its pclntab, plus the C functions an external link adds.

`index.function_table` (what listing, tracing, completion and stack symbolisation use) and `utrace go`
take Go names from here, so they agree: a Go program is named by its pclntab whenever the file is Go,
stripped or not, and even when its ELF tables hold some C symbols (a cgo program linked externally, as
every Go program Debian builds: its `.dynsym` names a few cgo helpers and no Go function). ELF function
symbols outside the Go functions' address range (the C part: cgo's runtime, libgcc, crt) are kept, with
their ELF names; ELF symbols inside it are the Go functions again and are dropped. Any other file is
named by its ELF symbols.
"""

from __future__ import annotations

import struct

from utrace.elf.buildid import file_error
from utrace.elf.go.gobin import open_binary
from utrace.elf.symbols import SymbolTable
from utrace.errors import ElfError

_GLOBAL = 1


def is_go_program(path: str) -> bool:
    """Cheap test (no symbol table read): the file carries a Go build ID note or Go build info.

    Go before 1.13 with neither is recognised later, by `go_function_table`, when it has no ELF functions.
    """
    try:
        binary = open_binary(path)
        return binary.build_id() is not None or binary.buildinfo_blob() is not None
    except (ElfError, OSError, struct.error, IndexError, ValueError, OverflowError):
        return False


def go_function_table(path: str, elf: SymbolTable | None = None) -> SymbolTable | None:
    """The pclntab's functions as a SymbolTable (names as Go writes them), or None if `path` is not Go.

    `elf`, the file's ELF function symbols, adds those outside the Go functions' range (the C part of a
    cgo program) after the Go functions.

    Raises:
        ElfError: a Go binary (Go build info, build ID or runtime.buildVersion) whose build info or pclntab
            is missing or corrupt, or whose text base cannot be proven: an empty or shifted listing would
            hide that.
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
    t.go = True
    full = _instance_names(elf) if elf is not None and any("[...]" in fn.name for fn in tab.functions) else {}
    for fn in tab.functions:
        name = full.get(fn.entry, fn.name) if "[...]" in fn.name else fn.name
        t.names.append(name)
        t.raws.append(fn.symbol if name is fn.name else name)
        t.addresses.append(fn.entry)
        t.sizes.append(fn.end - fn.entry)
        t.bindings.append(_GLOBAL)
        t.clones.append("")
    if elf is not None and tab.functions:
        lo, hi = tab.functions[0].entry, tab.functions[-1].end
        names, raws = elf.names, elf.raws
        for i in elf.entries():
            a = elf.addresses[i]
            if lo <= a < hi:
                continue
            t.names.append(names[i])
            t.raws.append(raws[i])
            t.addresses.append(a)
            t.sizes.append(elf.sizes[i])
            t.bindings.append(elf.bindings[i])
            t.clones.append(elf.clones[i])
    t.segments = [(s.vaddr, s.offset, s.filesz) for s in binary.img.segments]
    return t


def _instance_names(elf: SymbolTable) -> dict[int, str]:
    """Entry -> ELF name of each generic instantiation the ELF symbols spell out.

    Go 1.18-1.19 pclntabs name every instantiation "F[...]"; the ELF symbol at the same entry has the
    full name ("main.Scale[go.shape.int_0]", as `go tool nm` and DWARF have it). A stripped file keeps
    the pclntab's "F[...]".
    """
    full: dict[int, str] = {}
    names, addresses = elf.names, elf.addresses
    for i in elf.entries():
        name = names[i]
        if "[" in name and "[...]" not in name:
            full.setdefault(addresses[i], name)
    return full
