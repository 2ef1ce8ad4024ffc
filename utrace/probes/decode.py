"""Raw ring-buffer records -> `Event`, from the same field list that generated the C struct."""

from __future__ import annotations

import json
import struct

from utrace.model import ArgKind, ArgSpec, Event, Frame, JsMatch, ProbeKind, ProbeSpec, RawStack
from utrace.probes.codegen import BpfProgram
from utrace.probes.layout import (
    HEADER_SIZE,
    STR_FAULT,
    STR_NULL,
    STR_TRUNCATED,
    Field,
    event_format,
)
from utrace.v8layout import V8Layout

_WIDTH = {
    ArgKind.U64: (64, False), ArgKind.S64: (64, True), ArgKind.U32: (32, False),
    ArgKind.S32: (32, True), ArgKind.U16: (16, False), ArgKind.S16: (16, True),
    ArgKind.U8: (8, False), ArgKind.S8: (8, True),
}  # fmt: skip
_KIND_NAME = {
    ProbeKind.ENTRY: "call",
    ProbeKind.RETURN: "return",
    ProbeKind.EXIT: "return",
    ProbeKind.USDT: "event",
}


class Pointer(int):
    """An address: shown in hex by people-facing output, an integer in JSON."""

    def __repr__(self) -> str:
        return f"{int(self):#x}"


class Rendered(str):
    """A value a runtime already formatted the way its language prints it (`nil`, `*errors.errorString("x")`)."""


class StringValue(str):
    """A captured string; `truncated` says more bytes existed than were captured."""

    truncated: bool = False
    full_length: int = 0


class Uncertain(dict[str, object]):
    """A value read where the argument may not be (`ArgSpec.uncertain`): never shown as a plain value.

    JSON gets `{"value": ..., "uncertain": "reason"}`; text shows `0x7ffd... (uncertain: reason)`.
    """

    def __init__(self, value: object, reason: str) -> None:
        super().__init__(value=value, uncertain=reason)

    def __str__(self) -> str:
        v = self["value"]
        if isinstance(v, Pointer):
            text = f"{int(v):#x}"
        elif isinstance(v, StringValue):
            text = json.dumps(str(v)) + ("…" if v.truncated else "")
        elif v is None:
            text = "NULL"
        else:
            text = str(v)
        return f"{text} (uncertain: {_printable(str(self['uncertain']))})"


