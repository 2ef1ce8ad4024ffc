"""utrace.elf.go.godwarf against oracles nobody here wrote: binutils readelf and `go tool nm`.

readelf prints the DIE tree, location lists, range lists and the interpreted CFA table; `go tool nm`
prints function addresses from the Go symbol table. Every fixture build of greet/httpget that exists is
checked (system Go 1.19, its PIE build, and the fetched 1.15/1.21..1.24 builds when built).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.conftest import BUILD, ROOT, need
from utrace.elf.dwarf import FrameLoc, Location, RegLoc, Unavailable
from utrace.elf.go.godwarf import GoDwarf
from utrace.errors import ElfError
from utrace.model import GoKind

GO = BUILD / "go"
SYSTEM_GO = "/usr/lib/go-1.19/bin/go"
FETCHED = ["1.15", "1.21", "1.22", "1.23", "1.24"]
# Suffix -> Go version of the build (scripts/build-fixtures.sh naming).
VARIANTS = {"": "1.19", "-pie": "1.19"} | {f"-go{v}": v for v in FETCHED} | {f"-go{v}-pie": v for v in FETCHED}
# runtime.g.goid offset by Go version: bytedance/mockey internal/tool/goroutine_*.go (152 up to 1.22, 160 after).
GOID_OFFSET = {"1.15": 152, "1.19": 152, "1.21": 152, "1.22": 152, "1.23": 160, "1.24": 160}


def fixture(prog: str, suffix: str) -> Path:
    path = GO / f"{prog}{suffix}"
    need(path.exists(), f"{path.name} not built (scripts/build-fixtures.sh)")
    return path


@pytest.fixture(scope="module", autouse=True)
def _tools(fixtures_built: Path) -> None:
    need(shutil.which("readelf") is not None, "binutils readelf is not installed")


# ------------------------------------------------------------------------------------------- readelf


@dataclass
class Die:
    offset: int
    depth: int
    tag: str
    attrs: dict[str, str]
    children: list[Die] = field(default_factory=list)
    parent: Die | None = None

    def ref(self, name: str) -> int | None:
        m = re.match(r"<0x([0-9a-f]+)>", self.attrs.get(name, ""))
        return int(m[1], 16) if m else None

    def num(self, name: str) -> int | None:
        m = re.match(r"(0x[0-9a-f]+|-?\d+)", self.attrs.get(name, ""))
        return int(m[1], 0) if m else None


@functools.lru_cache(maxsize=8)
def readelf_dies(path: Path, units: frozenset[str]) -> dict[int, Die]:
    """The DIEs of `readelf --debug-dump=info` in the compile units named `units`, by offset, linked."""
    out = subprocess.run(["readelf", "--debug-dump=info", str(path)], capture_output=True, text=True, check=True).stdout
    # Parsing all 400k lines of a net/http binary costs seconds; keep only the units asked for.
    chunks = out.split("  Compilation Unit @ offset")
    keep = []
    for chunk in chunks[1:]:
        m = re.search(r"DW_AT_name\s*: (.*)", chunk)
        if m and m[1].strip() in units:
            keep.append(chunk)
    dies: dict[int, Die] = {}
    stack: list[Die] = []
    cur: Die | None = None
    for line in "".join(keep).splitlines():
        m = re.match(r"\s*<(\d+)><([0-9a-f]+)>: Abbrev Number: (\d+)(?: \((\w+)\))?", line)
        if m:
            depth, off = int(m[1]), int(m[2], 16)
            if m[3] == "0":  # end of a sibling chain
                cur = None
                continue
            cur = Die(off, depth, m[4] or "", {})
            if depth == 0:
                stack = []
            while stack and stack[-1].depth >= depth:
                stack.pop()
            if stack:
                cur.parent = stack[-1]
                stack[-1].children.append(cur)
            stack.append(cur)
            dies[off] = cur
            continue
        m = re.match(r"\s*<[0-9a-f]+>\s+(DW_AT_\w+|Unknown AT value: \w+)\s*: (.*)", line)
        if m and cur is not None:
            cur.attrs[m[1]] = m[2].strip()
    return dies


def die_name(d: Die) -> str:
    return d.attrs.get("DW_AT_name", "")


def cu_of(d: Die) -> Die:
    while d.parent is not None:
        d = d.parent
    return d


def readelf_type_name(dies: dict[int, Die], d: Die) -> str:
    t = d.ref("DW_AT_type")
    assert t is not None, d
    return die_name(dies[t])


def subprogram(dies: dict[int, Die], name: str) -> Die:
    found = [d for d in dies.values() if d.tag == "DW_TAG_subprogram" and die_name(d) == name and d.depth == 1]
    code = [d for d in found if "DW_AT_low_pc" in d.attrs]
    assert len(code) == 1, (name, found)
    return code[0]


@functools.lru_cache(maxsize=4)
def readelf_lists(path: Path, kind: str) -> dict[int, list[tuple[int, int, str]]]:
    """`readelf --debug-dump=loc` or `=Ranges`: list offset -> [(begin, end, expression text)] (absolute pcs)."""
    out = subprocess.run(
        ["readelf", "--wide", f"--debug-dump={kind}", str(path)], capture_output=True, text=True, check=True
    ).stdout
    lists: dict[int, list[tuple[int, int, str]]] = {}
    start: int | None = None
    for line in out.splitlines():
        m = re.match(r"\s+([0-9a-f]{8}) (?:(<End of list>)|([0-9a-f]+) ([0-9a-f]+)\s*(.*))$", line)
        if not m:
            continue
        off = int(m[1], 16)
        if start is None:
            start = off
            lists[start] = []
        if m[2]:
            start = None
            continue
        if "(base address)" in m[5]:
            continue
        expr = m[5].strip()
        if expr.startswith("(") and expr.endswith(")"):
            expr = expr[1:-1]
        lists[start].append((int(m[3], 16), int(m[4], 16), expr))
    return lists


def oracle_pieces(expr: str, whole: int) -> list[tuple[int, str]]:
    """readelf's rendering of a location expression -> [(size, "reg:rax" | "cfa:N" | "n/a")]."""
    pieces: list[tuple[int, str]] = []
    cur = "n/a"
    ops = [o.strip() for o in expr.split(";") if o.strip()]
    i = 0
    while i < len(ops):
        op = ops[i]
        if m := re.match(r"DW_OP_reg\d+ \((\w+)\)", op):
            cur = f"reg:{m[1]}"
        elif m := re.match(r"DW_OP_fbreg: (-?\d+)", op):
            cur = f"cfa:{int(m[1])}"
        elif op == "DW_OP_call_frame_cfa":
            cur = "cfa:0"
            if (
                i + 2 < len(ops)
                and ops[i + 2] == "DW_OP_plus"
                and (m := re.match(r"DW_OP_consts: (-?\d+)", ops[i + 1]))
            ):
                cur = f"cfa:{int(m[1])}"
                i += 2
        elif m := re.match(r"DW_OP_piece: (\d+)", op):
            pieces.append((int(m[1]), cur))
            cur = "n/a"
        else:
            raise AssertionError(f"oracle parser does not know {op!r} in {expr!r}")
        i += 1
    if not pieces:
        pieces.append((whole, cur))
    return pieces


