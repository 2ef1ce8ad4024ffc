"""utrace.elf.go.gobin against the Go toolchains' own tools, on every Go fixture binary.

Oracles (none written here): the matching toolchain's `go tool nm` (function names and addresses),
`go version -m` (version and build settings), `go tool buildid` (Go build ID), binutils `objdump --dwarf`
(where net/http.Get was inlined), and the linker's `go.itab.*T,I` / `go:itab.*T,I` symbols (type names).
No root needed; the fixtures come from scripts/build-fixtures.sh and the toolchains from scripts/fetch-go.sh.

Documented differences between `go tool nm` (which lists ELF .symtab symbols) and the pclntab:
  * `runtime.text` / `runtime.etext` are linker-defined bounds of the text section, not functions.
  * ELF symbols of ABI0 assembly functions carry a `.abi0` suffix that the pclntab name never has;
    `GoFunc.abi0` must be set exactly for those entries (`GoFunc.symbol` restores the ELF name).
  * Go 1.15 and 1.24 keep "·" in some pclntab names ("net.(*dialResult·1).Close",
    "type:.eq.net.dialResult·1") where the ELF symbol has "."; we compare with "·" mapped to ".".
  * Go 1.18-1.19 write generic instances as "F[...]" in the pclntab, the ELF symbol spells the type
    arguments out; we compare with every bracket group collapsed to "[...]".
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, need
from utrace.elf.go import gobin
from utrace.elf.go.inline import inlined_calls

pytestmark = pytest.mark.e2e

SYSTEM_GOROOT = "/usr/lib/go-1.19"
# (version label, file-name suffix): the system toolchain builds go/<prog>, fetched ones go/<prog>-go<ver>.
VERSIONS = [
    ("1.19", ""),
    ("1.15", "-go1.15"),
    ("1.21", "-go1.21"),
    ("1.22", "-go1.22"),
    ("1.23", "-go1.23"),
    ("1.24", "-go1.24"),
    ("1.25", "-go1.25"),
    ("1.26", "-go1.26"),
    ("1.27", "-go1.27"),
]
PROGS = ["greet", "httpget"]
VARIANTS = ["", "-stripped", "-pie", "-extlink"]
MATRIX = [(p, v, s, var) for p in PROGS for v, s in VERSIONS for var in VARIANTS]


def _id(case: tuple[str, str, str, str]) -> str:
    prog, ver, _suffix, variant = case
    return f"{prog}-go{ver}{variant}"


@functools.cache
def goroot(version: str) -> str | None:
    if version == "1.19":
        return SYSTEM_GOROOT if os.path.exists(f"{SYSTEM_GOROOT}/bin/go") else None
    p = subprocess.run([str(ROOT / "scripts" / "fetch-go.sh"), version], capture_output=True, text=True)
    lines = p.stdout.strip().splitlines()
    return lines[-1] if p.returncode == 0 and lines else None


def go_tool(version: str, *args: str) -> str:
    root = goroot(version)
    need(root is not None, f"Go {version} toolchain not available (scripts/fetch-go.sh {version})")
    assert root is not None
    env = {k: v for k, v in os.environ.items() if k not in ("GOFLAGS", "GOOS", "GOARCH")}
    env.update(GOROOT=root, GOTOOLCHAIN="local", GOENV="off")
    return subprocess.run([f"{root}/bin/go", *args], capture_output=True, text=True, check=True, env=env).stdout


def binary(fixtures: Path, prog: str, suffix: str, variant: str) -> str:
    path = fixtures / "go" / f"{prog}{suffix}{variant}"
    need(path.exists(), f"{path} not built (scripts/build-fixtures.sh; UTRACE_GO_VERSIONS)")
    return str(path)


@functools.cache
def nm_symbols(version: str, path: str) -> list[tuple[str, str, int]]:
    """(name, type letter, address) of every symbol `go tool nm` prints."""
    out = []
    for line in go_tool(version, "tool", "nm", path).splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and len(parts[1]) == 1:
            out.append((parts[2], parts[1], int(parts[0], 16)))
    return out


def collapse_generics(name: str) -> str:
    out, depth = [], 0
    for ch in name:
        if ch == "[":
            if depth == 0:
                out.append("[...]")
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def norm(name: str) -> str:
    return collapse_generics(name.replace("·", "."))


def nm_functions(version: str, path: str) -> tuple[set[tuple[str, int]], set[int]]:
    """nm's text symbols as comparable (name, address) pairs, and the addresses of `.abi0` ones."""
    funcs: set[tuple[str, int]] = set()
    abi0: set[int] = set()
    syms = nm_symbols(version, path)
    # An externally linked program also has the C runtime's and cgo's C functions (_start, _init,
    # x_cgo_init...), which the C linker puts around Go's text: only [runtime.text, runtime.etext) is Go.
    bounds = {n: a for n, _k, a in syms if n in ("runtime.text", "runtime.etext")}
    lo, hi = bounds.get("runtime.text", 0), bounds.get("runtime.etext", 1 << 64)
    for name, kind, addr in syms:
        if kind not in "Tt" or name in ("runtime.text", "runtime.etext") or not lo <= addr < hi:
            continue
        if name.endswith(".abi0"):
            abi0.add(addr)
            name = name[: -len(".abi0")]
        funcs.add((norm(name), addr))
    return funcs, abi0


