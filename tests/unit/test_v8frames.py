"""JavaScript frames of node stacks: the captured V8 frame slots (codegen._stack), their decoding
(probes.decode) and their naming from a process's memory (process.v8frames), on a fake V8 heap laid out
as node 20's V8 lays it out (the offsets are node 20's v8dbg_* values)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.test_codegen import SHIM, _probe_body, _struct_body
from utrace.model import ArgKind, ArgSpec, Frame, JsMatch, ProbeKind, ProbeSpec, Reg, Stack
from utrace.probes.codegen import Options, render
from utrace.probes.decode import Decoder
from utrace.probes.layout import event_format
from utrace.process import v8frames
from utrace.process.v8frames import PERF_MAP_MODULE, V8Frames, _Unread
from utrace.process.v8heap import SourceLines
from utrace.v8layout import V8Layout, scopeinfo_position_slot

L = V8Layout(
    heap_object_tag=1, heap_object_tag_mask=3, smi_tag_mask=1, smi_shift=32, tagged_size=8, map=-1,
    instance_type=11, first_nonstring_type=128, string_repr_mask=7, string_encoding_mask=8, seq_tag=0,
    cons_tag=1, thin_tag=5, sliced_tag=3, one_byte_tag=8, jsfunction_shared=23, sfi_name_or_scope_info=15,
    sfi_script=31, string_length=11, seq_one_byte_chars=15, seq_two_byte_chars=15, cons_first=15,
    cons_second=23, thin_actual=15, sliced_parent=15, sliced_offset=23, heap_number_value=7, oddball_kind=39,
    script_name=15, scope_info_type=200, heap_number_type=130, oddball_type=131, js_function_type=2090,
    js_array_type=2100, js_object_type=2095, scopeinfo_first_vars=3, scopeinfo_ncontextlocals=2,
    oddball_false=0, oddball_true=1, oddball_null=3, oddball_undefined=5, map_constructor=31, map_prototype=23,
    map_type=180, first_js_function_type=None, last_js_function_type=None,
    js_array_length=23, fp_function=-16, jsfunction_code=None, code_flags=None, code_kind_mask=15,
    code_kind_shift=0, code_kind_baseline=3, code_kind_interpreted=2,
    fp_context_or_frame_type=-8, sfi_type=262, script_type=167, script_source=7,
)  # fmt: skip
SEQ_ONE_BYTE = 8  # string instance type: sequential (0) | one-byte (8)
CONS_ONE_BYTE = 9


class Heap:
    """A fake process memory: objects placed at addresses, read as `_Mem` reads."""

    def __init__(self) -> None:
        self.mem = bytearray(1 << 16)
        self.base = 0x10000
        self.top = 0x100
        self.maps: dict[int, int] = {}
        self.gone = False

    def word(self, address: int) -> int:
        return int.from_bytes(self.read(address, 8), "little")

    def read(self, address: int, n: int) -> bytes:
        if self.gone:
            raise _Unread("memory not readable: the process may have exited")
        off = address - self.base
        if off < 0 or off + n > len(self.mem):
            raise _Unread(f"no object at {address:#x}")
        return bytes(self.mem[off : off + n])

    def put(self, address: int, value: int, size: int = 8) -> None:
        off = address - self.base
        self.mem[off : off + size] = value.to_bytes(size, "little")

    def alloc(self, size: int, type_: int) -> int:
        """A new object of `size` bytes with a map of instance type `type_`: its tagged pointer."""
        m = self.map_of(type_)
        start = self.base + self.top
        self.top += (size + 15) & ~15
        self.put(start, m)
        return start + 1

    def map_of(self, type_: int) -> int:
        if type_ not in self.maps:
            start = self.base + self.top
            self.top += 32
            self.put(start + 12, type_, 2)  # instance_type at +11 from the tagged pointer
            self.maps[type_] = start + 1
        return self.maps[type_]

    def string(self, text: str) -> int:
        s = self.alloc(16 + len(text), SEQ_ONE_BYTE)
        self.put(s + L.string_length, len(text), 4)
        off = s + L.seq_one_byte_chars - self.base
        self.mem[off : off + len(text)] = text.encode("latin-1")
        return s

    def cons(self, a: int, b: int, length: int) -> int:
        s = self.alloc(32, CONS_ONE_BYTE)
        self.put(s + L.string_length, length, 4)
        self.put(s + L.cons_first, a)
        self.put(s + L.cons_second, b)
        return s

    def scope_info(
        self, nlocals: int, name: int, inferred: int, start: int = 0, end: int = 0, table: bool = False
    ) -> int:
        """A function's ScopeInfo as node 20's V8 lays it out: after the variable part (a name and an
        info per context local, or with `table` one names table and the infos), the function name, a
        Smi, the inferred name, then the start and end positions (Smis)."""
        var = nlocals + 1 if table else 2 * nlocals
        si = self.alloc(8 * (6 + var + 5), L.scope_info_type)
        self.put(si + L.map + 8 + 8 * L.scopeinfo_ncontextlocals, nlocals << 32)
        if table:
            self.put(si + L.map + 8 + 8 * L.scopeinfo_first_vars, self.alloc(64, 210))  # a NameToIndexHashTable
        slot = si + L.map + 8 + 8 * (L.scopeinfo_first_vars + var)
        self.put(slot, name)
        self.put(slot + 8, 7 << 32)  # a Smi
        self.put(slot + 16, inferred)
        self.put(slot + 24, start << 32)
        self.put(slot + 32, end << 32)
        return si

    def sfi(self, name_or_scope_info: int, script: int = 0) -> int:
        sfi = self.alloc(48, L.sfi_type)
        self.put(sfi + L.sfi_name_or_scope_info, name_or_scope_info)
        self.put(sfi + L.sfi_script, script)
        return sfi

    def script(self, name: str, source: str | None = None) -> int:
        sc = self.alloc(32, L.script_type)
        self.put(sc + L.script_name, self.string(name))
        if source is not None:
            self.put(sc + L.script_source, self.string(source))
        return sc


@pytest.fixture
def heap(monkeypatch: pytest.MonkeyPatch) -> Heap:
    h = Heap()
    monkeypatch.setattr(V8Frames, "_mem", lambda self, pid: h)
    return h


JIT = Frame(0x7F0000001234)  # anonymous memory: nothing names it
TRAMPOLINE = Frame(0x18CFD1C, "Builtins_InterpreterEntryTrampoline", 0xDC, "/usr/bin/node")
CONTEXT = 0x5551  # a heap object: a JavaScript frame's context slot
FUNCTION = 0x6661


def test_a_named_function_with_its_script(heap: Heap) -> None:
    sfi = heap.sfi(heap.string("priceOf"), heap.script("/srv/app.js"))
    word = heap.word(sfi + L.sfi_name_or_scope_info)
    got = V8Frames(L).frame(1, TRAMPOLINE, (CONTEXT, FUNCTION, sfi, word))
    assert (got.function, got.module, got.js, got.offset) == ("priceOf", "/srv/app.js", "", 0)
    assert got.address == TRAMPOLINE.address
    assert str(got) == "priceOf [JS] (app.js)"


class HeapLines(SourceLines):
    """SourceLines reading the fake heap's one-byte sources (the real one reads /proc/PID/mem)."""

    def __init__(self, heap: Heap) -> None:
        super().__init__(L)
        self.heap = heap
        self.reads = 0

    def _read(self, pid: int, src: int, length: int) -> list[int] | str:
        self.reads += 1
        text = self.heap.read(src + L.seq_one_byte_chars, length)
        return [i for i, c in enumerate(text) if c == ord("\n")]