def _printable(text: str) -> str:
    """The reason quotes names from the binary: control characters are written as escapes, never sent
    to a terminal as they are."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def integer(raw: int, kind: ArgKind) -> int:
    """Interpret the low bits of a captured u64 as the declared width and signedness."""
    bits, signed = _WIDTH.get(kind, (64, False))
    v = raw & ((1 << bits) - 1)
    if signed and v >> (bits - 1):
        v -= 1 << bits
    return v


def _value(arg: ArgSpec, items: list[object], pos: int, layout: V8Layout | None = None) -> tuple[object, int]:
    k = arg.kind
    if k is ArgKind.UNAVAILABLE:
        return f"<unavailable: {arg.note}>" if arg.note else "<unavailable>", pos
    if k is ArgKind.JSVALUE:
        from utrace.probes.v8values import decode

        kind, length, val, buf = items[pos : pos + 4]
        assert isinstance(kind, int) and isinstance(length, int) and isinstance(val, int) and isinstance(buf, bytes)
        return decode(layout, kind, length, val, buf), pos + 4
    if k is ArgKind.JSSCRIPT:
        from utrace.probes.v8values import JsScript

        nums, tail = items[pos : pos + 6], items[pos + 6]
        assert all(isinstance(x, int) for x in nums) and isinstance(tail, bytes)
        length, why, spos, send, src, srclen = (int(x) for x in nums)  # type: ignore[call-overload]
        return JsScript(length, why, spos, send, src, srclen, tail), pos + 7
    if k is ArgKind.JSNAME:
        length, flags, buf = items[pos], items[pos + 1], items[pos + 2]
        assert isinstance(length, int) and isinstance(flags, int) and isinstance(buf, bytes)
        return Rendered(buf[: min(length, len(buf))].decode("latin-1")), pos + 3
    if k in (ArgKind.CSTR, ArgKind.PTRLEN_STR):
        length, flags, buf = items[pos], items[pos + 1], items[pos + 2]
        assert isinstance(length, int) and isinstance(flags, int) and isinstance(buf, bytes)
        if flags & STR_NULL:
            return None, pos + 3
        if flags & STR_FAULT:
            return "<unreadable>", pos + 3
        got = min(length, len(buf))
        s = StringValue(buf[:got].decode("utf-8", "replace"))
        s.truncated = bool(flags & STR_TRUNCATED)
        s.full_length = length
        return s, pos + 3
    raw = items[pos]
    assert isinstance(raw, int)
    if k is ArgKind.BOOL:
        return bool(raw & 0xFF), pos + 1
    if k is ArgKind.PTR:
        return Pointer(raw), pos + 1
    v = integer(raw, k)
    if arg.labels:
        for value, label in arg.labels:
            if value == v:
                return label, pos + 1
    return v, pos + 1


class Decoder:
    """Decodes records of one generated program."""

    def __init__(self, program: BpfProgram) -> None:
        self.specs = program.specs
        self.fields: list[list[Field]] = program.fields
        self.stack_depth = program.options.stack_depth
        self.v8_frames = program.options.v8_frames is not None
        self.structs = [struct.Struct(event_format(f, self.stack_depth, self.v8_frames)) for f in program.fields]
        self.sizes = [s.size for s in self.structs]

    def probe_index(self, data: bytes) -> int:
        return int.from_bytes(data[:4], "little")

    def raw_stack(self, data: bytes) -> RawStack:
        """The record's pid, time, stack addresses and (with V8 frames) each frame's 4 slots, read from their
        place at the record's end without decoding the rest: what reading ahead needs
        (utrace.app.readahead), at a fraction of `decode`'s cost."""
        depth = self.stack_depth
        if not depth:
            return RawStack(0, 0, (), [])
        # the stack is last: its count, `depth` addresses, then (V8) 4 words for each of `depth` frames
        tail = self.sizes[int.from_bytes(data[:4], "little")] - 8 - (40 if self.v8_frames else 8) * depth
        n = max(0, min(int.from_bytes(data[tail : tail + 8], "little", signed=True), depth))
        addresses = struct.unpack_from(f"<{n}Q", data, tail + 8)
        slots: list[tuple[int, int, int, int]] = []
        if self.v8_frames:
            w = struct.unpack_from(f"<{4 * n}Q", data, tail + 8 + 8 * depth)
            slots = [(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]) for i in range(n)]
        pid, ts = int.from_bytes(data[4:8], "little"), int.from_bytes(data[16:24], "little")
        return RawStack(pid, ts, addresses, slots)

    def decode(self, data: bytes) -> Event:
        index = int.from_bytes(data[:4], "little")
        spec: ProbeSpec = self.specs[index]
        items = list(self.structs[index].unpack_from(data))
        _probe, pid, tid, cpu, ts, latency, comm = items[:7]
        pos = 7
        args: dict[str, object] = {}
        context: dict[str, object] = {}
        ret: object = None
        first_context = len(self.fields[index]) - len(spec.context)
        layout = next((f.layout for f in spec.filters if isinstance(f, JsMatch)), None)
        for n, fl in enumerate(self.fields[index]):
            value, pos = _value(fl.arg, items, pos, layout)
            if fl.arg.uncertain is not None and fl.arg.kind is not ArgKind.UNAVAILABLE:
                value = Uncertain(value, fl.arg.uncertain)
            if n == 0 and spec.ret is not None:
                ret = value
            elif n >= first_context:
                context[fl.arg.name] = value
            else:
                args[fl.arg.name] = value
        for name, text in spec.facts:
            context[name] = text
        if spec.kind is ProbeKind.EXIT:
            # the captured values of an exit probe are the function's results
            ret, args = args, {}
        stack: tuple[Frame, ...] = ()
        if self.stack_depth:
            n = items[pos]
            assert isinstance(n, int)
            n = max(0, min(n, self.stack_depth))
            addrs = [a for a in items[pos + 1 : pos + 1 + n] if isinstance(a, int)]
            if self.v8_frames:
                w = [x for x in items[pos + 1 + self.stack_depth :] if isinstance(x, int)]
                slots = [(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]) for i in range(len(addrs))]
                stack = tuple(Frame(a, v8_slots=sl) for a, sl in zip(addrs, slots, strict=True))
            else:
                stack = tuple(Frame(a) for a in addrs)
        return Event(
            kind=_KIND_NAME[spec.kind],
            probe=spec.name,
            pid=pid,
            tid=tid,
            comm=comm.split(b"\0", 1)[0].decode("utf-8", "replace"),
            ts_ns=ts,
            cpu=cpu,
            args=args,
            ret=ret,
            latency_ns=latency if (spec.latency and latency) else None,  # returns, paired USDT ends
            context=context,
            stack=stack,
        )


__all__ = ["HEADER_SIZE", "Decoder", "Pointer", "RawStack", "Rendered", "StringValue", "Uncertain", "integer"]
