"""C/C++ parameter lists -> SysV x86-64 ArgSpecs, the `this` heuristic, and libuv prototypes."""

from __future__ import annotations

import pytest

from utrace.model import ArgKind, ArgSpec, Const, Deref, Reg, Stack, Symbol
from utrace.model import Binding as B
from utrace.runtimes.native import args_for
from utrace.runtimes.node import HANDLE_TYPE_OFFSET, PROTOTYPES, libuv_args
from utrace.runtimes.signature import (
    SYSV_INT_ARGS,
    default_args,
    kind_of,
    param_list,
    parse_user_probe,
    split_params,
    sysv_args,
)

# --- split_params / param_list ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("int a, long b", ["int a", "long b"]),
        ("", []),
        ("   ", []),
        ("void", ["void"]),
        ("std::map<int, long> m, int x", ["std::map<int, long> m", "int x"]),
        ("std::map<std::string, std::vector<int>> m", ["std::map<std::string, std::vector<int>> m"]),
        ("void (*cb)(int, char*), int n", ["void (*cb)(int, char*)", "int n"]),
        ("std::function<void(int, int)> f, int x", ["std::function<void(int, int)> f", "int x"]),
        ("char buf[4], int n", ["char buf[4]", "int n"]),
        ("int (*)(void*, unsigned long), long", ["int (*)(void*, unsigned long)", "long"]),
        ("  int a ,  char* b  ", ["int a", "char* b"]),
    ],
)
def test_split_params(params, expected):
    assert split_params(params) == expected


@pytest.mark.parametrize(
    ("demangled", "expected"),
    [
        ("demo::greet(char const*, int)", ("char const*, int", "")),
        ("demo::Shape::area(int) const", ("int", "const")),
        ("long demo::twice<long>(long)", ("long", "")),
        ("demo::run(std::function<void (int)>, int)", ("std::function<void (int)>, int", "")),
        ("uv_listen", None),
        ("main()", ("", "")),
    ],
)
def test_param_list(demangled, expected):
    assert param_list(demangled) == expected


# --- kind_of ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ctype", "kind"),
    [
        ("char*", ArgKind.CSTR),
        ("char *", ArgKind.CSTR),
        ("const char*", ArgKind.CSTR),
        ("char const*", ArgKind.CSTR),
        ("const char * const", ArgKind.CSTR),
        ("unsigned char*", ArgKind.CSTR),
        ("signed char*", ArgKind.CSTR),
        ("char**", ArgKind.PTR),
        ("int*", ArgKind.PTR),
        ("void*", ArgKind.PTR),
        ("uint8_t*", ArgKind.PTR),
        ("int&", ArgKind.PTR),
        ("std::string const&", ArgKind.PTR),
        ("std::string&&", ArgKind.PTR),
        ("void (*)(int)", ArgKind.PTR),
        ("struct foo *", ArgKind.PTR),
        ("int", ArgKind.S32),
        ("unsigned int", ArgKind.U32),
        ("unsigned", ArgKind.U32),
        ("const int", ArgKind.S32),
        ("long", ArgKind.S64),
        ("unsigned long", ArgKind.U64),
        ("long long", ArgKind.S64),
        ("short", ArgKind.S16),
        ("unsigned short", ArgKind.U16),
        ("char", ArgKind.S8),
        ("unsigned char", ArgKind.U8),
        ("bool", ArgKind.BOOL),
        ("_Bool", ArgKind.BOOL),
        ("size_t", ArgKind.U64),
        ("ssize_t", ArgKind.S64),
        ("uint32_t", ArgKind.U32),
        ("int64_t", ArgKind.S64),
        ("pid_t", ArgKind.S32),
    ],
)
def test_kind_of_readable(ctype, kind):
    assert kind_of(ctype) == (kind, "")


@pytest.mark.parametrize("ctype", ["double", "float", "long double", "const double"])
def test_kind_of_floating_point(ctype):
    assert kind_of(ctype) == (ArgKind.UNAVAILABLE, "floating-point register")


@pytest.mark.parametrize(
    "ctype",
    [
        "std::string",
        "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >",
        "struct timeval",
        "demo::Point",
    ],
)
def test_kind_of_struct_by_value(ctype):
    kind, note = kind_of(ctype)
    assert kind is ArgKind.UNAVAILABLE
    assert note.endswith("passed by value")


# --- sysv_args --------------------------------------------------------------------------------------


