"""Glob matching of function and probe names, and the display/base forms of demangled names."""

from __future__ import annotations

import fnmatch
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from utrace.app.candidates import probe_name
from utrace.elf.demangle import base_name, clone_suffix, demangle, display_name
from utrace.elf.match import match_probes, name_matcher, required_text
from utrace.model import UsdtProbe
from utrace.runtimes.cxxthis import function_scope
from utrace.runtimes.signature import param_list

STRING = "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >"
TWICE_LONG = "long demo::twice<long>(long)"
TWICE_STRING = f"{STRING} demo::twice<{STRING} >({STRING})"
LISTEN = "node::TCPWrap::Listen(v8::FunctionCallbackInfo<v8::Value> const&)"
ON_CONNECTION = "node::ConnectionWrap<node::PipeWrap, uv_pipe_s>::OnConnection(uv_stream_s*, int)"
OSTREAM = "std::basic_ostream<char, std::char_traits<char> >& std::operator<< <std::char_traits<char> >(std::basic_ostream<char, std::char_traits<char> >&, char const*)"  # noqa: E501


def matches(pattern: str | None, name: str) -> bool:
    m = name_matcher(pattern)
    return True if m is None else m(name)


@pytest.mark.parametrize("pattern", [None, "*", ""])
def test_match_everything_is_none(pattern):
    assert name_matcher(pattern) is None


@pytest.mark.parametrize(
    ("pattern", "name"),
    [
        ("node::TCPWrap::Listen", LISTEN),
        ("node::TCPWrap::*", LISTEN),
        ("*::Listen", LISTEN),
        ("*Listen", LISTEN),
        ("demo::twice*", TWICE_LONG),
        ("demo::twice*", TWICE_STRING),
        ("demo::twice<long>", TWICE_LONG),
        ("demo::twice<long>(long)", TWICE_LONG),
        ("long demo::twice<long>(long)", TWICE_LONG),
        ("demo::Shape::area", "demo::Shape::area() const"),
        ("demo::Shape::area", "demo::Shape::area(int)"),
        ("demo::Shape::area(int)", "demo::Shape::area(int)"),
        ("uv_*", "uv_listen"),
        ("uv_*", "uv__tcp_listen"),
        ("uv_?isten", "uv_listen"),
        ("[mn]ain", "main"),
        ("main", "main"),
        ("operator new", "operator new(unsigned long)"),
        ("*operator<<*", OSTREAM),
        ("std::operator<< <std::char_traits<char> >", OSTREAM),
        ("ConnectionWrap*", "ConnectionWrap<node::PipeWrap, uv_pipe_s>"),
        ("*ConnectionWrap<*>::OnConnection", ON_CONNECTION),
        ("hotspot:class__loaded", "hotspot:class__loaded"),
        ("hotspot:*", "hotspot:class__loaded"),
        # an operator's own brackets are its name: `operator()` finds every overload of the call operator
        ("demo::Shape::operator()", "demo::Shape::operator()(int) const"),
        ("demo::Shape::operator()(int) const", "demo::Shape::operator()(int) const"),
        ("demo::Shape::operator<", "demo::Shape::operator<(demo::Shape const&) const"),
        ("demo::Shape::operator[]", "demo::Shape::operator[](int) const"),
        ("demo::Shape::operator unsigned long", "demo::Shape::operator unsigned long() const"),
        ("demo::operator< <int>", "bool demo::operator< <int>(demo::Box<int> const&, demo::Box<int> const&)"),
    ],
)
def test_matches(pattern, name):
    assert matches(pattern, name)


@pytest.mark.parametrize(
    ("pattern", "name"),
    [
        ("uv_*", ON_CONNECTION),  # uv_ inside a template argument or parameter list is not a name prefix
        ("uv_*", "node::uv_thing()"),
        ("node::TCPWrap::Listen", "node::TCPWrap::ListenX(int)"),
        ("node::TCPWrap::Listen", "node::TCPWrap::Listening() const"),
        ("demo::Shape::area", "demo::Shape::area_total()"),
        ("demo::Shape::area(int)", "demo::Shape::area(long)"),
        ("demo::Shape::area(int)", "demo::Shape::area(int, int)"),
        ("twice*", TWICE_LONG),
        ("main", "mainx"),
        ("main", "xmain"),
        ("main", "domain"),
        ("Main", "main"),  # case matters
        ("demo_*", "demo::greet(char const*, int)"),
        ("uv_listen", "uv_listen2"),
        ("long", TWICE_LONG),
        ("hotspot:*", "other:class__loaded"),
        ("demo::Shape::operator<", "demo::Shape::operator<<(int)"),
        ("demo::Shape::operator<", "demo::Shape::operator<=(demo::Shape const&) const"),
        ("demo::Shape::operator<", "demo::Shape::operator<=>(demo::Shape const&) const"),
        ("demo::Shape::operator()(int)", "demo::Shape::operator()(long)"),
        ("demo::operator<", "bool demo::operator< <int>(demo::Box<int> const&, demo::Box<int> const&)"),
    ],
)
def test_does_not_match(pattern, name):
    assert not matches(pattern, name)


