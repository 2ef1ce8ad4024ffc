"""--top: the busiest probes, redrawn every interval from the counts the kernel keeps (no events).

On a terminal, a rich Live table redrawn in place: a header (elapsed time, target, interval, lost) and
one row per probe and process with its total calls and its calls/s over the last interval, busiest
first, cut to the terminal's height. When tracing stops the final table stays on screen, with every row
and calls/s averaged over the whole run, and the summary line follows on stderr.

Anywhere else (a pipe, `-o FILE`), one plain snapshot per interval, then the final one, each a header
line, a column line, rows and a blank line:

    # 12:00:01  1.00s elapsed  /path/hot (launched pid 4711)  lost 0
    probe   pid comm        calls   calls/s
    hot    4711 hot         81234     81234

The final snapshot's header ends with `final`, and its `avg calls/s` column averages over the run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.control import Control
from rich.segment import ControlType, SegmentLines
from rich.table import Table
from rich.text import Text

from utrace.app.session import Summary
from utrace.model import Event, Target
from utrace.output.escape import safe
from utrace.output.stream import announce, summary_line
from utrace.runtimes.base import Plan

Counts = Mapping[tuple[str, int], int]


@dataclass(frozen=True, slots=True)
class TopRow:
    probe: str
    pid: int
    calls: int  # since tracing started
    rate: float  # calls per second over the interval the row was computed for


def top_rows(counts: Counts, previous: Counts, interval_s: float) -> list[TopRow]:
    """Rows busiest first: by calls/s over the interval, then by total calls, then probe and pid.

    Args:
        counts: calls per (probe, pid) now.
        previous: the same at the start of the interval ({} for "since tracing started").
        interval_s: the interval's length; rates are 0 when it is not positive.
    """
    rows = []
    for (probe, pid), n in counts.items():
        delta = max(0, n - previous.get((probe, pid), 0))
        rows.append(TopRow(probe, pid, n, delta / interval_s if interval_s > 0 else 0.0))
    rows.sort(key=lambda r: (-r.rate, -r.calls, r.probe, r.pid))
    return rows


def format_rate(rate: float) -> str:
    """Calls per second: one decimal below 10 (a slow probe is not shown as 0), whole numbers above."""
    return f"{rate:.1f}" if rate < 10 else f"{rate:.0f}"


def format_elapsed(seconds: float) -> str:
    """`4.2s` below a minute, then `1:05:09` or `12:09` (hours only when there are some)."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def plain_snapshot(rows: list[TopRow], comms: Mapping[int, str], head: str, rate_title: str) -> str:
    """One snapshot as plain text: the header line, a column line, one line per row, a blank line.

    Probe names and comms (the traced process's words) are shown through `safe`; `head` is the caller's.
    """
    probes = [safe(r.probe) for r in rows]
    shown = [safe(comms.get(r.pid, "?")) for r in rows]
    pw = max([len("probe"), *map(len, probes)])
    cw = max([len("comm"), *map(len, shown)])
    lines = [head, f"{'probe':<{pw}} {'pid':>7} {'comm':<{cw}} {'calls':>10} {rate_title:>11}"]
    for r, probe, comm in zip(rows, probes, shown, strict=True):
        lines.append(f"{probe:<{pw}} {r.pid:>7} {comm:<{cw}} {r.calls:>10} {format_rate(r.rate):>11}")
    return "\n".join(lines) + "\n\n"


