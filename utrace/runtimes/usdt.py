"""USDT probes as ProbeSpecs: arguments decoded by utrace from the note's specs (not bcc's reader,
which returns 0 for `-4@%eax`), semaphores counted by the kernel through `ref_ctr_offset`."""

from __future__ import annotations

from collections.abc import Sequence

from utrace.elf.usdt import usdt_probes_for
from utrace.errors import ElfError
from utrace.listing import match_probes
from utrace.model import (
    ArgKind,
    ArgSpec,
    Const,
    Deref,
    Location,
    Module,
    OperandKind,
    ProbeKind,
    ProbeSpec,
    Reg,
    UsdtArgument,
    UsdtProbe,
)

_INT_KIND = {
    (1, False): ArgKind.U8, (1, True): ArgKind.S8, (2, False): ArgKind.U16, (2, True): ArgKind.S16,
    (4, False): ArgKind.U32, (4, True): ArgKind.S32, (8, False): ArgKind.U64, (8, True): ArgKind.S64,
}  # fmt: skip
_HIGH_BYTE = {"ah", "bh", "ch", "dh"}


def location_of(arg: UsdtArgument) -> Location | None:
    """Where a USDT argument lives, or None when BPF cannot read it (index registers, %ah, rip)."""
    if arg.kind is OperandKind.REGISTER:
        if arg.subregister in _HIGH_BYTE:
            return None
        return Reg(arg.register)
    if arg.kind is OperandKind.CONSTANT:
        return Const(arg.value)
    if arg.kind is OperandKind.MEMORY and not arg.index and arg.register != "rip":
        return Deref(Reg(arg.register), arg.offset, arg.size)
    return None


def integer_kind(arg: UsdtArgument) -> ArgKind:
    return _INT_KIND.get((arg.size, arg.signed), ArgKind.S64)


def usdt_args(probe: UsdtProbe, names: Sequence[str] = ()) -> list[ArgSpec]:
    """Integer ArgSpecs for every argument of a probe (named arg0.. unless `names` says)."""
    out: list[ArgSpec] = []
    for i, a in enumerate(probe.arguments):
        name = names[i] if i < len(names) else f"arg{i}"
        loc = location_of(a)
        if loc is None:
            out.append(ArgSpec(name, ArgKind.UNAVAILABLE, note=f"operand {a.text} not readable from BPF"))
        else:
            out.append(ArgSpec(name, integer_kind(a), loc))
    return out


def probe_spec(probe: UsdtProbe, args: list[ArgSpec]) -> ProbeSpec:
    return ProbeSpec(
        name=probe.full_name,
        module=probe.module,
        offset=probe.offset,
        kind=ProbeKind.USDT,
        args=tuple(args),
        ref_ctr_offset=probe.semaphore_offset or 0,
        address=probe.address,
    )


def find_usdt(modules: Sequence[Module], pattern: str) -> list[UsdtProbe]:
    """USDT sites matching `provider:name` (globs allowed) in the given modules."""
    found: list[UsdtProbe] = []
    for n, m in enumerate(modules):
        try:
            probes = usdt_probes_for(m.path)
        except ElfError:
            if n == 0:
                raise
            continue
        found += [p for p in match_probes(probes, pattern) if p.offset >= 0]
    return found
