"""Side-by-side benchmarks: utrace against bpftrace 0.17 and bcc 0.26 on the same workloads, in one run.

Prints ratios (utrace / incumbent) with medians of repeated runs, because these machines are noisy.
  (a) listing node's functions: utrace cold cache, utrace warm cache, `bpftrace -l 'uprobe:node:*'`
  (b) 200,000 calls of a hot C function streamed to user space with both arguments:
      events delivered, lost, wall time (command start to the last event written)
  (c) the same calls counted in the kernel: utrace --count against bpftrace's count()
  (d) command to first event: each tracer started by path while `hot 1` runs 100 times a second;
      time from the command's start to its probes armed (utrace's "attached" line) and to the first
      event written
  (e) probes on node's 52 uv_fs_* functions in a node run the tracer launches: command to exit
      (attaching, the run, and detaching, which the kernel makes wait per perf event or per link)
  (f) command to first event for a native function, a Node 26 libuv function and a Go function, warm
      (compiled program and symbol index cached) and with an empty utrace cache (a fresh XDG_CACHE_HOME)
  (g) `utrace list NODE --json` cold and warm against `bpftrace -l` on node 20 and 26 (nodejs.org builds)
  (h) the first line of `utrace list NODE` on a terminal (a pty), cold and warm
  (i) name resolution in node 26: an alias (`uv_tcp_listen`) and globs against the plain name
  (j) JavaScript calls counted in the kernel (js:NAME, node 22): a call-heavy loop's own time and an
      HTTP server's time for 2,000 requests, untraced and traced
  and, for (b), the tracer's own CPU time (user + system) in a run attached by path to a separately
  started program, so the traced program's CPU (which includes the BPF programs run in its context) is
  not counted
Usage: python bench/run.py [--calls N] [--reps N] [--only TABLE]... [--out FILE]
  TABLE: listing stream count first many startup list-json tty names js (one table: --only names)
Node 20 and 26 come from scripts/fetch-node-official.sh 20 26; the utrace commands are timed as an
installed utrace runs, with compiled bytecode (a PYTHONDONTWRITEBYTECODE in the environment is dropped).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOT = ROOT / "fixtures" / "build" / "c" / "hot"
NODE = os.path.realpath(shutil.which("node") or "/usr/bin/node")
UTRACE = [sys.executable, "-m", "utrace"]


def _default_sigint() -> None:
    # A background job of a non-interactive shell starts with SIGINT ignored, and exec keeps that:
    # the tracers here are stopped with SIGINT (bcc's trace cleans its uprobe_events only then).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def timed(cmd: list[str], env: dict[str, str] | None = None, stdout: int | None = subprocess.DEVNULL) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, stdout=stdout, stderr=subprocess.DEVNULL, env=env, check=True, cwd=ROOT)
    return time.perf_counter() - t


def _wait_for_cache(where: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = list(where.glob("*"))
        if len(files) >= 2 and all(f.suffix in (".txt", ".marshal") for f in files):
            return
        time.sleep(0.05)
    raise SystemExit(f"bench: the listing cache was not written within {timeout} s")


def bench_listing(reps: int) -> list[tuple[str, float, str]]:
    cache = Path(tempfile.mkdtemp(prefix="utrace-bench-cache-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    cold, warm, bt = [], [], []
    for _ in range(reps):
        shutil.rmtree(cache / "utrace", ignore_errors=True)
        cold.append(timed([*UTRACE, "list", NODE], env))
        _wait_for_cache(cache / "utrace")  # written behind, by a detached process, after the command
        warm.append(timed([*UTRACE, "list", NODE], env))
        bt.append(timed(["bpftrace", "-l", f"uprobe:{NODE}:*"]))
    shutil.rmtree(cache, ignore_errors=True)

    def ratio(runs: list[float]) -> str:
        # each run against bpftrace's in the same round: the machine's speed drifts between rounds
        return f"{statistics.median(u / b for u, b in zip(runs, bt, strict=True)):.2f}"

    return [
        ("bpftrace -l 'uprobe:node:*'", statistics.median(bt), "1.00"),
        ("utrace list node (cold cache)", statistics.median(cold), ratio(cold)),
        ("utrace list node (warm cache)", statistics.median(warm), ratio(warm)),
    ]


def run_bpftrace(calls: int, out: Path) -> tuple[float, int, int]:
    prog = f'uprobe:{HOT}:hot {{ printf("%ld %ld\\n", arg0, arg1); }}'
    with open(out, "w") as f:
        t = time.perf_counter()
        subprocess.run(
            ["bpftrace", "-e", prog, "-c", f"{HOT} {calls}"], stdout=f, stderr=subprocess.DEVNULL, check=True
        )
        wall = time.perf_counter() - t
    with open(out) as fh:
        delivered = sum(1 for line in fh if line[:1].isdigit() or line[:1] == "-")
    return wall, delivered, calls - delivered


def run_utrace(calls: int, out: Path) -> tuple[float, int, int]:
    t = time.perf_counter()
    subprocess.run(
        [*UTRACE, "native", str(HOT), "hot(long i, long j)", "--json", "-o", str(out), "--", str(HOT), str(calls)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        cwd=ROOT,
    )
    wall = time.perf_counter() - t

    last = out.read_text().rstrip().rsplit("\n", 1)[-1]
    summary = json.loads(last)
    return wall, int(summary["events"]), int(summary["lost"])


def run_bcc_trace(calls: int, out: Path) -> tuple[float, int, int] | None:
    trace = shutil.which("trace-bpfcc")
    if trace is None:
        return None
    from utrace.bpf.kernel import prepare_bcc_headers

    prepare_bcc_headers()  # bcc needs headers too; the same merged tree utrace uses
    with open(out, "w") as f:
        t = time.perf_counter()
        tr = subprocess.Popen(
            [trace, f'{HOT}:hot "%ld %ld", arg1, arg2'], stdout=f, stderr=subprocess.DEVNULL, preexec_fn=_default_sigint
        )
        # bcc trace prints its header once attached
        for _ in range(300):
            if out.stat().st_size > 0:
                break
            time.sleep(0.02)
        subprocess.run([str(HOT), str(calls)], stdout=subprocess.DEVNULL, check=True)
        size = -1
        while out.stat().st_size != size:  # let it drain
            size = out.stat().st_size
            time.sleep(0.5)
        tr.send_signal(signal.SIGINT)  # (SIGTERM would leave bcc's uprobe_events entries behind)
        tr.wait()
        wall = time.perf_counter() - t
    with open(out, "rb") as fh:  # event lines start with the pid; the header and exit lines do not
        delivered = sum(1 for line in fh if line[:1].isdigit())
    return wall, delivered, calls - delivered


def _probe_fds(pid: int) -> int:
    """The perf events and BPF links (utrace's multi-uprobe links) process `pid` holds."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return 0
    return sum(1 for link in links if "perf_event" in link or link == "anon_inode:bpf_link")


def _forget_bcc_probes(pid: int) -> None:
    """Remove the uprobe_events entries a bcc tool of this pid left (it removes them itself only on a
    SIGINT it saw): a stray entry would show in every later check that nothing is left attached."""
    events = Path("/sys/kernel/tracing/uprobe_events")
    try:
        firsts = [line.split()[0] for line in events.read_text().splitlines() if line.strip()]
        names = [first[2:] for first in firsts if first.endswith(f"_bcc_{pid}")]  # "p:uprobes/NAME"
        for name in names:  # os.open: Python's "a" mode seeks, which tracefs refuses
            fd = os.open(events, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, f"-:{name}\n".encode())
            finally:
                os.close(fd)
    except OSError:
        pass


def _stop(pid: int) -> resource.struct_rusage:
    """SIGINT (bcc's trace cleans up only then), repeated: a tracer busy draining may miss the first."""
    for sig in [signal.SIGINT] * 5 + [signal.SIGTERM, signal.SIGKILL]:
        os.kill(pid, sig)
        for _ in range(40):
            done, _status, ru = os.wait4(pid, os.WNOHANG)
            if done:
                _forget_bcc_probes(pid)
                return ru
            time.sleep(0.05)
    raise SystemExit(f"bench: pid {pid} does not stop")


def _cpu_of(cmd: list[str], calls: int) -> float:
    """CPU seconds (user + system) of a tracer that traces HOT by path while a separate HOT runs `calls`.

    Armed = the tracer holds a perf event or a BPF link (utrace's multi-uprobe links); its output
    goes to a file and is only watched for growth, so no tracer is asked to flush more than it would.
    """

    tmp = Path(tempfile.mkdtemp(prefix="utrace-bench-cpu-"))
    out = tmp / "out"
    with open(out, "w") as f:
        tr = subprocess.Popen(cmd, stdout=f, stderr=subprocess.DEVNULL, cwd=ROOT, preexec_fn=_default_sigint)
        try:
            deadline = time.monotonic() + 60
            while _probe_fds(tr.pid) == 0:
                if time.monotonic() > deadline or tr.poll() is not None:
                    raise SystemExit(f"bench: {cmd[0]} did not attach")
                time.sleep(0.02)
            time.sleep(0.3)  # the other probes of the same command (none here) and the ring's poller
            subprocess.run([str(HOT), str(calls)], stdout=subprocess.DEVNULL, check=True)
            size = -1
            while out.stat().st_size != size:  # let it drain
                size = out.stat().st_size
                time.sleep(0.5)
            ru = _stop(tr.pid)
            tr.returncode = 0
        finally:
            if tr.returncode is None:  # failed before stopping it: a stray tracer would skew every later run
                tr.send_signal(signal.SIGINT)  # bcc's trace removes its uprobe_events entries on SIGINT only
                try:
                    tr.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    tr.kill()
                    tr.wait()
                _forget_bcc_probes(tr.pid)
    shutil.rmtree(tmp, ignore_errors=True)
    return ru.ru_utime + ru.ru_stime


def cpu_rows(calls: int, reps: int) -> dict[str, float]:
    cmds: dict[str, list[str]] = {
        "bpftrace printf": ["bpftrace", "-e", f'uprobe:{HOT}:hot {{ printf("%ld %ld\\n", arg0, arg1); }}'],
        "utrace --json -o": [*UTRACE, "native", str(HOT), "hot(long i, long j)", "--json"],
    }
    trace = shutil.which("trace-bpfcc")
    if trace:
        from utrace.bpf.kernel import prepare_bcc_headers

        prepare_bcc_headers()
        cmds["bcc trace"] = [trace, f'{HOT}:hot "%ld %ld", arg1, arg2']
    out: dict[str, float] = {}
    for name, cmd in cmds.items():
        out[name] = statistics.median(_cpu_of(cmd, calls) for _ in range(reps))
    return out


def _first_event(
    cmd: list[str], armed_marker: str | None, stops: bool, env: dict[str, str] | None = None
) -> tuple[float | None, float]:
    """Seconds from start to the armed marker on stderr (if any) and to the first event line on stdout."""
    import selectors

    t = time.perf_counter()
    p = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env, preexec_fn=_default_sigint
    )
    assert p.stdout is not None and p.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ, "out")
    sel.register(p.stderr, selectors.EVENT_READ, "err")
    armed: float | None = None
    first: float | None = None
    bufs = {"out": b"", "err": b""}
    deadline = time.monotonic() + 60
    while first is None and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            chunk = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            bufs[key.data] += chunk
            now = time.perf_counter() - t
            if key.data == "err" and armed is None and armed_marker and armed_marker.encode() in bufs["err"]:
                armed = now
            if key.data == "out" and first is None and re.search(rb"(^|\n)\s*[-\d.]+ .*\d", bufs["out"]):
                first = now

    # keep reading: a tracer blocked on a full pipe would never get to its exit
    deadline = time.monotonic() + 60
    signalled = 0.0
    while sel.get_map() and time.monotonic() < deadline:
        if not stops and p.poll() is None and time.monotonic() - signalled > 3:
            # bcc's trace removes its uprobe_events entries on SIGINT only; one that lands in its event
            # callback is swallowed there (Python ignores exceptions in ctypes callbacks): sent again
            # after 3 s (not sooner: a second one would cut its clean-up short)
            p.send_signal(signal.SIGINT)
            signalled = time.monotonic()
        for key, _ in sel.select(timeout=1):
            if not os.read(key.fileobj.fileno(), 65536):  # type: ignore[union-attr]
                sel.unregister(key.fileobj)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()  # never leave a tracer behind to trace the next runs
        p.wait()
        _forget_bcc_probes(p.pid)
        raise SystemExit(f"bench: {cmd[0]} did not stop") from None
    if first is None:
        raise SystemExit(f"bench: no event from {cmd[0]}: {bufs['err'][-300:]!r}")
    return armed, first


