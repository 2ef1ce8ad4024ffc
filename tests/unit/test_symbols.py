"""read_symbols on synthetic files, and against `nm` on programs compiled here; demangling."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.elfgen import (
    INDEX,
    SHN_ABS,
    SHN_UNDEF,
    STB_LOCAL,
    STB_WEAK,
    STT_GNU_IFUNC,
    STT_NOTYPE,
    STT_OBJECT,
    Sym,
    build_elf,
)
from utrace.elf import demangle as demangle_mod
from utrace.elf.demangle import clone_suffix, demangle, demangle_many
from utrace.elf.reader import ElfImage
from utrace.elf.symbols import SymbolTable, read_symbols
from utrace.model import Binding
from utrace.store import parallel

NODE_LISTEN = "_ZN4node7TCPWrap6ListenERKN2v820FunctionCallbackInfoINS1_5ValueEEE"
NODE_LISTEN_DEMANGLED = "node::TCPWrap::Listen(v8::FunctionCallbackInfo<v8::Value> const&)"

SYMTAB = [
    Sym("main", 0x10, size=32),
    Sym("helper", 0x40, bind=STB_LOCAL),
    Sym("weakfn", 0x60, bind=STB_WEAK),
    Sym("resolver_ifunc", 0x80, type=STT_GNU_IFUNC),
    Sym("alias_one", 0xA0),
    Sym("alias_two", 0xA0),
    Sym(NODE_LISTEN, 0xC0),
    Sym("_Zinvalid_mangling", 0xD0),
    Sym("foo.cold", 0x100, bind=STB_LOCAL),
    Sym("foo.part.0", 0x110, bind=STB_LOCAL),
    Sym("bar.isra.0", 0x120, bind=STB_LOCAL),
    Sym("baz.constprop.0.isra.0", 0x130, bind=STB_LOCAL),
    Sym("_ZN3foo3barEv.cold", 0x140, bind=STB_LOCAL),
    Sym("unique_bind", 0x150, bind=10),  # STB_GNU_UNIQUE
    # Excluded: not functions, not defined, absolute, zero-valued, nameless.
    Sym("an_object", 0, section=".probes", type=STT_OBJECT),
    Sym("a_label", 0x170, type=STT_NOTYPE),
    Sym("undefined_fn", 0, section=None, shndx=SHN_UNDEF),
    Sym("undefined_plt_fn", 0x401000, section=None, shndx=SHN_UNDEF),
    Sym("absolute_fn", 0x1234, section=None, shndx=SHN_ABS),
    Sym("zero_fn", 0, section=None, shndx=INDEX[".text"]),
    Sym("", 0x180),
]
DYNSYM = [
    Sym("main", 0x10, size=32),  # duplicate of .symtab: merged
    Sym("alias_two", 0xA0),  # duplicate: merged
    Sym("dyn_alias_of_main", 0x10),  # a new name at a known address: kept
    Sym("dynamic_only", 0x190),
    Sym("undefined_dyn", 0, section=None, shndx=SHN_UNDEF),
]
EXPECTED = [
    # (raw, text offset, binding, clone)
    ("main", 0x10, Binding.GLOBAL, ""),
    ("helper", 0x40, Binding.LOCAL, ""),
    ("weakfn", 0x60, Binding.WEAK, ""),
    ("resolver_ifunc", 0x80, Binding.GLOBAL, ""),
    ("alias_one", 0xA0, Binding.GLOBAL, ""),
    ("alias_two", 0xA0, Binding.GLOBAL, ""),
    (NODE_LISTEN, 0xC0, Binding.GLOBAL, ""),
    ("_Zinvalid_mangling", 0xD0, Binding.GLOBAL, ""),
    ("foo.cold", 0x100, Binding.LOCAL, ".cold"),
    ("foo.part.0", 0x110, Binding.LOCAL, ".part.0"),
    ("bar.isra.0", 0x120, Binding.LOCAL, ".isra.0"),
    ("baz.constprop.0.isra.0", 0x130, Binding.LOCAL, ".constprop.0.isra.0"),
    ("_ZN3foo3barEv.cold", 0x140, Binding.LOCAL, ".cold"),
    ("unique_bind", 0x150, Binding.OTHER, ""),
    ("dyn_alias_of_main", 0x10, Binding.GLOBAL, ""),
    ("dynamic_only", 0x190, Binding.GLOBAL, ""),
]


def _read(tmp_path, **kwargs) -> tuple[SymbolTable, object]:
    built = build_elf(**kwargs)
    with ElfImage(built.write(tmp_path / "a.out")) as img:
        return read_symbols(img, "abcd"), built


@pytest.mark.parametrize("shared", [False, True])
def test_function_symbols_selected_merged_and_placed(tmp_path, shared):
    table, built = _read(tmp_path, shared=shared, symtab=SYMTAB, dynsym=DYNSYM)
    assert table.build_id == "abcd"
    syms = [table.symbol(i) for i in range(len(table))]
    got = [(s.raw, s.address, s.binding, s.clone) for s in syms]
    text_addr, text_off = built.addrs[".text"], built.offsets[".text"]
    assert got == [(raw, text_addr + off, b, c) for raw, off, b, c in EXPECTED]
    for s, (_raw, off, _b, _c) in zip(syms, EXPECTED, strict=True):
        assert s.offset == text_off + off, s.raw  # through the segment, not address == offset
        assert s.offset != s.address
        assert s.module == table.module
    assert syms[0].size == 32


def test_demangled_names_and_clones(tmp_path):
    table, _ = _read(tmp_path, symtab=SYMTAB, dynsym=DYNSYM)
    by_raw = {table.raws[i]: table.symbol(i) for i in range(len(table))}
    assert by_raw[NODE_LISTEN].name == NODE_LISTEN_DEMANGLED
    assert by_raw["_Zinvalid_mangling"].name == "_Zinvalid_mangling"
    assert by_raw["main"].name == "main"
    assert by_raw["_ZN3foo3barEv.cold"].name == "foo::bar() [clone .cold]"
    entries = {table.raws[i] for i in table.entries()}
    assert entries == set(by_raw) - {"foo.cold", "_ZN3foo3barEv.cold"}


def test_only_dynsym(tmp_path):
    table, built = _read(tmp_path, symtab=None, dynsym=DYNSYM)
    assert table.raws == ["main", "alias_two", "dyn_alias_of_main", "dynamic_only"]
    assert table.symbol(3).offset == built.offsets[".text"] + 0x190


def test_no_symbols(tmp_path):
    table, _ = _read(tmp_path, symtab=None, dynsym=None)
    assert len(table) == 0 and list(table.entries()) == []


def test_containing_and_offset_of(tmp_path):
    table, built = _read(tmp_path, symtab=SYMTAB, dynsym=DYNSYM)
    text = built.addrs[".text"]
    i = table.containing(text + 0x10 + 31)
    assert i is not None and table.raws[i] in ("main", "dyn_alias_of_main")
    assert table.raws[table.containing(text + 0x45)] == "helper"  # type: ignore[index]
    assert table.containing(text + 0x10 - 1) is None
    assert table.containing(0) is None
    assert table.offset_of(built.addrs[".probes"]) == built.offsets[".probes"]
    assert table.offset_of(1) is None


def test_unmapped_symbol_gets_offset_minus_one(tmp_path):
    table, _ = _read(tmp_path, symtab=[Sym("far_away", 0x10_0000_0000, section=None, shndx=1)])
    assert table.symbol(0).offset == -1


def test_non_utf8_symbol_name(tmp_path):
    table, _ = _read(tmp_path, symtab=[Sym("bad\udcffname", 0x10), Sym("_Zbad\udcfe", 0x20)])
    assert table.raws == ["bad\udcffname", "_Zbad\udcfe"]
    assert table.names == table.raws


# -- demangling ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clone"),
    [
        ("f.cold", ".cold"),
        ("f.part.0", ".part.0"),
        ("f.isra.0", ".isra.0"),
        ("f.constprop.0.isra.0", ".constprop.0.isra.0"),
        ("f.constprop.0", ".constprop.0"),
        ("f.isra.0.cold", ".isra.0.cold"),
        ("_ZN3foo3barEv.part.0", ".part.0"),
        ("f", ""),
        ("f.c", ""),
        ("some.dotted.name", ""),
        ("a.part.b", ""),
    ],
)
def test_clone_suffix(raw, clone):
    assert clone_suffix(raw) == clone


def test_demangle_single():
    assert demangle(NODE_LISTEN) == NODE_LISTEN_DEMANGLED
    assert demangle("_Z") == "_Z"
    assert demangle("_Zinvalid") == "_Zinvalid"
    assert demangle("printf") == "printf"
    assert demangle("_Z3foov.cold") == "foo() [clone .cold]"


def _many_names() -> list[str]:
    names = [f"_ZN2ns{len(f'fn{i}')}fn{i}Ev" for i in range(300)]
    names += [f"plain_{i}" for i in range(50)] + ["_Zgarbage", "_Z", "_Zbad\udcff", NODE_LISTEN]
    names += names[:100]  # duplicates
    return names


def test_demangle_many_parallel_equals_serial(monkeypatch):
    names = _many_names()
    serial = demangle_many(names)
    assert serial[0] == "ns::fn0()"
    assert serial[names.index(NODE_LISTEN)] == NODE_LISTEN_DEMANGLED
    assert serial[names.index("_Zgarbage")] == "_Zgarbage"
    calls = []
    real = demangle_mod.in_child

    def spy(job):
        calls.append(1)
        return real(job)

    monkeypatch.setattr(demangle_mod, "_PARALLEL_THRESHOLD", 2)
    monkeypatch.setattr(demangle_mod, "worth_a_child", lambda: True)
    monkeypatch.setattr(demangle_mod, "in_child", spy)
    assert demangle_many(names) == serial
    assert calls == [1]  # a child took half


def test_failed_child_loses_no_name(monkeypatch):
    names = _many_names()
    serial = demangle_many(names)

    def dying(job):
        return parallel.in_child(lambda: os._exit(3))

    monkeypatch.setattr(demangle_mod, "_PARALLEL_THRESHOLD", 2)
    monkeypatch.setattr(demangle_mod, "worth_a_child", lambda: True)
    monkeypatch.setattr(demangle_mod, "in_child", dying)
    assert demangle_many(names) == serial


def test_child_result_travels_whole():
    big = bytes(range(256)) * 20000  # several pipe buffers
    assert parallel.in_child(lambda: big)() == big
    with pytest.raises(parallel.ChildFailed):
        parallel.in_child(lambda: os._exit(0))()


def test_cxxfilt_fallback_agrees():
    """Without libstdc++ by soname, cxxfilt does the same job with the same results."""
    names = [n.encode("utf-8", "surrogateescape") for n in _many_names()]
    long_name = ("_Z1fI" + "St6vectorI" * 7000 + "i" + "E" * 7000 + "EvT_").encode()  # demangles to 77 kB
    names += [long_name, b"_Z3foov", long_name, b"_Z3barv"]
    ours = demangle_mod.demangle_serial(names)
    assert ours == demangle_mod._cxxfilt_demangler()(names)
    assert ours[-3] == b"foo()" and ours[-1] == b"bar()" and len(ours[-2]) > 1 << 16


@pytest.mark.parametrize("share_rows", [1, 10**9])
def test_parallel_and_serial_reads_agree(tmp_path, monkeypatch, share_rows):
    """The forked reader (the child merges .dynsym) gives what the serial one gives, and the part it
    hands over early is the .symtab prefix of the same entries."""
    import utrace.elf.symbols as symbols_mod

    path = build_elf(symtab=SYMTAB, dynsym=DYNSYM).write(tmp_path / "both")
    with ElfImage(str(path)) as image:
        serial = read_symbols(image, None)
    monkeypatch.setattr(symbols_mod, "_PARALLEL_ROWS", share_rows)
    monkeypatch.setattr(symbols_mod, "worth_a_child", lambda: True)
    parts = []
    with ElfImage(str(path)) as image:
        table = read_symbols(image, None, first_part=parts.append)
    columns = ("names", "raws", "addresses", "sizes", "bindings", "clones")
    assert table.names and [getattr(table, c) for c in columns] == [getattr(serial, c) for c in columns]
    assert "dynamic_only" in table.raws
    if share_rows == 1:  # the forked path hands over the first half of the first table's functions early
        (part,) = parts
        n = len(part)
        first = [raw for raw, *_ in EXPECTED if raw not in ("dyn_alias_of_main", "dynamic_only")]
        assert part.raws == first[: len(first) // 2] and n > 0
        assert [getattr(part, c) for c in columns] == [getattr(table, c)[:n] for c in columns]


def test_early_rendered_listing_equals_the_serial_one(tmp_path, monkeypatch):
    """A cold listing renders the .symtab part while .dynsym is merged; the text is what a serial read
    renders, the extra .dynsym functions at the end."""
    import utrace.elf.symbols as symbols_mod
    from utrace.app.list_probes import list_target
    from utrace.model import Module, Target
    from utrace.output.listing import PLAIN, plain_lines

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = str(build_elf(symtab=SYMTAB, dynsym=DYNSYM).write(tmp_path / "both"))
    target = Target(exe=path, modules=(Module(path=path, display=path),))
    with ElfImage(path) as image:
        serial = read_symbols(image, None)
    expected = plain_lines(serial, list(serial.entries()))
    monkeypatch.setattr(symbols_mod, "_PARALLEL_ROWS", 1)
    monkeypatch.setattr(symbols_mod, "worth_a_child", lambda: True)
    for pattern, want in ((None, expected), ("d*", None)):
        listing = list_target(target, pattern, render=PLAIN)
        (mf,) = listing.functions
        if want is None:
            want = plain_lines(serial, [i for i in serial.entries() if serial.raws[i].startswith("d")])
        assert mf.rendered == want
        assert mf.rendered.endswith(b" dynamic_only\n")


@pytest.mark.parametrize("how", ["dies", "garbles"])
def test_a_reader_child_that_fails_loses_nothing(tmp_path, monkeypatch, how):
    """The forked reader's child dying before its result, or sending a damaged one: this process does
    the child's part itself and the table is the serial one."""
    import utrace.elf.symbols as symbols_mod

    path = build_elf(symtab=SYMTAB, dynsym=DYNSYM).write(tmp_path / "both")
    with ElfImage(str(path)) as image:
        serial = read_symbols(image, None)

    def failing(job):
        def fail():
            if how == "dies":
                os._exit(3)
            return job()[:-3]  # a marshal payload cut short

        return parallel.in_child(fail)

    monkeypatch.setattr(symbols_mod, "_PARALLEL_ROWS", 1)
    monkeypatch.setattr(symbols_mod, "worth_a_child", lambda: True)
    monkeypatch.setattr(symbols_mod, "in_child", failing)
    with ElfImage(str(path)) as image:
        table = read_symbols(image, None)
    columns = ("names", "raws", "addresses", "sizes", "bindings", "clones")
    assert table.names and [getattr(table, c) for c in columns] == [getattr(serial, c) for c in columns]