def ours(loc: Location) -> list[tuple[int, str]]:
    out = []
    for p in loc:
        w = p.where
        if isinstance(w, RegLoc):
            out.append((p.size, f"reg:{w.name}"))
        elif isinstance(w, FrameLoc):
            out.append((p.size, f"cfa:{w.offset}"))
        else:
            assert isinstance(w, Unavailable) and w.reason
            out.append((p.size, "n/a"))
    return out


def oracle_location(path: Path, d: Die, pc: int, size: int) -> list[tuple[int, str]]:
    """The location of DIE d at pc per readelf (block or location list)."""
    text = d.attrs.get("DW_AT_location")
    if text is None:
        return [(size, "n/a")]
    if m := re.match(r"0x([0-9a-f]+) \(location list\)", text):
        for lo, hi, expr in readelf_lists(path, "loc")[int(m[1], 16)]:
            if lo <= pc < hi:
                return oracle_pieces(expr, size)
        return [(size, "n/a")]
    m = re.match(r"\d+ byte block:[^(]*\((.*)\)\s*$", text)
    assert m, text
    return oracle_pieces(m[1], size)


def go_nm(path: Path, version: str) -> dict[str, int]:
    """Function addresses from `go tool nm` of the Go that built the binary."""
    if version == "1.19":
        go = SYSTEM_GO
        env = None
    else:
        p = subprocess.run([str(ROOT / "scripts" / "fetch-go.sh"), version], capture_output=True, text=True)
        need(p.returncode == 0 and p.stdout.strip() != "", f"Go {version} toolchain unavailable: {p.stderr[-200:]}")
        goroot = p.stdout.strip().splitlines()[-1]
        go, env = (
            f"{goroot}/bin/go",
            {"GOROOT": goroot, "PATH": "/usr/bin:/bin", "HOME": "/tmp", "GOTOOLCHAIN": "local"},
        )
    need(Path(go).exists(), f"{go} missing")
    out = subprocess.run([go, "tool", "nm", str(path)], capture_output=True, text=True, check=True, env=env).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1] in "Tt":
            syms[parts[2]] = int(parts[0], 16)
    return syms