# ----------------------------------------------------------------------------- function tables


@pytest.mark.parametrize("case", [c for c in MATRIX if c[3] != "-stripped"], ids=_id)
def test_functions_match_go_tool_nm(fixtures_built: Path, case: tuple[str, str, str, str]) -> None:
    prog, ver, suffix, variant = case
    path = binary(fixtures_built, prog, suffix, variant)
    tab = gobin.pclntab(path)
    expected, abi0 = nm_functions(ver, path)
    got = {(norm(f.name), f.entry) for f in tab}
    assert got == expected, f"only in pclntab: {sorted(got - expected)[:5]}; only in nm: {sorted(expected - got)[:5]}"
    assert {f.entry for f in tab if f.abi0} == abi0
    # end = next entry; file offsets go through PT_LOAD (text is the first segment, offset = VA - 0x400000).
    for a, b in zip(tab.functions, tab.functions[1:], strict=False):
        assert a.end == b.entry
        assert a.offset == a.entry - 0x400000
    syms = dict((n, a) for n, _k, a in nm_symbols(ver, path))
    if ver != "1.15":
        # the base the runtime uses, from the module data the linker wrote (runtime.firstmoduledata)
        assert tab.text_start_source == f"moduledata.text (module data at {syms['runtime.firstmoduledata']:#x})"
        assert tab.text_start == syms["runtime.text"]
    assert tab.module_va == syms["runtime.firstmoduledata"]


@pytest.mark.parametrize("case", [c for c in MATRIX if c[3] == "-stripped"], ids=_id)
def test_stripped_functions_equal_unstripped(fixtures_built: Path, case: tuple[str, str, str, str]) -> None:
    prog, _ver, suffix, variant = case
    stripped = gobin.pclntab(binary(fixtures_built, prog, suffix, variant))
    full = gobin.pclntab(binary(fixtures_built, prog, suffix, ""))
    # -ldflags=-s -w drops .symtab and DWARF but does not move code: same table, same addresses.
    assert [(f.name, f.entry, f.end, f.offset) for f in stripped] == [(f.name, f.entry, f.end, f.offset) for f in full]
    assert all(f.abi0 is None for f in stripped)
    assert stripped.text_start == full.text_start
    assert stripped.text_start_source.startswith("moduledata.text") or stripped.text_start_source == "absolute entries"
    assert stripped.module_va is not None


# ----------------------------------------------------------------------------- version and settings


def go_version_m(ver: str, path: str) -> tuple[str, dict[str, str], str | None]:
    out = go_tool(ver, "version", "-m", path).splitlines()
    version = out[0].split(": ", 1)[1].strip()
    settings: dict[str, str] = {}
    main_path = None
    for line in out[1:]:
        parts = line.strip("\n").split("\t")
        if len(parts) >= 3 and parts[1] == "path":
            main_path = parts[2]
        if len(parts) >= 3 and parts[1] == "build":
            key, _, value = "\t".join(parts[2:]).partition("=")
            # go version -m prints strconv.Quote'd values for settings with spaces, e.g. -ldflags="-s -w".
            settings[key] = json.loads(value) if value.startswith('"') else value
    return version, settings, main_path