_NAMES = st.sampled_from(["", "f", "g", "fg", "gf", "f.cold", "_ZN3foo3barEv", "_ZN3foo3barEv.isra.0"])
_ROWS = st.lists(st.tuples(_NAMES, st.sampled_from([0x10, 0x20, 0x30, 0x40])), max_size=8)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(symtab=_ROWS, dynsym=_ROWS, forked=st.booleans())
def test_dynsym_merge_follows_the_rule(tmp_path, monkeypatch, symtab, dynsym, forked):
    """Whatever the tables hold (aliases, repeated and unnamed entries, names that extend others): the
    table is .symtab's named functions, then each named .dynsym function whose name or address
    .symtab's named functions lack, in file order."""
    import utrace.elf.symbols as symbols_mod

    path = build_elf(
        symtab=[Sym(n, a) for n, a in symtab] or None, dynsym=[Sym(n, a) for n, a in dynsym] or None
    ).write(tmp_path / "t")
    with ElfImage(str(path)) as image:
        base = next(s.addr for s in image.sections if s.name == ".text")
    first = [(n, base + a) for n, a in symtab if n]
    names, addresses = {n for n, _ in first}, {a for _, a in first}
    expected = first + [(n, base + a) for n, a in dynsym if n and (n not in names or base + a not in addresses)]
    monkeypatch.setattr(symbols_mod, "_PARALLEL_ROWS", 1 if forked else 10**9)
    monkeypatch.setattr(symbols_mod, "worth_a_child", lambda: forked)
    with ElfImage(str(path)) as image:
        table = read_symbols(image, None)
    assert list(zip(table.raws, table.addresses, strict=True)) == expected


