"""--count and --hist: counted in the kernel, checked against the traced programs' own printout and
against bpftrace's count()."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import need, run_utrace, uprobe_events

pytestmark = pytest.mark.usefixtures("root_bpf")


def objects(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_count_equals_the_programs_calls_and_bpftrace(fixtures_built: Path) -> None:
    hot = str(fixtures_built / "c" / "hot")
    n = 50000
    p = run_utrace("native", hot, "hot", "--count", "--json", "--", hot, str(n), check=True)
    said = re.search(r"calls (\d+) sum", p.stdout)
    assert said, p.stdout
    objs = objects(p.stdout)
    counts = [o for o in objs if o["kind"] == "count"]
    assert len(counts) == 1 and counts[0]["probe"] == "hot" and counts[0]["count"] == int(said.group(1)) == n
    summary = objs[-1]
    assert summary["kind"] == "summary" and summary["lost"] == 0 and summary["events"] == n
    assert uprobe_events() == ""
    need(shutil.which("bpftrace") is not None, "bpftrace is not installed")
    bt = subprocess.run(
        # only bpftrace's own child: another `hot` on the machine must not add to the oracle's count
        ["bpftrace", "-e", f"uprobe:{hot}:hot /pid == cpid/ {{ @calls = count(); }}", "-c", f"{hot} {n}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    m = re.search(r"@calls: (\d+)", bt.stdout)
    assert m, bt.stdout + bt.stderr
    assert int(m.group(1)) == counts[0]["count"]


def test_count_text_output(fixtures_built: Path) -> None:
    hot = str(fixtures_built / "c" / "hot")
    p = run_utrace("native", hot, "hot", "--count", "--", hot, "3000", check=True)
    rows = [line.split() for line in p.stdout.splitlines() if line.startswith("hot ")]
    assert len(rows) == 1 and rows[0][2] == "3000", p.stdout


def test_hist_native_totals_the_calls(fixtures_built: Path) -> None:
    hot = str(fixtures_built / "c" / "hot")
    p = run_utrace("native", hot, "hot", "--hist", "--json", "--", hot, "20000", check=True)
    objs = objects(p.stdout)
    (hist,) = [o for o in objs if o["kind"] == "hist"]
    assert hist["probe"] == "hot" and hist["unit"] == "ns" and hist["count"] == 20000
    buckets = hist["buckets"]
    assert isinstance(buckets, list) and sum(b["count"] for b in buckets) == 20000
    for b in buckets:  # contiguous power-of-two ranges, each below a second
        assert b["high"] == 2 * b["low"] - 1 or (b["low"] == 1 and b["high"] == 1)
        assert b["high"] < 1_000_000_000
    counts = {o["probe"]: o["count"] for o in objs if o["kind"] == "count"}
    assert counts == {"hot": 20000, "hot (return)": 20000}
    text = run_utrace("native", hot, "hot", "--hist", "--", hot, "2000", check=True).stdout
    assert "hot  pid" in text and "█" in text and "│" in text, text


@pytest.mark.parametrize("suffix", ["", "-go1.15"])
def test_hist_go_through_return_instruction_probes(fixtures_built: Path, suffix: str) -> None:
    """main.Fib(12) makes 465 calls (the program prints its result); its histogram holds all of them,
    measured by probes on its `ret` instructions (no uretprobe on Go)."""
    exe = str(fixtures_built / "go" / f"greet{suffix}")
    p = run_utrace("go", exe, "main.Fib", "--hist", "--json", "--", exe, "1", "12", "10", timeout=180)
    assert p.returncode == 0, p.stderr
    assert re.search(r"Fib\(12\)=144", p.stdout), p.stdout
    objs = objects(p.stdout)
    hists = [o for o in objs if o["kind"] == "hist"]
    assert len(hists) == 1 and hists[0]["probe"] == "main.Fib" and hists[0]["count"] == 465
    counts = {o["probe"]: o["count"] for o in objs if o["kind"] == "count"}
    assert counts == {"main.Fib": 465, "main.Fib (return)": 465}


def test_bad_aggregate_requests(fixtures_built: Path) -> None:
    hot = str(fixtures_built / "c" / "hot")
    p = run_utrace("native", hot, "hot", "--count", "--hist", "--", hot, "10")
    assert p.returncode == 2 and "exclude each other" in p.stderr and "Traceback" not in p.stderr
    sdt = str(fixtures_built / "c" / "sdt_demo")
    p = run_utrace("native", sdt, "utrace_demo:tick", "--hist", "--", sdt, "1")
    assert p.returncode == 2 and "--hist needs functions with returns" in p.stderr, p.stderr