@pytest.mark.parametrize("case", MATRIX, ids=_id)
def test_info_matches_go_version_m(fixtures_built: Path, case: tuple[str, str, str, str]) -> None:
    prog, ver, suffix, variant = case
    path = binary(fixtures_built, prog, suffix, variant)
    info = gobin.go_info(path)
    assert info is not None
    version, settings, main_path = go_version_m(ver, path)
    assert info.version == version and info.version_source == "buildinfo"
    assert info.version_tuple is not None and info.version_tuple[:2] == tuple(int(x) for x in ver.split("."))
    assert info.settings == settings
    assert info.main_path == main_path
    assert info.build_id == go_tool(ver, "tool", "buildid", path).strip()
    assert info.arch == "amd64"
    assert info.pie == (variant == "-pie")
    assert info.has_symtab == (variant != "-stripped")
    assert info.has_dwarf == (variant != "-stripped")
    assert info.abi == ("stack" if ver == "1.15" else "regabi")
    # Fixtures are built with CGO_ENABLED=0 but -extlink (=1): 1.18+ records it, 1.15 has no settings
    # (the symbol table decides: runtime/cgo's C part x_cgo_init, which 1.15 links only into programs
    # that use cgo: httpget's net package does, greet does not).
    if ver != "1.15":
        assert settings["CGO_ENABLED"] == ("1" if variant == "-extlink" else "0")
        assert info.cgo is (variant == "-extlink")
    elif variant == "-stripped":
        assert info.cgo is None
    else:
        assert info.cgo is any(n == "x_cgo_init" for n, _k, _a in nm_symbols(ver, path))
        assert info.cgo is (variant == "-extlink" and prog == "httpget")


# ----------------------------------------------------------------------------- inline trees


@functools.cache
def dwarf_inlined(path: str, func: str) -> list[list[tuple[int, int]]]:
    """[low, high) ranges of every DW_TAG_inlined_subroutine whose abstract origin is named `func`.

    The DIEs from binutils' `objdump --dwarf=info`; range lists (DW_AT_ranges) resolved by pyelftools,
    since objdump 2.40 cannot resolve the base address index of a DWARF 5 range list (Go 1.25+ writes
    DWARF 5: .debug_rnglists with DW_RLE_base_addressx into .debug_addr).
    """
    info = subprocess.run(["objdump", "--dwarf=info", path], capture_output=True, text=True, check=True).stdout
    dies: list[tuple[int, str, dict[str, str]]] = []
    for line in info.splitlines():
        m = re.match(r"\s*<\d+><([0-9a-f]+)>: Abbrev Number: \d+ \((\w+)\)", line)
        if m:
            dies.append((int(m.group(1), 16), m.group(2), {}))
            continue
        m = re.match(r"\s*<[0-9a-f]+>\s+(DW_AT_\w+)\s*:\s*(.*)$", line)
        if m and dies:
            dies[-1][2][m.group(1)] = m.group(2).strip()
    origins = {o for o, tag, a in dies if tag == "DW_TAG_subprogram" and a.get("DW_AT_name") == func}
    found: list[list[tuple[int, int]]] = []
    for off, tag, a in dies:
        m = re.match(r"<0x([0-9a-f]+)>", a.get("DW_AT_abstract_origin", ""))
        if tag != "DW_TAG_inlined_subroutine" or not m or int(m.group(1), 16) not in origins:
            continue
        if "DW_AT_low_pc" in a:
            lo, hi = int(a["DW_AT_low_pc"].split()[0], 16), int(a["DW_AT_high_pc"].split()[0], 16)
            found.append([(lo, hi if hi > lo else lo + hi)])
        else:
            found.append(_die_ranges(path, off))
    return found


def _die_ranges(path: str, die_offset: int) -> list[tuple[int, int]]:
    from elftools.dwarf.ranges import BaseAddressEntry, RangeEntry
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        dw = ELFFile(f).get_dwarf_info()
        die = dw.get_DIE_from_refaddr(die_offset)
        top = die.cu.get_top_DIE()
        base = top.attributes["DW_AT_low_pc"].value if "DW_AT_low_pc" in top.attributes else 0
        out = []
        for e in dw.range_lists().get_range_list_at_offset(die.attributes["DW_AT_ranges"].value, cu=die.cu):
            if isinstance(e, BaseAddressEntry):
                base = e.base_address
            elif isinstance(e, RangeEntry):
                add = 0 if e.is_absolute else base
                out.append((e.begin_offset + add, e.end_offset + add))
        return out


