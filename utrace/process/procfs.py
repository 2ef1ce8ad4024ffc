"""Opening files a traced process controls: its files under `/proc/PID/root`, its perf map, its maps.

A traced process (possibly another user's, possibly hostile) decides what its paths name: a library
path can become a symlink to a file only root may read, a FIFO that blocks an open forever, or a file
of gigabytes. Every such file is opened here, and only here:

- A path under `/proc/PID/root` is resolved inside that root, as the process would resolve it:
  `openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS` (Linux >= 5.6) from a descriptor of the
  root, so an absolute symlink means the process's `/`, `..` stops at its root and `/proc/*/root`-style
  links are refused. Without `openat2` the path is walked a component at a time with `O_NOFOLLOW`,
  symlinks read and resolved inside the root the same way (at most 40).
- Every open is `O_NONBLOCK` (a FIFO or a device never blocks) and the result must be a regular file
  (`fstat` on the descriptor, so what is checked is what is read), of at most the size the caller allows.
- `nofollow=True` also refuses a symlink as the last component (perf maps: runtimes write them as plain files).

Paths elsewhere (a file the user named, `/proc/PID/exe`, `/proc/PID/map_files/...`, which the kernel
resolves to the mapped file itself) get the same `O_NONBLOCK` open, regular-file check and size cap.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

MAX_ELF_BYTES = 1 << 32  # 4 GiB: an ELF file larger than that is refused
MAX_MAPS_BYTES = 64 << 20  # /proc/PID/maps: 65,530 mappings (vm.max_map_count) of long paths fit
MAX_STATUS_BYTES = 1 << 16

_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_NR_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(platform.machine())
_MAX_LINKS = 40
_PROC_ROOT = re.compile(r"\A(/proc/(?:[0-9]+|self)/root)(/.*)?\Z", re.S)
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_openat2_works: bool | None = None if _NR_OPENAT2 is not None else False


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "not a regular file"


def not_regular(path: str, mode: int) -> OSError:
    if stat.S_ISDIR(mode):
        return IsADirectoryError(errno.EISDIR, "is a directory", path)
    return OSError(errno.EINVAL, f"{_kind(mode)}, not a regular file", path)


def split_root(path: str) -> tuple[str, str] | None:
    """(`/proc/PID/root`, path inside it) for a path under a process's root, else None."""
    m = _PROC_ROOT.match(path)
    if m is None:
        return None
    return m.group(1), m.group(2) or "/"


def _openat2(dirfd: int, inside: str, flags: int) -> int:
    global _openat2_works
    how = _OpenHow(flags, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    fd = int(_libc.syscall(_NR_OPENAT2, dirfd, os.fsencode(inside), ctypes.byref(how), ctypes.sizeof(how)))
    if fd >= 0:
        _openat2_works = True
        return fd
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EPERM) and _openat2_works is None:  # EPERM: a seccomp filter
        _openat2_works = False
        return _walk(dirfd, inside, flags)
    raise OSError(err, os.strerror(err), inside)


def _walk(rootfd: int, inside: str, flags: int) -> int:
    """`openat2(RESOLVE_IN_ROOT)` done by hand: one component at a time, symlinks resolved in the root."""
    todo = [c for c in inside.split("/") if c and c != "."]
    stack: list[int] = []  # descriptors of the directories below the root we are in
    links = 0
    try:
        while todo:
            comp = todo.pop(0)
            cur = stack[-1] if stack else rootfd
            if comp == "..":
                if stack:
                    os.close(stack.pop())
                continue
            last = not todo
            if last:
                try:
                    return os.open(comp, flags | os.O_NOFOLLOW, dir_fd=cur)
                except OSError as e:
                    if e.errno != errno.ELOOP or flags & os.O_NOFOLLOW:
                        raise
            fd = os.open(comp, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
            if not stat.S_ISLNK(os.fstat(fd).st_mode):
                stack.append(fd)
                continue
            os.close(fd)
            links += 1
            if links > _MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), inside)
            target = os.readlink(comp, dir_fd=cur)
            if target.startswith("/"):
                while stack:
                    os.close(stack.pop())
            todo[:0] = [c for c in target.split("/") if c and c != "."]
        return os.open(".", flags, dir_fd=stack[-1] if stack else rootfd)
    finally:
        for fd in stack:
            os.close(fd)


