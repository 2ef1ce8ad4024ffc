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

    Raises (from the returned function):
        ChildFailed: the child exited without sending a complete result.
    """
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
        chunks = []
        with os.fdopen(r, "rb") as pipe:
            while True:
                b = pipe.read(1 << 20)
                if not b:
                    break
                chunks.append(b)
        _, status = os.waitpid(pid, 0)
        data = b"".join(chunks)
        if status != 0 or len(data) < 8 or int.from_bytes(data[:8], "little") != len(data) - 8:
            raise ChildFailed(f"worker process {pid} failed (exit status {status})")
        return data[8:]

    return collect
