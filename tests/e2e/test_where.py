"""`--where` and `method:Class.method` on real programs, checked against what the programs print about
the values they passed (and PostgreSQL's own statement log)."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.conftest import BUILD, ROOT, Background, need, run_utrace
from tests.e2e.test_follow import _logged_statements, _queries, postgres  # noqa: F401
from tests.e2e.test_jvm import demo_classes, java, on, sid_launchers  # noqa: F401

pytestmark = pytest.mark.usefixtures("root_bpf")

GREET = BUILD / "go" / "greet"
GREET_LINE = re.compile(r'Greet\("(\w*)",(-?\d+)\)="([^"]*)" err=')


def split(stdout: str) -> tuple[list[dict[str, object]], dict[str, object], list[str]]:
    """JSON objects, the summary, and the traced program's own lines (it shares utrace's stdout)."""
    objs, program = [], []
    for line in stdout.splitlines():
        obj = json.loads(line) if line.startswith("{") else None
        if isinstance(obj, dict) and "kind" in obj:
            objs.append(obj)
        else:
            program.append(line)
    assert objs and objs[-1]["kind"] == "summary", stdout[-2000:]
    return objs[:-1], objs[-1], program


def greet_calls(program: list[str]) -> list[tuple[str, int, str]]:
    """(name, n, result) of every Greet call the program says it made."""
    return [(m[0], int(m[1]), m[2]) for line in program for m in GREET_LINE.findall(line)]


def count_of(objs: list[dict[str, object]], probe: str) -> int:
    return sum(int(o["count"]) for o in objs if o["kind"] == "count" and o["probe"] == probe)  # type: ignore[call-overload]


@pytest.fixture
def greet() -> str:
    need(GREET.exists(), "fixtures/build/go/greet not built")
    return str(GREET)


def test_go_integer_predicate_counts_what_the_program_passed(greet: str) -> None:
    p = run_utrace("go", greet, "main.Greet", "--where", "n > 2 || n == -1", "--count", "--json", "--", greet, "6")
    assert p.returncode == 0, p.stderr
    objs, summary, program = split(p.stdout)
    calls = greet_calls(program)
    assert len(calls) == 12  # 1..6 and -1..-6
    assert count_of(objs, "main.Greet") == sum(1 for _, n, _ in calls if n > 2 or n == -1) == 5
    assert summary["lost"] == 0


def test_go_string_prefix_and_returns_after_a_passing_entry(greet: str) -> None:
    where = 'name ~ "wor*" && n < 0 && n >= -2 && goid == 1'
    p = run_utrace("go", greet, "main.Greet", "--ret", "--where", where, "--json", "--", greet, "4")
    assert p.returncode == 0, p.stderr
    objs, _summary, program = split(p.stdout)
    want = [(name, n, r) for name, n, r in greet_calls(program) if name.startswith("wor") and -2 <= n < 0]
    assert len(want) == 2
    entries = [o for o in objs if o["kind"] == "call"]
    returns = [o for o in objs if o["kind"] == "return"]
    assert [(o["args"]["name"], o["args"]["n"]) for o in entries] == [(a, b) for a, b, _ in want]  # type: ignore[index]
    # the returns of those calls only (an error for a negative count: r0 is ""), each with its latency
    assert [o["ret"]["r0"] for o in returns] == [r for _, _, r in want]  # type: ignore[index]
    assert all(isinstance(o["latency_ns"], int) for o in returns)
    nothing = run_utrace("go", greet, "main.Greet", "--where", 'name ~ "x*"', "--json", "--", greet, "3")
    assert nothing.returncode == 0, nothing.stderr
    assert split(nothing.stdout)[1]["events"] == 0


def test_go_goid_of_the_second_goroutine(greet: str) -> None:
    p = run_utrace("go", greet, "main.(*T).M", "--where", "goid != 1 && x == 1000", "--json", "--", greet, "2")
    assert p.returncode == 0, p.stderr
    objs, _summary, program = split(p.stdout)
    said = [int(g) for line in program for g in re.findall(r"^goroutine (\d+) T\{100\}\.M\(1000\)=1100$", line)]
    assert len(said) == 1
    assert [o["context"]["goid"] for o in objs] == said  # type: ignore[index]


def test_go_hist_with_a_predicate_counts_only_matching_calls(greet: str) -> None:
    p = run_utrace("go", greet, "main.Greet", "--hist", "--where", "n >= 3", "--json", "--", greet, "5")
    assert p.returncode == 0, p.stderr
    objs, _summary, program = split(p.stdout)
    n = sum(1 for _, v, _ in greet_calls(program) if v >= 3)
    assert n == 3
    hist = [o for o in objs if o["kind"] == "hist"]
    assert len(hist) == 1 and hist[0]["count"] == n
    assert count_of(objs, "main.Greet") == n and count_of(objs, "main.Greet (return)") == n


def test_cxx_member_arguments_and_stacks() -> None:
    geo = BUILD / "cpp" / "geo"
    need(geo.exists(), "fixtures/build/cpp/geo not built")
    where = "arg0 > 41 && this != 0"
    p = run_utrace("native", str(geo), "geo::canvas::draw", "--where", where, "--stack", "--json", "--", str(geo))
    assert p.returncode == 0, p.stderr
    objs, _summary, program = split(p.stdout)
    said = [(int(t, 16), int(n)) for line in program for t, n in re.findall(r"^draw this=(0x[0-9a-f]+) n=(\d+)$", line)]
    assert [n for _, n in said] == [41, 42, 43]
    # demangled signatures have types, not names: the int shows (and is named) as arg0, after `this`
    assert [(o["args"]["this"], o["args"]["arg0"]) for o in objs] == [s for s in said if s[1] > 41]  # type: ignore[index]
    assert all(o["stack"] for o in objs)
    # without DWARF nothing says whether draw takes `this`: refused, not guessed
    nodwarf = run_utrace("native", str(BUILD / "cpp" / "geo-nodwarf"), "geo::canvas::draw", "--where", "arg1 > 41")
    assert nodwarf.returncode == 2
    assert nodwarf.stderr.splitlines() == [
        "utrace: error: --where 'arg1 > 41': column 1: arg1 of geo::canvas::draw(int) is uncertain (no evidence "
        "whether geo::canvas::draw is a member function; no DWARF): not filtered on a value that may not be that "
        "argument (give the signature to make it certain)"
    ]


def test_usdt_query_text_prefix_matches_the_server_log(
    postgres: tuple[object, Path, Path, Path],  # noqa: F811
) -> None:
    """postgresql:query__start typed by the catalogue (query is a C string): only the statements that
    start with the prefix, exactly those the server logged."""
    proc, bindir, sock, log = postgres
    args = ["native", str(bindir / "postgres"), "postgresql:query__start", "--pid", str(proc.pid), "--follow"]  # type: ignore[attr-defined]
    with Background(*args, "--where", 'query ~ "SELECT 1*" || query == "SELECT 4 + 1"', "--json") as bg:
        bg.wait_attached()
        _queries(bindir, sock, 12)  # SELECT 0 + 1 ... SELECT 11 + 1
        _logged_statements(log, 12)
        out, err, rc = bg.interrupt(settle=0.5)
    assert rc == 0, err
    logged = re.findall(r"^\d+ LOG:  statement: (.*)$", log.read_text(), re.M)
    assert len(logged) == 12
    objs, _summary, _ = split(out)
    seen = [o["args"]["query"] for o in objs]  # type: ignore[index]
    assert seen == [q for q in logged if q.startswith("SELECT 1") or q == "SELECT 4 + 1"]
    assert len(seen) == 4  # 1 + 1, 10 + 1, 11 + 1, 4 + 1


# --- Java: method:Class.method and globs, against Demo's own lines --------------------------------------

PUT_LINE = re.compile(r"^thread worker-\d put (\d+)$", re.M)


def java_run(command: list[str], *probes: str) -> tuple[list[dict[str, object]], list[str]]:
    p = run_utrace("java", *probes, *on(command[0]), "--json", "--", *command, timeout=240)
    assert p.returncode == 0, p.stderr
    objs, summary, program = split(p.stdout)
    assert summary["lost"] == 0
    return [o for o in objs if o["probe"] == "hotspot:method__entry"], program


def check_methods(command: list[str]) -> None:
    entries, program = java_run(command, "method:java.util.TreeMap.put", "method:Demo$Worker.*", "method:Demo.ma*")
    puts = [int(n) for n in PUT_LINE.findall("\n".join(program))]
    assert len(puts) == 2 and sum(puts) == 10
    names = [str(o["args"]["method"]) for o in entries]  # type: ignore[index]
    # only those methods: TreeMap.put (both overloads), every method of Demo$Worker, Demo.main
    assert all(n.startswith(("java.util.TreeMap.put(", "Demo$Worker.", "Demo.main(")) for n in names), set(names)
    assert names.count("Demo.main(java.lang.String[])") == 1
    workers = {o["args"]["java_tid"] for o in entries if o["args"]["method"] == "Demo$Worker.run()"}  # type: ignore[index]
    assert len(workers) == len(puts)
    assert names.count("Demo$Worker.<init>(java.lang.String, int, java.util.Map)") == len(puts)
    two = "java.util.TreeMap.put(java.lang.Object, java.lang.Object)"
    assert sum(1 for o in entries if o["args"]["method"] == two and o["args"]["java_tid"] in workers) == sum(puts)  # type: ignore[index]
    # a glob with the * in the class part: sub-packages and nested classes too, one method name
    entries, program = java_run(command, "method:java.util.*Map.put", "method:*$Worker.run")
    names = [str(o["args"]["method"]) for o in entries]  # type: ignore[index]
    assert all(re.fullmatch(r"java\.util\.\S*Map\.put\(.*\)|\S*\$Worker\.run\(\)", n) for n in names), set(names)
    workers = {o["args"]["java_tid"] for o in entries if o["args"]["method"] == "Demo$Worker.run()"}  # type: ignore[index]
    assert len(workers) == 2
    assert sum(1 for o in entries if o["args"]["method"] == two and o["args"]["java_tid"] in workers) == 10  # type: ignore[index]
    assert any(n.startswith("java.util.HashMap.put(") for n in names)  # the JVM's own start-up puts


def test_java_method_exact_and_globs(java: str, demo_classes: str) -> None:  # noqa: F811
    check_methods([java, "-cp", demo_classes, "Demo", "5"])


def test_java_method_exact_and_globs_jdk21(demo_classes: str, tmp_path: Path) -> None:  # noqa: F811
    check_methods([sid_launchers(21, tmp_path), "-cp", demo_classes, "Demo", "5"])


def test_java_where_on_class_and_method_names(demo_classes: str) -> None:  # noqa: F811
    jdk17 = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
    need(Path(jdk17).exists(), "openjdk-17 missing")
    entries, program = java_run(
        [jdk17, "-cp", demo_classes, "Demo", "4"],
        "method:java.util.TreeMap",
        "--where",
        'class == "java.util.TreeMap" && method == "put" && signature ~ "(Ljava/lang/Object;Ljava/lang/Object;)*"',
    )
    names = Counter(str(o["args"]["method"]) for o in entries)  # type: ignore[index]
    assert set(names) == {"java.util.TreeMap.put(java.lang.Object, java.lang.Object)"}
    assert names.most_common(1)[0][1] >= sum(int(n) for n in PUT_LINE.findall("\n".join(program))) == 8


def test_node_libuv_path_prefix_and_flag_bits(node_bin: str) -> None:
    """uv_fs_open(loop, req, path, flags, mode, cb) from libuv's prototypes: opens under the script's own
    temporary folder, and those for writing (O_WRONLY), counted in the kernel against the script's counts."""
    fsops = str(ROOT / "fixtures" / "node" / "fsops.js")
    tmp = os.environ.get("TMPDIR", "/tmp").rstrip("/")
    counts = []
    for where in (f'path ~ "{tmp}/utrace-fsops-*"', f'path ~ "{tmp}/utrace-fsops-*" && (flags & 3) == 1'):
        p = run_utrace(
            "node", "uv_fs_open", "--count", "--json", "--where", where, "--", node_bin, fsops, "--files", "4"
        )
        assert p.returncode == 0, p.stderr
        objs, _summary, program = split(p.stdout)
        want = json.loads(program[-1])
        counts.append(count_of(objs, "uv_fs_open"))
    assert counts == [want["open"], want["write"]] == [8, 4]