APP = "// app\n\nfunction priceOf(item) {\n  return item.price;\n}\nconst total = (a) =>\n  priceOf(a);\n"


def test_the_line_of_a_function_from_its_scope_info(heap: Heap) -> None:
    lines = HeapLines(heap)
    frames = V8Frames(L, lines)
    script = heap.script("/srv/app.js", APP)
    undefined = heap.alloc(48, L.oddball_type)
    got = []
    for name, at in (("priceOf", "function priceOf"), ("total", "(a) =>")):
        start = APP.index(at)
        sfi = heap.sfi(heap.scope_info(2, heap.string(name), undefined, start, start + 20), script)
        got.append(str(frames.frame(1, JIT, (CONTEXT, FUNCTION, sfi, heap.word(sfi + 15)))))
    assert got == ["priceOf [JS] (app.js:3)", "total [JS] (app.js:6)"]
    assert lines.reads == 1  # the script's source is read once
    # the position is read where utrace.v8layout says, as the probes read it (node 20's layout)
    assert scopeinfo_position_slot(L) == (L.scopeinfo_first_vars + 3, 2)


def test_the_line_on_node_24_and_later(heap: Heap) -> None:
    """V8 12.x on: the position info right after the context-local count, the name slots after the
    variable part (node 24's v8dbg_scopeinfo_idx_first_vars is 5)."""
    L24 = replace(L, scopeinfo_first_vars=5)
    assert scopeinfo_position_slot(L24) == (3, 0)
    frames = V8Frames(L24, HeapLines(heap))
    start = APP.index("function priceOf")
    si = heap.alloc(8 * (6 + 2 * 2 + 3), L.scope_info_type)
    heap.put(si + L.map + 8 + 8 * 2, 2 << 32)  # two context locals
    heap.put(si + L.map + 8 + 8 * 3, start << 32)
    heap.put(si + L.map + 8 + 8 * 4, (start + 30) << 32)
    names = si + L.map + 8 + 8 * 5 + 16 * 2
    heap.put(names, heap.string("priceOf"))
    heap.put(names + 8, 7 << 32)
    sfi = heap.sfi(si, heap.script("/srv/app.js", APP))
    got = frames.frame(1, JIT, (CONTEXT, FUNCTION, sfi, si))
    assert (got.function, got.line, str(got)) == ("priceOf", 3, "priceOf [JS] (app.js:3)")