class TopReporter:
    """The Reporter for --top: fed by `snapshot` every interval and by `finished` once at the end."""

    def __init__(
        self,
        out: TextIO,
        err: TextIO | None = None,
        interval_s: float = 1.0,
        live: bool | None = None,
        comm: Callable[[int], str | None] | None = None,
    ) -> None:
        from utrace.process.target import comm_of

        self.out = out
        self.err = err or sys.stderr
        self.interval_s = interval_s
        self.live = out.isatty() if live is None else live
        self._comm = comm or comm_of
        self._comms: dict[int, str] = {}
        self._previous: Counts = {}
        self._previous_s = 0.0
        self._lost = 0
        self._title = ""
        self._launched = False
        self._console: Console | None = None
        self._height = 0  # lines of the frame on screen, the cursor resting on the line below it

    def started(self, target: Target, plan: Plan, attached: int, launched: int | None) -> None:
        announce(self.err, target, plan, attached, launched)
        who = (
            f"pid {target.pid}"
            if target.pid
            else (
                f"launched pid {launched}"
                if launched
                else ("processes running it" if plan.only_exe else "all processes")
            )
        )
        self._title = f"{safe(target.modules[0].display)} ({who})"
        self._launched = launched is not None
        if self.live:
            self._console = Console(file=self.out, highlight=False)
            self._console.show_cursor(False)
            self._paint(self._frame([], 0.0, False, "calls/s", more=0), in_place=False)

    def event(self, ev: Event) -> None:
        pass  # counted in the kernel: no events reach user space

    def flush(self) -> None:
        pass

    def lost(self, total: int) -> None:
        self._lost = total  # shown in the next header

    def snapshot(self, counts: dict[tuple[str, int], int], elapsed_s: float) -> None:
        rows = top_rows(counts, self._previous, elapsed_s - self._previous_s)
        self._previous, self._previous_s = counts, elapsed_s
        self._draw(rows, elapsed_s, final=False)

    def finished(self, summary: Summary) -> None:
        self._lost = summary.lost
        # the last interval is usually cut short (the program exited, Ctrl-C): average over the run
        self._draw(top_rows(summary.counts, {}, summary.duration_s), summary.duration_s, final=True)
        self.close()
        Console(file=self.err, highlight=False).print(summary_line(summary), soft_wrap=True)

    def close(self) -> None:
        """Give the terminal its cursor back (the last frame stays); safe to call again, and on error paths."""
        console, self._console = self._console, None
        if console is not None:
            console.show_cursor(True)

    def _draw(self, rows: list[TopRow], elapsed_s: float, final: bool) -> None:
        rate_title = "avg calls/s" if final else "calls/s"
        if self._console is not None:
            # a frame taller than the terminal cannot be redrawn in place; the final one shows every row
            shown = rows if final else rows[: max(1, self._console.size.height - 6)]
            self._read_comms(shown)
            frame = self._frame(shown, elapsed_s, final, rate_title, more=len(rows) - len(shown))
            # A launched program shares the terminal and often prints as it ends (or on Ctrl-C):
            # the final table goes below its words instead of over them.
            self._paint(frame, in_place=not (final and self._launched))
            return
        self._read_comms(rows)
        head = f"# {time.strftime('%H:%M:%S')}  {elapsed_s:.2f}s elapsed  {self._title}  lost {self._lost}"
        self.out.write(plain_snapshot(rows, self._comms, head + ("  final" if final else ""), rate_title))
        self.out.flush()

    def _paint(self, frame: RenderableType, in_place: bool) -> None:
        console = self._console
        assert console is not None
        lines = console.render_lines(frame, pad=False)
        if in_place and self._height:
            # from the line below the frame up to its first line, erasing each (a "^C" echo too)
            up = ((ControlType.CURSOR_UP, 1), (ControlType.ERASE_IN_LINE, 2)) * self._height
            console.control(Control(ControlType.CARRIAGE_RETURN, (ControlType.ERASE_IN_LINE, 2), *up))
        console.print(SegmentLines(lines, new_lines=True), end="")
        self._height = len(lines)

    def _read_comms(self, rows: list[TopRow]) -> None:
        for r in rows:
            name = self._comm(r.pid)
            if name is not None:  # a process that is gone keeps the name it had
                self._comms[r.pid] = name

    def _frame(self, rows: list[TopRow], elapsed_s: float, final: bool, rate_title: str, more: int) -> RenderableType:
        head = Text.assemble(
            ("utrace top", "bold"),
            f"  {self._title}  {format_elapsed(elapsed_s)} elapsed  ",
            "final" if final else f"every {self.interval_s:g}s",
            "  lost ",
            (str(self._lost), "bold red" if self._lost else ""),
        )
        if not rows:
            return Group(head, Text("no calls yet", style="dim"))
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        table.add_column("probe", style="cyan", no_wrap=True)
        table.add_column("pid", justify="right")
        table.add_column("comm", no_wrap=True)
        table.add_column("calls", justify="right")
        table.add_column(rate_title, justify="right", style="yellow")
        for r in rows:
            comm = Text(safe(self._comms.get(r.pid, "?")))  # Text cells: never parsed as markup
            table.add_row(Text(safe(r.probe)), str(r.pid), comm, str(r.calls), format_rate(r.rate))
        if more > 0:
            table.add_row(Text(f"… {more} more", style="dim"), "", "", "", "")
        return Group(head, table)
