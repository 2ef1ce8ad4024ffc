"""Live event output: a readable stream for people, JSON lines for programs, and the summary.

JSON schema (one object per line, stable):
  {"kind": "call"|"return"|"event", "probe": str, "pid": int, "tid": int, "comm": str,
   "ts_ns": int, "cpu": int, "args": {name: value}, ["ret": value], ["latency_ns": int],
   ["context": {name: value}], ["stack": [{"address": int, "function": str|null, "offset": int,
  "module": str|null[, "js": str]}]]}   (with --stack: innermost frame first; module "[perf-map]" for JIT
  code; "js" on a node's JavaScript frames: "" when "function" is its name and "module" its script, else
  why its function was not read)
  ["ns_pid": int, "ns_tid": int]: the ids in the process's own PID namespace (a container), only where
  they differ from "pid"/"tid".
  A Go return's "ret" is an object keyed by result name; "context" carries Go's {"goid": int}.
  ("latency_ns" on an "event": time since the begin probe it was paired with, e.g. a GC's duration)
  with --count / --hist instead of events: {"kind": "count", "probe": str, "pid": int, "count": int}
  and {"kind": "hist", "probe": str, "pid": int, "unit": "ns", "count": int,
       "buckets": [{"low": int, "high": int, "count": int}]} (inclusive ranges)
  with --count --by ARG / --hist=ARG also "by", "by_rest" and value "hist" lines (utrace.output.argcounts)
  last line: {"kind": "summary", "events": int, "lost": int, "per_probe": {probe: count},
              "duration_s": float, "stopped_by": str, "exit_code": int|null, "attached": int}
String values are JSON strings (cut at the capture limit; "truncated" lists which were cut),
pointers are integers, unavailable values are strings starting with "<unavailable".
Strings are exact: DEL, C1 controls, lone surrogates (a name's bytes that were not UTF-8), line
separators and bidirectional overrides are written as \\uXXXX escapes, as controls below 0x20 are.

Text output shows every string the traced process controls (comm, probe and function names, frames,
argument names and values) through `utrace.output.escape.safe`: control bytes and escape sequences
appear as visible escapes (`\\x1b]0;title\\x07`), never raw.
"""

from __future__ import annotations

import io
import json
import sys
from collections import Counter
from dataclasses import replace
from typing import TextIO

from utrace.app.session import Summary
from utrace.errors import OutputError
from utrace.model import Event, Target
from utrace.output.escape import json_safe, markup, safe
from utrace.output.lines import shared, write_lines
from utrace.probes.decode import Pointer, Rendered, StringValue
from utrace.runtimes.base import Plan


def _fmt_value(v: object) -> str:
    if isinstance(v, Rendered):
        return safe(v)
    if isinstance(v, StringValue):  # quoted as JSON quotes it; what a terminal acts on as \uXXXX
        return _quoted(str(v)) + ("…" if v.truncated else "")
    if isinstance(v, str):
        return safe(v) if v.startswith("<") else v if v.isidentifier() else _quoted(v)
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _quoted(s: str) -> str:
    """`s` as a JSON string: readable letters of any script (`"κάστανο"`), and every character `safe`
    would escape (controls, DEL, C1, bidirectional overrides) as a `\\uXXXX` escape."""
    return json_safe(json.dumps(s, ensure_ascii=False))


def _fmt_ptr(name: str, v: object) -> str:
    return f"{int(v):#x}" if isinstance(v, Pointer) else _fmt_value(v)


def format_latency(ns: int) -> str:
    if ns < 10_000:
        return f"{ns / 1000:.1f}µs"
    if ns < 10_000_000:
        return f"{ns / 1000:.0f}µs"
    return f"{ns / 1e6:.1f}ms"


def _by_count(counts: dict[tuple[str, int], int]) -> list[tuple[str, int, int]]:
    return sorted(((p, pid, n) for (p, pid), n in counts.items()), key=lambda r: (-r[2], r[0], r[1]))


