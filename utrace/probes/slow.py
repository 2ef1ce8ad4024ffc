"""`--slower-than`: calls reported only when their latency reaches a threshold, decided in BPF.

An entry probe does not send its event: it fills it (header, arguments, stack) in a per-CPU scratch
buffer and keeps it in `slow_open`, a bounded hash keyed like the latency pairing's `start_key`. The
return looks it up, measures the latency from the kept timestamp and, only when the call was at least
`slower_than_ns` long, sends the kept entry event (unchanged: its own time, arguments and stack) and
then its own return event with the latency. A fast call costs two map operations and sends nothing.
An entry that finds `slow_open` full is counted as lost (its call cannot be timed).

With `--count`/`--hist` the entry only keeps its time (the `starts` map, as for `--hist`); the
return counts the call under the entry's probe, and its latency bucket, only when it was slow.

USDT begin/end pairs (`Plan` specs of kind USDT sharing a `pair`, the end with `latency`) are keyed
per thread and nesting depth: a per-(pair, thread) counter in `nest`, raised at the begin and
lowered at the end, so recursion (python's function__entry/return) pairs each end with its own begin.
"""

from __future__ import annotations

import re
import struct
from typing import TYPE_CHECKING

from utrace.model import ProbeKind, ProbeSpec
from utrace.probes.layout import Field, event_format, fields_of

if TYPE_CHECKING:
    from utrace.probes.codegen import Options, _Emitter, _Timing

NEST_ENTRIES = 65536  # (pair, thread) with an open USDT begin
OPEN_ENTRIES = 16384  # calls in flight whose entry event is kept until their return decides
FULL_MAP = "slow_full"  # entries that found `slow_open` full (also counted in `lost`)

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s)")
MAX_NS = 1 << 62


class DurationError(ValueError):
    """A --slower-than value that is not a positive duration with a unit."""


def parse_duration(text: str) -> int:
    """Nanoseconds of `10ms`, `1.5s`, `250us`, `800ns`.

    A bare number is refused: `10` could mean seconds (sleep) or milliseconds (bpftrace), and the
    wrong guess reports nothing or everything.

    Raises:
        DurationError: with the line to show.
    """
    t = text.strip()
    m = _DURATION.fullmatch(t)
    if m is None:
        if re.fullmatch(r"\d+(?:\.\d+)?", t):
            raise DurationError(f"--slower-than {text!r}: give a unit (ns, us, ms or s), e.g. {t}ms")
        raise DurationError(
            f"--slower-than {text!r} is not a duration: a positive number and a unit (ns, us, ms, s), e.g. 10ms"
        )
    number, unit = m.groups()
    whole, _, frac = number.partition(".")
    scale = _UNITS[unit]
    ns = int(whole) * scale + (int(frac) * scale) // (10 ** len(frac)) if frac else int(whole) * scale
    if ns <= 0:
        raise DurationError(f"--slower-than {text!r}: must be more than 0 (at least 1ns)")
    if ns > MAX_NS:
        raise DurationError(f"--slower-than {text!r}: too long (at most {MAX_NS // 1_000_000_000}s)")
    return ns


def is_begin(spec: ProbeSpec, latency_pairs: frozenset[str]) -> bool:
    """An entry or USDT begin whose time a latency-measuring end needs."""
    if not spec.pair or spec.pair not in latency_pairs:
        return False
    return spec.kind is ProbeKind.ENTRY or (spec.kind is ProbeKind.USDT and not spec.latency)


def is_end(spec: ProbeSpec) -> bool:
    """A return, Go exit or USDT end that measures latency from its begin."""
    if spec.kind is ProbeKind.USDT:
        return spec.latency and bool(spec.pair)
    return spec.kind in (ProbeKind.RETURN, ProbeKind.EXIT) and spec.latency


def latency_pairs(specs: list[ProbeSpec]) -> frozenset[str]:
    return frozenset(s.pair for s in specs if is_end(s))


