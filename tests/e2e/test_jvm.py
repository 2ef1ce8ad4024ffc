"""Tracing real JVMs (Debian OpenJDK 17, Temurin 25, Debian sid's OpenJDK 21 and 26), checked against the
JVM's own -Xlog records, jcmd and the Demo program's printout."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import BUILD, ROOT, Background, need, run_utrace, uprobe_events, utrace_cmd

pytestmark = pytest.mark.usefixtures("root_bpf")

JDK17 = "/usr/lib/jvm/java-17-openjdk-amd64"
TEMURIN25 = "/usr/lib/jvm/temurin-25-jdk-amd64"
XLOG_CLASS = re.compile(r"\[class,load\s*\] (\S+) source: ")
XLOG_PAUSE = re.compile(r"\[gc\s*\] GC\(\d+\) Pause Full \(System\.gc\(\)\) \S+ (\d+\.\d+)ms")
XLOG_EXIT = re.compile(r"JavaThread exiting \((?:name: \"[^\"]*\", )?tid: (\d+)\)")

# Debian sid's OpenJDKs (scripts/fetch-debian-jdk.sh MAJOR), run through sid's own loader (they need glibc 2.38)
SID = Path(os.environ.get("UTRACE_CACHE", Path.home() / ".cache" / "utrace")) / "realworld"
SID_LIB = "usr/lib/x86_64-linux-gnu"


def sid_jdk(major: int) -> Path:
    return SID / f"debian-jdk{major}" / "root" / "usr" / "lib" / "jvm" / f"java-{major}-openjdk-amd64"


def sid_command(major: int, tool: str) -> list[str]:
    """The loader of sid's libc6 running `tool` of sid's OpenJDK `major`."""
    jdk = sid_jdk(major)
    need((jdk / "bin" / tool).exists(), f"{jdk} missing (scripts/fetch-debian-jdk.sh {major})")
    lib = SID / f"debian-jdk{major}" / "root" / SID_LIB
    return [str(lib / "ld-linux-x86-64.so.2"), "--library-path", f"{lib}:{jdk}/lib:{jdk}/lib/server",
            str(jdk / "bin" / tool)]  # fmt: skip


SID_LAUNCHERS: dict[str, str] = {}  # a loader script standing for a sid JDK's bin/java -> that JDK's home


def sid_launchers(major: int, where: Path) -> str:
    """bin/java and bin/jcmd scripts that run sid's OpenJDK `major` through its loader (as one would install
    a newer JDK on an older system); their folder is no JAVA_HOME, so utrace is told the JDK (--binary)."""
    bin_dir = where / f"openjdk-{major}-sid" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in ("java", "jcmd"):
        script = bin_dir / tool
        script.write_text("#!/bin/sh\nexec " + " ".join(sid_command(major, tool)) + ' "$@"\n')
        script.chmod(0o755)
    SID_LAUNCHERS[str(bin_dir / "java")] = str(sid_jdk(major))
    return str(bin_dir / "java")


def binary(java: str) -> str:
    """What --binary names for this java: the launcher itself, or the sid JDK its loader script runs."""
    return SID_LAUNCHERS.get(java, java)


def on(java: str) -> list[str]:
    """The options a launch needs to trace this java: none when the command is the JDK's own launcher."""
    return ["--binary", SID_LAUNCHERS[java]] if java in SID_LAUNCHERS else []


def feature_version(java: str) -> int:
    home = SID_LAUNCHERS.get(java) or os.path.dirname(os.path.dirname(java))
    (version,) = re.findall(r'^JAVA_VERSION="(\d+)', Path(home, "release").read_text(), re.M)
    return int(version)


