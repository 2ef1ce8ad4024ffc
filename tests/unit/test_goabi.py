"""The Go ABI engine against the worked examples of abi-internal.md and hand-checked disassembly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hangs import no_hang
from utrace.model import ArgKind, GoField, GoKind, GoType
from utrace.runtimes.go.goabi import REGABI_AMD64, STACK_AMD64, UnsupportedArch, abi_for, alignment, assign

STRING = GoType("string", GoKind.STRING, 16)
INT = GoType("int", GoKind.INT, 8)
INT32 = GoType("int32", GoKind.INT, 4)
BOOL = GoType("bool", GoKind.BOOL, 1)
F64 = GoType("float64", GoKind.FLOAT, 8)
ERROR = GoType("error", GoKind.IFACE, 16)
PTR = GoType("*net/http.Response", GoKind.POINTER, 8)
BYTE = GoType("uint8", GoKind.UINT, 1)
BYTES = GoType("[]uint8", GoKind.SLICE, 24, elem=BYTE)


def arr(n: int, elem: GoType) -> GoType:
    return GoType(f"[{n}]{elem.name}", GoKind.ARRAY, n * elem.size, elem=elem, length=n)


def where(a):
    return [p.reg if p.reg is not None else p.stack for p in a.parts]


def test_http_get_register_abi():
    args, res = assign([("url", STRING)], [("resp", PTR), ("err", ERROR)], REGABI_AMD64)
    assert where(args[0]) == ["rax", "rbx"]
    # results start again from the first register
    assert [where(r) for r in res] == [["rax"], ["rbx", "rcx"]]


def test_http_get_stack_abi():
    args, res = assign([("url", STRING)], [("resp", PTR), ("err", ERROR)], STACK_AMD64)
    assert where(args[0]) == [8, 16]
    assert [where(r) for r in res] == [[24], [32, 40]]


def test_backfill_after_a_value_that_does_not_fit():
    # abi-internal.md: a..d take 8 registers, e needs 2 with 1 left -> stack; g back-fills r11
    params = [(n, STRING) for n in "abcd"] + [("e", STRING), ("g", INT)]
    args, _ = assign(params, [], REGABI_AMD64)
    assert [where(a) for a in args[:4]] == [["rax", "rbx"], ["rcx", "rdi"], ["rsi", "r8"], ["r9", "r10"]]
    assert where(args[4]) == [8, 16] and not args[4].in_registers
    assert where(args[5]) == ["r11"]


def test_arrays_longer_than_one_go_on_the_stack():
    args, res = assign([("x", arr(2, INT)), ("y", INT)], [("r0", INT)], REGABI_AMD64)
    assert where(args[0]) == [8, 16]
    assert where(args[1]) == ["rax"]
    assert where(res[0]) == ["rax"]
    one, _ = assign([("x", arr(1, INT))], [], REGABI_AMD64)
    assert where(one[0]) == ["rax"]


def test_greet_matches_its_disassembly():
    # go1.19 main.Greet: the error path returns `mov %rax,%rcx; mov %rbx,%rdi; xor %eax; xor %ebx; ret`
    args, res = assign([("name", STRING), ("n", INT)], [("r0", STRING), ("r1", ERROR)], REGABI_AMD64)
    assert [where(a) for a in args] == [["rax", "rbx"], ["rcx"]]
    assert [where(r) for r in res] == [["rax", "rbx"], ["rcx", "rdi"]]
    # go1.15: `mov 0x98(%rsp),%rax` after `add $-0x80,%rsp` reads n at entry sp + 0x18
    args, res = assign([("name", STRING), ("n", INT)], [("r0", STRING), ("r1", ERROR)], STACK_AMD64)
    assert [where(a) for a in args] == [[8, 16], [24]]
    assert [where(r) for r in res] == [[32, 40], [48, 56]]


def test_fib_pad_on_the_stack_and_n_in_a_register():
    args, _res = assign([("n", INT), ("pad", arr(512, BYTE))], [("r0", INT)], REGABI_AMD64)
    assert where(args[0]) == ["rax"]
    assert args[1].stack == 8 and not args[1].in_registers
    stack_args, stack_res = assign([("n", INT), ("pad", arr(512, BYTE))], [("r0", INT)], STACK_AMD64)
    assert where(stack_args[0]) == [8]
    assert stack_args[1].stack == 16
    assert where(stack_res[0]) == [8 + 8 + 512]


def test_floats_use_their_own_registers():
    args, _ = assign([("a", F64), ("b", INT), ("c", F64)], [], REGABI_AMD64)
    assert [where(a) for a in args] == [["xmm0"], ["rax"], ["xmm1"]]
    assert args[0].parts[0].is_float


def test_structs_are_flattened_and_aligned_on_the_stack():
    s = GoType("main.S", GoKind.STRUCT, 16, fields=(GoField("A", 0, BOOL), GoField("B", 8, INT)))
    args, _ = assign([("s", s)], [], REGABI_AMD64)
    assert [(p.path, p.reg) for p in args[0].parts] == [(".A", "rax"), (".B", "rbx")]
    args, _ = assign([("x", INT32), ("s", s)], [], STACK_AMD64)
    assert where(args[0]) == [8]
    assert args[1].stack == 16  # aligned to 8 after the 4-byte int32
    assert where(args[1]) == [16, 24]


def test_slices_and_too_many_values():
    params = [(f"b{i}", BYTES) for i in range(4)]
    args, _ = assign(params, [], REGABI_AMD64)
    assert where(args[0]) == ["rax", "rbx", "rcx"]
    assert where(args[2]) == ["r9", "r10", "r11"]
    assert where(args[3]) == [8, 16, 24]


def test_zero_sized_values_take_nothing():
    empty = GoType("struct {}", GoKind.STRUCT, 0)
    args, _ = assign([("e", empty), ("n", INT)], [], REGABI_AMD64)
    assert where(args[0]) == [] and where(args[1]) == ["rax"]


def test_alignment():
    assert alignment(INT32) == 4 and alignment(STRING) == 8 and alignment(arr(3, INT32)) == 4


def test_only_amd64_has_tables():
    assert abi_for("amd64", True) is REGABI_AMD64
    assert abi_for("amd64", False) is STACK_AMD64
    with pytest.raises(UnsupportedArch):
        abi_for("arm64", True)


# --- Damaged or hostile types: bounded work, every value accounted for -------------------------------


def _self_holding(depth: int, leaf: GoType) -> GoType:
    """What a damaged DWARF can describe: a struct holding two copies of itself by value, `depth` deep
    (a tree of 2**depth leaves; godwarf stops the nesting at 24)."""
    t = leaf
    for i in range(depth):
        t = GoType(f"main.S{i}", GoKind.STRUCT, 2 * t.size, fields=(GoField("a", 0, t), GoField("b", t.size, t)))
    return t


@pytest.mark.parametrize("leaf", [INT, GoType("struct {}", GoKind.STRUCT, 0), STRING])
def test_a_type_tree_of_millions_of_nodes_is_walked_in_bounded_time(leaf):
    import time

    from utrace.runtimes.go.goargs import MAX_FIELDS, captures

    huge = _self_holding(24, leaf)
    start = time.monotonic()
    for abi in (REGABI_AMD64, STACK_AMD64):
        args, res = assign([("s", huge), ("n", INT)], [("r", huge)], abi)
        caps = captures(args, 64)
        assert len(caps.args) <= MAX_FIELDS
        assert len(captures(res, 64).args) <= MAX_FIELDS
        alignment(huge)
    assert time.monotonic() - start < 10  # unbounded, this is 2**24 nodes per walk: minutes and gigabytes
    if huge.size:
        assert caps.args[-1].kind is ArgKind.UNAVAILABLE and "more fields not captured" in caps.args[-1].note


def test_a_value_bigger_than_any_stack_frame_is_not_placed_and_neither_is_what_follows():
    big = arr(99999999999999, INT)
    args, _ = assign([("a", big), ("b", INT)], [], REGABI_AMD64)
    assert args[0].parts[0].missing and args[0].stack is None
    assert where(args[1]) == ["rax"]  # registers do not depend on the stack area
    args, _ = assign([("a", big), ("b", INT)], [], STACK_AMD64)
    assert all(a.parts[0].missing for a in args)  # b would sit past the impossible array


def test_signature_with_an_absurd_array_length_is_a_usage_error():
    from utrace.errors import UsageError
    from utrace.runtimes.go.gosig import parse_type

    assert parse_type("[999999999999999999]int").length == 999999999999999999
    with pytest.raises(UsageError, match="too large"):
        parse_type("[" + "9" * 5000 + "]int")  # int() refuses past 4300 digits: a ValueError before


_leaf_types = st.sampled_from([INT, INT32, BOOL, F64, STRING, ERROR, PTR, BYTES, GoType("struct {}", GoKind.STRUCT, 0)])
_go_types = st.recursive(
    _leaf_types,
    lambda inner: st.one_of(
        st.builds(
            lambda elem, n: GoType(f"[{n}]{elem.name}", GoKind.ARRAY, n * elem.size, elem=elem, length=n),
            inner,
            st.integers(0, 12) | st.sampled_from([1 << 20, 99999999999999, 1 << 62]),
        ),
        st.builds(
            lambda fs: GoType(
                "main.S",
                GoKind.STRUCT,
                sum(f.size for f in fs),
                fields=tuple(GoField(f"f{i}", sum(g.size for g in fs[:i]), f) for i, f in enumerate(fs)),
            ),
            st.lists(inner, max_size=6),
        ),
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_go_types, max_size=5), st.lists(_go_types, max_size=3), st.booleans())
def test_any_type_is_placed_or_said_missing(params, results, regabi):
    """Every value of any type gets parts (or one missing part saying why), and captures never raise:
    a huge array of strings used to leave a string with no parts, which raised ValueError."""
    from utrace.runtimes.go.goargs import MAX_FIELDS, captures

    abi = REGABI_AMD64 if regabi else STACK_AMD64
    with no_hang(10):
        args, res = assign(
            [(f"a{i}", t) for i, t in enumerate(params)], [(f"r{i}", t) for i, t in enumerate(results)], abi
        )
        for a in (*args, *res):
            assert a.in_registers or a.stack is not None or a.parts[0].missing or a.type.size == 0
            for p in a.parts:
                assert (p.reg is not None) == a.in_registers or p.missing
        for values in (args, res):
            caps = captures(values, 64)
            assert len(caps.args) <= MAX_FIELDS


# --- generic instantiations (hand-checked against `go tool objdump` of Go 1.21 and 1.27 callers: the
# dictionary `LEAQ main..dict.Scale[int](SB), AX` first, a method's receiver before it in AX, dict in BX)


def test_generic_base_drops_every_type_argument_list() -> None:
    from utrace.elf.match import generic_base

    assert generic_base("main.Scale[go.shape.int]") == "main.Scale"
    assert generic_base("main.Lookup[go.shape.string,go.shape.int]") == "main.Lookup"
    assert generic_base("main.(*Stack[go.shape.string]).Push") == "main.(*Stack).Push"
    assert generic_base("main.Map[go.shape.map[string]int]") == "main.Map"  # nested brackets
    assert generic_base("main.Scale[...]") == "main.Scale"  # Go 1.18-1.19 pclntab spelling
    assert generic_base("net/http.Get") == "net/http.Get"


def test_dictionary_index_for_shaped_bodies_only() -> None:
    from utrace.runtimes.go.goabi import dictionary_index

    assert dictionary_index("main.Scale[go.shape.int]") == 0
    assert dictionary_index("main.Scale[go.shape.int_0]") == 0  # Go 1.18-1.19 ELF symbol
    assert dictionary_index("main.Scale[...]") == 0
    assert dictionary_index("main.(*Stack[go.shape.string]).Push") == 1  # receiver first
    assert dictionary_index("main.Stack[go.shape.int].Len") == 1
    assert dictionary_index("main.Scale[int]") is None  # a concrete wrapper: calls the shaped body
    assert dictionary_index("main.Scale[go.shape.int].func1") is None  # closure: dictionary captured
    assert dictionary_index("main.Scale[go.shape.int].gowrap2") is None
    assert dictionary_index("main.Greet") is None


def test_dictionary_takes_the_first_register_and_is_not_doubled() -> None:
    from utrace.runtimes.go.goabi import DICT_PARAM, with_dictionary

    slice_int = GoType("[]int", GoKind.SLICE, 24, elem=INT)
    declared = [("s", slice_int), ("k", INT)]
    params = with_dictionary("main.Scale[go.shape.int]", declared)
    assert [n for n, _t in params] == [DICT_PARAM, "s", "k"]
    args, _ = assign(params, [], REGABI_AMD64)
    assert [p.reg for p in args[1].parts] == ["rbx", "rcx", "rdi"] and args[2].parts[0].reg == "rsi"
    # Go 1.27's DWARF lists .dict itself (after a method's receiver): nothing is added
    assert with_dictionary("main.Scale[go.shape.int]", params) == params
    recv = GoType("*main.Stack[go.shape.string]", GoKind.POINTER, 8)
    m = with_dictionary("main.(*Stack[go.shape.string]).Push", [("s", recv), ("v", STRING)])
    args, _ = assign(m, [], REGABI_AMD64)
    assert [(a.name, [p.reg for p in a.parts]) for a in args] == [
        ("s", ["rax"]),
        (DICT_PARAM, ["rbx"]),
        ("v", ["rcx", "rdi"]),
    ]
    assert with_dictionary("main.Greet", declared) == declared
