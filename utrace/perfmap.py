"""JIT symbol maps: `/tmp/perf-PID.map`, as written by `node --perf-basic-prof` and `jcmd PID Compiler.perfmap`.

One line per code region, `START SIZE NAME`, START and SIZE in hex with or without `0x` (node writes
`3c1b2e04a0e0 4c LazyCompile:~fib /app/fib.js:1`, HotSpot `0x00007f2d3c4b5a20 0x0000000000000120 int
java.lang.String.hashCode()`). A runtime appends while it runs, so the map is re-read from where the
last read stopped whenever it has grown; a line not yet finished is left for the next read. Code moves
and regions get reused: a later line for the same start replaces the earlier one, and of overlapping
regions the one starting closest below the address wins. Lines that do not parse are skipped.
"""

from __future__ import annotations

import bisect
import os
from typing import BinaryIO

MAX_LINE = 16384  # a longer "line" is not a symbol map


class PerfMap:
    """The regions of one perf map file, re-read as the file grows.

    The file stays open from `open()` on, so a map found while the process lived can still be read
    after it exited (its `/proc/PID/root` path is gone by then).
    """

    def __init__(self, file: BinaryIO | None = None) -> None:
        self._file = file
        self._pos = 0
        self._regions: dict[int, tuple[int, str]] = {}  # start -> (end, name)
        self._starts: list[int] = []
        self._dirty = False

    @classmethod
    def open(cls, path: str) -> PerfMap | None:
        """The map at `path` read up to now, or None when there is no such file (yet)."""
        try:
            f = open(path, "rb")  # noqa: SIM115 - kept open for re-reading
        except OSError:
            return None
        m = cls(f)
        m.refresh()
        return m

    def __len__(self) -> int:
        return len(self._regions)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def refresh(self) -> bool:
        """Read what was appended since the last read; True if anything new was read.

        A file that became shorter than what was read (rewritten) is read again from the start.
        """
        f = self._file
        if f is None:
            return False
        try:
            size = os.fstat(f.fileno()).st_size
            if size < self._pos:
                self._pos = 0
                self._regions.clear()
                self._starts = []
            if size == self._pos:
                return False
            f.seek(self._pos)
            data = f.read(min(size - self._pos, 1 << 26))
        except (OSError, ValueError):
            return False
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) > MAX_LINE:  # no newline in a long stretch: skip it
                self._pos += len(data)
            return False
        self._pos += end + 1
        self.add_lines(data[: end + 1])
        return True

    def add_lines(self, data: bytes) -> int:
        """Parse complete lines into regions; the number of regions added."""
        n = 0
        for line in data.split(b"\n"):
            parts = line.split(None, 2)
            if len(parts) != 3:
                continue
            try:
                start = int(parts[0], 16)
                size = int(parts[1], 16)
            except ValueError:
                continue
            if start < 0 or size <= 0 or start + size > 1 << 64:
                continue
            self._regions[start] = (start + size, parts[2].strip().decode("utf-8", "replace"))
            n += 1
        if n:
            self._dirty = True
        return n

    def lookup(self, address: int) -> tuple[str, int] | None:
        """(name, start) of the region holding `address`, or None."""
        if self._dirty:
            self._starts = sorted(self._regions)
            self._dirty = False
        starts = self._starts
        k = bisect.bisect_right(starts, address) - 1
        # a region further down may be long enough to hold the address: look a few back
        for j in range(k, max(k - 8, -1), -1):
            start = starts[j]
            end, name = self._regions[start]
            if address < end:
                return name, start
        return None