@pytest.fixture(params=["openjdk-17", "temurin-25", "openjdk-26-sid"])
def java(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "openjdk-17":
        need(os.path.exists(f"{JDK17}/bin/java"), f"{JDK17} missing (apt-get install openjdk-17-jdk-headless)")
        return f"{JDK17}/bin/java"
    if request.param == "openjdk-26-sid":
        return sid_launchers(26, tmp_path_factory.getbasetemp())
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
    p = run_utrace("java", "class-load", *on(java), "--json", "--", java, f"-Xlog:class+load:file={log}", "-cp",
                   demo_classes, "Demo")  # fmt: skip
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
    p = run_utrace("java", "gc", "thread", *on(java), "--json", "--", java, f"-Xlog:gc,os+thread:file={log}", "-cp",
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
    p = run_utrace("java", "method:Demo", *on(java), "--json", "--", java, "-XX:+DTraceMethodProbes", "-cp",
                   demo_classes, "Demo")  # fmt: skip
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
    p = run_utrace("java", "method:Demo", "method:java.util.TreeMap", *on(java), "--json", "--", java,
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


LAUNCH_NOTE = "utrace: the command runs with -XX:+DTraceMethodProbes added to JAVA_TOOL_OPTIONS (needed by {})"
PUT = "java.util.TreeMap.put(java.lang.Object, java.lang.Object)"


def check_every_call(stdout: str) -> None:
    """Every call the Demo program says it made, seen with method:Demo and method:java.util.TreeMap."""
    evs, summary, program = events(stdout)
    assert summary["lost"] == 0 and summary["exit_code"] == 0
    entries = [args(e) for e in of(evs, "method__entry")]
    assert all(str(a["method"]).startswith(("Demo", "java.util.TreeMap")) for a in entries)
    assert [a["method"] for a in entries].count("Demo.main(java.lang.String[])") == 1
    puts = [int(n) for n in re.findall(r"^thread worker-\d put (\d+)$", "\n".join(program), re.M)]
    workers = {a["java_tid"] for a in entries if a["method"] == "Demo$Worker.run()"}
    assert len(workers) == len(puts) == 2
    assert sum(1 for a in entries if a["method"] == PUT and a["java_tid"] in workers) == sum(puts) == 10
    assert len(of(evs, "method__return")) == len(entries)


def test_launch_without_flags_adds_them_and_sees_every_call(java: str, demo_classes: str) -> None:
    p = run_utrace("java", "method:Demo", "method:java.util.TreeMap", *on(java), "--json", "--", java, "-cp",
                   demo_classes, "Demo", "5")  # fmt: skip
    assert p.returncode == 0, p.stderr
    notes = [ln for ln in p.stderr.splitlines() if ln.startswith("utrace:") and "attached" not in ln]
    assert notes == [LAUNCH_NOTE.format("method:Demo, method:java.util.TreeMap")]
    check_every_call(p.stdout)


def write_wrapper(tmp_path: Path, java: str, body: str = "") -> str:
    """A launcher script as ant, mvn or gradle ship: some shell, then `exec java`."""
    script = tmp_path / "launcher"
    script.write_text(f'#!/bin/sh\n{body}exec "{java}" "$@"\n')
    script.chmod(0o755)
    return str(script)


def test_launch_through_a_wrapper_script_keeps_the_users_tool_options(
    java: str, demo_classes: str, tmp_path: Path
) -> None:
    log = tmp_path / "class.log"
    env = dict(os.environ, JAVA_TOOL_OPTIONS=f"-Xlog:class+load:file={log}")  # the user's own, kept
    cmd = utrace_cmd("java", "method:Demo", "method:java.util.TreeMap", "--binary", binary(java), "--json", "--",
                     write_wrapper(tmp_path, java), "-cp", demo_classes, "Demo", "5")  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr
    assert LAUNCH_NOTE.format("method:Demo, method:java.util.TreeMap") in p.stderr.splitlines()
    assert "warning" not in p.stderr
    check_every_call(p.stdout)
    assert {"Demo", "Demo$Worker"} <= set(XLOG_CLASS.findall(log.read_text()))  # its options still applied


def test_launch_through_a_script_that_forks_java_with_follow(java: str, demo_classes: str, tmp_path: Path) -> None:
    script = tmp_path / "forks"
    script.write_text(f'#!/bin/sh\n"{java}" "$@"\necho "wrapper done"\n')  # java runs as the script's child
    script.chmod(0o755)
    p = run_utrace("java", "method:Demo", "method:java.util.TreeMap", "--binary", binary(java), "--follow", "--json",
                   "--", str(script), "-cp", demo_classes, "Demo", "5")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "warning" not in p.stderr
    check_every_call(p.stdout)
    assert "wrapper done" in p.stdout


def test_launch_through_a_wrapper_that_clears_tool_options_says_so(
    java: str, demo_classes: str, tmp_path: Path
) -> None:
    wrapper = write_wrapper(tmp_path, java, "unset JAVA_TOOL_OPTIONS\n")
    # 100000 entries per worker: the JVM runs on for a while after its start-up (the check is not a race)
    p = run_utrace("java", "method:Demo", "--binary", binary(java), "--json", "--", wrapper, "-cp", demo_classes,
                   "Demo", "100000")  # fmt: skip
    assert p.returncode == 0, p.stderr
    evs, summary, program = events(p.stdout)
    assert summary["exit_code"] == 0 and "done" in program
    assert not of(evs, "method__entry")  # it ran, and its method probes stayed off
    warnings = [ln for ln in p.stderr.splitlines() if ln.startswith("utrace: warning:")]
    launched = re.search(r"\(launched pid (\d+)\)", p.stderr)
    assert launched is not None, p.stderr
    pid = launched.group(1)  # the wrapper exec'd java: the same process
    want = re.compile(
        rf"utrace: warning: the JVM \(pid {pid}\) came up without -XX:\+DTraceMethodProbes \(JAVA_TOOL_OPTIONS did "
        r"not reach it, or its options turn it off\): method:Demo will show no events from it; add "
        r"-XX:\+DTraceMethodProbes to its java command"
    )
    assert len(warnings) == 2 and warnings[0] == warnings[1], p.stderr  # when found, and again at the end
    assert want.fullmatch(warnings[0]), warnings[0]
    assert summary["warnings"] == [warnings[0].removeprefix("utrace: warning: ")]  # and in the JSON summary


def test_launch_of_another_jdk_than_the_traced_one_says_so(demo_classes: str, tmp_path: Path) -> None:
    """The probes sit on JDK 17's libjvm.so (--binary), the wrapper runs Temurin 25: named, not silent."""
    need(os.path.exists(f"{JDK17}/bin/java"), f"{JDK17} missing (apt-get install openjdk-17-jdk-headless)")
    if not os.path.exists(f"{TEMURIN25}/bin/java"):
        pytest.skip(f"{TEMURIN25} is not on this machine")
    wrapper = write_wrapper(tmp_path, f"{TEMURIN25}/bin/java")
    p = run_utrace("java", "method:Demo", "--binary", JDK17, "--json", "--", wrapper, "-cp", demo_classes, "Demo")
    assert p.returncode == 0, p.stderr
    evs, summary, program = events(p.stdout)
    assert summary["exit_code"] == 0 and "done" in program and not evs
    warnings = [ln for ln in p.stderr.splitlines() if ln.startswith("utrace: warning:")]
    lib25 = os.path.realpath(f"{TEMURIN25}/lib/server/libjvm.so")
    assert len(warnings) == 2 and warnings[0] == warnings[1], p.stderr
    assert f"runs {lib25}, not {os.path.realpath(JDK17)}/lib/server/libjvm.so" in warnings[0]
    assert warnings[0].endswith(f"(give --binary {lib25})")


def test_launch_through_maven_sees_its_main(tmp_path: Path) -> None:
    """A launcher built by others: Debian's /usr/bin/mvn, a shell script that ends in `exec java`."""
    need(shutil.which("mvn") is not None, "mvn is not on this machine (make test installs Debian's maven)")
    trace = tmp_path / "trace.json"  # mvn ends its output with an escape sequence and no newline
    p = run_utrace("java", "method:org.apache.maven.cli.MavenCli", "--json", "-o", str(trace), "--", "mvn",
                   "--version")  # fmt: skip
    assert p.returncode == 0, p.stderr
    evs, summary, _ = events(trace.read_text())
    assert summary["lost"] == 0 and summary["exit_code"] == 0
    assert re.search(r"^\S*Apache Maven \d", p.stdout, re.M), p.stdout  # it ran (and says so, in colour)
    main = "org.apache.maven.cli.MavenCli.main(java.lang.String[], org.codehaus.plexus.classworlds.ClassWorld)"
    assert [args(e)["method"] for e in of(evs, "method__entry")].count(main) == 1
    assert [args(e)["method"] for e in of(evs, "method__return")].count(main) == 1
    assert "warning" not in p.stderr


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

        lib = os.path.join(SID_LAUNCHERS.get(java) or os.path.dirname(os.path.dirname(java)), "lib", "server",
                           "libjvm.so")  # fmt: skip
        allocs = [x for x in usdt_probes_for(lib) if x.name == "object__alloc"]
        assert p.stdout.count("int probe_") == len(allocs) > 0  # the alloc sites only, no method probes
    finally:
        proc.kill()
        proc.wait()


def test_launch_check_waits_while_the_loader_maps_libjvm(java: str) -> None:
    """While ld.so maps libjvm.so, the library's whole span is first one read-only mapping of the file: the
    addresses of _init_completed and the flags then hold file bytes ("started", "flag off" in these JDKs),
    which must not be taken for a JVM that came up without the flag. A process mapping the file the same way
    stands for that moment."""
    from utrace.runtimes.jvm import INIT_COMPLETED, LaunchFlags

    lib = os.path.realpath(os.path.join(SID_LAUNCHERS.get(java) or os.path.dirname(os.path.dirname(java)), "lib",
                                        "server", "libjvm.so"))  # fmt: skip
    check = LaunchFlags(lib, {"DTraceMethodProbes": ["method:Demo"]})
    data = Path(lib).read_bytes()
    assert data[check.where[INIT_COMPLETED]] != 0 and data[check.where["DTraceMethodProbes"]] == 0  # the premise
    code = ("import mmap, sys; f = open(sys.argv[1], 'rb'); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); "
            "print('ready', flush=True); sys.stdin.read()")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code, lib],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        assert check.check(proc.pid) is None and not check.settled(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def jvm_flag(java: str, pid: int, flag: str) -> str:
    """The flag's value as the JVM itself reports it (`jcmd PID VM.flags -all`)."""
    jcmd = os.path.join(os.path.dirname(java), "jcmd")
    out = subprocess.run([jcmd, str(pid), "VM.flags", "-all"], capture_output=True, text=True, timeout=60).stdout
    (value,) = [ln.split()[3] for ln in out.splitlines() if ln.split()[1:2] == [flag]]
    return value


def release(proc: subprocess.Popen[str]) -> str:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.endswith("done\n"), out
    return out


def test_set_flags_in_a_running_jvm(java: str, demo_classes: str, background: list[Background]) -> None:
    """--set-flags: JDK 17 gets -XX:+DTraceMethodProbes while traced (as jcmd reports it) and every call the
    program then makes is seen; JDK 25 and 26 (which generate the DTrace calls at start-up only) are refused."""
    major = feature_version(java)
    proc = start_demo(java, demo_classes)
    try:
        bg = Background("java", "--pid", str(proc.pid), "--set-flags", "method:Demo", "--json")
        background.append(bg)
        if major >= 24:
            out, err, rc = bg.finish()
            assert rc == 2 and err.splitlines() == [
                f"utrace: error: --set-flags: pid {proc.pid} runs JDK {major}: since JDK 24 the JVM generates its "
                "method and allocation DTrace calls only when the flags are on at start-up (JDK-8335946), and utrace "
                "sets flags only in older JDKs: restart it with -XX:+DTraceMethodProbes"
            ]
            assert jvm_flag(java, proc.pid, "DTraceMethodProbes") == "false"
            release(proc)
            return
        bg.wait_attached()
        assert bg.err_lines[0].startswith(
            f"utrace: --set-flags: set -XX:+DTraceMethodProbes in the running JVM (pid {proc.pid}) until utrace ends; "
            "code the JIT compiled before now fires no method probes until it is compiled again"
        )
        assert jvm_flag(java, proc.pid, "DTraceMethodProbes") == "true"
        program = release(proc)
        out, err, rc = bg.finish()
        assert rc == 0, err
        evs, summary, _ = events(out)
        assert summary["stopped_by"] == "target exited" and summary["lost"] == 0
        entries = [str(args(e)["method"]) for e in of(evs, "method__entry")]
        runs = re.findall(r"^thread worker-\d put \d+$", program, re.M)
        assert entries.count("Demo$Worker.run()") == len(runs) == 2
        assert entries.count("Demo$Worker.<init>(java.lang.String, int, java.util.Map)") == 2
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_set_flags_are_turned_off_again_when_utrace_stops(demo_classes: str, background: list[Background]) -> None:
    # JDK 17 only: on JDK 25 --set-flags is refused before anything is written (test_set_flags_in_a_running_jvm)
    java = f"{JDK17}/bin/java"
    need(os.path.exists(java), f"{JDK17} missing (apt-get install openjdk-17-jdk-headless)")
    proc = start_demo(java, demo_classes)
    try:
        for stop in (signal.SIGINT, signal.SIGTERM):
            bg = Background("java", "--pid", str(proc.pid), "--set-flags", "method:Demo", "monitor")
            background.append(bg)
            bg.wait_attached()
            assert jvm_flag(java, proc.pid, "DTraceMethodProbes") == "true"
            assert jvm_flag(java, proc.pid, "DTraceMonitorProbes") == "true"
            bg.proc.send_signal(stop)
            _, err, rc = bg.finish()
            assert rc == 0, err
            assert jvm_flag(java, proc.pid, "DTraceMethodProbes") == "false"
            assert jvm_flag(java, proc.pid, "DTraceMonitorProbes") == "false"
        release(proc)  # and it runs on as before
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_jdk21_launched_through_its_loader_script(demo_classes: str, tmp_path: Path) -> None:
    """A wrapper that execs the dynamic loader, which runs java: JAVA_TOOL_OPTIONS still reaches the JVM."""
    java = sid_launchers(21, tmp_path)
    p = run_utrace("java", "method:Demo", "method:java.util.TreeMap", *on(java), "--json", "--", java, "-cp",
                   demo_classes, "Demo", "5")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert LAUNCH_NOTE.format("method:Demo, method:java.util.TreeMap") in p.stderr.splitlines()
    assert "warning" not in p.stderr
    check_every_call(p.stdout)


def test_jdk21_set_flags_and_back(demo_classes: str, background: list[Background]) -> None:
    """--set-flags on JDK 21 (before JDK-8335946): the calls made after it are seen; SIGINT puts it back."""
    cmd = sid_command(21, "java")
    jcmd = sid_command(21, "jcmd")

    def flag(pid: int) -> str:
        out = subprocess.run([*jcmd, str(pid), "VM.flags", "-all"], capture_output=True, text=True, timeout=60).stdout
        (value,) = [ln.split()[3] for ln in out.splitlines() if ln.split()[1:2] == ["DTraceMethodProbes"]]
        return value

    for stop_early in (False, True):
        proc = subprocess.Popen([*cmd, "-cp", demo_classes, "Demo", "--wait"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdout.readline() == f"ready {proc.pid}\n"
            assert flag(proc.pid) == "false"
            bg = Background("java", "--pid", str(proc.pid), "--set-flags", "method:Demo", "--json")
            background.append(bg)
            bg.wait_attached()
            assert flag(proc.pid) == "true"
            if stop_early:
                bg.proc.send_signal(signal.SIGINT)
                _, err, rc = bg.finish()
                assert rc == 0, err
                assert flag(proc.pid) == "false"
                release(proc)
                continue
            program = release(proc)
            out, err, rc = bg.finish()
            assert rc == 0, err
            evs, summary, _ = events(out)
            assert summary["lost"] == 0
            entries = [str(args(e)["method"]) for e in of(evs, "method__entry")]
            runs = re.findall(r"^thread worker-\d put \d+$", program, re.M)
            assert entries.count("Demo$Worker.run()") == len(runs) == 2
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
