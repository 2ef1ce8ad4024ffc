"""`--count --by ARG` and `--hist=ARG`, counted in the kernel, checked against what the traced programs say
they passed: a C program's own tally, sdt_demo's and greet's printouts, httpget's lines per URL, and
PostgreSQL's statement log."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from tests.e2e.conftest import Background, need, run_utrace, uprobe_events
from tests.e2e.test_follow import postgres
from tests.e2e.test_jvm import XLOG_CLASS, binary, demo_classes, java
from tests.unit.test_byarg import GOLDEN_CASES
from tests.unit.test_codegen import HOSTILE
from utrace.bpf.backend import Tracer
from utrace.probes.aggregate import select, value_slot_range
from utrace.probes.codegen import Aggregate, Options, render

__all__ = ["demo_classes", "java", "postgres"]  # fixtures shared with test_follow and test_jvm
pytestmark = pytest.mark.usefixtures("root_bpf")

# Calls visit(url, size) N times with a skewed choice of URLs (rand_r from a seed), and prints, from its
# own counters, how many times it passed each URL (as hex: one has an escape byte) and every size.
SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
volatile long sink;
__attribute__((noinline, noipa)) void visit(const char *url, long size) { sink += strlen(url) + size; }
static const char *urls[] = {
    "http://a.example/", "http://b.example/x?q=1", "http://c.example/\x1b]0;pwned\x07",
    "https://long.example/0123456789012345678901234567890123456789012345678901234567890123456789/one",
    "https://long.example/0123456789012345678901234567890123456789012345678901234567890123456789/two",
    "u5", "u6", "u7", "u8", "u9", "u10", "u11", "u12", "u13", "u14", "u15", "u16", "u17", "u18", "u19",
    "u20", "u21", "u22", "u23", "u24", "u25", "u26", "u27", "u28", "u29",
};
#define NURLS (sizeof urls / sizeof urls[0])
int main(int argc, char **argv) {
    unsigned seed = (unsigned)atoi(argv[1]);
    long n = atol(argv[2]);
    long counts[NURLS] = {0}, chars = 0;
    /* read every URL once first: BPF cannot fault a page in, and a string on a page the process has not
       touched yet reads as <unreadable> (the first call would be counted under that, not its URL) */
    for (unsigned k = 0; k < NURLS; k++) chars += (long)strlen(urls[k]);
    printf("chars %ld\n", chars);
    for (long i = 0; i < n; i++) {
        int r = rand_r(&seed), p = r % 100;
        unsigned k = p < 40 ? 0 : p < 60 ? 1 : p < 70 ? 2 : p < 75 ? 3 : p < 78 ? 4
                   : 5 + (unsigned)(r / 100) % (NURLS - 5);
        long size = (long)(rand_r(&seed) % 200001) - 100000;
        visit(urls[k], size);
        counts[k]++;
        printf("size %ld\n", size);
    }
    for (unsigned k = 0; k < NURLS; k++) {
        printf("url ");
        for (const char *c = urls[k]; *c; c++) printf("%02x", (unsigned char)*c);
        printf(" %ld\n", counts[k]);
    }
    return 0;
}
"""
MAX_LEN = 64  # a C string key keeps MAX_LEN - 1 bytes


@pytest.fixture(scope="module")
def visitor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    need(gcc is not None, "gcc is needed to build the program")
    assert gcc is not None
    d = tmp_path_factory.mktemp("byarg")
    (d / "visit.c").write_text(SOURCE)
    subprocess.run([gcc, "-O2", "-g", "-o", str(d / "visit"), str(d / "visit.c")], check=True, timeout=120)
    return d / "visit"


def lines(stdout: str) -> tuple[list[dict[str, object]], list[str]]:
    """utrace's JSON objects (they have a "kind"), and the traced program's own lines (same stdout)."""
    objs, program = [], []
    for line in stdout.splitlines():
        obj = json.loads(line) if line.startswith("{") else None
        if isinstance(obj, dict) and "kind" in obj:
            objs.append(obj)
        else:
            program.append(line)
    assert objs and objs[-1]["kind"] == "summary", stdout[-2000:]
    return objs, program


def by_rows(objs: list[dict[str, object]], probe: str) -> tuple[dict[object, int], dict[str, object]]:
    rows = {o["value"]: int(o["count"]) for o in objs if o["kind"] == "by" and o["probe"] == probe}  # type: ignore[call-overload]
    (rest,) = [o for o in objs if o["kind"] == "by_rest" and o["probe"] == probe]
    return rows, rest


