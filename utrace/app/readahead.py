"""Reading the ring ahead of the output, for events whose JavaScript frames are named from the traced
process's memory.

A node's JavaScript frames are named from its heap (utrace.process.v8frames), which is gone the moment
the process exits. The session's loop hands each event to the output only after symbolising its stack,
and the first stacks of a process take milliseconds each (its maps and its libraries' symbol tables are
read then): an event that arrived meanwhile waited in the ring, and a program that exits a few
milliseconds after its last event had exited by the time that event's frames were read (CI saw "memory
... not readable: the process may have exited" for every frame of one).

So records are taken off the ring into a queue as soon as the loop can, and what naming their frames
needs is read from the process's memory as each is taken (`prefetch`): before each event is handed on,
and before each slow step of symbolising one (`pump`, which the symbolizer calls). One thread: a
reader thread would wait for the interpreter's lock as long as the loop holds it in one call (reading a
symbol table), which is the very delay to avoid.

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

QUEUED = 1024  # records waiting in the queue, at most (more would be read ahead in vain in a flood)


class ReadAhead:
    """Reads `tracer`'s ring (opened with `take` as its callback) into a queue that `poll` and `drain`
    hand to `handler`, standing in for the tracer's own `poll`, `drain` and `skip`."""

    def __init__(self, tracer: Tracer, prefetch: Callable[[bytes], None]) -> None:
        self._tracer = tracer
        self._prefetch = prefetch
        self._queue: deque[bytes] = deque()
        self._pumping = False
        self.handler: Callable[[bytes], None] | None = None  # the loop's own callback, per record

    def take(self, data: bytes) -> None:
        """The ring's callback: read what the record's frames need now, then queue it."""
        self._prefetch(data)
        self._queue.append(data)

    def pump(self) -> None:
        """Take what the ring holds now (without waiting), as room allows."""
        room = QUEUED - len(self._queue)
        if room > 0 and not self._pumping:
            self._pumping = True
            try:
                self._tracer.drain(room)
            finally:
                self._pumping = False

    def poll(self, timeout_ms: int, limit: int | None = None, until: float | None = None) -> int:
        """Wait up to `timeout_ms` for records when none is queued (the tracer's wait: a wakeup, or its
        watched pidfd), take them, then hand at most `limit` to the handler (until `until`); how many."""
        if not self._queue:
            self._tracer.poll(timeout_ms, QUEUED)
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
        while limit is None or n < limit:
            self.pump()  # what came while the last one was handled: its frames are read first
            if not self._queue:
                break
            handler(self._queue.popleft())
            n += 1
            if until is not None and n % 64 == 0 and time.monotonic() >= until:
                break
        return n