# -- against nm on real programs ------------------------------------------------------------------

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")

C_PROGRAM = r"""
#include <stdio.h>
static int helper(int x) { return x * 3; }
__attribute__((weak)) int weakfn(int x) { return x + 1; }
__attribute__((noinline)) int alias_target(int x) { return x - 1; }
int alias_name(int) __attribute__((alias("alias_target")));
static int impl(void) { return 42; }
static int (*resolve(void))(void) { return impl; }
int ifn(void) __attribute__((ifunc("resolve")));
int counter = 5;
int main(int argc, char **argv) {
    (void)argv;
    printf("%d\n", helper(argc) + weakfn(argc) + alias_name(argc) + ifn() + counter);
    return 0;
}
"""

CXX_PROGRAM = r"""
#include <cstdio>
#include <cstdlib>
#include <string>
namespace ns {
struct Widget {
  int v;
  __attribute__((noinline)) int get(const std::string &s) const {
    if (__builtin_expect(s.empty(), 0)) { std::fprintf(stderr, "empty %d\n", v); std::abort(); }
    return v + (int)s.size();
  }
};
template <typename T> __attribute__((noinline)) T twice(T x) { return x * 2; }
}
static __attribute__((noinline)) int part(int *p, int n) {
  if (n > 100) { for (int i = 0; i < n; i++) p[i] = i * n; return p[n / 2]; }
  return n;
}
int main(int argc, char **argv) {
  ns::Widget w{argc};
  int buf[1000];
  return w.get(argv[0]) + ns::twice(argc) + (int)ns::twice(2.0) + part(buf, argc * 50);
}
"""