def test_many_context_locals_names_in_a_table(heap: Heap) -> None:
    """75 or more context locals: V8 keeps their names in one table, the function-name slots and the
    position follow the n infos (node's large internal modules' functions)."""
    frames = V8Frames(L, HeapLines(heap))
    undefined = heap.alloc(48, L.oddball_type)
    start = APP.index("function priceOf")
    si = heap.scope_info(80, heap.string("priceOf"), undefined, start, start + 20, table=True)
    sfi = heap.sfi(si, heap.script("/srv/app.js", APP))
    assert str(frames.frame(1, JIT, (CONTEXT, FUNCTION, sfi, si))) == "priceOf [JS] (app.js:3)"
    # the same ScopeInfo with a string where the table must be: not read
    other = heap.scope_info(80, heap.string("priceOf"), undefined, start, start + 20, table=True)
    heap.put(other + L.map + 8 + 8 * L.scopeinfo_first_vars, heap.string("v0"))
    got = frames.frame(1, JIT, (CONTEXT, FUNCTION, heap.sfi(other), other))
    assert got.function is None and "no table of their names" in (got.js or "")


def test_no_line_rather_than_a_wrong_one(heap: Heap) -> None:
    frames = V8Frames(L, HeapLines(heap))
    undefined = heap.alloc(48, L.oddball_type)
    with_source = heap.script("/srv/app.js", APP)
    # a String name (no ScopeInfo: not compiled), a script without a source, a position past the
    # source's end, positions that are not Smis start <= end: the script alone
    cases = [
        heap.sfi(heap.string("priceOf"), with_source),
        heap.sfi(heap.scope_info(0, heap.string("priceOf"), undefined, 10, 20), heap.script("/srv/app.js")),
        heap.sfi(heap.scope_info(0, heap.string("priceOf"), undefined, len(APP) + 5, len(APP) + 9), with_source),
        heap.sfi(heap.scope_info(0, heap.string("priceOf"), undefined, 30, 10), with_source),
    ]
    bad = heap.scope_info(0, heap.string("priceOf"), undefined, 10, 20)
    heap.put(bad + L.map + 8 + 8 * (L.scopeinfo_first_vars + 3), 0x5551)  # a pointer, not a Smi
    cases.append(heap.sfi(bad, with_source))
    for sfi in cases:
        got = frames.frame(1, JIT, (CONTEXT, FUNCTION, sfi, heap.word(sfi + 15)))
        assert (got.function, got.module, got.line, got.js) == ("priceOf", "/srv/app.js", None, "")
        assert str(got) == "priceOf [JS] (app.js)"
    # a V8 whose ScopeInfo header is not one positions are read from: no line
    odd = replace(L, scopeinfo_first_vars=L.scopeinfo_ncontextlocals + 2)
    assert scopeinfo_position_slot(odd) is None
    assert scopeinfo_position_slot(replace(L, scopeinfo_first_vars=5, scopeinfo_ncontextlocals=2)) == (3, 0)


