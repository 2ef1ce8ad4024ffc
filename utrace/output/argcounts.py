"""`--count --by ARG` and `--hist=ARG` results: the most frequent values (the rest summed in one line), or a
log2 histogram of the values, for people and as JSON lines.

Values come from the traced process: text output shows them through `safe` (strings quoted with
escapes), JSON keeps them exact and `json_safe` escapes what a terminal would act on.

JSON (before the summary, per probe):
  {"kind": "by", "probe": str, "arg": str, "value": str|int|bool|null, "count": int, ["truncated": true]}
      the TOP_N most frequent values, most frequent first ("truncated": the string was cut at --max-len,
      so the count holds every value starting with it)
  {"kind": "by_rest", "probe": str, "arg": str, "values": int, "count": int, "lost": int,
   ["uncertain": str]}   the other values (how many, their calls), and calls not counted (map full)
  {"kind": "hist", "probe": str, "arg": str, "unit": "value", "count": int, "lost": int,
   "buckets": [{"low": int, "high": int, "count": int}]}   (inclusive ranges, negative values too)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TextIO

from utrace.output.escape import safe
from utrace.probes.aggregate import NEGATIVE, KeyedTable, value_slot_range
from utrace.probes.decode import Pointer, StringValue

TOP_N = 20
BAR = 40
MAX_EMPTY = 2  # more empty ranges in a row than this are one `…` line


def _text(v: object) -> str:
    if isinstance(v, StringValue):  # json.dumps escapes every control and non-ASCII character
        return json.dumps(str(v)) + ("…" if v.truncated else "")
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Pointer):
        return f"{int(v):#x}"
    return safe(str(v))


def _json(v: object) -> object:
    if isinstance(v, StringValue):
        return str(v)
    if isinstance(v, Pointer) or (isinstance(v, int) and not isinstance(v, bool)):
        return int(v)
    if v is None or isinstance(v, (bool, str)):
        return v
    return str(v)


def ranked(table: KeyedTable) -> list[tuple[object, bool, int]]:
    """Values, most calls first (ties in the order of their text, so the output is stable)."""
    rows = [(v, cut, n) for (v, cut), n in table.values.items()]
    return sorted(rows, key=lambda r: (-r[2], _text(r[0])))


def _slots(buckets: dict[int, int]) -> list[int]:
    """The slots from the lowest to the highest value held, empty ones between included."""
    order = sorted(range(2 * NEGATIVE + 1), key=lambda s: value_slot_range(s)[0])
    used = [i for i, s in enumerate(order) if buckets.get(s)]
    return order[used[0] : used[-1] + 1] if used else []


def write_text(out: TextIO, tables: list[KeyedTable]) -> None:
    for t in tables:
        out.write("\n")
        if t.hist:
            _hist_text(out, t)
        else:
            _count_text(out, t)
        if t.lost:
            out.write(f"  {t.lost:>10}  not counted: more than {t.capacity} distinct values (map full)\n")
        if t.uncertain:
            out.write(f"  (uncertain: {safe(t.uncertain)})\n")


def _count_text(out: TextIO, t: KeyedTable) -> None:
    rows = ranked(t)
    top, rest = rows[:TOP_N], rows[TOP_N:]
    head = f"top {TOP_N} of {len(rows)} values" if rest else f"{len(rows)} value{'s' if len(rows) != 1 else ''}"
    out.write(f"{safe(t.probe)} by {safe(t.arg)}: {t.counted} calls, {head}\n")
    for v, _cut, n in top:
        out.write(f"  {n:>10}  {_text(v)}\n")
    if rest:
        out.write(f"  {sum(n for _v, _c, n in rest):>10}  ({len(rest)} other values)\n")


def _hist_text(out: TextIO, t: KeyedTable) -> None:
    out.write(f"{safe(t.probe)} by {safe(t.arg)}: {t.counted} calls, log2 histogram of the values\n")
    rows: list[tuple[str, int] | None] = []  # None: a run of empty ranges, shown as one line
    empty: list[tuple[str, int]] = []
    for s in _slots(t.buckets):
        low, high = value_slot_range(s)
        row = (str(low) if low == high else f"{low} .. {high}", t.buckets.get(s, 0))
        if row[1]:
            rows += [None] if len(empty) > MAX_EMPTY else empty
            empty = []
            rows.append(row)
        else:
            empty.append(row)
    width = max((len(r[0]) for r in rows if r is not None), default=0)
    top = max(t.buckets.values(), default=0)
    for r in rows:
        if r is None:
            out.write(f"  {'…':>{width}}  │{'':<{BAR}}│\n")
            continue
        text, n = r
        cells = n * BAR / top if top else 0
        bar = "█" * int(cells) + ("▌" if cells - int(cells) >= 0.5 else "")
        out.write(f"  {text:>{width}}  │{bar:<{BAR}}│ {n}\n")


def json_lines(tables: list[KeyedTable], dumps: Callable[[object], str]) -> list[str]:
    lines = []
    for t in tables:
        base = {"probe": t.probe, "arg": t.arg}
        if t.hist:
            buckets = [
                {"low": value_slot_range(s)[0], "high": value_slot_range(s)[1], "count": t.buckets[s]}
                for s in _slots(t.buckets)
                if t.buckets.get(s)
            ]
            obj = {"kind": "hist", **base, "unit": "value", "count": t.counted, "lost": t.lost}
            lines.append(dumps({**obj, "buckets": buckets}))
            continue
        rows = ranked(t)
        for v, cut, n in rows[:TOP_N]:
            lines.append(
                dumps({"kind": "by", **base, "value": _json(v), "count": n, **({"truncated": True} if cut else {})})
            )
        rest = rows[TOP_N:]
        tail: dict[str, object] = {
            "kind": "by_rest",
            **base,
            "values": len(rest),
            "count": sum(n for _v, _c, n in rest),
        }
        tail["lost"] = t.lost
        if t.uncertain:
            tail["uncertain"] = t.uncertain
        lines.append(dumps(tail))
    return lines
