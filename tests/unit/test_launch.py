"""Scripts resolved to the ELF they run (the kernel's `#!` rules, `env`), descendants from /proc, and
ending a process tree."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from utrace.errors import TargetError
from utrace.process.launch import descendants, end_tree, env_program, resolve_script, shebang


def _script(path: Path, first_line: bytes) -> Path:
    path.write_bytes(first_line + b"\necho hi\n")
    path.chmod(0o755)
    return path


def test_shebang_splits_as_the_kernel_does(tmp_path: Path) -> None:
    assert shebang(str(_script(tmp_path / "a", b"#!/bin/sh"))) == ("/bin/sh", None)
    # one optional argument: the rest of the line, inner spaces kept, outer ones stripped
    assert shebang(str(_script(tmp_path / "b", b"#! /usr/bin/env  -S node --x  \t"))) == (
        "/usr/bin/env",
        "-S node --x",
    )
    assert shebang(str(_script(tmp_path / "c", b"\x7fELF"))) is None
    assert shebang(str(_script(tmp_path / "d", b"#!"))) is None
    assert shebang(str(tmp_path / "missing")) is None


def test_env_program() -> None:
    assert env_program("node") == "node"
    assert env_program("node --flag") == "node --flag"  # without -S env looks up the whole argument
    assert env_program("-S node --flag") == "node"
    assert env_program("-S FOO=1 -u BAR python3 -u") == "python3"
    assert env_program("-S -i") is None
    assert env_program(None) is None


def test_resolve_script_follows_interpreters_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sh = os.path.realpath(shutil.which("sh") or "/bin/sh")
    env = shutil.which("env")
    assert env is not None
    assert resolve_script(sh) == sh  # an ELF file is itself
    direct = _script(tmp_path / "direct", f"#!{sh}".encode())
    assert resolve_script(str(direct)) == sh
    # a script whose interpreter is a script itself
    nested = _script(tmp_path / "nested", f"#!{direct}".encode())
    assert resolve_script(str(nested)) == sh
    # env finds the program on PATH, as the launched command will
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "mysh").symlink_to(sh)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ.get('PATH', '')}")
    via_env = _script(tmp_path / "via_env", f"#!{env} mysh".encode())
    assert resolve_script(str(via_env)) == sh
    with pytest.raises(TargetError, match="not on PATH"):
        resolve_script(str(_script(tmp_path / "nope", f"#!{env} no-such-program-here".encode())))
    with pytest.raises(TargetError, match="does not exist"):
        resolve_script(str(_script(tmp_path / "gone", b"#!/no/such/interpreter")))
    plain = tmp_path / "plain"
    plain.write_text("not a script\n")
    assert resolve_script(str(plain)) == str(plain)  # the caller says what it is not


def test_resolve_script_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert resolve_script(str(fifo)) == str(fifo)


TREE = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the children
if os.fork() == 0:
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
    time.sleep(60)
    os._exit(0)
print("forked", flush=True)
time.sleep(60)
"""


def test_descendants_and_end_tree() -> None:
    """A process with a child and a grandchild, all ignoring SIGTERM: both are found under it, all
    three get SIGTERM, and after the grace period SIGKILL."""
    proc = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "forked\n"
        deadline = time.monotonic() + 10
        while len(found := descendants(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(found) == 2, found
        start = time.monotonic()
        killed = end_tree(lambda: sorted({proc.pid, *found}), signal.SIGTERM, 0.5)
        assert time.monotonic() - start >= 0.5 and killed == 3
        assert proc.wait(timeout=10) == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{p}").exists() for p in found) and time.monotonic() < deadline:
            time.sleep(0.05)  # orphans: init reaps them
        assert not any(Path(f"/proc/{p}").exists() for p in found)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_end_tree_never_signals_an_unconfirmed_pid() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert end_tree(lambda: [proc.pid], signal.SIGKILL, 0.2, confirm=lambda _pid: False) == 0
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
