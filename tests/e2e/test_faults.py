"""Faults around a trace: the tracer SIGKILLed; the traced process exiting, exec'ing, forking;
many threads; several processes of one binary; the binary replaced on disk; a target in its own
mount and PID namespaces. Every check is against the fixture's own printout (fixtures/c/faults.c),
`nm`/`objdump` and the kernel's /proc, never against numbers written here.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Background, load_base, need, uprobe_events, utrace_cmd
from tests.e2e.test_tracing import events, release, start_waiting

pytestmark = pytest.mark.usefixtures("root_bpf")

FUNC = "faults_step"
DONE = re.compile(r"done pid (\d+) who (\d+) calls (\d+) sum (\d+)")
STEP = re.compile(r"step (\d+) (\d+) = (\d+)")
THREAD = re.compile(r"thread (\d+) tid (\d+) calls (\d+) sum (\d+)")


def step_value(who: int, i: int) -> int:
    """What faults_step(who, i) returns, by its specification in faults.c."""
    return who * 1000003 + 7 * i


@pytest.fixture
def faults(fixtures_built: Path) -> str:
    exe = fixtures_built / "c" / "faults"
    need(exe.exists(), "fixtures/build/c/faults not built (scripts/build-fixtures.sh)")
    return str(exe)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started: killed (by their own pid) if still running at the end."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def calls_of(evs: list[dict[str, object]]) -> list[tuple[int, int]]:
    """(who, i) of each faults_step call event, in order."""
    out = []
    for e in evs:
        if e["probe"] == FUNC and e["kind"] == "call":
            args = e["args"]
            assert isinstance(args, dict)
            out.append((int(args["arg0"]), int(args["arg1"])))
    return out


def function_address(exe: str) -> int:
    """faults_step's address, as `nm` reads it."""
    nm = subprocess.run(["nm", exe], capture_output=True, text=True, check=True).stdout
    rows = [ln.split() for ln in nm.splitlines()]
    return next(int(r[0], 16) for r in rows if len(r) == 3 and r[2] == FUNC)


