"""What utrace does for a user who is not root: refuses in one line before anything runs, or traces.

Each run drops to uid/gid 65534 ("nobody") with `setpriv`, with no capabilities, with CAP_BPF and
CAP_PERFMON, or with CAP_SYS_ADMIN alone (as ambient capabilities, so they survive the exec of the
venv's Python). Oracles: the kernel itself (a uprobe perf event opened directly with ctypes by the
same user with the same capabilities, not through utrace), `nm` for the listing, and the traced
program's own printout (`add(a,b)=c` lines).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, need, uprobe_events

pytestmark = pytest.mark.e2e

NOBODY = 65534


@pytest.fixture(scope="module")
def nobody_can_run_utrace(root_bpf: None, fixtures_built: Path) -> Path:
    need(shutil.which("setpriv") is not None, "setpriv (util-linux) is not installed")
    for path in (ROOT, Path(sys.executable).resolve(), fixtures_built / "c" / "sdt_demo"):
        p = path
        while p != p.parent:  # every directory on the way must be searchable by others
            need(os.stat(p).st_mode & 0o001 != 0, f"{p} is not accessible to uid {NOBODY}")
            p = p.parent
    return fixtures_built


@pytest.fixture
def home() -> Iterator[Path]:
    """A home (and cache) the unprivileged user can write: kernel headers are merged there. Not under
    pytest's tmp_path, whose parent only root may enter."""
    h = Path(tempfile.mkdtemp(prefix="utrace-nobody-"))
    os.chown(h, NOBODY, NOBODY)
    yield h
    shutil.rmtree(h, ignore_errors=True)


def our_uprobes() -> list[str]:
    """Entries in uprobe_events for files of this checkout (other programs on the machine may have some)."""
    return [line for line in uprobe_events().splitlines() if str(ROOT) in line]