def buckets_of(values: list[int]) -> dict[tuple[int, int], int]:
    """The values counted per range of `value_slot_range`, found by search (not by the slot formula)."""
    ranges = [value_slot_range(s) for s in range(129)]
    out: Counter[tuple[int, int]] = Counter()
    for v in values:
        (r,) = [r for r in ranges if r[0] <= v <= r[1]]
        out[r] += 1
    return dict(out)


def hist_of(objs: list[dict[str, object]], probe: str) -> dict[tuple[int, int], int]:
    (h,) = [o for o in objs if o["kind"] == "hist" and o["probe"] == probe]
    assert h["unit"] == "value"
    return {(b["low"], b["high"]): b["count"] for b in h["buckets"]}  # type: ignore[attr-defined, union-attr]


def test_count_by_c_string_matches_the_programs_tally(visitor: Path) -> None:
    n = 3000
    sig = "visit(const char *url, long size)"
    p = run_utrace("native", str(visitor), sig, "--count", "--by", "url", "--json", "--max-len", str(MAX_LEN),
                   "--", str(visitor), "7", str(n), check=True)  # fmt: skip
    objs, program = lines(p.stdout)
    told: Counter[bytes] = Counter()
    for line in program:
        m = re.fullmatch(r"url ([0-9a-f]+) (\d+)", line)
        if m:
            told[bytes.fromhex(m.group(1))[: MAX_LEN - 1]] += int(m.group(2))  # the two long ones share a key
    assert sum(told.values()) == n and len(told) == 29
    rows, rest = by_rows(objs, "visit")
    got = {str(v).encode("utf-8", "surrogateescape"): c for v, c in rows.items()}
    assert len(got) == 20 and {k: told[k] for k in got} == got, (got, told)
    assert min(got.values()) >= max(c for k, c in told.items() if k not in got)  # the 20 most frequent
    assert sum(got.values()) + int(rest["count"]) == n and int(rest["values"]) == len(told) - 20  # type: ignore[call-overload]
    assert rest["lost"] == 0 and objs[-1]["lost"] == 0
    long = [o for o in objs if o["kind"] == "by" and str(o["value"]).startswith("https://long")]
    assert len(long) == 1 and long[0]["truncated"] is True and len(str(long[0]["value"])) == MAX_LEN - 1
    # text: the escape byte of the third URL reaches the terminal as an escape, never raw
    text = run_utrace("native", str(visitor), sig, "--count", "--by", "url", "--", str(visitor), "7", "300",
                      check=True).stdout  # fmt: skip
    assert "\x1b" not in text and r'"http://c.example/\u001b]0;pwned\u0007"' in text, text
    assert "visit by url: 300 calls, top 20 of 28 values" in text and "(8 other values)" in text
    assert uprobe_events() == ""


def test_hist_of_a_signed_argument_matches_the_printed_values(visitor: Path) -> None:
    n = 2000
    sig = "visit(const char *url, long size)"
    p = run_utrace("native", str(visitor), sig, "--hist=size", "--json", "--", str(visitor), "11", str(n), check=True)
    objs, program = lines(p.stdout)
    sizes = [int(m.group(1)) for line in program if (m := re.fullmatch(r"size (-?\d+)", line))]
    assert len(sizes) == n and min(sizes) < 0 < max(sizes)
    assert hist_of(objs, "visit") == buckets_of(sizes)


def test_usdt_hist_and_native_return_values_match_sdt_demos_printout(fixtures_built: Path) -> None:
    demo = str(fixtures_built / "c" / "sdt_demo")
    p = run_utrace("native", demo, "utrace_demo:tick", "--hist=arg2", "--json", "--", demo, "40", check=True)
    objs, program = lines(p.stdout)
    ticks = [int(m.group(1)) for line in program if (m := re.search(r" tick\(\d+,world-\d+,(-?\d+)\)", line))]
    assert len(ticks) == 40
    assert hist_of(objs, "utrace_demo:tick") == buckets_of(ticks)
    p = run_utrace("native", demo, "demo_add(int a, int b)", "--hist=ret", "--json", "--", demo, "40", check=True)
    objs, program = lines(p.stdout)
    sums = [int(m.group(1)) for line in program if (m := re.search(r" add\(\d+,\d+\)=(\d+)", line))]
    assert len(sums) == 40 and hist_of(objs, "demo_add (return)") == buckets_of(sums)


