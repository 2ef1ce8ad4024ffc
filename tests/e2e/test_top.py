"""--top: live counts from the kernel, checked against the traced program's own printout of its calls,
piped (plain snapshots), on a pseudo-terminal (the redrawn view), and stopped by SIGTERM."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Background, run_utrace, uprobe_events, utrace_cmd

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CALLS = re.compile(r"calls (\d+) sum -?\d+")


def hot(build: Path) -> str:
    return str(build / "c" / "hot")


def parse_snapshots(stdout: str) -> list[tuple[str, list[list[str]]]]:
    """Plain --top output -> [(header, rows split on whitespace)], skipping the program's own lines."""
    out = []
    for block in stdout.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not CALLS.fullmatch(line)]
        if not lines:
            continue
        assert lines[0].startswith("# ") and lines[1].split()[:3] == ["probe", "pid", "comm"], block
        out.append((lines[0], [line.split() for line in lines[2:]]))
    return out


def elapsed(header: str) -> float:
    m = re.search(r"  ([\d.]+)s elapsed", header)
    assert m, header
    return float(m.group(1))


@pytest.mark.usefixtures("root_bpf")
def test_piped_snapshots_grow_to_the_programs_own_count(fixtures_built: Path) -> None:
    exe = hot(fixtures_built)
    p = run_utrace("native", exe, "hot", "--top", "--interval", "0.4", "--", exe, "600000", timeout=180)
    assert p.returncode == 0, p.stderr
    said = CALLS.search(p.stdout)
    assert said, p.stdout
    launched = re.search(r"launched pid (\d+)", p.stderr)
    assert launched, p.stderr
    snaps = parse_snapshots(p.stdout)
    assert len(snaps) >= 3, p.stdout  # 600,000 uprobe hits take well over 1.2 s here (~190,000 a second)
    *periodic, (final_head, final_rows) = snaps
    assert final_head.endswith("  final") and not any(h.endswith("final") for h, _ in periodic)
    totals = []
    for _head, rows in periodic:
        assert len(rows) <= 1  # one probe, one process (none before its first call)
        totals.append(int(rows[0][3]) if rows else 0)
    assert totals == sorted(totals) and totals[-1] > 0, totals
    (row,) = final_rows
    assert row[:3] == ["hot", launched.group(1), "hot"]
    assert int(row[3]) == int(said.group(1)) == 600000 >= totals[-1]
    # each interval's calls/s is that interval's new calls over its length (elapsed shown to 0.01 s)
    for (h0, _), (h1, rows1), t0, t1 in zip(periodic, periodic[1:], totals, totals[1:], strict=False):
        if rows1:
            expected = (t1 - t0) / (elapsed(h1) - elapsed(h0))
            assert abs(float(rows1[0][4]) - expected) <= 0.05 * expected + 50, (h0, h1, rows1, t0, t1)
    last = p.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"600000 events, 0 lost, [\d.]+s, stopped by target exited, traced program exited with 0", last)
    assert uprobe_events() == ""


def read_pty(master: int, proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """Everything written to the terminal until the process ends (reading keeps it from blocking)."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            data += chunk
        elif proc.poll() is not None:
            break
    return data


@pytest.mark.usefixtures("root_bpf")
def test_live_view_redraws_on_a_terminal_and_ends_on_the_programs_count(fixtures_built: Path) -> None:
    exe = hot(fixtures_built)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 160, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "30"}
    for var in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(var, None)
    cmd = utrace_cmd("native", exe, "hot", "--top", "--interval", "0.3", "--", exe, "150000")
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    os.close(slave)
    try:
        raw = read_pty(master, proc, timeout=180)
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    screen = raw.decode("utf-8", "replace")
    said = CALLS.search(screen)
    assert said, screen
    assert "\x1b[?25l" in screen and screen.rstrip().endswith("\x1b[?25h")  # cursor hidden, then given back
    frames = ANSI.sub("", screen).replace("\r", "").split("utrace top")[1:]
    assert len(frames) >= 4, screen  # the empty first frame, several intervals, the final table
    assert "no calls yet" in frames[0]
    totals = []
    for frame in frames[1:]:
        row = re.search(r"^hot +(\d+) +hot +(\d+) +[\d.]+$", frame, re.M)
        assert row, frame
        totals.append(int(row.group(2)))
    assert totals == sorted(totals), totals
    assert "final" in frames[-1] and "avg calls/s" in frames[-1]
    assert totals[-1] == int(said.group(1)) == 150000
    # redrawn in place: between frames the cursor climbs back over the previous one
    assert screen.count("\x1b[1A") >= len(frames) - 2, screen
    assert err.strip().splitlines()[-1].startswith("150000 events, 0 lost"), err
    assert uprobe_events() == ""


@pytest.mark.usefixtures("root_bpf")
def test_sigterm_stops_top_with_a_final_snapshot(fixtures_built: Path, background: list[Background]) -> None:
    exe = hot(fixtures_built)
    b = Background("native", exe, "hot", "--top", "--interval", "0.3", "--", exe, "1000000000")
    background.append(b)
    b.wait_attached()
    time.sleep(2.0)
    b.proc.send_signal(signal.SIGTERM)
    out, err, rc = b.finish(timeout=60)
    assert rc == 0, err
    snaps = parse_snapshots(out)
    assert len(snaps) >= 3 and snaps[-1][0].endswith("  final"), out
    totals = [int(rows[0][3]) if rows else 0 for _head, rows in snaps]
    assert totals == sorted(totals) and totals[-1] > 0, totals
    assert "stopped by SIGTERM" in err.strip().splitlines()[-1], err
    assert uprobe_events() == ""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--top", "--count"], "--top and --count exclude each other"),
        (["--top", "--hist"], "--top and --hist exclude each other"),
        (["--top", "--json"], "--top and --json exclude each other"),
        (["--top", "--max-events", "5"], "--max-events applies to streamed events, not to --top"),
        (["--interval", "2"], "--interval applies to --top"),
        (["--top", "--interval", "0"], "--interval must be between 0.1 and 3600 seconds"),
        (["--top", "--interval", "nan"], "--interval must be between 0.1 and 3600 seconds"),
    ],
)
def test_bad_top_requests_exit_2_with_one_line(fixtures_built: Path, extra: list[str], message: str) -> None:
    exe = hot(fixtures_built)
    p = run_utrace("native", exe, "hot", *extra, "--", exe, "10")
    assert p.returncode == 2, p.stderr
    (line,) = p.stderr.splitlines()
    assert line.startswith(f"utrace: error: {message}"), line
    assert p.stdout == ""
