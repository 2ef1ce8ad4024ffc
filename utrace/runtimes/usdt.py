"""USDT probes as ProbeSpecs: arguments decoded by utrace from the note's specs (not bcc's reader,
which returns 0 for `-4@%eax`), semaphores counted by the kernel through `ref_ctr_offset`."""

from __future__ import annotations

from collections.abc import Sequence

from utrace.elf.match import match_probes
from utrace.elf.usdt_notes import usdt_probes_for
from utrace.errors import ElfError
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


def probe_spec(probe: UsdtProbe, args: list[ArgSpec], facts: tuple[tuple[str, str], ...] = ()) -> ProbeSpec:
    return ProbeSpec(
        name=probe.full_name,
        module=probe.module,
        offset=probe.offset,
        kind=ProbeKind.USDT,
        args=tuple(args),
        ref_ctr_offset=probe.semaphore_offset or 0,
        address=probe.address,
        facts=facts,
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


_POINTER_KINDS = (ArgKind.PTR, ArgKind.CSTR)
_WIDTH = {
    ArgKind.BOOL: 1, ArgKind.U8: 1, ArgKind.S8: 1, ArgKind.U16: 2, ArgKind.S16: 2,
    ArgKind.U32: 4, ArgKind.S32: 4, ArgKind.U64: 8, ArgKind.S64: 8, ArgKind.PTR: 8, ArgKind.CSTR: 8,
}  # fmt: skip


def typed_args(
    probe: UsdtProbe, params: Sequence[str], *, counted: bool = False, max_len: int = 128
) -> list[ArgSpec] | str:
    """ArgSpecs for a probe from a signature, or why the signature does not fit the note.

    The signature fits when it has as many parameters as the note has arguments and every pointer
    (`const char *`, `void *`) is an 8-byte operand. An integer parameter fits an integer operand of
    any size: `sys/sdt.h` records the size of the expression the program passed, not the declared
    type (HotSpot passes an `int` where its `.d` file says `uintptr_t`), so it is read as declared
    when that is no wider than the operand, else at the operand's own width and sign.
    `counted`: a `char *` followed by an integer is a string of exactly that many bytes (HotSpot's
    strings are not NUL-terminated).
    """
    from utrace.runtimes.signature import _split_type_and_name, kind_of

    params = [p for p in params if p.strip() not in ("", "void")]
    if len(params) != len(probe.arguments):
        return f"the signature has {len(params)} parameter(s), the note {len(probe.arguments)} argument(s)"
    parsed = [_split_type_and_name(p) for p in params]
    kinds: list[ArgKind] = []
    for i, ((ctype, _n), arg) in enumerate(zip(parsed, probe.arguments, strict=True)):
        kind, _note = kind_of(ctype)
        width = _WIDTH.get(kind)
        if width is None:
            return f"argument {i} ({ctype}) cannot be read from a register"
        if kind in _POINTER_KINDS and arg.size != 8:
            return f"argument {i} is a pointer ({ctype}) but the note says {arg.text} ({arg.size} bytes)"
        if kind not in _POINTER_KINDS and width > arg.size:
            kind = ArgKind.BOOL if kind is ArgKind.BOOL else integer_kind(arg)
        kinds.append(kind)
    out: list[ArgSpec] = []
    skip = -1
    for i, ((_ctype, pname), kind, arg) in enumerate(zip(parsed, kinds, probe.arguments, strict=True)):
        if i == skip:
            continue
        name = pname or f"arg{i}"
        loc = location_of(arg)
        if loc is None:
            out.append(ArgSpec(name, ArgKind.UNAVAILABLE, note=f"operand {arg.text} not readable from BPF"))
            continue
        if kind is ArgKind.CSTR and counted and i + 1 < len(parsed) and kinds[i + 1] not in _POINTER_KINDS:
            length = probe.arguments[i + 1]
            length_loc = location_of(length)
            if length_loc is not None:
                lk = integer_kind(length)
                out.append(ArgSpec(name, ArgKind.PTRLEN_STR, loc, length=length_loc, length_kind=lk, max_len=max_len))
                skip = i + 1
                continue
        out.append(ArgSpec(name, kind, loc, max_len=max_len))
    return out


def catalogue_args(probe: UsdtProbe, max_len: int = 128) -> tuple[list[ArgSpec] | None, str, str]:
    """(ArgSpecs, source, note) from the catalogue of well-known providers.

    ArgSpecs are None when the catalogue has no entry or none fits the note; the note then says why
    an entry was ignored ("" when there is none).
    """
    from utrace.runtimes.usdt_catalogue import signatures

    sigs = signatures(probe.provider, probe.name)
    why: list[str] = []
    for sig in sigs:
        got = typed_args(probe, sig.params, counted=sig.source.counted, max_len=max_len)
        if isinstance(got, list):
            return got, sig.source.where, ""
        why.append(f"{sig.text} from {sig.source.where}: {got}")
    note = ""
    if why:
        note = (
            f"{probe.full_name}: the catalogue's signature does not fit this build's note, ignored ("
            + "; ".join(why)
            + ")"
        )
    return None, "", note


def catalogue_signature(probe: UsdtProbe) -> str | None:
    """The catalogue's typed signature for a probe when it fits the note (for listings), else None."""
    from utrace.runtimes.usdt_catalogue import signatures

    for sig in signatures(probe.provider, probe.name):
        if isinstance(typed_args(probe, sig.params, counted=sig.source.counted), list):
            return sig.text
    return None