def _compile(tmp_path, source: str, suffix: str, *flags: str) -> str:
    src = tmp_path / f"prog{suffix}"
    src.write_text(source)
    out = str(tmp_path / "prog")
    compiler = "g++" if suffix == ".cc" else "gcc"
    subprocess.run([compiler, *flags, "-o", out, str(src)], check=True, capture_output=True)
    return out


def _nm(path: str, *flags: str) -> set[tuple[str, int]]:
    """Function symbols per nm: T/t/i, and W/w when inside an executable section (not data_start)."""
    out = subprocess.run(["nm", "--defined-only", *flags, path], check=True, capture_output=True, text=True).stdout
    from elftools.elf.elffile import ELFFile  # an independent reader for the section flags

    with open(path, "rb") as f:
        exec_ranges = [
            (s["sh_addr"], s["sh_addr"] + s["sh_size"])
            for s in ELFFile(f).iter_sections()
            if s["sh_flags"] & 4  # SHF_EXECINSTR
        ]
    result = set()
    for line in out.splitlines():
        m = re.match(r"^([0-9a-f]+) ([A-Za-z]) (.+)$", line)
        if not m:
            continue
        addr, kind, name = int(m.group(1), 16), m.group(2), m.group(3)
        if kind in "Tti" or (kind in "Ww" and any(lo <= addr < hi for lo, hi in exec_ranges)):
            result.add((name, addr))
    return result