def file_bytes(exe: str, address: int, n: int) -> bytes:
    """The first `n` bytes of the instruction stream at `address`, as `objdump -d` decodes them from the file."""
    out = subprocess.run(
        ["objdump", "-d", f"--start-address={address:#x}", f"--stop-address={address + 32:#x}", exe],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    hexes: list[str] = []
    for line in out.splitlines():
        cols = line.split("\t")
        if len(cols) >= 2 and re.fullmatch(r"\s*[0-9a-f]+:", cols[0]):
            hexes += cols[1].split()
    return bytes(int(h, 16) for h in hexes[:n])


def mem_bytes(pid: int, address: int, n: int) -> bytes:
    with open(f"/proc/{pid}/mem", "rb") as f:
        f.seek(address)
        return f.read(n)


def json_lines_until(bg: Background, n: int, timeout: float = 60) -> tuple[list[dict[str, object]], str]:
    """Read utrace's stdout until `n` JSON events have arrived (proof that tracing is under way);
    also return the other lines read (a launched program's own output shares that stdout)."""
    assert bg.proc.stdout is not None
    got: list[dict[str, object]] = []
    other: list[str] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        line = bg.proc.stdout.readline()
        if not line:
            break
        if line.startswith("{"):
            got.append(json.loads(line))
        else:
            other.append(line)
    assert len(got) >= n, f"only {len(got)} events before utrace stopped"
    return got, "".join(other)


def set_subreaper(on: bool) -> None:
    """Become the parent of orphans (a program whose launcher, utrace, was killed), to reap them."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(36, int(on), 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER


def check_loop_printout(out: str, who: int, n: int) -> None:
    """The loop's own printout is complete and every value the program received is right."""
    steps = [tuple(map(int, m)) for m in STEP.findall(out)]
    assert steps == [(who, i, step_value(who, i)) for i in range(1, n + 1)], out[-400:]
    done = DONE.search(out)
    assert done is not None, out[-400:]
    assert int(done[4]) == sum(step_value(who, i) for i in range(1, n + 1))


# --- the tracer SIGKILLed ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pid", "launch"])
def test_sigkill_leaves_no_probe_and_the_program_unaffected(faults: str, mode: str) -> None:
    """utrace SIGKILLed while faults_step's entry and return probes are armed and mostly a call is
    in flight (its return address diverted to the kernel's trampoline): the kernel removes the
    probes, the code bytes are the file's again, and the program finishes with every line right."""
    n, delay_ms = 40, 50
    addr_in_file = function_address(faults)
    original = file_bytes(faults, addr_in_file, 8)
    assert len(original) == 8 and original[0] != 0xCC
    prog: subprocess.Popen[str] | None = None
    if mode == "pid":
        prog = start_waiting([faults, "--wait", "loop", str(n), str(delay_ms)])
        pid = prog.pid
        bg = Background("native", "--pid", str(pid), FUNC, "--ret", "--json")
    else:
        set_subreaper(True)
        bg = Background("native", faults, FUNC, "--ret", "--json", "--", faults, "loop", str(n), str(delay_ms))
    try:
        bg.wait_attached()
        if prog is not None:
            addr = addr_in_file + load_base(pid, faults)
            assert mem_bytes(pid, addr, 8) == bytes([0xCC]) + original[1:], "the kernel's breakpoint is in place"
            release(prog)
        else:  # held before exec until now: its code is mapped once it runs
            m = re.search(r"launched pid (\d+)", bg.err_lines[-1])
            assert m is not None, bg.err_lines
            pid = int(m[1])
        seen, printed = json_lines_until(bg, 6)  # some calls and returns delivered: the trace is under way
        assert {e["kind"] for e in seen} == {"call", "return"}
        addr = addr_in_file + load_base(pid, faults)
        assert mem_bytes(pid, addr, 8) == bytes([0xCC]) + original[1:]
        bg.proc.kill()  # SIGKILL: no handler, no cleanup of utrace's own
        bg.proc.wait()
        assert mem_bytes(pid, addr, 8) == original, "the probe went with utrace's file descriptors"
        assert "utrace" not in uprobe_events()
        if prog is not None:
            out, _ = prog.communicate(timeout=60)
            assert prog.returncode == 0
        else:
            assert bg.proc.stdout is not None
            out = printed + bg.proc.stdout.read()  # the program shared utrace's stdout and still writes to it
            _, status = os.waitpid(pid, 0)  # reparented to us (subreaper)
            assert os.waitstatus_to_exitcode(status) == 0
        check_loop_printout(out, 1, n)
        later = [int(i) for who, i, _r in STEP.findall(out)]
        assert later and later[-1] == n
        assert len(seen) // 2 < n - 5, "utrace was killed with calls still to come"
    finally:
        if mode == "launch":
            set_subreaper(False)
        if prog is not None and prog.poll() is None:
            prog.kill()
            prog.wait()
        if bg.proc.poll() is None:
            bg.proc.kill()
            bg.proc.wait()


# --- the traced process exits, execs, forks ------------------------------------------------------------


def test_exit_mid_trace_stops_promptly_with_every_call(faults: str, procs: list[subprocess.Popen[str]]) -> None:
    n = 12
    prog = start_waiting([faults, "--wait", "loop", str(n), "40"])
    procs.append(prog)
    bg = Background("native", "--pid", str(prog.pid), FUNC, "--json")
    try:
        bg.wait_attached()
        release(prog)
        out, _ = prog.communicate(timeout=60)
        exited = time.monotonic()
        stdout, err, rc = bg.finish(timeout=30)
        assert time.monotonic() - exited < 10.0, "utrace noticed the exit (it polls every 0.1 s)"
    finally:
        if bg.proc.poll() is None:
            bg.proc.kill()
    assert rc == 0, err
    evs, summary = events(stdout)
    assert summary["stopped_by"] == "target exited"
    check_loop_printout(out, 1, n)
    assert calls_of(evs) == [(1, i) for i in range(1, n + 1)]
    assert summary["lost"] == 0


def test_exec_of_another_program_stops_the_trace(faults: str, procs: list[subprocess.Popen[str]]) -> None:
    """A --pid target that execs another file: its probes were placed in the old program, so utrace
    says so (stopped by "target exec'd") and ends, while the process goes on running the new one."""
    sleep = shutil.which("sleep")
    assert sleep is not None
    n = 3
    prog = start_waiting([faults, "--wait", "exec", str(n), sleep, "60"])
    procs.append(prog)
    bg = Background("native", "--pid", str(prog.pid), FUNC, "--json")
    try:
        bg.wait_attached()
        release(prog)
        stdout, err, rc = bg.finish(timeout=30)
    finally:
        if bg.proc.poll() is None:
            bg.proc.kill()
    assert rc == 0, err
    assert prog.poll() is None, "the process is still running (now as sleep)"
    assert os.path.realpath(f"/proc/{prog.pid}/exe") == os.path.realpath(sleep)
    evs, summary = events(stdout)
    assert summary["stopped_by"] == "target exec'd"
    assert calls_of(evs) == [(1, i) for i in range(1, n + 1)]
    assert "stopped by target exec'd" not in err  # JSON mode: the summary line says it, on stdout
    prog.kill()
    out, _ = prog.communicate()
    done = DONE.search(out)
    assert done is not None and int(done[1]) == prog.pid and int(done[3]) == n


@pytest.mark.parametrize("how", ["pid", "launch"])
def test_exec_of_the_same_binary_keeps_tracing(faults: str, how: str, procs: list[subprocess.Popen[str]]) -> None:
    """exec of the same file: the kernel arms the probes again in the new image (they belong to the
    file), and utrace goes on until the process exits."""
    argv = ["exec", "3", faults, "loop", "4", "0", "7"]
    if how == "launch":
        p = subprocess.run(
            utrace_cmd("native", faults, FUNC, "--json", "--", faults, *argv),
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        out = stdout = p.stdout  # the launched program shares utrace's stdout
        expected_pid = None
    else:
        prog = start_waiting([faults, "--wait", *argv])
        expected_pid = prog.pid
        procs.append(prog)
        bg = Background("native", "--pid", str(prog.pid), FUNC, "--json")
        try:
            bg.wait_attached()
            release(prog)
            out, _ = prog.communicate(timeout=60)
            stdout, err, rc = bg.finish(timeout=30)
        finally:
            if bg.proc.poll() is None:
                bg.proc.kill()
        assert rc == 0, err
        assert prog.returncode == 0
    runs = [(int(p), int(w), int(c)) for p, w, c, _s in DONE.findall(out)]
    pid = runs[0][0]
    assert runs == [(pid, 1, 3), (pid, 7, 4)], out
    assert expected_pid in (None, pid)
    evs, summary = events(stdout)
    assert summary["stopped_by"] == "target exited"
    assert calls_of(evs) == [(1, i) for i in (1, 2, 3)] + [(7, i) for i in (1, 2, 3, 4)]
    assert {e["pid"] for e in evs} == {pid}


@pytest.mark.parametrize("how", ["pid", "launch", "path"])
def test_fork_mid_trace(faults: str, how: str, procs: list[subprocess.Popen[str]]) -> None:
    """With --pid (or -- CMD) only that process is traced: the child forked mid-trace inherits the
    breakpoints in its copy of the code, and the kernel removes them there at the first hit, so the
    child runs unharmed and untraced. By path every process running the file is traced, children too."""
    n = 5
    if how == "launch":
        p = subprocess.run(
            utrace_cmd("native", faults, FUNC, "--json", "--", faults, "fork", str(n)),
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        out = stdout = p.stdout  # the launched program shares utrace's stdout
        pid = None
    else:
        prog = start_waiting([faults, "--wait", "fork", str(n)])
        procs.append(prog)
        target = ("--pid", str(prog.pid)) if how == "pid" else (faults,)
        bg = Background("native", *target, FUNC, "--json")
        try:
            bg.wait_attached()
            release(prog)
            out, _ = prog.communicate(timeout=60)
            if how == "path":
                time.sleep(0.5)  # let the last poll deliver
                bg.proc.send_signal(signal.SIGINT)
            stdout, err, rc = bg.finish(timeout=30)
        finally:
            if bg.proc.poll() is None:
                bg.proc.kill()
        assert rc == 0, err
        assert prog.returncode == 0
        pid = prog.pid
    runs = {int(w): (int(p), int(c), int(s)) for p, w, c, s in DONE.findall(out)}
    assert sorted(runs) == [1, 2, 3], out
    for who, (_pid, calls, total) in runs.items():
        assert calls == n and total == sum(step_value(who, i) for i in range(1, n + 1)), out
    parent, child = runs[1][0], runs[2][0]
    assert parent == runs[3][0] and child != parent and pid in (None, parent)
    evs, summary = events(stdout)
    by_pid: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for e in evs:
        if e["pid"] in (parent, child):
            by_pid[int(e["pid"])] += calls_of([e])  # type: ignore[call-overload]
    assert by_pid[parent] == [(1, i) for i in range(1, n + 1)] + [(3, i) for i in range(1, n + 1)]
    if how != "path":
        assert child not in by_pid
        assert summary["stopped_by"] == "target exited"
        assert summary["exit_code"] == (0 if how == "launch" else None)
    else:
        assert by_pid[child] == [(2, i) for i in range(1, n + 1)]
    assert summary["lost"] == 0


# --- many threads; several processes -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stream", "count"])
def test_many_threads_every_call_counted(faults: str, mode: str) -> None:
    threads, n = 16, 2000
    extra = ["--count"] if mode == "count" else []
    p = subprocess.run(
        utrace_cmd("native", faults, FUNC, "--json", *extra, "--", faults, "threads", str(threads), str(n)),
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    printed = {int(t): (int(tid), int(c), int(s)) for t, tid, c, s in THREAD.findall(p.stdout)}
    assert sorted(printed) == list(range(1, threads + 1)), p.stdout[-500:]
    lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    summary = lines[-1]
    assert summary["kind"] == "summary" and summary["lost"] == 0
    assert summary["events"] == threads * n
    if mode == "count":
        counts = [x for x in lines if x["kind"] == "count"]
        assert [(c["probe"], c["count"]) for c in counts] == [(FUNC, threads * n)]
        return
    by_tid: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for e in lines[:-1]:
        by_tid[int(e["tid"])] += calls_of([e])
    assert len(by_tid) == threads
    for who, (tid, calls, total) in printed.items():
        got = by_tid[tid]
        assert len(got) == calls == n
        assert {w for w, _i in got} == {who}
        assert sorted(i for _w, i in got) == list(range(1, n + 1))
        assert sum(step_value(w, i) for w, i in got) == total


def test_several_processes_of_one_binary(faults: str, procs: list[subprocess.Popen[str]]) -> None:
    """By path: every process running the file, each under its own pid. By --pid: that one only."""
    n = 6
    for who in (1, 2, 3):
        procs.append(start_waiting([faults, "--wait", "loop", str(n), "20", str(who)]))
    by_path = Background("native", faults, FUNC, "--json")
    one = Background("native", "--pid", str(procs[1].pid), FUNC, "--json")
    try:
        by_path.wait_attached()
        one.wait_attached()
        outs = []
        for p in procs:
            release(p)
        for p in procs:
            outs.append(p.communicate(timeout=60)[0])
            assert p.returncode == 0
        out_one, err_one, rc_one = one.finish(timeout=30)
        time.sleep(0.5)
        by_path.proc.send_signal(signal.SIGINT)
        out_all, err_all, rc_all = by_path.finish(timeout=30)
    finally:
        for b in (by_path, one):
            if b.proc.poll() is None:
                b.proc.kill()
    assert rc_one == 0 and rc_all == 0, err_one + err_all
    for who, (p, out) in enumerate(zip(procs, outs, strict=True), start=1):
        check_loop_printout(out, who, n)
        assert DONE.search(out)[1] == str(p.pid)  # type: ignore[index]
    evs_all, summary_all = events(out_all)
    pids = {p.pid: who for who, p in enumerate(procs, start=1)}
    seen = Counter((int(e["pid"]), w) for e in evs_all if e["pid"] in pids for w, _i in calls_of([e]))
    assert seen == Counter({(pid, who): n for pid, who in pids.items()})
    assert summary_all["stopped_by"] == "SIGINT" and summary_all["lost"] == 0
    evs_one, summary_one = events(out_one)
    assert {e["pid"] for e in evs_one} == {procs[1].pid}
    assert calls_of(evs_one) == [(2, i) for i in range(1, n + 1)]
    assert summary_one["stopped_by"] == "target exited"


# --- the binary replaced on disk ---------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["while-traced", "before-attach", "library-before-attach"])
def test_binary_replaced_on_disk(
    faults: str, fixtures_built: Path, tmp_path: Path, when: str, procs: list[subprocess.Popen[str]]
) -> None:
    """A new build renamed over the running program's path (an upgrade). The process still runs
    the old file, and that file is what must be probed: before attaching, utrace reads it through
    /proc/PID/exe (or /proc/PID/map_files for a library), not the new file at the path."""
    n = 5
    exe = tmp_path / "prog"
    shutil.copy(faults, exe)
    env = dict(os.environ)
    libc = Path("/lib/x86_64-linux-gnu/libc.so.6")
    if when.startswith("library"):
        need(libc.exists(), f"{libc} not found")
        (tmp_path / "lib").mkdir()
        shutil.copy(libc, tmp_path / "lib" / libc.name)
        env["LD_LIBRARY_PATH"] = str(tmp_path / "lib")

    def replace() -> None:
        if when.startswith("library"):
            new = tmp_path / "lib" / "new"
            shutil.copy(libc, new)
            os.rename(new, tmp_path / "lib" / libc.name)
        else:
            shutil.copy(fixtures_built / "c" / "faults-alt", tmp_path / "new")
            os.rename(tmp_path / "new", exe)

    proc = subprocess.Popen(
        [str(exe), "--wait", "loop", str(n), "30"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().startswith("ready")
    if when != "while-traced":
        replace()
        assert "(deleted)" in (
            os.readlink(f"/proc/{proc.pid}/exe")
            if when == "before-attach"
            else Path(f"/proc/{proc.pid}/maps").read_text()
        )
    func = "nanosleep" if when.startswith("library") else FUNC
    bg = Background("native", "--pid", str(proc.pid), func, "--json")
    try:
        bg.wait_attached()
        if when == "while-traced":
            replace()
        release(proc)
        out, _ = proc.communicate(timeout=60)
        stdout, err, rc = bg.finish(timeout=30)
    finally:
        if bg.proc.poll() is None:
            bg.proc.kill()
    assert rc == 0, err
    assert proc.returncode == 0
    check_loop_printout(out, 1, n)
    assert " alt" not in out  # the process ran the old build throughout
    evs, summary = events(stdout)
    assert summary["stopped_by"] == "target exited"
    if func == FUNC:
        assert calls_of(evs) == [(1, i) for i in range(1, n + 1)]
    else:
        # one nanosleep per call of faults_step (faults.c's sleep_ms, no signals to interrupt it)
        assert [e["probe"] for e in evs] == ["nanosleep"] * n


# --- containers -------------------------------------------------------------------------------------------------


def test_container_target_in_its_own_mount_and_pid_namespaces(faults: str, tmp_path: Path) -> None:
    """The program runs from a tmpfs mounted only inside a new mount namespace, as pid 1 of a new
    PID namespace. utrace finds it through /proc/PID/root and shows both pids: the host's, and the
    ones the program printed for itself (getpid, gettid)."""
    need(shutil.which("unshare") is not None, "unshare (util-linux) not installed")
    threads, n = 3, 10
    mnt = tmp_path / "inside"
    mnt.mkdir()
    prog = f"{mnt}/prog"
    inner = f"mount -t tmpfs utrace-test {mnt} && cp {faults} {prog} && exec {prog} --wait threads {threads} {n} 30"
    ns = subprocess.Popen(
        ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", inner],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    host_pid = 0
    try:
        assert ns.stdout is not None
        assert ns.stdout.readline().strip() == "ready 1", "pid 1 in its own namespace"
        children = " ".join(Path(t, "children").read_text() for t in Path(f"/proc/{ns.pid}/task").iterdir()).split()
        assert len(children) == 1
        host_pid = int(children[0])
        assert os.readlink(f"/proc/{host_pid}/exe") == prog
        assert not (mnt / "prog").exists(), "the file exists only inside the mount namespace"
        bg = Background("native", "--pid", str(host_pid), FUNC, "--json")
        try:
            bg.wait_attached()
            assert f"pid {host_pid}, 1 in its PID namespace" in bg.err_lines[-1]
            release(ns)
            out, _ = ns.communicate(timeout=60)
            stdout, err, rc = bg.finish(timeout=30)
        finally:
            if bg.proc.poll() is None:
                bg.proc.kill()
        assert rc == 0, err
        assert ns.returncode == 0
    finally:
        if ns.poll() is None:
            if host_pid:
                os.kill(host_pid, signal.SIGKILL)
            ns.kill()
            ns.wait()
    printed = {int(t): (int(tid), int(c), int(s)) for t, tid, c, s in THREAD.findall(out)}
    assert sorted(printed) == list(range(1, threads + 1)), out
    assert "done pid 1 " in out
    evs, summary = events(stdout)
    assert summary["stopped_by"] == "target exited" and summary["lost"] == 0
    assert len(evs) == threads * n
    assert {e["pid"] for e in evs} == {host_pid}
    assert {e["ns_pid"] for e in evs} == {1}
    by_ns_tid: dict[int, list[dict[str, object]]] = defaultdict(list)
    for e in evs:
        by_ns_tid[int(e["ns_tid"])].append(e)  # type: ignore[call-overload]
    for who, (ns_tid, calls, total) in printed.items():
        got = by_ns_tid[ns_tid]
        assert calls_of(got) == [(who, i) for i in range(1, calls + 1)]
        assert sum(step_value(w, i) for w, i in calls_of(got)) == total
        host_tids = {e["tid"] for e in got}
        assert len(host_tids) == 1 and host_tids != {ns_tid}, "the host sees the thread under another id"
