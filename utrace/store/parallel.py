"""Work in a forked child while this process goes on: two cores for one cold read of a big file.

A child forked before this process builds its big data structures, and making its own input, keeps
the two from sharing (and copying on write) a large heap. Its result comes back through a pipe as one
bytes object.
"""

from __future__ import annotations

import os
from collections.abc import Callable


class ChildFailed(Exception):
    """The child died, or sent back something unusable."""


def worth_a_child() -> bool:
    return (os.cpu_count() or 1) > 1


def in_child(job: Callable[[], bytes]) -> Callable[[], bytes]:
    """Start `job` in a forked child; the returned function waits for its bytes.

    The result is complete when as many bytes as its length header says have arrived: the child is not
    waited for, because its exit (the kernel freeing a big address space) takes 10 ms or more. It is
    reaped later (`reap_later`).

    Raises (from the returned function):
        ChildFailed: the child exited without sending a complete result.
    """
    reap()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: do the job, send the result, exit without cleanup handlers
        status = 1
        try:
            os.close(r)
            out = job()
            view = memoryview(len(out).to_bytes(8, "little") + out)
            while view:
                n = os.write(w, view)
                view = view[n:]
            status = 0
        finally:
            os._exit(status)
    os.close(w)

    def collect() -> bytes:
        try:
            with os.fdopen(r, "rb") as pipe:
                header = pipe.read(8)
                size = int.from_bytes(header, "little") if len(header) == 8 else -1
                data = pipe.read(size) if size >= 0 else b""
        finally:
            reap_later(pid)
        if len(data) != size:
            raise ChildFailed(f"worker process {pid} failed (sent {len(data)} of {max(size, 0)} bytes)")
        return data

    return collect


_unreaped: list[int] = []


def reap_later(pid: int) -> None:
    """Reap the child `pid` now if it has exited, else at the next `reap` (it is a zombie till then)."""
    _unreaped.append(pid)
    reap()


def reap() -> None:
    """Reap the children handed to `reap_later` that have exited."""
    for pid in list(_unreaped):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _unreaped.remove(pid)
