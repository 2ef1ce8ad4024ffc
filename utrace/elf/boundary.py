"""Is a probe address an instruction boundary of the function meant? One check for every runtime.

A uprobe writes a breakpoint byte at its address: in the middle of an instruction it corrupts that
instruction for the live process. Before a probe is armed, `check_boundary` proves three things:

- the function's start is a function entry according to the file's one symbol source (`elf.go.gosyms`:
  the pclntab for a Go program, the ELF symbols otherwise);
- the probe lies in [start, start + size), in an executable segment's file bytes;
- decoding linearly from the start (capstone, x86-64; no byte is skipped as data) lands exactly on the
  probe address. On arm64 every instruction is 4 bytes: the address must be 4-aligned from the start.

Other machines are refused: there is no decoder here to prove anything.
"""

from __future__ import annotations

import bisect
import functools
import os

from utrace.elf.go.gobin import open_binary
from utrace.elf.reader import EM_AARCH64, EM_X86_64, PF_X
from utrace.errors import ElfError

_MAX_FUNCTION = 1 << 24  # bytes decoded at most: no real function is 16 MiB


def check_boundary(
    path: str, address: int, function_start: int, function_size: int, *, offsets: bool = False
) -> str | None:
    """None when a probe at `address` is safe, else the reason it is not (one line, for the user).

    Args:
        path: the ELF file the probe goes into.
        address: the probe's link-time virtual address (what symbol tables and `go tool nm` print), or
            its file offset when `offsets`.
        function_start: the entry of the function the probe belongs to (same kind as `address`).
        function_size: that function's size in bytes.
        offsets: `address` and `function_start` are file offsets (turned into addresses through PT_LOAD).
    """
    try:
        binary = open_binary(path)
    except (ElfError, OSError) as e:
        return f"cannot read {path}: {e}"
    if offsets:
        start_va = binary.offset_to_va(function_start)
        probe_va = binary.offset_to_va(address)
        if start_va is None or probe_va is None:
            return f"file offset {address:#x} or {function_start:#x} is not in a loaded segment of {path}"
        address, function_start = probe_va, start_va
    where = f"{address:#x}"
    if not 0 < function_size <= _MAX_FUNCTION:
        return f"{where}: the function at {function_start:#x} has no usable size ({function_size})"
    if not function_start <= address < function_start + function_size:
        return f"{where} is outside the function [{function_start:#x}, {function_start + function_size:#x})"
    if function_start not in _function_starts(path, *_stat_key(path)):
        return f"{where}: {function_start:#x} is not the start of a function in {os.path.basename(path)}'s symbols"
    seg = next(
        (
            s
            for s in binary.img.segments
            if s.flags & PF_X and s.vaddr <= function_start and address < s.vaddr + s.filesz
        ),
        None,
    )
    if seg is None:
        return f"{where} is not in the executable code of {os.path.basename(path)}"
    machine = binary.img.machine
    if machine == EM_AARCH64:
        if function_start % 4 or (address - function_start) % 4:
            return f"{where} is not on a 4-byte arm64 instruction boundary"
        return None
    if machine != EM_X86_64:
        return f"{where}: no instruction decoder for ELF machine {machine}: cannot prove the boundary"
    end = min(function_start + function_size, seg.vaddr + seg.filesz)
    starts, stop = _x86_starts(path, *_stat_key(path), function_start, end)
    i = bisect.bisect_left(starts, address)
    if i < len(starts) and starts[i] == address:
        return None
    if address >= stop:
        return f"{where}: the bytes at {stop:#x} in the function at {function_start:#x} do not decode as x86-64"
    inside = starts[i - 1]
    return f"{where} is inside the instruction at {inside:#x} (function at {function_start:#x})"


def _stat_key(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _function_starts(path: str, _ino: int, _size: int, _mtime: int) -> frozenset[int]:
    """Entry addresses of every function of the file's one symbol source (empty when unreadable)."""
    from utrace.elf.index import function_table

    try:
        table = function_table(path)
    except (ElfError, OSError):
        return frozenset()
    return frozenset(table.addresses[i] for i in table.entries())


@functools.lru_cache(maxsize=1024)
def _x86_starts(path: str, _ino: int, _size: int, _mtime: int, start: int, end: int) -> tuple[list[int], int]:
    """(addresses of the instructions decoded linearly from `start`, where decoding stopped)."""
    import capstone

    binary = open_binary(path)
    off = binary.img.vaddr_to_offset(start)
    if off is None:
        return [], start
    code = binary.img.read(off, end - start)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.skipdata = False
    starts: list[int] = []
    stop = start
    for addr, size, _mnemonic, _ops in md.disasm_lite(code, start):
        starts.append(addr)
        stop = addr + size
    return starts, stop


__all__ = ["check_boundary"]