def hist_lines(buckets: dict[int, int], width: int = 40) -> list[str]:
    """Log2 latency buckets as bars, from the lowest to the highest non-empty slot."""
    from utrace.probes.codegen import slot_range

    if not buckets:
        return []
    lo, hi = min(buckets), max(buckets)
    top = max(buckets.values())
    out = []
    for slot in range(lo, hi + 1):
        n = buckets.get(slot, 0)
        low, high = slot_range(slot)
        cells = n * width / top if top else 0
        bar = "█" * int(cells) + ("▌" if cells - int(cells) >= 0.5 else "")
        out.append(f"  {format_duration(low):>8} .. {format_duration(high + 1):<8} │{bar:<{width}}│ {n}")
    return out


def format_duration(ns: int) -> str:
    """A power-of-two bucket edge in the unit people read: 512ns, 16µs, 4ms, 2s."""
    for unit, scale in (("s", 1_000_000_000), ("ms", 1_000_000), ("µs", 1_000)):
        if ns >= scale:
            v = ns / scale
            return f"{v:.0f}{unit}" if v >= 10 or v == int(v) else f"{v:.1f}{unit}"
    return f"{ns}ns"


def write_aggregates(out: TextIO, summary: Summary) -> None:
    """--count and --hist results, for people: a count per probe and process, then histograms."""
    rows = _by_count(summary.counts)
    if rows:
        width = max(len(safe(p)) for p, _pid, _n in rows)
        out.write(f"{'probe':<{width}} {'pid':>7} {'calls':>10}\n")
        for probe, pid, n in rows:
            out.write(f"{safe(probe):<{width}} {pid:>7} {n:>10}\n")
    for (probe, pid), buckets in sorted(summary.hist.items()):
        total = sum(buckets.values())
        out.write(f"\n{safe(probe)}  pid {pid}: {total} calls, latency\n")
        out.write("\n".join(hist_lines(buckets)) + "\n")
    if summary.keyed:
        from utrace.output.argcounts import write_text

        write_text(out, summary.keyed)
    out.flush()


def announce(err: TextIO, target: Target, plan: Plan, attached: int, launched: int | None) -> None:
    """Notes about choices made, then one line once the probes are armed (on stderr)."""
    for note in plan.notes:  # notes quote names from the binary
        err.write(f"utrace: {safe(note)}\n")
    who = (
        f"pid {target.pid}"
        if target.pid
        else (
            f"launched pid {launched}" if launched else ("processes running it" if plan.only_exe else "all processes")
        )
    )
    if target.pid and target.nspid and target.nspid != target.pid:
        who += f", {target.nspid} in its PID namespace"
    err.write(f"utrace: {attached} probe(s) attached to {safe(target.modules[0].display)} ({who}); Ctrl-C to stop\n")
    err.flush()


class _Buffered:
    """Events are formatted into a buffer and written once per turn of the session loop (at most its
    BATCH events), not once per event and never all kept until the end."""

    def __init__(self, out: TextIO, err: TextIO | None) -> None:
        self.out = out
        self.err = err or sys.stderr
        self.buf: list[str] = []
        self.whole_lines = shared(out)  # a launched program may write to the same pipe
        self.closed = False  # the reader went away (EPIPE): the summary goes to stderr instead

    def write(self, text: str) -> None:
        """Raises OutputError (utrace.errors) when the text cannot be written."""
        if self.closed:
            return
        try:
            write_lines(self.out, text, self.whole_lines)
        except OSError as e:
            self.closed = isinstance(e, BrokenPipeError)
            raise output_error(self.out, e) from None

    def started(self, target: Target, plan: Plan, attached: int, launched: int | None) -> None:
        announce(self.err, target, plan, attached, launched)

    def flush(self) -> None:
        if self.buf:
            text = "\n".join(self.buf) + "\n"
            self.buf.clear()
            self.write(text)

    def summary_to_stderr(self, summary: Summary) -> bool:
        """After a broken pipe: the summary line on stderr (True), as nothing more can reach `out`."""
        if not self.closed:
            return False
        from rich.text import Text

        try:
            self.err.write(Text.from_markup(summary_line(summary)).plain + "\n")
            self.err.flush()
        except OSError:  # stderr went with it (`2>&1 | head`): nowhere left to say anything
            pass
        return True

    def lost(self, total: int) -> None:
        self.err.write(f"utrace: warning: {total} event(s) lost so far (ring buffer full; try --buffer-mb)\n")
        self.err.flush()

    def snapshot(self, counts: dict[tuple[str, int], int], elapsed_s: float) -> None:
        pass  # streams have no periodic view; --top has its own reporter (utrace.output.top)