def go_version_of(suffix: str) -> str:
    return VARIANTS[suffix]


ALL = list(VARIANTS)
SOME = ["", "-pie", "-go1.15", "-go1.21", "-go1.22", "-go1.23", "-go1.24"]


# ------------------------------------------------------------------------------------------- functions


@pytest.mark.parametrize("suffix", ALL)
def test_greet_functions_equal_readelf_and_nm(suffix: str) -> None:
    path = fixture("greet", suffix)
    version = go_version_of(suffix)
    dies = readelf_dies(path, frozenset({"main", "runtime"}))
    nm = go_nm(path, version)
    g = GoDwarf(str(path))
    assert g.go_version is not None and g.go_version.startswith(f"go{version}")
    producer = next(d for d in dies.values() if d.tag == "DW_TAG_compile_unit").attrs["DW_AT_producer"]
    assert g.producer == producer
    assert g.regabi == (version != "1.15")
    for name in ("main.Greet", "main.(*T).M", "main.Fib", "main.main"):
        fn = g.function(name)
        assert fn is not None, name
        want = subprogram(dies, name)
        assert fn.low_pc == nm[name] == want.num("DW_AT_low_pc")
        high = want.num("DW_AT_high_pc")
        assert high is not None
        assert fn.high_pc == (high if high > fn.low_pc else fn.low_pc + high)
        assert fn.cu == "main" and fn.pc == fn.low_pc
        if name == "main.main":
            continue
        oracle = [c for c in want.children if c.tag == "DW_TAG_formal_parameter"]
        assert [p.name for p in fn.params] == [die_name(c) for c in oracle]
        assert [p.type.name for p in fn.params] == [readelf_type_name(dies, c) for c in oracle]
        assert [p.is_result for p in fn.params] == [c.num("DW_AT_variable_parameter") == 1 for c in oracle]
        for p, c in zip(fn.params, oracle, strict=True):
            assert ours(p.location) == oracle_location(path, c, fn.low_pc, p.type.size), (name, p.name)

    greet = g.function("main.Greet")
    assert greet is not None
    sig = [(p.type.name, p.type.kind, p.type.size, p.is_result) for p in greet.params]
    assert sig == [
        ("string", GoKind.STRING, 16, False),
        ("int", GoKind.INT, 8, False),
        ("string", GoKind.STRING, 16, True),
        ("error", GoKind.IFACE, 16, True),
    ]
    assert [p.name for p in greet.params][:2] == ["name", "n"]
    if version != "1.15":  # the register ABI: name in RAX/RBX, n in RCX at entry (abi-internal.md)
        assert ours(greet.params[0].location) == [(8, "reg:rax"), (8, "reg:rbx")]
        assert ours(greet.params[1].location) == [(8, "reg:rcx")]
    else:  # ABI0: on the stack just above the return address
        assert ours(greet.params[0].location) == [(8, "cfa:0"), (8, "cfa:8")]
        assert ours(greet.params[1].location) == [(8, "cfa:16")]

    fib = g.function("main.Fib")
    assert fib is not None
    pad = fib.params[1]
    assert (pad.name, pad.type.name, pad.type.kind, pad.type.size, pad.type.length) == (
        "pad",
        "[512]uint8",
        GoKind.ARRAY,
        512,
        512,
    )
    assert pad.type.elem is not None and (pad.type.elem.name, pad.type.elem.kind) == ("uint8", GoKind.UINT)

    m = g.function("main.(*T).M")
    assert m is not None
    recv = m.params[0]
    assert (recv.name, recv.type.name, recv.type.kind, recv.is_result) == ("t", "*main.T", GoKind.POINTER, False)
    assert recv.type.elem is not None and recv.type.elem.kind == GoKind.STRUCT
    assert [(f.name, f.offset, f.type.name) for f in recv.type.elem.fields] == [("Base", 0, "int")]
    assert g.function("main.NoSuchFunction") is None