def untimed(specs: list[ProbeSpec]) -> list[ProbeSpec]:
    """The probes --slower-than cannot decide on: neither a begin with an end nor an end with a begin."""
    pairs = latency_pairs(specs)
    begun = {s.pair for s in specs if is_begin(s, pairs)}
    return [s for s in specs if not is_begin(s, pairs) and not (is_end(s) and s.pair in begun)]


def begin_index(specs: list[ProbeSpec], stack_depth: int = 0, v8_frames: bool = False) -> dict[str, tuple[int, int]]:
    """pair -> (index, event size in bytes) of its begin probe (the first, when a pair has several)."""
    pairs = latency_pairs(specs)
    out: dict[str, tuple[int, int]] = {}
    for i, s in enumerate(specs):
        if is_begin(s, pairs) and s.pair not in out:
            out[s.pair] = (i, event_size(fields_of(s), stack_depth, v8_frames))
    return out


def event_size(fields: list[Field], stack_depth: int, v8_frames: bool = False) -> int:
    """Bytes of `struct event_N` (packed, as the decoder's format)."""
    return struct.calcsize(event_format(fields, stack_depth, v8_frames))


def maps(buf_size: int, kept: bool, nested: bool) -> str:
    """Declarations: `slow_open`/`slow_scratch` when entry events are kept, `nest` for USDT pairs."""
    out = ""
    if kept:
        size = (max(8, buf_size) + 7) & ~7
        out += f"struct slow_buf {{ u8 b[{size}]; }};\n"
        out += "BPF_PERCPU_ARRAY(slow_scratch, struct slow_buf, 1);\n"
        out += (
            f'BPF_F_TABLE("hash", struct start_key, struct slow_buf, slow_open, {OPEN_ENTRIES}, BPF_F_NO_PREALLOC);\n'
        )
        out += f"BPF_PERCPU_ARRAY({FULL_MAP}, u64, 1);\n"
    if nested:
        out += f"BPF_HASH(nest, struct start_key, u64, {NEST_ENTRIES});\n"
    return out


def program_maps(specs: list[ProbeSpec], opts: Options, timing: _Timing) -> str:
    """The maps a program with --slower-than or USDT pairs needs (see `maps`)."""
    from utrace.probes.codegen import Aggregate

    kept = opts.slower_than_ns is not None and opts.aggregate is Aggregate.NONE
    size = max(
        (event_size(fields_of(s), opts.stack_depth, opts.v8_frames is not None) for s in specs if timing.starts(s)),
        default=8,
    )
    nested = any(s.kind is ProbeKind.USDT and (timing.starts(s) or timing.returns(s)) for s in specs)
    return maps(size, kept, nested)


def nest_key(em: _Emitter, pair_id: int, *, end: bool) -> None:
    """Declare `sk` for a USDT begin (`end` False) or end: {depth, 0, pair, thread}.

    The begin takes the thread's open depth for this pair and raises it; the end lowers it and takes
    the depth it lowered to, the one its begin took. An end with nothing open (its begin fired before
    the probes were attached) gets a depth no begin has, so it pairs with nothing.
    """
    em.emit(f"struct start_key nk = {{ .a = 0, .b = 0, .pair = {pair_id}, .who = tid }};")
    em.emit("u64 *nd = nest.lookup(&nk);")
    if not end:
        em.emit("u64 depth = nd ? *nd : 0;")
        em.emit("u64 deeper = depth + 1;")
        em.emit("if (nd) { *nd = deeper; } else if (nest.update(&nk, &deeper)) { utrace_lost(); }")
    else:
        em.emit("u64 depth = 0xffffffffffffffffULL;")
        em.emit("if (nd && *nd > 0) {")
        em.emit("    depth = *nd - 1;")
        em.emit("    if (depth == 0) nest.delete(&nk); else *nd = depth;")
        em.emit("}")
    em.emit(f"struct start_key sk = {{ .a = depth, .b = 0, .pair = {pair_id}, .who = tid }};")


