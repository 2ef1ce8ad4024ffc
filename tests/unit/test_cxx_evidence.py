"""C++ `this` from evidence, uncertain values, imported functions, and typed USDT arguments."""

from __future__ import annotations

import json
import struct
from io import StringIO
from pathlib import Path

import pytest

from tests.unit.elfgen import SHN_UNDEF, STT_FUNC, STT_OBJECT, Sym, build_elf
from utrace.elf.index import symbols_for
from utrace.elf.symbols import class_names, imported_functions
from utrace.elf.usdt_notes import parse_argument
from utrace.model import ArgKind, ArgSpec, Binding, Event, ProbeKind, ProbeSpec, Reg, Symbol, UsdtProbe
from utrace.output.stream import JsonReporter, TextReporter
from utrace.probes.codegen import render
from utrace.probes.decode import Decoder, Pointer, Uncertain
from utrace.probes.layout import event_format
from utrace.runtimes.base import ModuleSymbols
from utrace.runtimes.cxxthis import MembershipOracle, function_scope, split_scope
from utrace.runtimes.usdt import catalogue_args, catalogue_signature, typed_args

# --- scopes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("demangled", "expected"),
    [
        ("geo::canvas::draw(int)", ("geo::canvas::draw", "geo::canvas", "draw")),
        ("std::ostream& std::ostream::_M_insert<long>(long)",
         ("std::ostream::_M_insert<long>", "std::ostream", "_M_insert<long>")),
        ("a::b<c::d>::e(int)", ("a::b<c::d>::e", "a::b<c::d>", "e")),
        ("demo::Shape::operator<(demo::Shape const&)", ("demo::Shape::operator<", "demo::Shape", "operator<")),
        ("demo::Shape::operator()(int) const", ("demo::Shape::operator()", "demo::Shape", "operator()")),
        ("main()", ("main", "", "main")),
        ("A::operator std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >() const",
         ("A::operator std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >", "A",
          "operator std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >")),
        ("std::__exception_ptr::exception_ptr::operator void (std::__exception_ptr::exception_ptr::*)()() const",
         ("std::__exception_ptr::exception_ptr::operator void (std::__exception_ptr::exception_ptr::*)()",
          "std::__exception_ptr::exception_ptr", "operator void (std::__exception_ptr::exception_ptr::*)()")),
        ("bool demo::operator< <int>(demo::Box<int> const&, demo::Box<int> const&)",
         ("demo::operator< <int>", "demo", "operator< <int>")),
        ("operator new(unsigned long)", ("operator new", "", "operator new")),
        ("A::f() const::B::g()", ("A::f() const::B::g", "A::f() const::B", "g")),
    ],
)  # fmt: skip
def test_function_scope(demangled: str, expected: tuple[str, str, str]) -> None:
    assert function_scope(demangled) == expected


def test_split_scope_keeps_template_arguments_whole() -> None:
    assert split_scope("ns::cls<std::pair<a::b, c> >::f") == ("ns::cls<std::pair<a::b, c> >", "f")
    assert split_scope("free") == ("", "free")


# --- membership ---------------------------------------------------------------------------------------

DRAW = "_ZN3geo6canvas4drawEi"  # geo::canvas::draw(int)


def _oracle(tmp_path: Path, symtab: list[Sym], name: str = "prog") -> tuple[MembershipOracle, Path]:
    path = tmp_path / name
    build_elf(symtab=symtab).write(path)
    table = symbols_for(str(path), use_cache=False)
    return MembershipOracle([ModuleSymbols(str(path), str(path), table)]), path


def _sym(path: Path, raw: str) -> Symbol:
    table = symbols_for(str(path), use_cache=False)
    (i,) = [i for i in table.entries() if table.raws[i] == raw]
    return table.symbol(i)