def test_function_walks_no_unit() -> None:
    g = GoDwarf(str(fixture("httpget", "")))
    assert g.function("main.main") is not None
    assert g._indexes == {}  # found by its name bytes: none of the 139 units was walked
    fn = g.function("net/http.(*Client).Get")
    assert fn is not None and fn.cu == "net/http"
    assert [(p.name, p.type.name) for p in fn.params] == [
        ("c", "*net/http.Client"),
        ("url", "string"),
        ("resp", "*net/http.Response"),
        ("err", "error"),
    ]
    assert g.struct_member_offset("runtime.g", "goid") is not None
    assert g._indexes == {}
    assert g.function("net/http.NoSuchFunction") is None  # not found by bytes: walks net/http only, then says so
    assert {i.name for i in g._indexes.values()} == {"net/http"}


# ------------------------------------------------------------------------------------------- inlining


@pytest.mark.parametrize("suffix", ALL)
def test_inlined_http_get_equals_readelf(suffix: str) -> None:
    path = fixture("httpget", suffix)
    dies = readelf_dies(path, frozenset({"main"}))
    g = GoDwarf(str(path))
    assert g.function("net/http.Get") is None  # no out-of-line copy: inlined into main.main
    got = g.inlined_instances("net/http.Get", ["main"])

    abstract = {
        d.offset
        for d in dies.values()
        if d.tag == "DW_TAG_subprogram" and die_name(d) == "net/http.Get" and d.depth == 1
    }
    sites = [
        d
        for d in dies.values()
        if d.tag == "DW_TAG_inlined_subroutine"
        and d.ref("DW_AT_abstract_origin") in abstract
        and die_name(cu_of(d)) == "main"
    ]
    assert len(sites) >= 1
    assert len(got) == len(sites)
    ranges = readelf_lists(path, "Ranges")
    for inst, site in zip(got, sorted(sites, key=lambda d: d.offset), strict=True):
        if "DW_AT_ranges" in site.attrs:
            roff = site.num("DW_AT_ranges")
            assert roff is not None
            want_ranges = sorted((lo, hi) for lo, hi, _ in ranges[roff])
        else:
            lo, hi = site.num("DW_AT_low_pc"), site.num("DW_AT_high_pc")
            assert lo is not None and hi is not None
            want_ranges = [(lo, hi if hi > lo else lo + hi)]
        assert list(inst.ranges) == want_ranges
        assert inst.entry_pc == want_ranges[0][0]
        assert (inst.name, inst.caller, inst.cu) == ("net/http.Get", "main.main", "main")
        assert inst.call_line == site.num("DW_AT_call_line") == 43
        assert inst.call_file is not None and inst.call_file.endswith("httpget/main.go")
        origin = dies[site.ref("DW_AT_abstract_origin") or 0]
        decls = [c for c in origin.children if c.tag == "DW_TAG_formal_parameter"]
        assert [p.name for p in inst.params] == [die_name(c) for c in decls] == ["url", "resp", "err"]
        assert [p.type.name for p in inst.params] == ["string", "*net/http.Response", "error"]
        assert [p.is_result for p in inst.params] == [False, True, True]
        concrete = {c.ref("DW_AT_abstract_origin"): c for c in site.children if c.tag == "DW_TAG_formal_parameter"}
        for p, c in zip(inst.params, decls, strict=True):
            assert ours(p.location) == oracle_location(path, concrete[c.offset], inst.entry_pc, p.type.size)
        url = inst.params[0]
        # At the inlined entry both words of url are somewhere readable (a register or the frame).
        assert [size for size, _ in ours(url.location)] == [8, 8]
        assert all(w != "n/a" for _, w in ours(url.location)), url.location


def test_inlined_instances_all_units_finds_the_same() -> None:
    g = GoDwarf(str(fixture("httpget", "")))
    assert g.inlined_instances("net/http.Get") == g.inlined_instances("net/http.Get", ["main"])
    assert g.inlined_instances("net/http.Get", ["no/such/package"]) == []


# ------------------------------------------------------------------------------------------- types, goid


