"""Programs generated from hostile names compile with bcc and pass the kernel's verifier.

The unit tests show that no name reaches the C source; these show the programs that come out of
hostile specs are still real programs: bcc (clang) compiles them and the kernel loads every probe
function. Nothing is attached.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.unit.test_codegen import CASES, HOSTILE, PID_OPTIONS, _with_text, prefix_specs
from utrace.bpf.backend import Tracer
from utrace.model import ArgKind, PrefixFilter, Reg
from utrace.probes.codegen import BpfProgram, Options, render

pytestmark = pytest.mark.e2e


def _load(program: BpfProgram) -> None:
    with Tracer(program) as t:
        t.load()
        assert t._loaded is not None and len(t._loaded.programs) == len(program.functions)


@pytest.mark.parametrize("text", [HOSTILE[0], HOSTILE[1], HOSTILE[4], HOSTILE[5]])
def test_every_golden_program_with_hostile_names_loads(root_bpf: None, text: str) -> None:
    # One program with every golden case (entries, returns, USDT, Go frames, prefix filters...), named
    # by the hostile text; the Go cases' thread-local reads need an fsbase offset.
    program = render(_with_text(text), replace(PID_OPTIONS, fsbase_offset=0x1B48))
    assert text not in program.source
    _load(program)


def test_hostile_prefix_bytes_load(root_bpf: None) -> None:
    spec = prefix_specs()[0]
    hostile = (b'"*/\n#define x', b"\\\x00\xff", b"}; int evil(void) { return 0; } //"[:16])
    spec = replace(spec, filters=(PrefixFilter(Reg("rdx"), Reg("rcx"), ArgKind.S32, hostile),))
    program = render([spec], Options())
    assert b"evil" not in program.source.encode() and "#define x" not in program.source
    _load(program)


@pytest.mark.parametrize("name", ["count", "hist_go"])
def test_aggregating_programs_with_hostile_names_load(root_bpf: None, name: str) -> None:
    make, options = CASES[name]
    specs = [replace(s, name=HOSTILE[3], module=HOSTILE[2]) for s in make()]
    _load(render(specs, options))


def test_follow_programs_load_in_a_pid_namespace(root_bpf: None) -> None:
    """The exec, fork and exit programs (raw tracepoints) with pids read through a PID namespace: the
    kernel's verifier accepts them as raw tracepoint programs, with the running kernel's offsets."""
    from tests.unit.test_codegen import pid_specs
    from utrace.bpf.btf import task_family_offsets
    from utrace.probes.codegen import FamilyOffsets

    offsets = task_family_offsets()
    assert offsets is not None, "the kernel's BTF gives task_struct.tgid/signal and signal_struct.live"
    program = render(pid_specs(), replace(PID_OPTIONS, follow=True, family=FamilyOffsets(*offsets)))
    with Tracer(program) as t:
        t.load()
        assert t._loaded is not None
        assert sorted(t._loaded.raw_tracepoint) == ["utrace_exec", "utrace_exit", "utrace_fork"]
