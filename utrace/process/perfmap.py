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
from collections.abc import Collection

from utrace.process import procfs

MAX_LINE = 16384  # a longer "line" is not a symbol map: skipped
MAX_NAME = 1024  # bytes of a name kept
MAX_REGIONS = 500_000  # distinct starts kept (about 150 MB); later new starts are ignored
MAX_BYTES = 256 << 20  # read from one file in all; what lies past it is ignored
CHUNK = 8 << 20  # read per refresh, so one lookup never parses more than this


class PerfMap:
    """The regions of one perf map file, re-read as the file grows.

    The file stays open from `open()` on, so a map found while the process lived can still be read
    after it exited (its `/proc/PID/root` path is gone by then). Memory and time are bounded: at most
    CHUNK bytes are read per refresh, MAX_BYTES in all, MAX_REGIONS regions kept (`capped` says when
    a limit was reached; nothing more is read then), names cut at MAX_NAME bytes.
    """

    def __init__(self, fd: int | None = None) -> None:
        self._fd = fd
        self._pos = 0  # file offset of the first byte not yet parsed
        self._read = 0  # bytes read in all
        self._regions: dict[int, tuple[int, bytes]] = {}  # start -> (end, name)
        self._starts: list[int] = []
        self._dirty = False
        self.capped = False

    @classmethod
    def open(cls, path: str, owners: Collection[int] | None = None) -> PerfMap | None:
        """The map at `path` read up to now, or None when there is no such file (yet), or it is refused.

        The file is opened with `procfs.open_fd(nofollow=True)`: inside its process's root, never
        through a symlink at the last component, never a FIFO or device. `owners`: the uids the file
        may belong to (those of the process that writes it, and root); another owner is refused.
        """
        try:
            fd = procfs.open_fd(path, max_size=1 << 62, nofollow=True)
        except OSError:
            return None
        if owners is not None and os.fstat(fd).st_uid not in owners:
            os.close(fd)
            return None
        m = cls(fd)
        m.refresh()
        return m

    def __len__(self) -> int:
        return len(self._regions)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def refresh(self) -> bool:
        """Read (up to CHUNK bytes of) what was appended since the last read; True if anything new was read.

        A file that became shorter than what was read (rewritten) is read again from the start.
        """
        fd = self._fd
        if fd is None or self.capped:
            return False
        try:
            size = os.fstat(fd).st_size
            if size < self._pos:
                self._pos = 0
                self._regions.clear()
                self._starts = []
                self._dirty = False
            if size <= self._pos:
                return False
            budget = min(size - self._pos, CHUNK, MAX_BYTES - self._read)
            if budget <= 0:
                self.capped = True
                return False
            data = os.pread(fd, budget, self._pos)
        except (OSError, ValueError, OverflowError):
            return False
        self._read += len(data)
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) > MAX_LINE:  # no newline in a long stretch: skip it
                self._pos += len(data)
            return False
        self._pos += end + 1
        return self.add_lines(data[: end + 1]) > 0

    def add_lines(self, data: bytes) -> int:
        """Parse complete lines into regions; the number of regions added or replaced."""
        n = 0
        regions = self._regions
        for line in data.split(b"\n"):
            if len(line) > MAX_LINE:
                continue
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
            if start not in regions and len(regions) >= MAX_REGIONS:
                self.capped = True
                continue
            regions[start] = (start + size, parts[2].strip()[:MAX_NAME])
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
                return name.decode("utf-8", "replace"), start
        return None
