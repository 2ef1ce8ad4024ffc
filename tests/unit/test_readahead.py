"""The ring read ahead of the output (utrace.app.readahead): a record's frames are read from its
process's memory when it is taken off the ring, and records that arrive while an earlier one is being
symbolised are taken (and read) at the symbolizer's next slow step, not after it."""

from __future__ import annotations

import ctypes
import os
from collections import deque
from collections.abc import Callable

import pytest

from utrace.app import readahead
from utrace.app.readahead import ReadAhead
from utrace.process.stacks import Symbolizer


class FakeRing:
    """The part of the Tracer that ReadAhead uses: a ring of records, consumed by its callback."""

    def __init__(self) -> None:
        self.records: deque[bytes] = deque()
        self.callback: Callable[[bytes], None] | None = None
        self.waits: list[int] = []

    def _consume(self, limit: int | None) -> int:
        assert self.callback is not None
        n = 0
        while self.records and (limit is None or n < limit):
            self.callback(self.records.popleft())
            n += 1
        return n

    def poll(self, timeout_ms: int, limit: int | None = None, until: float | None = None) -> int:
        self.waits.append(timeout_ms)
        return self._consume(limit)

    def drain(self, limit: int | None = None, until: float | None = None) -> int:
        return self._consume(limit)

    def skip(self) -> int:
        n = len(self.records)
        self.records.clear()
        return n


def _setup() -> tuple[FakeRing, ReadAhead, list[str]]:
    ring = FakeRing()
    log: list[str] = []
    ra = ReadAhead(ring, lambda d: log.append(f"read {d.decode()}"))  # type: ignore[arg-type]
    ring.callback = ra.take
    return ring, ra, log


@pytest.mark.parametrize(
    ("slow_step", "expected"),
    [
        # a slow step (a symbol table read) while record 1 is handled: 2 and 3 are read before it ends
        (True, ["read 1", "start 1", "read 2", "read 3", "end 1", "start 2", "end 2", "start 3", "end 3"]),
        # none: they are read before the next record is handed on, not at the next poll
        (False, ["read 1", "start 1", "end 1", "read 2", "read 3", "start 2", "end 2", "start 3", "end 3"]),
    ],
)
def test_records_that_arrive_while_one_is_handled_are_read_first(slow_step: bool, expected: list[str]) -> None:
    ring, ra, log = _setup()
    ring.records.extend([b"1"])

    def handler(d: bytes) -> None:
        log.append(f"start {d.decode()}")
        if d == b"1":
            ring.records.extend([b"2", b"3"])  # the process ran on while record 1 was handled
            if slow_step:
                ra.pump()  # what the symbolizer's before_slow calls
        log.append(f"end {d.decode()}")

    ra.handler = handler
    assert ra.poll(10) == 3
    assert log == expected


def test_poll_waits_only_when_nothing_is_queued_and_hands_at_most_limit() -> None:
    ring, ra, _ = _setup()
    ring.records.extend([b"1", b"2", b"3"])
    handed: list[bytes] = []
    ra.handler = handed.append
    assert ra.poll(10, limit=2) == 2
    assert ring.waits == [10] and handed == [b"1", b"2"]
    assert ra.poll(10) == 1  # one still queued: no wait for the ring
    assert ring.waits == [10] and handed == [b"1", b"2", b"3"]
    assert ra.poll(0) == 0


def test_the_queue_is_bounded_and_the_rest_stays_in_the_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readahead, "QUEUED", 4)
    ring, ra, _ = _setup()
    ring.records.extend(bytes([65 + i]) for i in range(10))
    seen: list[int] = []

    def handler(d: bytes) -> None:
        seen.append(len(ring.records))
        ra.pump()

    ra.handler = handler
    assert ra.poll(10, limit=1) == 1
    # 4 taken at first; one handed on (its handler saw 6 left in the ring) made room for one more
    assert seen == [6] and len(ring.records) == 5
    assert ra.skip() == 4 + 5  # what was queued and what the ring holds, never handed on: lost
    assert ra.drain() == 0


def test_drain_hands_the_queue_then_the_ring() -> None:
    ring, ra, _ = _setup()
    ring.records.extend([b"1", b"2"])
    handed: list[bytes] = []
    ra.handler = handed.append
    ring.poll(0)  # both taken, none handed
    ring.records.append(b"3")
    assert ra.drain(limit=1) == 1
    assert ra.drain() == 2
    assert handed == [b"1", b"2", b"3"]
    assert ra.drain() == 0


def test_the_symbolizer_calls_before_slow_before_reading_maps_and_tables() -> None:
    """The hook the session pumps the ring from: called before this process's maps and libc's symbol
    table are read, and not again once both are known."""
    libc = ctypes.CDLL(None)
    address = ctypes.cast(libc.getpid, ctypes.c_void_p).value
    assert address is not None
    s = Symbolizer()
    calls: list[int] = []
    s.before_slow = lambda: calls.append(1)
    frame = s.frame(os.getpid(), address)
    assert frame.function is not None and "getpid" in frame.function
    assert len(calls) >= 2  # the maps, then the library's table
    before = len(calls)
    s.frame(os.getpid(), address + 1)
    assert len(calls) == before