def _file_offset_oracle(path: str, addr: int) -> int:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        for s in ELFFile(f).iter_sections():
            loaded = s["sh_flags"] & 2 and s["sh_type"] != "SHT_NOBITS"
            if loaded and s["sh_addr"] <= addr < s["sh_addr"] + s["sh_size"]:
                return int(addr - s["sh_addr"] + s["sh_offset"])
    raise AssertionError(f"{addr:#x} in no section")


@needs_gcc
@pytest.mark.parametrize("pie", ["-no-pie", "-pie"])
def test_against_nm_c_program(tmp_path, pie):
    path = _compile(tmp_path, C_PROGRAM, ".c", "-O0", pie)
    with ElfImage(path) as img:
        table = read_symbols(img, None)
    got = {(table.raws[i], table.addresses[i]) for i in range(len(table))}
    assert got == _nm(path)
    assert len(got) == len(table)  # no duplicates
    names = set(table.raws)
    assert {"helper", "weakfn", "alias_target", "alias_name", "ifn", "main"} <= names
    for i in range(len(table)):
        s = table.symbol(i)
        assert s.offset == _file_offset_oracle(path, s.address), s.raw


@needs_gcc
def test_against_nm_dynamic_symbols_of_stripped_program(tmp_path):
    path = _compile(tmp_path, C_PROGRAM, ".c", "-O0", "-rdynamic")
    subprocess.run(["strip", path], check=True)
    with ElfImage(path) as img:
        assert img.section(".symtab") is None
        table = read_symbols(img, None)
    assert {(table.raws[i], table.addresses[i]) for i in range(len(table))} == _nm(path, "-D")
    assert {"weakfn", "alias_name", "main", "ifn"} <= set(table.raws)