HTTPGET = [c for c in MATRIX if c[0] == "httpget"]


@pytest.mark.parametrize("case", HTTPGET, ids=_id)
def test_inlined_net_http_get_matches_dwarf(fixtures_built: Path, case: tuple[str, str, str, str]) -> None:
    prog, _ver, suffix, variant = case
    path = binary(fixtures_built, prog, suffix, variant)
    tab = gobin.pclntab(path)
    assert tab.lookup("net/http.Get") is None  # inlined everywhere: no out-of-line copy to probe
    calls = inlined_calls(tab, "net/http.Get")
    assert [c.caller for c in calls] == ["main.main"]
    main = tab.lookup("main.main")
    assert main is not None and calls[0].caller_entry == main.entry and calls[0].depth == 0
    assert all(main.entry <= lo < hi <= main.end for lo, hi in calls[0].ranges)
    # DWARF is the oracle; a stripped build has none, so it is compared with its unstripped twin's DWARF.
    dwarf_path = binary(fixtures_built, prog, suffix, "") if variant == "-stripped" else path
    dwarf = dwarf_inlined(dwarf_path, "net/http.Get")
    assert len(dwarf) == 1
    assert list(calls[0].ranges) == sorted(dwarf[0])
    assert calls[0].low_pc == min(lo for lo, _hi in dwarf[0])


# ----------------------------------------------------------------------------- runtime type names


def runtime_type_string(symbol_type: str) -> str:
    """What Go's runtime prints for the type named `symbol_type` in an itab symbol: package *names*, not
    paths ("*compress/flate.byFreq" -> "*flate.byFreq"; "math/rand/v2.T" -> "rand.T")."""

    def pkg(m: re.Match[str]) -> str:
        parts = m.group(1).split("/")
        if len(parts) > 1 and re.fullmatch(r"v\d+", parts[-1]):
            parts.pop()
        return parts[-1] + "."

    return re.sub(r"([\w\-]+(?:[./][\w\-]+)*?)\.(?=\w+$)", pkg, symbol_type)


def test_runtime_type_string_helper() -> None:
    assert runtime_type_string("*compress/flate.byFreq") == "*flate.byFreq"
    assert runtime_type_string("*errors.errorString") == "*errors.errorString"
    assert runtime_type_string("math/rand/v2.runtimeSource") == "rand.runtimeSource"
    assert runtime_type_string("runtime.errorString") == "runtime.errorString"
    assert split_itab("*errors.errorString,error") == ("*errors.errorString", "error")
    assert split_itab("*x509.c,interface { x509.q(string) (string, bool) }") == (
        "*x509.c",
        "interface { x509.q(string) (string, bool) }",
    )


def split_itab(pair: str) -> tuple[str, str]:
    """An itab symbol's "T,I" split at its top-level comma: the interface may be a literal with commas
    ("*x509.dnsConstraints,interface { crypto/x509.query(string) (string, bool) }")."""
    depth = 0
    for i, ch in enumerate(pair):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            return pair[:i], pair[i + 1 :]
    return "", pair


def itab_in(path: str, twin: str, itab: int) -> int | None:
    """Where the itab at `itab` of `twin` (a build with symbols) sits in `path` (its stripped build).

    Stripping changes the data layout a little (etypes, moduledata move), but not the code, so the itab's
    hash and first method pointer (bytes 16..32) are the same and find it again; None if not unique.
    """
    with gobin.GoBinary(twin) as t, gobin.GoBinary(path) as b:
        key = t.read_va(itab + 16, 16)
        data = b.img.read(0, b.img.size)
        hits = [m.start() for m in re.finditer(re.escape(key), data)]
        vas = [va for va in (b.offset_to_va(h - 16) for h in hits) if va is not None and va % 8 == 0]
        return vas[0] if len(vas) == 1 else None


