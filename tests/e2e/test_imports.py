"""A function a binary imports, traced by the binary's path alone: the probe sits in the library that
defines it (which every process on the machine maps), and only the processes running that file (found
when they exec it, or already running it in /proc, and what they fork) are reported."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

from tests.e2e.conftest import ROOT, Background, need, utrace_cmd
from tests.e2e.test_cxx_args import _gdb_hits


def _counts(out: str, probe: str) -> dict[int, int]:
    got: dict[int, int] = {}
    for line in out.splitlines():
        if line.startswith('{"kind": "count"'):
            c = json.loads(line)
            if c["probe"] == probe:
                got[c["pid"]] = got.get(c["pid"], 0) + c["count"]
    return got


def _run(argv: list[str]) -> int:
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert p.wait(timeout=120) == 0, argv
    return p.pid


def _stop(b: Background) -> tuple[str, str]:
    b.proc.send_signal(signal.SIGINT)
    out, err, rc = b.finish(timeout=180)
    assert rc == 0, err
    return out, err


def test_imported_function_by_path_counts_only_the_files_processes(
    tmp_path: Path, background: list[Background]
) -> None:
    need(shutil.which("gdb") is not None, "gdb is not installed")
    ls = "/usr/bin/ls"
    argv = [ls, "-l", "/"]
    expected = _gdb_hits(argv, "getenv", tmp_path)  # one run of ls, counted by gdb's breakpoint
    assert expected > 0
    copy = tmp_path / "ls-copy"  # the same code in another file: not the file traced
    shutil.copy(ls, copy)
    b = Background("native", ls, "getenv", "--count", "--json")
    background.append(b)
    b.wait_attached(timeout=180)
    ls_pids = [_run(argv) for _ in range(3)]
    others = [
        _run(["env"]),
        _run(["sh", "-c", "true"]),
        _run(["python3", "-c", "import ctypes; ctypes.CDLL(None).getenv(b'UTRACE_X')"]),
        _run([str(copy), "-l", "/"]),
    ]
    # a shell that forks and execs ls: the ls is traced from its exec, the shell is not
    sh = subprocess.run(
        ["sh", "-c", f"{ls} -l / >/dev/null & echo $$ $!; wait"], capture_output=True, text=True, timeout=120
    )
    sh_pid, sh_ls = (int(x) for x in sh.stdout.split())
    out, err = _stop(b)
    assert re.search(
        r"getenv: imported by ls, traced in /\S*libc\.so\.6 \(only in processes running /usr/bin/ls", err
    ), err
    assert "attached to /usr/bin/ls (processes running it)" in err, err
    counts = _counts(out, "getenv")
    # other processes on the machine may run ls meanwhile: only ours are checked
    assert {p: counts.get(p) for p in [*ls_pids, sh_ls]} == {p: expected for p in [*ls_pids, sh_ls]}, counts
    assert not {p: counts[p] for p in [*others, sh_pid] if p in counts}, counts


PY_LOOP = """
import ctypes, os, sys
getenv = ctypes.CDLL(None).getenv
print("ready", flush=True)
sys.stdin.readline()
for _ in range(CALLS):
    getenv(b"UTRACE_X")
child = os.fork()
if child == 0:
    for _ in range(CHILD_CALLS):
        getenv(b"UTRACE_Y")
    os._exit(0)