def _locs(specs: list[ArgSpec]) -> list[object]:
    return [a.loc if a.kind is not ArgKind.UNAVAILABLE else None for a in specs]


def test_register_order_then_stack():
    specs = sysv_args([f"long a{i}" for i in range(9)])
    assert [a.name for a in specs] == [f"a{i}" for i in range(9)]
    assert all(a.kind is ArgKind.S64 for a in specs)
    assert _locs(specs) == [Reg(r) for r in ("rdi", "rsi", "rdx", "rcx", "r8", "r9")] + [
        Stack(8),
        Stack(16),
        Stack(24),
    ]


def test_floats_take_no_integer_register():
    specs = sysv_args(["double x", "int a", "float y", "char *s", "long double z", "long b"])
    assert [a.name for a in specs] == ["x", "a", "y", "s", "z", "b"]
    assert [a.kind for a in specs] == [
        ArgKind.UNAVAILABLE,
        ArgKind.S32,
        ArgKind.UNAVAILABLE,
        ArgKind.CSTR,
        ArgKind.UNAVAILABLE,
        ArgKind.S64,
    ]
    assert _locs(specs) == [None, Reg("rdi"), None, Reg("rsi"), None, Reg("rdx")]
    assert specs[0].note == "floating-point register"


def test_floats_do_not_push_seventh_integer_to_stack():
    specs = sysv_args(["double d", *[f"int a{i}" for i in range(7)]])
    assert specs[-2].loc == Reg("r9")
    assert specs[-1].loc == Stack(8)


def test_everything_after_struct_by_value_is_unavailable():
    specs = sysv_args(["int a", "std::string s", "int b", "char *c", "double d"])
    assert specs[0] == ArgSpec("a", ArgKind.S32, Reg("rdi"))
    assert specs[1].kind is ArgKind.UNAVAILABLE and specs[1].note == "std::string passed by value"
    for a in specs[2:]:
        assert a.kind is ArgKind.UNAVAILABLE
        assert a.note == "after std::string passed by value"
    assert [a.name for a in specs] == ["a", "s", "b", "c", "d"]


def test_this_takes_rdi():
    specs = sysv_args(["int n", "char const* s"], this=True)
    assert specs == [
        ArgSpec("this", ArgKind.PTR, Reg("rdi")),
        ArgSpec("n", ArgKind.S32, Reg("rsi")),
        ArgSpec("s", ArgKind.CSTR, Reg("rdx")),
    ]


def test_this_shifts_the_sixth_argument_to_the_stack():
    specs = sysv_args([f"int a{i}" for i in range(6)], this=True)
    assert specs[-1].loc == Stack(8)


def test_bare_types_get_positional_names():
    specs = sysv_args(["int", "char const*", "double", "unsigned long"])
    assert [a.name for a in specs] == ["arg0", "arg1", "arg2", "arg3"]
    assert [a.kind for a in specs] == [ArgKind.S32, ArgKind.CSTR, ArgKind.UNAVAILABLE, ArgKind.U64]
    assert _locs(specs) == [Reg("rdi"), Reg("rsi"), None, Reg("rdx")]


def test_void_and_empty_parameters_are_skipped():
    assert sysv_args(["void"]) == []
    assert sysv_args([]) == []


def test_max_len_is_passed_to_every_argument():
    specs = sysv_args(["char *a", "int b"], max_len=512)
    assert [a.max_len for a in specs] == [512, 512]


@pytest.mark.parametrize(
    ("param", "name", "kind"),
    [
        ("long n", "n", ArgKind.S64),
        ("const char *name", "name", ArgKind.CSTR),
        ("char const* s", "s", ArgKind.CSTR),
        ("const char *const name", "name", ArgKind.CSTR),
        ("int*p", "p", ArgKind.PTR),
        ("unsigned int flags", "flags", ArgKind.U32),
        ("unsigned flags", "flags", ArgKind.U32),
        ("long long x", "x", ArgKind.S64),
        ("std::string const& s", "s", ArgKind.PTR),
        ("struct foo *f", "f", ArgKind.PTR),
        ("size_t len", "len", ArgKind.U64),
        # multi-word types without a name: the last word is part of the type
        ("unsigned long", "arg0", ArgKind.U64),
        ("long int", "arg0", ArgKind.S64),
        ("unsigned char", "arg0", ArgKind.U8),
        ("char const", "arg0", ArgKind.S8),
        ("long double", "arg0", ArgKind.UNAVAILABLE),
    ],
)
def test_type_and_name(param, name, kind):
    (spec,) = sysv_args([param])
    assert (spec.name, spec.kind) == (name, kind)


