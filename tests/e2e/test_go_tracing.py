"""Tracing real Go programs in both ABIs, checked against their own printout and a real HTTP server's log."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BUILD, Background, need, read_text_byte, run_utrace, uprobe_events
from tests.e2e.test_tracing import events, release, start_waiting

pytestmark = pytest.mark.usefixtures("root_bpf")

GO = BUILD / "go"
# (suffix, what it is): every Go build variant that build-fixtures.sh makes
REQUIRED = ["", "-go1.15", "-pie", "-stripped"]
FETCHED = ("1.21", "1.22", "1.23", "1.24", "1.25", "1.26", "1.27")
OPTIONAL = [f"-go{v}{k}" for v in FETCHED for k in ("", "-pie", "-stripped", "-extlink")]
OPTIONAL += ["-go1.15-pie", "-go1.15-stripped", "-go1.15-extlink", "-extlink"]
GREET_SIG = "main.Greet(name string, n int) (string, error)"
M_SIG = "main.(*T).M(x int) int"


def variants(prog: str) -> list[str]:
    found = [s for s in OPTIONAL if (GO / f"{prog}{s}").exists()]
    return REQUIRED + found


def binary(fixtures_built: Path, prog: str, suffix: str) -> str:
    path = fixtures_built / "go" / f"{prog}{suffix}"
    need(path.exists(), f"{path} not built (scripts/build-fixtures.sh; Go toolchains via scripts/fetch-go.sh)")
    return str(path)


GREET_LINE = re.compile(
    r'iter (\d+) Greet\("(\w+)",(\d+)\)="([^"]*)" err=<nil> Greet\("\w+",(-\d+)\)="" err="([^"]*)" '
    r"T\{(\d+)\}\.M\((\d+)\)=(\d+)"
)


@pytest.mark.parametrize("suffix", variants("greet"))
def test_greet_arguments_results_and_error_messages(fixtures_built: Path, suffix: str) -> None:
    exe = binary(fixtures_built, "greet", suffix)
    stripped = "stripped" in suffix
    probes = [GREET_SIG, M_SIG] if stripped else ["main.Greet", "main.(*T).M"]
    p = run_utrace("go", exe, *probes, "--ret", "--json", "--", exe, "3", "5", timeout=120)
    assert p.returncode == 0, p.stderr
    evs, summary = events(p.stdout)
    printed = [GREET_LINE.match(line) for line in p.stdout.splitlines() if line.startswith("iter ")]
    assert len(printed) == 3 and all(printed), p.stdout
    assert summary["lost"] == 0
    greet_calls = [e for e in evs if e["probe"] == "main.Greet" and e["kind"] == "call"]
    greet_rets = [e for e in evs if e["probe"] == "main.Greet" and e["kind"] == "return"]
    m_calls = [e for e in evs if e["probe"] == "main.(*T).M" and e["kind"] == "call"]
    m_rets = [e for e in evs if e["probe"] == "main.(*T).M" and e["kind"] == "return"]
    # what the program says it passed and got, in call order: Greet(i), Greet(-i), M(i) per iteration
    want_calls, want_rets, want_m = [], [], []
    for m in printed:
        assert m is not None
        _i, who, ok, ok_text, neg, err_text, _base, x, mres = m.groups()
        want_calls += [{"name": who, "n": int(ok)}, {"name": who, "n": int(neg)}]
        want_rets += [(ok_text, "nil"), ("", f'*errors.errorString("{err_text}")')]
        want_m.append((int(x), int(mres)))
    assert [e["args"] for e in greet_calls] == want_calls
    assert [(e["ret"]["r0"], e["ret"]["r1"]) for e in greet_rets] == want_rets
    assert [e["args"]["x"] for e in m_calls[:3]] == [x for x, _ in want_m]
    assert [e["ret"]["r0"] for e in m_rets[:3]] == [r for _, r in want_m]
    # every return paired with its entry (latency), and the goroutine id is main's
    assert all(e["latency_ns"] is not None and e["latency_ns"] > 0 for e in greet_rets + m_rets)
    assert {e["context"]["goid"] for e in greet_calls + greet_rets} == {1}
    # the last M call runs on another goroutine, whose id the program read from runtime.Stack
    g = re.search(r"goroutine (\d+) T\{100\}\.M\(1000\)=1100", p.stdout)
    assert g, p.stdout
    last = [e for e in m_calls if e["args"]["x"] == 1000]
    assert len(last) == 1 and last[0]["context"]["goid"] == int(g.group(1))


@pytest.mark.parametrize("suffix", ["", "-go1.15"])
def test_deep_recursion_with_stack_growth_pairs_every_return(fixtures_built: Path, suffix: str) -> None:
    """main.Depth(n, pad [512]byte): 600 frames of ~1 KB; the 8 KB goroutine stack is copied ~7 times."""
    exe = binary(fixtures_built, "greet", suffix)
    p = run_utrace("go", exe, "main.Depth", "main.Fib", "--ret", "--json", "--", exe, "1", "12", "600", timeout=180)
    assert p.returncode == 0, p.stderr
    m = re.search(r"Depth\(600\)=(\d+) calls=(\d+) stack moved=(\w+)", p.stdout)
    fib = re.search(r"Fib\(12\)=(\d+)", p.stdout)
    assert m and fib, p.stdout
    # 1 + ... + 600, plus pad[0], which the call with n = 512 incremented in its copy
    assert m.group(1) == str(sum(range(601)) + 1), "the traced program computed the right result"
    assert m.group(3) == "yes", "the goroutine stack really moved during the traced calls"
    evs, summary = events(p.stdout)
    assert summary["lost"] == 0
    for probe, calls in (("main.Depth", int(m.group(2))), ("main.Fib", 465)):  # Fib(12) makes 465 calls
        entries = [e for e in evs if e["probe"] == probe and e["kind"] == "call"]
        rets = [e for e in evs if e["probe"] == probe and e["kind"] == "return"]
        assert len(entries) == calls, f"{probe}: one entry per call, none doubled by morestack"
        assert len(rets) == calls
        assert all(r["latency_ns"] is not None for r in rets), f"{probe}: every return paired with its entry"
    depth_rets = [e["ret"]["r0"] for e in evs if e["probe"] == "main.Depth" and e["kind"] == "return"]
    # innermost first (Depth(0) returns pad[0] = 1), outermost last (the printed sum)
    assert depth_rets[0] == 1 and depth_rets[-1] == int(m.group(1))
    entries = [e["args"]["n"] for e in evs if e["probe"] == "main.Depth" and e["kind"] == "call"]
    assert entries == list(range(600, -1, -1))


# --- net/http.Get against a real HTTP server ----------------------------------------------------------


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """CPython's http.server on 127.0.0.1, its request log (one line per request) in a file."""
    root = tmp_path_factory.mktemp("www")
    (root / "hello.txt").write_text("hello\n")
    log = root.parent / "httpd.log"
    with open(log, "w") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(root)],
            stdout=subprocess.PIPE,
            stderr=logf,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(re.search(r"port (\d+)", line).group(1))  # type: ignore[union-attr]
        try:
            yield port, log
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)


