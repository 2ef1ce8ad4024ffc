"""A Go trace planned before is planned from the cache: no pclntab, DWARF or disassembler on the second run.

Oracles: the program's own printout (the arguments it passed, the results and error texts it got), the
planner's answer for the same file with an empty cache, and Python's import log (`-X importtime`),
which says whether the disassembler (capstone) and the DWARF reader were imported at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, need, utrace_cmd
from tests.e2e.test_go_tracing import GREET_LINE
from tests.e2e.test_tracing import events

pytestmark = pytest.mark.usefixtures("root_bpf")
PLANNER_ONLY = {"capstone", "utrace.elf.go.godwarf", "utrace.elf.go.goasm"}


def _run(cache: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """utrace's result and the modules it imported, with `cache` as its cache directory."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPROFILEIMPORTTIME": "1"}
    p = subprocess.run(utrace_cmd(*args), capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    p.stderr = "\n".join(line for line in p.stderr.splitlines() if not line.startswith("import time:"))
    return p, imported


def _greet_checked(cache: Path, exe: str) -> set[str]:
    """Trace greet's Greet calls and returns; check them against its printout; the modules imported."""
    p, imported = _run(cache, "go", exe, "main.Greet", "--ret", "--json", "--", exe, "2", "5")
    evs, summary = events(p.stdout)
    printed = [GREET_LINE.match(line) for line in p.stdout.splitlines() if line.startswith("iter ")]
    assert len(printed) == 2 and all(printed), p.stdout
    assert summary["lost"] == 0
    want_calls, want_rets = [], []
    for m in printed:
        assert m is not None
        _i, who, ok, ok_text, neg, err_text, *_ = m.groups()
        want_calls += [{"name": who, "n": int(ok)}, {"name": who, "n": int(neg)}]
        want_rets += [(ok_text, "nil"), ("", f'*errors.errorString("{err_text}")')]  # type names read lazily
    assert [e["args"] for e in evs if e["kind"] == "call"] == want_calls
    assert [(e["ret"]["r0"], e["ret"]["r1"]) for e in evs if e["kind"] == "return"] == want_rets
    assert {e["context"]["goid"] for e in evs} == {1}
    return imported


def test_second_go_trace_is_planned_from_the_cache(fixtures_built: Path, tmp_path: Path) -> None:
    exe = str(fixtures_built / "go" / "greet")
    cache = tmp_path / "cache"
    first = _greet_checked(cache, exe)
    assert first >= PLANNER_ONLY
    (plan,) = (cache / "utrace").glob("plan-*")
    second = _greet_checked(cache, exe)  # events as the program says, error types named: from the cached plan
    assert not PLANNER_ONLY & second, PLANNER_ONLY & second
    assert list((cache / "utrace").glob("plan-*")) == [plan]


def test_cached_plan_is_the_planners_answer(fixtures_built: Path, tmp_path: Path) -> None:
    """Program and notes from the cache are those planned from nothing, inlined copies included."""
    exe = str(fixtures_built / "go" / "generic")
    need(Path(exe).exists(), f"{exe} not built")
    args = ("go", exe, "main.*", "--ret", "--dump-bpf")
    fresh, _ = _run(tmp_path / "a", *args)
    _run(tmp_path / "b", *args)
    cached, imported = _run(tmp_path / "b", *args)
    assert "capstone" not in imported
    assert (cached.stdout, cached.stderr) == (fresh.stdout, fresh.stderr)


def test_a_replaced_binary_is_planned_anew(fixtures_built: Path, tmp_path: Path) -> None:
    """Same path, another build: the goroutine id sits elsewhere in Go 1.23's runtime.g than in 1.22's."""
    go122, go123 = (fixtures_built / "go" / f"greet-go{v}" for v in ("1.22", "1.23"))
    need(go122.exists() and go123.exists(), "greet-go1.22/1.23 not built (scripts/fetch-go.sh)")
    exe = tmp_path / "greet"
    shutil.copy(go122, exe)
    args = ("go", str(exe), "main.Greet", "--dump-bpf")
    old, _ = _run(tmp_path / "cache", *args)
    shutil.copy(go123, exe)  # written in place: same inode, another size and time
    new, imported = _run(tmp_path / "cache", *args)
    assert "capstone" in imported
    fresh, _ = _run(tmp_path / "empty", *args)
    assert new.stdout == fresh.stdout != old.stdout
    assert len(list((tmp_path / "cache" / "utrace").glob("plan-*"))) == 2  # one per build


def test_a_plan_others_may_write_is_not_used(fixtures_built: Path, tmp_path: Path) -> None:
    exe = str(fixtures_built / "go" / "greet")
    cache = tmp_path / "cache"
    args = ("go", exe, "main.Greet", "--dump-bpf")
    _run(cache, *args)
    (plan,) = (cache / "utrace").glob("plan-*")
    plan.chmod(0o666)  # anyone could have put their own probe offsets there
    _p, imported = _run(cache, *args)
    assert "capstone" in imported
    plan.chmod(0o600)
    _p, imported = _run(cache, *args)
    assert "capstone" not in imported
