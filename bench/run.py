"""Side-by-side benchmarks: utrace against bpftrace 0.17 and bcc 0.26 on the same workloads, in one run.

Prints ratios (utrace / incumbent) with medians of repeated runs, because these machines are noisy.
  (a) listing node's functions: utrace cold cache, utrace warm cache, `bpftrace -l 'uprobe:node:*'`
  (b) 200,000 calls of a hot C function streamed to user space with both arguments:
      events delivered, lost, wall time (command start to the last event written)
  (c) the same calls counted in the kernel: utrace --count against bpftrace's count()
Usage: python bench/run.py [--quick] [--calls N] [--reps N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
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
    b = statistics.median(bt)
    return [
        ("bpftrace -l 'uprobe:node:*'", b, "1.00"),
        ("utrace list node (cold cache)", statistics.median(cold), f"{statistics.median(cold) / b:.2f}"),
        ("utrace list node (warm cache)", statistics.median(warm), f"{statistics.median(warm) / b:.2f}"),
    ]


def _count_lines(path: Path, prefix: str = "") -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.startswith(prefix.encode()))


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
    from utrace.kernel import prepare_bcc_headers

    prepare_bcc_headers()  # bcc needs headers too; the same merged tree utrace uses
    with open(out, "w") as f:
        t = time.perf_counter()
        tr = subprocess.Popen([trace, f'{HOT}:hot "%ld %ld", arg1, arg2'], stdout=f, stderr=subprocess.DEVNULL)
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
        tr.terminate()
        tr.wait()
        wall = time.perf_counter() - t
    delivered = _count_lines(out) - 1
    return wall, delivered, calls - delivered


def count_bpftrace(calls: int) -> tuple[float, int]:
    t = time.perf_counter()
    p = subprocess.run(
        ["bpftrace", "-e", f"uprobe:{HOT}:hot {{ @calls = count(); }}", "-c", f"{HOT} {calls}"],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - t
    m = re.search(r"@calls: (\d+)", p.stdout)
    return wall, int(m.group(1)) if m else 0


def count_utrace(calls: int) -> tuple[float, int]:
    t = time.perf_counter()
    p = subprocess.run(
        [*UTRACE, "native", str(HOT), "hot", "--count", "--json", "--", str(HOT), str(calls)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    wall = time.perf_counter() - t
    counts = [json.loads(line) for line in p.stdout.splitlines() if line.startswith('{"kind": "count"')]
    return wall, sum(int(c["count"]) for c in counts)


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.md"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (tracing)")
    lines = [f"# utrace benchmarks ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, median of {args.reps})", ""]
    lines += ["## (a) listing node's functions", "", "| command | wall s | ratio to bpftrace |", "|---|---|---|"]
    for name, t, ratio in bench_listing(args.reps + 2):
        lines.append(f"| {name} | {t:.2f} | {ratio} |")
    lines += ["", f"## (b) {args.calls:,} calls of hot(i, j) streamed with both arguments", ""]
    lines += ["| tracer | wall s | delivered | lost | wall ratio to bpftrace |", "|---|---|---|---|---|"]
    rows = bench_stream(args.calls, args.reps)
    base = next(t for n, t, _d, _l in rows if n.startswith("bpftrace"))
    for name, t, delivered, lost in rows:
        lines.append(f"| {name} | {t:.2f} | {delivered:,} | {lost:,} | {t / base:.2f} |")
    lines += ["", f"## (c) {args.calls:,} calls of hot(i, j) counted in the kernel", ""]
    lines += ["| tracer | wall s | counted | wall ratio to bpftrace |", "|---|---|---|---|"]
    crows = bench_count(args.calls, args.reps)
    cbase = crows[0][1]
    for name, t, counted in crows:
        lines.append(f"| {name} | {t:.2f} | {counted:,} | {t / cbase:.2f} |")
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