@pytest.mark.parametrize("aggregate", ["none", "hist"])
def test_the_largest_predicates_pass_the_verifier(aggregate: str) -> None:
    """Every string test on every kind of string at the longest constants allowed (hostile bytes in them),
    with integers, the thread name and a return after its entry: bcc compiles it, the kernel loads it."""
    from dataclasses import replace

    from utrace.app.where import apply_where
    from utrace.bpf.backend import Tracer
    from utrace.model import ArgKind, ArgSpec, ProbeKind, ProbeSpec, Reg
    from utrace.probes.codegen import Aggregate, Options, render

    args = (
        ArgSpec("name", ArgKind.CSTR, Reg("rdi")),
        ArgSpec("url", ArgKind.PTRLEN_STR, Reg("rsi"), length=Reg("rdx"), length_kind=ArgKind.S32),
        ArgSpec("n", ArgKind.S16, Reg("rcx")),
    )
    entry = ProbeSpec(name="f", module="/m", offset=0, kind=ProbeKind.ENTRY, args=args, pair="f")
    ret = ProbeSpec(name="f", module="/m", offset=0, kind=ProbeKind.RETURN, latency=True, pair="f")
    evil = '\\"); } int evil(void) { return 0; } //' + "y" * 80  # 119 bytes once unescaped
    for where in (
        f'url ~ "{evil}*" || name == "{evil}" && n < -3',
        f'url ~ "*{evil}" && (n & 0x10) != 0 || !(url == "a" || url != "b")',
        f'url ~ "{evil[:60]}*{evil[:60]}"',
        f'name ~ "{evil}*" && comm ~ "py*" || comm != "x" && pid > 1 && tid != 2 && name != "z"',
        f'url ~ "{evil}*" || name == "{evil}" || url == "{evil}"',
        f'url ~ "*{"z" * 127}" || name == "{"z" * 128}" || url != "{"z" * 128}"',  # 3 x 128: the most allowed
    ):
        specs = apply_where(where, [entry, ret])
        opts = Options(aggregate=Aggregate.HIST if aggregate == "hist" else Aggregate.NONE)
        program = render([*specs, replace(specs[0], name="g", pair="")], opts)
        assert "evil" not in program.source
        with Tracer(program) as t:
            t.load()
            assert t._loaded is not None and len(t._loaded.programs) == len(program.functions) == 3


def test_node_handle_type_by_its_name(node_bin: str, tmp_path: Path) -> None:
    """uv_listen's handle type is shown by name (libuv's uv_handle_type): `type == "pipe"` picks the Unix
    socket server of two the script starts, the one the script says it started on a path."""
    sock = tmp_path / "s.sock"
    script = (
        "const net = require('net');"
        "const a = net.createServer().listen(0, '127.0.0.1', () => {"
        f" const b = net.createServer().listen({str(sock)!r}, () => {{"
        " console.log('pipe ' + b.address() + ' tcp ' + a.address().port); a.close(); b.close(); }); });"
    )
    p = run_utrace("node", "uv_listen", "--where", 'type == "pipe"', "--json", "--", node_bin, "-e", script)
    assert p.returncode == 0, p.stderr
    objs, _summary, program = split(p.stdout)
    assert program == [f"pipe {sock} tcp " + program[0].rsplit(" ", 1)[-1]]
    assert [(o["probe"], o["args"]["type"]) for o in objs] == [("uv_listen", "pipe")]  # type: ignore[index]
