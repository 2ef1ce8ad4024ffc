"""Pairing calls with returns (utrace.output.spans) and the Perfetto file's number format."""

from __future__ import annotations

import json

from utrace.model import Event
from utrace.output.perfetto import micros
from utrace.output.spans import Instant, Pairer, Span, Track, pair_name


def ev(
    kind: str,
    probe: str,
    ts: int,
    tid: int = 10,
    args: dict[str, object] | None = None,
    ret: object = None,
    latency_ns: int | None = None,
    context: dict[str, object] | None = None,
) -> Event:
    return Event(kind, probe, 10, tid, "prog", ts, 0, args or {}, ret, latency_ns, context or {})


def spans(items: list[Span | Instant]) -> list[Span]:
    out = [i for i in items if isinstance(i, Span)]
    assert len(out) == len(items)
    return out


def test_recursion_pairs_innermost_first_and_nests() -> None:
    p = Pairer({"f"}, seed=1)
    assert p.feed(ev("call", "f", 100, args={"n": 2})) == []
    assert p.feed(ev("call", "f", 110, args={"n": 1})) == []
    (inner,) = spans(p.feed(ev("return", "f", 150, ret=1, latency_ns=40)))
    (outer,) = spans(p.feed(ev("return", "f", 200, ret=1, latency_ns=100)))
    assert (inner.args, inner.start_ns, inner.end_ns, inner.ret) == ({"n": 1}, 110, 150, 1)
    assert (outer.args, outer.start_ns, outer.end_ns) == ({"n": 2}, 100, 200)
    assert inner.parent_id == outer.span_id and inner.trace_id == outer.trace_id and outer.parent_id is None
    assert p.finish() == [] and p.unpaired == 0


def test_start_is_the_kernels_latency_not_the_call_event() -> None:
    p = Pairer({"f"})
    p.feed(ev("call", "f", 100))
    (s,) = spans(p.feed(ev("return", "f", 500, latency_ns=450)))
    assert s.start_ns == 50


def test_goroutines_are_tracks_threads_are_not() -> None:
    p = Pairer({"g"})
    p.feed(ev("call", "g", 100, tid=1, context={"goid": 7}))
    # the goroutine moved to another thread before returning: still the same frame
    (s,) = spans(p.feed(ev("return", "g", 300, tid=2, latency_ns=200, context={"goid": 7})))
    assert s.track == Track(10, 7, True) and s.tid == 1 and s.start_ns == 100
    p.feed(ev("call", "g", 400, tid=1))
    assert p.feed(ev("return", "g", 450, tid=2)) != []  # another thread: no frame to close
    assert [t.track for t in p.finish()] == [Track(10, 1, False)]


def test_functions_without_returns_and_usdt_are_instants() -> None:
    p = Pairer({"f"})
    (a,) = p.feed(ev("call", "h", 100))
    (b,) = p.feed(ev("event", "prov:tick", 110))
    (c,) = p.feed(ev("return", "f", 120, ret=3))  # no call seen, no latency
    assert all(isinstance(x, Instant) for x in (a, b, c))


def test_paired_usdt_end_is_a_span_named_without_suffix() -> None:
    (s,) = spans(Pairer(()).feed(ev("event", "hotspot:gc__end", 1000, latency_ns=300, args={"full": True})))
    assert (s.name, s.start_ns, s.end_ns, s.paired_usdt) == ("hotspot:gc", 700, 1000, True)
    assert pair_name("hotspot:method__return") == "hotspot:method" and pair_name("__end") == "__end"
    # a method pair is named by its method; other pairs keep the probe's name
    assert pair_name("hotspot:method__return", {"method": "Demo$Worker.run()"}) == "Demo$Worker.run()"
    assert pair_name("hotspot:gc__end", {"method": "x"}) == "hotspot:gc"
    assert pair_name("hotspot:method__return", {"method": ""}) == "hotspot:method"
    assert pair_name("hotspot:method__compile__end", {"method": "Demo.f()"}) == "hotspot:method__compile"


def test_lost_returns_are_counted_and_open_calls_are_left_for_finish() -> None:
    p = Pairer({"f", "g"})
    p.feed(ev("call", "f", 100))
    p.feed(ev("call", "g", 110))  # its return is lost
    (s,) = spans(p.feed(ev("return", "f", 200, latency_ns=100)))
    assert s.name == "f" and p.unpaired == 1
    p.feed(ev("call", "f", 300))
    (still,) = p.finish()
    assert still.end_ns is None and still.start_ns == 300


def test_depth_is_bounded() -> None:
    p = Pairer({"f"}, max_depth=3)
    for t in range(5):
        p.feed(ev("call", "f", t))
    assert p.unpaired == 2 and len(p.finish()) == 3


def test_ids_are_nonzero_and_distinct() -> None:
    p = Pairer({"f"})
    got = []
    for t in range(200):
        p.feed(ev("call", "f", t * 10))
        got += spans(p.feed(ev("return", "f", t * 10 + 5, latency_ns=5)))
    assert len({s.span_id for s in got}) == len({s.trace_id for s in got}) == 200
    assert all(0 < s.span_id < 2**64 and 0 < s.trace_id < 2**128 for s in got)


def test_micros_are_exact_decimal_json_numbers() -> None:
    for ns in (0, 1, 999, 1000, 1001, 7169939389376, 123456789012345678):
        text = micros(ns)
        whole, frac = text.split(".")
        assert int(whole) * 1000 + int(frac) == ns and len(frac) == 3
        assert isinstance(json.loads(text), float)
    assert micros(-1500) == "-1.500"