@pytest.mark.parametrize("suffix", ["", "-go1.24"])
def test_go_inlined_get_counted_per_url_as_httpget_prints_them(fixtures_built: Path, suffix: str) -> None:
    """net/http.Get is inlined into main.main: its url comes from DWARF location lists. Port 1 refuses
    at once; httpget prints one `GET <url> ...` line per call either way."""
    exe = fixtures_built / "go" / f"httpget{suffix}"
    need(exe.exists(), f"{exe} not built")
    urls = ["http://127.0.0.1:1/a"] * 3 + ["http://127.0.0.1:1/bb"] * 2 + ["http://127.0.0.1:1/c?x=1"]
    p = run_utrace("go", str(exe), "net/http.Get", "--count", "--by", "url", "--json", "--", str(exe), *urls,
                   timeout=180)  # fmt: skip
    objs, program = lines(p.stdout)
    told = Counter(m.group(1) for line in program if (m := re.match(r"GET (\S+) ", line)))
    assert sum(told.values()) == 6, program
    rows, rest = by_rows(objs, "net/http.Get")
    assert rows == dict(told) and rest["count"] == 0 and rest["values"] == 0


def test_go_hist_and_string_results_match_greets_printout(fixtures_built: Path) -> None:
    exe = str(fixtures_built / "go" / "greet")
    p = run_utrace("go", exe, "main.Greet", "--hist=n", "--json", "--", exe, "9", "1", timeout=180, check=True)
    objs, program = lines(p.stdout)
    ns = [int(v) for line in program for v in re.findall(r'Greet\("world",(-?\d+)\)', line)]
    assert len(ns) == 18 and hist_of(objs, "main.Greet") == buckets_of(ns)
    p = run_utrace("go", exe, "main.Greet", "--count", "--by", "ret.r0", "--json", "--", exe, "5", "1",
                   timeout=180, check=True)  # fmt: skip
    objs, program = lines(p.stdout)
    results = Counter(json.loads(v) for line in program for v in re.findall(r'\)=("[^"]*") err=', line))
    assert sum(results.values()) == 10
    rows, _rest = by_rows(objs, "main.Greet (return)")
    assert rows == dict(results)


def test_unknown_arg_lists_what_the_probe_has(fixtures_built: Path) -> None:
    exe = str(fixtures_built / "go" / "greet")
    p = run_utrace("go", exe, "main.Greet", "--count", "--by", "nam", "--", exe, "1", "1")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "no traced probe has an argument 'nam'; available: main.Greet: name, n" in p.stderr, p.stderr
    p = run_utrace("go", exe, "main.Greet", "--hist=name", "--", exe, "1", "1")
    assert p.returncode == 2 and "name of main.Greet is a string, and --hist=ARG needs an integer" in p.stderr


def test_a_full_map_counts_the_rest_as_lost(fixtures_built: Path) -> None:
    """hot(i, i + 1) for i = 0..N-1: N distinct values of i, more than the map holds. What it cannot
    count is lost, and says so; counted + lost is every call hot says it made."""
    hot = str(fixtures_built / "c" / "hot")
    n = 14000
    p = run_utrace("native", hot, "hot(long i, long j)", "--count", "--by", "i", "--json", "--", hot, str(n),
                   check=True)  # fmt: skip
    objs, program = lines(p.stdout)
    assert f"calls {n} sum" in program[0]
    rows, rest = by_rows(objs, "hot")
    assert len(rows) == 20 and set(rows.values()) == {1}
    counted = len(rows) + int(rest["count"])  # type: ignore[call-overload]
    assert counted == int(rest["values"]) + 20 == 10240  # type: ignore[call-overload]
    assert rest["lost"] == n - counted and objs[-1]["lost"] == n - counted
    text = run_utrace("native", hot, "hot(long i, long j)", "--count", "--by", "i", "--", hot, str(n)).stdout
    assert f"{n - 10240}  not counted: more than 10240 distinct values (map full)" in text, text


# --- PostgreSQL: query texts per backend, against the server's statement log ------------------------------