def bench_first_event(reps: int) -> list[tuple[str, float | None, float]]:
    """(d): tracers started by path while a shell runs `hot 1` a hundred times a second (a steady trickle:
    bcc's trace flooded by a tight loop cannot even be stopped, its SIGINT lost in the event callbacks)."""
    prog = subprocess.Popen(["sh", "-c", f"while :; do {HOT} 1 >/dev/null; sleep 0.01; done"])
    cmds: dict[str, tuple[list[str], str | None, bool]] = {
        "bpftrace": (
            ["bpftrace", "-e", f'uprobe:{HOT}:hot {{ printf("%ld %ld\\n", arg0, arg1); exit(); }}'],
            None,
            True,
        ),
        "utrace": ([*UTRACE, "native", str(HOT), "hot(long i, long j)", "-n", "1"], "attached", True),
    }
    trace = shutil.which("trace-bpfcc")
    if trace:
        from utrace.bpf.kernel import prepare_bcc_headers

        prepare_bcc_headers()
        # (not -M 1: its exit from inside the event callback leaves the probes behind)
        cmds["bcc trace"] = ([trace, f'{HOT}:hot "%ld %ld", arg1, arg2'], None, False)
    rows = []
    try:
        for name, (cmd, marker, stops) in cmds.items():
            runs = [_first_event(cmd, marker, stops) for _ in range(reps)]
            armed = [a for a, _f in runs if a is not None]
            rows.append((name, statistics.median(armed) if armed else None, statistics.median(f for _a, f in runs)))
    finally:
        prog.kill()
        prog.wait()
    return rows