def served(log: Path, marker: str) -> list[str]:
    return [ln for ln in log.read_text().splitlines() if '"GET /' in ln and marker in ln]


@pytest.mark.parametrize("suffix", variants("httpget"))
def test_http_get_urls_exact_and_the_server_agrees(
    fixtures_built: Path, http_server: tuple[int, Path], suffix: str
) -> None:
    exe = binary(fixtures_built, "httpget", suffix)
    port, log = http_server
    tag = f"t{int(time.time() * 1000) % 10**9}{suffix.replace('.', '_')}"
    urls = [
        f"http://127.0.0.1:{port}/hello.txt?{tag}=1",
        f"http://127.0.0.1:{port}/missing/{tag}/x%20y",
        f"http://127.0.0.1:{port}/hello.txt?{tag}=3&q=" + "z" * 60,
    ]
    p = run_utrace("go", exe, "net/http.Get", "--json", "--", exe, *urls, timeout=120)
    assert p.returncode == 0, p.stderr
    evs, summary = events(p.stdout)
    assert "done 3/3" in p.stdout, p.stdout
    gets = [e for e in evs if e["probe"] == "net/http.Get"]
    hits = served(log, tag)
    assert len(hits) == 3, "the server logged each request once"
    assert "inlined into main.main" in p.stderr  # the compiler inlined http.Get into main
    if "stripped" in suffix:
        assert len(gets) == len(hits) == 3
        assert all(str(e["args"]["args"]).startswith("<unavailable") for e in gets)
        assert "pclntab inline tree" in p.stderr
    else:
        assert [e["args"]["url"] for e in gets] == urls
        assert len(gets) == len(hits)
    assert summary["lost"] == 0


# --- Live process, detach, bad input ---------------------------------------------------------------