def test_scope_info_name_then_inferred_name(heap: Heap) -> None:
    frames = V8Frames(L)
    undefined = heap.alloc(48, L.oddball_type)
    named = heap.sfi(heap.scope_info(3, heap.string("middle"), undefined))
    inferred = heap.sfi(heap.scope_info(0, 0, heap.cons(heap.string("Module."), heap.string("_compile"), 15)))
    anonymous = heap.sfi(heap.scope_info(1, 0, undefined))  # no name, inferred name undefined: not a string
    for sfi, want in ((named, "middle"), (inferred, "Module._compile"), (anonymous, "")):
        got = frames.frame(1, JIT, (CONTEXT, FUNCTION, sfi, heap.word(sfi + L.sfi_name_or_scope_info)))
        assert (got.function, got.js) == (want, ""), want
    assert str(frames.frame(1, JIT, (CONTEXT, FUNCTION, anonymous, heap.word(anonymous + 15)))) == "(anonymous) [JS]"


def test_typed_and_native_frames_are_left_alone(heap: Heap) -> None:
    sfi = heap.sfi(heap.string("priceOf"))
    word = heap.word(sfi + L.sfi_name_or_scope_info)
    frames = V8Frames(L)
    marker = 7 << 1  # a frame-type marker is a Smi (an entry, exit or stub frame)
    assert frames.frame(1, TRAMPOLINE, (marker, FUNCTION, sfi, word)) == TRAMPOLINE
    native = Frame(0x401000, "node::fs::Open", 0x10, "/usr/bin/node")
    assert frames.frame(1, native, (CONTEXT, FUNCTION, sfi, word)) == native
    assert v8frames.is_v8_code(JIT) and v8frames.is_v8_code(TRAMPOLINE) and not v8frames.is_v8_code(native)


def test_what_cannot_be_confirmed_is_said(heap: Heap) -> None:
    frames = V8Frames(L)
    sfi = heap.sfi(heap.string("priceOf"))
    word = heap.word(sfi + L.sfi_name_or_scope_info)
    # the SFI holds another name word now (the GC moved things, or the address was reused)
    got = frames.frame(1, JIT, (CONTEXT, FUNCTION, sfi, word + 16))
    assert got.function is None and got.js and "changed" in got.js
    assert str(got).startswith("<JS frame, function not read: ")
    # not an SFI at that address
    other = heap.alloc(48, 99)
    assert "SharedFunctionInfo" in (frames.frame(1, JIT, (CONTEXT, FUNCTION, other, word)).js or "")
    # the function slot is no object
    assert "not an object" in (frames.frame(1, JIT, (CONTEXT, 0x1000, sfi, word)).js or "")
    # a string of a shape not read (external)
    ext = heap.alloc(32, 8 | 2)
    sfi2 = heap.sfi(ext)
    assert "shape not read" in (frames.frame(1, JIT, (CONTEXT, FUNCTION, sfi2, ext)).js or "")
    # 75 or more context locals, but no table of their names where V8 keeps it
    big = heap.sfi(heap.scope_info(80, 0, 0))
    assert "no table of their names" in (frames.frame(1, JIT, (CONTEXT, FUNCTION, big, heap.word(big + 15))).js or "")
    # the process is gone
    sfi3 = heap.sfi(heap.string("late"))
    heap.gone = True
    got = frames.frame(1, JIT, (CONTEXT, FUNCTION, sfi3, 0))
    assert got.function is None and "exited" in (got.js or "")


