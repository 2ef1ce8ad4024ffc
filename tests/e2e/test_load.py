"""Under sustained load and at the ends: a probe on a function called in a tight loop (fixtures/c/hot.c,
~10^5-10^6 events a second, more than the reader can decode) must leave utrace responsive to every stop
condition, with bounded memory, its output written as it goes and the unread events counted as lost;
and a broken pipe, a full disk, /dev/full and a closed stdout must end it cleanly.

Oracles: the kernel's /proc (VmHWM, the traced process's text and state), `nm` (where `hot` is), and
what `hot` itself prints ("calls N sum S", written to a file here, and its exit status).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, load_base, need, read_text_byte, utrace_cmd

pytestmark = pytest.mark.usefixtures("root_bpf")

FLOOD = 2_000_000_000  # hot's calls: far more than any run here lets it make while traced
MEMORY_BOUND = 300 * 1024 * 1024
STOP_WITHIN_S = 2.5  # the design is ~1 s (a 0.05 s read turn, the probes' removal, a 0.3 s drain); slack for CI


@pytest.fixture
def hot(tmp_path: Path, fixtures_built: Path) -> Path:
    """A private copy of the fixture: nobody else's probe on fixtures/build/c/hot can be in its text."""
    src = fixtures_built / "c" / "hot"
    need(src.exists(), "fixtures/build/c/hot not built")
    dst = tmp_path / "hot"
    shutil.copy2(src, dst)
    return dst


