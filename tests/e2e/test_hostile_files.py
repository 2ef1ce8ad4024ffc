"""Files another user controls: a traced process's perf map, the binary given, the cache, kernel headers.

The traced processes run as uid 65534 (`setpriv`) and plant what a hostile process can: a perf map that
is a symlink to a file only root may read, a FIFO, a file of hundreds of megabytes. The cache and the
kernel-header tree are planted the way another user could (owned by uid 65534, or writable by others),
and a forged file with another file's build-id and size is listed before the real one is traced. Each
test is checked against what utrace would do without the rule (noted in its docstring).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, need, utrace_cmd

NOBODY = 65534

# node, as uid 65534: plants its perf map as told, then opens /dev/null from JS (uv_fs_open under JS frames)
NODE_SCRIPT = r"""
const fs = require('fs'), cp = require('child_process');
const map = `/tmp/perf-${process.pid}.map`;
const mode = process.env.UTRACE_T_MODE, src = process.env.UTRACE_T_SRC;
fs.writeFileSync(process.env.UTRACE_T_PIDFILE, String(process.pid));
if (mode === 'symlink') fs.symlinkSync(src, map);
else if (mode === 'fifo') cp.execFileSync('mkfifo', [map]);
else if (mode === 'rename') fs.renameSync(src, map);
function work(n) { for (let i = 0; i < n; i++) fs.closeSync(fs.openSync('/dev/null', 'r')); }
function outer() { work(5); }
outer();
console.log(JSON.stringify({done: mode}));
"""


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory under /tmp that uid 65534 may write (for the pid file)."""
    d = Path(tempfile.mkdtemp(prefix="utrace-hostile-", dir="/tmp"))
    os.chown(d, NOBODY, NOBODY)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _node_as_nobody(node: str, mode: str, src: str, piddir: Path, *, timeout: float, rss: Path | None = None):
    need(shutil.which("setpriv") is not None, "setpriv (util-linux) is not installed")
    env = {**os.environ, "UTRACE_T_MODE": mode, "UTRACE_T_SRC": src, "UTRACE_T_PIDFILE": str(piddir / "pid")}
    cmd = utrace_cmd("node", "uv_fs_open", "--binary", node, "--stack", "--json")
    cmd += ["--", "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    cmd += [node, "--interpreted-frames-native-stack", "-e", NODE_SCRIPT]
    if rss is not None:
        cmd = ["/usr/bin/time", "-f", "%M", "-o", str(rss), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def _cleanup_map(piddir: Path) -> None:
    try:
        pid = int((piddir / "pid").read_text())
    except (OSError, ValueError):
        return
    path = f"/tmp/perf-{pid}.map"
    try:
        if os.lstat(path).st_uid == NOBODY:
            os.unlink(path)
    except OSError:
        pass


def _stacks(stdout: str) -> list[list[dict[str, object]]]:
    out = []
    for line in stdout.splitlines():
        ev = json.loads(line)
        if ev.get("probe") == "uv_fs_open" and ev["args"].get("path") == "/dev/null":
            out.append(ev["stack"])
    return out


@pytest.mark.usefixtures("root_bpf")
def test_perf_map_symlink_to_a_root_only_file_is_not_read(node_bin: str, nobody_dir: Path, tmp_path: Path) -> None:
    """Without the rule: the root-only file's line names every JIT frame (its content is printed)."""
    secret = f"UTRACE-SECRET-{secrets.token_hex(8)}"
    private = tmp_path / "root-only.map"
    private.write_text(f"0 7fffffffffffffff {secret}\n")
    private.chmod(0o600)
    try:
        p = _node_as_nobody(node_bin, "symlink", str(private), nobody_dir, timeout=120)
        link = f"/tmp/perf-{int((nobody_dir / 'pid').read_text())}.map"
        assert os.readlink(link) == str(private)  # the process did plant it
    finally:
        _cleanup_map(nobody_dir)
    assert p.returncode == 0, p.stderr
    assert secret not in p.stdout and secret not in p.stderr
    stacks = _stacks(p.stdout)
    assert len(stacks) == 5, p.stdout[-2000:]
    for stack in stacks:
        assert stack[0]["function"] == "uv_fs_open"
        # frames in JIT code stay addresses: nothing names them
        assert all(f["module"] != "[perf-map]" for f in stack), stack


@pytest.mark.usefixtures("root_bpf")
def test_perf_map_fifo_does_not_block(node_bin: str, nobody_dir: Path) -> None:
    """Without the rule: utrace blocks for ever opening the FIFO (killed here after 90 s)."""
    try:
        start = time.monotonic()
        p = _node_as_nobody(node_bin, "fifo", "", nobody_dir, timeout=90)
        took = time.monotonic() - start
        fifo = f"/tmp/perf-{int((nobody_dir / 'pid').read_text())}.map"
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    finally:
        _cleanup_map(nobody_dir)
    assert p.returncode == 0, p.stderr
    assert len(_stacks(p.stdout)) == 5, p.stdout[-2000:]
    assert took < 60


@pytest.mark.usefixtures("root_bpf")
def test_huge_perf_map_is_read_with_bounded_memory(node_bin: str, nobody_dir: Path) -> None:
    """A 400 MB perf map of distinct regions (none of them the process's code).

    Without the caps utrace reads all of it into a dictionary: about 2 GB of memory here (4.2 GB for
    650 MB in the issue); with them it keeps at most MAX_REGIONS regions and stops reading."""
    need(os.path.exists("/usr/bin/time"), "GNU time is not installed")
    need(shutil.disk_usage("/tmp").free > 2 << 30, "less than 2 GB free in /tmp")
    fd, huge = tempfile.mkstemp(prefix="utrace-huge-", suffix=".map", dir="/tmp")
    name = b"LazyCompile:~" + b"f" * 90
    try:
        with os.fdopen(fd, "wb") as f:
            lines = 0
            while f.tell() < 400 << 20:
                base = 0x1000 + lines * 0x40
                f.write(b"".join(b"%x 40 %s%d\n" % (base + i * 0x40, name, i) for i in range(100_000)))
                lines += 100_000
        os.chown(huge, NOBODY, NOBODY)
        rss = nobody_dir / "rss"
        p = _node_as_nobody(node_bin, "rename", huge, nobody_dir, timeout=300, rss=rss)
    finally:
        _cleanup_map(nobody_dir)
        if os.path.exists(huge):
            os.unlink(huge)
    assert p.returncode == 0, p.stderr
    assert len(_stacks(p.stdout)) == 5, p.stdout[-2000:]
    peak_mb = int(rss.read_text().split()[-1]) // 1024
    assert peak_mb < 700, f"utrace's peak RSS was {peak_mb} MB"


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("command", ["list", "native", "go"])
def test_a_fifo_or_device_as_the_binary_is_refused_at_once(tmp_path: Path, kind: str, command: str) -> None:
    """Without the rule: utrace blocks for ever opening the FIFO (killed here after 30 s)."""
    if kind == "fifo":
        path = str(tmp_path / "prog")
        os.mkfifo(path)
    else:
        path = "/dev/zero"
    args = {"list": [path], "native": [path, "f", "--", "/bin/true"], "go": [path, "main.f"]}[command]
    p = subprocess.run(utrace_cmd(command, *args), capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("utrace: error: "), p.stderr
    assert ("a FIFO" if kind == "fifo" else "a device") in lines[0]
    assert "Traceback" not in p.stderr


# ---- caches and kernel headers


def _header_package() -> tuple[Path, Path]:
    from utrace.bpf import kernel

    build = Path("/lib/modules") / os.uname().release / "build"
    need(not build.exists(), "the running kernel has its own headers: no merged tree is used")
    pairs = kernel.find_header_packages()
    need(bool(pairs), "no linux-headers package installed")
    return pairs[0]


def _plant_tree(xdg: Path, arch_dir: Path, common: Path) -> Path:
    """A merged header tree where utrace keeps its own, whose kconfig.h (included first by bcc) is a
    planted file that stops the compile with a marker."""
    from utrace.bpf import kernel

    tree = kernel.merged_header_tree(arch_dir, common, xdg / "utrace")
    kconfig = tree / "include" / "linux" / "kconfig.h"
    if kconfig.is_symlink():
        kconfig.unlink()
    else:  # include/linux is itself a symlink into the package: make it a directory of our own
        linux = tree / "include" / "linux"
        target = linux.resolve()
        linux.unlink()
        linux.mkdir()
        for entry in target.iterdir():
            (linux / entry.name).symlink_to(entry)
        kconfig.unlink()
    kconfig.write_text("#error UTRACE-PLANTED-HEADER\n")
    return tree


def _trace_hot(xdg: Path) -> subprocess.CompletedProcess[str]:
    hot = ROOT / "fixtures" / "build" / "c" / "hot"
    need(hot.exists(), "fixtures not built")
    env = {**os.environ, "XDG_CACHE_HOME": str(xdg)}
    env.pop("BCC_KERNEL_SOURCE", None)
    cmd = utrace_cmd("native", str(hot), "hot", "--count", "--", str(hot), "1000")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)


def _chown_tree(top: Path, uid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            os.lchown(os.path.join(dirpath, name), uid, uid)
    os.lchown(top, uid, uid)


@pytest.mark.usefixtures("root_bpf")
@pytest.mark.parametrize("how", ["tree owned by another user", "cache dir owned by another user", "tree writable"])
def test_planted_kernel_header_tree_is_ignored(tmp_path: Path, how: str) -> None:
    """Without the rule: the planted kconfig.h is compiled into the BPF program (here its #error stops
    the compile, and utrace fails with the planted text)."""
    arch_dir, common = _header_package()
    xdg = tmp_path / "xdg"
    tree = _plant_tree(xdg, arch_dir, common)
    if how == "tree owned by another user":
        _chown_tree(tree, NOBODY)
    elif how == "cache dir owned by another user":
        _chown_tree(xdg / "utrace", NOBODY)
    else:
        (tree / "include").chmod(0o777)
    p = _trace_hot(xdg)
    assert p.returncode == 0, p.stderr
    assert "UTRACE-PLANTED" not in p.stderr
    warnings = [line for line in p.stderr.splitlines() if line.startswith("utrace: warning: ignoring")]
    assert len(warnings) == 1, p.stderr
    assert str(xdg / "utrace") in warnings[0]
    assert "calls 1000 sum" in p.stdout
    assert "hot" in p.stdout and " 1000" in p.stdout  # the count


def _forge(src: Path, dst: Path, symbol: bytes, delta: int) -> None:
    """A copy of `src` whose `symbol` (in .symtab and .dynsym) says it starts `delta` bytes later:
    same size, same build-id."""
    from elftools.elf.elffile import ELFFile

    data = bytearray(src.read_bytes())
    patched = 0
    with open(src, "rb") as f:
        elf = ELFFile(f)
        for sec in elf.iter_sections():
            if sec["sh_type"] not in ("SHT_SYMTAB", "SHT_DYNSYM"):
                continue
            for i, sym in enumerate(sec.iter_symbols()):
                if sym.name == symbol.decode():
                    pos = sec["sh_offset"] + i * sec["sh_entsize"] + 8  # st_value
                    value = int.from_bytes(data[pos : pos + 8], "little")
                    data[pos : pos + 8] = (value + delta).to_bytes(8, "little")
                    patched += 1
    assert patched
    dst.write_bytes(bytes(data))
    dst.chmod(0o755)


@pytest.mark.usefixtures("root_bpf")
def test_forged_file_with_the_same_build_id_and_size_does_not_poison_the_cache(tmp_path: Path) -> None:
    """A file with hot's build-id and size whose symbol table puts hot() two bytes in (inside its first
    instruction) is listed first, as a user's file or a traced process's library would be.

    Without the rule its cache entry answers for the real binary: the breakpoint goes on the last byte
    of `mov %rdi,%rax` (48 89 f8), which then reads `mov %rcx,%rsp`, and the traced program dies with
    SIGSEGV (0 events, "traced program exited with -11")."""
    hot = ROOT / "fixtures" / "build" / "c" / "hot"
    need(hot.exists(), "fixtures not built")
    expected = subprocess.run([str(hot), "1000"], capture_output=True, text=True, check=True).stdout
    forged = tmp_path / "forged"
    _forge(hot, forged, b"hot", 2)
    assert forged.stat().st_size == hot.stat().st_size
    assert subprocess.run(["readelf", "-n", str(forged)], capture_output=True, text=True).stdout == subprocess.run(
        ["readelf", "-n", str(hot)], capture_output=True, text=True
    ).stdout.replace(str(hot), str(forged))
    xdg = tmp_path / "xdg"
    env = {**os.environ, "XDG_CACHE_HOME": str(xdg)}
    listed = subprocess.run(
        utrace_cmd("list", str(forged), "hot", "--json"), capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert listed.returncode == 0, listed.stderr
    forged_at = json.loads(listed.stdout.splitlines()[0])["address"]
    time.sleep(1)  # the cache file may be written behind
    p = _trace_hot(xdg)
    assert p.returncode == 0, p.stderr
    assert expected.strip() in p.stdout.splitlines(), p.stdout
    assert re.search(r"^hot\s+\d+\s+1000$", p.stdout, re.M), p.stdout
    assert "traced program exited with 0" in p.stderr
    real = subprocess.run(
        utrace_cmd("list", str(hot), "hot", "--json"), capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert json.loads(real.stdout.splitlines()[0])["address"] == forged_at - 2
    nm = subprocess.run(["nm", str(hot)], capture_output=True, text=True, check=True).stdout
    assert any(line.split()[-1] == "hot" and int(line.split()[0], 16) == forged_at - 2 for line in nm.splitlines())


def test_cache_dir_of_another_user_is_not_read(tmp_path: Path) -> None:
    """The symbol cache under a directory another user owns is neither read nor written (one warning)."""
    hot = ROOT / "fixtures" / "build" / "c" / "hot"
    need(hot.exists(), "fixtures not built")
    need(os.geteuid() == 0, "needs root to give the directory to another user")
    xdg = tmp_path / "xdg"
    env = {**os.environ, "XDG_CACHE_HOME": str(xdg)}
    first = subprocess.run(utrace_cmd("list", str(hot), "hot"), capture_output=True, text=True, cwd=ROOT, env=env)
    assert first.returncode == 0 and first.stderr == "", first.stderr
    time.sleep(1)
    entries = sorted(os.listdir(xdg / "utrace"))
    assert entries
    code = "import sys; from utrace.elf import index; index.read_symbols = None; index.symbols_for(sys.argv[1])"
    served = subprocess.run([sys.executable, "-c", code, str(hot)], capture_output=True, text=True, cwd=ROOT, env=env)
    assert served.returncode == 0 and served.stderr == "", served.stderr  # while ours, the entry answers
    _chown_tree(xdg / "utrace", NOBODY)
    p = subprocess.run([sys.executable, "-c", code, str(hot)], capture_output=True, text=True, cwd=ROOT, env=env)
    # the entry would have answered without reading the file (read_symbols is gone): it is not used
    assert "NoneType" in p.stderr and "object is not callable" in p.stderr, p.stderr
    assert "utrace: warning: ignoring the cache directory" in p.stderr and f"owned by uid {NOBODY}" in p.stderr
    assert sorted(os.listdir(xdg / "utrace")) == entries


@pytest.mark.usefixtures("root_bpf")
def test_absolute_symlink_in_a_containers_path_is_resolved_inside_it(tmp_path: Path) -> None:
    """A process in its own mount namespace maps `hot` from a tmpfs; then the path it was mapped from is
    covered by another mount where it is a symlink to /D/prog. In the process's namespace /D is a tmpfs
    with a copy of hot (another inode); on the host /D/prog is sdt_demo.

    Without the rule utrace resolves the absolute link from the host's root and names the process's
    frames from sdt_demo's symbols; with it the link is resolved inside the process's root, found to be
    another file than the one mapped, and the mapping's own /proc/PID/map_files link is read."""
    need(shutil.which("unshare") is not None, "unshare (util-linux) not installed")
    hot = ROOT / "fixtures" / "build" / "c" / "hot"
    other = ROOT / "fixtures" / "build" / "c" / "sdt_demo"
    need(hot.exists() and other.exists(), "fixtures not built")
    mnt, d = tmp_path / "inside", tmp_path / "D"
    mnt.mkdir()
    d.mkdir()
    shutil.copy(other, d / "prog")
    inner = (
        f"mount -t tmpfs t1 {mnt} && mkdir {mnt}/sub && cp {hot} {mnt}/sub/prog && "
        f"{{ {mnt}/sub/prog 400000000000 >/dev/null & }}; prog=$!; sleep 0.3; "
        f"mount -t tmpfs t2 {mnt}/sub && ln -s {d}/prog {mnt}/sub/prog && "
        f"mount -t tmpfs t3 {d} && cp {hot} {d}/prog && echo $prog && wait"
    )
    ns = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner], stdout=subprocess.PIPE, text=True
    )
    pid = 0
    try:
        assert ns.stdout is not None
        pid = int(ns.stdout.readline())
        assert os.readlink(f"/proc/{pid}/exe") == f"{mnt}/sub/prog"
        assert os.readlink(f"/proc/{pid}/root{mnt}/sub/prog") == f"{d}/prog"
        p = subprocess.run(
            utrace_cmd("native", "--pid", str(pid), "hot", "--stack", "--json", "-n", "3"),
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
    finally:
        if pid:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        ns.wait(timeout=30)
    assert p.returncode == 0, p.stderr
    stacks = [json.loads(line)["stack"] for line in p.stdout.splitlines() if '"kind": "call"' in line]
    assert len(stacks) == 3, p.stdout[-2000:]
    for stack in stacks:
        own = [f for f in stack if f["module"] == f"{mnt}/sub/prog"]
        assert [f["function"] for f in own[:2]] == ["hot", "main"], stack
        assert own[0]["offset"] == 0


@pytest.mark.usefixtures("root_bpf")
def test_probes_go_on_the_file_inside_the_root_not_on_the_hosts(tmp_path: Path) -> None:
    """As above, but the absolute link leads, inside the namespace, to a hard link of the mapped file
    itself, so utrace uses the path under /proc/PID/root; on the host the same absolute path is another
    program (sdt_demo). The kernel, given that path, would follow the link from the host's root and
    put hot's probe offsets into sdt_demo: utrace hands it the file it opened inside the root instead
    (/proc/self/fd/N), and the process's own calls are counted."""
    need(shutil.which("unshare") is not None, "unshare (util-linux) not installed")
    hot = ROOT / "fixtures" / "build" / "c" / "hot"
    other = ROOT / "fixtures" / "build" / "c" / "sdt_demo"
    need(hot.exists() and other.exists(), "fixtures not built")
    mnt = tmp_path / "inside"
    (mnt / "D2").mkdir(parents=True)
    shutil.copy(other, mnt / "D2" / "prog")  # the host's view of {mnt}/D2/prog
    inner = (
        f"mount -t tmpfs t1 {mnt} && mkdir {mnt}/sub {mnt}/D2 && cp {hot} {mnt}/sub/prog && "
        f"ln {mnt}/sub/prog {mnt}/D2/prog && "
        f"{{ {mnt}/sub/prog 400000000000 >/dev/null & }}; prog=$!; sleep 0.3; "
        f"mount -t tmpfs t2 {mnt}/sub && ln -s {mnt}/D2/prog {mnt}/sub/prog && echo $prog && wait"
    )
    ns = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner], stdout=subprocess.PIPE, text=True
    )
    pid = 0
    try:
        assert ns.stdout is not None
        pid = int(ns.stdout.readline())
        assert os.readlink(f"/proc/{pid}/root{mnt}/sub/prog") == f"{mnt}/D2/prog"
        assert os.stat(f"/proc/{pid}/root{mnt}/D2/prog").st_ino == os.stat(f"/proc/{pid}/exe").st_ino
        p = subprocess.run(
            utrace_cmd("native", "--pid", str(pid), "hot", "--json", "-n", "3"),
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
    finally:
        if pid:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        ns.wait(timeout=30)
    assert p.returncode == 0, p.stderr
    calls = [json.loads(line) for line in p.stdout.splitlines() if '"kind": "call"' in line]
    assert len(calls) == 3 and all(c["pid"] == pid for c in calls), p.stdout[-2000:]
    assert [c["args"]["arg1"] - c["args"]["arg0"] for c in calls] == [1, 1, 1]  # hot(i, i + 1)