def test_long_names_are_bounded(heap: Heap) -> None:
    sfi = heap.sfi(heap.string("x" * 1000))
    got = V8Frames(L).frame(1, JIT, (CONTEXT, FUNCTION, sfi, heap.word(sfi + 15)))
    assert got.function == "x" * v8frames.NAME_MAX


def _js_spec(frame_ret: int) -> ProbeSpec:
    return ProbeSpec(
        "js:priceOf", "/usr/bin/node", 0x1000, ProbeKind.ENTRY, (),
        filters=(JsMatch(Reg("rdi"), L, (b"priceOf",)),),
        context=(ArgSpec("function", ArgKind.JSNAME),), frame=(Reg("rbp"), Stack(frame_ret)),
    )  # fmt: skip


def test_generated_stack_carries_the_frame_slots() -> None:
    depth = 8
    native = ProbeSpec("uv_fs_open", "/usr/bin/node", 0x2000, ProbeKind.ENTRY, ())
    prog = render([_js_spec(0), _js_spec(8), native], Options(pid=1, stack_depth=depth, v8_frames=L))
    for i in range(3):
        assert f"u64 ustack_js[{depth}][4];" in _struct_body(prog.source, i)
    t, p, n = (_probe_body(prog.source, i) for i in range(3))
    # a js: entry's own frame is the function being entered (rdi) and its context (rsi)
    assert "e->ustack_js[0][0] = ctx->si;" in t
    fn = re.search(r"e->ustack_js\[0\]\[1\] = ([a-z]\w*(?:->\w+)?);", t)
    assert fn and (fn.group(1) == "ctx->di" or re.search(rf"\b{fn.group(1)} = ctx->di;", t)), t
    assert "ctx->si" not in n
    # offsets are the layout's: the context/marker slot and the function slot of the caller's frame
    assert "(void *)(fr[0] + -8LL)" in t and "(void *)(fr[0] + -16LL)" in t
    # at the baseline prologue the return into the caller is [sp+8]: taken, with the frame at rbp
    assert "e->ustack[2], 8, (void *)(ctx->sp + 8)" in p and "for (int i = 3;" in p
    # and the function being entered is frame 1 there, the return into its own code
    assert "e->ustack_js[1][0] = ctx->si;" in p and "e->ustack_js[0][0] = ctx->si;" not in p
    assert "for (int i = 2;" in t and "for (int i = 2;" in n
    plain = render([native], Options(pid=1, stack_depth=depth))
    assert "ustack_js" not in plain.source


def test_decoder_reads_the_slots_with_each_frame() -> None:
    depth = 4
    prog = render([ProbeSpec("uv_fs_open", "/usr/bin/node", 0x2000, ProbeKind.ENTRY, ())],
                  Options(pid=1, stack_depth=depth, v8_frames=L))  # fmt: skip
    fmt = event_format(prog.fields[0], depth, True)
    slots = list(range(100, 100 + 4 * depth))
    data = struct.pack(fmt, 0, 7, 7, 0, 1, 0, b"node", 2, 0x10, 0x20, 0, 0, *slots)
    ev = Decoder(prog).decode(data)
    assert [f.address for f in ev.stack] == [0x10, 0x20]
    assert [f.v8_slots for f in ev.stack] == [(100, 101, 102, 103), (104, 105, 106, 107)]


