"""Where utrace keeps derived data: `$XDG_CACHE_HOME/utrace` (default `~/.cache/utrace`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "utrace"


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
    """The body of a file written with `seal`, or None when it is missing, unreadable or damaged."""
    import zlib

    try:
        with open(path, "rb") as f:
            data = f.read()
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
    `parallel.reap_later`). The child holds none of our standard streams open, so a reader of our
    output sees its end when we exit. Where fork is impossible, the files are written here and now.
    """
    if not jobs:
        return
    from utrace.parallel import reap_later

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
        write_jobs(jobs)
    finally:
        os._exit(0)


def write_jobs(jobs: list[CacheJob]) -> None:
    """Write cache files now; failures only cost speed next time."""
    for path, produce in jobs:
        try:
            write_atomic(path, produce())
        except OSError:
            pass  # a read-only or full cache only costs speed