def test_live_go_process_by_pid_and_detach(fixtures_built: Path) -> None:
    exe = binary(fixtures_built, "greet", "")
    prog = start_waiting([exe, "--wait", "2", "5"])
    try:
        bg = Background("go", "--pid", str(prog.pid), "main.Greet", "--ret", "--json")
        bg.wait_attached()
        from utrace.elf.go.gobin import pclntab

        fn = pclntab(exe).lookup("main.Greet")
        assert fn is not None
        rets = []
        from utrace.elf.go.goasm import return_sites
        from utrace.elf.reader import ElfImage

        with ElfImage(exe) as img:
            assert fn.offset is not None
            rets = return_sites(img.read(fn.offset, fn.end - fn.entry), fn.entry)
        assert all(read_text_byte(prog.pid, r) == 0xCC for r in rets), "a breakpoint on every ret"
        release(prog)
        prog.wait(timeout=30)
        out, err, rc = bg.finish()
        assert rc == 0, err
        evs, summary = events(out)
        assert summary["stopped_by"] == "target exited"
        assert [e["args"]["n"] for e in evs if e["kind"] == "call"] == [1, -1, 2, -2]
        assert "utrace" not in uprobe_events()
    finally:
        if prog.poll() is None:
            prog.kill()
        prog.wait()


def test_bad_go_input_gets_one_line(fixtures_built: Path) -> None:
    greet = binary(fixtures_built, "greet", "")
    p = run_utrace("go", greet, "main.Gret")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "did you mean: main.Greet" in p.stderr
    p = run_utrace("go", str(fixtures_built / "c" / "sdt_demo"), "main.main")
    assert p.returncode == 3 and "not a Go binary" in p.stderr and p.stderr.count("\n") == 1
    p = run_utrace("go", greet, "strings.Title")
    assert p.returncode == 2 and "strings" in p.stderr and "Traceback" not in p.stderr
    p = run_utrace("go", str(fixtures_built / "go" / "greet-stripped"), "main.Greet(name Foo)")
    assert p.returncode == 2 and "Foo" in p.stderr and p.stderr.count("\n") == 1


def test_architecture_without_abi_tables_is_refused(fixtures_built: Path, tmp_path: Path) -> None:
    """The same Go binary relabelled as arm64 (e_machine = 183): one line, no guessing at registers."""
    data = bytearray((fixtures_built / "go" / "greet").read_bytes())
    data[18:20] = (183).to_bytes(2, "little")
    arm = tmp_path / "greet-arm64"
    arm.write_bytes(bytes(data))
    p = run_utrace("go", str(arm), "main.Greet")
    assert p.returncode == 3 and "no Go ABI tables for arm64" in p.stderr and p.stderr.count("\n") == 1


# --- generic functions ------------------------------------------------------------------------------

GENERIC_LINE = re.compile(
    r"iter (\d+) Scale\(len=(\d+),k=(\d+)\)=\[[\d ]*\] ScaleC\(len=(\d+),k=(\d+)\)=\[[\d ]*\] ScaleF=\[[\d. ]*\] "
    r'Lookup\("(\w+)"\)=(\d+) LookupI\((\d+)\)="(\w+)" Pair\("(\w+)",(\d+)\)="([^"]*)" Push\("(\w+)"\)=(\d+) '
    r"Max=(\d+),(\w+)"
)


def generic_variants() -> list[str]:
    out = ["", "-stripped"]
    for v in FETCHED:
        out += [s for s in (f"-go{v}", f"-go{v}-stripped") if (GO / f"generic{s}").exists()]
    return out


def nm_instances(exe: str, suffix: str) -> set[str]:
    """The shaped instantiations of the fixture's generic functions, as `go tool nm` names them."""
    from tests.e2e.test_go_tables import go_tool

    m = re.match(r"-go(1\.\d+)", suffix)
    out = go_tool(m.group(1) if m else "1.19", "tool", "nm", exe)
    names = {line.split(None, 2)[2] for line in out.splitlines() if " T " in line}
    return {n for n in names if "go.shape." in n and re.match(r"main\.(Scale|Lookup|Pair|\(\*Stack)", n)}