def _run_timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall seconds of a command run to its end (from ROOT), and its captured output."""
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return time.perf_counter() - t, p


def _utrace_counted(stdout: str) -> int:
    """The calls in utrace's `--count --json` objects."""
    counts = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"kind": "count"')]
    return sum(int(c["count"]) for c in counts)


def count_bpftrace(calls: int) -> tuple[float, int]:
    wall, p = _run_timed(["bpftrace", "-e", f"uprobe:{HOT}:hot {{ @calls = count(); }}", "-c", f"{HOT} {calls}"])
    m = re.search(r"@calls: (\d+)", p.stdout)
    return wall, int(m.group(1)) if m else 0


def count_utrace(calls: int) -> tuple[float, int]:
    wall, p = _run_timed([*UTRACE, "native", str(HOT), "hot", "--count", "--json", "--", str(HOT), str(calls)])
    return wall, _utrace_counted(p.stdout)


MANY = "uv_fs_*"  # 52 functions of node
NODE_SCRIPT = 'require("fs").readFileSync("/etc/hostname")'


def many_bpftrace() -> tuple[float, int, int]:
    prog = f"uprobe:{NODE}:{MANY} {{ @[probe] = count(); }}"
    wall, p = _run_timed(["bpftrace", "-e", prog, "-c", f"{NODE} -e {NODE_SCRIPT}"])
    m = re.search(r"Attaching (\d+) probes", p.stdout)
    return wall, int(m.group(1)) if m else 0, sum(int(n) for n in re.findall(r"^@\[.*\]: (\d+)$", p.stdout, re.M))