@pytest.mark.parametrize("v8", [True, False])
@pytest.mark.parametrize("count", [0, 1, 3, 4, 9, -1])
def test_raw_stack_agrees_with_the_full_decode(count: int, v8: bool) -> None:
    """What the read-ahead reads from a record (pid, addresses, V8 slots of the frames it holds) is what
    `decode` gives, for records with arguments before the stack, a full stack, counts out of range
    (clamped), with and without V8 frame slots."""
    depth = 4
    args = (ArgSpec("path", ArgKind.CSTR, Reg("rdi")), ArgSpec("flags", ArgKind.S32, Reg("rsi")))
    spec = ProbeSpec("uv_fs_open", "/usr/bin/node", 0x2000, ProbeKind.ENTRY, args)
    specs = [_js_spec(0), spec] if v8 else [spec]
    prog = render(specs, Options(pid=1, stack_depth=depth, v8_frames=L if v8 else None))
    decoder = Decoder(prog)
    per_frame = 5 if v8 else 1
    for index in range(len(specs)):
        fmt = event_format(prog.fields[index], depth, v8)
        head = struct.calcsize(event_format([], 0, False))
        payload = bytes(range(256)) * ((struct.calcsize(fmt) - head) // 256 + 1)
        data = bytearray(struct.pack("<IIIIQQ16s", index, 4242, 4243, 0, 1, 0, b"node") + payload)
        del data[struct.calcsize(fmt) :]
        tail = len(data) - 8 - 8 * per_frame * depth
        words = [0x1000 * (i + 1) + 1 for i in range(depth)] + list(range(500, 500 + 4 * depth))
        struct.pack_into(f"<q{per_frame * depth}Q", data, tail, count, *words[: per_frame * depth])
        ev = decoder.decode(bytes(data))
        raw = decoder.raw_stack(bytes(data))
        assert raw.pid == ev.pid == 4242
        assert list(raw.addresses) == [f.address for f in ev.stack]
        assert len(raw.addresses) == max(0, min(count, depth))
        assert raw.slots == ([f.v8_slots for f in ev.stack] if v8 else [])


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_generated_c_compiles_with_the_decoders_size(tmp_path: Path) -> None:
    depth = 16
    native = ProbeSpec("uv_fs_open", "/usr/bin/node", 0x2000, ProbeKind.ENTRY, ())
    prog = render([_js_spec(0), _js_spec(8), native], Options(pid=1, stack_depth=depth, v8_frames=L))
    src = prog.source.replace("#include <uapi/linux/ptrace.h>\n", SHIM, 1)
    for i, fields in enumerate(prog.fields):
        size = struct.calcsize(event_format(fields, depth, True))
        src += f'\n_Static_assert(sizeof(struct event_{i}) == {size}, "size {i}");\n'
    c = tmp_path / "p.c"
    c.write_text(src)
    p = subprocess.run(["gcc", "-fsyntax-only", "-w", str(c)], capture_output=True, text=True, check=False)
    assert p.returncode == 0, re.sub(r"\s+", " ", p.stderr)[:2000]


def test_a_frame_not_read_keeps_the_name_its_perf_map_gives(heap: Heap) -> None:
    """When the slots cannot be read (here: the process is gone), a frame the process's own perf map
    names keeps that name (the map outlives the process); one nothing names says why it is not read."""
    frames = V8Frames(L)
    sfi = heap.sfi(heap.string("late"))
    heap.gone = True
    named = Frame(0x7F0000001234, "JS:~late /srv/app.js:3:14", 0x20, PERF_MAP_MODULE)
    assert frames.frame(1, named, (CONTEXT, FUNCTION, sfi, 0)) == named
    assert frames.frame(1, named, (CONTEXT, 0x1000, sfi, 0)) == named  # a slot that is no object, too
    assert "exited" in (frames.frame(1, JIT, (CONTEXT, FUNCTION, sfi, 0)).js or "")