def test_regex_metacharacters_are_literal():
    assert matches("a.b", "a.b")
    assert not matches("a.b", "axb")
    assert matches("f+", "f+")
    assert not matches("f+", "ff")
    assert matches("x$y", "x$y")
    assert matches("demo::f(int*)", "demo::f(int*)")
    assert matches("demo::f(int*)", "demo::f(int**)")  # `*` is still a glob inside the parameter list


GLOB_CHARS = st.sampled_from(list("ab:_()<> *?[]!-"))


@given(st.text(GLOB_CHARS, max_size=12), st.text(st.sampled_from(list("ab:_()<> *?[]!-")), max_size=16))
def test_required_text_is_in_every_name_the_glob_matches(pattern: str, name: str) -> None:
    """Oracle: the standard library's fnmatch. match_functions skips names without required_text."""
    if fnmatch.fnmatchcase(name, pattern):
        assert required_text(pattern) in name


@pytest.mark.parametrize(
    ("pattern", "text"),
    [("uv__tcp_listen", "uv__tcp_listen"), ("*__tcp_listen", "__tcp_listen"), ("node::*::Listen", "::Listen"),
     ("a[bc]def", "def"), ("x[!]]yy*", "yy"), ("[abc", "[abc"), ("*", ""), ("?", "")],
)  # fmt: skip
def test_required_text(pattern: str, text: str) -> None:
    assert required_text(pattern) == text


def test_leading_star_is_linear_in_the_name() -> None:
    """A pattern starting with `*` on long C++ names with a return type: main searched each name with a
    regex that starts with `.*` (quadratic: 40 s for `*__tcp_listen` over node 26's names)."""
    long_names = [f"void ns::{'x' * 8000}{i}(int)" for i in range(300)]
    m = name_matcher("*Listen")
    assert m is not None
    t = time.perf_counter()
    assert not any(m(n) for n in long_names)
    assert time.perf_counter() - t < 5  # main: 10 s (300 x 32M regex steps)
    assert m(f"void ns::{'x' * 4000}Listen(int)")


def test_match_probes_by_full_or_short_name():
    def probe(provider: str, name: str) -> UsdtProbe:
        return UsdtProbe(provider, name, 0, 0, 0, None, None, (), "/m")

    probes = [probe("hotspot", "class__loaded"), probe("hotspot", "gc__begin"), probe("node", "gc__begin")]
    assert match_probes(probes, None) == probes
    assert [p.full_name for p in match_probes(probes, "hotspot:*")] == ["hotspot:class__loaded", "hotspot:gc__begin"]
    assert [p.full_name for p in match_probes(probes, "gc__begin")] == ["hotspot:gc__begin", "node:gc__begin"]
    assert [p.full_name for p in match_probes(probes, "*:gc*")] == ["hotspot:gc__begin", "node:gc__begin"]
    assert match_probes(probes, "nothing") == []


# --- display_name / base_name -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("demangled", "display"),
    [
        ("main", "main"),
        ("demo::greet(char const*, int)", "demo::greet(char const*, int)"),
        (TWICE_LONG, "demo::twice<long>(long)"),
        (TWICE_STRING, f"demo::twice<{STRING} >({STRING})"),
        ("bool demo::less<int>(int, int)", "demo::less<int>(int, int)"),
        ("demo::Shape::area() const", "demo::Shape::area() const"),
        (LISTEN, LISTEN),
        (ON_CONNECTION, ON_CONNECTION),
        ("operator new(unsigned long)", "operator new(unsigned long)"),
        ("operator delete[](void*)", "operator delete[](void*)"),
        ("demo::Shape::operator()(int) const", "demo::Shape::operator()(int) const"),
        ("demo::Shape::operator<(demo::Shape const&) const", "demo::Shape::operator<(demo::Shape const&) const"),
        ("demo::Shape::operator<<(int)", "demo::Shape::operator<<(int)"),
        ("demo::Foo::operator int() const", "demo::Foo::operator int() const"),
        ("demo::Shape::~Shape()", "demo::Shape::~Shape()"),
        ("(anonymous namespace)::helper(int)", "(anonymous namespace)::helper(int)"),
        (OSTREAM, OSTREAM.split("& ", 1)[1]),
        (
            "bool demo::operator< <int>(demo::Foo<int> const&, demo::Foo<int> const&)",
            "demo::operator< <int>(demo::Foo<int> const&, demo::Foo<int> const&)",
        ),
    ],
)
def test_display_name(demangled, display):
    assert display_name(demangled) == display