def many_utrace() -> tuple[float, int, int]:
    wall, p = _run_timed([*UTRACE, "native", NODE, MANY, "--count", "--json", "--", NODE, "-e", NODE_SCRIPT])
    m = re.search(r"(\d+) probe\(s\) attached", p.stderr)
    return wall, int(m.group(1)) if m else 0, _utrace_counted(p.stdout)


def bench_many_probes(reps: int) -> list[tuple[str, float, int, int]]:
    """(e): probes on every uv_fs_* function of node, launched by the tracer: command to exit, which
    includes detaching (the kernel waits once per perf event, once per multi-uprobe link)."""
    results: dict[str, list[tuple[float, int, int]]] = {"bpftrace count()": [], "utrace --count": []}
    for _ in range(reps):
        results["bpftrace count()"].append(many_bpftrace())
        results["utrace --count"].append(many_utrace())
    return [
        (name, statistics.median(r[0] for r in rs), rs[0][1], min(r[2] for r in rs)) for name, rs in results.items()
    ]


def bench_count(calls: int, reps: int) -> list[tuple[str, float, int]]:
    results: dict[str, list[tuple[float, int]]] = {"bpftrace count()": [], "utrace --count": []}
    for _ in range(reps):
        results["bpftrace count()"].append(count_bpftrace(calls))
        results["utrace --count"].append(count_utrace(calls))
    return [(name, statistics.median(r[0] for r in rs), min(r[1] for r in rs)) for name, rs in results.items()]


def bench_stream(calls: int, reps: int) -> list[tuple[str, float, int, int]]:
    tmp = Path(tempfile.mkdtemp(prefix="utrace-bench-"))
    results: dict[str, list[tuple[float, int, int]]] = {"bpftrace printf": [], "utrace --json -o": [], "bcc trace": []}
    for _ in range(reps):
        results["bpftrace printf"].append(run_bpftrace(calls, tmp / "bt.txt"))
        results["utrace --json -o"].append(run_utrace(calls, tmp / "ut.json"))
        r = run_bcc_trace(calls, tmp / "bcc.txt")
        if r:
            results["bcc trace"].append(r)
    shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for name, rs in results.items():
        if rs:
            rows.append((name, statistics.median(r[0] for r in rs), min(r[1] for r in rs), max(r[2] for r in rs)))
    return rows


# --- start-up (issue #20): first event, listings, a terminal's first line, name resolution ------------

REALWORLD = Path(os.environ.get("UTRACE_CACHE", Path.home() / ".cache" / "utrace")) / "realworld"
GO_BIN = ROOT / "fixtures" / "build" / "go" / "greet"
NODE_LOOP = 'setInterval(() => require("fs").statSync("/"), 10)'  # uv_fs_stat 100 times a second


def official_node(major: int) -> Path | None:
    """nodejs.org's build of `major` (scripts/fetch-node-official.sh), None when it is not fetched."""
    node = REALWORLD / f"node-{major}" / "bin" / "node"
    return node if node.exists() else None


def _bench_env(xdg: Path) -> dict[str, str]:
    """utrace's environment with its own cache directory (the toolchains stay in ~/.cache/utrace)."""
    return {**os.environ, "XDG_CACHE_HOME": str(xdg)}


def _fresh_cache() -> Path:
    return Path(tempfile.mkdtemp(prefix="utrace-bench-xdg-"))