def test_scope_without_evidence_is_unknown_and_says_why(tmp_path: Path) -> None:
    oracle, path = _oracle(tmp_path, [Sym(DRAW, 0x10)])
    m = oracle.decide(_sym(path, DRAW))
    assert m.member is None and m.why == "no evidence whether geo::canvas::draw is a member function; no DWARF"


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (Sym("_ZTVN3geo6canvasE", 0x80, type=STT_OBJECT), "vtable or typeinfo for geo::canvas"),
        (Sym("_ZTIN3geo6canvasE", 0x80, type=STT_OBJECT, shndx=SHN_UNDEF), "vtable or typeinfo for geo::canvas"),
        (Sym("_ZN3geo6canvasC2Ev", 0x40), "it has a constructor or destructor"),
        (Sym("_Z4pingRN3geo6canvasE", 0x40), "geo::canvas is a parameter type"),  # ping(geo::canvas&)
    ],
)
def test_class_evidence_makes_a_member(tmp_path: Path, extra: Sym, why: str) -> None:
    oracle, path = _oracle(tmp_path, [Sym(DRAW, 0x10), extra])
    m = oracle.decide(_sym(path, DRAW))
    assert m.member is True and m.why == f"geo::canvas is a class ({why})"


def test_scope_as_a_prefix_of_another_type_is_no_evidence(tmp_path: Path) -> None:
    # geo::canvasx and geo::canvas::inner are other names: they say nothing about geo::canvas
    oracle, path = _oracle(tmp_path, [Sym(DRAW, 0x10), Sym("_Z4pingRN3geo7canvasxE", 0x40),
                                      Sym("_Z4pongN3geo6canvas5innerE", 0x60)])  # fmt: skip
    assert oracle.decide(_sym(path, DRAW)).member is None


@pytest.mark.parametrize(
    ("name", "member"),
    [
        ("geo::canvas::draw(int) const", True),
        ("geo::canvas::canvas(int)", True),
        ("geo::canvas::~canvas()", True),
        ("std::terminate()", False),
        ("std::__cxx11::to_string(int)", False),
        ("greet(char const*, int)", False),
        ("operator new(unsigned long)", False),
    ],
)
def test_membership_without_a_file(name: str, member: bool) -> None:
    sym = Symbol(name=name, raw="_Zx", address=0x1000, size=8, binding=Binding.GLOBAL, offset=0x1000, module="/nope")
    assert MembershipOracle([]).decide(sym).member is member


# --- symbols: classes and imports ---------------------------------------------------------------------


def test_class_names_and_imported_functions(tmp_path: Path) -> None:
    path = tmp_path / "lib"
    build_elf(
        symtab=[Sym("_ZTVN3geo6canvasE", 0x80, type=STT_OBJECT), Sym("f", 0x10)],
        dynsym=[
            Sym("getenv", 0, section=None, shndx=SHN_UNDEF, type=STT_FUNC),
            Sym("_ZNSo3putEc", 0, section=None, shndx=SHN_UNDEF, type=STT_FUNC),
            Sym("environ", 0, section=None, shndx=SHN_UNDEF, type=STT_OBJECT),  # data, not a function
            Sym("_ZTISo", 0, section=None, shndx=SHN_UNDEF, type=STT_OBJECT),
            Sym("f", 0x10),
        ],
    ).write(path)
    assert class_names(str(path)) == {"geo::canvas", "std::ostream"}
    assert imported_functions(str(path)) == {"getenv", "_ZNSo3putEc"}


# --- uncertain values in events -------------------------------------------------------------------------


def test_uncertain_value_is_marked_in_text_and_json() -> None:
    why = "no evidence whether geo::canvas::draw is a member function; no DWARF"
    args = (
        ArgSpec("arg0", ArgKind.PTR, Reg("rdi"), uncertain=why),
        ArgSpec("arg1", ArgKind.PTR, Reg("rsi"), uncertain=why),
    )
    spec = ProbeSpec("geo::canvas::draw(int)", "/m", 0x10, ProbeKind.ENTRY, args=args)
    prog = render([spec])
    data = struct.pack(event_format(prog.fields[0]), 0, 7, 7, 0, 1, 0, b"prog", 0x7FFD1000, 41)
    ev = Decoder(prog).decode(data)
    assert ev.args == {"arg0": Uncertain(Pointer(0x7FFD1000), why), "arg1": Uncertain(Pointer(41), why)}
    out = StringIO()
    rep = JsonReporter(out, StringIO())
    rep.event(ev)
    rep.flush()
    assert json.loads(out.getvalue())["args"]["arg0"] == {"value": 0x7FFD1000, "uncertain": why}
    text = StringIO()
    trep = TextReporter(text, StringIO(), color=False)
    trep.event(ev)
    trep.flush()
    assert f"arg0=0x7ffd1000 (uncertain: {why}) arg1=0x29 (uncertain: {why})" in text.getvalue()


