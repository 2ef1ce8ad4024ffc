"""C and C++ arguments shown right or marked uncertain, imported functions, overlapping patterns and
typed USDT arguments, checked against what the programs print, nm/readelf, and gdb."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, need, run_utrace, utrace_cmd

pytestmark = pytest.mark.usefixtures("root_bpf")


def split(stdout: str) -> tuple[list[dict[str, object]], list[str]]:
    """(utrace's JSON events, the traced program's own lines) from a launch's shared stdout."""
    objs = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert objs and objs[-1]["kind"] == "summary", stdout[-800:]
    return objs[:-1], [line for line in stdout.splitlines() if not line.startswith("{")]


def built(fixtures: Path, rel: str) -> str:
    path = fixtures / rel
    need(path.exists(), f"{rel} not built (scripts/build-fixtures.sh)")
    return str(path)


def args_of(ev: dict[str, object]) -> dict[str, object]:
    a = ev["args"]
    assert isinstance(a, dict)
    return a


# --- C++ `this` ---------------------------------------------------------------------------------------


def test_libstdcxx_ostream_methods_get_this_equal_to_cout(fixtures_built: Path) -> None:
    prog = built(fixtures_built, "cpp/ostream")
    p = run_utrace(
        "native", prog, "std::ostream::put", "std::ostream::_M_insert<long>", "--json", "--", prog, "5", timeout=180
    )
    assert p.returncode == 0, p.stderr
    evs, lines = split(p.stdout)
    assert re.search(r"imported by ostream, traced in /\S*libstdc\+\+\.so", p.stderr), p.stderr
    cout = int(next(x for x in lines if x.startswith("cout=")).split("=")[1], 16)
    printed = [re.fullmatch(r"put=(\d+) insert=(\d+)", x) for x in lines]
    pairs = [(int(m.group(1)), int(m.group(2))) for m in printed if m]
    assert len(pairs) == 5
    puts = [args_of(e) for e in evs if str(e["probe"]).startswith("std::ostream::put")]
    inserts = [args_of(e) for e in evs if "_M_insert<long>" in str(e["probe"])]
    # put(c) then `<< v << std::endl`, whose endl is put('\n')
    assert [a["arg0"] for a in puts] == [c for c, _v in pairs for c in (c, 10)]
    assert [a["arg0"] for a in inserts] == [v for _c, v in pairs]
    assert {a["this"] for a in puts + inserts} == {cout}


def _geo_lines(lines: list[str]) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    drawn = [re.fullmatch(r"draw this=(\S+) n=(\d+)", x) for x in lines]
    draws = [(int(m.group(1), 16), int(m.group(2))) for m in drawn if m]
    makes = [int(m.group(1)) for x in lines if (m := re.fullmatch(r"make n=(\d+)", x))]
    helpers = [int(m.group(1)) for x in lines if (m := re.fullmatch(r"helper n=(\d+)", x))]
    return draws, makes, helpers


def test_member_static_member_and_free_function_from_dwarf(fixtures_built: Path) -> None:
    prog = built(fixtures_built, "cpp/geo")
    p = run_utrace("native", prog, "geo::*", "--json", "--", prog, timeout=180)
    assert p.returncode == 0, p.stderr
    evs, lines = split(p.stdout)
    draws, makes, helpers = _geo_lines(lines)
    assert len(draws) == len(makes) == len(helpers) == 3
    got = {name: [args_of(e) for e in evs if str(e["probe"]).startswith(name + "(")] for name in
           ("geo::canvas::draw", "geo::canvas::make", "geo::helper")}  # fmt: skip
    assert [(a["this"], a["arg0"]) for a in got["geo::canvas::draw"]] == draws
    assert [a for a in got["geo::canvas::make"]] == [{"arg0": n} for n in makes]  # static: no `this`
    assert [a for a in got["geo::helper"]] == [{"arg0": n} for n in helpers]
    assert "uncertain" not in p.stdout + p.stderr


def test_without_dwarf_or_evidence_arguments_are_uncertain(fixtures_built: Path) -> None:
    prog = built(fixtures_built, "cpp/geo-nodwarf")
    sections = subprocess.run(["readelf", "-SW", prog], capture_output=True, text=True, check=True).stdout
    assert ".debug_info" not in sections  # the premise: nothing but the symbol names
    p = run_utrace("native", prog, "geo::canvas::draw", "--json", "--", prog, timeout=180)
    assert p.returncode == 0, p.stderr
    evs, lines = split(p.stdout)
    draws, _m, _h = _geo_lines(lines)
    reason = "no evidence whether geo::canvas::draw is a member function; no DWARF"
    assert len(evs) == len(draws) == 3
    for ev, (this, n) in zip(evs, draws, strict=True):
        # the registers as they are (this in arg0, n in arg1, as it happens), never as plain values
        assert args_of(ev) == {"arg0": {"value": this, "uncertain": reason}, "arg1": {"value": n, "uncertain": reason}}
    assert "geo::canvas::draw(int): arguments shown uncertain" in p.stderr
    t = run_utrace("native", prog, "geo::canvas::draw", "--", prog, timeout=180)
    calls = [x for x in t.stdout.splitlines() if "-> geo::canvas::draw(int)" in x]
    assert len(calls) == 3
    assert all(f"arg1=0x{n:x} (uncertain: {reason})" in x for x, (_t, n) in zip(calls, draws, strict=True))