class TextReporter(_Buffered):
    """Human-readable lines: time, pid, tid, comm, probe, arguments; returns with value and latency."""

    def __init__(self, out: TextIO, err: TextIO | None = None, color: bool | None = None) -> None:
        super().__init__(out, err)
        self.color = out.isatty() if color is None else color
        self.t0: int | None = None

    def _c(self, code: str, s: str) -> str:
        return f"\x1b[{code}m{s}\x1b[0m" if self.color else s

    def event(self, ev: Event) -> None:
        if self.t0 is None:
            self.t0 = ev.ts_ns
        t = (ev.ts_ns - self.t0) / 1e9
        # names from the process and the binary: one check for all of them (nearly always printable)
        if (ev.comm + ev.probe + "".join(ev.args)).isprintable():
            comm, probe = ev.comm, ev.probe
            args = " ".join([f"{k}={_fmt_ptr(k, v)}" for k, v in ev.args.items()])
        else:
            comm, probe = safe(ev.comm), safe(ev.probe)
            args = " ".join([f"{safe(k)}={_fmt_ptr(k, v)}" for k, v in ev.args.items()])
        if ev.ns_pid is None:
            head = f"{t:10.6f} {ev.pid:>7} {ev.tid:>7} {comm:<15} "
        else:  # another PID namespace: HOST[NS]
            ns_tid = "?" if ev.ns_tid is None else ev.ns_tid
            head = f"{t:10.6f} {f'{ev.pid}[{ev.ns_pid}]':>7} {f'{ev.tid}[{ns_tid}]':>7} {comm:<15} "
        ctx = ""
        if ev.context:
            ctx = " " + self._c("2", "[" + " ".join(f"{safe(k)}={_fmt_value(v)}" for k, v in ev.context.items()) + "]")
        if ev.kind == "return":
            lat = f" {self._c('33', format_latency(ev.latency_ns))}" if ev.latency_ns is not None else ""
            if isinstance(ev.ret, dict):
                ret = " ".join(f"{safe(k)}={_fmt_ptr(k, v)}" for k, v in ev.ret.items()) or "(no results)"
            else:
                ret = _fmt_ptr("ret", ev.ret)
            line = f"{head}{self._c('35', '<- ' + probe)}{ctx} = {ret}{lat}"
        else:
            arrow = "-> " if ev.kind == "call" else "@ "
            # a USDT end probe paired with its begin (a GC, a method) carries the time between them
            lat = f" {self._c('33', format_latency(ev.latency_ns))}" if ev.latency_ns is not None else ""
            line = f"{head}{self._c('36', arrow + probe)}{ctx} {args}{lat}"
        self.buf.append(line)
        if ev.stack:
            self.buf.extend(
                f"        {self._c('2', f'#{i:<2}')} {safe(str(frame))}" for i, frame in enumerate(ev.stack)
            )

    def finished(self, summary: Summary) -> None:
        self.flush()
        if self.summary_to_stderr(summary):
            return
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        if summary.counts:
            text = io.StringIO()
            write_aggregates(text, summary)
            self.write(text.getvalue())
            summary = replace(summary, per_probe=Counter())  # already shown, per process

        console = Console(file=self.err, highlight=False)
        table = Table(title=None, show_edge=False)
        table.add_column("probe")
        table.add_column("events", justify="right")
        for probe, n in summary.per_probe.most_common():
            table.add_row(Text(safe(probe)), str(n))  # a Text: never parsed as markup
        if summary.per_probe:
            console.print(table)
        console.print(summary_line(summary), soft_wrap=True)  # one line, however long the paths