def _quiet_writers(xdg: Path, timeout: float = 60.0) -> None:
    """Wait until no process runs with `xdg` as its cache directory: utrace writes big cache files from
    a detached child that outlives the command, and the next run should not share the CPU with it."""
    mark = f"XDG_CACHE_HOME={xdg}".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    env = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    continue
                if mark + b"\0" in env or env.endswith(mark):
                    busy = True
                    break
        if not busy:
            return
        time.sleep(0.05)


def _ratio(runs: list[float], base: list[float]) -> float:
    """The median of each round's ratio: the machine's speed drifts between rounds."""
    return statistics.median(u / b for u, b in zip(runs, base, strict=True))


def _startup_cases() -> list[tuple[str, list[str], list[str], list[str]]]:
    """(name, workload command, bpftrace command, utrace command) of each first-event case there is."""
    bt = '{ printf("%ld %ld\\n", arg0, arg1); exit(); }'
    cases = [
        (
            "native C `hot`",
            ["sh", "-c", f"while :; do {HOT} 1 >/dev/null; sleep 0.01; done"],
            ["bpftrace", "-e", f"uprobe:{HOT}:hot {bt}"],
            [*UTRACE, "native", str(HOT), "hot(long i, long j)", "-n", "1"],
        )
    ]
    node26 = official_node(26)
    if node26 is not None:
        cases.append(
            (
                "Node 26 libuv `uv_fs_stat`",
                [str(node26), "-e", NODE_LOOP],
                ["bpftrace", "-e", f"uprobe:{node26}:uv_fs_stat {bt}"],
                [*UTRACE, "node", "--binary", str(node26), "uv_fs_stat", "-n", "1"],
            )
        )
    if GO_BIN.exists():
        cases.append(
            (
                "Go `main.Greet`",
                ["sh", "-c", f"while :; do {GO_BIN} 1 1 >/dev/null; sleep 0.01; done"],
                ["bpftrace", "-e", f"uprobe:{GO_BIN}:main.Greet {bt}"],
                [*UTRACE, "go", str(GO_BIN), "main.Greet", "-n", "1"],
            )
        )
    return cases