# Go 1.27's linker no longer lists itabs in .symtab (test_type_names_match_dwarf_runtime_types covers
# its type data; test_go_tracing its error values against the program's printout).
@pytest.mark.parametrize("case", [c for c in MATRIX if c[1] != "1.27"], ids=_id)
def test_itab_type_names(fixtures_built: Path, case: tuple[str, str, str, str]) -> None:
    prog, ver, suffix, variant = case
    path = binary(fixtures_built, prog, suffix, variant)
    stripped = variant == "-stripped"
    sym_path = binary(fixtures_built, prog, suffix, "") if stripped else path
    itabs = {}
    for name, _kind, addr in nm_symbols(ver, sym_path):
        m = re.fullmatch(r"go[.:]itab\.(.+)", name)
        typ = split_itab(m.group(1))[0] if m else ""
        if typ and "[" not in typ:  # generic instances: the runtime spells type args with full paths
            itabs[addr] = typ
    assert len(itabs) > 10
    key = "go:itab.*errors.errorString,error" if ver not in ("1.15", "1.19") else "go.itab.*errors.errorString,error"
    err_itab = dict((n, a) for n, _k, a in nm_symbols(ver, sym_path))[key]
    if stripped:
        # The stripped file has no runtime.types symbol: moduledata is found by scanning for it.
        moved = {itab_in(path, sym_path, a): t for a, t in itabs.items()}
        moved.pop(None, None)
        assert len(moved) > len(itabs) // 2
        found = itab_in(path, sym_path, err_itab)
        assert found is not None
        err_itab, itabs = found, {a: t for a, t in moved.items() if a is not None}
    assert gobin.itab_type(path, err_itab) == "*errors.errorString"
    with gobin.GoBinary(path) as b:
        wrong = {hex(a): (t, b.itab_type(a)) for a, t in itabs.items() if b.itab_type(a) != runtime_type_string(t)}
        assert not wrong
        assert b.type_name(0) is None and b.itab_type(0) is None
        assert b.type_name(0x7FFF_FFFF_0000) is None
        if stripped:
            assert "runtime.types" not in b.symbols() and b.moduledata() is not None


@functools.cache
def dwarf_runtime_types(path: str) -> dict[int, str]:
    """DW_AT_go_runtime_type -> DW_AT_name of the named types (and pointers to them) in the DWARF.

    Go's linker writes DW_AT_go_runtime_type (0x2904, `objdump` prints it as an unknown attribute) as an
    R_ADDROFF: the descriptor's offset from the start of the section holding the type descriptors,
    which begins at runtime.types (.rodata before Go 1.27, its own .go.type section since).
    """
    info = subprocess.run(["objdump", "--dwarf=info", path], capture_output=True, text=True, check=True).stdout
    out: dict[int, str] = {}
    name = None
    for line in info.splitlines():
        if "Abbrev Number" in line:
            name = None
        elif (m := re.match(r"\s*<[0-9a-f]+>\s+DW_AT_name\s*:\s*(.*)$", line)) is not None:
            name = m.group(1).strip()
        elif (m := re.match(r"\s*<[0-9a-f]+>\s+Unknown AT value: 2904: (0x[0-9a-f]+|0)\s*$", line)) is not None:
            off = int(m.group(1), 16)
            if name and off and re.fullmatch(r"\*?[\w./-]+\.\w+", name):
                out[off] = name
    return out


@pytest.mark.parametrize("case", MATRIX, ids=_id)
def test_type_names_match_dwarf_runtime_types(fixtures_built: Path, case: tuple[str, str, str, str]) -> None:
    """Every named type the compiler's DWARF ties to a runtime type descriptor has that name there.

    Also the oracle for Go 1.27, whose linker no longer lists itabs in .symtab (they are carried by
    `type:*` like the type descriptors, cmd/link symtab.go).
    """
    prog, ver, suffix, variant = case
    path = binary(fixtures_built, prog, suffix, variant)
    stripped = variant == "-stripped"
    sym_path = binary(fixtures_built, prog, suffix, "") if stripped else path
    types = dwarf_runtime_types(sym_path)
    assert len(types) > 100
    with gobin.GoBinary(path) as b:
        base = b.types_base()
        assert base is not None
        if not stripped:
            assert base == dict((n, a) for n, _k, a in nm_symbols(ver, path))["runtime.types"]
        # -s -w drops .symtab and DWARF but not type data: the same offsets from the stripped file's base
        wrong = {}
        for off, name in types.items():
            got = b.type_name(base + off)
            if got != runtime_type_string(name):
                wrong[hex(off)] = (name, got)
        assert not wrong, f"{len(wrong)} of {len(types)}: {sorted(wrong.items())[:5]}"


