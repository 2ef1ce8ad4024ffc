"""Damaged Go binaries give clean errors, never a traceback or a hang.

Real fixture binaries (Go 1.19 and 1.15 with their DWARF both compressed and decompressed by
`objcopy`, a 1.24 PIE, a stripped 1.21) have bytes flipped, words overwritten with boundary values,
runs zeroed, or the file cut, inside the sections the Go readers parse: the pclntab, the build info
and build ID, moduledata and type descriptors, `.symtab`, every DWARF section, and the ELF, program
and section headers. Section places come from `readelf -SW` / `readelf -h`, not from utrace.

On each damaged file everything `utrace go BIN PROBE --dump-bpf` and `utrace list BIN` do (build
info, pclntab, inline trees, type names, capstone, DWARF functions, inlined instances, types and
CFA rules, the whole plan and the generated program, the listing) must finish within a time bound
and either succeed or raise a utrace error (`UtraceError`) with a one-line message. At the command
line the same files give exit 0, 2 or 3 and at most one `utrace: error:` line, never a traceback.
No root needed.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import ROOT, need, utrace_cmd
from tests.hangs import no_hang
from utrace.errors import UtraceError

pytestmark = pytest.mark.e2e

GO_TABLES = (
    ".gopclntab",
    ".data.rel.ro.gopclntab",
    ".go.buildinfo",
    ".note.go.buildid",
    ".noptrdata",
    ".typelink",
    ".data.rel.ro.typelink",
    ".rodata",
    ".data.rel.ro",
)
DWARF = tuple(f".{z}debug_{s}" for z in ("", "z") for s in ("info", "abbrev", "loc", "ranges", "frame", "line"))
ELF = (".symtab", ".strtab", "<ehdr>", "<phdrs>", "<shdrs>")
# (fixture, decompress its DWARF with objcopy): decompressed, the bytes the DWARF reader parses are the
# ones damaged, not a zlib stream that fails before any DWARF is read.
BASES = [
    ("greet", False),
    ("greet", True),
    ("greet-go1.15", True),
    ("greet-go1.24-pie", False),
    ("greet-go1.21-stripped", False),
]
# main.Fib: out of line, with a 512-byte array argument; strconv.Itoa: inlined into main.Greet (pclntab
# inline tree and DWARF); main.(*T).M: a method; 'main.*': a glob.
PROBES = [("main.Fib",), ("strconv.Itoa", "main.(*T).M"), ("main.*",)]
TIME_BOUND = 20.0  # seconds for one damaged file, all steps (about 0.3 s when healthy)


@dataclass(frozen=True)
class Base:
    name: str
    data: bytes
    regions: dict[str, tuple[int, int]]  # name -> (file offset, size)


def _regions(path: Path) -> dict[str, tuple[int, int]]:
    """Sections with file contents, and the header tables, as readelf reports them."""
    out: dict[str, tuple[int, int]] = {}
    sections = subprocess.run(["readelf", "-SW", str(path)], capture_output=True, text=True, check=True).stdout
    for m in re.finditer(r"\]\s+(\S+)\s+(\S+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)", sections):
        name, kind, off, size = m.group(1), m.group(2), int(m.group(3), 16), int(m.group(4), 16)
        if kind != "NOBITS" and size:
            out[name] = (off, size)
    header = subprocess.run(["readelf", "-hW", str(path)], capture_output=True, text=True, check=True).stdout

    def field(label: str) -> int:
        m = re.search(rf"{label}:\s+(\d+)", header)
        assert m, label
        return int(m.group(1))

    out["<ehdr>"] = (0, 64)
    out["<phdrs>"] = (field("Start of program headers"), field("Number of program headers") * 56)
    out["<shdrs>"] = (field("Start of section headers"), field("Number of section headers") * 64)
    return out


@pytest.fixture(scope="module")
def bases(fixtures_built: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Base]:
    need(shutil.which("readelf") is not None and shutil.which("objcopy") is not None, "binutils not installed")
    work = tmp_path_factory.mktemp("bases")
    out: list[Base] = []
    for name, plain in BASES:
        src = fixtures_built / "go" / name
        need(src.exists(), f"fixture {src} not built")
        path = src
        if plain:
            path = work / f"{name}-plain-dwarf"
            subprocess.run(["objcopy", "--decompress-debug-sections", str(src), str(path)], check=True)
        regions = _regions(path)
        assert ".gopclntab" in regions or ".data.rel.ro.gopclntab" in regions, name
        if plain:
            assert ".debug_info" in regions
        out.append(Base(path.name, path.read_bytes(), regions))
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("damaged")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> object:
    """Listings write cache files: keep those of damaged files out of the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