def test_postgres_query_texts_counted_as_the_server_logs_them(
    postgres: tuple[subprocess.Popen[bytes], Path, Path, Path],
) -> None:
    """`--count --by query` on postgresql:query__start (Debian's --enable-dtrace build), every backend
    followed: each statement text as many times as the server's log_statement=all lines have it."""
    proc, bindir, sock, log = postgres
    args = ["native", str(bindir / "postgres"), "postgresql:query__start", "--pid", str(proc.pid), "--follow",
            "--count", "--by", "query", "--json"]  # fmt: skip
    with Background(*args) as bg:
        bg.wait_attached()
        env = dict(os.environ, LD_LIBRARY_PATH=str(bindir.parents[3] / "lib/x86_64-linux-gnu"))
        for sql in ["SELECT 1"] * 3 + ["SELECT 2 + 2"] * 2 + ["SELECT 'tab\there'"]:
            subprocess.run(
                [str(bindir / "psql"), "-X", "-h", str(sock), "-U", "postgres", "-d", "postgres", "-Atc", sql],
                check=True, capture_output=True, env=env, timeout=60,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            logged = Counter(re.findall(r"^\d+ LOG:  statement: (.*)$", log.read_text(), re.M))
            if sum(logged.values()) >= 6 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        out, err, rc = bg.interrupt(settle=0.5)
    assert rc == 0, err
    assert sum(logged.values()) == 6, log.read_text()
    objs, _program = lines(out)
    rows, rest = by_rows(objs, "postgresql:query__start")
    assert rows == dict(logged) and rest["count"] == 0 and rest["lost"] == 0, (rows, logged)


def test_java_classes_counted_as_the_jvm_logs_them(java: str, demo_classes: str, tmp_path: Path) -> None:
    """`--count --by class` on class-load: the JVM's -Xlog:class+load has one line per class loaded; the
    counts per name (in Java's form, as events show them) and the total agree with it."""
    log = tmp_path / "class.log"
    p = run_utrace("java", "class-load", "--binary", binary(java), "--count", "--by", "class", "--json",
                   "--max-len", "512", "--", java,
                   f"-Xlog:class+load:file={log}", "-cp", demo_classes, "Demo")  # fmt: skip
    assert p.returncode == 0, p.stderr
    objs, program = lines(p.stdout)
    assert "loaded java.util.TreeMap" in program
    logged = Counter(XLOG_CLASS.findall(log.read_text()))
    rows, rest = by_rows(objs, "hotspot:class__loaded")
    assert len(rows) == 20 and all(logged[str(name)] == n for name, n in rows.items()), rows
    assert sum(rows.values()) + int(rest["count"]) == sum(logged.values())  # type: ignore[call-overload]
    assert int(rest["values"]) + 20 == len(logged) and rest["lost"] == 0  # type: ignore[call-overload]


OPENS_JS = """
const fs = require('fs'); const path = require('path');
const dir = fs.mkdtempSync(process.argv[2]);
const tally = {};
for (const n of ['a', 'a', 'a', 'bb', 'bb', 'c']) {
  const p = path.join(dir, n);
  fs.closeSync(fs.openSync(p, 'w'));
  tally[p] = (tally[p] || 0) + 1;
}
console.log(JSON.stringify(tally));
"""


def test_node_libuv_paths_counted_as_the_script_tallies_them(node_bin: str, tmp_path: Path) -> None:
    """uv_fs_open's path (typed by libuv's prototypes) per value: the script's own opens, as it counts
    them; node's own opens while it starts (its script, package.json lookups) come on top."""
    script = tmp_path / "opens.js"
    script.write_text(OPENS_JS)
    p = run_utrace("node", "uv_fs_open", "--count", "--by", "path", "--json", "--", node_bin, str(script),
                   str(tmp_path / "d-"), check=True)  # fmt: skip
    objs, program = lines(p.stdout)
    tally = json.loads(program[-1])
    assert sum(tally.values()) == 6
    rows, rest = by_rows(objs, "uv_fs_open")
    assert {k: v for k, v in rows.items() if str(k).startswith(str(tmp_path / "d-"))} == tally
    assert rows.get(str(script)) == 1 and rest["lost"] == 0


@pytest.mark.parametrize("max_len", [128, 4096])
@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_keyed_programs_pass_the_verifier(name: str, max_len: int) -> None:
    """Every keyed program of the unit tests, with hostile names and strings up to the largest
    --max-len, compiles with bcc and loads into the kernel (nothing attached)."""
    make, request = GOLDEN_CASES[name]
    specs = [
        replace(s, name=HOSTILE[3], module=HOSTILE[2], args=tuple(replace(a, max_len=max_len) for a in s.args))
        for s in make()
    ]
    kept, keyed, _notes = select(specs, request)
    program = render(kept, Options(aggregate=Aggregate.COUNT, keyed=keyed, fsbase_offset=0x1B48))
    assert HOSTILE[3] not in program.source
    with Tracer(program) as t:
        t.load()
        assert t._loaded is not None and len(t._loaded.programs) == len(program.functions)
