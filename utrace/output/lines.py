"""Whole lines on a shared pipe or terminal: a launched program writes to the same stdout as the trace.

A pipe keeps a write() of at most PIPE_BUF bytes whole; a longer one can be cut by another writer's
bytes (CI saw a JVM's printout land inside a JSON line). So on a pipe, socket or terminal, text goes
out in writes of at most PIPE_BUF bytes that each end at a line end; a regular file, `-o FILE` and
/dev/null get the text in one write.
"""

from __future__ import annotations

import io
import os
import select
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
    """Write `text` (complete lines) and flush; with `whole`, in line-aligned writes of <= PIPE_BUF bytes.

    A stream with a file descriptor is written with write(2) directly, so a failed write leaves nothing
    in Python's buffer to be tried again at close; raises the OSError (EPIPE, ENOSPC, EFBIG, EIO) after
    cutting a regular file back to its last complete line: what was written stays valid line by line.
    """
    try:
        fd: int | None = out.fileno()
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # io.StringIO and the like
        fd = None
    if fd is None and (not whole or len(text) <= PIPE_BUF // 4 or not hasattr(out, "buffer")):
        out.write(text)
        out.flush()
        return
    out.flush()  # what went through `out` itself goes first
    data = text.encode(out.encoding or "utf-8", errors=out.errors or "strict")  # as out.write would
    if fd is None:
        raw = out.buffer

        def put(start: int, end: int) -> int:
            raw.write(data[start:end])
            raw.flush()
            return end

    else:
        fd_ = fd

        def put(start: int, end: int) -> int:
            return _write_all(fd_, data, start, end)

    done, n = 0, len(data)
    try:
        while done < n:
            end = n
            if whole and n - done > PIPE_BUF:
                end = data.rfind(b"\n", done, done + PIPE_BUF) + 1
                if end <= done:  # one line longer than PIPE_BUF: it cannot be kept whole; write it alone
                    end = data.find(b"\n", done) + 1 or n
            done = put(done, end)
    except _Partial as e:
        assert fd is not None
        _cut_partial_line(fd, data, e.done)
        raise e.error from None


class _Partial(Exception):
    def __init__(self, error: OSError, done: int) -> None:
        self.error = error
        self.done = done


def _write_all(fd: int, data: bytes, start: int, end: int) -> int:
    """Write data[start:end] (write(2) may take part of it); return `end`. A non-blocking descriptor
    (one a parent process left O_NONBLOCK) is waited on. Raises _Partial with how far it got."""
    view = memoryview(data)
    while start < end:
        try:
            start += os.write(fd, view[start:end])
        except BlockingIOError:
            select.select([], [fd], [], 0.1)
        except OSError as e:
            raise _Partial(e, start) from None
    return end


def _cut_partial_line(fd: int, data: bytes, done: int) -> None:
    """After a failed write of `data` that got `done` bytes out: in a regular file that ends where this
    write left it, remove the incomplete last line."""
    keep = data.rfind(b"\n", 0, done) + 1
    extra = done - keep
    if not extra:
        return
    try:
        st = os.fstat(fd)
        pos = os.lseek(fd, 0, os.SEEK_CUR)
        if stat.S_ISREG(st.st_mode) and pos == st.st_size and pos >= extra:
            os.ftruncate(fd, pos - extra)
            os.lseek(fd, pos - extra, os.SEEK_SET)
    except OSError:
        pass