def test_gcc_clones_are_traced_but_not_decoded(fixtures_built: Path) -> None:
    prog = built(fixtures_built, "cpp/clones")
    nm = subprocess.run(["nm", "-C", prog], capture_output=True, text=True, check=True).stdout
    assert "scale(long, long) [clone .constprop.0]" in nm and "describe(item) [clone .isra.0]" in nm
    p = run_utrace("native", prog, "scale", "describe", "--json", "--", prog, "4", timeout=180)
    assert p.returncode == 0, p.stderr
    evs, lines = split(p.stdout)
    assert sum(x.startswith("scale v=") for x in lines) == 4
    assert [e["probe"] for e in evs] == ["scale(long, long) [clone .constprop.0]", "describe(item) [clone .isra.0]"] * 4
    for ev in evs:
        (only,) = args_of(ev).values()
        assert isinstance(only, str) and only.startswith("<unavailable: GCC clone .")
    assert "a GCC clone (.constprop.0); traced, its arguments not decoded" in p.stderr


# --- imported functions, overlapping patterns ---------------------------------------------------------


def _gdb_hits(argv: list[str], function: str, tmp: Path) -> int:
    script = tmp / "count.gdb"
    script.write_text(
        "set pagination off\nset startup-with-shell off\nset breakpoint pending on\n"
        f"break {function}\ncommands\nsilent\ncontinue\nend\nrun\ninfo breakpoints\n"
    )
    out = subprocess.run(
        ["gdb", "-batch", "-nx", "-x", str(script), "--args", *argv], capture_output=True, text=True, timeout=120
    ).stdout
    m = re.search(r"breakpoint already hit (\d+) time", out)
    assert m, out[-2000:]
    return int(m.group(1))


def test_imported_function_is_traced_in_its_library(tmp_path: Path) -> None:
    need(shutil.which("gdb") is not None, "gdb is not installed")
    ls = "/usr/bin/ls"
    argv = [ls, "-l", "/"]
    expected = _gdb_hits(argv, "getenv", tmp_path)
    p = run_utrace("native", ls, "getenv", "--count", "--json", "--", *argv, timeout=180)
    assert p.returncode == 0, p.stderr
    assert re.search(r"getenv: imported by ls, traced in /\S*libc\.so\.6", p.stderr), p.stderr
    counts = [json.loads(x) for x in p.stdout.splitlines() if x.startswith('{"kind": "count"')]
    assert [c["count"] for c in counts] == [expected]
    # by path alone: tests/e2e/test_imports.py


def test_overlapping_patterns_count_each_call_once(fixtures_built: Path) -> None:
    hot = built(fixtures_built, "c/hot")
    p = run_utrace("native", hot, "hot", "ho*", "--count", "--json", "--", hot, "5000", timeout=180)
    assert p.returncode == 0, p.stderr
    calls = int(re.search(r"calls (\d+) sum", p.stdout).group(1))  # type: ignore[union-attr]
    counts = [json.loads(x) for x in p.stdout.splitlines() if x.startswith('{"kind": "count"')]
    assert [(c["probe"], c["count"]) for c in counts] == [("hot", calls)]
    summary = json.loads(p.stdout.splitlines()[-1])
    assert summary["attached"] == 1


# --- USDT argument types ------------------------------------------------------------------------------


def test_usdt_signature_types_the_arguments(fixtures_built: Path) -> None:
    prog = built(fixtures_built, "c/sdt_demo")
    sig = "utrace_demo:tick(int counter, const char *message, long value)"
    p = run_utrace("native", prog, sig, "--json", "--", prog, "3", "1", timeout=180)
    assert p.returncode == 0, p.stderr
    evs, lines = split(p.stdout)
    printed = [m.groups() for x in lines if (m := re.search(r"tick\((-?\d+),(\S+),(-?\d+)\)", x))]
    assert len(printed) == 3
    assert [args_of(e) for e in evs] == [{"counter": int(c), "message": msg, "value": int(v)} for c, msg, v in printed]
    assert all(e["context"] == {"types": "signature"} for e in evs)
    # a signature that does not fit the note is refused in one line
    bad = run_utrace("native", prog, "utrace_demo:tick(const char *a)")
    assert bad.returncode == 2 and "1 parameter(s), the note 3 argument(s)" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    # without a signature: no catalogue entry for this provider, so the sizes only
    plain = run_utrace("native", prog, "utrace_demo:tick", "--json", "-n", "1", "--", prog, "1", timeout=180)
    (ev,) = split(plain.stdout)[0]
    assert ev["context"] == {"types": "untyped"} and isinstance(args_of(ev)["arg1"], int)