def hot_sum(n: int) -> int:
    """What hot prints as its sum for N calls: the sum of i ^ (i + 1) for i < n. i ^ (i + 1) is
    2^(t+1) - 1 where t is the number of trailing one bits of i, and i has exactly t of them when
    i = 2^t - 1 (mod 2^(t+1))."""
    total = 0
    for t in range(64):
        first, step = (1 << t) - 1, 1 << (t + 1)
        if first < n:
            total += ((n - first + step - 1) // step) * ((1 << (t + 1)) - 1)
    return total


def test_hot_sum_matches_a_direct_sum() -> None:
    for n in (0, 1, 2, 3, 7, 8, 1000, 4097):
        assert hot_sum(n) == sum(i ^ (i + 1) for i in range(n))


class Run:
    """utrace in the background: stderr read line by line, peak memory (VmHWM) sampled until it exits."""

    def __init__(self, args: list[str], stdout: int | None = None) -> None:
        self.proc = subprocess.Popen(utrace_cmd(*args), stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        self.peak_kb = 0
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._sample, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def _sample(self) -> None:
        path = f"/proc/{self.proc.pid}/status"
        while self.proc.poll() is None:
            try:
                for line in Path(path).read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            time.sleep(0.05)

    def wait_line(self, word: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.err.append(line)
            if word in line:
                return line
        raise AssertionError(f"no {word!r} from utrace: {''.join(self.err)}")

    def wait(self, timeout: float) -> int:
        """The exit code; the process is killed (and the test fails) when it does not end in time."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"utrace did not stop within {timeout:.1f}s: {''.join(self.err)}") from None

    def stderr(self) -> str:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                self.err.append(self.lines.get(timeout=0.1))
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
        return "".join(self.err)


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def launched_pid(line: str) -> int:
    return int(line.split("launched pid ")[1].split(")")[0])


def gone(pid: int, exe: Path) -> bool:
    """True when `pid` is no longer a running `exe` (exited and reaped, or a zombie)."""
    try:
        if os.readlink(f"/proc/{pid}/exe") != str(exe):
            return True
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state == "Z"
    except OSError:
        return True


def kill_if_running(pid: int, exe: Path) -> None:
    if not gone(pid, exe):
        os.kill(pid, signal.SIGKILL)


def json_lines(path: Path) -> list[dict[str, object]]:
    text = path.read_text()
    assert text.endswith("\n"), f"the last line is cut: {text[-200:]!r}"
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("how", ["duration", "SIGINT", "SIGTERM", "SIGHUP"])
def test_a_flood_of_events_leaves_every_stop_honoured_and_memory_bounded(
    how: str, hot: Path, tmp_path: Path, runs: list[Run]
) -> None:
    out = tmp_path / "trace.json"
    d = 3.0
    args = ["native", str(hot), "hot", "--json", "-o", str(out)]
    args += ["-d", str(d)] if how == "duration" else []
    run = Run([*args, "--", str(hot), str(FLOOD)], stdout=subprocess.DEVNULL)
    runs.append(run)
    pid = launched_pid(run.wait_line("attached"))
    attached = time.monotonic()
    try:
        if how == "duration":
            rc = run.wait(d + STOP_WITHIN_S)
            took = time.monotonic() - attached - d
        else:
            time.sleep(d)
            written = out.stat().st_size
            assert written > 0, "events are written as they come, not kept until the end"
            run.proc.send_signal(getattr(signal, how))
            sent = time.monotonic()
            rc = run.wait(STOP_WITHIN_S)
            took = time.monotonic() - sent
        err = run.stderr()
        assert rc == 0, err
        assert took < STOP_WITHIN_S
        assert run.peak_kb * 1024 < MEMORY_BOUND, f"peak RSS {run.peak_kb} kB"
        assert "Traceback" not in err
        objs = json_lines(out)
        summary = objs[-1]
        assert summary["kind"] == "summary"
        calls = [o for o in objs[:-1] if o["kind"] == "call"]
        assert len(calls) == len(objs) - 1 == summary["events"]
        assert summary["stopped_by"] == how
        assert isinstance(summary["lost"], int) and summary["lost"] > 0, "the flood outran the reader: some lost"
        # hot(i, i + 1) in order on one thread: what was read is a strictly increasing run of i
        firsts = [c["args"]["arg0"] for c in calls]  # type: ignore[index]
        assert firsts == sorted(set(firsts))
        signum = {"SIGINT": signal.SIGINT, "SIGHUP": signal.SIGHUP}.get(how, signal.SIGTERM)
        assert summary["exit_code"] == -signum, "the launched program ends on the signal a shell would send"
        assert gone(pid, hot)
    finally:
        kill_if_running(pid, hot)


def test_events_and_lost_add_up_to_the_calls_made(hot: Path, tmp_path: Path, runs: list[Run]) -> None:
    """hot ends by itself while the ring is full: what was read, what the kernel could not reserve and
    what was left unread add up to the calls hot says it made."""
    out, printed = tmp_path / "trace.json", tmp_path / "hot.out"
    n = 1_000_000
    run = Run(["native", str(hot), "hot", "--json", "-o", str(out), "--buffer-mb", "1", "--", "sh", "-c",
               'exec "$0" "$1" > "$2"', str(hot), str(n), str(printed)])  # fmt: skip
    runs.append(run)
    run.wait_line("attached")
    rc = run.wait(300)
    err = run.stderr()
    assert rc == 0, err
    assert printed.read_text() == f"calls {n} sum {hot_sum(n)}\n"
    objs = json_lines(out)
    summary = objs[-1]
    assert summary["stopped_by"] == "target exited" and summary["exit_code"] == 0, summary
    assert len(objs) - 1 == summary["events"]
    assert summary["lost"] > 0, "the flood outran the reader: some lost"  # type: ignore[operator]
    assert summary["events"] + summary["lost"] == n  # type: ignore[operator]
    assert run.peak_kb * 1024 < MEMORY_BOUND, f"peak RSS {run.peak_kb} kB"


def test_a_broken_pipe_ends_tracing_and_the_program_runs_to_its_end(hot: Path, tmp_path: Path, runs: list[Run]) -> None:
    """`utrace ... -- prog | head -1`: the reader leaves after one line."""
    need(shutil.which("nm") is not None, "binutils not installed")
    nm = subprocess.run(["nm", "--defined-only", str(hot)], capture_output=True, text=True, check=True).stdout
    address = next(int(f[0], 16) for f in (ln.split() for ln in nm.splitlines()) if f[1:] == ["T", "hot"])
    printed = tmp_path / "hot.out"
    run = Run(["native", str(hot), "hot", "--json", "--", "sh", "-c", 'exec "$0" "$1" > "$2"',
               str(hot), str(FLOOD), str(printed)], stdout=subprocess.PIPE)  # fmt: skip
    runs.append(run)
    pid = launched_pid(run.wait_line("attached"))
    try:
        assert run.proc.stdout is not None
        first = json.loads(run.proc.stdout.readline())
        assert first["kind"] == "call" and first["probe"] == "hot"
        addr = load_base(pid, str(hot)) + address
        assert read_text_byte(pid, addr) == 0xCC, "traced: the uprobe's breakpoint is in hot's text"
        run.proc.stdout.close()  # what head does after its line
        closed = time.monotonic()
        while read_text_byte(pid, addr) == 0xCC:
            assert time.monotonic() - closed < STOP_WITHIN_S, "probes still attached after the pipe broke"
            assert not gone(pid, hot), "hot ended while still traced (the flood is meant to last)"
            time.sleep(0.05)
        assert not gone(pid, hot), "hot runs on untraced"
        rc = run.wait(600)  # utrace waits for it: hot's remaining calls, untraced (~3 ns each)
        err = run.stderr()
        assert rc == 0, err
        assert "Traceback" not in err and "error" not in err, err
        assert "stopped by output closed, traced program exited with 0" in err, err
        assert printed.read_text() == f"calls {FLOOD} sum {hot_sum(FLOOD)}\n", "hot ran to its end, not killed"
    finally:
        if not gone(pid, hot):
            os.kill(pid, signal.SIGKILL)


def one_error_line(err: str, reason: str) -> None:
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if "error" in ln]
    assert len(errors) == 1 and errors[0].startswith("utrace: error: cannot write ") and reason in errors[0], err
    assert "internal error" not in err


@pytest.mark.parametrize("fmt", ["--json", "--format=text", "--format=perfetto", "--top"])
def test_dev_full_is_one_clear_line(fmt: str, hot: Path, runs: list[Run]) -> None:
    run = Run(["native", str(hot), "hot", fmt, "-o", "/dev/full", "--", str(hot), str(FLOOD)],
              stdout=subprocess.DEVNULL)  # fmt: skip
    runs.append(run)
    pid = launched_pid(run.wait_line("attached"))
    try:
        rc = run.wait(60)
        err = run.stderr()
        assert rc == 6, err
        one_error_line(err, "No space left on device")
        assert gone(pid, hot), "the launched program is not left running"
    finally:
        kill_if_running(pid, hot)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a real file system that fills up (write(2) takes what fits, then ENOSPC)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    need(p.returncode == 0, f"cannot mount a tmpfs: {p.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_one_clear_line_and_the_file_stays_valid(hot: Path, small_disk: Path, runs: list[Run]) -> None:
    out = small_disk / "trace.json"
    run = Run(["native", str(hot), "hot", "--json", "-o", str(out), "--", str(hot), str(FLOOD)],
              stdout=subprocess.DEVNULL)  # fmt: skip
    runs.append(run)
    pid = launched_pid(run.wait_line("attached"))
    try:
        rc = run.wait(60)
        err = run.stderr()
        assert rc == 6, err
        one_error_line(err, "No space left on device")
        assert out.stat().st_size > 128 * 1024, "it wrote until the disk was full"
        objs = json_lines(out)  # every line whole, the last one too
        assert objs and all(o["kind"] == "call" for o in objs)
        assert gone(pid, hot)
    finally:
        kill_if_running(pid, hot)


def test_a_closed_stdout_is_one_clear_line(hot: Path) -> None:
    marker = hot.parent / "ran"
    p = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *utrace_cmd("native", str(hot), "hot", "--json", "--",
                                                         "sh", "-c", 'touch "$0"', str(marker))],
        capture_output=False, stderr=subprocess.PIPE, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert p.returncode == 6, p.stderr
    one_error_line(p.stderr, "standard output")
    assert not marker.exists(), "nothing is launched when the trace has nowhere to go"


def test_the_launched_program_meets_a_broken_pipe_as_it_would_from_a_shell(hot: Path, tmp_path: Path) -> None:
    """It shares utrace's stdout: once the reader is gone its own write ends it with SIGPIPE, as it
    does in `hot N | head -1` (Python ignores SIGPIPE, and that must not be inherited)."""
    n = 20_000
    script = f'(sleep 1; exec "$@") | head -c 0; echo "${{PIPESTATUS[0]}}" > {tmp_path / "shell"}'
    subprocess.run(["bash", "-c", script, "bash", str(hot), str(n)], check=True, timeout=60)
    shell = int((tmp_path / "shell").read_text())
    assert shell == 128 + signal.SIGPIPE  # the shell's own account: hot died of SIGPIPE
    reader = subprocess.Popen(["head", "-c", "0"], stdin=subprocess.PIPE)
    assert reader.stdin is not None
    reader.wait(timeout=30)
    p = subprocess.run(utrace_cmd("native", str(hot), "hot", "--", str(hot), str(n)), stdout=reader.stdin,
                       stderr=subprocess.PIPE, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    reader.stdin.close()
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert f"traced program exited with {-signal.SIGPIPE}" in p.stderr, p.stderr


def test_a_flood_from_distribution_binaries_stops_on_sigint_with_bounded_memory(
    tmp_path: Path, runs: list[Run]
) -> None:
    """Debian's CPython calling Debian's libc getpid() in a loop (a call through the PLT: nothing inlines it)."""
    python = "/usr/bin/python3.11"
    libc = os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")
    need(os.path.exists(python) and os.path.exists(libc), f"{python} or {libc} is not installed")
    out = tmp_path / "trace.json"
    loop = "import os\nwhile True: os.getpid()"
    run = Run(["native", libc, "getpid", "--json", "-o", str(out), "--", python, "-c", loop],
              stdout=subprocess.DEVNULL)  # fmt: skip
    runs.append(run)
    pid = launched_pid(run.wait_line("attached"))
    try:
        time.sleep(3)
        assert out.stat().st_size > 0, "events are written as they come"
        run.proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        rc = run.wait(STOP_WITHIN_S)
        took = time.monotonic() - sent
        err = run.stderr()
        assert rc == 0 and took < STOP_WITHIN_S, err
        assert run.peak_kb * 1024 < MEMORY_BOUND, f"peak RSS {run.peak_kb} kB"
        objs = json_lines(out)
        summary = objs[-1]
        assert summary["kind"] == "summary" and summary["stopped_by"] == "SIGINT"
        calls = objs[:-1]
        assert len(calls) == summary["events"] and summary["lost"] > 0  # type: ignore[operator]
        assert {(c["probe"], c["pid"], c["tid"]) for c in calls} == {("getpid", pid, pid)}
        stamps = [c["ts_ns"] for c in calls]
        assert stamps == sorted(set(stamps)), "one thread's calls, in order, none twice"  # type: ignore[type-var]
        assert gone(pid, Path(python))
    finally:
        kill_if_running(pid, Path(python))
