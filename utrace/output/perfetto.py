"""`--format perfetto`: a Trace Event Format file (JSON) for ui.perfetto.dev, chrome://tracing or DevTools.

The file is the JSON Array Format, written as events complete: `[` then one event per line. The
format lets the closing `]` be missing, so a trace cut short (utrace killed) still opens.

- A call with its return is a complete event (`"ph": "X"`) on its thread's track: `ts` is the call,
  `dur` the latency the kernel measured, in microseconds with nanosecond decimals. `args` holds the
  arguments, `"return"` the return value (a keyword in every traced language, so no parameter has
  that name) and `"utrace"` the per-event context (Go's goroutine id, the thread that returned).
- Go calls nest per goroutine, not per thread (a goroutine moves between threads): each goroutine is
  a track of its own, tid `GOROUTINE_TID_BASE + goid` (above any Linux tid), named `goroutine N`.
- Events without a duration (USDT hits, calls when returns are not traced, a return whose call was
  not seen) are thread-scoped instants. They use phase `I`, the instant's older spelling, which
  Perfetto and chrome://tracing read as `i` and which Chrome DevTools needs.
- A USDT end probe paired with its begin (the JVM's `gc__end`) is a complete event named without
  the suffix (`hotspot:gc`).
- Calls still open when tracing stops are begin events (`B`) without an end: Perfetto shows them
  as "did not end".
- Process and thread names come from metadata events: the process's /proc comm when it is still
  there, else the comm of its first event; a thread's comm as its first event saw it.
"""

from __future__ import annotations

import json
from typing import TextIO

from utrace.app.session import Summary
from utrace.model import Event, Target
from utrace.output.escape import json_safe, safe
from utrace.output.spans import Instant, Pairer, Span, Track, returning
from utrace.output.stream import _Buffered, output_error
from utrace.probes.decode import Pointer, StringValue
from utrace.runtimes.base import Plan

GOROUTINE_TID_BASE = 1 << 22  # PID_MAX_LIMIT on 64-bit Linux: no thread id reaches it
_INT64 = (-(1 << 63), (1 << 63) - 1)
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def micros(ns: int) -> str:
    """Nanoseconds as a JSON number of microseconds, exact to the nanosecond (no float rounding)."""
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    return f"{sign}{ns // 1000}.{ns % 1000:03d}"


def arg_value(v: object) -> object:
    """A captured value as Perfetto shows it: pointers in hex, NULL as a word, huge integers as text."""
    if isinstance(v, StringValue):
        return str(v)
    if isinstance(v, Pointer):
        return f"{int(v):#x}"
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        # a JSON integer outside int64 would be read back as a double, losing digits
        return v if _INT64[0] <= v <= _INT64[1] else str(v)
    if isinstance(v, float):
        return v
    if isinstance(v, dict):
        return {str(k): arg_value(x) for k, x in v.items()}
    return str(v)


def process_name(pid: int, fallback: str) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip() or fallback
    except OSError:
        return fallback