def test_array_parameter_is_a_pointer():
    specs = sysv_args(["char buf[16]", "int n"])
    assert [a.name for a in specs] == ["buf", "n"]
    assert specs[1] == ArgSpec("n", ArgKind.S32, Reg("rsi"))


def test_default_args():
    specs = default_args()
    assert specs == [ArgSpec(f"arg{i}", ArgKind.S64, Reg(r)) for i, r in enumerate(SYSV_INT_ARGS)]
    assert len(default_args(2)) == 2


# --- parse_user_probe -------------------------------------------------------------------------------


def test_parse_user_probe_signature():
    name, params = parse_user_probe("demo_greet(const char *name, long n)")
    assert name == "demo_greet"
    assert params == ["const char *name", "long n"]
    specs = sysv_args(params)
    assert specs == [ArgSpec("name", ArgKind.CSTR, Reg("rdi")), ArgSpec("n", ArgKind.S64, Reg("rsi"))]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("demo_greet", ("demo_greet", None)),
        ("  demo_greet  ", ("demo_greet", None)),
        ("f()", ("f", [])),
        ("f (int a)", ("f", ["int a"])),
        ("demo::twice<long>(long x)", ("demo::twice<long>", ["long x"])),
        ("ns::f(void (*cb)(int), int n)", ("ns::f", ["void (*cb)(int)", "int n"])),
        ("f(std::map<int, int> m, char *s)", ("f", ["std::map<int, int> m", "char *s"])),
        ("demo::Shape::area(int) const", ("demo::Shape::area(int) const", None)),
        ("parse_*", ("parse_*", None)),
    ],
)
def test_parse_user_probe(expr, expected):
    assert parse_user_probe(expr) == expected


def test_parse_user_probe_call_operator():
    assert parse_user_probe("demo::Shape::operator()(int x)") == ("demo::Shape::operator()", ["int x"])


def test_parse_user_probe_less_operator():
    assert parse_user_probe("demo::Shape::operator<(demo::Shape const& o)") == (
        "demo::Shape::operator<",
        ["demo::Shape const& o"],
    )


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("demo::Shape::operator<<(int n)", ("demo::Shape::operator<<", ["int n"])),
        ("demo::Shape::operator<=>(demo::Shape const& o)", ("demo::Shape::operator<=>", ["demo::Shape const& o"])),
        ("demo::Shape::operator>(demo::Shape const& o)", ("demo::Shape::operator>", ["demo::Shape const& o"])),
        ("demo::Shape::operator->()", ("demo::Shape::operator->", [])),
        ("demo::Shape::operator[](int i)", ("demo::Shape::operator[]", ["int i"])),
        ("demo::Shape::operator unsigned long()", ("demo::Shape::operator unsigned long", [])),
        ("operator new[](unsigned long n)", ("operator new[]", ["unsigned long n"])),
        (
            "demo::operator< <int>(demo::Box<int> const& a, demo::Box<int> const& b)",
            ("demo::operator< <int>", ["demo::Box<int> const& a", "demo::Box<int> const& b"]),
        ),
        ("demo::Shape::operator()", ("demo::Shape::operator()", None)),  # the name alone: every overload
        ("demo::Shape::operator<", ("demo::Shape::operator<", None)),
        ("demo::Shape::operator()(int) const", ("demo::Shape::operator()(int) const", None)),
    ],
)
def test_parse_user_probe_operators(expr, expected):
    assert parse_user_probe(expr) == expected


# --- args_for -------------------------------------------------------------------------------------


def _sym(name: str, raw: str) -> Symbol:
    return Symbol(name=name, raw=raw, address=0x401000, size=32, binding=B.GLOBAL, offset=0x1000, module="/m")


def test_args_for_demangled_member():
    sym = _sym("demo::Shape::area(int) const", "_ZNK4demo5Shape4areaEi")
    this, arg = args_for(sym, None, 64)
    assert (this.name, this.kind, this.loc) == ("this", ArgKind.PTR, Reg("rdi"))
    assert arg == ArgSpec("arg0", ArgKind.S32, Reg("rsi"), max_len=64)