_names = itertools.count()


def _write(workdir: Path, data: bytes) -> str:
    # A fresh name per file: GoBinary instances are cached by path, inode, size and mtime, and two
    # writes within one clock tick can share all of them.
    path = workdir / f"damaged-{next(_names)}"
    path.write_bytes(data)
    path.chmod(0o755)
    return str(path)


# ----------------------------------------------------------------------------- what commands do


def _go_tables(path: str) -> None:
    from utrace.elf.go import gobin
    from utrace.elf.go.goasm import after_stack_check, return_sites
    from utrace.elf.go.inline import inlined_calls

    gobin.go_info(path)
    with gobin.GoBinary(path) as b:
        b.info()
        b.build_id()
        tab = b.pclntab()
        entries = [f.entry for f in tab]
        assert entries == sorted(entries) and all(f.entry <= f.end for f in tab)
        for f in tab.functions[:: max(1, len(tab) // 16)]:
            tab.pcdata_table(f, 0)
            tab.pcdata_table(f, 2)
            if f.offset is not None:
                code = b.img.read(f.offset, min(f.size, 4096))
                return_sites(code, f.entry)
                after_stack_check(code, f.entry)
        inlined_calls(tab, "strconv.Itoa")
        b.moduledata()
        b.gofunc()
        for section in (".rodata", ".typelink", ".noptrdata"):
            sec = b.img.section(section)
            if sec is not None:
                for va in range(sec.addr, sec.addr + min(sec.size, 4096), 512):
                    b.type_name(va)
                    b.itab_type(va)


def _dwarf(path: str) -> None:
    from utrace.elf.go.godwarf import GoDwarf

    with GoDwarf(path) as d:
        if not d.has_dwarf:
            return
        assert d.producer is None or "\n" not in d.producer
        d.compile_units()
        fn = d.function("main.Greet")
        d.function("main.(*T).M")
        d.inlined_instances("strconv.Itoa", ["main"])
        d.struct_member_offset("runtime.g", "goid")
        d.type_named("*main.T")
        if fn is not None:
            d.cfa(fn.low_pc + 4)
            d.frame_address(-8, fn.low_pc + 4)


def _function_table(path: str) -> None:
    from utrace.elf.go.gosyms import go_function_table

    go_function_table(path)


def _dump_bpf(path: str) -> None:
    """`utrace go PATH PROBES --ret --dump-bpf`, one request at a time."""
    from utrace.app.session import SessionOptions, build
    from utrace.runtimes.base import TraceRequest

    for probes in PROBES:
        try:
            _target, _plan, program = build(
                TraceRequest(runtime="go", binary=path, probes=probes, ret=True), SessionOptions()
            )
        except UtraceError as e:
            _one_line(e)
            continue
        assert program.source.count("#include") == 1


def _list(path: str) -> None:
    """`utrace list PATH` and `utrace list PATH 'main.*'`."""
    from utrace.app.list_probes import list_target
    from utrace.process.target import file_target

    list_target(file_target(path), None)
    list_target(file_target(path), "main.*")


STEPS: list[Callable[[str], None]] = [_go_tables, _dwarf, _function_table, _dump_bpf, _list]


def _one_line(e: UtraceError) -> None:
    assert str(e) and "\n" not in str(e), repr(str(e))


def exercise(path: str) -> None:
    """Every step on the file: only UtraceError may escape a step, within the time bound for all."""
    with no_hang(TIME_BOUND):
        for step in STEPS:
            try:
                step(path)
                event(f"{step.__name__}: ok")
            except UtraceError as e:
                _one_line(e)
                event(f"{step.__name__}: {type(e).__name__}")


def test_healthy_bases_go_through_every_step(bases: list[Base], workdir: Path) -> None:
    """Without damage every step succeeds: the damage is what the other tests exercise."""
    from utrace.elf.go import gobin
    from utrace.elf.go.godwarf import GoDwarf

    for base in bases:
        path = _write(workdir, base.data)
        for step in STEPS:
            step(path)
        assert len(gobin.pclntab(path)) > 1000
        with GoDwarf(path) as d:
            assert not d.has_dwarf or d.function("main.Greet") is not None


# ----------------------------------------------------------------------------- damage

SPECIAL = [0, 1, 2, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 63, (1 << 64) - 1]


@st.composite
def damage(draw: st.DrawFn, base: Base) -> bytes:
    data = bytearray(base.data)
    names = sorted(base.regions)
    go = [n for n in names if n in GO_TABLES]
    dw = [n for n in names if n in DWARF]
    elf = [n for n in names if n in ELF]
    group = draw(st.sampled_from([g for g in (go, dw, elf) if g]))
    for _ in range(draw(st.integers(1, 4))):
        off, size = base.regions[draw(st.sampled_from(group))]
        # half of the edits land in the first bytes of the region, where its headers are
        pos = off + draw(st.integers(0, min(size, 256) - 1) | st.integers(0, size - 1))
        how = draw(st.sampled_from(["byte", "word", "zero", "cut"]))
        if how == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif how == "word":
            width = draw(st.sampled_from([2, 4, 8]))
            pos -= (pos - off) % width
            value = draw(st.sampled_from(SPECIAL) | st.integers(0, (1 << (8 * width)) - 1))
            data[pos : pos + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        elif how == "zero":
            n = draw(st.integers(1, 64))
            data[pos : pos + n] = bytes(len(data[pos : pos + n]))
        else:
            del data[pos:]
            break
    return bytes(data)


FUZZ = settings(
    max_examples=150,
    deadline=None,  # the time bound is no_hang's: one damaged file may legitimately take a second
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(data=st.data())
def test_damaged_go_binaries_give_clean_errors(bases: list[Base], workdir: Path, data: st.DataObject) -> None:
    base = data.draw(st.sampled_from(bases), label="base")
    damaged = data.draw(damage(base), label="damaged")
    path = _write(workdir, damaged)
    try:
        exercise(path)
    finally:
        os.unlink(path)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_truncated_go_binaries_give_clean_errors(bases: list[Base], workdir: Path, data: st.DataObject) -> None:
    base = data.draw(st.sampled_from(bases), label="base")
    cut = data.draw(st.integers(0, len(base.data) - 1), label="cut")
    path = _write(workdir, base.data[:cut])
    try:
        exercise(path)
    finally:
        os.unlink(path)


# ----------------------------------------------------------------------------- the command line


def _utrace(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    env.pop("UTRACE_DEBUG", None)
    # a damaged name is not UTF-8, and utrace prints its bytes as they are (as nm does)
    return subprocess.run(
        utrace_cmd(*args), capture_output=True, text=True, errors="surrogateescape", timeout=120, cwd=ROOT, env=env
    )


def _pclntab_word(base: Base, index: int, value: int) -> bytes:
    """The file with word `index` of the pclntab header (0: magic and flags, 1: nfunc) set to `value`."""
    off, _size = base.regions[".gopclntab"]
    data = bytearray(base.data)
    data[off + 8 * index : off + 8 * index + 8] = value.to_bytes(8, "little")
    return bytes(data)


def _shoff(base: Base, value: int) -> bytes:
    data = bytearray(base.data)
    data[40:48] = value.to_bytes(8, "little")
    return bytes(data)


# Damage that leaves nothing to trace or list: both commands must fail with exit 3 (target error).
BROKEN: dict[str, Callable[[dict[str, Base]], bytes]] = {
    "stripped, pclntab magic zeroed": lambda b: _pclntab_word(b["greet-go1.21-stripped"], 0, 0),
    "stripped, 2**40 functions": lambda b: _pclntab_word(b["greet-go1.21-stripped"], 1, 1 << 40),
    "cut in half": lambda b: b["greet"].data[: len(b["greet"].data) // 2],
    "section headers past the end": lambda b: _shoff(b["greet"], len(b["greet"].data) + 4096),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_cli_refuses_a_broken_go_binary_in_one_line(
    bases: list[Base], workdir: Path, tmp_path: Path, case: str
) -> None:
    path = _write(workdir, BROKEN[case]({b.name: b for b in bases}))
    for args in (("go", path, "main.Fib", "--dump-bpf"), ("list", path)):
        p = _utrace(*args, cache=tmp_path)
        assert p.returncode == 3, (args, p.returncode, p.stderr)
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"utrace: error: {path}"), p.stderr
        assert p.stdout == ""


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_cli_on_damaged_go_binaries_never_shows_a_traceback(
    bases: list[Base], workdir: Path, tmp_path: Path, data: st.DataObject
) -> None:
    base = data.draw(st.sampled_from(bases), label="base")
    path = _write(workdir, data.draw(damage(base), label="damaged"))
    for args in (("go", path, "main.Fib", "--dump-bpf"), ("list", path)):
        p = _utrace(*args, cache=tmp_path)
        assert p.returncode in (0, 2, 3), (args, p.returncode, p.stderr[-2000:])
        assert "Traceback" not in p.stderr and "internal error" not in p.stderr
        errors = [ln for ln in p.stderr.splitlines() if ln.startswith("utrace: error:")]
        assert len(errors) == (p.returncode != 0), p.stderr
        if p.returncode:
            assert p.stderr.splitlines()[-1] == errors[0]
