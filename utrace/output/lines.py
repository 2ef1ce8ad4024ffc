"""Whole lines on a shared pipe or terminal: a launched program writes to the same stdout as the trace.

A pipe keeps a write() of at most PIPE_BUF bytes whole; a longer one can be cut by another writer's
bytes (CI saw a JVM's printout land inside a JSON line). So on a pipe, socket or terminal, text goes
out in writes of at most PIPE_BUF bytes that each end at a line end; a regular file, `-o FILE` and
/dev/null get the text in one write.
"""

from __future__ import annotations

import io
import os
import stat
from typing import TextIO

PIPE_BUF = 4096  # POSIX minimum is 512; Linux's is 4096 (pipe(7))


def shared(out: TextIO) -> bool:
    """True when writes to `out` can interleave with another process's: a pipe, socket or terminal."""
    try:
        fd = out.fileno()
        mode = os.fstat(fd).st_mode
        return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # io.StringIO and the like
        return False


def write_lines(out: TextIO, text: str, whole: bool) -> None:
    """Write `text` (complete lines) and flush; with `whole`, in line-aligned writes of <= PIPE_BUF bytes."""
    if not whole or len(text) <= PIPE_BUF // 4:  # at most 4 bytes per character in UTF-8
        out.write(text)
        out.flush()
        return
    out.flush()
    data = text.encode(out.encoding or "utf-8", errors=out.errors or "strict")  # as out.write would
    raw = out.buffer
    start, n = 0, len(data)
    while start < n:
        end = n if n - start <= PIPE_BUF else data.rfind(b"\n", start, start + PIPE_BUF) + 1
        if end <= start:  # one line longer than PIPE_BUF: it cannot be kept whole; write it alone
            end = data.find(b"\n", start) + 1 or n
        raw.write(data[start:end])
        raw.flush()
        start = end
