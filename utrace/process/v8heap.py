"""Lines of JavaScript functions: a V8 script's source read from the live process (/proc/PID/mem).

A `js:` event carries the function's start position (a character offset into its script's source,
from the function's ScopeInfo) and the address and length of the script's source String, as the probe
read them at the call. The line is V8's own: the number of line terminators before the position
(`String::CalculateLineEnds`: `\\n`, a `\\r` not followed by `\\n`, U+2028, U+2029), plus one.

Nothing read here is trusted: the object at the address must still be a sequential String of the
length the probe saw (it is checked before and after its characters are read: a String the garbage
collector moved or freed is said so, never read as another), and at most MAX_SOURCE characters are read.
A line that cannot be known comes back as None with the reason.
"""

from __future__ import annotations

import bisect
import os
import re
from collections import OrderedDict

from utrace.v8layout import V8Layout

MAX_SOURCE = 16 << 20  # characters of a script read at most
MAX_SCRIPTS = 256  # scripts whose line ends are kept
_ONE = re.compile(rb"\n|\r(?!\n)")
_TWO = re.compile("\n|\r(?!\n)|\u2028|\u2029")


class SourceLines:
    """Line numbers of positions in the scripts of traced processes, each script read once."""

    def __init__(self, layout: V8Layout) -> None:
        self.layout = layout
        self._ends: OrderedDict[tuple[int, int, int], list[int] | str] = OrderedDict()

    def line(self, pid: int, src: int, length: int, pos: int) -> tuple[int | None, str]:
        """(1-based line of `pos` in the source String at `src` of `length` characters, "") or
        (None, why it is not known)."""
        if src == 0:
            return None, "the script has no source string"
        if pos < 0 or pos > length:
            return None, f"the position {pos} is outside the script's {length} characters"
        key = (pid, src, length)
        ends = self._ends.get(key)
        if ends is None:
            ends = self._read(pid, src, length)
            self._ends[key] = ends
            while len(self._ends) > MAX_SCRIPTS:
                self._ends.popitem(last=False)
        if isinstance(ends, str):
            return None, ends
        return bisect.bisect_left(ends, pos) + 1, ""

    def _read(self, pid: int, src: int, length: int) -> list[int] | str:
        """The positions of the line terminators of the source, or why it could not be read."""
        if length > MAX_SOURCE:
            return f"the script's source is longer than {MAX_SOURCE} characters (not read)"
        try:
            fd = os.open(f"/proc/{int(pid)}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            return f"the process's memory cannot be read ({e.strerror}: it may have exited)"
        try:
            shape = self._shape(fd, src, length)
            if isinstance(shape, str):
                return shape
            unit = 1 if shape else 2
            L = self.layout
            base = src + (L.seq_one_byte_chars if shape else L.seq_two_byte_chars)
            data = os.pread(fd, length * unit, base)
            again = self._shape(fd, src, length)
            if len(data) != length * unit or again != shape:
                return "the script's source moved while it was read"
        except OSError as e:
            return f"the script's source cannot be read ({e.strerror})"
        finally:
            os.close(fd)
        if unit == 1:
            return [m.start() for m in _ONE.finditer(data)]
        return [m.start() for m in _TWO.finditer(data.decode("utf-16-le", "surrogatepass"))]

    def _shape(self, fd: int, src: int, length: int) -> bool | str:
        """True for a sequential one-byte String of `length` at `src`, False for a two-byte one, else why not."""
        L = self.layout
        if src & L.heap_object_tag_mask != L.heap_object_tag:
            return "the script's source is not a heap object"
        head = os.pread(fd, 8, src + L.map)
        if len(head) != 8:
            return "the script's source cannot be read"
        m = int.from_bytes(head, "little")
        raw = os.pread(fd, 2, m + L.instance_type)
        n = os.pread(fd, 4, src + L.string_length)
        if len(raw) != 2 or len(n) != 4:
            return "the script's source cannot be read"
        t = int.from_bytes(raw, "little")
        if t >= L.first_nonstring_type:
            return f"the script's source is no longer a string (V8 instance type {t}): it moved"
        if t & L.string_repr_mask != L.seq_tag:
            return f"the script's source is a string of a shape not read (V8 instance type {t})"
        if int.from_bytes(n, "little") != length:
            return "the script's source no longer has the length the probe saw: it moved"
        return t & L.string_encoding_mask == L.one_byte_tag
