"""procfs.open_fd (paths inside a process's root, no FIFOs, size caps) and the cache trust rule.

A child process chrooted into a directory tree stands for a container: paths under its
/proc/PID/root are resolved by openat2(RESOLVE_IN_ROOT) and by the component walk used without it,
and both must agree with what the kernel's own chroot resolution gives inside (the child reads each
path itself and prints what it got)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from utrace.process import procfs
from utrace.store import cache

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chroot and chown need root")

CHILD = r"""
import os, sys
os.chroot(sys.argv[1]); os.chdir("/")
for p in sys.argv[2:]:
    try:
        with open(p, "rb") as f: print(p, "=", f.read().decode().strip(), flush=True)
    except OSError as e: print(p, "!", e.errno, flush=True)
sys.stdin.read()
"""

PATHS = ["/tmp/abs", "/tmp/rel", "/tmp/up", "/tmp/loop", "/lib/real", "/tmp/dir/../../lib/real", "/../../lib/real"]


@pytest.fixture
def jail(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """A chrooted child: (its pid, what each of PATHS gave it)."""
    root = tmp_path / "root"
    (root / "tmp" / "dir").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "lib" / "real").write_text("inside")
    (tmp_path / "outside").write_text("outside")
    (root / "tmp" / "abs").symlink_to("/lib/real")  # inside: the jail's /lib/real
    (root / "tmp" / "rel").symlink_to("../../outside")  # .. stops at the jail's root
    (root / "tmp" / "up").symlink_to("/../../../lib/real")
    (root / "tmp" / "loop").symlink_to("loop")
    os.mkfifo(root / "tmp" / "fifo")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), *PATHS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    seen = {}
    for _ in PATHS:
        path, _, got = child.stdout.readline().strip().partition(" ")
        seen[path] = got
    try:
        yield child.pid, seen
    finally:
        child.kill()
        child.wait()


def _ours(pid: int, inside: str) -> str:
    try:
        with procfs.open_file(f"/proc/{pid}/root{inside}") as f:
            return "= " + f.read().decode().strip()
    except OSError as e:
        return f"! {e.errno}"


@needs_root
@pytest.mark.parametrize("walk", [False, True], ids=["openat2", "component-walk"])
def test_paths_resolve_as_inside_the_root(
    jail: tuple[int, dict[str, str]], walk: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid, seen = jail
    if walk:
        monkeypatch.setattr(procfs, "_openat2_works", False)
    assert seen["/tmp/abs"] == "= inside" and seen["/tmp/rel"].startswith("!")  # the kernel's own answers
    for inside in PATHS:
        assert _ours(pid, inside) == seen[inside], inside


@needs_root
@pytest.mark.parametrize("walk", [False, True], ids=["openat2", "component-walk"])
def test_fifo_and_nofollow(jail: tuple[int, dict[str, str]], walk: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    pid, _ = jail
    if walk:
        monkeypatch.setattr(procfs, "_openat2_works", False)
    with pytest.raises(OSError, match="a FIFO, not a regular file"):
        procfs.open_fd(f"/proc/{pid}/root/tmp/fifo", max_size=1 << 20)  # returns at once: O_NONBLOCK
    with pytest.raises(OSError) as e:
        procfs.open_fd(f"/proc/{pid}/root/tmp/abs", max_size=1 << 20, nofollow=True)
    assert e.value.errno == 40  # ELOOP
    with pytest.raises(IsADirectoryError):
        procfs.open_fd(f"/proc/{pid}/root/tmp", max_size=1 << 20)


def test_size_cap_and_devices(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 100)
    with pytest.raises(OSError, match="larger than 99 bytes"):
        procfs.open_fd(str(big), max_size=99)
    os.close(procfs.open_fd(str(big), max_size=100))
    with pytest.raises(OSError, match="a device, not a regular file"):
        procfs.open_fd("/dev/null", max_size=1)


def test_split_root() -> None:
    assert procfs.split_root("/proc/12/root/usr/lib/x.so") == ("/proc/12/root", "/usr/lib/x.so")
    assert procfs.split_root("/proc/self/root") == ("/proc/self/root", "/")
    assert procfs.split_root("/proc/12/exe") is None
    assert procfs.split_root("/proc/12/rootfs/x") is None


# ---- the trust rule


def test_untrusted_modes(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    assert cache.untrusted_dir(d) is None
    d.chmod(0o775)
    assert "writable by group or others" in (cache.untrusted_dir(d) or "")
    d.chmod(0o755)
    sub = d / "sub"
    sub.mkdir()
    sub.chmod(0o757)
    assert str(sub) in (cache.untrusted_tree(d) or "")
    sub.chmod(0o755)
    (sub / "f").write_text("x")
    (sub / "f").chmod(0o666)
    assert str(sub / "f") in (cache.untrusted_tree(d) or "")
    (sub / "f").chmod(0o644)
    assert cache.untrusted_tree(d) is None
    # a symlink's target counts, and the directory holding it
    other = tmp_path / "other"
    other.mkdir()
    (other / "t").write_text("x")
    (d / "link").symlink_to(other / "t")
    other.chmod(0o777)
    assert str(other) in (cache.untrusted_tree(d) or "")


def test_sticky_world_writable_is_accepted_above_not_at(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    mine = shared / "mine"
    mine.mkdir(mode=0o700)
    assert cache.untrusted_dir(mine) is None
    assert "mode 1777" in (cache.untrusted_dir(shared) or "")


@needs_root
def test_owner_and_cache_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    d = cache.trusted_cache_dir()
    assert d == tmp_path / "utrace" and stat.S_IMODE(d.stat().st_mode) == 0o700
    f = d / "entry"
    f.write_bytes(cache.seal(b"payload"))
    assert cache.read_sealed(f) == b"payload"
    os.chown(f, 65534, 65534)
    assert cache.read_sealed(f) is None  # another user's file
    os.chown(f, 0, 0)
    f.chmod(0o666)
    assert cache.read_sealed(f) is None  # anyone may have written it
    f.chmod(0o600)
    (d / "link").symlink_to(f)
    assert cache.read_sealed(d / "link") is None  # never through a symlink
    os.mkfifo(d / "fifo")
    assert cache.read_sealed(d / "fifo") is None  # and at once
    os.chown(d, 65534, 65534)
    monkeypatch.setattr(cache, "_trusted_dirs", {})
    assert cache.trusted_cache_dir() is None
    assert cache.trusted_cache_dir() is None
    err = capsys.readouterr().err.splitlines()
    assert err == [f"utrace: warning: ignoring the cache directory {d}: {d} is owned by uid 65534"]


def test_perf_map_owner_and_symlink(tmp_path: Path) -> None:
    """A perf map is opened only as a plain file (no symlink at the last component) owned by one of the
    given uids: a file the process could not have written is not read on its behalf."""
    from utrace.process.perfmap import PerfMap

    path = tmp_path / "perf-1.map"
    path.write_bytes(b"1000 10 f\n")
    me = os.geteuid()
    ok = PerfMap.open(str(path), {me})
    assert ok is not None and ok.lookup(0x1000) == ("f", 0x1000)
    ok.close()
    assert PerfMap.open(str(path), {me + 1}) is None
    (tmp_path / "perf-2.map").symlink_to(path)
    assert PerfMap.open(str(tmp_path / "perf-2.map"), {me}) is None


@needs_root
def test_kernel_path_names_the_file_inside_the_root(jail: tuple[int, dict[str, str]], tmp_path: Path) -> None:
    """What the kernel is given for a uprobe: the file inside the root, not what our root's resolution of
    the absolute link (/lib/real) would find."""
    pid, _ = jail
    with procfs.kernel_path(f"/proc/{pid}/root/tmp/abs") as p:
        assert p.startswith("/proc/self/fd/")
        assert os.readlink(p) == str(tmp_path / "root" / "lib" / "real")
    with procfs.kernel_path("/usr/bin/true") as p:
        assert p == "/usr/bin/true"
    with pytest.raises(OSError), procfs.kernel_path(f"/proc/{pid}/root/tmp/fifo"):
        pass


@pytest.mark.parametrize("path", ["/usr/bin/ls", "/proc/self/status"])
def test_file_identity_has_the_superblock_device_findmnt_shows(path):
    need_findmnt = shutil.which("findmnt")
    if need_findmnt is None:
        pytest.skip("findmnt (util-linux) is not installed")
    got = procfs.file_identity(path)
    assert got is not None
    st = os.stat(path)
    assert got[:2] == (st.st_dev, st.st_ino)
    out = subprocess.run(["findmnt", "-n", "-o", "MAJ:MIN", "-T", path], capture_output=True, text=True, check=True)
    major, minor = (int(x) for x in out.stdout.strip().split(":"))
    assert got[2] == major << 20 | minor


def test_file_identity_of_what_is_not_a_regular_file_is_none(tmp_path):
    assert procfs.file_identity(str(tmp_path / "missing")) is None
    assert procfs.file_identity(str(tmp_path)) is None


@needs_root
def test_cxx_dwarf_reads_through_the_process_root(jail: tuple[int, dict[str, str]]) -> None:
    """C++ member evidence opens the traced file like every other reader: a FIFO fails at once (it used
    to block in open()), and an absolute link resolves inside the process's root, not ours."""
    import threading

    from utrace.elf.buildid import ElfError
    from utrace.elf.cxxdwarf import cxx_members

    pid, _ = jail
    outcome: list[BaseException | None] = []

    def call(path: str) -> None:
        try:
            cxx_members(path, [])
            outcome.append(None)
        except BaseException as e:  # handed to the test thread
            outcome.append(e)

    worker = threading.Thread(target=call, args=(f"/proc/{pid}/root/tmp/fifo",), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "cxx_members blocked on a FIFO"
    assert isinstance(outcome[0], ElfError) and "FIFO" in str(outcome[0])
    with pytest.raises(ElfError, match="not an ELF"):
        cxx_members(f"/proc/{pid}/root/tmp/abs", [])  # the jail's /lib/real ("inside"), not the host's /lib
