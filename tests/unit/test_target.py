"""Process targets read from the real /proc, and how namespace ids are shown (no root needed)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from utrace.model import Event
from utrace.output.stream import JsonReporter, TextReporter
from utrace.process.target import NamespaceIds, exe_identity, process_target


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    sleep = shutil.which("sleep")
    assert sleep is not None
    exe = tmp_path / "prog"
    shutil.copy(sleep, exe)
    proc = subprocess.Popen([str(exe), "30"])
    try:
        deadline = time.monotonic() + 30
        # until the exec has happened and mapped the file (/proc/PID/exe changes a moment before)
        while str(exe) not in Path(f"/proc/{proc.pid}/maps").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield proc, exe
    finally:
        proc.kill()
        proc.wait()


def test_process_target_reads_the_file_the_process_runs(sleeper: tuple[subprocess.Popen[bytes], Path]) -> None:
    proc, exe = sleeper
    t = process_target(proc.pid)
    assert t.modules[0].display == str(exe)
    assert t.modules[0].path == f"/proc/{proc.pid}/root{exe}"


def test_process_target_after_the_file_was_replaced(sleeper: tuple[subprocess.Popen[bytes], Path]) -> None:
    """An upgrade renamed a new file over the path: the path now names a file the process does not run."""
    proc, exe = sleeper
    before = exe_identity(proc.pid)
    new = exe.with_name("new")
    shutil.copy(exe, new)
    os.rename(new, exe)
    assert os.stat(exe).st_ino != os.stat(f"/proc/{proc.pid}/exe").st_ino
    t = process_target(proc.pid)
    assert t.modules[0].display == str(exe)
    assert t.modules[0].path == t.exe == f"/proc/{proc.pid}/exe"
    assert exe_identity(proc.pid) == before  # still the same program: not an exec


def test_namespace_ids_of_a_process_in_our_namespace() -> None:
    ev = Event("call", "f", os.getpid(), os.getpid(), "python", 1, 0, {})
    assert NamespaceIds().annotate(ev) is ev


def _event(**kw: object) -> Event:
    return Event("call", "f", 4242, 4250, "prog", 5, 0, {"a": 1}, **kw)  # type: ignore[arg-type]


def test_text_shows_host_and_namespace_ids() -> None:
    out = io.StringIO()
    r = TextReporter(out, err=io.StringIO(), color=False)
    r.event(_event(ns_pid=1, ns_tid=9))
    r.event(_event(ns_pid=1))  # a thread gone before its status could be read
    r.event(_event())
    r.flush()
    lines = out.getvalue().splitlines()
    assert lines[0].split()[1:4] == ["4242[1]", "4250[9]", "prog"]
    assert lines[1].split()[1:3] == ["4242[1]", "4250[?]"]
    assert lines[2].split()[1:4] == ["4242", "4250", "prog"]


def test_json_has_namespace_ids_only_where_they_differ() -> None:
    out = io.StringIO()
    j = JsonReporter(out, err=io.StringIO())
    j.event(_event(ns_pid=1, ns_tid=9))
    j.event(_event())
    j.flush()
    first, second = (json.loads(x) for x in out.getvalue().splitlines())
    assert (first["pid"], first["tid"], first["ns_pid"], first["ns_tid"]) == (4242, 4250, 1, 9)
    assert "ns_pid" not in second and "ns_tid" not in second
