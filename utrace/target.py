"""Resolve what the user pointed at (a path, a command name, or --pid) into a `Target`.

For a process, every path is opened through `/proc/PID/root`, so a process in another mount namespace
(a container) is read from its own filesystem, and the pid it sees itself as (`NStgid`) is kept.
"""

from __future__ import annotations

import os
import shutil

from utrace.elf.buildid import ELF_MAGIC
from utrace.errors import TargetError, UsageError
from utrace.model import Module, Target


def resolve_path(spec: str) -> str:
    """Absolute path of an ELF target given as a path or as a command name found on PATH.

    Raises:
        TargetError: missing file, a directory, or not readable.
    """
    path = spec
    if not os.path.exists(path) and os.sep not in spec:
        found = shutil.which(spec)
        if found:
            path = found
    if not os.path.exists(path):
        raise TargetError(f"{spec}: no such file")
    if os.path.isdir(path):
        raise TargetError(f"{spec}: is a directory, not an ELF file")
    if not os.access(path, os.R_OK):
        raise TargetError(f"{spec}: permission denied")
    return os.path.realpath(path)


def file_target(spec: str) -> Target:
    path = resolve_path(spec)
    return Target(exe=path, modules=(Module(path=path, display=path),))


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def namespace_pid(pid: int) -> int:
    """The pid as the process sees itself (last NStgid entry); the host pid if not namespaced."""
    try:
        for line in _read(f"/proc/{pid}/status").splitlines():
            if line.startswith("NStgid:"):
                return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return pid


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


def process_target(pid: int) -> Target:
    """The executable and every mapped ELF file of a live process.

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
        maps = _read(f"{proc}/maps")
    except OSError as e:
        raise TargetError(f"pid {pid}: cannot read its memory map: {e.strerror}") from None
    modules: list[Module] = []
    seen: set[str] = set()
    bases: dict[str, int] = {}
    order: list[str] = [exe_inside]
    for line in maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("/"):
            continue
        path = parts[5].removesuffix(" (deleted)")
        start = int(parts[0].split("-")[0], 16)
        offset = int(parts[2], 16)
        if path not in bases:
            bases[path] = start - offset
            if path != exe_inside:
                order.append(path)
    for inside in order:
        if inside in seen:
            continue
        seen.add(inside)
        host = root + inside
        if not _is_elf(host):
            continue
        modules.append(Module(path=host, display=inside, base=bases.get(inside, 0)))
    if not modules:
        raise TargetError(f"pid {pid}: its executable {exe_inside} is not readable as ELF")
    return Target(exe=root + exe_inside, pid=pid, nspid=namespace_pid(pid), root=root, modules=tuple(modules))


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
