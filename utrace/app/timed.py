"""Which planned probes `--slower-than` can decide on (see utrace.probes.slow for the BPF side)."""

from __future__ import annotations

from utrace.errors import UsageError
from utrace.model import ProbeKind, ProbeSpec
from utrace.probes import slow
from utrace.runtimes.base import Plan
from utrace.runtimes.usdt_pairs import NOT_PAIRED

_SHOWN = 3


def timed_specs(plan: Plan) -> list[ProbeSpec]:
    """The plan's probes when every one of them is a begin with an end, or an end.

    A probe with no end (an ordinary USDT probe, a Go function's inlined copies) cannot be timed: an
    error names it, unless the same name also has a timed copy (a Go function inlined at some call
    sites and called at others), when the untimed copies are left out with a note.

    Raises:
        UsageError: a probe --slower-than cannot time.
    """
    untimed = slow.untimed(plan.specs)
    if not untimed:
        return list(plan.specs)
    timed_names = {s.name for s in plan.specs if s not in untimed}
    refused = [s for s in untimed if s.name not in timed_names]
    if refused:
        names = list(dict.fromkeys(s.name for s in refused))
        shown = ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
        why = (
            "USDT probes without a begin/end partner"
            if all(s.kind is ProbeKind.USDT for s in refused)
            else ("probes without a return")
        )
        why += "".join(f"; {n}" for n in plan.notes if NOT_PAIRED in n)
        raise UsageError(f"--slower-than needs probes with a return; {shown}: {why} (trace them without it)")
    # V8's hand-off sites only keep one JS call from being seen twice; they report nothing of their own
    markers = [s for s in untimed if any(getattr(f, "handoff", False) for f in s.filters)]
    for name in dict.fromkeys(s.name for s in untimed if s not in markers):
        plan.notes.append(f"--slower-than: the inlined copies of {name} have no return and are not traced")
    return [s for s in plan.specs if s not in untimed]