class PerfettoReporter(_Buffered):
    """Trace Event Format JSON on `out` (a file or stdout); notes and the final line on stderr."""

    def __init__(self, out: TextIO, err: TextIO | None = None) -> None:
        super().__init__(out, err)
        self.pairer = Pairer(())
        self.written = 0
        self.slices = 0
        self.instants = 0
        self.unfinished = 0
        self._pids: set[int] = set()
        self._tracks: set[Track] = set()
        self._opened = False

    def _put(self, text: str) -> None:
        """Write and flush `text` as it is (the file's JSON is not line-shaped).

        Raises:
            OutputError: the file cannot be written (one line and exit code 6, as the other formats).
        """
        if self.closed:
            return
        try:
            self.out.write(text)
            self.out.flush()
        except OSError as e:
            self.closed = isinstance(e, BrokenPipeError)
            raise output_error(self.out, e) from None

    def _open(self) -> None:
        if not self._opened:
            self._opened = True
            self._put("[\n")

    def started(self, target: Target, plan: Plan, attached: int, launched: int | None) -> None:
        self.pairer = Pairer(returning(plan.specs))
        super().started(target, plan, attached, launched)
        self._open()  # after the line saying the probes are attached, so that line comes first

    def _tid(self, track: Track) -> int:
        return GOROUTINE_TID_BASE + track.id if track.goroutine else track.id

    def _names(self, track: Track, comm: str) -> None:
        if track.pid not in self._pids:
            self._pids.add(track.pid)
            name = process_name(track.pid, comm)
            self._append("M", "process_name", track.pid, track.pid, None, {"name": name})
        if track not in self._tracks:
            self._tracks.add(track)
            name = f"goroutine {track.id}" if track.goroutine else comm
            self._append("M", "thread_name", track.pid, self._tid(track), None, {"name": name})

    def _append(
        self,
        ph: str,
        name: str,
        pid: int,
        tid: int,
        ts_ns: int | None,
        args: dict[str, object],
        cat: str = "",
        dur_ns: int | None = None,
    ) -> None:
        head = f'{{"ph":"{ph}","name":{_dumps(name)},'
        if cat:
            head += f'"cat":"{cat}",'
        if ts_ns is not None:
            head += f'"ts":{micros(ts_ns)},'
        if dur_ns is not None:
            head += f'"dur":{micros(dur_ns)},'
        if ph == "I":
            head += '"s":"t",'
        # exact, and nothing a terminal acts on
        self.buf.append(json_safe(f'{head}"pid":{pid},"tid":{tid},"args":{_dumps(args)}}}'))

    def _span_args(self, span: Span) -> dict[str, object]:
        out: dict[str, object] = {k: arg_value(v) for k, v in span.args.items()}
        if span.has_ret:
            out["return"] = arg_value(span.ret)
        ctx: dict[str, object] = {k: arg_value(v) for k, v in span.context.items()}
        if span.track.goroutine:
            ctx["tid"] = span.tid
        if ctx:
            out["utrace"] = ctx
        return out

    def _span(self, span: Span) -> None:
        self._names(span.track, span.comm)
        args = self._span_args(span)
        cat = "usdt" if span.paired_usdt else "call"
        tid = self._tid(span.track)
        if span.end_ns is None:
            self._append("B", span.name, span.pid, tid, span.start_ns, args, cat)
            self.unfinished += 1
        else:
            self._append("X", span.name, span.pid, tid, span.start_ns, args, cat, span.end_ns - span.start_ns)
            self.slices += 1

    def _instant(self, item: Instant) -> None:
        ev = item.event
        self._names(item.track, ev.comm)
        args: dict[str, object] = {k: arg_value(v) for k, v in ev.args.items()}
        name, cat = ev.probe, "usdt" if ev.kind == "event" else "call"
        if ev.kind == "return":
            name, cat = f"{ev.probe} (return)", "return"
            args["return"] = arg_value(ev.ret)
        ctx: dict[str, object] = {k: arg_value(v) for k, v in ev.context.items()}
        if item.track.goroutine:
            ctx["tid"] = ev.tid
        if ctx:
            args["utrace"] = ctx
        self._append("I", name, ev.pid, self._tid(item.track), ev.ts_ns, args, cat)
        self.instants += 1

    def event(self, ev: Event) -> None:
        for item in self.pairer.feed(ev):
            if isinstance(item, Span):
                self._span(item)
            else:
                self._instant(item)

    def flush(self) -> None:
        if self.buf:
            self._open()
            sep = ",\n" if self.written else ""
            text = sep + ",\n".join(self.buf)
            self.written += len(self.buf)
            self.buf.clear()
            self._put(text)

    def finished(self, summary: Summary) -> None:
        for span in self.pairer.finish():
            self._span(span)
        self.flush()
        self._open()
        self._put("\n]\n")
        open_note = f", {self.unfinished} still open" if self.unfinished else ""
        cut = f", {self.pairer.unpaired} call(s) without return dropped" if self.pairer.unpaired else ""
        lost = f", {summary.lost} event(s) lost" if summary.lost else ""
        extra = f"; traced program exited with {summary.exit_code}" if summary.exit_code is not None else ""
        self.err.write(
            f"utrace: perfetto: {self.slices} slice(s), {self.instants} instant(s){open_note}{cut}{lost}, "
            f"{summary.duration_s:.1f}s, stopped by {safe(summary.stopped_by)}{extra}\n"
        )
        self.err.flush()
