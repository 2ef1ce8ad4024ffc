"""Reading the ring ahead of the output when events carry user stacks.

A stack is symbolised with what only the live process has: its maps (where each library is), and for
a node its JavaScript frames' names, read from its heap. Both are gone the moment it exits. The
session's loop hands each event on only after symbolising its stack, and the first stacks of a process
take milliseconds each (its libraries' symbol tables are read then): an event that arrived meanwhile
waited in the ring, and a program that exits a few milliseconds after its last event had exited by the
time that event was looked at (CI saw "memory ... not readable: the process may have exited" for every
JavaScript frame of one). A C program may exit within a tenth of a millisecond of its event: its
libraries' frames can still come out as bare addresses, as nothing kept its maps.

So records are taken off the ring into a queue as soon as the loop can, and what their stacks need is
read from the process as each is taken (`prefetch`): before each event is handed on, and before each
slow step of symbolising one (`pump`, which the symbolizer calls). One thread: a reader thread, tried
first, still saw records 3-13 ms late, as it needs the interpreter's lock, which the loop holds through
each call into C and each collection.

Bounded: at most QUEUED records wait in the queue; beyond that they stay in the ring, which fills, and
the kernel counts what it cannot reserve as lost, as without the queue.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from utrace.bpf.backend import Tracer

PUMP_S = 0.0005  # between two events handed on, the ring is read again after this long (each read costs)
QUEUED = 1024  # records waiting in the queue, at most (more would be read ahead in vain in a flood)


class ReadAhead:
    """Reads `tracer`'s ring (opened with `take` as its callback) into a queue that `poll` and `drain`
    hand to `handler`, standing in for the tracer's own `poll`, `drain` and `skip`."""

    def __init__(self, tracer: Tracer, prefetch: Callable[[bytes], None]) -> None:
        self._tracer = tracer
        self._prefetch = prefetch
        self._queue: deque[bytes] = deque()
        self._reading = False  # the ring is being read (its consumer position is in use)
        self.handler: Callable[[bytes], None] | None = None  # the loop's own callback, per record

    def take(self, data: bytes) -> None:
        """The ring's callback: read what the record's frames need now, then queue it."""
        self._prefetch(data)
        self._queue.append(data)

    def pump(self) -> None:
        """Take what the ring holds now (without waiting), as room allows. Not while the ring is being
        read already (a prefetch's own slow step): the ring has one reader at a time."""
        room = QUEUED - len(self._queue)
        if room > 0 and not self._reading:
            self._reading = True
            try:
                self._tracer.drain(room)
            finally:
                self._reading = False

    def poll(self, timeout_ms: int, limit: int | None = None, until: float | None = None) -> int:
        """Wait up to `timeout_ms` for records when none is queued (the tracer's wait: a wakeup, or its
        watched pidfd), take them, then hand at most `limit` to the handler (until `until`); how many."""
        if not self._queue:
            self._reading = True
            try:
                self._tracer.poll(timeout_ms, QUEUED)
            finally:
                self._reading = False
        return self._hand(limit, until)

    def drain(self, limit: int | None = None, until: float | None = None) -> int:
        """Once the probes are gone: the queue, then what the ring still holds."""
        return self._hand(limit, until)

    def skip(self) -> int:
        """Count and drop what was never handed on (queued, or still in the ring)."""
        n = len(self._queue)
        self._queue.clear()
        return n + self._tracer.skip()

    def _hand(self, limit: int | None, until: float | None) -> int:
        handler = self.handler
        assert handler is not None, "set the handler first"
        n = 0
        pumped = 0.0
        while limit is None or n < limit:
            now = time.monotonic()
            if not self._queue or now - pumped >= PUMP_S:
                self.pump()  # what came while the last ones were handled: read first
                pumped = now
                if not self._queue:
                    break
            handler(self._queue.popleft())
            n += 1
            if until is not None and n % 64 == 0 and now >= until:
                break
        return n