def open_fd(path: str, *, max_size: int, nofollow: bool = False) -> int:
    """A descriptor of the regular file at `path`, opened as described in the module doc.

    Raises:
        OSError: missing, unreadable, a symlink out of reach, not a regular file (EINVAL, "a FIFO, not a
            regular file"), or larger than `max_size` (EFBIG).
    """
    flags = _OPEN_FLAGS | (os.O_NOFOLLOW if nofollow else 0)
    where = split_root(path)
    if where is None:
        fd = os.open(path, flags)
    else:
        rootfd = os.open(where[0], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = _openat2(rootfd, where[1], flags) if _openat2_works is not False else _walk(rootfd, where[1], flags)
        finally:
            os.close(rootfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise not_regular(path, st.st_mode)
        if st.st_size > max_size:
            raise OSError(errno.EFBIG, f"larger than {max_size} bytes", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file(path: str, *, max_size: int = MAX_ELF_BYTES, nofollow: bool = False) -> BinaryIO:
    """`open_fd` as a binary file object (unbuffered reads of what `fstat` describes)."""
    return os.fdopen(open_fd(path, max_size=max_size, nofollow=nofollow), "rb")


@contextmanager
def kernel_path(path: str) -> Iterator[str]:
    """A path for a system call that takes a file by name (uprobes), naming the file `open_fd` opens.

    The kernel resolves `/proc/PID/root/...` itself, but an absolute symlink met on the way from our
    root, not the process's: for such a path this yields `/proc/self/fd/N` of a descriptor opened
    inside the root (closed afterwards), which the kernel follows to exactly that file. Other paths
    are yielded as they are.

    Raises:
        OSError: the file under the root cannot be opened as `open_fd` opens it.
    """
    if split_root(path) is None:
        yield path
        return
    fd = open_fd(path, max_size=MAX_ELF_BYTES)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def identity(path: str) -> os.stat_result | None:
    """`fstat` of the regular file `path` names when opened safely, or None."""
    try:
        fd = open_fd(path, max_size=1 << 62)
    except OSError:
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


MAX_MOUNTINFO_BYTES = 16 << 20  # /proc/self/mountinfo: tens of thousands of mounts fit


def file_identity(path: str) -> tuple[int, int, int] | None:
    """(st_dev, st_ino, the kernel's dev_t of its superblock) of the regular file `path` names when
    opened safely, or None.

    The superblock's device is what the kernel's `inode->i_sb->s_dev` holds (major << 20 | minor), which
    st_dev is not always: overlayfs across file systems and btrfs subvolumes report another device to
    stat(2). It is the mount's major:minor in /proc/self/mountinfo (the mount found by the descriptor's
    mnt_id in /proc/self/fdinfo); st_dev stands in when those do not say."""
    try:
        fd = open_fd(path, max_size=1 << 62)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        dev = (os.major(st.st_dev), os.minor(st.st_dev))
        try:
            info = read_text(f"/proc/self/fdinfo/{fd}", MAX_STATUS_BYTES)
            mnt = re.search(r"^mnt_id:\s*(\d+)$", info, re.M)
            if mnt is not None:
                mounts = read_text("/proc/self/mountinfo", MAX_MOUNTINFO_BYTES)
                line = re.search(rf"^{mnt.group(1)} \d+ (\d+):(\d+) ", mounts, re.M)
                if line is not None:
                    dev = (int(line.group(1)), int(line.group(2)))
        except OSError:
            pass
        return st.st_dev, st.st_ino, (dev[0] << 20) | dev[1]
    finally:
        os.close(fd)


def read_text(path: str, max_bytes: int) -> str:
    """A /proc text file (maps, status), read incrementally up to `max_bytes` (what follows is dropped).

    Raises:
        OSError: cannot be opened or read.
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        chunks: list[bytes] = []
        total = 0
        while total < max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class MapEntry:
    """One line of /proc/PID/maps.

    `path` is the mapped file as the process names it (" (deleted)" removed), "[vdso]"-style names
    as they are, "" for anonymous memory; `dev` is (major, minor).
    """

    start: int
    end: int
    perms: str
    offset: int
    dev: tuple[int, int]
    inode: int
    path: str


def parse_maps(text: str) -> list[MapEntry]:
    """The well-formed lines of a /proc/PID/maps text; anything else is skipped, never an exception."""
    out: list[MapEntry] = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        try:
            lo_s, _, hi_s = parts[0].partition("-")
            major_s, _, minor_s = parts[3].partition(":")
            lo, hi = int(lo_s, 16), int(hi_s, 16)
            offset = int(parts[2], 16)
            dev = (int(major_s, 16), int(minor_s, 16))
            inode = int(parts[4])
        except ValueError:
            continue
        if not (0 <= lo < hi < 1 << 64) or offset < 0 or inode < 0 or min(dev) < 0 or len(parts[1]) != 4:
            continue
        path = parts[5].removesuffix(" (deleted)") if len(parts) == 6 else ""
        out.append(MapEntry(lo, hi, parts[1], offset, dev, inode, path))
    return out


def process_uids(pid: int) -> frozenset[int] | None:
    """The real, effective, saved and filesystem uids of a process, or None when it cannot be read."""
    try:
        text = read_text(f"/proc/{pid}/status", MAX_STATUS_BYTES)
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Uid:"):
            try:
                return frozenset(int(x) for x in line.split()[1:])
            except ValueError:
                return None
    return None