def as_nobody(caps: list[str], args: list[str], home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `args` as uid 65534 with exactly `caps` (names like "bpf") effective."""
    spec = ",".join(f"+{c}" for c in caps)
    drop = ["--inh-caps=-all"] if not caps else [f"--inh-caps={spec}", f"--ambient-caps={spec}"]
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *drop, "--", *args]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def utrace(*args: str) -> list[str]:
    return [sys.executable, "-m", "utrace", *args]


_KERNEL_ORACLE = r"""
import ctypes, os, struct, tempfile
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
pmu = int(open("/sys/bus/event_source/devices/uprobe/type").read())
with tempfile.NamedTemporaryFile() as f:
    f.write(b"\x90" * 16)
    f.flush()
    path = ctypes.create_string_buffer(f.name.encode())
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQ", attr, 0, pmu, 112, 0, 1)  # type, size, config, sample_period
    struct.pack_into("<QQ", attr, 56, ctypes.addressof(path), 0)  # uprobe_path, probe_offset
    fd = libc.syscall(298, attr, ctypes.c_int(os.getpid()), ctypes.c_int(-1), ctypes.c_int(-1), ctypes.c_ulong(8))
    print("allowed" if fd >= 0 else os.strerror(ctypes.get_errno()))
"""


def kernel_allows_uprobes(caps: list[str], home: Path) -> bool:
    p = as_nobody(caps, [sys.executable, "-c", _KERNEL_ORACLE], home)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip() == "allowed"


def _adds_printed(stdout: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(r"add\((-?\d+),(-?\d+)\)=", stdout)]


def _adds_traced(events_file: Path) -> list[tuple[int, int]]:
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    return [(e["args"]["a"], e["args"]["b"]) for e in events if e["kind"] == "call" and e["probe"] == "demo_add"]


TRACE_COMMANDS = {
    "native": lambda b: ["native", str(b / "c" / "sdt_demo"), "demo_add"],
    "go": lambda b: ["go", str(b / "go" / "greet"), "main.Greet"],
    "node": lambda b: ["node", "uv_listen"],
    "java": lambda b: ["java", "class-load"],
}


@pytest.mark.parametrize("runtime", sorted(TRACE_COMMANDS))
def test_without_privileges_every_trace_command_refuses_in_one_line(
    nobody_can_run_utrace: Path, home: Path, runtime: str
) -> None:
    marker = home / "launched"
    args = [*TRACE_COMMANDS[runtime](nobody_can_run_utrace), "--", "/usr/bin/touch", str(marker)]
    p = as_nobody([], utrace(*args), home)
    assert p.returncode == 4, p.stderr
    assert p.stderr.splitlines() == [
        "utrace: error: tracing needs root (CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON on kernels before 6.16); "
        "try sudo"
    ]
    assert p.stdout == ""
    assert not marker.exists()  # refused before the command was launched


def test_without_privileges_listing_still_works(nobody_can_run_utrace: Path, home: Path) -> None:
    exe = nobody_can_run_utrace / "c" / "sdt_demo"
    p = as_nobody([], utrace("list", str(exe), "demo_*", "--functions"), home)
    assert p.returncode == 0, p.stderr
    nm = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    expected = sorted(
        name for _addr, kind, name in (ln.split() for ln in nm.splitlines() if len(ln.split()) == 3)
        if kind in "Tt" and name.startswith("demo_")
    )  # fmt: skip
    assert sorted(re.findall(r"\b(demo_\w+)\n", p.stdout)) == expected


def test_cap_bpf_and_cap_perfmon_are_enough_exactly_where_the_kernel_says_so(
    nobody_can_run_utrace: Path, home: Path
) -> None:
    """Linux 6.16 made uprobes require CAP_SYS_ADMIN again: utrace must follow the kernel, not a table."""
    caps = ["bpf", "perfmon"]
    exe = nobody_can_run_utrace / "c" / "sdt_demo"
    events = home / "events.json"
    p = as_nobody(
        caps, utrace("native", str(exe), "demo_add(int a, int b)", "--json", "-o", str(events), "--", str(exe)), home
    )
    doctor = as_nobody(caps, utrace("doctor", "--no-compile"), home)
    if kernel_allows_uprobes(caps, home):
        assert p.returncode == 0, p.stderr
        assert _adds_traced(events) == _adds_printed(p.stdout) != []
        assert "ok   privileges" in doctor.stdout
    else:
        assert p.returncode == 4, p.stderr
        assert p.stderr.splitlines() == [
            "utrace: error: this kernel lets only CAP_SYS_ADMIN create uprobes (CAP_BPF and CAP_PERFMON are not "
            "enough since Linux 6.16); run as root or add CAP_SYS_ADMIN"
        ]
        assert p.stdout == "" and not events.exists()  # the program was not launched
        assert (
            doctor.returncode == 4
            and "FAIL privileges: uid 65534: this kernel lets only CAP_SYS_ADMIN" in doctor.stdout
        )
    assert our_uprobes() == []


def test_cap_sys_admin_alone_traces(nobody_can_run_utrace: Path, home: Path) -> None:
    exe = nobody_can_run_utrace / "c" / "sdt_demo"
    need(kernel_allows_uprobes(["sys_admin"], home), "this kernel refuses uprobes even with CAP_SYS_ADMIN")
    events = home / "events.json"
    args = ["native", str(exe), "demo_add(int a, int b)", "--json", "-o", str(events), "--", str(exe)]
    p = as_nobody(["sys_admin"], utrace(*args), home)
    assert p.returncode == 0, p.stderr
    printed = _adds_printed(p.stdout)
    assert printed and _adds_traced(events) == printed
    assert our_uprobes() == []


def test_an_output_file_the_user_cannot_write_is_one_line_not_an_internal_error(
    nobody_can_run_utrace: Path, home: Path, tmp_path: Path
) -> None:
    exe = nobody_can_run_utrace / "c" / "sdt_demo"
    need(kernel_allows_uprobes(["sys_admin"], home), "this kernel refuses uprobes even with CAP_SYS_ADMIN")
    target = tmp_path / "events.json"  # under pytest's root-only directory
    marker = home / "launched"
    p = as_nobody(
        ["sys_admin"],
        utrace("native", str(exe), "demo_add", "-o", str(target), "--", "/usr/bin/touch", str(marker)),
        home,
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.splitlines() == [f"utrace: error: cannot write {target}: Permission denied"]
    assert not marker.exists() and not target.exists()


def test_a_user_whose_cache_cannot_be_written_traces_with_a_private_header_tree(
    nobody_can_run_utrace: Path, home: Path
) -> None:
    """Without headers of its own, the kernel needs utrace's merged header tree, normally kept under the
    cache; a user without a writable cache gets one in a private temporary directory, removed at exit."""
    import glob
    import platform

    need(not Path(f"/lib/modules/{platform.release()}/build").exists(), "the running kernel has its own headers")
    need(kernel_allows_uprobes(["sys_admin"], home), "this kernel refuses uprobes even with CAP_SYS_ADMIN")
    exe = nobody_can_run_utrace / "c" / "sdt_demo"
    nowhere = Path("/nonexistent")
    assert not nowhere.exists()
    before = set(glob.glob("/tmp/utrace-headers-*"))
    p = as_nobody(["sys_admin"], utrace("native", str(exe), "demo_add", "--", str(exe)), nowhere)
    assert p.returncode == 0, p.stderr
    assert "demo_add" in p.stderr + p.stdout and "5 events, 0 lost" in p.stderr
    assert set(glob.glob("/tmp/utrace-headers-*")) <= before  # the private tree went with the process