@needs_gcc
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_against_nm_cxx_demangled(tmp_path):
    path = _compile(tmp_path, CXX_PROGRAM, ".cc", "-O2")
    with ElfImage(path) as img:
        table = read_symbols(img, None)
    assert {(table.raws[i], table.addresses[i]) for i in range(len(table))} == _nm(path)
    assert {(table.names[i], table.addresses[i]) for i in range(len(table))} == _nm(path, "-C")
    clones = {table.raws[i]: table.clones[i] for i in range(len(table)) if table.clones[i]}
    assert any(c == ".cold" for c in clones.values()), clones
    cold = [i for i in range(len(table)) if table.clones[i] == ".cold"]
    assert not set(cold) & set(table.entries())
    assert os.path.basename(table.module) == "prog"


@given(
    st.lists(st.tuples(st.binary(min_size=1, max_size=10), st.binary(min_size=1, max_size=10)), max_size=20),
    st.text(st.sampled_from(list("ab\x00\udcff\u00e9_")), min_size=1, max_size=3),
)
def test_names_tested_and_decoded_one_by_one_agree_with_the_decoded_columns(rows, text) -> None:
    """A table still holding its names as bytes answers `holding` and `name_at` without decoding them
    all; oracle: the decoded columns (and `in` over them)."""
    from utrace.elf.symbols import SymbolTable

    rows = [(n.replace(b"\0", b"x"), r.replace(b"\0", b"x")) for n, r in rows]

    def table() -> SymbolTable:
        n = len(rows)
        return SymbolTable(
            "m", None, addresses=[0] * n, sizes=[0] * n, bindings=[1] * n, clones=[""] * n,
            name_bytes=[r[0] for r in rows], raw_bytes=[r[1] for r in rows],
        )  # fmt: skip

    lazy, decoded = table(), table()
    names, raws = decoded.names, decoded.raws
    assert [lazy.name_at(i) for i in range(len(rows))] == names
    assert [lazy.raw_at(i) for i in range(len(rows))] == raws
    holding = lazy.holding(text)
    exact = {i for i in range(len(rows)) if text in names[i] or text in raws[i]}
    assert exact <= holding and decoded.holding(text) == exact
    for raw in {r.decode("utf-8", "surrogateescape") for _n, r in rows} | {text}:
        assert lazy.has_raw(raw) == decoded.has_raw(raw) == (raw in raws)
    assert lazy._names is None and lazy._raws is None  # nothing was decoded whole