def test_facts_are_in_every_events_context() -> None:
    spec = ProbeSpec("p:n", "/m", 0x10, ProbeKind.USDT, facts=(("types", "catalogue"),))
    prog = render([spec])
    ev: Event = Decoder(prog).decode(struct.pack(event_format(prog.fields[0]), 0, 7, 7, 0, 1, 0, b"prog"))
    assert ev.context == {"types": "catalogue"}


# --- typed USDT arguments -------------------------------------------------------------------------------


def _probe(provider: str, name: str, *specs: str) -> UsdtProbe:
    args = tuple(parse_argument(s) for s in specs)
    return UsdtProbe(provider, name, 0x1000, 0x1000, 0x1000, None, None, args, "/m")


def test_signature_types_the_note_operands() -> None:
    p = _probe("utrace_demo", "tick", "-4@%ebx", "8@%rbp", "-8@%r9")
    assert typed_args(p, ["int counter", "const char *message", "long value"]) == [
        ArgSpec("counter", ArgKind.S32, Reg("rbx")),
        ArgSpec("message", ArgKind.CSTR, Reg("rbp")),
        ArgSpec("value", ArgKind.S64, Reg("r9")),
    ]
    assert typed_args(p, ["int a"]) == "the signature has 1 parameter(s), the note 3 argument(s)"
    assert typed_args(p, ["char *a", "char *b", "long c"]) == (
        "argument 0 is a pointer (char *) but the note says -4@%ebx (4 bytes)"
    )
    # an integer wider than its operand is read at the operand's width and sign
    assert typed_args(p, ["long a", "void *b", "long c"])[0] == ArgSpec("a", ArgKind.S32, Reg("rbx"))  # type: ignore[index]


def test_catalogue_picks_the_version_that_fits() -> None:
    py311 = _probe("python", "function__entry", "8@%rbp", "8@%r12", "-4@%eax")
    args, source, note = catalogue_args(py311)
    assert [a.name for a in args or []] == ["filename", "funcname", "lineno"] and "3.6-3.11" in source and not note
    assert catalogue_signature(py311) == "function__entry(const char *filename, const char *funcname, int lineno)"
    odd = _probe("python", "function__entry", "-4@%eax", "8@%r12", "-4@%eax")  # no known version has this
    args, source, note = catalogue_args(odd)
    assert args is None and "does not fit this build's note, ignored" in note and catalogue_signature(odd) is None
    assert catalogue_args(_probe("nobody", "x", "8@%rax")) == (None, "", "")


def test_hotspot_counted_strings() -> None:
    p = _probe("hotspot", "class__loaded", "8@%rdx", "-4@%eax", "8@152(%rdi)", "1@%cl")
    args, _source, _note = catalogue_args(p)
    assert args is not None and [(a.name, a.kind) for a in args] == [
        ("name", ArgKind.PTRLEN_STR), ("loader", ArgKind.PTR), ("shared", ArgKind.U8)
    ]  # fmt: skip
    assert args[0].length == Reg("rax") and args[0].length_kind is ArgKind.S32


def test_internal_linkage_makes_a_namespace(tmp_path: Path) -> None:
    # a `static` function of node::fs (Itanium `L`): only namespace-scope functions have internal linkage
    hold = "_ZN4node2fs9AfterStatEP7uv_fs_s"  # node::fs::AfterStat(uv_fs_s*)
    static = "_ZN4node2fsL10ExistsSyncEi"  # static node::fs::ExistsSync(int)
    oracle, path = _oracle(tmp_path, [Sym(hold, 0x10), Sym(static, 0x40, bind=0)])
    for raw in (hold, static):
        m = oracle.decide(_sym(path, raw))
        assert m.member is False and m.why.startswith("node::fs is a namespace (it holds a function with internal")
    alone, path2 = _oracle(tmp_path, [Sym(hold, 0x10)], name="alone")
    assert alone.decide(_sym(path2, hold)).member is None


def test_uncertain_reason_from_a_hostile_name_is_escaped() -> None:
    u = Uncertain(Pointer(1), "no evidence whether a\x1b[2J::f is a member function; no DWARF")
    assert "\x1b" not in str(u) and "a\\x1b[2J::f" in str(u)
