"""Counts and histograms keyed by one argument's value, in the kernel (`--count --by ARG`, `--hist=ARG`).

Which probes carry the argument is resolved here from the typed specs (`select`); the generator's hooks
(`maps`, `emit`) add one per-CPU hash, `by_counts`, keyed by `struct by_key`:

    struct by_key { u32 probe; u32 flags; u64 num; char s[CAP]; }

`probe` is the program's probe index; for an integer argument `num` is its value cut to its width (a
`--hist` key: the log2 slot, see `value_slot_range`); for a string `s` holds its first bytes (at most
CAP, the capture limit), `num` how many were read and `flags` the string flags of `layout` (NULL,
truncated, unreadable). Strings are keyed with every byte past them zero: the key is built in a
per-CPU scratch slot zeroed by a copy of an all-zero map value (a string key does not fit the
512-byte BPF stack for long --max-len). Keys are counted over all traced processes. A hit that finds
the map full is counted in `by_lost[probe]` and reported as lost, never dropped silently.

No text reaches the C: the argument is located by its spec, every name in the C is positional.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from utrace.errors import UsageError
from utrace.model import STRING_KINDS, ArgKind, ArgSpec, Event, Location, ProbeKind, ProbeSpec
from utrace.probes.layout import STR_FAULT, STR_NULL, STR_TRUNCATED, _capacity

RET = "ret"
MAX_ENTRIES = 10240  # distinct (probe, value) keys kept at most
KEY_BUDGET = 8 << 20  # bytes of keys at most: fewer entries for long strings
NEGATIVE = 64  # value histogram: slots above this hold negative values
_RETURNING = (ProbeKind.RETURN, ProbeKind.EXIT)
_MASK = {
    ArgKind.U32: 0xFFFFFFFF, ArgKind.S32: 0xFFFFFFFF, ArgKind.U16: 0xFFFF, ArgKind.S16: 0xFFFF,
    ArgKind.U8: 0xFF, ArgKind.S8: 0xFF, ArgKind.BOOL: 0xFF,
}  # fmt: skip
_SIGNED_C = {ArgKind.S64: "s64", ArgKind.S32: "s32", ArgKind.S16: "s16", ArgKind.S8: "s8"}


@dataclass(frozen=True, slots=True)
class ByRequest:
    """What was asked: count calls per value of `arg` (`--count --by ARG`), or a log2 histogram of it
    (`--hist=ARG`). `ret` names a function's return value, `ret.NAME` one of a Go function's results."""

    arg: str
    hist: bool = False

    @property
    def on_return(self) -> bool:
        return self.arg == RET or self.arg.startswith(RET + ".")

    @property
    def option(self) -> str:
        return f"--hist={self.arg}" if self.hist else f"--by {self.arg}"


@dataclass(frozen=True, slots=True)
class KeyedProbe:
    probe: int  # index in the program's specs
    arg: ArgSpec


@dataclass(frozen=True, slots=True)
class Keyed:
    """The keyed aggregation of one program (see the module's docstring)."""

    request: ByRequest
    probes: tuple[KeyedProbe, ...]

    @property
    def capacity(self) -> int:
        """Bytes of string in a key (0 when no keyed argument is a string)."""
        return max((_capacity(k.arg) for k in self.probes if k.arg.kind in STRING_KINDS), default=0)

    @property
    def key_format(self) -> str:
        cap = self.capacity
        return "<IIQ" + (f"{cap}s" if cap else "")

    @property
    def entries(self) -> int:
        return max(1024, min(MAX_ENTRIES, KEY_BUDGET // struct.calcsize(self.key_format)))

    @property
    def lost_slots(self) -> int:
        return max(k.probe for k in self.probes) + 1


def _names(spec: ProbeSpec) -> list[str]:
    """The ARG names a probe offers, as its events show them."""
    if spec.kind is ProbeKind.RETURN:
        return [RET] if spec.ret is not None else []
    if spec.kind is ProbeKind.EXIT:
        names = [f"{RET}.{a.name}" for a in spec.args]
        return [RET, *names] if len(spec.args) == 1 else names
    return [a.name for a in spec.args]


def _arg(spec: ProbeSpec, name: str) -> ArgSpec | None:
    if spec.kind is ProbeKind.RETURN:
        return spec.ret if name == RET else None
    if spec.kind is ProbeKind.EXIT:
        if name == RET:
            return spec.args[0] if len(spec.args) == 1 else None
        return next((a for a in spec.args if f"{RET}.{a.name}" == name), None)
    return next((a for a in spec.args if a.name == name), None)


def select(
    specs: Sequence[ProbeSpec], request: ByRequest, refine: Callable[[Event], Event] | None = None
) -> tuple[list[ProbeSpec], Keyed, list[str]]:
    """The probes to arm (every entry and USDT probe is counted; return probes only where their value is
    the one keyed), the keyed aggregation, and notes (probes without the argument, uncertain values).
    `refine` is the runtime's event rewriter: how it shows a value decides whether it can be keyed.

    Raises:
        UsageError: no probe has the argument (the names each offers are listed), or it cannot be
            keyed: not readable from BPF, or a string for a histogram.
    """
    kept = [s for s in specs if s.kind not in _RETURNING or (request.on_return and _arg(s, request.arg) is not None)]
    candidates = [s for s in specs if (s.kind in _RETURNING) == request.on_return]
    keyed: list[KeyedProbe] = []
    notes: list[str] = []
    without: list[str] = []
    for i, spec in enumerate(kept):
        if (spec.kind in _RETURNING) != request.on_return:
            continue
        a = _arg(spec, request.arg)
        if a is None:
            if spec.name not in without:
                without.append(spec.name)
            continue
        if a.kind is ArgKind.UNAVAILABLE:
            why = f": {a.note}" if a.note else ""
            raise UsageError(f"{request.option}: {request.arg} of {spec.name} cannot be read in the kernel{why}")
        if request.hist and a.kind in STRING_KINDS:
            raise UsageError(
                f"{request.option}: {request.arg} of {spec.name} is a string, and --hist=ARG needs an integer "
                f"(count calls per string with --count --by {request.arg})"
            )
        shown = _plain(spec, a, refine)
        if shown == "other":
            raise UsageError(
                f"{request.option}: {request.arg} of {spec.name} is part of a value assembled from several "
                "captures (an interface), not a value of its own: it cannot be keyed"
            )
        if request.hist and shown == "float":
            raise UsageError(
                f"{request.option}: {request.arg} of {spec.name} is a floating-point value; --hist=ARG takes integers"
            )
        if a.uncertain is not None:
            notes.append(f"{request.arg} of {spec.name} is uncertain: {a.uncertain}")
        keyed.append(KeyedProbe(i, a))
    if not keyed and request.on_return and not candidates:
        raise UsageError(f"{request.option}: none of the traced probes has a return value (USDT probes have none)")
    if not keyed:
        raise UsageError(f"{request.option}: no traced probe has an argument {request.arg!r}; {_offered(candidates)}")
    if without:
        shown = ", ".join(without[:5]) + (f" and {len(without) - 5} more" if len(without) > 5 else "")
        notes.append(f"{request.option}: {shown} has no argument {request.arg!r}: counted per call only")
    return kept, Keyed(request, tuple(keyed)), list(dict.fromkeys(notes))


def _offered(specs: Sequence[ProbeSpec]) -> str:
    """What the probes offer instead, one clause per distinct probe name (a few at most)."""
    seen: dict[str, list[str]] = {}
    for s in specs:
        for n in _names(s):
            if n not in seen.setdefault(s.name, []):
                seen[s.name].append(n)
    if not seen:
        return "the traced probes capture no arguments (a return value is ARG ret)"
    parts = [f"{name}: {', '.join(names) if names else '(none)'}" for name, names in list(seen.items())[:5]]
    more = f"; and {len(seen) - 5} more probes" if len(seen) > 5 else ""
    return "available: " + "; ".join(parts) + more + " (a return value is ARG ret)"


# --- C: the generator's hooks ------------------------------------------------------------------------


class EmitterLike(Protocol):
    """What `emit` uses of the generator's statement emitter (codegen._Emitter)."""

    def new(self) -> str: ...
    def emit(self, line: str) -> None: ...
    def value(self, loc: Location) -> str: ...


def _index(n: int) -> str:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 1 << 32:
        raise ValueError(f"bad probe index {n!r}")
    return str(n)


def maps(keyed: Keyed) -> str:
    """The key struct and the maps (after the prelude's declarations)."""
    cap = keyed.capacity
    out = "struct by_key {\n    u32 probe;\n    u32 flags;\n    u64 num;\n"
    if cap:
        out += f"    char s[{cap}];\n"
    out += "};\n"
    out += f'BPF_F_TABLE("percpu_hash", struct by_key, u64, by_counts, {keyed.entries}, BPF_F_NO_PREALLOC);\n'
    out += f"BPF_PERCPU_ARRAY(by_lost, u64, {keyed.lost_slots});\n"
    if cap:
        out += "BPF_PERCPU_ARRAY(by_scratch, struct by_key, 1);\n"
        out += "BPF_ARRAY(by_zero, struct by_key, 1);\n"  # never written: all zero
    return out


def emit(em: EmitterLike, index: int, keyed: Keyed) -> None:
    """Count this hit of probe `index` under its argument's value (nothing when it is not keyed)."""
    found = next((k for k in keyed.probes if k.probe == index), None)
    if found is None:
        return
    a = found.arg
    cap = keyed.capacity
    k, v, z = em.new(), em.new(), em.new()
    if a.kind in STRING_KINDS:
        p = em.value(a.loc)
        ln = em.value(a.length) if a.kind is ArgKind.PTRLEN_STR and a.length is not None else None
        em.emit(f"u32 {z} = 0;")
        em.emit(f"struct by_key *{k} = by_scratch.lookup(&{z});")
        em.emit(f"struct by_key *{k}z = by_zero.lookup(&{z});")
        em.emit(f"if (!{k} || !{k}z) return 0;")
        em.emit(f"bpf_probe_read_kernel({k}, sizeof(struct by_key), {k}z);")
        em.emit(f"{k}->probe = {_index(index)};")
        _string_key(em, k, a, p, ln, cap)
        key = k
    else:
        x = em.value(a.loc)
        em.emit(f"struct by_key {k} = {{}};")
        em.emit(f"{k}.probe = {_index(index)};")
        em.emit(f"{k}.num = {_slot(em, a, x) if keyed.request.hist else _masked(a, x)};")
        key = f"&{k}"
    em.emit(f"u64 *{v} = by_counts.lookup({key});")
    em.emit(f"if (!{v}) {{")
    em.emit("    u64 zero = 0;")
    em.emit(f"    by_counts.insert({key}, &zero);")  # fails if another CPU was first: fine
    em.emit(f"    {v} = by_counts.lookup({key});")
    em.emit("}")
    em.emit(f"if ({v}) {{ *{v} += 1; }} else {{")
    em.emit(f"    u32 {z}l = {_index(index)};")
    em.emit(f"    u64 *{z}n = by_lost.lookup(&{z}l);")
    em.emit(f"    if ({z}n) *{z}n += 1;")
    em.emit("}")


def _masked(a: ArgSpec, x: str) -> str:
    if a.kind is ArgKind.BOOL:
        return f"(({x} & 0xff) != 0)"
    mask = _MASK.get(a.kind)
    return f"({x} & {mask:#x}ULL)" if mask is not None else x


def _slot(em: EmitterLike, a: ArgSpec, x: str) -> str:
    """The log2 slot of the value (see `value_slot_range`)."""
    s = em.new()
    signed = _SIGNED_C.get(a.kind)
    if signed is not None:
        n = em.new()
        em.emit(f"s64 {n} = (s64)({signed}){x};")
        em.emit(f"u64 {s} = 0;")
        em.emit(f"if ({n} < 0) {s} = {NEGATIVE} + bpf_log2l((u64)0 - (u64){n});")
        em.emit(f"else if ({n} > 0) {s} = bpf_log2l((u64){n});")
    else:
        n = em.new()
        em.emit(f"u64 {n} = {_masked(a, x)};")
        em.emit(f"u64 {s} = {n} ? bpf_log2l({n}) : 0;")
    return s


def _string_key(em: EmitterLike, k: str, a: ArgSpec, p: str, ln: str | None, cap: int) -> None:
    """The string's bytes into `k->s` (zeroed before), its captured length into `k->num`."""
    if a.kind is ArgKind.CSTR:
        em.emit(f"if ({p} == 0) {{ {k}->flags = {STR_NULL}; }} else {{")
        em.emit(f"    long r = bpf_probe_read_user_str({k}->s, {cap}, (void *){p});")
        em.emit(f"    if (r < 0) {{ {k}->flags = {STR_FAULT}; }}")
        em.emit(f"    else {{ {k}->num = r > 0 ? r - 1 : 0; if (r == {cap}) {k}->flags = {STR_TRUNCATED}; }}")
        em.emit("}")
        return
    if ln is None:
        raise ValueError("a pointer+length string needs a length location")
    ltype = {ArgKind.S32: "s32", ArgKind.U32: "u32", ArgKind.S16: "s16", ArgKind.U16: "u16"}.get(a.length_kind, "s64")
    want = em.new()
    em.emit(f"s64 {want} = (s64)({ltype}){ln};")
    # (NULL, 0) is an empty string (Go's zero value), not a NULL one
    em.emit(f"if ({p} == 0 && {want} != 0) {{ {k}->flags = {STR_NULL}; }} else if ({want} > 0) {{")
    em.emit(f"    u64 n = {want} > {cap} ? {cap} : (u64){want};")
    em.emit(f"    if ({want} > {cap}) {k}->flags = {STR_TRUNCATED};")
    em.emit(f"    if (n > {cap}) n = {cap};")
    em.emit(f"    if (bpf_probe_read_user({k}->s, n, (void *){p}) < 0) {k}->flags = {STR_FAULT};")
    em.emit(f"    else {k}->num = n;")
    em.emit("}")


# --- Reading the maps back -----------------------------------------------------------------------------


def value_slot_range(slot: int) -> tuple[int, int]:
    """The values [low, high] (inclusive) of a `--hist=ARG` slot: slot 0 holds 0, slot k in 1..64 holds
    2^(k-1) .. 2^k - 1, and slot 64 + k the negative values -(2^k - 1) .. -2^(k-1)."""
    if slot <= 0:
        return 0, 0
    if slot <= NEGATIVE:
        return 1 << (slot - 1), (1 << slot) - 1
    k = slot - NEGATIVE
    return -((1 << k) - 1), -(1 << (k - 1))


@dataclass(slots=True)
class KeyedTable:
    """What one probe counted per value (or per log2 slot) of its argument.

    Attributes:
        probe: the probe as counts name it ("NAME (return)" for a return).
        arg: the ARG asked for.
        hist: `buckets` ({slot: calls}, see `value_slot_range`) rather than `values`.
        values: {(value as events show it, cut at the capture limit): calls}.
        lost: hits not counted because the map of values was full (`capacity` keys).
        uncertain: why the values may not be the argument's (see ArgSpec.uncertain), or None.
    """

    probe: str
    arg: str
    hist: bool
    capacity: int
    values: dict[tuple[object, bool], int] = field(default_factory=dict)
    buckets: dict[int, int] = field(default_factory=dict)
    lost: int = 0
    uncertain: str | None = None

    @property
    def counted(self) -> int:
        return sum(self.buckets.values()) if self.hist else sum(self.values.values())


def _value(arg: ArgSpec, flags: int, num: int, s: bytes) -> tuple[object, bool]:
    """A key's value as an event would show it, and whether it was cut at the capture limit."""
    from utrace.probes.decode import Pointer, StringValue, integer

    if arg.kind in STRING_KINDS:
        if flags & STR_NULL:
            return None, False
        if flags & STR_FAULT:
            return "<unreadable>", False
        text = StringValue(s[: min(num, len(s))].decode("utf-8", "surrogateescape"))
        text.truncated = bool(flags & STR_TRUNCATED)
        return text, text.truncated
    if arg.kind is ArgKind.BOOL:
        return bool(num), False
    if arg.kind is ArgKind.PTR:
        return Pointer(num), False
    v = integer(num, arg.kind)
    return dict(arg.labels).get(v, v), False


def _refined(spec: ProbeSpec, arg: ArgSpec, value: object, refine: Callable[[Event], Event]) -> object:
    """A key's value as the runtime rewrites it in events (a JVM's internal class name in Java's form, a Go
    float from its bits), through a one-value event of the probe's kind."""
    from utrace.probes.decode import StringValue

    if spec.kind is ProbeKind.RETURN:
        return value  # a native return value: no runtime rewrites it
    if spec.kind is ProbeKind.EXIT:  # the values of an exit probe are the function's results
        ev = Event("return", spec.name, 0, 0, "", 0, 0, {}, ret={arg.name: value})
        out = refine(ev).ret
        shown = out.get(arg.name, value) if isinstance(out, dict) else value
    else:
        kind = "call" if spec.kind is ProbeKind.ENTRY else "event"
        shown = refine(Event(kind, spec.name, 0, 0, "", 0, 0, {arg.name: value})).args.get(arg.name, value)
    if isinstance(value, StringValue) and isinstance(shown, str) and not isinstance(shown, StringValue):
        kept = StringValue(shown)
        kept.truncated = value.truncated
        return kept
    return shown


_ONE_F64 = 0x3FF0000000000000  # 1.0 as a float64's bits


def _plain(spec: ProbeSpec, arg: ArgSpec, refine: Callable[[Event], Event] | None) -> str:
    """How the runtime shows an integer capture: "int", "float" (bits it turns into a float), or "other"
    (a part of a value it assembles from several captures, such as a Go interface's type word)."""
    if refine is None or arg.kind in STRING_KINDS:
        return "int"
    shown = _refined(spec, arg, _ONE_F64, refine)
    if isinstance(shown, float):
        return "float"
    return "int" if isinstance(shown, int) else "other"


def collect(
    keyed: Keyed,
    specs: Sequence[ProbeSpec],
    counts: dict[bytes, int],
    lost: dict[bytes, int],
    label: Callable[[ProbeSpec], str],
    refine: Callable[[Event], Event] | None = None,
) -> list[KeyedTable]:
    """The `by_counts` and `by_lost` maps (raw key -> sum over CPUs) as one table per probe label (the
    sites of one probe, a Go function's return instructions, add up), in the order of the specs."""
    fmt = struct.Struct(keyed.key_format)
    by_index = {k.probe: k.arg for k in keyed.probes}
    tables: dict[str, KeyedTable] = {}
    for k in keyed.probes:
        name = label(specs[k.probe])
        table = tables.setdefault(name, KeyedTable(name, keyed.request.arg, keyed.request.hist, keyed.entries))
        if k.arg.uncertain is not None:
            table.uncertain = k.arg.uncertain
    for raw, n in counts.items():
        if len(raw) != fmt.size or n <= 0:
            continue
        probe, flags, num, *rest = fmt.unpack(raw)
        arg = by_index.get(probe)
        if arg is None:
            continue
        spec = specs[probe]
        table = tables[label(spec)]
        if keyed.request.hist:
            table.buckets[num] = table.buckets.get(num, 0) + n
            continue
        value, cut = _value(arg, flags, num, rest[0] if rest else b"")
        if refine is not None and value is not None:
            value = _refined(spec, arg, value, refine)
        key = (value, cut)
        table.values[key] = table.values.get(key, 0) + n
    for raw, n in lost.items():
        (probe,) = struct.unpack_from("<I", raw)
        if probe in by_index and n:
            tables[label(specs[probe])].lost += n
    return list(tables.values())
