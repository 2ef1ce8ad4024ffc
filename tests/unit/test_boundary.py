"""utrace.elf.boundary.check_boundary on a synthetic Go ELF whose instructions are known byte by byte,
and `utrace go` refusing a probe that fails it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_gobin import BASE, TEXT_VA, Fn, build_go_elf
from utrace.elf.boundary import check_boundary

# internal/cpu.Initialize (0x20 bytes): mov rbp, rsp (3) ; sub rsp, 0x10 (4) ; nop (1) ; ret (1) ; int3 * 23
INIT = bytes.fromhex("4889e5") + bytes.fromhex("4883ec10") + b"\x90\xc3" + b"\xcc" * 23
# main.(*T).M (0x10 bytes): nop ; an undecodable byte (0x06 is invalid in 64-bit mode) ; ret ; int3 * 13
M = b"\x90\x06\xc3" + b"\xcc" * 13
# main.main (0x40 bytes): ret * 0x40
MAIN = b"\xc3" * 0x40
FUNCS = [Fn("internal/cpu.Initialize", 0x20), Fn("main.(*T).M", 0x10), Fn("main.main", 0x40)]


@pytest.fixture
def prog(tmp_path: Path) -> str:
    p = tmp_path / "prog"
    p.write_bytes(build_go_elf(FUNCS, code=INIT + M + MAIN))
    return str(p)


def test_instruction_starts_pass(prog: str) -> None:
    for off in (0, 3, 7, 8, 9, 10):
        assert check_boundary(prog, TEXT_VA + off, TEXT_VA, 0x20) is None


@pytest.mark.parametrize(("off", "inside"), [(1, 0), (2, 0), (4, 3), (6, 3)])
def test_inside_an_instruction_refused(prog: str, off: int, inside: int) -> None:
    reason = check_boundary(prog, TEXT_VA + off, TEXT_VA, 0x20)
    assert reason == f"{TEXT_VA + off:#x} is inside the instruction at {TEXT_VA + inside:#x} (function at {TEXT_VA:#x})"


def test_past_undecodable_bytes_refused(prog: str) -> None:
    m = TEXT_VA + 0x20
    assert check_boundary(prog, m, m, 0x10) is None
    reason = check_boundary(prog, m + 2, m, 0x10)
    assert reason == f"{m + 2:#x}: the bytes at {m + 1:#x} in the function at {m:#x} do not decode as x86-64"


def test_start_must_be_a_function_of_the_symbol_source(prog: str) -> None:
    # 0x401003 is an instruction start, but no function starts there
    reason = check_boundary(prog, TEXT_VA + 3, TEXT_VA + 3, 0x10)
    assert reason is not None and "is not the start of a function" in reason


def test_outside_the_function_or_sizeless(prog: str) -> None:
    assert "outside the function" in (check_boundary(prog, TEXT_VA + 0x20, TEXT_VA, 0x20) or "")
    assert "no usable size" in (check_boundary(prog, TEXT_VA, TEXT_VA, 0) or "")


def test_file_offsets(prog: str) -> None:
    start = TEXT_VA - BASE  # the text segment maps file offset 0 at BASE
    assert check_boundary(prog, start + 3, start, 0x20, offsets=True) is None
    assert "inside the instruction" in (check_boundary(prog, start + 4, start, 0x20, offsets=True) or "")


def test_go_plan_refuses_a_return_probe_that_is_not_an_instruction(prog: str) -> None:
    """return_sites (capstone skipdata) finds a `ret` after the undecodable byte; nothing proves that byte
    is where an instruction starts for the CPU, so utrace go refuses that probe with one line."""
    from utrace.model import ProbeKind
    from utrace.runtimes.base import TraceRequest
    from utrace.runtimes.go.plan import GoRuntime

    rt = GoRuntime()
    request = TraceRequest("go", binary=prog, probes=("main.(*T).M", "internal/cpu.Initialize"), ret=True)
    plan = rt.plan(request, rt.target(request))
    m = TEXT_VA + 0x20
    sites = {(s.name, s.kind, s.address) for s in plan.specs}
    assert sites == {
        ("main.(*T).M", ProbeKind.ENTRY, m),
        ("internal/cpu.Initialize", ProbeKind.ENTRY, TEXT_VA),
        ("internal/cpu.Initialize", ProbeKind.EXIT, TEXT_VA + 8),
    }
    refused = [n for n in plan.notes if "refused" in n]
    assert refused == [
        f"main.(*T).M: refused a return probe: {m + 2:#x}: the bytes at {m + 1:#x} in the function at "
        f"{m:#x} do not decode as x86-64"
    ]
