"""Calls and returns paired into spans: what the Perfetto and OpenTelemetry exports draw.

A call of a function traced with returns opens a frame on its track; its return closes the latest
open frame of the same function there (recursion returns innermost first). A track is a thread, or a
goroutine for events that carry Go's `goid`: goroutines move between threads, so only a goroutine's
own calls nest. A span starts at the return's `ts_ns - latency_ns` (the kernel's measure), or at the
call's time when the return has no latency. A USDT end probe paired with its begin (it carries
`latency_ns`, e.g. a JVM GC) is a span too. Everything else is an instant.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from utrace.model import Event, ProbeKind, ProbeSpec

GOID = "goid"
# USDT end probes named like hotspot's `gc__end`: the span drops the suffix ("hotspot:gc")
_END_SUFFIXES = ("__end", "__return", "__done")


def returning(specs: Iterable[ProbeSpec]) -> set[str]:
    """Names of the functions traced with returns: their calls wait for the return to be drawn."""
    return {s.name for s in specs if s.kind in (ProbeKind.RETURN, ProbeKind.EXIT)}


class Track(NamedTuple):
    """Where calls nest: a thread of a process, or a goroutine of a Go process."""

    pid: int
    id: int
    goroutine: bool


def track_of(ev: Event) -> Track:
    goid = ev.context.get(GOID)
    if isinstance(goid, int) and not isinstance(goid, bool) and goid > 0:
        return Track(ev.pid, goid, True)
    return Track(ev.pid, ev.tid, False)


def pair_name(probe: str, args: Mapping[str, object] | None = None) -> str:
    """The span name of a USDT end probe paired with its begin: `hotspot:gc__end` -> `hotspot:gc`.

    A paired `method` probe (HotSpot's method entry/return) is named by its `method` argument instead,
    `Demo$Worker.run()`: every method's slices would otherwise share one name.
    """
    name = probe
    for suffix in _END_SUFFIXES:
        if probe.endswith(suffix) and len(probe) > len(suffix):
            name = probe[: -len(suffix)]
            break
    method = (args or {}).get("method")
    if name.endswith(":method") and isinstance(method, str) and method:
        return method
    return name


@dataclass(slots=True)
class Span:
    """A call with its return (or a paired USDT begin/end). `end_ns` is None while it is open.

    `tid` and `comm` are the calling thread's; ids are random and non-zero (OpenTelemetry's rule),
    a nested call shares its caller's trace id and names it as its parent.
    """

    name: str
    track: Track
    tid: int
    comm: str
    start_ns: int
    end_ns: int | None
    args: dict[str, object]
    span_id: int
    trace_id: int
    parent_id: int | None = None
    ret: object = None
    has_ret: bool = False
    paired_usdt: bool = False
    context: dict[str, object] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.track.pid


@dataclass(slots=True)
class Instant:
    """An event with no duration: a USDT hit, a call when returns are not traced, an unpaired return."""

    event: Event
    track: Track


class Pairer:
    """Turns the event stream into spans and instants, in the order they become complete."""

    def __init__(self, returning: Iterable[str], max_depth: int = 10_000, seed: int | None = None) -> None:
        """`returning`: names of the functions traced with returns (their calls wait for them)."""
        self.returning = frozenset(returning)
        self.max_depth = max_depth
        self.open: dict[Track, list[Span]] = {}
        self.unpaired = 0  # frames whose return never came (lost, or deeper than max_depth)
        self._rng = random.Random(seed)

    def _id(self, bits: int) -> int:
        return self._rng.getrandbits(bits) or 1

    def feed(self, ev: Event) -> list[Span | Instant]:
        track = track_of(ev)
        if ev.kind == "call":
            if ev.probe not in self.returning:
                return [Instant(ev, track)]
            stack = self.open.setdefault(track, [])
            top = stack[-1] if stack else None
            stack.append(
                Span(
                    name=ev.probe,
                    track=track,
                    tid=ev.tid,
                    comm=ev.comm,
                    start_ns=ev.ts_ns,
                    end_ns=None,
                    args=ev.args,
                    span_id=self._id(64),
                    trace_id=top.trace_id if top else self._id(128),
                    parent_id=top.span_id if top else None,
                    context=ev.context,
                )
            )
            if len(stack) > self.max_depth:
                del stack[0]
                self.unpaired += 1
            return []
        if ev.kind == "return":
            return self._close(ev, track)
        if ev.latency_ns is not None:  # a USDT end paired with its begin by the runtime
            return [
                Span(
                    name=pair_name(ev.probe, ev.args),
                    track=track,
                    tid=ev.tid,
                    comm=ev.comm,
                    start_ns=ev.ts_ns - ev.latency_ns,
                    end_ns=ev.ts_ns,
                    args=ev.args,
                    span_id=self._id(64),
                    trace_id=self._id(128),
                    paired_usdt=True,
                    context=ev.context,
                )
            ]
        return [Instant(ev, track)]

    def _close(self, ev: Event, track: Track) -> list[Span | Instant]:
        stack = self.open.get(track, [])
        for n in range(len(stack) - 1, -1, -1):
            if stack[n].name == ev.probe:
                span = stack[n]
                # frames opened above it lost their returns (ring buffer full): they cannot be drawn
                self.unpaired += len(stack) - n - 1
                del stack[n:]
                break
        else:
            if ev.latency_ns is None:
                return [Instant(ev, track)]
            top = stack[-1] if stack else None
            span = Span(
                name=ev.probe,
                track=track,
                tid=ev.tid,
                comm=ev.comm,
                start_ns=ev.ts_ns,
                end_ns=None,
                args={},
                span_id=self._id(64),
                trace_id=top.trace_id if top else self._id(128),
                parent_id=top.span_id if top else None,
                context=ev.context,
            )
        if ev.latency_ns is not None:
            span.start_ns = ev.ts_ns - ev.latency_ns
        span.end_ns = ev.ts_ns
        span.ret = ev.ret
        span.has_ret = True
        return [span]

    def finish(self) -> list[Span]:
        """Calls still open when tracing stopped (outermost first per track); forgets them."""
        still = [s for stack in self.open.values() for s in stack]
        self.open.clear()
        return still