def output_error(out: TextIO, e: OSError) -> OutputError:
    """A failed write of the trace as one line; `closed` for a reader that went away."""
    name = getattr(out, "name", None)
    what = "standard output" if name in (None, "<stdout>", 1) else str(name)
    return OutputError(f"cannot write {what}: {e.strerror or e}", closed=isinstance(e, BrokenPipeError))


def summary_line(summary: Summary) -> str:
    """The last line on stderr (rich markup): events, lost, duration, why tracing stopped, exit code."""
    lost = f"[red]{summary.lost} lost[/red]" if summary.lost else "0 lost"
    extra = f", traced program exited with {summary.exit_code}" if summary.exit_code is not None else ""
    stopped = markup(summary.stopped_by)
    return f"{summary.events} events, {lost}, {summary.duration_s:.1f}s, stopped by {stopped}{extra}"


def _json_value(v: object) -> object:
    if isinstance(v, StringValue):
        return str(v)
    if isinstance(v, Pointer):
        return int(v)
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    return v


class JsonReporter(_Buffered):
    """JSON lines on `out`; notes and warnings on stderr."""

    def __init__(self, out: TextIO, err: TextIO | None = None) -> None:
        super().__init__(out, err)
        self._dumps = json.JSONEncoder(ensure_ascii=False).encode

    def event(self, ev: Event) -> None:
        obj: dict[str, object] = {
            "kind": ev.kind,
            "probe": ev.probe,
            "pid": ev.pid,
            "tid": ev.tid,
            "comm": ev.comm,
            "ts_ns": ev.ts_ns,
            "cpu": ev.cpu,
            "args": {k: _json_value(v) for k, v in ev.args.items()},
        }
        cut = [k for k, v in ev.args.items() if isinstance(v, StringValue) and v.truncated]
        if cut:
            obj["truncated"] = cut
        if ev.kind == "return":
            obj["ret"] = _json_value(ev.ret)
            obj["latency_ns"] = ev.latency_ns
            if isinstance(ev.ret, dict):
                cut += [k for k, v in ev.ret.items() if isinstance(v, StringValue) and v.truncated]
                if cut:
                    obj["truncated"] = cut
        if ev.context:
            obj["context"] = {k: _json_value(v) for k, v in ev.context.items()}
        if ev.latency_ns is not None and "latency_ns" not in obj:
            obj["latency_ns"] = ev.latency_ns
        if ev.stack:
            obj["stack"] = [
                {"address": f.address, "function": f.function, "offset": f.offset, "module": f.module}
                | ({"js": f.js, "line": f.line} if f.js is not None else {})
                for f in ev.stack
            ]
        if ev.ns_pid is not None:
            obj["ns_pid"] = ev.ns_pid
            if ev.ns_tid is not None:
                obj["ns_tid"] = ev.ns_tid
        self.buf.append(json_safe(self._dumps(obj)))

    def finished(self, summary: Summary) -> None:
        self.flush()
        if self.summary_to_stderr(summary):
            return
        from utrace.probes.codegen import slot_range

        lines = []
        for probe, pid, n in _by_count(summary.counts):
            lines.append(self._dumps({"kind": "count", "probe": probe, "pid": pid, "count": n}))
        for (probe, pid), buckets in sorted(summary.hist.items()):
            rows = [{"low": slot_range(k)[0], "high": slot_range(k)[1], "count": buckets[k]} for k in sorted(buckets)]
            obj = {"kind": "hist", "probe": probe, "pid": pid, "unit": "ns", "count": sum(buckets.values())}
            lines.append(self._dumps({**obj, "buckets": rows}))
        if summary.keyed:
            from utrace.output.argcounts import json_lines

            lines += json_lines(summary.keyed, self._dumps)
        lines.append(
            self._dumps(
                {
                    "kind": "summary",
                    "events": summary.events,
                    "lost": summary.lost,
                    "per_probe": dict(summary.per_probe),
                    "duration_s": round(summary.duration_s, 3),
                    "stopped_by": summary.stopped_by,
                    "exit_code": summary.exit_code,
                    "attached": summary.attached,
                    **({"warnings": summary.warnings} if summary.warnings else {}),
                }
            )
        )
        self.write("\n".join(map(json_safe, lines)) + "\n")  # probe names in counts and the summary