@pytest.mark.parametrize("suffix", generic_variants())
def test_generic_functions_by_generic_name_declared_arguments(fixtures_built: Path, suffix: str) -> None:
    """`main.Scale` stands for every instantiation; arguments are the declared ones (up to Go 1.26 the
    dictionary the shaped body takes first is not in DWARF, and a signature does not name it either);
    events and the summary carry the instantiation's own name. Oracles: the program's printout and
    `go tool nm` (names; for stripped builds that of the unstripped twin)."""
    exe = binary(fixtures_built, "generic", suffix)
    stripped = "stripped" in suffix
    old_names = suffix in ("", "-stripped")  # Go 1.19: the pclntab writes every instance as "F[...]"
    if not stripped:
        probes = ["main.Scale", "main.Lookup", "main.Pair", "main.(*Stack).Push"]
    else:
        probes = ["main.Pair(a string, b int) string", "main.(*Stack).Push(v string) int"]
        if not old_names:  # an instance by its pclntab name, with the types of that instance
            probes.append("main.Lookup[go.shape.string,go.shape.int](m map[string]int, k string) int")
    p = run_utrace("go", exe, *probes, "--ret", "--json", "--", exe, "2", timeout=120)
    assert p.returncode == 0, p.stderr
    evs, summary = events(p.stdout)
    assert summary["lost"] == 0
    printed = [GENERIC_LINE.match(line) for line in p.stdout.splitlines() if line.startswith("iter ")]
    assert len(printed) == 2 and all(printed), p.stdout
    rows = [m.groups() for m in printed if m is not None]
    twin = binary(fixtures_built, "generic", suffix.replace("-stripped", ""))
    instances = nm_instances(twin, suffix)
    assert len(instances) == 6, instances  # Scale x2 shapes, Lookup x2, Pair, Push

    def calls(prefix: str, kind: str = "call") -> list[dict]:  # type: ignore[type-arg]
        return [e for e in evs if e["probe"].startswith(prefix) and e["kind"] == kind]

    pair, push = calls("main.Pair["), calls("main.(*Stack[")
    assert [(e["args"]["a"], e["args"]["b"]) for e in pair] == [(r[9], int(r[10])) for r in rows]
    assert [e["ret"]["r0"] for e in calls("main.Pair[", "return")] == [r[11] for r in rows]
    assert [e["args"]["v"] for e in push] == [r[12] for r in rows]
    assert [e["ret"]["r0"] for e in calls("main.(*Stack[", "return")] == [int(r[13]) for r in rows]
    names = {e["probe"] for e in evs}
    if stripped and old_names:
        # no symbol table: the 1.19 pclntab's own names, the dictionary assumed (said so)
        assert names == {"main.Pair[...]", "main.(*Stack[...]).Push"}
        assert "taken as a shaped generic body with a dictionary argument first" in p.stderr
        return
    assert names <= instances, names - instances
    lookup = [e for e in calls("main.Lookup[") if e["probe"] in instances and "string" in e["probe"].split(",")[0]]
    assert [e["args"]["k"] for e in lookup] == [r[5] for r in rows]
    assert [e["ret"]["r0"] for e in calls(lookup[0]["probe"], "return")] == [int(r[6]) for r in rows]
    if stripped:
        return
    assert names == instances  # every instantiation of every generic name asked for, by its own name
    lookup_i = [e for e in calls("main.Lookup[") if e not in lookup]
    assert [e["args"]["k"] for e in lookup_i] == [int(r[7]) for r in rows]
    assert [e["ret"]["r0"] for e in calls(lookup_i[0]["probe"], "return")] == [r[8] for r in rows]
    scale = calls("main.Scale[")
    ints = [e for e in scale if "float64" not in e["probe"]]
    # per iteration: Scale([]int, i+1), then Scale([]Celsius, i+2) (same shape); Scale([]float64) apart
    want = []
    for r in rows:
        want += [(int(r[1]), int(r[2])), (int(r[3]), int(r[4]))]
    assert [(e["args"]["s.len"], e["args"]["k"]) for e in ints] == want
    floats = [e for e in scale if "float64" in e["probe"]]
    assert len(floats) == 2 and all(e["args"]["s.len"] == 1 for e in floats)
    # k is in X0; its type is the shape (DWARF's ".param1" typedef resolved)
    assert all(re.match(r"<unavailable: go\.shape\.float64(_0)? in xmm0", str(e["args"]["k"])) for e in floats)
    assert all(not any(k.startswith(".dict") for k in e["args"]) for e in evs)