def bench_startup(reps: int) -> list[str]:
    """(f): command to first event, each tracer started by path while a workload calls the function
    about 100 times a second: bpftrace, utrace warm (its compiled program and symbol index cached) and
    utrace with an empty cache (a fresh XDG_CACHE_HOME each run: clang compiles, the ELF is read)."""
    lines = [
        f"## (f) command to first event, warm and with an empty utrace cache (median of {reps})",
        "",
        "| function | bpftrace s | utrace warm s | warm ratio (goal <= 1.0) | utrace empty cache s "
        "| empty ratio (goal <= 1.5) |",
        "|---|---|---|---|---|---|",
    ]
    for name, workload, bt_cmd, ut_cmd in _startup_cases():
        warm_xdg = _fresh_cache()
        prog = subprocess.Popen(workload, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        bt, warm, cold = [], [], []
        try:
            time.sleep(0.5)
            _first_event(ut_cmd, None, True, _bench_env(warm_xdg))  # fills the warm cache
            _quiet_writers(warm_xdg)
            for _ in range(reps):
                bt.append(_first_event(bt_cmd, None, True)[1])
                warm.append(_first_event(ut_cmd, None, True, _bench_env(warm_xdg))[1])
                xdg = _fresh_cache()
                cold.append(_first_event(ut_cmd, None, True, _bench_env(xdg))[1])
                _quiet_writers(xdg)
                shutil.rmtree(xdg, ignore_errors=True)
        finally:
            os.killpg(prog.pid, signal.SIGKILL)
            prog.wait()
            shutil.rmtree(warm_xdg, ignore_errors=True)
        lines.append(
            f"| {name} | {statistics.median(bt):.2f} | {statistics.median(warm):.2f} | {_ratio(warm, bt):.2f} "
            f"| {statistics.median(cold):.2f} | {_ratio(cold, bt):.2f} |"
        )
    return lines


def _list_nodes() -> list[tuple[str, Path]]:
    nodes = [(f"node {m} (nodejs.org)", n) for m in (20, 26) if (n := official_node(m)) is not None]
    return nodes or [("node (PATH)", Path(NODE))]


def bench_list_json(reps: int) -> list[str]:
    """(g): `utrace list NODE --json` with an empty cache (cold) and again (warm) against `bpftrace -l`."""
    lines = [
        f"## (g) `utrace list NODE --json` against `bpftrace -l 'uprobe:NODE:*'` (median of {reps})",
        "",
        "| binary | functions | bpftrace -l s | utrace cold s | cold ratio (goal <= 1.0) | utrace warm s "
        "| warm ratio (goal <= 0.5) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, node in _list_nodes():
        xdg = _fresh_cache()
        env = _bench_env(xdg)
        cmd = [*UTRACE, "list", str(node), "--json"]
        bt, cold, warm = [], [], []
        for _ in range(reps):
            shutil.rmtree(xdg / "utrace", ignore_errors=True)
            bt.append(timed(["bpftrace", "-l", f"uprobe:{node}:*"]))
            cold.append(timed(cmd, env))
            _quiet_writers(xdg)
            warm.append(timed(cmd, env))
        out = subprocess.run(cmd, env=env, capture_output=True, check=True, cwd=ROOT).stdout
        shutil.rmtree(xdg, ignore_errors=True)
        count = out.count(b"\n")
        lines.append(
            f"| {name} | {count:,} | {statistics.median(bt):.2f} | {statistics.median(cold):.2f} "
            f"| {_ratio(cold, bt):.2f} | {statistics.median(warm):.2f} | {_ratio(warm, bt):.2f} |"
        )
    return lines


def _pty_first_line(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Seconds from start to the first byte and to the first complete line of the listing (a line that
    is not an escape sequence or a progress line on stderr) when stdout and stderr are a terminal."""
    import pty
    import selectors

    master, slave = pty.openpty()
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    first_byte: float | None = None
    first_line: float | None = None
    buf = b""
    sel = selectors.DefaultSelector()
    sel.register(master, selectors.EVENT_READ)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not sel.select(timeout=1):
            continue
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the other end is closed
            break
        if not chunk:
            break
        now = time.perf_counter() - t
        if first_byte is None:
            first_byte = now
        if first_line is None:
            buf += chunk
            text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", buf)  # drop terminal control sequences
            if any(line.strip() and b"indexing" not in line for line in text.split(b"\n")[:-1]):
                first_line = now
    sel.close()
    os.close(master)
    p.wait(timeout=30)
    if first_byte is None or first_line is None:
        raise SystemExit(f"bench: {cmd} printed no line on a terminal")
    return first_byte, first_line


def bench_tty(reps: int) -> list[str]:
    """(h): the first line of `utrace list NODE` on a terminal (goal: within 0.2 s), warm and cold."""
    lines = [
        f"## (h) first line of a listing on a terminal (a pty; median of {reps})",
        "",
        "| binary | bpftrace -l first line s | utrace cold: first byte s | first line s "
        "| utrace warm: first byte s | first line s (goal <= 0.2) |",
        "|---|---|---|---|---|---|",
    ]
    for name, node in _list_nodes():
        xdg = _fresh_cache()
        env = _bench_env(xdg)
        cmd = [*UTRACE, "list", str(node)]
        bt, cold, warm = [], [], []
        for _ in range(reps):
            shutil.rmtree(xdg / "utrace", ignore_errors=True)
            bt.append(_pty_first_line(["bpftrace", "-l", f"uprobe:{node}:*"])[1])
            cold.append(_pty_first_line(cmd, env))
            _quiet_writers(xdg)
            warm.append(_pty_first_line(cmd, env))
        shutil.rmtree(xdg, ignore_errors=True)
        med = statistics.median
        lines.append(
            f"| {name} | {med(bt):.2f} | {med(c[0] for c in cold):.2f} | {med(c[1] for c in cold):.2f} "
            f"| {med(w[0] for w in warm):.2f} | {med(w[1] for w in warm):.2f} |"
        )
    return lines


def bench_names(reps: int) -> list[str]:
    """(i): resolving a probe name in Node 26 (warm cache, `--dump-bpf`: resolved and generated, not
    attached): the old libuv name `uv_tcp_listen` (`uv__tcp_listen` there) and globs, each
    against the plain name in the same round (goal: no slower)."""
    node = official_node(26) or Path(NODE)
    names = {
        "plain `uv__tcp_listen`": "uv__tcp_listen",
        "alias `uv_tcp_listen`": "uv_tcp_listen",
        "glob `uv__tcp_lis*`": "uv__tcp_lis*",
        "glob `*__tcp_listen`": "*__tcp_listen",
    }
    xdg = _fresh_cache()
    env = _bench_env(xdg)

    def cmd(name: str) -> list[str]:
        return [*UTRACE, "node", "--binary", str(node), name, "--dump-bpf"]

    for probe in names.values():  # warm: the index and anything else resolving leaves behind
        timed(cmd(probe), env)
        _quiet_writers(xdg)
    runs: dict[str, list[float]] = {k: [] for k in names}
    bt: dict[str, list[float]] = {"uv__tcp_listen": [], "uv__tcp_lis*": []}
    for _ in range(reps):
        for label, probe in names.items():
            runs[label].append(timed(cmd(probe), env))
        for probe in bt:
            bt[probe].append(timed(["bpftrace", "-l", f"uprobe:{node}:{probe}"]))
    shutil.rmtree(xdg, ignore_errors=True)
    plain = runs["plain `uv__tcp_listen`"]
    lines = [
        f"## (i) name resolution in {node.parent.parent.name}: `utrace node NAME --dump-bpf`, warm (median of {reps})",
        "",
        "| name | utrace s | ratio to the plain name (goal <= 1.0) |",
        "|---|---|---|",
    ]
    for label, rs in runs.items():
        lines.append(f"| {label} | {statistics.median(rs):.2f} | {_ratio(rs, plain):.2f} |")
    for probe, rs in bt.items():
        lines.append(f"| (bpftrace -l `{probe}`) | {statistics.median(rs):.2f} | - |")
    return lines


JS_HOT = """\
let count = 0;
function priceOf(item, qty) { count++; return qty * 2 + item.length; }
function other(a) { return a + 1; }
const n = Number(process.argv[2]);
const t0 = process.hrtime.bigint();
let s = 0;
for (let i = 0; i < n; i++) { s += priceOf('pear', i & 1023); s = other(s) & 0xffff; }
console.log('loop_ns ' + (process.hrtime.bigint() - t0) + ' count ' + count);
"""
JS_SERVER = """\
const http = require('http');
function handle(method, url) { return url.length; }
const s = http.createServer((req, res) => { handle(req.method, req.url); res.end('ok'); });
s.listen(0, '127.0.0.1', () => console.log('listening ' + s.address().port));
"""
JS_FLAGS = ["--maglev-filter=-priceOf", "--turbo-filter=-priceOf", "--no-turbo-inlining", "--no-maglev-inlining"]


def _loop_s(out: str) -> float:
    return int(re.search(r"loop_ns (\d+)", out).group(1)) / 1e9  # type: ignore[union-attr]


def _requests_s(port: int, n: int) -> float:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t = time.perf_counter()
    for i in range(n):
        conn.request("GET", f"/item/{i}")
        conn.getresponse().read()
    conn.close()
    return time.perf_counter() - t


def _server_run(node: str, srv_js: Path, requests: int, tracer: str | None) -> float:
    """Seconds for `requests` requests to a fresh server warmed up by 200, traced by `tracer` (None,
    "utrace": --pid js:handle --count, "bpftrace": a count on the two builtins utrace probes)."""
    srv = subprocess.Popen([node, str(srv_js)], stdout=subprocess.PIPE, text=True)
    tr: subprocess.Popen[str] | None = None
    try:
        assert srv.stdout is not None
        port = int(srv.stdout.readline().split()[1])
        _requests_s(port, 200)  # warm up
        if tracer == "utrace":
            tr = subprocess.Popen(
                [*UTRACE, "node", "--pid", str(srv.pid), "js:handle", "--count"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            )  # fmt: skip
            ready, stream = "attached", tr.stderr
        elif tracer == "bpftrace":
            prog = (
                f"uprobe:{node}:Builtins_InterpreterEntryTrampoline /pid == {srv.pid}/ {{ @t = count(); }} "
                f"uprobe:{node}:Builtins_BaselineOutOfLinePrologue /pid == {srv.pid}/ {{ @b = count(); }}"
            )
            tr = subprocess.Popen(
                ["bpftrace", "-e", prog], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            ready, stream = "Attaching", tr.stdout
        if tr is not None:
            assert stream is not None
            while ready not in (stream.readline() or ready):
                pass
        return _requests_s(port, requests)
    finally:
        if tr is not None:
            tr.send_signal(signal.SIGINT)
            tr.wait(timeout=60)
        srv.kill()
        srv.wait()


def bench_js(calls: int, requests: int) -> list[tuple[str, float, float]]:
    """(j) JavaScript calls counted in the kernel (node 22): the call-heavy loop's own time (measured by
    the script) untraced, untraced with the V8 flags utrace adds, and under `utrace node js:priceOf
    --count`; then `requests` HTTP requests to a server, untraced and traced by --pid (js:handle)."""
    node = str(Path.home() / ".cache" / "utrace" / "realworld" / "node-22" / "bin" / "node")
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as d:
        hot = Path(d) / "hot.js"
        hot.write_text(JS_HOT)
        run = lambda cmd: subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
        base = _loop_s(run([node, str(hot), str(calls)]))
        rows.append((f"call-heavy loop ({calls:,} calls), untraced", base, 1.0))
        flagged = _loop_s(run([node, *JS_FLAGS, str(hot), str(calls)]))
        rows.append(("  untraced, with utrace's V8 flags", flagged, flagged / base))
        traced = _loop_s(run([*UTRACE, "node", "js:priceOf", "--count", "--", node, str(hot), str(calls)]))
        rows.append(("  utrace node js:priceOf --count", traced, traced / base))
        if shutil.which("bpftrace"):
            # the floor: the same two builtins probed with nothing done but a count (no name, no filter)
            prog = (
                f"uprobe:{node}:Builtins_InterpreterEntryTrampoline /pid == cpid/ {{ @t = count(); }} "
                f"uprobe:{node}:Builtins_BaselineOutOfLinePrologue /pid == cpid/ {{ @b = count(); }}"
            )
            cmd = " ".join([node, *JS_FLAGS, str(hot), str(calls)])
            floor = _loop_s(run(["bpftrace", "-e", prog, "-c", cmd]))
            rows.append(("  bpftrace count() on the same two builtins (every call)", floor, floor / base))
        srv_js = Path(d) / "server.js"
        srv_js.write_text(JS_SERVER)
        # each configuration gets a server of its own, warmed up the same way: one server measured in
        # turn would be warmer (more of it optimised by V8) for whatever is measured later
        sbase = _server_run(node, srv_js, requests, None)
        rows.append((f"HTTP server, {requests:,} requests, untraced", sbase, 1.0))
        straced = _server_run(node, srv_js, requests, "utrace")
        rows.append(("  traced by --pid (js:handle --count)", straced, straced / sbase))
        if shutil.which("bpftrace"):
            # the floor again: the server's calls of the same two builtins only counted
            bfloor = _server_run(node, srv_js, requests, "bpftrace")
            rows.append(("  bpftrace count() on the same two builtins", bfloor, bfloor / sbase))
    return rows


TABLES = ("listing", "stream", "count", "first", "many", "startup", "list-json", "tty", "names", "js")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", choices=TABLES, action="append", help="run only this table (repeatable)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.md"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (tracing)")
    # as installed: with the bytecode compiled once (not compiled again by every command measured)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "utrace")], check=True)
    only = set(args.only or TABLES)
    lines = [f"# utrace benchmarks ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, median of {args.reps})", ""]
    listing_reps = max(9, args.reps + 2)  # a listing takes ~0.3 s: more rounds, a steadier median
    if "listing" in only:
        lines += [
            f"## (a) listing node's functions (median of {listing_reps})",
            "",
            "| command | wall s | ratio to bpftrace (median of each round's) |",
            "|---|---|---|",
        ]
        for name, t, ratio in bench_listing(listing_reps):
            lines.append(f"| {name} | {t:.2f} | {ratio} |")
        lines.append("")
    if "stream" in only:
        lines += [f"## (b) {args.calls:,} calls of hot(i, j) streamed with both arguments", ""]
        lines += [
            "| tracer | wall s | delivered | lost | wall ratio to bpftrace | tracer CPU s | CPU ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        rows = bench_stream(args.calls, args.reps)
        cpu = cpu_rows(args.calls, args.reps)
        base = next(t for n, t, _d, _l in rows if n.startswith("bpftrace"))
        cbase = cpu["bpftrace printf"]
        for name, t, delivered, lost in rows:
            c = cpu.get(name)
            cs = f"{c:.2f} | {c / cbase:.2f}" if c is not None else "- | -"
            lines.append(f"| {name} | {t:.2f} | {delivered:,} | {lost:,} | {t / base:.2f} | {cs} |")
        lines.append("")
    if "count" in only:
        lines += [f"## (c) {args.calls:,} calls of hot(i, j) counted in the kernel", ""]
        lines += ["| tracer | wall s | counted | wall ratio to bpftrace |", "|---|---|---|---|"]
        crows = bench_count(args.calls, args.reps)
        cbase = crows[0][1]
        for name, t, counted in crows:
            lines.append(f"| {name} | {t:.2f} | {counted:,} | {t / cbase:.2f} |")
        lines.append("")
    if "first" in only:
        lines += ["## (d) command to first event (tracers started by path while `hot 1` runs 100 times a second)"]
        lines += ["", "| tracer | to probes armed s | to first event s | ratio to bpftrace |", "|---|---|---|---|"]
        frows = bench_first_event(args.reps + 2)
        fbase = frows[0][2]
        for name, armed, first in frows:
            a = f"{armed:.2f}" if armed is not None else "-"
            lines.append(f"| {name} | {a} | {first:.2f} | {first / fbase:.2f} |")
        lines.append("")
    if "many" in only:
        lines += [f"## (e) node's {MANY} functions (52), counted in a run of node the tracer launches", ""]
        lines += ["| tracer | command to exit s | probes | calls counted | ratio to bpftrace |"]
        lines += ["|---|---|---|---|---|"]
        erows = bench_many_probes(args.reps)
        ebase = erows[0][1]
        for name, wall, probes, counted in erows:
            lines.append(f"| {name} | {wall:.2f} | {probes} | {counted} | {wall / ebase:.2f} |")
        lines.append("")
    startup_reps = max(5, args.reps + 2) if args.reps >= 3 else args.reps  # (fewer: a trial run)
    for table, fn in (("startup", bench_startup), ("list-json", bench_list_json), ("tty", bench_tty)):
        if table in only:
            lines += [*fn(startup_reps), ""]
    if "js" in only:
        lines += ["## (j) JavaScript functions counted in the kernel (node 22, one run)", ""]
        lines += ["| workload | s | ratio to untraced |", "|---|---|---|"]
        for name, t, ratio in bench_js(args.calls, 2000):
            lines.append(f"| {name} | {t:.3f} | {ratio:.2f} |")
        lines.append("")
    if "names" in only:
        lines += [*bench_names(startup_reps), ""]
    text = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