@pytest.mark.parametrize("suffix", SOME)
def test_goid_offset_equals_readelf(suffix: str) -> None:
    path = fixture("httpget", suffix)
    dies = readelf_dies(path, frozenset({"runtime"}))
    gstruct = [d for d in dies.values() if d.tag == "DW_TAG_structure_type" and die_name(d) == "runtime.g"]
    assert gstruct
    members = {die_name(c): c.num("DW_AT_data_member_location") for c in gstruct[0].children}
    g = GoDwarf(str(path))
    assert g.struct_member_offset("runtime.g", "goid") == members["goid"] == GOID_OFFSET[go_version_of(suffix)]
    assert g.struct_member_offset("runtime.g", "stack") == members["stack"] == 0
    assert g.struct_member_offset("runtime.g", "nosuchmember") is None
    assert g.struct_member_offset("runtime.nosuchtype", "goid") is None
    rt = g.type_named("runtime.g")
    assert rt is not None and rt.kind == GoKind.STRUCT
    assert {f.name: f.offset for f in rt.fields} == members


def test_type_classification_from_real_dwarf() -> None:
    g = GoDwarf(str(fixture("httpget", "")))
    want = {
        "string": (GoKind.STRING, 16),
        "[]uint8": (GoKind.SLICE, 24),
        "error": (GoKind.IFACE, 16),
        "interface {}": (GoKind.EFACE, 16),
        "*net/http.Response": (GoKind.POINTER, 8),
        "unsafe.Pointer": (GoKind.POINTER, 8),
        "bool": (GoKind.BOOL, 1),
        "int32": (GoKind.INT, 4),
        "uintptr": (GoKind.UINT, 8),
        "float64": (GoKind.FLOAT, 8),
        "complex128": (GoKind.COMPLEX, 16),
        "time.Duration": (GoKind.INT, 8),
        "net/http.Header": (GoKind.POINTER, 8),  # a map
        "chan struct {}": (GoKind.POINTER, 8),
        "[4]uint8": (GoKind.ARRAY, 4),
        "net/http.Response": (GoKind.STRUCT, None),
    }
    for name, (kind, size) in want.items():
        t = g.type_named(name)
        assert t is not None, name
        assert (t.name, t.kind) == (name, kind)
        if size is not None:
            assert t.size == size, name
    sl = g.type_named("[]uint8")
    assert sl is not None and sl.elem is not None and sl.elem.name == "uint8"
    resp = g.type_named("*net/http.Response")
    assert resp is not None and resp.elem is not None
    fields = {f.name: (f.offset, f.type.name, f.type.kind) for f in resp.elem.fields}
    assert fields["Status"] == (0, "string", GoKind.STRING)
    assert fields["StatusCode"] == (16, "int", GoKind.INT)
    assert fields["Body"][1:] == ("io.ReadCloser", GoKind.IFACE)
    # one pointer deep only: Response.Request is *Request without its fields (recursive types stay finite)
    assert fields["Request"][1:] == ("*net/http.Request", GoKind.POINTER)
    req = next(f for f in resp.elem.fields if f.name == "Request")
    assert req.type.elem is None


# ------------------------------------------------------------------------------------------- CFA


@functools.lru_cache(maxsize=4)
def readelf_cfa_rows(path: Path) -> list[tuple[int, int, list[tuple[int, str]]]]:
    """`readelf --debug-dump=frames-interp`: [(fde start, fde end, [(loc, "rsp+8"), ...])]."""
    out = subprocess.run(
        ["readelf", "--wide", "--debug-dump=frames-interp", str(path)], capture_output=True, text=True, check=True
    ).stdout
    fdes: list[tuple[int, int, list[tuple[int, str]]]] = []
    for line in out.splitlines():
        if m := re.search(r"FDE cie=[0-9a-f]+ pc=([0-9a-f]+)\.\.([0-9a-f]+)", line):
            fdes.append((int(m[1], 16), int(m[2], 16), []))
        elif fdes and (m := re.match(r"([0-9a-f]{16}) (\S+)", line)):
            fdes[-1][2].append((int(m[1], 16), m[2]))
    return fdes


