"""The event layout shared by the C generator and the Python decoder.

Every event is a fixed header followed by one field per captured value, in `ProbeSpec.args` order
(a return probe's value first). The same `Field` list produces the C struct (codegen) and the
`struct` format that decodes it (decode), so the two cannot drift apart.

Header (48 bytes, little-endian): probe index u32, pid u32, tid u32, cpu u32, ktime ns u64,
latency ns u64 (0 = none), comm char[16].

With stacks, every event ends with the user stack: a frame count s64 and `depth` return addresses
u64 (innermost first; entries past the count are garbage).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from utrace.model import JS_NAME_MAX, JS_SCRIPT_MAX, STRING_KINDS, ArgKind, ArgSpec, ProbeSpec

HEADER_FORMAT = "<IIIIQQ16s"
HEADER_SIZE = struct.calcsize(HEADER_FORMAT)
MAX_STRING = 4096

# String flags, set by the BPF side.
STR_NULL = 1  # the pointer was NULL
STR_TRUNCATED = 2  # more bytes than captured
STR_FAULT = 4  # reading user memory failed


@dataclass(frozen=True, slots=True)
class Field:
    """One C struct member group for one captured value.

    `c_name` is generated from the position ("f0", "f1"...), never from user or binary text.
    """

    c_name: str
    arg: ArgSpec
    capacity: int  # string buffer bytes, 0 for integers

    @property
    def is_string(self) -> bool:
        return self.arg.kind in STRING_KINDS

    @property
    def present(self) -> bool:
        return self.arg.kind is not ArgKind.UNAVAILABLE

    @property
    def struct_format(self) -> str:
        if not self.present:
            return ""
        if self.is_string or self.arg.kind is ArgKind.JSNAME:
            return f"II{self.capacity}s"
        if self.arg.kind is ArgKind.JSVALUE:
            return f"IIQ{2 * self.capacity}s"
        if self.arg.kind is ArgKind.JSSCRIPT:
            return f"IIqqQQ{self.capacity}s"
        return "Q"


def _capacity(arg: ArgSpec) -> int:
    n = max(8, min(int(arg.max_len), MAX_STRING))
    return (n + 7) & ~7


def fields_of(spec: ProbeSpec) -> list[Field]:
    """The captured values of a probe in event order: the return value first, the arguments, the context."""
    values = ([spec.ret] if spec.ret is not None else []) + list(spec.args) + list(spec.context)
    return [Field(f"f{i}", a, _field_capacity(a)) for i, a in enumerate(values)]


def _field_capacity(arg: ArgSpec) -> int:
    if arg.kind in STRING_KINDS:
        return _capacity(arg)
    if arg.kind is ArgKind.JSNAME:
        return JS_NAME_MAX
    if arg.kind is ArgKind.JSSCRIPT:
        return JS_SCRIPT_MAX
    if arg.kind is ArgKind.JSVALUE:
        from utrace.probes.v8values import capacity

        return capacity(arg.max_len)
    return 0


def payload_format(fields: list[Field]) -> str:
    return "".join(f.struct_format for f in fields)


def stack_format(depth: int, v8_frames: bool = False) -> str:
    """The stack's count and addresses; with `v8_frames`, 4 words per frame after them (codegen._stack)."""
    if depth <= 0:
        return ""
    return f"q{depth}Q{4 * depth}Q" if v8_frames else f"q{depth}Q"


def event_format(fields: list[Field], stack_depth: int = 0, v8_frames: bool = False) -> str:
    return HEADER_FORMAT + payload_format(fields) + stack_format(stack_depth, v8_frames)
