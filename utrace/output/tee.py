"""One event stream, several reporters: the chosen output plus exports such as --otlp."""

from __future__ import annotations

from utrace.app.session import Reporter, Summary
from utrace.model import Event, Target
from utrace.runtimes.base import Plan


class TeeReporter:
    """Forwards every call to each reporter in order (the first one is the one people read)."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters

    def started(self, target: Target, plan: Plan, attached: int, launched: int | None) -> None:
        for r in self.reporters:
            r.started(target, plan, attached, launched)

    def event(self, ev: Event) -> None:
        for r in self.reporters:
            r.event(ev)

    def flush(self) -> None:
        for r in self.reporters:
            r.flush()

    def lost(self, total: int) -> None:
        for r in self.reporters:
            r.lost(total)

    def snapshot(self, counts: dict[tuple[str, int], int], elapsed_s: float) -> None:
        for r in self.reporters:
            r.snapshot(counts, elapsed_s)

    def finished(self, summary: Summary) -> None:
        for r in self.reporters:
            r.finished(summary)