def test_args_for_free_function():
    sym = _sym("greet(char const*, int)", "_Z5greetPKci")
    assert args_for(sym, None, 64) == [
        ArgSpec("arg0", ArgKind.CSTR, Reg("rdi"), max_len=64),
        ArgSpec("arg1", ArgKind.S32, Reg("rsi"), max_len=64),
    ]


def test_args_for_scoped_function_without_evidence_is_uncertain():
    # `demo` may be a namespace or a class: nothing in a file that does not exist says which
    sym = _sym("demo::greet(char const*, int)", "_ZN4demo5greetEPKci")
    args = args_for(sym, None, 64)
    assert [(a.name, a.kind, a.loc) for a in args] == [
        ("arg0", ArgKind.PTR, Reg("rdi")),
        ("arg1", ArgKind.PTR, Reg("rsi")),
        ("arg2", ArgKind.PTR, Reg("rdx")),
    ]
    assert all(a.uncertain == "no evidence whether demo::greet is a member function; no DWARF" for a in args)


def test_args_for_gcc_clone_is_not_decoded():
    sym = Symbol(
        name="demo::greet(char const*, int) [clone .isra.0]", raw="_ZN4demo5greetEPKci.isra.0", address=0x401000,
        size=32, binding=B.LOCAL, offset=0x1000, module="/m", clone=".isra.0",
    )  # fmt: skip
    (only,) = args_for(sym, None, 64)
    assert only.kind is ArgKind.UNAVAILABLE and "GCC clone .isra.0" in only.note
    assert args_for(sym, ["char const* s", "int n"], 64) == [only]  # not even with a signature


def test_args_for_c_symbol_and_user_signature():
    sym = _sym("demo_add", "demo_add")
    assert args_for(sym, None, 64) == default_args()
    assert args_for(sym, ["long a", "long b"], 64) == [
        ArgSpec("a", ArgKind.S64, Reg("rdi"), max_len=64),
        ArgSpec("b", ArgKind.S64, Reg("rsi"), max_len=64),
    ]
    # a user signature overrides the demangled one, including the `this` guess
    member = _sym("demo::Shape::area(int) const", "_ZNK4demo5Shape4areaEi")
    assert args_for(member, ["void *self", "int n"], 64)[1] == ArgSpec("n", ArgKind.S32, Reg("rsi"), max_len=64)


# --- node.libuv_args --------------------------------------------------------------------------------


def test_libuv_tcp_listen():
    specs = libuv_args("uv__tcp_listen", 128)
    assert specs is not None
    assert [a.name for a in specs] == ["handle", "type", "backlog"]
    handle, htype, backlog = specs
    assert handle == ArgSpec("handle", ArgKind.PTR, Reg("rdi"))
    assert htype.kind is ArgKind.S32
    assert htype.loc == Deref(Reg("rdi"), HANDLE_TYPE_OFFSET, 4) == Deref(Reg("rdi"), 16, 4)
    labels = dict(htype.labels)
    assert labels[12] == "tcp" and labels[7] == "pipe" and labels[15] == "udp"
    assert backlog == ArgSpec("backlog", ArgKind.S32, Reg("rsi"))


def test_libuv_fs_open_skips_void_pointers_and_keeps_registers():
    specs = libuv_args("uv_fs_open", 64)
    assert specs == [
        ArgSpec("path", ArgKind.CSTR, Reg("rdx"), max_len=64),
        ArgSpec("flags", ArgKind.S32, Reg("rcx"), max_len=64),
        ArgSpec("mode", ArgKind.S32, Reg("r8"), max_len=64),
    ]


def test_libuv_handle_in_second_register():
    specs = libuv_args("uv_tcp_connect", 128)
    assert specs is not None
    assert [(a.name, a.loc) for a in specs] == [("handle", Reg("rsi")), ("type", Deref(Reg("rsi"), 16, 4))]


def test_libuv_unknown_function():
    assert libuv_args("uv_nonexistent", 128) is None


@pytest.mark.parametrize("name", sorted(PROTOTYPES))
def test_libuv_prototypes_are_all_readable(name):
    specs = libuv_args(name, 128)
    assert specs is not None
    for a in specs:
        assert a.kind is not ArgKind.UNAVAILABLE, (name, a)
        assert not isinstance(a.loc, Const), (name, a)


def test_libuv_argument_names_are_unique():
    for name in PROTOTYPES:
        names = [a.name for a in libuv_args(name, 128) or []]
        assert len(names) == len(set(names)), (name, names)