@pytest.mark.parametrize(
    "demangled",
    [
        "demo::Foo::operator unsigned long() const",
        "demo::Foo::operator char const*() const",
        "demo::Foo::operator long long() const",
    ],
)
def test_display_name_multiword_conversion_operator(demangled):
    assert display_name(demangled) == demangled


@pytest.mark.parametrize(
    ("demangled", "base"),
    [
        ("main", "main"),
        ("demo::greet(char const*, int)", "demo::greet"),
        ("demo::Shape::area() const", "demo::Shape::area"),
        (TWICE_LONG, "long demo::twice<long>"),
        (LISTEN, "node::TCPWrap::Listen"),
        (ON_CONNECTION, "node::ConnectionWrap<node::PipeWrap, uv_pipe_s>::OnConnection"),
        ("operator new(unsigned long)", "operator new"),
        ("operator delete[](void*)", "operator delete[]"),
        ("demo::Foo::operator int() const", "demo::Foo::operator int"),
        ("demo::Foo::operator unsigned long() const", "demo::Foo::operator unsigned long"),
        ("demo::Shape::~Shape()", "demo::Shape::~Shape"),
        ("(anonymous namespace)::helper(int)", "(anonymous namespace)::helper"),
    ],
)
def test_base_name(demangled, base):
    assert base_name(demangled) == base


def test_base_name_call_operator():
    """operator()'s own parentheses are part of its name (completion cut it the same way already)."""
    assert base_name("demo::Shape::operator()(int) const") == "demo::Shape::operator()"


@pytest.mark.parametrize(
    ("demangled", "base"),
    [
        ("demo::Shape::operator<(demo::Shape const&) const", "demo::Shape::operator<"),
        ("demo::Shape::operator<<(int)", "demo::Shape::operator<<"),
        ("demo::Shape::operator>(demo::Shape const&) const", "demo::Shape::operator>"),
        ("demo::Shape::operator->() const", "demo::Shape::operator->"),
    ],
)
def test_base_name_operators(demangled, base):
    assert base_name(demangled) == base


@pytest.mark.parametrize(
    ("raw", "demangled"),
    [
        ("_ZN4demo5greetEPKci", "demo::greet(char const*, int)"),
        ("_ZNK4demo5Shape4areaEv", "demo::Shape::area() const"),
        ("_Z5twiceIlET_S0_", "long twice<long>(long)"),
        ("demo_add", "demo_add"),
        ("_Znot_valid", "_Znot_valid"),
    ],
)
def test_demangle(raw, demangled):
    assert demangle(raw) == demangled


@pytest.mark.parametrize(
    ("raw", "suffix"),
    [
        ("f", ""),
        ("f.cold", ".cold"),
        ("f.part.0", ".part.0"),
        ("f.isra.0.cold", ".isra.0.cold"),
        ("f.constprop.0", ".constprop.0"),
        ("a.b", ""),
    ],
)
def test_clone_suffix(raw, suffix):
    assert clone_suffix(raw) == suffix


# --- operator names, from the grammar ------------------------------------------------------------------
# Built the way libiberty's demangler prints them (Itanium C++ ABI 5.1.5 <operator-name>): the expected
# name, parameters and qualifiers are known by construction, whatever brackets the operator holds.

SYMBOL_OPERATORS = re.findall(
    r"\S+", "+ - * / % ^ & | ~ ! = < > , += -= *= /= %= ^= &= |= << >> <<= >>= == != <= >= <=> && || ++ -- ->* -> () []"
)
WORD_OPERATORS = ["new", "new[]", "delete", "delete[]", "co_await"]
CONVERSIONS = [
    "int",
    "bool",
    "unsigned long",
    "long long",
    "char const*",
    "void*",
    "std::basic_string_view<char, std::char_traits<char> >",
    "void (*)()",
    "void (demo::Shape::*)()",
]
SCOPES = ["", "demo", "demo::Shape", "ns::Box<std::pair<a::b, c> >", "(anonymous namespace)::S", "f(int)::Local"]
PARAMS = [
    "",
    "int",
    "demo::Shape const&",
    "char const*, unsigned long",
    "std::map<int, int>",
    "void (*)(int)",
    "std::basic_istream<char, std::char_traits<char> >& (*)(std::basic_istream<char, std::char_traits<char> >&)",
]
QUALIFIERS = ["", " const", " const &&", " volatile &"]


