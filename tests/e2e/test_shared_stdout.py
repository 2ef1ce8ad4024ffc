"""A launched program writes to the same stdout as the trace: neither may cut the other's lines.

CI once saw a JVM's printout land in the middle of a JSON event line. The oracle here is the
writer's own lines (each must come out whole and each exactly once) and `hot`'s printout; every
other line must be one whole event of ours.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import run_utrace

LINE = "program line, written whole by one write()"
WRITER = f"""
import os, sys, time
for _ in range(int(sys.argv[1])):
    os.write(1, {(LINE + chr(10)).encode()!r})
    time.sleep(0.00002)
"""
CALLS = 100_000
WRITES = 20_000
TEXT_EVENT = re.compile(r"^ *\d+\.\d{6} +\d+ +\d+ hot +-> hot arg0=\d+ arg1=\d+ ")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_trace_and_program_lines_stay_whole_on_one_pipe(fixtures_built: Path, tmp_path: Path, fmt: str) -> None:
    hot = str(fixtures_built / "c" / "hot")
    writer = tmp_path / "writer.py"
    writer.write_text(WRITER)
    # the writer runs alongside the traced calls and shares the pipe utrace's events go to
    script = f"{sys.executable} {writer} {WRITES} & sleep 0.1; exec {hot} {CALLS}"
    p = run_utrace("native", hot, "hot", "--format", fmt, "--", "sh", "-c", script, check=True)
    program, events, broken = 0, 0, []
    said = None
    for line in p.stdout.splitlines():
        if line == LINE:
            program += 1
        elif line.startswith("calls "):
            said = line
        elif fmt == "json":
            try:
                ev = json.loads(line)
            except ValueError:
                broken.append(line)
                continue
            events += ev["kind"] == "call"
        elif TEXT_EVENT.match(line):
            events += 1
        else:
            broken.append(line)
    assert not broken, f"{len(broken)} cut line(s), e.g. {broken[:3]}"
    assert said == f"calls {CALLS} sum {sum(i ^ (i + 1) for i in range(CALLS))}"
    assert program == WRITES and events == CALLS
