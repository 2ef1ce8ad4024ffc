"""Tracing real JVMs (Debian OpenJDK 17 and Temurin 25), checked against the JVM's own -Xlog records
and the Demo program's printout."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import BUILD, ROOT, Background, need, run_utrace, uprobe_events

pytestmark = pytest.mark.usefixtures("root_bpf")

JDK17 = "/usr/lib/jvm/java-17-openjdk-amd64"
TEMURIN25 = "/usr/lib/jvm/temurin-25-jdk-amd64"
XLOG_CLASS = re.compile(r"\[class,load\s*\] (\S+) source: ")
XLOG_PAUSE = re.compile(r"\[gc\s*\] GC\(\d+\) Pause Full \(System\.gc\(\)\) \S+ (\d+\.\d+)ms")
XLOG_EXIT = re.compile(r"JavaThread exiting \((?:name: \"[^\"]*\", )?tid: (\d+)\)")


@pytest.fixture(params=["openjdk-17", "temurin-25"])
def java(request: pytest.FixtureRequest) -> str:
    if request.param == "openjdk-17":
        need(os.path.exists(f"{JDK17}/bin/java"), f"{JDK17} missing (apt-get install openjdk-17-jdk-headless)")
        return f"{JDK17}/bin/java"
    if not os.path.exists(f"{TEMURIN25}/bin/java"):
        # skipped even in CI: it ships in the machine image, and no package registry here offers it
        pytest.skip(f"{TEMURIN25} is not on this machine")
    return f"{TEMURIN25}/bin/java"


@pytest.fixture(scope="session")
def demo_classes() -> str:
    if not (BUILD / "java" / "Demo.class").exists():
        subprocess.run([str(ROOT / "scripts" / "build-fixtures.sh"), str(BUILD)], check=True)
    need((BUILD / "java" / "Demo.class").exists(), "fixtures/java not built (javac missing?)")
    return str(BUILD / "java")


def events(stdout: str) -> tuple[list[dict[str, object]], dict[str, object], list[str]]:
    """JSON events, the summary, and the traced program's own lines (it shares utrace's stdout)."""
    objs, program = [], []
    for line in stdout.splitlines():
        if line.startswith("{"):
            objs.append(json.loads(line))
        else:
            program.append(line)
    assert objs and objs[-1]["kind"] == "summary", stdout[-500:]
    return objs[:-1], objs[-1], program


def args(ev: dict[str, object]) -> dict[str, object]:
    a = ev["args"]
    assert isinstance(a, dict)
    return a


def of(evs: list[dict[str, object]], probe: str) -> list[dict[str, object]]:
    return [e for e in evs if e["probe"] == f"hotspot:{probe}"]


def test_launch_sees_every_class_the_jvm_logs(java: str, demo_classes: str, tmp_path: Path) -> None:
    log = tmp_path / "class.log"
    p = run_utrace("java", "class-load", "--json", "--", java, f"-Xlog:class+load:file={log}", "-cp", demo_classes,
                   "Demo")  # fmt: skip
    assert p.returncode == 0, p.stderr
    evs, summary, program = events(p.stdout)
    logged = XLOG_CLASS.findall(log.read_text())
    names = [str(args(e)["class"]) for e in evs]
    assert summary["lost"] == 0 and summary["exit_code"] == 0
    assert names[0] == "java.lang.Object" == logged[0], "from the very first class the VM loads"
    assert sorted(names) == sorted(logged), set(names) ^ set(logged)
    assert {"Demo", "Demo$Worker", "java.util.TreeMap"} <= set(names)
    assert "loaded java.util.TreeMap" in program
    for e in evs:
        a = args(e)
        internal = str(a["internal"])
        assert "." not in internal.split("+")[0] and str(a["class"]) == internal.replace("/", ".").replace("+0x", "/0x")
        assert isinstance(a["shared"], bool) and isinstance(a["loader"], int)
    assert "utrace" not in uprobe_events()


def test_gc_durations_and_threads_match_the_jvm_log(java: str, demo_classes: str, tmp_path: Path) -> None:
    log = tmp_path / "gc.log"
    p = run_utrace("java", "gc", "thread", "--json", "--", java, f"-Xlog:gc,os+thread:file={log}", "-cp",
                   demo_classes, "Demo")  # fmt: skip
    assert p.returncode == 0, p.stderr
    evs, summary, program = events(p.stdout)
    text = log.read_text()
    assert summary["lost"] == 0

    # GC: one begin/end pair per System.gc() the program made, lasting what the JVM logged for it
    pauses_ms = [float(x) for x in XLOG_PAUSE.findall(text)]
    assert len(pauses_ms) == len([ln for ln in program if re.fullmatch(r"gc \d", ln)]) == 2
    ends = of(evs, "gc__end")
    assert len(of(evs, "gc__begin")) == len(ends) == 2
    for end, logged in zip(ends, pauses_ms, strict=True):
        assert args(end)["full"] is True
        got_ms = int(str(end["latency_ns"])) / 1e6
        assert abs(got_ms - logged) <= 0.5 + 0.25 * logged, (got_ms, logged)
    pool_ends = of(evs, "mem__pool__gc__end")
    assert len(pool_ends) == len(of(evs, "mem__pool__gc__begin")) > 0
    assert all("used_before" in args(e) and int(str(e["latency_ns"])) > 0 for e in pool_ends)
    assert any(str(args(e)["pool"]).endswith("Old Gen") for e in pool_ends)

    # Threads: the two the program says ran, with the OS thread ids the JVM logged as exiting
    workers = re.findall(r"^thread (worker-\d) put \d+$", "\n".join(program), re.M)
    assert sorted(workers) == ["worker-1", "worker-2"]
    exited = {int(t) for t in XLOG_EXIT.findall(text)}
    starts = {str(args(e)["thread"]): args(e) for e in of(evs, "thread__start")}
    stops = {str(args(e)["thread"]): args(e) for e in of(evs, "thread__stop")}
    for w in workers:
        assert starts[w]["daemon"] is False
        assert starts[w]["os_tid"] == stops[w]["os_tid"] and starts[w]["java_tid"] == stops[w]["java_tid"]
        assert starts[w]["os_tid"] in exited
    assert starts["Reference Handler"]["daemon"] is True


def test_method_probes_with_the_flag(java: str, demo_classes: str) -> None:
    p = run_utrace("java", "method:Demo", "--json", "--", java, "-XX:+DTraceMethodProbes", "-cp", demo_classes,
                   "Demo")  # fmt: skip
    assert p.returncode == 0, p.stderr
    evs, summary, program = events(p.stdout)
    assert summary["lost"] == 0
    entries = [str(args(e)["method"]) for e in of(evs, "method__entry")]
    returns = of(evs, "method__return")
    runs = sum(1 for ln in program if re.fullmatch(r"thread worker-\d put \d+", ln))
    assert entries.count("Demo.main(java.lang.String[])") == 1
    assert entries.count("Demo$Worker.run()") == runs == 2
    assert entries.count("Demo$Worker.<init>(java.lang.String, int, java.util.Map)") == 2
    assert all(m.startswith("Demo") for m in entries)  # the class filter ran in BPF
    assert len(returns) == len(entries)
    main_ret = next(e for e in returns if args(e)["method"] == "Demo.main(java.lang.String[])")
    inner = [int(str(e["latency_ns"])) for e in returns if e is not main_ret]
    assert all(0 < ns < int(str(main_ret["latency_ns"])) for ns in inner)


def test_several_long_class_prefixes_load_and_filter(java: str, demo_classes: str) -> None:
    """Two prefixes, one of 17 bytes: the byte-per-branch filter made the verifier give up (E2BIG)."""
    p = run_utrace("java", "method:Demo", "method:java.util.TreeMap", "--json", "--", java,
                   "-XX:+DTraceMethodProbes", "-cp", demo_classes, "Demo")  # fmt: skip
    assert p.returncode == 0, p.stderr
    evs, summary, program = events(p.stdout)
    assert summary["lost"] == 0
    entries = [args(e) for e in of(evs, "method__entry")]
    assert all(str(a["method"]).startswith(("Demo", "java.util.TreeMap")) for a in entries)  # filtered in BPF
    workers = {a["java_tid"] for a in entries if a["method"] == "Demo$Worker.run()"}
    puts = [int(n) for n in re.findall(r"^thread worker-\d put (\d+)$", "\n".join(program), re.M)]
    assert len(workers) == len(puts) == 2
    # each worker's map.put calls, as the program counts them (the JDK's own TreeMaps are used elsewhere)
    put = "java.util.TreeMap.put(java.lang.Object, java.lang.Object)"
    assert sum(1 for a in entries if a["method"] == put and a["java_tid"] in workers) == sum(puts)


def test_method_probes_without_the_flag_say_which_flag(java: str, demo_classes: str) -> None:
    p = run_utrace("java", "method", "--", java, "-cp", demo_classes, "Demo")
    assert p.returncode == 2
    (line,) = p.stderr.splitlines()
    assert line == ("utrace: error: method probes are off in this JVM: they need -XX:+DTraceMethodProbes "
                    "(a startup-only flag: add it to the java command)")  # fmt: skip
    assert "Extended" not in p.stderr


def start_demo(java: str, demo_classes: str, *jvm_args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([java, *jvm_args, "-cp", demo_classes, "Demo", "--wait"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == f"ready {proc.pid}\n", line
    return proc


def test_live_jvm_by_pid(java: str, demo_classes: str, tmp_path: Path, background: list[Background]) -> None:
    log = tmp_path / "live.log"
    proc = start_demo(java, demo_classes, f"-Xlog:class+load:file={log}")
    try:
        bg = Background("java", "--pid", str(proc.pid), "class-load", "gc", "thread", "--json")
        background.append(bg)
        bg.wait_attached()
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out_app, _ = proc.communicate(timeout=60)
        out, err, rc = bg.finish()
        assert rc == 0, err
        evs, summary, _ = events(out)
        assert summary["stopped_by"] == "target exited" and summary["lost"] == 0
        assert all(e["pid"] == proc.pid for e in evs)
        seen = [str(args(e)["class"]) for e in of(evs, "class__loaded")]
        logged = XLOG_CLASS.findall(log.read_text())
        # every class loaded after attaching: the JVM's list from the first one utrace saw
        first = min(logged.index(n) for n in seen)
        assert sorted(seen) == sorted(logged[first:])
        assert "Demo$Worker" in seen and "Demo" not in seen  # Demo was loaded before the wait
        assert len(of(evs, "gc__end")) == out_app.count("\ngc ") == 2
        assert {str(args(e)["thread"]) for e in of(evs, "thread__start")} >= {"worker-1", "worker-2"}
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert "utrace" not in uprobe_events()


def test_live_jvm_without_flag_reads_the_flag_from_the_jvm(java: str, demo_classes: str) -> None:
    """Launched with the flag through JAVA_TOOL_OPTIONS (not on its command line): read from memory."""
    env = dict(os.environ, JAVA_TOOL_OPTIONS="-XX:+DTraceAllocProbes")
    proc = subprocess.Popen([java, "-cp", demo_classes, "Demo", "--wait"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("ready")
        p = run_utrace("java", "--pid", str(proc.pid), "method", "alloc:Demo", "--dump-bpf")
        assert p.returncode == 0, p.stderr
        assert p.stderr.splitlines()[0] == ("utrace: method probes are off in this JVM: they need "
                                            "-XX:+DTraceMethodProbes (a startup-only flag: restart the JVM with it); "
                                            "not traced")  # fmt: skip
        from utrace.elf.usdt_notes import usdt_probes_for

        lib = os.path.join(os.path.dirname(os.path.dirname(java)), "lib", "server", "libjvm.so")
        allocs = [x for x in usdt_probes_for(lib) if x.name == "object__alloc"]
        assert p.stdout.count("int probe_") == len(allocs) > 0  # the alloc sites only, no method probes
    finally:
        proc.kill()
        proc.wait()
