"""Go inline trees from the pclntab: every place a function was inlined, without DWARF (Go 1.13+).

Layouts from runtime/symtab.go (inlinedCall) of each release: 1.12-1.19 nodes carry their parent's
index, 1.20+ nodes only the parent's call pc (the runtime's inlineUnwinder).
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

from utrace.elf.go.gobin import GoBinary, corrupt_is_elf_error
from utrace.elf.go.pclntab import MAGIC_120, GoFunc, Pclntab
from utrace.errors import ElfError


@dataclass(frozen=True, slots=True)
class InlinedCall:
    """One place where a function was inlined into another.

    Attributes:
        function: the inlined function's name (what was asked for).
        caller: the name of the out-of-line function that contains the inlined body.
        caller_entry: entry VA of `caller`.
        ranges: [start, end) VA ranges of `caller` whose inline stack contains this inlined call
            (including code of functions inlined further into it), sorted.
        call_pc: VA of an instruction whose source position is the call site (inlinedCall.parentPc).
        depth: 0 when inlined directly into `caller`, 1 when into a function itself inlined into `caller`...
    """

    function: str
    caller: str
    caller_entry: int
    ranges: tuple[tuple[int, int], ...]
    call_pc: int
    depth: int

    @property
    def low_pc(self) -> int:
        return self.ranges[0][0]


def _name_offsets(blob: bytes, start: int, end: int, name: str) -> set[int]:
    """Offsets (relative to `start`) of the C string `name` inside blob[start:end]."""
    want = name.encode()
    found: set[int] = set()
    if blob[start : start + len(want) + 1] == want + b"\0":
        found.add(0)
    needle = b"\0" + want + b"\0"
    pos = start
    while True:
        pos = blob.find(needle, pos, end)
        if pos < 0:
            return found
        found.add(pos + 1 - start)
        pos += 1


def inlined_calls(tab: Pclntab, name: str) -> list[InlinedCall]:
    """Every place where the function `name` was inlined, from the pclntab inline trees (no DWARF needed).

    Raises:
        ElfError: corrupt tables, or a Go version whose inline tree layout is not supported (< 1.13).
    """
    binary = tab.binary
    if binary is None or tab.header is None:
        raise ElfError("pclntab without its binary")
    with corrupt_is_elf_error(tab.path, "Go inline tree"):
        return _inlined_calls(tab, binary, name)


def _inlined_calls(tab: Pclntab, binary: GoBinary, name: str) -> list[InlinedCall]:
    pc_idx, fd_idx = tab.inline_indexes()
    new_layout = tab.magic == MAGIC_120
    node_size = 16 if new_layout else 20
    name_field = 4 if new_layout else 12
    # Name offsets in the table the inline tree refers to: funcnametab (1.16+) or the whole table (1.2).
    targets = _name_offsets(tab.data, *tab.name_table(), name)
    if not targets:
        return []

    # Inline-tree base of every function that has one; node name fields holding a target offset are
    # found with one byte search per target, then attributed to the tree that starts just before them.
    trees: dict[int, list[GoFunc]] = {}
    for fn in tab.functions:
        va = tab.funcdata_va(fn, fd_idx)
        if va is not None:
            trees.setdefault(va, []).append(fn)
    if not trees:
        return []
    bases = sorted(trees)
    lo, hi = bases[0], bases[-1] + (1 << 20)
    seg = next((s for s in binary.img.segments if s.vaddr <= lo < s.vaddr + s.filesz), None)
    if seg is None:
        raise ElfError(f"{tab.path}: Go inline trees are not in the file")
    hi = min(hi, seg.vaddr + seg.filesz)
    region = binary.read_va(lo, hi - lo)
    candidates: set[int] = set()
    for t in targets:
        needle = struct.pack("<i", t)
        pos = 0
        while True:
            pos = region.find(needle, pos)
            if pos < 0:
                break
            va = lo + pos - name_field
            i = bisect.bisect_right(bases, va) - 1
            if i >= 0 and (va - bases[i]) % node_size == 0:
                candidates.add(bases[i])
            pos += 1

    results: list[InlinedCall] = []
    for base in sorted(candidates):
        for fn in trees[base]:
            results.extend(_inlined_in(tab, fn, base, pc_idx, name, targets))
    results.sort(key=lambda c: (c.caller_entry, c.low_pc))
    return results


class _InlineTree:
    """The inline tree of one function: its nodes, read on demand, and the pc spans' inline indexes."""

    def __init__(self, tab: Pclntab, fn: GoFunc, tree_va: int, spans: list[tuple[int, int, int]]) -> None:
        assert tab.binary is not None
        self.binary = tab.binary
        self.path = tab.path
        self.fn = fn
        self.tree_va = tree_va
        self.spans = spans
        self.new_layout = tab.magic == MAGIC_120
        self.node_size = 16 if self.new_layout else 20
        self.nodes: dict[int, tuple[int, int, int]] = {}  # index -> (name offset, parentPc, parent index or -2)

    def node(self, i: int) -> tuple[int, int, int]:
        """(name offset, parentPc, parent index or -2 in the 1.20+ layout) of node `i`."""
        if i not in self.nodes:
            if not 0 <= i < 1 << 20:
                raise ElfError(f"{self.path}: corrupt Go inline tree of {self.fn.name!r} (node {i})")
            raw = self.binary.read_va(self.tree_va + i * self.node_size, self.node_size)
            if self.new_layout:
                # Go 1.20+: funcID u8, _ [3]byte, nameOff i32, parentPc i32, startLine i32 (no parent index).
                _fid, name_off, parent_pc, _line = struct.unpack("<B3xiii", raw)
                self.nodes[i] = (name_off, parent_pc, -2)
            else:
                # Go 1.12-1.19: parent i16, funcID u8, _ byte, file i32, line i32, func_ i32, parentPc i32.
                parent, _fid, _file, _line, name_off, parent_pc = struct.unpack("<hBxiiii", raw)
                self.nodes[i] = (name_off, parent_pc, parent)
        return self.nodes[i]

    def chain(self, i: int) -> list[int]:
        """Node `i` and its parents, innermost first (at most 256)."""
        out: list[int] = []
        while i >= 0 and len(out) < 256:
            out.append(i)
            i = self._parent_of(i)
        return out

    def _parent_of(self, i: int) -> int:
        _name_off, parent_pc, parent = self.node(i)
        if parent != -2:
            return parent
        # 1.20+: the parent is whatever the inline index says at the call site (runtime inlineUnwinder).
        return self._index_at(self.fn.entry + parent_pc)

    def _index_at(self, pc: int) -> int:
        for start, end, val in self.spans:
            if start <= pc < end:
                return val
        return -1


def _inlined_in(tab: Pclntab, fn: GoFunc, tree_va: int, pc_idx: int, name: str, targets: set[int]) -> list[InlinedCall]:
    spans = tab.pcdata_table(fn, pc_idx)
    if not spans:
        return []
    tree = _InlineTree(tab, fn, tree_va, spans)
    # For every pc span: the outermost target node on its inline stack, and its depth.
    per_node: dict[int, list[tuple[int, int]]] = {}
    depth_of: dict[int, int] = {}
    for start, end, val in spans:
        if val < 0:
            continue
        chain = tree.chain(val)
        hit = next((j for j in reversed(chain) if tree.node(j)[0] in targets), None)
        if hit is None:
            continue
        per_node.setdefault(hit, []).append((start, end))
        depth_of[hit] = len(chain) - 1 - chain.index(hit)
    return [
        InlinedCall(
            function=name,
            caller=fn.name,
            caller_entry=fn.entry,
            ranges=_merged(ranges),
            call_pc=fn.entry + tree.node(i)[1],
            depth=depth_of[i],
        )
        for i, ranges in per_node.items()
    ]


def _merged(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The ranges sorted, adjacent ones joined."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)