def body(
    em: _Emitter, index: int, spec: ProbeSpec, fields: list[Field], opts: Options, timing: _Timing, pair_id: int
) -> None:
    """The rest of `probe_INDEX` under --slower-than, after the process and argument filters."""
    from utrace.probes import codegen as cg

    assert opts.slower_than_ns is not None
    threshold = cg._int(opts.slower_than_ns)
    streamed = opts.aggregate is cg.Aggregate.NONE
    depth = opts.stack_depth
    if timing.starts(spec):
        em.emit("u64 now = bpf_ktime_get_ns();")
        cg._frame_key(em, spec, pair_id, sp_adjust=0)
        if not streamed:
            em.emit("starts.update(&sk, &now);")
            em.emit("return 0;")
            return
        em.emit("u32 zero = 0;")
        em.emit("struct slow_buf *buf = slow_scratch.lookup(&zero);")
        em.emit("if (!buf) return 0;")
        em.emit(f"struct event_{index} *e = (struct event_{index} *)buf;")
        cg._fill(em, index, spec, fields, depth, "0", opts.v8_frames)
        em.emit("if (slow_open.update(&sk, buf)) {")
        em.emit("    utrace_lost();")
        em.emit(f"    u64 *full = {FULL_MAP}.lookup(&zero);")
        em.emit("    if (full) *full += 1;")
        em.emit("}")
        em.emit("return 0;")
        return
    if not timing.returns(spec):
        raise cg.CodegenError(f"--slower-than: {spec.name} is neither timed nor an end of a timed pair")
    found = timing.begins.get(spec.pair)
    if found is None:
        raise cg.CodegenError(f"--slower-than: {spec.name} has no begin probe in the program")
    begin, size = found
    em.emit("u64 now = bpf_ktime_get_ns();")
    # A uretprobe runs after `ret` popped the return address (sp + 8 of the entry's sp)
    cg._frame_key(em, spec, pair_id, sp_adjust=8 if spec.kind is ProbeKind.RETURN else 0)
    if not streamed:
        em.emit("u64 *start = starts.lookup(&sk);")
        em.emit("if (!start) return 0;")
        em.emit("u64 latency = now - *start;")
        em.emit("starts.delete(&sk);")
        em.emit(f"if (latency < {threshold}) return 0;")
        cg._count(em, "counts", begin, "0")
        if opts.aggregate is cg.Aggregate.HIST:
            cg._count(em, "hist", index, "bpf_log2l(latency)")
        em.emit("return 0;")
        return
    em.emit("struct slow_buf *kept = slow_open.lookup(&sk);")
    em.emit("if (!kept) return 0;")
    em.emit("u64 latency = now - ((struct header *)kept)->ts;")
    em.emit(f"if (latency < {threshold}) {{")
    em.emit("    slow_open.delete(&sk);")
    em.emit("    return 0;")
    em.emit("}")
    # the kept event is `struct event_{begin}`, which may be declared after this probe: its size, in bytes
    flags = "0" if depth else f"utrace_wakeup({size})"
    em.emit(f"if (events.ringbuf_output(kept, {size}, {flags})) utrace_lost();")
    em.emit("slow_open.delete(&sk);")
    cg._submit(em, index, spec, fields, depth, "latency", opts.v8_frames)


def full_warning(count: int) -> list[str]:
    """What to say at the end about calls whose entry found the kept-entries map full."""
    if not count:
        return []
    return [
        f"{count} call(s) could not be timed: {OPEN_ENTRIES} calls were already in flight (entries whose "
        "return never fires stay there: a recursion deeper than the 64 returns the kernel hooks per thread, "
        "longjmp); they are counted as lost"
    ]


__all__ = [
    "DurationError",
    "begin_index",
    "body",
    "event_size",
    "full_warning",
    "is_begin",
    "is_end",
    "latency_pairs",
    "maps",
    "nest_key",
    "parse_duration",
    "program_maps",
    "untimed",
]
