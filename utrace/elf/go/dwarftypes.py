"""Go types from Go's DWARF: each type DIE turned into a `GoType` (kind, size, fields, element) for the tracer.

The Go compiler marks every type with its reflect.Kind (DW_AT_go_kind, cmd/internal/dwarf) and names it
as Go does ("*net/http.Request", "[]uint8", "map[string]int"); base types of older producers without a
kind fall back to DW_AT_encoding. Pointers are followed `POINTER_DEPTH` deep (a `*Response` parameter gets
its fields, their pointers do not), nesting stops at `_MAX_TYPE_NESTING`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from utrace.elf.dwarf import byte_size, die_name, die_ref, member_offset
from utrace.model import GoField, GoKind, GoType

# Go's own DWARF attributes (cmd/internal/dwarf: DW_AT_go_kind = 0x2900, ...).
DW_AT_GO_KIND = 0x2900
DW_AT_GO_KEY = 0x2901
DW_AT_GO_ELEM = 0x2902
DW_AT_GO_PACKAGE_NAME = 0x2905

# reflect.Kind values carried in DW_AT_go_kind.
_KIND_BOOL = 1
_KIND_ARRAY = 17
_KIND_CHAN = 18
_KIND_FUNC = 19
_KIND_INTERFACE = 20
_KIND_MAP = 21
_KIND_PTR = 22
_KIND_SLICE = 23
_KIND_STRING = 24
_KIND_STRUCT = 25
_KIND_UNSAFE_POINTER = 26

_SCALAR_KINDS: dict[int, GoKind] = {_KIND_BOOL: GoKind.BOOL}
_SCALAR_KINDS.update(dict.fromkeys(range(2, 7), GoKind.INT))
_SCALAR_KINDS.update(dict.fromkeys(range(7, 13), GoKind.UINT))
_SCALAR_KINDS.update({13: GoKind.FLOAT, 14: GoKind.FLOAT, 15: GoKind.COMPLEX, 16: GoKind.COMPLEX})
# One machine word whose pointee this module does not describe (abi-internal.md: "pointer, map, chan, func").
_WORD_KINDS = {_KIND_CHAN, _KIND_FUNC, _KIND_MAP, _KIND_UNSAFE_POINTER}
# DW_AT_encoding fallback for base types without DW_AT_go_kind.
_ENCODINGS: dict[int, GoKind] = {
    2: GoKind.BOOL,
    3: GoKind.COMPLEX,
    4: GoKind.FLOAT,
    5: GoKind.INT,
    6: GoKind.INT,
    7: GoKind.UINT,
    8: GoKind.UINT,
}
# How many pointers deep a parameter's type is described (`*Response` gets its fields, their pointers don't).
POINTER_DEPTH = 1
_MAX_TYPE_NESTING = 24  # arrays of structs of arrays ...: deeper than any real Go type, shallower than the stack

# The DIE tags Go writes types with (the linker puts them all into the last "runtime" unit).
TYPE_TAGS = {
    "DW_TAG_base_type",
    "DW_TAG_structure_type",
    "DW_TAG_typedef",
    "DW_TAG_pointer_type",
    "DW_TAG_array_type",
    "DW_TAG_subroutine_type",
    "DW_TAG_unspecified_type",
}


class GoTypeReader:
    """Builds `GoType`s from type DIEs, cached per (offset, pointer depth).

    Args:
        die: the DIE at a .debug_info offset (GoDwarf opens the file on first use).
    """

    def __init__(self, die: Callable[[int], Any]) -> None:
        self._die = die
        self._types: dict[tuple[int, int], GoType] = {}

    def type(self, offset: int, ptr_depth: int, nesting: int) -> GoType:
        """The type at `offset`, pointers followed `ptr_depth` deep; `nesting` counts enclosing types."""
        key = (offset, ptr_depth)
        hit = self._types.get(key)
        if hit is not None:
            return hit
        t = self._build(offset, ptr_depth, nesting)
        self._types[key] = t
        return t

    def strip_typedefs(self, die: Any) -> Any:
        """The DIE a chain of typedefs names (at most 16 deep)."""
        for _ in range(16):
            if die.tag != "DW_TAG_typedef":
                return die
            t = die_ref(die, "DW_AT_type")
            if t is None:
                return die
            die = self._die(t)
        return die

    def _build(self, offset: int, ptr_depth: int, nesting: int) -> GoType:
        die = self._die(offset)
        name = die_name(die) or "?"
        if nesting > _MAX_TYPE_NESTING:
            return GoType(name, GoKind.STRUCT, byte_size(die))
        attrs = die.attributes
        kind_attr = attrs.get(DW_AT_GO_KIND)
        gk = int(kind_attr.value) if kind_attr is not None else None
        tag = die.tag
        if tag == "DW_TAG_typedef":
            return self._typedef(die, name, gk, ptr_depth, nesting)
        size = byte_size(die)
        if gk in _SCALAR_KINDS:
            return GoType(name, _SCALAR_KINDS[gk], size)
        if tag == "DW_TAG_base_type":
            enc = attrs.get("DW_AT_encoding")
            return GoType(name, _ENCODINGS.get(int(enc.value), GoKind.UINT) if enc is not None else GoKind.UINT, size)
        if gk == _KIND_STRING:
            return GoType(name, GoKind.STRING, size or 16)
        if gk == _KIND_INTERFACE:
            empty = name in ("interface {}", "any", "runtime.eface")
            return GoType(name, GoKind.EFACE if empty else GoKind.IFACE, size or 16)
        if gk == _KIND_SLICE:
            return self._slice(die, name, size, ptr_depth, nesting)
        if gk in _WORD_KINDS or tag == "DW_TAG_subroutine_type":
            return GoType(name, GoKind.POINTER, size or 8)
        if tag == "DW_TAG_pointer_type":
            target = die_ref(die, "DW_AT_type")
            elem = None
            if target is not None and ptr_depth > 0:
                elem = self.type(target, ptr_depth - 1, nesting + 1)
            return GoType(name, GoKind.POINTER, size or 8, elem=elem)
        if tag == "DW_TAG_array_type":
            return self._array(die, name, size, ptr_depth, nesting)
        if tag == "DW_TAG_structure_type":
            return self._struct(die, name, size, ptr_depth, nesting)
        return GoType(name, GoKind.STRUCT, size)

    def _typedef(self, die: Any, name: str, gk: int | None, ptr_depth: int, nesting: int) -> GoType:
        target = die_ref(die, "DW_AT_type")
        if name.startswith(".param") and target is not None:
            # a shaped generic body's type parameter (".param1" = go.shape.float64): its shape is the type
            return self.type(target, ptr_depth, nesting + 1)
        if gk in (None, 0) or target is None:
            if target is None:
                return GoType(name, GoKind.STRUCT, 0)
            inner = self.type(target, ptr_depth, nesting + 1)
            return _renamed(inner, name)
        under = self.strip_typedefs(self._die(target))
        size = byte_size(under) or 8
        if gk == _KIND_INTERFACE:
            empty = die_name(under) == "runtime.eface" or name in ("interface {}", "any")
            return GoType(name, GoKind.EFACE if empty else GoKind.IFACE, size or 16)
        if gk in _WORD_KINDS:
            return GoType(name, GoKind.POINTER, 8)
        inner = self.type(target, ptr_depth, nesting + 1)
        return _renamed(inner, name)

    def _slice(self, die: Any, name: str, size: int, ptr_depth: int, nesting: int) -> GoType:
        elem_off = die_ref(die, DW_AT_GO_ELEM)
        if elem_off is None:  # older Go: element type is the pointee of the "array" member
            for child in die.iter_children():
                if child.tag == "DW_TAG_member" and die_name(child) == "array":
                    ptr = die_ref(child, "DW_AT_type")
                    elem_off = die_ref(self._die(ptr), "DW_AT_type") if ptr is not None else None
        elem = self.type(elem_off, min(ptr_depth, 0), nesting + 1) if elem_off is not None else None
        return GoType(name, GoKind.SLICE, size or 24, elem=elem)

    def _array(self, die: Any, name: str, size: int, ptr_depth: int, nesting: int) -> GoType:
        length = 0
        for child in die.iter_children():
            if child.tag == "DW_TAG_subrange_type":
                if "DW_AT_count" in child.attributes:
                    length = int(child.attributes["DW_AT_count"].value)
                elif "DW_AT_upper_bound" in child.attributes:
                    length = int(child.attributes["DW_AT_upper_bound"].value) + 1
                break
        target = die_ref(die, "DW_AT_type")
        elem = self.type(target, ptr_depth, nesting + 1) if target is not None else None
        if not size and elem is not None:
            size = elem.size * length
        return GoType(name, GoKind.ARRAY, size, elem=elem, length=length)

    def _struct(self, die: Any, name: str, size: int, ptr_depth: int, nesting: int) -> GoType:
        fields: list[GoField] = []
        for child in die.iter_children():
            if child.tag != "DW_TAG_member":
                continue
            ft = die_ref(child, "DW_AT_type")
            ftype = self.type(ft, ptr_depth, nesting + 1) if ft is not None else GoType("?", GoKind.STRUCT, 0)
            fields.append(GoField(die_name(child) or "?", member_offset(child) or 0, ftype))
        return GoType(name, GoKind.STRUCT, size, fields=tuple(fields))


def _renamed(t: GoType, name: str) -> GoType:
    if t.name == name:
        return t
    return GoType(name, t.kind, t.size, t.fields, t.elem, t.length)
