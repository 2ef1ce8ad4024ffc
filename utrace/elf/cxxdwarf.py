"""Whether C++ functions are non-static members (take `this` in rdi), from DWARF.

A mangled name does not say whether `geo::canvas::draw(int)` is a member of a class `geo::canvas` or
a free function in a namespace, nor whether a member is static. DWARF does: the definition of a
non-static member function (or the declaration it points to with DW_AT_specification, or the
abstract instance it points to with DW_AT_abstract_origin) has DW_AT_object_pointer or an artificial
first formal parameter; a static member is declared inside a DW_TAG_class_type/structure_type
without one; a free function's declaration sits in a namespace or the compile unit.

Only the compile unit that covers an address is read (found through `.debug_aranges` when the file
has it), never every DIE of a big file.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from utrace.elf.buildid import check_elf_magic, file_error
from utrace.elf.reader import ElfImage
from utrace.process import procfs

_CLASS_TAGS = {"DW_TAG_class_type", "DW_TAG_structure_type", "DW_TAG_union_type"}
_MAX_DIES = 400_000  # DIEs read per question at most, when there are no aranges to narrow the search


def _attr_die(die: Any, name: str) -> Any | None:
    if name not in die.attributes:
        return None
    try:
        return die.get_DIE_from_attribute(name)
    except Exception:  # a reference outside the unit pyelftools cannot follow: treat as absent
        return None


def _first_param_artificial(die: Any) -> bool | None:
    """True/False for a DIE whose first formal parameter is/is not artificial, None with no parameter."""
    for child in die.iter_children():
        if child.tag != "DW_TAG_formal_parameter":
            continue
        seen = child
        for _ in range(4):  # a concrete parameter refers to its abstract one
            attr = seen.attributes.get("DW_AT_artificial")
            if attr is not None:
                return bool(attr.value)
            nxt = _attr_die(seen, "DW_AT_abstract_origin")
            if nxt is None:
                break
            seen = nxt
        return False
    return None


def member_of_die(die: Any) -> bool | None:
    """Whether a DW_TAG_subprogram is a non-static member function; None when DWARF does not say."""
    chain = [die]
    cur = die
    for _ in range(6):
        nxt = _attr_die(cur, "DW_AT_abstract_origin") or _attr_die(cur, "DW_AT_specification")
        if nxt is None or any(nxt.offset == c.offset for c in chain):
            break
        chain.append(nxt)
        cur = nxt
    for d in chain:
        if "DW_AT_object_pointer" in d.attributes:
            return True
    params = [p for p in (_first_param_artificial(d) for d in chain) if p is not None]
    if any(params):
        return True
    decl = chain[-1]
    parent = decl.get_parent()
    if parent is not None and parent.tag in _CLASS_TAGS:
        return False  # declared in a class without an object pointer: a static member function
    if parent is not None and parent.tag in ("DW_TAG_namespace", "DW_TAG_compile_unit", "DW_TAG_partial_unit"):
        return False
    return None


def _low_pc(die: Any) -> int | None:
    attr = die.attributes.get("DW_AT_low_pc")
    return int(attr.value) if attr is not None and isinstance(attr.value, int) else None


def cxx_members(path: str, functions: Iterable[tuple[int, str]]) -> dict[int, bool] | None:
    """{address: is a non-static member} for the (address, raw symbol) pairs DWARF describes.

    Returns None when the file has no DWARF at all; addresses DWARF says nothing about are absent.

    Raises:
        ElfError: the file cannot be read or its DWARF is corrupt.
    """
    from elftools.elf.elffile import ELFFile  # imported here: pyelftools costs ~50 ms to import
    from elftools.elf.sections import Section

    wanted = dict(functions)
    try:
        f = procfs.open_file(path)  # in the process's root, no FIFO, size-capped; closed below
    except OSError as e:
        raise file_error(path, e) from None
    try:
        check_elf_magic(f.read(64), path)
        f.seek(0)
        with ElfImage(path) as image:  # utrace's own header reader: no DWARF, no pyelftools
            if image.section(".debug_info") is None and image.section(".zdebug_info") is None:
                return None

        def scan() -> dict[int, bool]:
            elf = ELFFile(f)
            # pyelftools parses a whole .gnu.hash table each time it walks the sections by name (0.09 s
            # for node, several times per question); DWARF never needs it, so it stays a plain section
            elf.__dict__["_make_gnu_hash_section"] = lambda header, name: Section(header, name, elf)
            return _scan(elf.get_dwarf_info(), wanted)

        from utrace.elf.dwarf import guard

        return guard(path, scan)  # whatever pyelftools raises on a corrupt file: one ElfError
    finally:
        f.close()


def _scan(dwarf: Any, wanted: dict[int, str]) -> dict[int, bool]:
    out: dict[int, bool] = {}
    units: list[Any] = []
    aranges = dwarf.get_aranges()
    if aranges is not None:
        offsets = set()
        for addr in wanted:
            try:
                offsets.add(aranges.cu_offset_at_addr(addr))
            except Exception:  # not covered: that function has no DWARF
                continue
        units = [dwarf.get_CU_at(off) for off in sorted(o for o in offsets if o is not None)]
    else:
        units = list(dwarf.iter_CUs())
    budget = _MAX_DIES
    for cu in units:
        for die in cu.iter_DIEs():
            budget -= 1
            if budget < 0:
                return out
            if die.tag != "DW_TAG_subprogram":
                continue
            pc = _low_pc(die)
            if pc is None or pc not in wanted or pc in out:
                continue
            m = member_of_die(die)
            if m is not None:
                out[pc] = m
    return out
