"""Resolve what the user pointed at (a path, a command name, or --pid) into a `Target`.

For a process, every path is opened through `/proc/PID/root`, so a process in another mount namespace
(a container) is read from its own filesystem, and the pid it sees itself as (`NStgid`) is kept.
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace

from utrace.elf.buildid import ELF_MAGIC
from utrace.errors import TargetError, UsageError
from utrace.model import Event, Module, Target
from utrace.process import procfs


def resolve_path(spec: str) -> str:
    """Absolute path of an ELF target given as a path or as a command name found on PATH.

    Raises:
        TargetError: missing file, a directory, or not readable.
        UsageError: a FIFO, a device or a socket (opening one could block or change it; nothing is opened).
    """
    path = spec
    if not os.path.exists(path) and os.sep not in spec:
        import shutil  # here: it imports bz2 and lzma (2 ms of every start)

        found = shutil.which(spec)
        if found:
            path = found
    if not os.path.exists(path):
        raise TargetError(f"{spec}: no such file")
    if os.path.isdir(path):
        raise TargetError(f"{spec}: is a directory, not an ELF file")
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise TargetError(f"{spec}: cannot read: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise UsageError(f"{spec}: {procfs.not_regular(spec, mode).strerror}: give an ELF file")
    if not os.access(path, os.R_OK):
        raise TargetError(f"{spec}: permission denied")
    return os.path.realpath(path)


def file_target(spec: str) -> Target:
    path = resolve_path(spec)
    return Target(exe=path, modules=(Module(path=path, display=path),))


def _read(path: str) -> str:
    return procfs.read_text(path, procfs.MAX_STATUS_BYTES)


def namespace_pid(pid: int) -> int:
    """The pid as the process sees itself (last NStgid entry); the host pid if not namespaced."""
    try:
        for line in _read(f"/proc/{pid}/status").splitlines():
            if line.startswith("NStgid:"):
                return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return pid


def _nspid_line(path: str) -> list[int]:
    """The NSpid ids in a status file: this /proc's pid first, the innermost namespace's last."""
    try:
        for line in _read(path).splitlines():
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    except (OSError, ValueError):
        pass
    return []


class NamespaceIds:
    """Adds to events the pid and tid a process sees in its own PID namespace, where they differ.

    Read from `NSpid` in /proc/PID/status (and /proc/PID/task/TID/status for a thread) the first time
    a process or thread is seen, then cached; a process in utrace's own namespace costs one read and
    then a dictionary lookup per event. A thread gone before it could be read gets no `ns_tid`.
    """

    _LIMIT = 65536  # entries; forgotten all at once past this, so pids reused much later are re-read

    def __init__(self) -> None:
        self._pids: dict[int, int | None] = {}
        self._tids: dict[int, int | None] = {}

    def ids(self, pid: int, tid: int) -> tuple[int, int | None] | None:
        """(ns pid, ns tid) for a host (pid, tid), or None when the process is not in another namespace."""
        if pid not in self._pids:
            if len(self._pids) >= self._LIMIT:
                self._pids.clear()
                self._tids.clear()
            ids = _nspid_line(f"/proc/{pid}/status")
            self._pids[pid] = ids[-1] if len(ids) > 1 else None
        ns_pid = self._pids[pid]
        if ns_pid is None:
            return None
        if tid == pid:
            return ns_pid, ns_pid
        if tid not in self._tids:
            if len(self._tids) >= self._LIMIT:
                self._tids.clear()
            ids = _nspid_line(f"/proc/{pid}/task/{tid}/status")
            self._tids[tid] = ids[-1] if len(ids) > 1 else None
        return ns_pid, self._tids[tid]

    def annotate(self, ev: Event) -> Event:
        ids = self.ids(ev.pid, ev.tid)
        return ev if ids is None else replace(ev, ns_pid=ids[0], ns_tid=ids[1])


def exe_identity(pid: int) -> tuple[int, int] | None:
    """(device, inode) of the program a process runs; changes when it execs another file."""
    try:
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _is_elf(path: str) -> bool:
    try:
        with procfs.open_file(path) as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


def _same_file(path: str, dev: tuple[int, int], ino: int) -> bool:
    """True when `path` (opened as `procfs` does: inside its process's root) is that device and inode."""
    st = procfs.identity(path)
    return st is not None and st.st_ino == ino and (os.major(st.st_dev), os.minor(st.st_dev)) == dev


def process_target(pid: int) -> Target:
    """The executable and every mapped ELF file of a live process.

    A file is read and probed at its path through /proc/PID/root while that path still names the
    file the process maps (same device and inode as in /proc/PID/maps). A file deleted or replaced on
    disk since it was mapped (an upgrade renamed over it) is reached through /proc/PID/exe or
    /proc/PID/map_files instead: uprobes belong to an inode, and the new file's are never run.

    Raises:
        TargetError: no such process, or it cannot be inspected (permission, a kernel thread).
    """
    if pid <= 0:
        raise UsageError(f"invalid pid {pid}")
    proc = f"/proc/{pid}"
    if not os.path.isdir(proc):
        raise TargetError(f"no process with pid {pid}")
    root = f"{proc}/root"
    try:
        exe_inside = os.readlink(f"{proc}/exe")
    except PermissionError:
        raise TargetError(f"pid {pid}: permission denied (tracing another user's process needs root)") from None
    except FileNotFoundError:
        raise TargetError(f"pid {pid}: no executable (a kernel thread, or it just exited)") from None
    except OSError as e:
        raise TargetError(f"pid {pid}: cannot inspect: {e.strerror}") from None
    exe_inside = exe_inside.removesuffix(" (deleted)")
    try:
        maps = procfs.parse_maps(procfs.read_text(f"{proc}/maps", procfs.MAX_MAPS_BYTES))
    except OSError as e:
        raise TargetError(f"pid {pid}: cannot read its memory map: {e.strerror}") from None
    modules: list[Module] = []
    seen: set[str] = set()
    bases: dict[str, int] = {}
    mapped: dict[str, tuple[str, tuple[int, int], int]] = {}  # path -> (first range, (major, minor), inode)
    order: list[str] = [exe_inside]
    for entry in maps:
        path = entry.path
        if not path.startswith("/"):
            continue
        if path not in bases:
            bases[path] = entry.start - entry.offset
            mapped[path] = (f"{entry.start:x}-{entry.end:x}", entry.dev, entry.inode)
            if path != exe_inside:
                order.append(path)
    for inside in order:
        if inside in seen:
            continue
        seen.add(inside)
        host = root + inside
        if inside in mapped:
            rng, dev, ino = mapped[inside]
            if not _same_file(host, dev, ino):
                mapped_file = f"{proc}/exe" if inside == exe_inside else f"{proc}/map_files/{rng}"
                if _same_file(mapped_file, dev, ino):
                    host = mapped_file
        if not _is_elf(host):
            continue
        modules.append(Module(path=host, display=inside, base=bases.get(inside, 0)))
    if not modules:
        raise TargetError(f"pid {pid}: its executable {exe_inside} is not readable as ELF")
    exe = next((m.path for m in modules if m.display == exe_inside), root + exe_inside)
    return Target(exe=exe, pid=pid, nspid=namespace_pid(pid), root=root, modules=tuple(modules))


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = _read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def comm_of(pid: int) -> str | None:
    """The process's command name (`/proc/PID/comm`, at most 15 bytes), or None once it is gone."""
    try:
        return _read(f"/proc/{pid}/comm").rstrip("\n") or None
    except OSError:
        return None
