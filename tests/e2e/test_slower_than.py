"""`--slower-than` and USDT begin/end pairs on real processes.

Oracles: programs that time each of their own calls (clock_gettime, Go's monotonic time.Now, Java's
System.nanoTime, Python's time.monotonic_ns around gc.collect) and print which were slow; PostgreSQL's
own log of slow statements (log_min_duration_statement). The fixtures sleep 40 ms on every third call and
0.2 ms on the others, so a 10 ms threshold is far from both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Background, need, run_utrace
from tests.e2e.test_codegen_bcc import _load
from tests.e2e.test_follow import postgres  # noqa: F401  (the PostgreSQL server fixture)
from tests.unit.test_codegen import CASES, HOSTILE
from utrace.probes.codegen import render
from utrace.probes.slow import OPEN_ENTRIES

pytestmark = pytest.mark.usefixtures("root_bpf")

GO = "/usr/lib/go-1.19"
JAVA = "/usr/lib/jvm/java-17-openjdk-amd64"
PYTHON = "/usr/bin/python3.11"
MS = 1_000_000
SLOW_LINE = re.compile(r"^slow i=(\d+)", re.M)


def _json(out: str) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Events and the summary from --json output."""
    objs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert objs and objs[-1]["kind"] == "summary", out[-2000:]
    return objs[:-1], objs[-1]