# CPython 3.11 reaches its function__entry probe only while a trace or profile function is set (its
# eval loop tests the probe's semaphore inside the tracing branch: bpftrace 0.17 counts 2 hits, both
# during start-up, for this script without the settrace line, and 4 alpha + 4 beta with it).
PY_SCRIPT = """
import sys
sys.settrace(lambda *a: None)
calls = {}
def alpha(n):
    calls["alpha"] = calls.get("alpha", 0) + 1
    return n + 1
def beta(n):
    calls["beta"] = calls.get("beta", 0) + 1
    return alpha(n) * 2
for i in range(4):
    beta(i)
print("calls", sorted(calls.items()))
"""


def test_python_function_entry_names_from_the_catalogue(tmp_path: Path) -> None:
    python = "/usr/bin/python3.11"
    need(Path(python).exists(), "Debian's python3.11 is not installed")
    notes = subprocess.run(["readelf", "-n", python], capture_output=True, text=True, check=True).stdout
    need("Name: function__entry" in notes, "python3.11 has no function__entry USDT probe")
    script = tmp_path / "names.py"
    script.write_text(PY_SCRIPT)
    p = run_utrace("native", python, "python:function__entry", "--json", "--", python, "-S", str(script), timeout=180)
    assert p.returncode == 0, p.stderr
    evs, lines = split(p.stdout)
    printed = next(x for x in lines if x.startswith("calls"))
    mine = [args_of(e) for e in evs if args_of(e).get("filename") == str(script)]
    names = [str(a["funcname"]) for a in mine]
    assert printed == "calls " + str(sorted((n, names.count(n)) for n in ("alpha", "beta")))
    assert all(isinstance(a["lineno"], int) and a["lineno"] > 0 for a in mine)
    assert {e["context"]["types"] for e in evs} == {"catalogue"}  # type: ignore[index]
    assert "python: argument types from python/cpython Include/pydtrace.d" in p.stderr


PG_ROOT = Path.home() / ".cache" / "utrace" / "realworld" / "postgresql" / "root"  # scripts/fetch-postgres.sh


def test_postgresql_query_text_from_the_catalogue() -> None:
    """Debian's PostgreSQL 15 (built with --enable-dtrace): query__start's `const char *` is the query
    text, as PostgreSQL's own log (log_statement=all) records it."""
    need(
        (PG_ROOT / "usr/lib/postgresql/15/bin/postgres").exists(), "PostgreSQL not fetched (scripts/fetch-postgres.sh)"
    )
    need(shutil.which("setpriv") is not None, "setpriv (util-linux)")
    tmp_path = Path(tempfile.mkdtemp(prefix="utrace-pg-"))  # pytest's own is root's alone (0700)
    try:
        _postgresql_query_text(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _postgresql_query_text(tmp_path: Path) -> None:
    root = tmp_path / "root"  # readable by the unprivileged user PostgreSQL insists on running as
    shutil.copytree(PG_ROOT, root, symlinks=True)
    subprocess.run(["chmod", "-R", "a+rX", str(tmp_path)], check=True)
    subprocess.run(["chown", "65534:65534", str(tmp_path)], check=True)
    bindir, libs = root / "usr/lib/postgresql/15/bin", root / "usr/lib/x86_64-linux-gnu"
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", f"LD_LIBRARY_PATH={libs}"]
    data = tmp_path / "data"
    subprocess.run([*nobody, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    queries = "SELECT 42 AS answer;\nSELECT upper('hello utrace') AS shout;\n"
    postgres = str(bindir / "postgres")
    cmd = [*nobody, postgres, "--single", "-D", str(data), "-c", "log_statement=all", "postgres"]
    p = subprocess.run(
        [*utrace_cmd("native", postgres, "postgresql:query__start", "--json", "-o", str(tmp_path / "ev.json")), "--",
         *cmd], input=queries, capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    logged = re.findall(r"LOG:  statement: (.*)", p.stderr)
    assert logged == ["SELECT 42 AS answer;", "SELECT upper('hello utrace') AS shout;"]
    evs = [json.loads(x) for x in (tmp_path / "ev.json").read_text().splitlines()][:-1]
    assert [str(args_of(e)["query"]).strip() for e in evs] == logged
    assert {e["context"]["types"] for e in evs} == {"catalogue"}


def test_listing_shows_catalogue_signatures() -> None:
    python = "/usr/bin/python3.11"
    need(Path(python).exists(), "Debian's python3.11 is not installed")
    p = run_utrace("list", python, "python:function__entry", "--json", check=True)
    (obj,) = [json.loads(x) for x in p.stdout.splitlines()]
    assert len(obj["arguments"]) == 3  # the note (readelf -n) has three operands: the 3.6-3.11 entry fits
    assert obj["signature"] == "function__entry(const char *filename, const char *funcname, int lineno)"
    plain = run_utrace("list", python, "python:function__entry", check=True).stdout
    assert "python:function__entry(const char *filename, const char *funcname, int lineno) [" in plain
