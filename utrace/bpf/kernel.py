"""The kernel side of the environment: headers bcc can compile against, tracefs, feature checks.

The machines this runs on often have no headers package for the running kernel (a cloud or custom
kernel) but do have Debian's generic `linux-headers-*` installed. bcc only looks in
`/lib/modules/$(uname -r)/build` (plus `source`), or in one `BCC_KERNEL_SOURCE` folder, and Debian splits
its headers into an arch folder (`-amd64`: generated files, config) and a `-common` folder
(`kconfig.h` and the rest). So utrace builds one merged tree of symlinks under its cache directory and
points `BCC_KERNEL_SOURCE` at it. Uprobe programs use only stable UAPI-level definitions
(`struct pt_regs`), so headers of another kernel version work for them.

Headers become part of the BPF program, so a tree is used only when `cache.untrusted_tree` finds
nothing wrong with it (every directory, file and symlink target in it, and every directory above it,
belongs to this user or root and no one else may write it); otherwise it is skipped with one warning.
A merged tree whose cache directory is not trusted is built in a private temporary directory instead.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from utrace.store.cache import cache_dir, trusted_cache_dir, untrusted_tree, warn_once

TRACEFS = "/sys/kernel/tracing"
UPROBE_PMU = "/sys/bus/event_source/devices/uprobe"
_HEADER_PROBE = "include/linux/kconfig.h"


@dataclass(frozen=True, slots=True)
class HeaderSource:
    """Where bcc will find kernel headers.

    Attributes:
        path: the folder (a real `/lib/modules/.../build`, or utrace's merged tree), "" if none.
        how: "running kernel", "merged from linux-headers-X" or "none".
        exact: True when the headers belong to the running kernel.
    """

    path: str
    how: str
    exact: bool


def _has_headers(path: Path) -> bool:
    return (path / _HEADER_PROBE).exists()


def _arch_suffix() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _version_key(name: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", name)]


def find_header_packages(src: Path = Path("/usr/src")) -> list[tuple[Path, Path]]:
    """(arch folder, common folder) pairs of installed Debian-style header packages, newest first."""
    suffix = _arch_suffix()
    pairs: list[tuple[Path, Path]] = []
    if not src.is_dir():
        return pairs
    for arch_dir in src.glob(f"linux-headers-*-{suffix}"):
        common = arch_dir.with_name(arch_dir.name[: -len(suffix)] + "common")
        if common.is_dir():
            pairs.append((arch_dir, common))
        elif _has_headers(arch_dir):
            pairs.append((arch_dir, arch_dir))
    pairs.sort(key=lambda p: _version_key(p[0].name), reverse=True)
    return pairs


def _merge(dst: Path, sources: list[Path]) -> None:
    """Make `dst` the union of `sources` as symlinks; the first source wins on a clash of files."""
    dst.mkdir(parents=True, exist_ok=True)
    entries: dict[str, list[Path]] = {}
    for s in sources:
        for child in sorted(s.iterdir()):
            entries.setdefault(child.name, []).append(child)
    for name, paths in entries.items():
        dirs = [p for p in paths if p.is_dir()]
        if len(dirs) > 1:
            _merge(dst / name, dirs)
        else:
            target = dirs[0] if dirs else paths[0]
            (dst / name).symlink_to(target.resolve())


_trust: dict[str, str | None] = {}


def untrusted_headers(path: str | Path) -> str | None:
    """`cache.untrusted_tree` of a header tree, once per process and path."""
    key = str(path)
    if key not in _trust:
        _trust[key] = untrusted_tree(path)
    return _trust[key]


_private: list[Path] = []


def _private_root() -> Path:
    """A directory only this process uses, removed by `release_private_headers` (or at exit)."""
    import atexit
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="utrace-headers-"))
    if not _private:
        atexit.register(release_private_headers)
    _private.append(tmp)
    return tmp


def release_private_headers() -> None:
    """Remove the private header trees this process built (bcc has compiled: they are not needed again;
    a later compile builds another). The CLI leaves with os._exit, so this is called after compiling."""
    while _private:
        tmp = _private.pop()
        if os.environ.get("BCC_KERNEL_SOURCE", "").startswith(str(tmp)):
            del os.environ["BCC_KERNEL_SOURCE"]
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def merged_header_tree(arch_dir: Path, common: Path, cache: Path | None = None) -> Path:
    """Build (once) the merged header tree for one header package; returns its path.

    Under `cache` (default: the trusted cache directory; a private temporary one when there is none).
    """
    import shutil

    root = (cache or trusted_cache_dir() or _private_root()) / "kernel-headers"
    final = root / arch_dir.name
    if _has_headers(final):
        return final
    tmp = root / f".{arch_dir.name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    _merge(tmp, [arch_dir] if arch_dir == common else [arch_dir, common])
    try:
        os.replace(tmp, final)
    except OSError:  # another utrace finished first, or a stale incomplete tree is in the way
        if not _has_headers(final):
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def trusted_merged_tree(arch_dir: Path, common: Path) -> tuple[Path | None, str]:
    """`merged_header_tree` checked with `untrusted_headers`: (tree, "") or (None, why not).

    A tree in the cache that is not trusted is ignored with a warning and built again in a private
    temporary directory; when that one is not trusted either, the package's own files are not.
    """
    tree = merged_header_tree(arch_dir, common)
    why = untrusted_headers(tree)
    if why is None:
        return tree, ""
    if not tree.parent.parent.name.startswith("utrace-headers-"):
        warn_once(f"ignoring the kernel header tree {tree}: {why}")
        tree = merged_header_tree(arch_dir, common, _private_root())
        why = untrusted_headers(tree)
        if why is None:
            return tree, ""
    warn_once(f"ignoring the header package {arch_dir.name}: {why}")
    return None, why


def header_source() -> HeaderSource:
    """Find headers for bcc: the running kernel's own, else a merged tree of an installed package."""
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env and _has_headers(Path(env)):
        why = untrusted_headers(env)
        if why is None:
            return HeaderSource(env, "BCC_KERNEL_SOURCE", exact=False)
        warn_once(f"ignoring BCC_KERNEL_SOURCE={env}: {why}")
        del os.environ["BCC_KERNEL_SOURCE"]  # bcc would read it too
    release = platform.release()
    build = Path("/lib/modules") / release / "build"
    source = Path("/lib/modules") / release / "source"
    if _has_headers(build) or (build.is_dir() and _has_headers(source)):
        why = untrusted_headers(build) or (untrusted_headers(source) if source.is_dir() else None)
        if why is None:
            return HeaderSource(str(build), "running kernel", exact=True)
        warn_once(f"ignoring the running kernel's headers {build}: {why}")
    how = "none"
    for arch_dir, common in find_header_packages():
        try:
            tree, why = trusted_merged_tree(arch_dir, common)
        except OSError as e:  # e.g. an unwritable cache directory (a user without a home)
            how = f"none: cannot merge {arch_dir.name} under {cache_dir()} ({e.strerror})"
            continue
        if tree is None:
            how = f"none: {arch_dir.name} is not trusted ({why})"
            continue
        return HeaderSource(str(tree), f"merged from {arch_dir.name}", exact=False)
    return HeaderSource("", how, exact=False)


def header_guess() -> tuple[HeaderSource, list[str]] | None:
    """What `header_source` answers when the headers it finds first are trusted, found without checking
    them, and the paths `untrusted_headers` must pass for that answer to stand (None: no guess, e.g. no
    headers at all). The check (~0.1 s) can then run while bcc compiles (see `backend.compile_program`)."""
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env and _has_headers(Path(env)):
        return HeaderSource(env, "BCC_KERNEL_SOURCE", exact=False), [env]
    release = platform.release()
    build = Path("/lib/modules") / release / "build"
    source = Path("/lib/modules") / release / "source"
    if _has_headers(build) or (build.is_dir() and _has_headers(source)):
        return HeaderSource(str(build), "running kernel", exact=True), [str(build)] + (
            [str(source)] if source.is_dir() else []
        )
    for arch_dir, common in find_header_packages():
        try:
            tree = merged_header_tree(arch_dir, common)
        except OSError:
            return None
        return HeaderSource(str(tree), f"merged from {arch_dir.name}", exact=False), [str(tree)]
    return None


def prepare_bcc_headers() -> HeaderSource:
    """Point bcc at usable headers (sets BCC_KERNEL_SOURCE when the kernel has none of its own)."""
    hs = header_source()
    if hs.path and not hs.exact:
        os.environ["BCC_KERNEL_SOURCE"] = hs.path
    return hs


def tracefs_mounted() -> bool:
    return os.path.exists(os.path.join(TRACEFS, "uprobe_events"))


def ensure_tracefs() -> bool:
    """Mount tracefs at /sys/kernel/tracing if it is not there (bcc writes there when detaching)."""
    if tracefs_mounted():
        return True
    libc = ctypes.CDLL(None, use_errno=True)
    rc = int(libc.mount(b"nodev", TRACEFS.encode(), b"tracefs", 0, None))
    return rc == 0 or tracefs_mounted()


def kernel_config() -> dict[str, str]:
    """The running kernel's config from /proc/config.gz or /boot/config-RELEASE ({} if neither)."""
    import gzip

    text = ""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except OSError:
        try:
            text = Path(f"/boot/config-{platform.release()}").read_text()
        except OSError:
            return {}
    config: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, v = line.split("=", 1)
            config[k] = v
    return config


CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def effective_capabilities() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def can_trace_capabilities(caps: int | None = None) -> bool:
    """CAP_SYS_ADMIN, or CAP_BPF together with CAP_PERFMON, is what loading uprobe programs needs."""
    c = effective_capabilities() if caps is None else caps

    def has(bit: int) -> bool:
        return bool(c & (1 << bit))

    return has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON))


def uprobe_pmu_type() -> int | None:
    try:
        return int(Path(UPROBE_PMU, "type").read_text())
    except (OSError, ValueError):
        return None


def uprobe_ref_ctr_supported() -> bool:
    return Path(UPROBE_PMU, "format", "ref_ctr_offset").exists()


_NR_BPF = {"x86_64": 321, "aarch64": 280}
BPF_MAP_CREATE = 0
BPF_MAP_TYPE_RINGBUF = 27


def ringbuf_supported() -> tuple[bool, str]:
    """Create (and close) a BPF ring buffer map: the real test of kernel support (Linux >= 5.8)."""
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        return False, f"unknown bpf syscall number on {platform.machine()}"
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(struct.pack("<IIII", BPF_MAP_TYPE_RINGBUF, 0, 0, 4096), 128)
    fd = libc.syscall(nr, BPF_MAP_CREATE, attr, 128)
    if fd >= 0:
        os.close(fd)
        return True, "ring buffer map created"
    err = ctypes.get_errno()
    return False, f"bpf(BPF_MAP_CREATE, RINGBUF) failed: {errno.errorcode.get(err, err)}"