def _launch(*args: str, check: bool = True, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run utrace on a command it launches, events to a file (the launched program keeps standard output to
    itself: what both wrote to one pipe could interleave mid-line). Returns (run, events' text)."""
    fd, path = tempfile.mkstemp(prefix="utrace-slow-", suffix=".json")
    os.close(fd)
    try:
        cut = args.index("--")
        p = run_utrace(*args[:cut], "-o", path, *args[cut:], check=check, timeout=timeout)
        return p, Path(path).read_text()
    finally:
        os.unlink(path)


def _slow_ids(out: str) -> set[int]:
    """The calls the program itself measured as slow."""
    return {int(m) for m in SLOW_LINE.findall(out)}


def _pairs(events: list[dict[str, object]], begin: str, end: str) -> list[tuple[dict[str, object], dict[str, object]]]:
    """(begin, end) events as --slower-than sends them: each end right after its kept begin, same thread."""
    out = []
    for n, ev in enumerate(events):
        if ev["probe"] == end and ev["kind"] != "call":
            prev = events[n - 1]
            assert prev["probe"] == begin, (prev, ev)
            out.append((prev, ev))
    return out


@pytest.fixture(scope="module")
def c_slowcalls(tmp_path_factory: pytest.TempPathFactory) -> str:
    cc = shutil.which("gcc")
    need(cc is not None, "gcc")
    assert cc is not None
    out = tmp_path_factory.mktemp("slowcalls") / "slowcalls"
    subprocess.run([cc, "-O2", "-g", "-Wall", "-o", str(out), str(ROOT / "fixtures/c/slowcalls.c")], check=True)
    return str(out)


@pytest.fixture(scope="module")
def go_slowcalls(tmp_path_factory: pytest.TempPathFactory) -> str:
    need(os.path.exists(f"{GO}/bin/go"), f"{GO} (apt-get install golang-1.19-go)")
    d = tmp_path_factory.mktemp("goslow")
    env = dict(os.environ, GOROOT=GO, GO111MODULE="off", CGO_ENABLED="0", GOENV="off", GOCACHE=str(d / "cache"),
               GOTOOLCHAIN="local")  # fmt: skip
    out = d / "slowcalls"
    subprocess.run([f"{GO}/bin/go", "build", "-o", str(out), str(ROOT / "fixtures/go/slowcalls/main.go")],
                   check=True, env=env, cwd=d, timeout=300)  # fmt: skip
    return str(out)


@pytest.fixture(scope="module")
def java_slowdemo(tmp_path_factory: pytest.TempPathFactory) -> str:
    need(os.path.exists(f"{JAVA}/bin/javac"), f"{JAVA} (apt-get install openjdk-17-jdk-headless)")
    d = tmp_path_factory.mktemp("javaslow")
    subprocess.run([f"{JAVA}/bin/javac", "-d", str(d), str(ROOT / "fixtures/java/SlowDemo.java")], check=True)
    return str(d)


# --- native functions ------------------------------------------------------------------------------


def test_native_slow_calls_are_the_ones_the_program_measured(c_slowcalls: str) -> None:
    p, out = _launch("native", c_slowcalls, "handle(long i, const char *tag)", "--slower-than", "10ms", "--json",
                   "--", c_slowcalls, "12", "10000", check=True)  # fmt: skip
    events, summary = _json(out)
    measured = _slow_ids(p.stdout)
    assert measured == {0, 3, 6, 9}, p.stdout  # the program's own clock: every third call
    pairs = _pairs(events, "handle", "handle")
    assert {call["args"]["i"] for call, _ret in pairs} == measured  # type: ignore[index]
    for call, ret in pairs:
        assert call["kind"] == "call" and ret["kind"] == "return" and call["tid"] == ret["tid"]
        assert call["args"]["tag"] == f"req-{call['args']['i']}"  # type: ignore[index]
        assert ret["ret"] == 2 * call["args"]["i"] + 1  # type: ignore[index,operator]
        assert 10 * MS <= ret["latency_ns"] < 1000 * MS  # type: ignore[operator]
        # the kept entry event is the one captured at entry: its time is the call's start
        assert ret["ts_ns"] - call["ts_ns"] == ret["latency_ns"]  # type: ignore[operator]
    assert len(events) == 2 * len(measured) and summary["lost"] == 0


def test_count_and_hist_count_only_slow_calls(c_slowcalls: str) -> None:
    p, out = _launch("native", c_slowcalls, "handle", "--slower-than", "10ms", "--count", "--json",
                   "--", c_slowcalls, "12", "10000", check=True)  # fmt: skip
    objs, _summary = _json(out)
    counts = {o["probe"]: o["count"] for o in objs if o["kind"] == "count"}
    assert counts == {"handle": len(_slow_ids(p.stdout))}, p.stdout
    p, out = _launch("native", c_slowcalls, "handle", "--slower-than", "10ms", "--hist", "--json",
                   "--", c_slowcalls, "12", "10000", check=True)  # fmt: skip
    objs, _summary = _json(out)
    hist = [o for o in objs if o["kind"] == "hist"]
    assert len(hist) == 1 and hist[0]["count"] == len(_slow_ids(p.stdout)) == 4, p.stdout
    assert all(b["high"] >= 10 * MS for b in hist[0]["buckets"])  # type: ignore[attr-defined]


def test_stack_of_a_slow_call_is_the_one_at_its_entry(c_slowcalls: str) -> None:
    p, out = _launch("native", c_slowcalls, "handle", "--slower-than", "10ms", "--stack", "--json",
                   "--", c_slowcalls, "4", "10000", check=True)  # fmt: skip
    events, _summary = _json(out)
    calls = [e for e in events if e["kind"] == "call"]
    assert len(calls) == len(_slow_ids(p.stdout)) == 2
    for call in calls:
        frames = [f["function"] for f in call["stack"]]  # type: ignore[attr-defined]
        assert frames[:2] == ["handle", "main"], call["stack"]


def test_calls_in_flight_past_the_map_are_counted_lost(c_slowcalls: str) -> None:
    """deep(20000) has 20001 calls in flight at once, all slow: the first OPEN_ENTRIES entries are kept,
    each of the others is counted lost. Only the 64 outermost returns are reported: the kernel hooks at
    most 64 nested returns per thread (MAX_URETPROBE_DEPTH in kernel/events/uprobes.c), as for --ret."""
    p, out = _launch("native", c_slowcalls, "deep", "--slower-than", "10ms", "--json",
                   "--", c_slowcalls, "1", "10000", "20000", check=True)  # fmt: skip
    assert "deep 20001 calls" in p.stdout
    events, summary = _json(out)
    assert summary["lost"] == 20001 - OPEN_ENTRIES, summary
    assert f"{20001 - OPEN_ENTRIES} call(s) could not be timed" in p.stderr, p.stderr
    pairs = _pairs(events, "deep", "deep")
    assert 0 < len(pairs) <= 64 and len(events) == 2 * len(pairs)
    # deep(n) returns n; the outermost calls (n = 20000 down) are the ones whose returns are hooked
    assert all(r["ret"] == c["args"]["arg0"] >= 20000 - 63 for c, r in pairs)  # type: ignore[index,operator]


# --- USDT begin/end pairs ---------------------------------------------------------------------------


def test_usdt_pairs_nest_per_thread(c_slowcalls: str) -> None:
    """`--ret` pairs request__start/request__done and the recursive level__entry/level__return: each
    return's latency is measured from the begin of the same depth (the one with the same argument)."""
    p, out = _launch("native", c_slowcalls, "slowcalls:*", "--ret", "--json", "--", c_slowcalls, "4", "10000",
                   check=True)  # fmt: skip
    events, _summary = _json(out)
    begins = {e["args"]["arg0"]: e for e in events if e["probe"] == "slowcalls:level__entry"}  # type: ignore[index]
    ends = [e for e in events if e["probe"] == "slowcalls:level__return"]
    assert sorted(begins) == [0, 1, 2, 3] and len(ends) == 4
    for end in ends:
        begin = begins[end["args"]["arg0"]]  # type: ignore[index]
        assert end["latency_ns"] == end["ts_ns"] - begin["ts_ns"]  # type: ignore[operator]
    done = [e for e in events if e["probe"] == "slowcalls:request__done"]
    assert [e["args"]["arg0"] for e in done] == [0, 1, 2, 3]  # type: ignore[index]
    slow = {e["args"]["arg0"] for e in done if e["latency_ns"] >= 10 * MS}  # type: ignore[index,operator]
    assert slow == _slow_ids(p.stdout)


def test_usdt_begin_alone_brings_its_end_and_slower_than_keeps_its_arguments(c_slowcalls: str) -> None:
    p, out = _launch("native", c_slowcalls, "slowcalls:request__start", "--slower-than", "10ms", "--json",
                   "--", c_slowcalls, "9", "10000", check=True)  # fmt: skip
    events, _summary = _json(out)
    assert "slowcalls:request__done added" in p.stderr
    pairs = _pairs(events, "slowcalls:request__start", "slowcalls:request__done")
    assert {b["args"]["arg0"] for b, _e in pairs} == _slow_ids(p.stdout) == {0, 3, 6}  # type: ignore[index]
    assert all(e["latency_ns"] >= 10 * MS for _b, e in pairs)  # type: ignore[operator]
    assert len(events) == 2 * len(pairs)


def test_usdt_pairs_hist(c_slowcalls: str) -> None:
    """--hist on a USDT pair: one latency per request, the slow ones in the buckets past 10 ms."""
    p, out = _launch("native", c_slowcalls, "slowcalls:request__start", "--hist", "--json",
                     "--", c_slowcalls, "9", "10000")  # fmt: skip
    objs, _summary = _json(out)
    hist = {o["probe"]: o for o in objs if o["kind"] == "hist"}
    assert list(hist) == ["slowcalls:request__done"] and hist["slowcalls:request__done"]["count"] == 9, objs
    buckets = hist["slowcalls:request__done"]["buckets"]
    slow = sum(b["count"] for b in buckets if b["low"] >= 10 * MS)  # type: ignore[attr-defined]
    fast = sum(b["count"] for b in buckets if b["high"] < 10 * MS)  # type: ignore[attr-defined]
    assert (slow, fast) == (len(_slow_ids(p.stdout)), 9 - len(_slow_ids(p.stdout))), buckets


def test_usdt_pairs_load_with_hostile_names() -> None:
    for name in ("usdt_pair", "usdt_pair_hist", "slower_than", "slower_than_count", "slower_than_hist",
                 "slower_than_go_stack"):  # fmt: skip
        make, options = CASES[name]
        from dataclasses import replace

        specs = [replace(s, name=HOSTILE[3], module=HOSTILE[2]) for s in make()]
        _load(render(specs, options))


# --- Go, Java, Python, PostgreSQL -------------------------------------------------------------------


def test_go_slow_calls_without_uretprobes(go_slowcalls: str) -> None:
    """Go: entry and return-instruction probes paired per goroutine frame; the goroutine parks in
    time.Sleep and may come back on another thread."""
    p, out = _launch("go", go_slowcalls, "main.handle", "--slower-than", "10ms", "--json",
                   "--", go_slowcalls, "12", "10000", check=True)  # fmt: skip
    events, _summary = _json(out)
    pairs = _pairs(events, "main.handle", "main.handle")
    assert {c["args"]["i"] for c, _r in pairs} == _slow_ids(p.stdout) == {0, 3, 6, 9}, p.stdout  # type: ignore[index]
    for call, ret in pairs:
        assert call["args"]["tag"] == f"req-{call['args']['i']}"  # type: ignore[index]
        assert ret["ret"]["r0"] == 2 * call["args"]["i"] + len(call["args"]["tag"])  # type: ignore[index,operator]
        assert ret["latency_ns"] >= 10 * MS and call["context"]["goid"] == ret["context"]["goid"]  # type: ignore[index,operator]
    assert len(events) == 2 * len(pairs)


def test_java_slow_methods(java_slowdemo: str) -> None:
    p, out = _launch("java", "method:SlowDemo", "--slower-than", "10ms", "--json",
                   "--", f"{JAVA}/bin/java", "-cp", java_slowdemo, "SlowDemo", "9", "10000",
                   check=True, timeout=300)  # fmt: skip
    events, _summary = _json(out)
    pairs = _pairs(events, "hotspot:method__entry", "hotspot:method__return")
    for begin, end in pairs:
        assert begin["args"]["method"] == end["args"]["method"]  # type: ignore[index]
        assert end["latency_ns"] >= 10 * MS  # type: ignore[operator]
    methods = [b["args"]["method"] for b, _e in pairs]  # type: ignore[index]
    # handle's slow calls, and main, which runs them all (SlowDemo.<clinit> and the fast calls are not sent)
    assert len(_slow_ids(p.stdout)) == 3 == methods.count("SlowDemo.handle(int)"), p.stdout + p.stderr
    assert set(methods) == {"SlowDemo.handle(int)", "SlowDemo.main(java.lang.String[])"}
    assert len(events) == 2 * len(pairs)


def test_java_gc_hist_counts_the_pauses_the_jvm_logged(tmp_path: Path) -> None:
    """`java gc --hist`: gc__begin/gc__end timed in the kernel, one histogram entry per collection the
    JVM's own -Xlog:gc records (Demo calls System.gc() twice)."""
    need(os.path.exists(f"{JAVA}/bin/java"), f"{JAVA}")
    demo = ROOT / "fixtures/build/java"
    need((demo / "Demo.class").exists(), "fixtures/java not built")
    log = tmp_path / "gc.log"
    _p, out = _launch("java", "gc", "--hist", "--json", "--", f"{JAVA}/bin/java", f"-Xlog:gc:file={log}",
                      "-cp", str(demo), "Demo", timeout=300)  # fmt: skip
    objs, summary = _json(out)
    pauses = re.findall(r"GC\(\d+\) Pause .* (\d+\.\d+)ms", log.read_text())
    hist = {o["probe"]: o for o in objs if o["kind"] == "hist"}
    assert list(hist) == ["hotspot:gc__end"] and len(pauses) >= 2, (objs, log.read_text())
    assert hist["hotspot:gc__end"]["count"] == len(pauses)
    assert summary["lost"] == 0


def test_python_gc_pairs(tmp_path: Path) -> None:
    need(os.path.exists(PYTHON), f"{PYTHON}")
    notes = subprocess.run(["readelf", "-n", PYTHON], capture_output=True, text=True).stdout
    need("gc__start" in notes, f"{PYTHON} has no USDT notes (built without --with-dtrace)")
    script = tmp_path / "slowgc.py"
    script.write_text(
        "import gc, sys, time\n"
        "class Node:\n"
        "    __slots__ = ('me',)\n"
        "    def __init__(self):\n"
        "        self.me = self\n"
        "gc.disable()\n"
        "slow = 0\n"
        "for i in range(9):\n"
        "    if i % 3 == 0:\n"
        "        junk = [Node() for _ in range(1_000_000)]\n"
        "        del junk\n"
        "    t0 = time.monotonic_ns()\n"
        "    gc.collect()\n"
        "    took = (time.monotonic_ns() - t0) // 1000\n"
        "    if took >= 20000:\n"
        # one write() per line: utrace writes to the same pipe (see test_follow's PY_SCRIPT)
        "        sys.stdout.write(f'slow i={i} us={took}\\n')\n"
        "        sys.stdout.flush()\n"
    )
    p, out = _launch("native", PYTHON, "python:gc__start", "--slower-than", "20ms", "--json",
                   "--", PYTHON, str(script), check=True)  # fmt: skip
    events, _summary = _json(out)
    pairs = _pairs(events, "python:gc__start", "python:gc__done")
    assert len(pairs) == len(_slow_ids(p.stdout)) == 3, p.stdout
    assert all(e["args"]["collected"] >= 1_000_000 and e["latency_ns"] >= 20 * MS for _b, e in pairs)  # type: ignore[index,operator]


def test_python_function_probes_are_not_paired() -> None:
    """CPython 3.11's function__entry fires only for frames entered from C (python/cpython#98894):
    its probes are never paired, and --slower-than says why."""
    need(os.path.exists(PYTHON), f"{PYTHON}")
    p = run_utrace("native", PYTHON, "python:function__entry", "--slower-than", "1ms")
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, p.stderr
    assert "python/cpython#98894" in p.stderr


@pytest.fixture
def pg_slow(postgres: tuple[subprocess.Popen[bytes], Path, Path, Path]) -> Iterator[tuple[int, Path, Path, Path]]:  # noqa: F811
    proc, bindir, sock, log = postgres
    env = dict(os.environ, LD_LIBRARY_PATH=str(bindir.parents[3] / "lib/x86_64-linux-gnu"))
    for sql in ("ALTER SYSTEM SET log_min_duration_statement = '25ms'", "SELECT pg_reload_conf()"):
        subprocess.run([str(bindir / "psql"), "-X", "-h", str(sock), "-U", "postgres", "-d", "postgres", "-Atc", sql],
                       check=True, capture_output=True, env=env, timeout=60)  # fmt: skip
    time.sleep(1)  # the postmaster rereads its configuration; backends forked from then on have it
    yield proc.pid, bindir, sock, log


def test_postgres_slow_queries_match_the_server_log(pg_slow: tuple[int, Path, Path, Path]) -> None:
    postmaster, bindir, sock, log = pg_slow
    env = dict(os.environ, LD_LIBRARY_PATH=str(bindir.parents[3] / "lib/x86_64-linux-gnu"))
    args = ["native", str(bindir / "postgres"), "postgresql:query__start", "--slower-than", "25ms",
            "--pid", str(postmaster), "--follow", "--json"]  # fmt: skip
    queries = [f"SELECT pg_sleep(0.06), {i}" if i % 3 == 0 else f"SELECT {i} + 1" for i in range(9)]
    with Background(*args) as bg:
        bg.wait_attached()
        for q in queries:
            subprocess.run([str(bindir / "psql"), "-X", "-h", str(sock), "-U", "postgres", "-d", "postgres",
                            "-Atc", q], check=True, capture_output=True, env=env, timeout=60)  # fmt: skip
        out, err, rc = bg.interrupt(settle=1)
    assert rc == 0, err
    # with log_statement=all (the server fixture's), a slow statement's duration line names only its
    # backend's pid, whose statement line came first (one connection, one statement each)
    text = log.read_text()
    statement = dict(re.findall(r"^(\d+) LOG:  statement: (.*)$", text, re.M))
    logged_queries = {
        statement[pid]: float(ms) for pid, ms in re.findall(r"^(\d+) LOG:  duration: (\d+\.\d+) ms", text, re.M)
    }
    assert set(logged_queries) == {q for q in queries if "pg_sleep" in q}, text
    events, _summary = _json(out)
    pairs = _pairs(events, "postgresql:query__start", "postgresql:query__done")
    assert {b["args"]["query"] for b, _e in pairs} == set(logged_queries), events  # type: ignore[index]
    for begin, end in pairs:
        assert end["args"]["query"] == begin["args"]["query"]  # type: ignore[index]
        ms = end["latency_ns"] / MS  # type: ignore[operator]
        assert abs(ms - logged_queries[begin["args"]["query"]]) < 10, (ms, logged_queries)  # type: ignore[index]


@pytest.mark.parametrize(
    ("extra", "says"),
    [(["--top"], "does not apply to --top"), (["--count", "--by", "i"], "does not combine with --by"),
     (["--hist=i"], "does not combine with --by")],
)  # fmt: skip
def test_slower_than_with_options_it_does_not_serve(c_slowcalls: str, extra: list[str], says: str) -> None:
    p = run_utrace("native", c_slowcalls, "handle", "--slower-than", "1ms", *extra)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and says in p.stderr, p.stderr


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "says"),
    [("10", "give a unit"), ("5xs", "is not a duration"), ("-1ms", "is not a duration"), ("0ms", "more than 0"),
     ("", "is not a duration")],
)  # fmt: skip
def test_malformed_durations_are_one_line_and_exit_2(c_slowcalls: str, value: str, says: str) -> None:
    p = run_utrace("native", c_slowcalls, "handle", "--slower-than", value)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and says in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_probe_without_return_is_one_line_and_exit_2(c_slowcalls: str) -> None:
    # an end named alone brings its begin: fine
    p = run_utrace("native", c_slowcalls, "slowcalls:request__done", "--slower-than", "1ms", "--dump-bpf")
    assert p.returncode == 0 and "slowcalls:request__start added" in p.stderr, p.stderr
    p = run_utrace("native", c_slowcalls, "handle", "utrace_demo:tick", "--slower-than", "1ms", "--dump-bpf")
    assert p.returncode != 0  # no such probe in this file
    sdt_demo = str(ROOT / "fixtures/build/c/sdt_demo")
    p = run_utrace("native", sdt_demo, "utrace_demo:tick", "--slower-than", "1ms", "--dump-bpf")
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "utrace_demo:tick" in p.stderr and "needs probes with a return" in p.stderr
    p = run_utrace("java", "class-load", "--slower-than", "1ms", "--dump-bpf")
    assert p.returncode == 2 and "hotspot:class__loaded" in p.stderr and p.stderr.count("\n") == 1, p.stderr