@st.composite
def operator_functions(draw: st.DrawFn) -> tuple[str, str, str, str, str, str]:
    """(demangled, return type, scope, operator, parameters, qualifiers)."""
    kind = draw(st.sampled_from(["symbol", "word", "conversion", "literal"]))
    if kind == "symbol":
        op = "operator" + draw(st.sampled_from(SYMBOL_OPERATORS))
    elif kind == "word":
        op = "operator " + draw(st.sampled_from(WORD_OPERATORS))
    elif kind == "literal":
        op = 'operator"" _' + draw(st.sampled_from(["km", "sq", "s"]))
    else:
        op = "operator " + draw(st.sampled_from(CONVERSIONS))
    ret = ""
    if kind == "symbol" and draw(st.booleans()):  # a function template: arguments, and a return type first
        op += (" " if op.endswith("<") else "") + draw(st.sampled_from(["<int>", "<std::char_traits<char> >"]))
        ret = draw(st.sampled_from(["bool ", "std::basic_ostream<char, std::char_traits<char> >& "]))
    scope = draw(st.sampled_from(SCOPES))
    name = f"{scope}::{op}" if scope else op
    params = draw(st.sampled_from(PARAMS))
    quals = draw(st.sampled_from(QUALIFIERS)) if scope else ""
    return f"{ret}{name}({params}){quals}", ret, scope, op, params, quals


@given(operator_functions())
def test_operator_names_from_the_grammar(case: tuple[str, str, str, str, str, str]) -> None:
    demangled, ret, scope, op, params, quals = case
    name = f"{scope}::{op}" if scope else op
    assert base_name(demangled) == ret + name
    assert display_name(demangled) == demangled[len(ret) :]
    assert base_name(display_name(demangled)) == name
    assert param_list(demangled) == (params, quals.strip())
    assert probe_name(demangled) == name
    assert function_scope(demangled) == (name, scope, op)
    assert matches(name, demangled)


@pytest.mark.parametrize(
    ("demangled", "base"),
    [  # from nm -C of libstdc++.so.6 (GCC 14), checked with `c++filt -p`
        (
            "std::__exception_ptr::exception_ptr::operator void (std::__exception_ptr::exception_ptr::*)()() const",
            "std::__exception_ptr::exception_ptr::operator void (std::__exception_ptr::exception_ptr::*)()",
        ),
        (
            "std::basic_istream<char, std::char_traits<char> >::operator>>(void*&)",
            "std::basic_istream<char, std::char_traits<char> >::operator>>",
        ),
        (
            "std::basic_istream<char, std::char_traits<char> >& std::operator>><char, std::char_traits<char> >"
            "(std::basic_istream<char, std::char_traits<char> >&, char&)",
            "std::basic_istream<char, std::char_traits<char> >& std::operator>><char, std::char_traits<char> >",
        ),
        ("std::ios_base::Init::operator=(std::ios_base::Init const&)", "std::ios_base::Init::operator="),
        ("operator delete[](void*, std::align_val_t)", "operator delete[]"),
        (
            "std::basic_ios<char, std::char_traits<char> >::operator bool() const",
            "std::basic_ios<char, std::char_traits<char> >::operator bool",
        ),
        # and from node: a scope inside `(anonymous namespace)`, a function-local class
        (
            "v8_inspector::(anonymous namespace)::reportError(v8::Local<v8::Context>, v8::TryCatch const&)",
            "v8_inspector::(anonymous namespace)::reportError",
        ),
        ("A::f() const::B::g()", "A::f() const::B::g"),
        ("demo::run()::{lambda(int)#1}::operator()(int) const", "demo::run()::{lambda(int)#1}::operator()"),
        ('operator"" _x(char const*, unsigned long)', 'operator"" _x'),
    ],
)
def test_base_name_real_operator_names(demangled: str, base: str) -> None:
    assert base_name(demangled) == base


def test_the_same_pattern_over_the_same_table_is_matched_once(tmp_path, monkeypatch) -> None:
    """An old libuv name is tried as itself, then as the first of its aliases: one scan of the table."""
    import utrace.elf.match as lp
    from tests.unit.elfgen import Sym, build_elf
    from utrace.elf.index import symbols_for

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = build_elf(symtab=[Sym("uv_tcp_listen", 0x10), Sym("uv__tcp_listen", 0x20)]).write(tmp_path / "a.out")
    table = symbols_for(path, use_cache=False)
    first = lp.match_functions(table, "uv_tcp_listen")
    scans: list[str | None] = []
    real = lp.name_matcher
    monkeypatch.setattr(lp, "name_matcher", lambda p: scans.append(p) or real(p))
    again = lp.match_functions(table, "uv_tcp_listen")
    assert again == first and [table.raws[i] for i in again] == ["uv_tcp_listen"] and again is not first
    assert lp.match_functions(table, "uv__tcp_*") == [table.raws.index("uv__tcp_listen")]
    other = symbols_for(path, use_cache=False)  # another table: matched on its own
    assert lp.match_functions(other, "uv_tcp_listen") == first
    assert scans == ["uv__tcp_*", "uv_tcp_listen"]  # a matcher is made for each scan
