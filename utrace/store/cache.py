"""Where utrace keeps derived data: `$XDG_CACHE_HOME/utrace` (default `~/.cache/utrace`), and whom it trusts.

What is read back from the cache is believed: symbol addresses become uprobe offsets, compiled programs
are loaded into the kernel, and a kernel-header tree becomes part of the BPF program. So the cache
directory, every file read from it, and every kernel-header tree must belong to the user running utrace
(or root) and must not be writable by group or others (`untrusted`); every directory above them too,
where a sticky directory such as /tmp is accepted (others cannot rename or remove what is ours there).
Anything else is ignored with one warning line (`warn_once`), and utrace works without it.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

MAX_CACHE_FILE = 1 << 30  # a cache file larger than this is not read
_warned: set[str] = set()
_trusted_dirs: dict[str, Path | None] = {}


def cache_dir() -> Path:
    """The configured cache directory (it may not exist, or not be trusted: see `trusted_cache_dir`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "utrace"


def warn_once(message: str) -> None:
    """One `utrace: warning:` line on stderr, the first time this message comes up in this process."""
    if message in _warned:
        return
    _warned.add(message)
    try:
        sys.stderr.write(f"utrace: warning: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def untrusted(st: os.stat_result, *, sticky_ok: bool = False) -> str | None:
    """Why a file or directory with this status is not to be trusted, or None when it is.

    Trusted: owned by this process's effective user or root, and not writable by group or others (a
    sticky directory may be, with `sticky_ok`). Symlinks' own modes mean nothing; their owner counts.
    """
    if st.st_uid not in (os.geteuid(), 0):
        return f"owned by uid {st.st_uid}"
    if stat.S_ISLNK(st.st_mode):
        return None
    if st.st_mode & 0o022 and not (sticky_ok and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def untrusted_dir(path: str | os.PathLike[str], known: set[str] | None = None) -> str | None:
    """Why the directory `path` (resolved), or one above it, is not to be trusted; None when all are.

    Above `path`, sticky directories writable by all (/tmp) are accepted. `known`: directories
    already found trusted (with all above them), which the walk up stops at; those checked are added.
    """
    real = os.path.realpath(path)
    if known is not None and real in known:
        return None
    try:
        st = os.stat(real)
    except OSError as e:
        return f"cannot be inspected ({e.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    why = untrusted(st)
    if why:
        return f"{real} is {why}"
    seen = [real]
    parent = os.path.dirname(real)
    while known is None or parent not in known:
        try:
            why = untrusted(os.stat(parent), sticky_ok=True)
        except OSError as e:
            return f"{parent} cannot be inspected ({e.strerror})"
        if why:
            return f"{parent} is {why}"
        seen.append(parent)
        if parent == "/":
            break
        parent = os.path.dirname(parent)
    if known is not None:
        known.update(seen)
    return None


def untrusted_tree(path: str | os.PathLike[str]) -> str | None:
    """`untrusted_dir` for a whole tree (kernel headers): also every directory, file and symlink in it,
    symlinks followed (their targets, and the directories holding the targets, checked too).
    About 0.1 s for a Debian linux-headers tree (16,000 entries); done only when bcc is to compile."""
    known: set[str] = set()
    why = untrusted_dir(path, known)
    if why:
        return why
    checked: set[str] = set()
    todo = [os.path.realpath(path)]
    while todo:
        d = todo.pop()
        try:
            it = os.scandir(d)
        except OSError as e:
            return f"{d} cannot be listed ({e.strerror})"
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                    why = untrusted(st)
                    target = entry.path
                    if why is None and stat.S_ISLNK(st.st_mode):
                        target = os.path.realpath(entry.path)
                        why_holder = untrusted_dir(os.path.dirname(target), known)
                        if why_holder:
                            return why_holder
                        st = os.stat(target)
                        why = untrusted(st)
                    if why:
                        return f"{target} is {why}"
                    if stat.S_ISDIR(st.st_mode) and target not in checked:
                        checked.add(target)
                        todo.append(target)
                except OSError as e:
                    return f"{entry.path} cannot be inspected ({e.strerror})"
    return None


def trusted_cache_dir() -> Path | None:
    """The cache directory, created (mode 0700) if missing; None, after one warning, when it (or a
    directory above it) is not trusted (see the module doc) or cannot be created."""
    d = cache_dir()
    key = str(d)
    if key in _trusted_dirs:
        return _trusted_dirs[key]
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        _trusted_dirs[key] = None
        return None  # no cache: only costs speed
    why = untrusted_dir(d)
    if why:
        warn_once(f"ignoring the cache directory {d}: {why}")
    _trusted_dirs[key] = None if why else d
    return _trusted_dirs[key]


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` so readers see either the old file or the whole new one, never a torn one."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def seal(body: bytes) -> bytes:
    """`body` preceded by its CRC-32, so a damaged cache file is recognised before it is parsed."""
    import zlib

    return zlib.crc32(body).to_bytes(4, "little") + body


def read_sealed(path: str | os.PathLike[str]) -> memoryview | None:
    """The body of a file written with `seal`, or None when it is missing, unreadable, damaged, larger
    than MAX_CACHE_FILE, not a regular file (symlinks are not followed), or not trusted (`untrusted`)."""
    import zlib

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_CACHE_FILE or untrusted(st):
                return None
            data = f.read(st.st_size)
    except OSError:
        return None
    body = memoryview(data)[4:]
    if len(data) < 4 or int.from_bytes(data[:4], "little") != zlib.crc32(body):
        return None
    return body


CacheJob = tuple[Path, Callable[[], bytes]]


def write_behind(jobs: list[CacheJob]) -> None:
    """Write cache files from a forked child, so a short-lived command need not wait for them.

    Each job is (file, producer of its bytes); the producers run in the child, on the other core,
    while this process goes on (and typically exits; the child is not waited for, see
    `parallel.reap_later`). The child holds none of our standard streams (nor any other descriptor)
    open, so a reader of our output sees its end when we exit. Where fork is impossible, the files are
    written here and now.
    """
    if not jobs:
        return
    from utrace.store.parallel import reap_later

    try:
        pid = os.fork()
    except OSError:
        write_jobs(jobs)
        return
    if pid:
        reap_later(pid)
        return
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        # nor anything else of ours (a tracer's pidfds, pipes, perf events: their owners see them closed
        # when the tracer closes them, not when this child is done)
        os.closerange(3, max(os.sysconf("SC_OPEN_MAX"), 3))
        write_jobs(jobs)
    finally:
        os._exit(0)


def write_jobs(jobs: list[CacheJob]) -> None:
    """Write cache files now, then keep the cache within its size (`prune`); failures only cost speed."""
    for path, produce in jobs:
        try:
            write_atomic(path, produce())
        except OSError:
            pass  # a read-only or full cache only costs speed
    for directory in {path.parent for path, _ in jobs}:
        prune(directory)


# The files utrace writes at the top of its cache directory: symbol indexes, rendered listings (plain, JSON),
# compiled programs, resolved plans (the toolchains and real-world programs the tests fetch live in sub-directories).
_CACHE_FILE_PREFIXES = ("symbols-", "plain-", "json-", "bpf-", "plan-")


def max_cache_bytes() -> int:
    """The cache's size limit: `UTRACE_CACHE_MAX_MB` (default 1024) MiB of utrace's own files."""
    try:
        mb = float(os.environ.get("UTRACE_CACHE_MAX_MB", "1024"))
    except ValueError:
        mb = 1024.0
    return int(mb * (1 << 20)) if mb == mb and mb > 0 else 1024 << 20


def prune(directory: Path, limit: int | None = None) -> int:
    """Remove the least recently used cache files in `directory` until they take at most `limit` bytes.

    Entries are keyed by each file's identity, so every rebuilt binary adds one and nothing else ever
    removes the old: without this the cache grows without bound (a day of tests wrote 1,000 entries).
    "Used" is the later of the file's access and modification times. Returns the bytes removed.
    """
    limit = max_cache_bytes() if limit is None else limit
    files: list[tuple[float, int, str]] = []
    total = 0
    try:
        with os.scandir(directory) as it:
            for e in it:
                if not e.name.startswith(_CACHE_FILE_PREFIXES):
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                files.append((max(st.st_atime, st.st_mtime), st.st_size, e.path))
                total += st.st_size
    except OSError:
        return 0
    removed = 0
    if total <= limit:
        return 0
    for _used, size, path in sorted(files):
        if total - removed <= limit:
            break
        try:
            os.unlink(path)
            removed += size
        except OSError:
            pass
    return removed