os.waitpid(child, 0)
print(child, flush=True)
sys.stdin.readline()
"""


def test_process_already_running_the_file_is_traced(background: list[Background]) -> None:
    python = "/usr/bin/python3.11"
    need(Path(python).exists(), "Debian's python3.11 is not installed")
    calls, child_calls = 37, 11
    script = PY_LOOP.replace("CHILD_CALLS", str(child_calls)).replace("CALLS", str(calls))
    proc = subprocess.Popen([python, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        # started before utrace: found in /proc, not at an exec
        b = Background("native", python, "getenv", "--count", "--json")
        background.append(b)
        b.wait_attached(timeout=180)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        child = int(proc.stdout.readline())
        out, _err = _stop(b)
        proc.stdin.write("end\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    counts = _counts(out, "getenv")
    # the program's own count of its calls: the running process, and the child it forked (not exec'd)
    assert (counts.get(proc.pid), counts.get(child)) == (calls, child_calls), counts


def test_imported_function_by_path_inside_a_pid_namespace(tmp_path: Path) -> None:
    """utrace in its own PID namespace: the processes are found and reported by the pids it sees."""
    need(shutil.which("gdb") is not None, "gdb is not installed")
    need(shutil.which("unshare") is not None, "unshare (util-linux) not installed")
    ls = "/usr/bin/ls"
    expected = _gdb_hits([ls, "-l", "/"], "getenv", tmp_path)
    out, err = tmp_path / "out", tmp_path / "err"
    utrace = shlex.join(utrace_cmd("native", ls, "getenv", "--count", "--json"))
    inner = (
        f"{utrace} >{out} 2>{err} & u=$!; "
        f"i=0; until grep -q attached {err} || [ $i -ge 300 ]; do sleep 0.5; i=$((i+1)); done; "
        f"for n in 1 2; do {ls} -l / >/dev/null & echo $!; wait $!; done; kill -INT $u; wait $u"
    )
    ns = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", inner],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert ns.returncode == 0, err.read_text()
    pids = [int(x) for x in ns.stdout.split()]
    assert "attached to /usr/bin/ls (processes running it)" in err.read_text()
    counts = _counts(out.read_text(), "getenv")
    assert all(p < 100 for p in pids), pids  # pids of the new namespace, not the host's
    assert counts == {p: expected for p in pids}, counts  # nobody else runs ls in this namespace


def test_imported_function_by_path_on_overlayfs(tmp_path: Path) -> None:
    """A file on an overlay whose layers are on different file systems: stat(2) gives a device of the
    layer, the kernel's inode the overlay's superblock. The overlay's ls is found when it execs; the
    very same file run from the lower layer is another file, not reported."""
    need(shutil.which("gdb") is not None, "gdb is not installed")
    need(shutil.which("unshare") is not None, "unshare (util-linux) not installed")
    need("overlay" in Path("/proc/filesystems").read_text(), "the kernel has no overlayfs")
    ls = "/usr/bin/ls"
    expected = _gdb_hits([ls, "-l", "/"], "getenv", tmp_path)
    lower, upper, merged = tmp_path / "lower", tmp_path / "upper", tmp_path / "merged"
    for d in (lower, upper, merged):
        d.mkdir()
    shutil.copy(ls, lower / "ls")
    out, err = tmp_path / "out", tmp_path / "err"
    utrace = shlex.join(utrace_cmd("native", str(merged / "ls"), "getenv", "--count", "--json"))
    inner = (
        f"mount -t tmpfs utrace-test {upper} && mkdir {upper}/u {upper}/w && "
        f"mount -t overlay utrace-test -o lowerdir={lower},upperdir={upper}/u,workdir={upper}/w {merged} || exit 9; "
        f"[ $(stat -c %d {merged}/ls) != $(stat -c %d {lower}/ls) ] || exit 8; "
        f"{utrace} >{out} 2>{err} & u=$!; "
        f"i=0; until grep -q attached {err} || [ $i -ge 300 ]; do sleep 0.5; i=$((i+1)); done; "
        f"{merged}/ls -l / >/dev/null & echo $!; wait $!; {lower}/ls -l / >/dev/null & echo $!; wait $!; "
        "kill -INT $u; wait $u"
    )
    ns = subprocess.run(
        ["unshare", "--mount", "sh", "-c", inner], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    need(ns.returncode != 9, f"cannot mount an overlay here: {ns.stderr.strip()}")
    assert ns.returncode == 0, (ns.stderr, err.read_text() if err.exists() else "")
    on_overlay, on_lower = (int(x) for x in ns.stdout.split())
    counts = _counts(out.read_text(), "getenv")
    assert (counts.get(on_overlay), counts.get(on_lower)) == (expected, None), counts