@pytest.mark.parametrize("suffix", generic_variants())
def test_generic_inlined_instances_by_generic_name(fixtures_built: Path, suffix: str) -> None:
    """main.Max is inlined into main.main (Go 1.20+; 1.19 did not inline generic bodies): its inlined-only
    instances are found by the generic name, from DWARF or (stripped) the pclntab inline trees, one event
    per inlined copy and call. Oracle: DW_TAG_inlined_subroutine entries in objdump's DWARF (of the
    unstripped twin for a stripped build); the program calls Max(i, 2) and Max(key, "a") per iteration."""
    from tests.e2e.test_go_tables import dwarf_inlined

    exe = binary(fixtures_built, "generic", suffix)
    twin = binary(fixtures_built, "generic", suffix.replace("-stripped", ""))
    p = run_utrace("go", exe, "main.Max", "--json", "--", exe, "2", timeout=120)
    assert p.returncode == 0, p.stderr
    evs, summary = events(p.stdout)
    assert summary["lost"] == 0
    rows = [m.groups() for m in map(GENERIC_LINE.match, p.stdout.splitlines()) if m is not None]
    assert len(rows) == 2, p.stdout
    if suffix in ("", "-stripped"):  # Go 1.19: out-of-line instances, arguments by the ABI (with DWARF)
        assert len(evs) == 4 and not any("inlined" in ln for ln in p.stderr.splitlines())
        if suffix == "":
            ints = [e["args"] for e in evs if "int" in e["probe"]]
            strs = [e["args"] for e in evs if "string" in e["probe"]]
            assert ints == [{"a": 1, "b": 2}, {"a": 2, "b": 2}]
            assert strs == [{"a": r[12], "b": "a"} for r in rows]  # key: what Push printed it got
        return
    copies = {n: len(dwarf_inlined(twin, n)) for n in ("main.Max[go.shape.int]", "main.Max[go.shape.string]")}
    assert copies["main.Max[go.shape.string]"] >= 1  # the compiler kept at least this one
    want = {n: 2 * c for n, c in copies.items() if c}  # two iterations
    got: dict[str, int] = {}
    for e in evs:
        got[e["probe"]] = got.get(e["probe"], 0) + 1
    assert got == want, (got, want)
    how = "pclntab inline tree" if "stripped" in suffix else "arguments from DWARF location lists"
    assert all(how in ln for ln in p.stderr.splitlines() if "is inlined into main.main" in ln)
    strs = [e["args"].get("a") for e in evs if e["probe"] == "main.Max[go.shape.string]"]
    if "stripped" not in suffix and all(isinstance(a, str) and not a.startswith("<") for a in strs):
        assert strs == [r[12] for r in rows]  # a = key, where DWARF can say where it is


def test_generic_summary_shows_instantiation_names(fixtures_built: Path) -> None:
    """The summary table on stderr names each instantiation in full (rich took "[go.shape.int]" for markup)."""
    exe = binary(fixtures_built, "generic", "-go1.27" if (GO / "generic-go1.27").exists() else "-go1.21")
    p = run_utrace("go", exe, "main.Scale", "--", exe, "1", timeout=120)
    assert p.returncode == 0, p.stderr
    # the program makes two Scale calls with the int shape ([]int and []Celsius) and one with float64
    assert re.search(r"^ *main\.Scale\[go\.shape\.int\] +│ +2 *$", p.stderr, re.M), p.stderr
    assert re.search(r"^ *main\.Scale\[go\.shape\.float64\] +│ +1 *$", p.stderr, re.M), p.stderr


def test_debian_fzf_go127_stripped_error_value_is_typed() -> None:
    """Debian's fzf (Go 1.27, stripped, externally linked, built by Debian): the error parseScheme returns
    is shown with its runtime type and message, as fzf itself prints it (this showed `<type 0x...>`: the
    1.27 module data moved). Needs scripts/fetch-debian-go-programs.sh and the module-data text base
    (both from the `goboot` branch); the text base is checked before anything is traced."""
    from tests.e2e.conftest import ROOT
    from utrace.elf.go import gobin

    need((ROOT / "scripts" / "fetch-debian-go-programs.sh").exists(), "scripts/fetch-debian-go-programs.sh missing")
    from tests.e2e.test_go_distro import program  # type: ignore[import-not-found,unused-ignore]

    fzf = program("fzf")
    info = gobin.go_info(fzf)
    assert info is not None and info.version_tuple is not None and info.version_tuple[:2] == (1, 27)
    assert not info.has_symtab and info.cgo
    assert gobin.pclntab(fzf).text_start_source.startswith("moduledata.text")  # probes go where the runtime says
    sig = "github.com/junegunn/fzf/src.parseScheme(str string) (string, []int, error)"
    p = run_utrace("go", fzf, sig, "--ret", "--json", "--", fzf, "--scheme=bogus", "--filter", "x", timeout=120)
    # fzf's own message on stderr, e.g. "invalid scoring scheme: bogus (...)"; it exits with 2
    said = [ln for ln in p.stderr.splitlines() if "bogus" in ln and not ln.startswith("utrace")]
    assert len(said) == 1, p.stderr
    evs, _summary = events(p.stdout)
    rets = [e for e in evs if e["kind"] == "return"]
    assert [e["ret"]["r2"] for e in rets] == [f'*errors.errorString("{said[0]}")']