# ----------------------------------------------------------------------------- fallbacks


def hide_sections(src: str, dst: Path, names: list[str]) -> None:
    """Copy `src` with sections renamed (first letter after the dot -> 'x') so lookups by name miss them:
    the layout an external linker or `strip` can leave behind (no .gopclntab, no .symtab)."""
    data = bytearray(Path(src).read_bytes())
    with gobin.GoBinary(src) as b:
        shstr = next(sec for sec in b.img.sections if sec.name == ".shstrtab")
    for name in names:
        table = bytes(data[shstr.offset : shstr.offset + shstr.size])
        # The whole string, NUL to NUL: ".gopclntab" is also the tail of ".data.rel.ro.gopclntab".
        pos = table.find(b"\0" + name.encode() + b"\0")
        assert pos >= 0, name
        data[shstr.offset + pos + 2] = ord("x")  # pos is the NUL, pos + 1 the dot
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("case", [c for c in HTTPGET if c[3] != "-stripped"], ids=_id)
def test_fallbacks_without_section_names(fixtures_built: Path, tmp_path: Path, case: tuple[str, str, str, str]) -> None:
    prog, ver, suffix, variant = case
    path = binary(fixtures_built, prog, suffix, variant)
    # a PIE's table is in .data.rel.ro.gopclntab up to Go 1.25, in .gopclntab from 1.26 on
    old_pie = variant == "-pie" and tuple(int(x) for x in ver.split(".")) < (1, 26)
    table = ".data.rel.ro.gopclntab" if old_pie else ".gopclntab"
    hidden = tmp_path / "hidden"
    hide_sections(path, hidden, [table, ".symtab"])
    ref = gobin.pclntab(path)
    with gobin.GoBinary(str(hidden)) as b:
        assert b.img.section(table) is None and not b.has_symtab
        tab = b.pclntab()
        # Found by scanning for magic + 00 00; the text base from the header, or (PIE) its relocation.
        assert tab.found.startswith("scan of") and tab.offset == ref.offset
        # The text base from the module data (found by scanning for a pointer to the pclntab); pre-1.18
        # tables hold absolute entries.
        expected_source = (
            "absolute entries" if ver == "1.15" else f"moduledata.text (module data at {ref.module_va:#x})"
        )
        assert tab.text_start_source == expected_source and tab.text_start == ref.text_start
        assert tab.module_va == ref.module_va is not None
        assert [(f.name, f.entry, f.end) for f in tab] == [(f.name, f.entry, f.end) for f in ref]
        assert inlined_calls(tab, "net/http.Get") == inlined_calls(ref, "net/http.Get")
        # moduledata found by scanning for the pclntab address: type names
        syms = dict((n, a) for n, _k, a in nm_symbols(ver, path))
        if ver == "1.27":  # its linker lists no itabs: the type itself, where DWARF says it is
            off = next(o for o, n in dwarf_runtime_types(path).items() if n == "*errors.errorString")
            assert b.type_name(syms["runtime.types"] + off) == "*errors.errorString"
        else:
            key = (
                "go.itab.*errors.errorString,error" if ver in ("1.15", "1.19") else "go:itab.*errors.errorString,error"
            )
            assert b.itab_type(syms[key]) == "*errors.errorString"


# ----------------------------------------------------------------------------- speed


def test_function_table_speed(fixtures_built: Path) -> None:
    paths = sorted((fixtures_built / "go").glob("httpget*"), key=lambda p: p.stat().st_size)
    need(bool(paths), "no Go fixtures built")
    path = str(paths[-1])
    t = time.perf_counter()
    with gobin.GoBinary(path) as b:
        n = len(b.pclntab())
    elapsed = time.perf_counter() - t
    # ~5-6k functions; the decoder costs a few microseconds per function (100k in well under a second).
    assert n > 4000
    assert elapsed < 0.5, f"{n} functions took {elapsed:.3f}s"
