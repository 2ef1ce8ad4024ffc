"""Ring-buffer records -> Event: records are packed here with `struct`, independently of the decoder."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utrace.model import ArgKind, ArgSpec, Const, Deref, Event, ProbeKind, ProbeSpec, Reg
from utrace.probes.codegen import BpfProgram, render
from utrace.probes.decode import Decoder, Pointer, StringValue
from utrace.probes.layout import HEADER_SIZE, STR_FAULT, STR_NULL, STR_TRUNCATED, event_format
from utrace.runtimes.node import HANDLE_TYPES, libuv_args

MOD = "/srv/demo/prog"
PID, TID, CPU, TS = 4242, 4243, 3, 123_456_789_000


def entry(name: str, *args: ArgSpec) -> ProbeSpec:
    return ProbeSpec(name, MOD, 0x1000, ProbeKind.ENTRY, args=args, pair=f"{MOD}:{name}")


def header(index: int, *, latency: int = 0, comm: bytes = b"prog") -> tuple[object, ...]:
    return (index, PID, TID, CPU, TS, latency, comm)


def record(prog: BpfProgram, index: int, *payload: object, latency: int = 0, comm: bytes = b"prog") -> bytes:
    """Bytes as the BPF side writes them: header then the payload values in field order."""
    fmt = event_format(prog.fields[index])
    return struct.pack(fmt, *header(index, latency=latency, comm=comm), *payload)


def s(capacity: int, length: int, flags: int, data: bytes) -> tuple[int, int, bytes]:
    """A string field: data is padded with garbage (ring buffer memory is not zeroed)."""
    assert len(data) <= capacity
    return (length, flags, data + b"\xa5" * (capacity - len(data)))


def decode_one(arg: ArgSpec, *payload: object) -> object:
    prog = render([entry("f", arg)])
    ev = Decoder(prog).decode(record(prog, 0, *payload))
    return ev.args[arg.name]


# --- Integers ---------------------------------------------------------------------------------------

INT_CASES = [
    (ArgKind.S32, 0xDEADBEEF_FFFFFFFE, -2),  # -4@%eax: the upper half of rax is garbage
    (ArgKind.U32, 0xDEADBEEF_FFFFFFFE, 0xFFFFFFFE),
    (ArgKind.S32, 0xFFFFFFFF_7FFFFFFF, 0x7FFFFFFF),
    (ArgKind.S32, 0x00000000_80000000, -(1 << 31)),
    (ArgKind.S16, 0x12345678_9ABC8000, -32768),
    (ArgKind.S16, 0xFFFFFFFF_FFFF7FFF, 32767),
    (ArgKind.U16, 0xFFFFFFFF_FFFF0001, 1),
    (ArgKind.S8, 0xABCD_00FF, -1),
    (ArgKind.S8, 0xFFFF_FF7F, 127),
    (ArgKind.S8, 0x80, -128),
    (ArgKind.U8, 0xFFFF_FF80, 0x80),
    (ArgKind.U8, 0x1FF, 0xFF),
    (ArgKind.S64, 0xFFFFFFFF_FFFFFFFF, -1),
    (ArgKind.S64, 0x80000000_00000000, -(1 << 63)),
    (ArgKind.S64, 0x7FFFFFFF_FFFFFFFF, (1 << 63) - 1),
    (ArgKind.U64, 0xFFFFFFFF_FFFFFFFF, (1 << 64) - 1),
    (ArgKind.U64, 0, 0),
]


@pytest.mark.parametrize(("kind", "raw", "expected"), INT_CASES)
def test_integer_width_and_sign(kind, raw, expected):
    v = decode_one(ArgSpec("v", kind, Reg("rdi")), raw)
    assert v == expected
    assert type(v) is int


@pytest.mark.parametrize(("raw", "expected"), [(0, False), (1, True), (0x100, False), (0xDEADBEEF_00000001, True)])
def test_bool_reads_low_byte(raw, expected):
    v = decode_one(ArgSpec("ok", ArgKind.BOOL, Reg("rdi")), raw)
    assert v is expected


@pytest.mark.parametrize("raw", [0, 0x7FFD_1234_5678, 0xFFFFFFFF_FFFFF000])
def test_pointer(raw):
    v = decode_one(ArgSpec("p", ArgKind.PTR, Reg("rdi")), raw)
    assert isinstance(v, Pointer)
    assert int(v) == raw
    assert repr(v) == hex(raw)


def test_labels():
    arg = ArgSpec("type", ArgKind.S32, Deref(Reg("rdi"), 16, 4), labels=HANDLE_TYPES)
    assert decode_one(arg, 12) == "tcp"
    assert decode_one(arg, 0xFFFFFFFF_0000000C) == "tcp"  # labels apply after the width is applied
    assert decode_one(arg, 7) == "pipe"
    assert decode_one(arg, 99) == 99  # unknown values stay numbers
    assert decode_one(arg, 0xFFFFFFFF) == -1


def _expected_int(raw: int, kind: ArgKind) -> int:
    bits = {"8": 8, "16": 16, "32": 32, "64": 64}[kind.value[1:]]
    v = raw % (1 << bits)
    return v - (1 << bits) if kind.value[0] == "s" and v >= 1 << (bits - 1) else v


INTEGER_KINDS = [ArgKind.U64, ArgKind.S64, ArgKind.U32, ArgKind.S32, ArgKind.U16, ArgKind.S16, ArgKind.U8, ArgKind.S8]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(INTEGER_KINDS), st.integers(0, (1 << 64) - 1)), min_size=1, max_size=8))
def test_integer_round_trip(values):
    args = tuple(ArgSpec(f"a{i}", k, Reg("rdi")) for i, (k, _) in enumerate(values))
    prog = render([entry("f", *args)])
    ev = Decoder(prog).decode(record(prog, 0, *(raw for _, raw in values)))
    assert list(ev.args) == [a.name for a in args]
    assert [ev.args[a.name] for a in args] == [_expected_int(raw, k) for k, raw in values]


# --- Strings ----------------------------------------------------------------------------------------

CSTR = ArgSpec("name", ArgKind.CSTR, Reg("rdi"), max_len=16)


def test_cstr_plain():
    v = decode_one(CSTR, *s(16, 5, 0, b"hello\0"))
    assert v == "hello"
    assert isinstance(v, StringValue)
    assert v.truncated is False
    assert v.full_length == 5


def test_cstr_empty():
    v = decode_one(CSTR, *s(16, 0, 0, b"\0"))
    assert v == "" and isinstance(v, StringValue) and not v.truncated


def test_cstr_null_pointer():
    assert decode_one(CSTR, *s(16, 0, STR_NULL, b"")) is None


def test_cstr_truncated():
    v = decode_one(CSTR, *s(16, 15, STR_TRUNCATED, b"0123456789abcde\0"))
    assert v == "0123456789abcde"
    assert v.truncated is True


def test_cstr_fault():
    assert decode_one(CSTR, *s(16, 0, STR_FAULT, b"")) == "<unreadable>"
    # a fault wins even if some length was recorded
    assert decode_one(CSTR, *s(16, 3, STR_FAULT, b"abc")) == "<unreadable>"


def test_cstr_never_reads_past_length():
    v = decode_one(CSTR, *s(16, 3, 0, b"abcSECRET"))
    assert v == "abc"


def test_cstr_invalid_utf8_is_replaced():
    v = decode_one(CSTR, *s(16, 4, 0, b"a\xffb\xc3"))
    assert v == "a\ufffdb\ufffd"


PTRLEN = ArgSpec("buf", ArgKind.PTRLEN_STR, Reg("rdi"), length=Reg("rsi"), length_kind=ArgKind.S32, max_len=16)


def test_ptrlen_never_returns_bytes_past_len():
    # no NUL terminator: the length alone decides, the rest of the buffer is garbage
    v = decode_one(PTRLEN, *s(16, 3, 0, b"abcdefghijklmnop"))
    assert v == "abc"
    assert not v.truncated and v.full_length == 3


def test_ptrlen_embedded_nul_is_kept():
    assert decode_one(PTRLEN, *s(16, 4, 0, b"a\0b\0zz")) == "a\0b\0"


def test_ptrlen_longer_than_capacity():
    v = decode_one(PTRLEN, *s(16, 1000, STR_TRUNCATED, b"0123456789abcdef"))
    assert v == "0123456789abcdef"
    assert v.truncated is True
    assert v.full_length == 1000


def test_ptrlen_zero_and_null():
    assert decode_one(PTRLEN, *s(16, 0, 0, b"")) == ""
    assert decode_one(PTRLEN, *s(16, 5, STR_NULL, b"")) is None
    assert decode_one(PTRLEN, *s(16, 5, STR_FAULT, b"")) == "<unreadable>"


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=24), st.integers(0, 64), st.booleans())
def test_ptrlen_round_trip(data, length, truncated):
    cap = 24
    prog = render([entry("f", ArgSpec("b", ArgKind.PTRLEN_STR, Reg("rdi"), length=Reg("rsi"), max_len=cap))])
    assert prog.fields[0][0].capacity == cap
    flags = STR_TRUNCATED if truncated else 0
    v = Decoder(prog).decode(record(prog, 0, *s(cap, length, flags, data))).args["b"]
    padded = data + b"\xa5" * (cap - len(data))
    assert v == padded[: min(length, cap)].decode("utf-8", "replace")
    assert v.truncated is truncated and v.full_length == length


# --- Whole events -----------------------------------------------------------------------------------


def test_header_fields_and_comm():
    prog = render([entry("f", ArgSpec("x", ArgKind.S64, Reg("rdi")))])
    data = record(prog, 0, 7, comm=b"node\0garbage1234")
    assert len(data) == HEADER_SIZE + 8
    ev = Decoder(prog).decode(data)
    assert ev == Event(kind="call", probe="f", pid=PID, tid=TID, comm="node", ts_ns=TS, cpu=CPU, args={"x": 7})


def test_full_comm_without_nul():
    prog = render([entry("f")])
    assert Decoder(prog).decode(record(prog, 0, comm=b"0123456789abcdef")).comm == "0123456789abcdef"


def test_unavailable_takes_no_bytes():
    args = (
        ArgSpec("a", ArgKind.S32, Reg("rdi")),
        ArgSpec("d", ArgKind.UNAVAILABLE, note="floating-point register"),
        ArgSpec("e", ArgKind.UNAVAILABLE),
        ArgSpec("name", ArgKind.CSTR, Reg("rsi"), max_len=8),
        ArgSpec("b", ArgKind.U8, Reg("rdx")),
    )
    prog = render([entry("f", *args)])
    ev = Decoder(prog).decode(record(prog, 0, 5, *s(8, 2, 0, b"hi"), 0x1FF))
    assert ev.args == {
        "a": 5,
        "d": "<unavailable: floating-point register>",
        "e": "<unavailable>",
        "name": "hi",
        "b": 0xFF,
    }
    assert list(ev.args) == ["a", "d", "e", "name", "b"]


def test_mixed_event_round_trip():
    args = (
        ArgSpec("name", ArgKind.CSTR, Reg("rdi"), max_len=32),
        ArgSpec("n", ArgKind.S32, Reg("rsi")),
        ArgSpec("data", ArgKind.PTRLEN_STR, Reg("rdx"), length=Reg("rcx"), length_kind=ArgKind.S32, max_len=20),
        ArgSpec("type", ArgKind.S32, Deref(Reg("rdi"), 16, 4), labels=HANDLE_TYPES),
        ArgSpec("ok", ArgKind.BOOL, Reg("r8")),
        ArgSpec("handle", ArgKind.PTR, Reg("r9")),
    )
    prog = render([entry("demo_greet", *args)])
    assert prog.fields[0][2].capacity == 24
    data = record(
        prog, 0, *s(32, 5, 0, b"world\0"), 0xFFFFFFFF_FFFFFFF9, *s(24, 6, 0, b"bytes!xxxx"), 15, 0x201, 0x55AA00
    )
    ev = Decoder(prog).decode(data)
    assert ev.kind == "call" and ev.probe == "demo_greet"
    assert ev.args == {"name": "world", "n": -7, "data": "bytes!", "type": "udp", "ok": True, "handle": 0x55AA00}
    assert isinstance(ev.args["handle"], Pointer)
    assert ev.ret is None and ev.latency_ns is None


def _ret_program() -> BpfProgram:
    ret = ArgSpec("ret", ArgKind.S64, Reg("rax"))
    return render(
        [
            entry("demo_add", ArgSpec("a", ArgKind.S64, Reg("rdi"))),
            ProbeSpec("demo_add", MOD, 0x1000, ProbeKind.RETURN, ret=ret, latency=True, pair=f"{MOD}:demo_add"),
            ProbeSpec("demo_name", MOD, 0x2000, ProbeKind.RETURN, ret=ArgSpec("ret", ArgKind.CSTR, Reg("rax"))),
            ProbeSpec(
                "tick", MOD, 0x3000, ProbeKind.USDT, args=(ArgSpec("arg0", ArgKind.S32, Const(-1)),), ref_ctr_offset=8
            ),
        ]
    )


def test_return_value_and_latency():
    prog = _ret_program()
    dec = Decoder(prog)
    ev = dec.decode(record(prog, 1, 0xFFFFFFFF_FFFFFFFD, latency=1500))
    assert ev.kind == "return" and ev.probe == "demo_add"
    assert ev.ret == -3
    assert ev.args == {}  # the return value is not an argument
    assert ev.latency_ns == 1500


def test_return_without_seen_entry_has_no_latency():
    prog = _ret_program()
    ev = Decoder(prog).decode(record(prog, 1, 3, latency=0))
    assert ev.ret == 3 and ev.latency_ns is None


def test_latency_only_for_latency_returns():
    prog = _ret_program()
    dec = Decoder(prog)
    # a stale latency value in an entry record or a return without pairing is ignored
    assert dec.decode(record(prog, 0, 1, latency=99)).latency_ns is None
    ev = dec.decode(record(prog, 2, *s(128, 3, 0, b"abc"), latency=99))
    assert ev.kind == "return" and ev.ret == "abc" and ev.latency_ns is None


def test_usdt_event_kind():
    prog = _ret_program()
    ev = Decoder(prog).decode(record(prog, 3, 0xFFFFFFFF_FFFFFFFF))
    assert ev.kind == "event" and ev.probe == "tick" and ev.args == {"arg0": -1}


def test_probe_index_selects_layout():
    prog = _ret_program()
    dec = Decoder(prog)
    assert dec.sizes == [struct.calcsize(event_format(f)) for f in prog.fields]
    for i in range(4):
        data = record(prog, i, *([0] if i != 2 else s(128, 0, 0, b"")))
        assert dec.probe_index(data) == i
        assert dec.decode(data).probe == prog.specs[i].name


def test_uv_accept_keeps_both_handle_types():
    args = libuv_args("uv_accept", 128)
    assert args is not None
    prog = render([entry("uv_accept", *args)])
    ev = Decoder(prog).decode(record(prog, 0, 0x1000, 12, 0x2000, 7))
    values = list(ev.args.values())
    assert len(values) == 4
    assert "tcp" in values and "pipe" in values


# --- User stacks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "expected"), [(0, 0), (3, 3), (4, 4), (9, 4), (-14, 0)])
def test_stack_frames_are_the_counted_prefix(count, expected):
    from utrace.probes.codegen import Options

    prog = render([entry("f", ArgSpec("a", ArgKind.S64, Reg("rdi")))], Options(stack_depth=4))
    addresses = [0x401000, 0x402000, 0x403000, 0x404000]
    fmt = event_format(prog.fields[0], 4)
    data = struct.pack(fmt, *header(0), 7, count, *addresses)
    ev = Decoder(prog).decode(data)
    assert ev.args == {"a": 7}
    assert [f.address for f in ev.stack] == addresses[:expected]
    assert all(f.function is None for f in ev.stack)


def test_no_stack_without_depth():
    prog = render([entry("f")])
    assert Decoder(prog).decode(record(prog, 0)).stack == ()
