"""Launched commands: the program a script really runs, a process's descendants, and ending a launched tree.

A command such as `npm` is a script: the kernel runs its `#!` interpreter (`#!/usr/bin/env node`: env,
which runs the `node` found on PATH), so the file to probe is that interpreter, not the script.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import stat
import time
from collections.abc import Callable, Iterable

from utrace.elf.buildid import ELF_MAGIC
from utrace.errors import TargetError

SHEBANG_MAX = 256  # the kernel reads this much of a script for its `#!` line (BINPRM_BUF_SIZE)
SCRIPT_DEPTH = 4  # interpreters that are scripts themselves, as deep as the kernel follows them
# env options that take a separate argument (`-u NAME`, `-C DIR`, `-S STRING`)
_ENV_ARG_OPTIONS = {"-u", "--unset", "-C", "--chdir", "-S", "--split-string"}


def _head(path: str) -> bytes:
    """The first SHEBANG_MAX bytes of a regular file ("" for anything else), never blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.read(fd, SHEBANG_MAX)
    except OSError:
        return b""
    finally:
        os.close(fd)


def shebang(path: str) -> tuple[str, str | None] | None:
    """(interpreter, its one optional argument) of a `#!` script, as the kernel splits the line; else None."""
    head = _head(path)
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip(b" \t\r")
    if not line:
        return None
    parts = line.replace(b"\t", b" ").split(b" ", 1)
    interp = os.fsdecode(parts[0])
    arg = os.fsdecode(parts[1].strip(b" \t")) if len(parts) > 1 and parts[1].strip(b" \t") else None
    return interp, arg


def env_program(arg: str | None) -> str | None:
    """The program `env` runs for a shebang's argument: `node`, `-S node --flag`, `-S FOO=1 python3`."""
    if not arg:
        return None
    words = arg.split() if arg.startswith(("-S", "--split-string")) else [arg]
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("-S", "--split-string"):
            i += 1  # its argument was split into the words that follow
            continue
        if w.startswith("-S") or w.startswith("--split-string="):
            i += 1
            continue
        if w in _ENV_ARG_OPTIONS:
            i += 2
            continue
        if w.startswith("-") or ("=" in w and not w.startswith("=")):
            i += 1  # another option, or NAME=VALUE
            continue
        return w
    return None


def _is_elf(path: str) -> bool:
    return _head(path)[:4] == ELF_MAGIC


def _which(name: str) -> str | None:
    if os.sep in name:
        return name if os.path.exists(name) else None
    return shutil.which(name)


def resolve_script(path: str) -> str:
    """The ELF file that running `path` ends up executing: `path` itself, or its shebang's interpreter
    (through `env NAME`, and interpreters that are scripts themselves), as a real path.

    A file that is neither ELF nor a script is returned as it is (the caller says what it is not).

    Raises:
        TargetError: the interpreter a script names does not exist.
    """
    current = path
    for _ in range(SCRIPT_DEPTH + 1):
        if _is_elf(current):
            return os.path.realpath(current)
        line = shebang(current)
        if line is None:
            return current
        interp, arg = line
        found = _which(interp)
        if found is None:
            raise TargetError(f"{path}: its interpreter {interp} does not exist")
        if os.path.basename(interp) == "env" and _is_elf(found):
            program = env_program(arg)
            if program is None:
                raise TargetError(f"{path}: cannot tell which program its line `#!{interp} {arg or ''}` runs")
            target = _which(program)
            if target is None:
                raise TargetError(f"{path}: {program} (run through env) is not on PATH")
            found = target
        current = found
    raise TargetError(f"{path}: interpreters nested more than {SCRIPT_DEPTH} deep")


def descendants(pid: int) -> set[int]:
    """Pids of the live processes under `pid` (children, their children...) from /proc, as this
    process's PID namespace numbers them."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return set()
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                text = f.read(4096)
            fields = text.rsplit(b")", 1)[1].split()
            state, ppid = fields[0], int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
        if state in (b"Z", b"X"):
            continue
        children.setdefault(ppid, []).append(int(name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in out and child != pid:
                out.add(child)
                todo.append(child)
    return out


def _send(fd: int, signum: int) -> None:
    try:
        signal.pidfd_send_signal(fd, signum)
    except OSError:
        pass  # exited meanwhile (ESRCH), or not ours to signal


def _kill(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except OSError:
        return False
    return True


def _exited(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def end_tree(
    members: Callable[[], Iterable[int]],
    signum: int,
    grace_s: float,
    confirm: Callable[[int], bool] = lambda _pid: True,
) -> int:
    """Send `signum` to every process `members()` names, again to any that appears meanwhile (a fork
    during the shutdown), wait up to `grace_s` for all of them to exit, then SIGKILL those left.

    Each process is held by a pidfd opened before it is signalled, and `confirm(pid)` is asked after the
    pidfd is open (is it still the process meant?), so a pid reused by another process is never signalled.
    Returns how many had to be killed.
    """
    fds: dict[int, int] = {}
    unheld: set[int] = set()  # past the open-file limit: signalled by pid, right after `confirm`

    def gather() -> None:
        for pid in members():
            if pid in fds or pid in unheld or pid <= 0:
                continue
            try:
                fd = os.pidfd_open(pid)
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE) and confirm(pid):
                    unheld.add(pid)
                    _kill(pid, signum)
                continue
            if not confirm(pid):
                os.close(fd)
                continue
            fds[pid] = fd
            _send(fd, signum)

    try:
        gather()
        deadline = time.monotonic() + grace_s
        while True:
            alive = [fd for fd in fds.values() if not _exited(fd)]
            left = deadline - time.monotonic()
            if not alive or left <= 0:
                break
            select.select(alive, [], [], min(0.05, left))
            gather()
        killed = 0
        gather()
        for fd in fds.values():
            if not _exited(fd):
                _send(fd, signal.SIGKILL)
                killed += 1
        for pid in unheld:
            if confirm(pid) and _kill(pid, signal.SIGKILL):
                killed += 1
        return killed
    finally:
        for fd in fds.values():
            os.close(fd)