@pytest.mark.parametrize("suffix", SOME)
def test_cfa_equals_readelf_frames_interp(suffix: str) -> None:
    path = fixture("httpget", suffix)
    g = GoDwarf(str(path))
    fdes = readelf_cfa_rows(path)
    main = g.function("main.main")
    assert main is not None
    checked = 0
    chosen = [f for f in fdes if f[0] == main.low_pc] + fdes[:: max(1, len(fdes) // 60)]
    for _start, end, rows in chosen:
        for i, (loc, rule) in enumerate(rows):
            nxt = rows[i + 1][0] if i + 1 < len(rows) else end
            m = re.fullmatch(r"(\w+)([+-]\d+)", rule)
            assert m, rule
            want = (m[1], int(m[2]))
            for pc in {loc, (loc + nxt) // 2, nxt - 1}:
                if loc <= pc < nxt:
                    assert g.cfa(pc) == want, (hex(pc), rule)
                    checked += 1
    assert checked > 100
    assert g.cfa(main.low_pc) == ("rsp", 8)  # at entry only the return address is on the stack
    assert g.cfa(0) is None
    # FrameLoc -> an rsp offset at a probe pc: at entry, CFA+0 is rsp+8 (the first stack argument).
    assert g.frame_address(0, main.low_pc) == ("rsp", 8)


# ------------------------------------------------------------------------------------------- no / bad DWARF


def test_stripped_has_no_dwarf() -> None:
    g = GoDwarf(str(fixture("greet", "-stripped")))
    assert g.has_dwarf is False
    assert (g.producer, g.regabi, g.go_version) == (None, None, None)
    assert g.function("main.Greet") is None
    assert g.inlined_instances("net/http.Get") == []
    assert g.struct_member_offset("runtime.g", "goid") is None
    assert g.type_named("string") is None
    assert g.cfa(0x401000) is None
    assert g.compile_units() == []


def test_missing_and_not_elf_are_elf_errors(tmp_path: Path) -> None:
    with pytest.raises(ElfError, match="no such file"):
        _ = GoDwarf(str(tmp_path / "nope")).has_dwarf
    text = tmp_path / "text"
    text.write_text("hello\n" * 100)
    with pytest.raises(ElfError, match="not an ELF file"):
        GoDwarf(str(text)).function("main.main")


@pytest.mark.parametrize("section", [".debug_info", ".debug_abbrev", ".debug_frame", ".debug_loc"])
def test_corrupt_dwarf_is_one_elf_error(tmp_path: Path, section: str) -> None:
    from utrace.elf.reader import ElfImage

    src = fixture("greet", "")
    with ElfImage(str(src)) as img:
        sec = img.section(section)
    assert sec is not None
    data = bytearray(src.read_bytes())
    mid = sec.offset + sec.size // 2
    data[mid : mid + 32] = bytes(range(0xE0, 0x100))
    bad = tmp_path / "greet-bad"
    bad.write_bytes(bytes(data))
    g = GoDwarf(str(bad))
    with pytest.raises(ElfError) as e:
        g.function("main.Greet")
        g.cfa(0x485640)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)
    with pytest.raises(ElfError):  # asking again fails the same way, not with a different answer
        g.function("main.Greet")
        g.cfa(0x485640)


@pytest.mark.parametrize("suffix", ["", "-go1.15", "-go1.24"])
def test_byte_search_agrees_with_the_unit_walk(suffix: str) -> None:
    """The fast paths (find a DIE by its name bytes) answer exactly what indexing the unit answers."""
    g = GoDwarf(str(fixture("httpget", suffix)))
    units = [u for u in g._units() if u[1] == "net/http"]
    idx = next(iter(g._indexes_for(["net/http"], fallback_all=False)))
    names = sorted(idx.concrete)
    assert len(names) > 300
    for name in names[:: max(1, len(names) // 150)]:
        got = [off for off, _cu in g._find_function_by_name_bytes(name, units)]
        assert got == sorted(idx.concrete[name]), name
    runtime = list(g._indexes_for(["runtime"], fallback_all=False))
    types = {n: off for i in runtime for n, off in reversed(list(i.types.items()))}
    tnames = sorted(types)
    for name in tnames[:: max(1, len(tnames) // 150)]:
        assert g._find_type_by_name_bytes(name) == types[name], name


@pytest.mark.parametrize("suffix", ["", "-go1.15", "-go1.24"])
def test_die_boundaries_equal_pyelftools(suffix: str) -> None:
    """The attribute skipper that validates byte-search hits finds exactly pyelftools' DIEs."""
    from utrace.elf.dwarf import die_starts

    g = GoDwarf(str(fixture("greet", suffix)))
    for _off, _name, cu in g._units():
        assert die_starts(g._info_bytes(), cu) == {d.offset for d in cu.iter_DIEs()}
