"""`utrace list --pid PID --js GLOB`: the JavaScript functions a running node (official builds 20 and 26)
calls while watched, with their call counts.

Oracles: the program's own source (which functions it calls, each once per tick, in a loop that never
ends) and its own printout, which must go on, uninterrupted, after utrace has listed and left.

The program runs with `--max-opt=1`, the flag utrace gives a node it launches to keep functions out of V8's
optimising tiers: calls from code V8 has optimised (and inlined) are not seen in a running node, as the
listing says, so without it the functions this loop calls could vanish from the probes after a second.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT
from tests.e2e.test_js_node import official

pytestmark = pytest.mark.usefixtures("root_bpf")

PRICES = """\
function priceOf(item, qty) { return qty * 2 + item.length; }
function priceTotal(a, b) { return a + b; }
function other(a) { return a + 1; }
let n = 0, s = 0;
setInterval(() => {
  s = priceTotal(s, priceOf('pear', n & 7)) & 0xffff;
  s = other(s);
  n++;
  if (n % 10 === 0) console.log('tick ' + n);
}, 5);
"""


class Program:
    """The node program, its printout read (with the time of each line) by a thread."""

    def __init__(self, major: int, tmp_path: Path) -> None:
        script = tmp_path / "prices.js"
        script.write_text(PRICES)
        self.proc = subprocess.Popen(
            [str(official(major)), "--max-opt=1", str(script)], stdout=subprocess.PIPE, text=True
        )
        self.lines: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_tick_after(time.monotonic())

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.strip()))

    def wait_tick_after(self, t: float, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not any(at > t for at, _ in self.lines):
            assert self.proc.poll() is None, f"the program ended: {self.lines[-3:]}"
            assert time.monotonic() < deadline, "the program printed nothing"
            time.sleep(0.05)

    def unharmed(self) -> None:
        """Still running, and printing after utrace left, every tick in order."""
        self.wait_tick_after(time.monotonic() + 0.2)
        assert self.proc.poll() is None
        ticks = [int(line.split()[1]) for _, line in self.lines]
        assert ticks == list(range(10, 10 * len(ticks) + 1, 10)), ticks

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def utrace_list(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "utrace", "list", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


@pytest.mark.parametrize("major", (20, 26))
def test_lists_exactly_the_functions_matching(major: int, tmp_path: Path) -> None:
    prog = Program(major, tmp_path)
    try:
        p = utrace_list("--pid", str(prog.proc.pid), "--js", "price*", "--json")
        prog.unharmed()
    finally:
        prog.stop()
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    rows = {r["name"]: r for r in lines if r["kind"] == "js-function"}
    assert set(rows) == {"priceOf", "priceTotal"}, p.stdout  # `other` is called as often, and not listed
    # each tick calls both once: equal, but for a tick cut by the window's start or end
    assert rows["priceOf"]["calls"] >= 50 and abs(rows["priceOf"]["calls"] - rows["priceTotal"]["calls"]) <= 1
    window = [r for r in lines if r["kind"] == "js-window"]
    assert len(window) == 1 and window[0]["stopped_by"] == "duration" and window[0]["pid"] == prog.proc.pid
    assert "only functions called in that window are listed" in window[0]["note"]
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("major", (20, 26))
def test_a_glob_matching_nothing_names_the_closest_seen(major: int, tmp_path: Path) -> None:
    prog = Program(major, tmp_path)
    try:
        p = utrace_list("--pid", str(prog.proc.pid), "--js", "priceOff*", "--for", "1")
        prog.unharmed()
    finally:
        prog.stop()
    assert p.returncode == 2 and p.stdout == "", (p.stdout, p.stderr)
    errors = [line for line in p.stderr.splitlines() if line.startswith("utrace: error:")]
    assert len(errors) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "no JavaScript function matching 'priceOff*' was called" in errors[0]
    assert "closest names" in errors[0] and "priceOf" in errors[0], errors[0]


@pytest.mark.parametrize("major", (20, 26))
def test_ctrl_c_lists_what_was_seen_and_detaches(major: int, tmp_path: Path) -> None:
    """Ctrl-C during a long window: the probes are removed, what was seen so far is listed (plain text),
    and said to be cut short; the program runs on."""
    prog = Program(major, tmp_path)
    try:
        u = subprocess.Popen(
            [sys.executable, "-m", "utrace", "list", "--pid", str(prog.proc.pid), "--js", "other", "--for", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert u.stderr is not None
        first = u.stderr.readline()
        assert "watching the JavaScript calls" in first, first
        time.sleep(1)
        u.send_signal(signal.SIGINT)
        out, err = u.communicate(timeout=30)
        prog.unharmed()
    finally:
        prog.stop()
    assert u.returncode == 0, err
    assert out.startswith("# 1 JavaScript function matching 'other' called in pid"), out
    rows = out.splitlines()[1:]
    assert len(rows) == 1 and rows[0].split()[1] == "other" and int(rows[0].split()[0]) > 0, out
    assert "stopped by SIGINT after" in err, err
