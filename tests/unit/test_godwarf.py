"""utrace.elf.dwarf and utrace.elf.go.godwarf without binaries: the DWARF expression decoder, register names, the CFA
interpreter and type classification, from hand-assembled bytes and synthetic DIE trees."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utrace.elf.dwarf import (
    FrameLoc,
    FrameTable,
    Piece,
    RegLoc,
    Unavailable,
    decode_location,
    dwarf_reg_name,
)
from utrace.elf.go.godwarf import GoDwarf, package_of
from utrace.errors import ElfError
from utrace.model import GoKind

# ------------------------------------------------------------------------------------------- encoders
# Written from the DWARF 4 spec (section 7.6 LEB128, 7.7.1 opcodes), independent of the decoder.


def uleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def sleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if (v == 0 and not b & 0x40) or (v == -1 and b & 0x40):
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


DW_OP_addr, DW_OP_consts, DW_OP_plus, DW_OP_plus_uconst = 0x03, 0x11, 0x22, 0x23
DW_OP_reg0, DW_OP_breg0, DW_OP_regx, DW_OP_fbreg, DW_OP_piece = 0x50, 0x70, 0x90, 0x91, 0x93
DW_OP_call_frame_cfa, DW_OP_stack_value = 0x9C, 0x9F


def reg(n: int) -> bytes:
    return bytes([DW_OP_reg0 + n]) if n < 32 else bytes([DW_OP_regx]) + uleb(n)


def fbreg(off: int) -> bytes:
    return bytes([DW_OP_fbreg]) + sleb(off)


def piece(size: int) -> bytes:
    return bytes([DW_OP_piece]) + uleb(size)


# ------------------------------------------------------------------------------------------- registers


def test_x86_64_register_numbers_follow_the_psabi() -> None:
    # System V AMD64 psABI, figure 3.36 "DWARF Register Number Mapping".
    want = ["rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp"] + [f"r{i}" for i in range(8, 16)]
    assert [dwarf_reg_name(i) for i in range(16)] == want
    assert dwarf_reg_name(16) == "rip"
    assert [dwarf_reg_name(i) for i in range(17, 33)] == [f"xmm{i}" for i in range(16)]
    assert dwarf_reg_name(33) is None
    assert dwarf_reg_name(-1) is None


def test_aarch64_register_numbers() -> None:
    assert dwarf_reg_name(0, "aarch64") == "x0"
    assert dwarf_reg_name(30, "aarch64") == "x30"
    assert dwarf_reg_name(31, "aarch64") == "sp"
    assert dwarf_reg_name(64, "aarch64") == "v0"
    assert dwarf_reg_name(32, "aarch64") is None


def test_go_abi_integer_registers_map_to_their_names() -> None:
    # abi-internal.md amd64 integer argument order and its DWARF numbers (DataDog irgen/abi.go).
    assert [dwarf_reg_name(n) for n in (0, 3, 2, 5, 4, 8, 9, 10, 11)] == [
        "rax",
        "rbx",
        "rcx",
        "rdi",
        "rsi",
        "r8",
        "r9",
        "r10",
        "r11",
    ]


# ------------------------------------------------------------------------------------------- expressions


def test_single_register_is_one_whole_piece() -> None:
    assert decode_location(reg(0)) == (Piece(0, RegLoc(0, "rax")),)


def test_string_in_two_registers() -> None:
    assert decode_location(reg(0) + piece(8) + reg(3) + piece(8)) == (
        Piece(8, RegLoc(0, "rax")),
        Piece(8, RegLoc(3, "rbx")),
    )


def test_readelf_examples_from_the_httpget_fixture() -> None:
    # "DW_OP_reg4 (rsi); DW_OP_piece: 8; DW_OP_piece: 8": second word optimized out
    assert decode_location(reg(4) + piece(8) + piece(8)) == (
        Piece(8, RegLoc(4, "rsi")),
        Piece(8, Unavailable("optimized out")),
    )
    # "DW_OP_fbreg: -400; DW_OP_piece: 8; DW_OP_reg5 (rdi); DW_OP_piece: 8"
    assert decode_location(fbreg(-400) + piece(8) + reg(5) + piece(8)) == (
        Piece(8, FrameLoc(-400)),
        Piece(8, RegLoc(5, "rdi")),
    )
    # Go 1.15 ABI0: "DW_OP_call_frame_cfa; DW_OP_piece: 8; DW_OP_fbreg: 8; DW_OP_piece: 8"
    assert decode_location(bytes([DW_OP_call_frame_cfa]) + piece(8) + fbreg(8) + piece(8)) == (
        Piece(8, FrameLoc(0)),
        Piece(8, FrameLoc(8)),
    )


@pytest.mark.parametrize(
    ("expr", "offset"),
    [
        (bytes([DW_OP_call_frame_cfa]), 0),
        (bytes([DW_OP_call_frame_cfa, DW_OP_consts]) + sleb(16) + bytes([DW_OP_plus]), 16),
        (bytes([DW_OP_call_frame_cfa, DW_OP_consts]) + sleb(-24) + bytes([DW_OP_plus]), -24),
        (bytes([DW_OP_call_frame_cfa, DW_OP_plus_uconst]) + uleb(300), 300),
        (bytes([DW_OP_call_frame_cfa, 0x38, DW_OP_plus]), 8),  # DW_OP_lit8
        (fbreg(-472), -472),
    ],
)
def test_frame_relative_forms(expr: bytes, offset: int) -> None:
    assert decode_location(expr) == (Piece(0, FrameLoc(offset)),)


def test_regx_reaches_xmm_registers() -> None:
    assert decode_location(reg(17)) == (Piece(0, RegLoc(17, "xmm0")),)
    assert decode_location(bytes([DW_OP_regx]) + uleb(32)) == (Piece(0, RegLoc(32, "xmm15")),)


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        (b"", "optimized out"),
        (piece(8), "optimized out"),
        (bytes([DW_OP_breg0 + 7]) + sleb(8), "DW_OP_breg"),
        (bytes([DW_OP_addr]) + struct.pack("<Q", 0x5000), "fixed address"),
        (bytes([0x38, DW_OP_stack_value]), "DW_OP_stack_value"),
        (bytes([DW_OP_regx]) + uleb(99), "register 99"),
        (bytes([0xFF]), "malformed"),
        (bytes([DW_OP_fbreg]), "malformed"),
        (bytes([DW_OP_fbreg, 0x80]), "malformed"),
        (bytes([DW_OP_addr, 1, 2]), "malformed"),
        (bytes([DW_OP_plus]), "short stack"),
    ],
)
def test_unsupported_or_broken_is_unavailable_with_a_reason(expr: bytes, reason: str) -> None:
    loc = decode_location(expr)
    assert len(loc) == 1
    where = loc[0].where
    assert isinstance(where, Unavailable)
    assert reason in where.reason


def test_one_unsupported_piece_leaves_the_others_readable() -> None:
    loc = decode_location(bytes([DW_OP_breg0]) + sleb(0) + piece(8) + reg(3) + piece(8))
    assert isinstance(loc[0].where, Unavailable) and loc[0].size == 8
    assert loc[1] == Piece(8, RegLoc(3, "rbx"))


_where = st.one_of(
    st.integers(0, 16).map(lambda n: ("reg", n)),
    st.integers(17, 32).map(lambda n: ("reg", n)),
    st.integers(-(1 << 20), 1 << 20).map(lambda n: ("frame", n)),
    st.just(("none", 0)),
)


@given(st.lists(st.tuples(st.integers(1, 64), _where), min_size=1, max_size=6))
def test_encoded_pieces_decode_to_themselves(pieces: list[tuple[int, tuple[str, int]]]) -> None:
    expr = b""
    want = []
    for size, (kind, n) in pieces:
        if kind == "reg":
            expr += reg(n)
            name = dwarf_reg_name(n)
            assert name is not None
            want.append(Piece(size, RegLoc(n, name)))
        elif kind == "frame":
            expr += fbreg(n)
            want.append(Piece(size, FrameLoc(n)))
        else:
            want.append(Piece(size, Unavailable("optimized out")))
        expr += piece(size)
    assert decode_location(expr) == tuple(want)


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    loc = decode_location(data)
    assert isinstance(loc, tuple) and len(loc) >= 1
    for p in loc:
        assert isinstance(p, Piece) and p.size >= 0
        assert isinstance(p.where, RegLoc | FrameLoc | Unavailable)
        if isinstance(p.where, RegLoc):
            assert p.where.name == dwarf_reg_name(p.where.regno)


# ------------------------------------------------------------------------------------------- package names


@pytest.mark.parametrize(
    ("func", "pkg"),
    [
        ("main.Greet", "main"),
        ("main.(*T).M", "main"),
        ("net/http.(*Client).Do", "net/http"),
        ("net/http.Get", "net/http"),
        ("github.com/a/b.c/d.F", "github.com/a/b.c/d"),
        ("main.Map[go.shape.*net/http.Request]", "main"),
        ("runtime.g", "runtime"),
    ],
)
def test_package_of(func: str, pkg: str) -> None:
    assert package_of(func) == pkg


# ------------------------------------------------------------------------------------------- .debug_frame


def cie(caf: int = 1, daf: int = -4, ra: int = 16, insns: bytes = b"") -> bytes:
    body = struct.pack("<I", 0xFFFFFFFF) + bytes([3]) + b"\0" + uleb(caf) + sleb(daf) + uleb(ra) + insns
    body += b"\0" * (-len(body) % 4)
    return struct.pack("<I", len(body)) + body


def fde(cie_off: int, start: int, size: int, insns: bytes) -> bytes:
    body = struct.pack("<IQQ", cie_off, start, size) + insns
    body += b"\0" * (-len(body) % 4)
    return struct.pack("<I", len(body)) + body


DW_CFA_def_cfa, DW_CFA_def_cfa_offset_sf, DW_CFA_offset_extended = 0x0C, 0x13, 0x05
DW_CFA_advance_loc1, DW_CFA_remember_state, DW_CFA_restore_state = 0x02, 0x0A, 0x0B


def go_like_frame() -> bytes:
    # What Go's linker writes (readelf --debug-dump=frames on the fixtures): CIE "def_cfa r7 ofs 8",
    # FDE "def_cfa_offset_sf" steps with data alignment -4.
    c = cie(insns=bytes([DW_CFA_def_cfa]) + uleb(7) + uleb(8) + bytes([DW_CFA_offset_extended]) + uleb(16) + uleb(2))
    insns = (
        bytes([DW_CFA_def_cfa_offset_sf])
        + sleb(-2)  # 8
        + bytes([0x40 | 10])  # advance_loc 10
        + bytes([DW_CFA_def_cfa_offset_sf])
        + sleb(-138)  # 552
        + bytes([DW_CFA_remember_state, DW_CFA_advance_loc1, 200])
        + bytes([DW_CFA_def_cfa_offset_sf])
        + sleb(-2)  # 8 (the RET in the middle)
        + bytes([0x40 | 1, DW_CFA_restore_state])  # back to 552
    )
    return c + fde(0, 0x1000, 0x300, insns) + fde(0, 0x2000, 0x10, b"")


def test_cfa_rows_like_readelf_frames_interp() -> None:
    t = FrameTable(go_like_frame(), "x")
    assert t.cfa(0x0FFF) is None
    assert t.cfa(0x1000) == (7, 8)
    assert t.cfa(0x1009) == (7, 8)
    assert t.cfa(0x100A) == (7, 552)
    assert t.cfa(0x100A + 199) == (7, 552)
    assert t.cfa(0x100A + 200) == (7, 8)
    assert t.cfa(0x100A + 201) == (7, 552)
    assert t.cfa(0x12FF) == (7, 552)
    assert t.cfa(0x1300) is None  # between FDEs
    assert t.cfa(0x2000) == (7, 8)  # only the CIE's initial instructions
    assert t.cfa(0x2010) is None


def test_cfa_unknown_instruction_is_no_answer_not_a_guess() -> None:
    c = cie(insns=bytes([DW_CFA_def_cfa]) + uleb(7) + uleb(8))
    data = c + fde(0, 0x1000, 0x10, bytes([0x3F]))  # 0x3f: not a DW_CFA opcode
    t = FrameTable(data, "x")
    assert t.cfa(0x1000) is None


def test_truncated_frame_section_is_an_elf_error() -> None:
    data = go_like_frame()
    with pytest.raises(ElfError, match=r"corrupt \.debug_frame"):
        FrameTable(data[:-5], "bin")


@settings(max_examples=200)
@given(st.binary(max_size=200), st.integers(0, 0x3000))
def test_frame_table_on_garbage_raises_only_elf_error(data: bytes, pc: int) -> None:
    try:
        t = FrameTable(go_like_frame()[:32] + data, "x")
    except ElfError:
        return
    rule = t.cfa(pc)
    assert rule is None or (isinstance(rule[0], int) and isinstance(rule[1], int))


# ------------------------------------------------------------------------------------------- types


@dataclass
class FakeAttr:
    value: Any
    form: str = "DW_FORM_data1"


@dataclass
class FakeCU:
    cu_offset: int = 0


@dataclass
class FakeDie:
    offset: int
    tag: str
    attributes: dict[Any, FakeAttr]
    children: list[FakeDie] = field(default_factory=list)
    cu: FakeCU = field(default_factory=FakeCU)

    @property
    def has_children(self) -> bool:
        return bool(self.children)

    def iter_children(self) -> Any:
        return iter(self.children)


class FakeDwarf:
    def __init__(self) -> None:
        self.dies: dict[int, FakeDie] = {}

    def add(self, tag: str, name: str | None, kind: int | None = None, size: int | None = None, **refs: Any) -> int:
        off = len(self.dies) * 16 + 16
        attrs: dict[Any, FakeAttr] = {}
        if name is not None:
            attrs["DW_AT_name"] = FakeAttr(name.encode(), "DW_FORM_string")
        if kind is not None:
            attrs[0x2900] = FakeAttr(kind)
        if size is not None:
            attrs["DW_AT_byte_size"] = FakeAttr(size, "DW_FORM_udata")
        for key, value in refs.items():
            if key == "type":
                attrs["DW_AT_type"] = FakeAttr(value, "DW_FORM_ref_addr")
            elif key == "elem":
                attrs[0x2902] = FakeAttr(value, "DW_FORM_ref_addr")
            elif key == "encoding":
                attrs["DW_AT_encoding"] = FakeAttr(value)
        self.dies[off] = FakeDie(off, tag, attrs)
        return off

    def member(self, parent: int, name: str, type_off: int, loc: Any) -> None:
        form = "DW_FORM_udata" if isinstance(loc, int) else "DW_FORM_block1"
        attrs = {
            "DW_AT_name": FakeAttr(name.encode(), "DW_FORM_string"),
            "DW_AT_type": FakeAttr(type_off, "DW_FORM_ref_addr"),
            "DW_AT_data_member_location": FakeAttr(loc, form),
        }
        self.dies[parent].children.append(FakeDie(-1, "DW_TAG_member", attrs))

    def subrange(self, parent: int, count: int) -> None:
        self.dies[parent].children.append(FakeDie(-1, "DW_TAG_subrange_type", {"DW_AT_count": FakeAttr(count)}))

    def get_DIE_from_refaddr(self, offset: int) -> FakeDie:  # pyelftools spells it so
        return self.dies[offset]


def go_dwarf_over(fake: FakeDwarf) -> GoDwarf:
    g = GoDwarf("/synthetic")
    g._opened = True
    g._dwarf = fake
    return g


def test_types_classified_by_go_kind() -> None:
    f = FakeDwarf()
    u8 = f.add("DW_TAG_base_type", "uint8", 8, 1, encoding=8)
    i64 = f.add("DW_TAG_base_type", "int", 2, 8, encoding=5)
    f32 = f.add("DW_TAG_base_type", "float32", 13, 4, encoding=4)
    noknd = f.add("DW_TAG_base_type", "bool", None, 1, encoding=2)  # encoding fallback
    pu8 = f.add("DW_TAG_pointer_type", "*uint8", 22, None, type=u8)
    string = f.add("DW_TAG_structure_type", "string", 24, 16)
    f.member(string, "str", pu8, 0)
    f.member(string, "len", i64, 8)
    named_string = f.add("DW_TAG_structure_type", "runtime.errorString", 24, 16)
    slice_ = f.add("DW_TAG_structure_type", "[]uint8", 23, 24, elem=u8)
    old_slice = f.add("DW_TAG_structure_type", "[]uint8", 23, 24)  # no DW_AT_go_elem: use the array member
    f.member(old_slice, "array", pu8, 0)
    eface = f.add("DW_TAG_structure_type", "runtime.eface", 25, 16)
    iface = f.add("DW_TAG_structure_type", "runtime.iface", 25, 16)
    eface_td = f.add("DW_TAG_typedef", "runtime.eface", None, None, type=eface)
    empty = f.add("DW_TAG_typedef", "interface {}", 20, None, type=eface_td)
    error = f.add("DW_TAG_typedef", "error", 20, None, type=iface)
    error_alias = f.add("DW_TAG_typedef", "error", None, None, type=error)
    any_named = f.add("DW_TAG_typedef", "main.Any", 20, None, type=eface)  # a named empty interface
    map_ = f.add("DW_TAG_typedef", "map[string]int", 21, None, type=pu8)
    chan = f.add("DW_TAG_typedef", "chan int", 18, None, type=pu8)
    fn = f.add("DW_TAG_subroutine_type", "func()", 19, 8)
    unsafe = f.add("DW_TAG_pointer_type", "unsafe.Pointer")
    arr = f.add("DW_TAG_array_type", "[512]uint8", 17, 512, type=u8)
    f.subrange(arr, 512)
    g = go_dwarf_over(f)

    def t(off: int) -> tuple[str, GoKind, int]:
        gt = g._type(off, 1, 0)
        return gt.name, gt.kind, gt.size

    assert t(u8) == ("uint8", GoKind.UINT, 1)
    assert t(i64) == ("int", GoKind.INT, 8)
    assert t(f32) == ("float32", GoKind.FLOAT, 4)
    assert t(noknd) == ("bool", GoKind.BOOL, 1)
    assert t(string) == ("string", GoKind.STRING, 16)
    assert t(named_string) == ("runtime.errorString", GoKind.STRING, 16)
    assert t(slice_) == ("[]uint8", GoKind.SLICE, 24)
    assert g._type(slice_, 1, 0).elem is not None and g._type(slice_, 1, 0).elem.name == "uint8"  # type: ignore[union-attr]
    old = g._type(old_slice, 1, 0)
    assert old.kind == GoKind.SLICE and old.elem is not None and old.elem.name == "uint8"
    assert t(empty) == ("interface {}", GoKind.EFACE, 16)
    assert t(any_named) == ("main.Any", GoKind.EFACE, 16)
    assert t(error) == ("error", GoKind.IFACE, 16)
    assert t(error_alias) == ("error", GoKind.IFACE, 16)
    assert t(map_) == ("map[string]int", GoKind.POINTER, 8)
    assert t(chan) == ("chan int", GoKind.POINTER, 8)
    assert t(fn) == ("func()", GoKind.POINTER, 8)
    assert t(unsafe) == ("unsafe.Pointer", GoKind.POINTER, 8)
    a = g._type(arr, 1, 0)
    assert (a.kind, a.size, a.length) == (GoKind.ARRAY, 512, 512)
    assert a.elem is not None and a.elem.name == "uint8"
    p = g._type(pu8, 1, 0)
    assert p.elem is not None and p.elem.name == "uint8"
    assert g._type(pu8, 0, 0).elem is None  # pointer budget spent: no pointee


def test_recursive_struct_through_a_pointer_is_finite() -> None:
    f = FakeDwarf()
    i64 = f.add("DW_TAG_base_type", "int", 2, 8)
    node = f.add("DW_TAG_structure_type", "main.Node", 25, 16)
    pnode = f.add("DW_TAG_pointer_type", "*main.Node", 22, 8, type=node)
    f.member(node, "next", pnode, 0)
    f.member(node, "val", i64, bytes([0x23]) + uleb(8))  # exprloc member offset: DW_OP_plus_uconst 8
    g = go_dwarf_over(f)
    t = g._type(pnode, 1, 0)
    assert t.kind == GoKind.POINTER and t.elem is not None
    assert [(x.name, x.offset) for x in t.elem.fields] == [("next", 0), ("val", 8)]
    inner = t.elem.fields[0].type
    assert inner.name == "*main.Node" and inner.elem is None


def test_struct_member_offset_with_expression_location(monkeypatch: pytest.MonkeyPatch) -> None:
    f = FakeDwarf()
    i64 = f.add("DW_TAG_base_type", "int64", 6, 8)
    gs = f.add("DW_TAG_structure_type", "runtime.g", 25, 400)
    f.member(gs, "stack", i64, 0)
    f.member(gs, "goid", i64, bytes([0x23]) + uleb(152))
    g = go_dwarf_over(f)
    g._cus = [(0, "runtime", None)]
    monkeypatch.setattr(g, "_find_type_by_name_bytes", lambda name: None)  # no section bytes to search here
    from utrace.elf.go.godwarf import _CUIndex

    g._indexes[0] = _CUIndex("runtime", 0, {}, {}, [], {"runtime.g": gs})
    assert g.struct_member_offset("runtime.g", "goid") == 152
    assert g.struct_member_offset("runtime.g", "stack") == 0
    assert g.struct_member_offset("runtime.g", "nope") is None
    assert g.struct_member_offset("runtime.m", "goid") is None
