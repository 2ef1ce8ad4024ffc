"""Go values placed by the ABI -> what to capture (ArgSpec), and the captured words -> Go values.

Each Go value becomes one or more captured fields, named after the value:
- string: one pointer+length string (exactly `len` bytes, never a C string);
- []byte: its first bytes as a string, plus `name.len` and `name.cap`; other slices: the data
  pointer, `name.len` and `name.cap`;
- structs: their fields, flattened (`t.Base`);
- interfaces (`error`): the itab (or type) word, the data word and, speculatively, the string at the
  start of the data (the message of `*errors.errorString` and `*fmt.wrapError`); after decoding,
  `present` folds them into one value: `nil`, or the dynamic type's name with the message;
- floats: unreadable in registers (BPF sees no SSE registers), read from the stack when there.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from utrace.model import ArgKind, ArgSpec, Deref, GoKind, GoType, Location, Reg, Stack
from utrace.probes.decode import Rendered
from utrace.runtimes.go.goabi import Assigned, Part

_INT_KIND = {
    (GoKind.INT, 1): ArgKind.S8, (GoKind.INT, 2): ArgKind.S16, (GoKind.INT, 4): ArgKind.S32,
    (GoKind.INT, 8): ArgKind.S64, (GoKind.UINT, 1): ArgKind.U8, (GoKind.UINT, 2): ArgKind.U16,
    (GoKind.UINT, 4): ArgKind.U32, (GoKind.UINT, 8): ArgKind.U64,
}  # fmt: skip
# Dynamic types whose data starts with the message string.
MESSAGE_TYPES = frozenset({"*errors.errorString", "*fmt.wrapError", "*fmt.wrapErrors"})
MAX_ARRAY_ELEMS = 8
MAX_FIELDS = 256  # captured fields per probe; past that, one note says how many more there were
_WORDS = {GoKind.STRING: 2, GoKind.SLICE: 3, GoKind.IFACE: 2, GoKind.EFACE: 2}


class GoValue(Rendered):
    """A decoded Go value shown as Go would print it (`*errors.errorString("boom")`, `nil`)."""


@dataclass(slots=True)
class Interface:
    """Names of the captured fields that make up one interface value."""

    name: str
    empty: bool  # interface{} (type word) vs non-empty (itab word)


@dataclass(slots=True)
class Captures:
    """ArgSpecs for a list of assigned values, and how to fold the decoded fields back."""

    args: list[ArgSpec] = field(default_factory=list)
    interfaces: list[Interface] = field(default_factory=list)
    floats: dict[str, int] = field(default_factory=dict)  # name -> size, read raw from the stack


def _part_loc(p: Part) -> Location | None:
    if p.reg is not None:
        return None if p.is_float else Reg(p.reg)
    assert p.stack is not None
    return Stack(p.stack)


def _float_note(p: Part, t: GoType) -> str:
    return f"{t.name} in {p.reg}: BPF cannot read floating-point registers"


def _scalar(name: str, p: Part, t: GoType, caps: Captures) -> None:
    loc = _part_loc(p)
    if t.kind in (GoKind.FLOAT,):
        if loc is None:
            caps.args.append(ArgSpec(name, ArgKind.UNAVAILABLE, note=_float_note(p, t)))
        else:
            caps.args.append(ArgSpec(name, ArgKind.U64, loc))
            caps.floats[name] = t.size
        return
    assert loc is not None
    if t.kind is GoKind.BOOL:
        caps.args.append(ArgSpec(name, ArgKind.BOOL, loc))
    elif t.kind is GoKind.POINTER:
        caps.args.append(ArgSpec(name, ArgKind.PTR, loc))
    else:
        caps.args.append(ArgSpec(name, _INT_KIND.get((t.kind, t.size), ArgKind.S64), loc))


def _strip(p: Part, n: int) -> Part:
    """The part with the first `n` characters of its path removed (relative to a member)."""
    return Part(p.path[n:], p.type, p.offset, p.size, p.is_float, p.reg, p.stack, p.missing)


def _value(name: str, t: GoType, ps: list[Part], caps: Captures, max_len: int) -> None:
    """Capture value `name` of type `t` whose parts (in layout order) are `ps`."""
    missing = next((p.missing for p in ps if p.missing), "")
    if missing:
        caps.args.append(ArgSpec(name, ArgKind.UNAVAILABLE, note=missing))
        return
    k = t.kind
    if len(ps) < _WORDS.get(k, 0) or (not ps and k in (GoKind.STRUCT, GoKind.ARRAY) and t.size > 0):
        # memory_parts stops walking a huge (or damaged) type: what it did not reach is not captured
        caps.args.append(ArgSpec(name, ArgKind.UNAVAILABLE, note=f"{t.name} not captured (too many parts)"))
        return
    if k is GoKind.STRING:
        ptr, ln = (_part_loc(p) for p in ps[:2])
        assert ptr is not None and ln is not None
        caps.args.append(ArgSpec(name, ArgKind.PTRLEN_STR, ptr, length=ln, max_len=max_len))
        return
    if k is GoKind.SLICE:
        ptr, ln, cap = (_part_loc(p) for p in ps[:3])
        assert ptr is not None and ln is not None and cap is not None
        if t.elem is not None and t.elem.kind is GoKind.UINT and t.elem.size == 1:
            caps.args.append(ArgSpec(name, ArgKind.PTRLEN_STR, ptr, length=ln, max_len=max_len))
        else:
            caps.args.append(ArgSpec(name, ArgKind.PTR, ptr))
        caps.args.append(ArgSpec(f"{name}.len", ArgKind.S64, ln))
        caps.args.append(ArgSpec(f"{name}.cap", ArgKind.S64, cap))
        return
    if k in (GoKind.IFACE, GoKind.EFACE):
        tab, data = (_part_loc(p) for p in ps[:2])
        assert tab is not None and data is not None
        typ: Location = tab if k is GoKind.EFACE else Deref(tab, 8)
        caps.args.append(ArgSpec(name, ArgKind.PTR, typ))
        caps.args.append(ArgSpec(f"{name}.data", ArgKind.PTR, data))
        caps.args.append(
            ArgSpec(f"{name}.str", ArgKind.PTRLEN_STR, Deref(data, 0), length=Deref(data, 8), max_len=max_len)
        )
        caps.interfaces.append(Interface(name, k is GoKind.EFACE))
        return
    if k is GoKind.COMPLEX:
        for p in ps:
            _scalar(name + p.path[-5:], p, p.type, caps)
        return
    if k is GoKind.STRUCT:
        for f in t.fields:
            sub = [p for p in ps if p.path == f".{f.name}" or p.path.startswith((f".{f.name}.", f".{f.name}["))]
            inner = [_strip(p, len(f.name) + 1) for p in sub]
            if f.type.size == 0:
                continue
            _value(f"{name}.{f.name}", f.type, inner, caps, max_len)
        return
    if k is GoKind.ARRAY:
        if t.length == 0 or t.elem is None:
            return
        if t.length == 1:
            _value(f"{name}[0]", t.elem, ps, caps, max_len)
            return
        base = ps[0].stack if ps else None
        if base is None:
            caps.args.append(ArgSpec(name, ArgKind.UNAVAILABLE, note=f"{t.name} not captured"))
            return
        if t.length > MAX_ARRAY_ELEMS:
            caps.args.append(ArgSpec(name, ArgKind.UNAVAILABLE, note=f"{t.name} at sp+{base}: not captured"))
            return
        for i in range(t.length):
            prefix = f"[{i}]"
            sub = [p for p in ps if p.path.startswith(prefix)]
            inner = [_strip(p, len(prefix)) for p in sub]
            _value(f"{name}[{i}]", t.elem, inner, caps, max_len)
        return
    if ps:
        _scalar(name, ps[0], t, caps)


def captures(values: list[Assigned], max_len: int) -> Captures:
    """What to capture for the given arguments (or results), in order."""
    caps = Captures()
    for a in values:
        _value(a.name, a.type, list(a.parts), caps, max_len)
    if len(caps.args) > MAX_FIELDS:
        dropped = caps.args[MAX_FIELDS - 1 :]
        caps.args = caps.args[: MAX_FIELDS - 1]
        caps.args.append(ArgSpec(dropped[0].name, ArgKind.UNAVAILABLE, note=f"{len(dropped)} more fields not captured"))
        kept = {a.name for a in caps.args[:-1]}
        caps.interfaces = [i for i in caps.interfaces if {i.name, f"{i.name}.data", f"{i.name}.str"} <= kept]
        caps.floats = {n: size for n, size in caps.floats.items() if n in kept}
    return caps


def present(
    values: dict[str, object], caps: Captures, type_name: Callable[[int, int], str | None], pid: int
) -> dict[str, object]:
    """Fold decoded fields into Go values: interfaces by dynamic type, floats from their bits.

    `type_name(pid, address)` names the runtime type at an address of the traced process.
    """
    out = dict(values)
    for name, size in caps.floats.items():
        raw = out.get(name)
        if isinstance(raw, int):
            bits = raw & ((1 << (size * 8)) - 1)
            out[name] = struct.unpack("<f" if size == 4 else "<d", bits.to_bytes(size, "little"))[0]
    for itf in caps.interfaces:
        typ = out.get(itf.name)
        data = out.pop(f"{itf.name}.data", None)
        text = out.pop(f"{itf.name}.str", None)
        if not isinstance(typ, int) or typ == 0:
            out[itf.name] = GoValue("nil")
            continue
        tname = type_name(pid, typ)
        if tname is None:
            out[itf.name] = GoValue(f"<type {typ:#x}>({int(data) if isinstance(data, int) else 0:#x})")
        elif tname in MESSAGE_TYPES and isinstance(text, str) and not text.startswith("<"):
            quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
            out[itf.name] = GoValue(f"{tname}({quoted})")
        else:
            out[itf.name] = GoValue(f"{tname}({int(data) if isinstance(data, int) else 0:#x})")
    return out
