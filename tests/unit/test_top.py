"""--top's arithmetic and plain form: calls/s per interval, ordering, number and time formats."""

from __future__ import annotations

import io

from utrace.app.session import Summary
from utrace.output.top import TopReporter, TopRow, format_elapsed, format_rate, plain_snapshot, top_rows


def test_rates_are_calls_over_the_interval_and_busiest_come_first() -> None:
    before = {("parse", 10): 1000, ("read", 10): 50, ("read", 11): 7}
    now = {("parse", 10): 1000, ("read", 10): 650, ("read", 11): 10, ("write", 12): 3}
    rows = top_rows(now, before, 2.0)
    assert rows == [
        TopRow("read", 10, 650, 300.0),  # 600 calls in 2 s
        TopRow("read", 11, 10, 1.5),
        TopRow("write", 12, 3, 1.5),  # new since the last snapshot: all its calls are in this interval
        TopRow("parse", 10, 1000, 0.0),  # idle now, however many calls before
    ]


def test_ties_order_by_total_then_name_then_pid_and_no_interval_gives_no_rate() -> None:
    rows = top_rows({("b", 2): 5, ("a", 3): 5, ("a", 1): 5, ("c", 1): 9}, {}, 0.0)
    assert [(r.probe, r.pid) for r in rows] == [("c", 1), ("a", 1), ("a", 3), ("b", 2)]
    assert all(r.rate == 0.0 for r in rows)


def test_counts_never_go_backwards_into_negative_rates() -> None:
    # a pid reused by a new process after the old one's key was dropped must not show a negative rate
    (row,) = top_rows({("f", 5): 3}, {("f", 5): 10}, 1.0)
    assert row.rate == 0.0 and row.calls == 3


def test_formats() -> None:
    assert [format_rate(r) for r in (0.0, 0.25, 9.94, 10.0, 12345.6)] == ["0.0", "0.2", "9.9", "10", "12346"]
    assert [format_elapsed(s) for s in (0.04, 59.94, 60.0, 125.9, 3600.0, 3725.0)] == [
        "0.0s",
        "59.9s",
        "1:00",
        "2:05",
        "1:00:00",
        "1:02:05",
    ]


def test_plain_snapshot_is_aligned_and_marks_unknown_commands() -> None:
    rows = [TopRow("demo::Shape::area() const", 4711, 81234, 40617.0), TopRow("hot", 99, 3, 1.5)]
    text = plain_snapshot(rows, {4711: "shapes"}, "# head", "calls/s")
    assert text.endswith("\n\n")
    head, columns, first, second = text.rstrip("\n").split("\n")
    assert head == "# head"
    assert columns.split() == ["probe", "pid", "comm", "calls", "calls/s"]
    assert first.startswith("demo::Shape::area() const ") and first.split()[-4:] == ["4711", "shapes", "81234", "40617"]
    assert second.split() == ["hot", "99", "?", "3", "1.5"]
    assert len({len(line) for line in (columns, first, second)}) == 1  # fixed-width columns


def snapshots(text: str) -> list[list[str]]:
    return [block.split("\n") for block in text.strip("\n").split("\n\n")]


def test_reporter_plain_rates_between_snapshots_and_final_average() -> None:
    out, err = io.StringIO(), io.StringIO()
    names = {4711: "hot"}
    top = TopReporter(out, err, interval_s=1.0, comm=names.get)  # not a terminal: plain snapshots
    top.snapshot({("hot", 4711): 100}, 1.0)
    top.snapshot({("hot", 4711): 400}, 2.5)
    names.clear()  # the process is gone: its row keeps the name it had
    top.finished(Summary(events=500, counts={("hot", 4711): 500}, duration_s=4.0, stopped_by="target exited"))
    first, second, final = snapshots(out.getvalue())
    assert first[2].split() == ["hot", "4711", "hot", "100", "100"]
    assert second[2].split() == ["hot", "4711", "hot", "400", "200"]  # 300 calls in 1.5 s
    assert final[0].endswith("  final") and final[1].split()[-2:] == ["avg", "calls/s"]
    assert final[2].split() == ["hot", "4711", "hot", "500", "125"]  # 500 calls in 4 s
    assert err.getvalue().strip() == "500 events, 0 lost, 4.0s, stopped by target exited"
