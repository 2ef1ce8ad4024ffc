"""Which traced JavaScript functions run optimised code (utrace.process.v8tiers), on a fake V8 heap
(tests.unit.test_v8frames.Heap) laid out with node 22's JSFunction.code, Code.flags and
Code.instruction_start offsets and CodeKind values (its v8dbg_* constants)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.unit.test_v8frames import Heap, HeapLines
from tests.unit.test_v8frames import L as L20
from utrace.process import v8tiers
from utrace.process.procfs import MapEntry
from utrace.process.v8frames import V8Frames
from utrace.process.v8tiers import Tiers, lines, literal, unreadable

L = replace(
    L20, jsfunction_code=31, code_flags=47, code_type=206, code_instruction_start=39, code_kind_interpreted=9,
    code_kind_baseline=10, first_js_function_type=2085, last_js_function_type=2091,
)  # fmt: skip
MAGLEV, TURBOFAN = 11, 12  # V8's CodeKind: BASELINE + 1, BASELINE + 2
BUILTIN = 2
JIT = 0x7F0000100000  # addresses the fake `place` calls V8's JIT memory, a builtin, elsewhere
TRAMPOLINE = 0x18CFD00
LAZY = 0x18D0000
OTHER = 0x5000
APP = "// app\nfunction priceOf(item) {\n  return item.price;\n}\nfunction other() {}\n"


def place(address: int) -> tuple[str, str]:
    if JIT <= address < JIT + 0x10000:
        return ("jit", "")
    if address == TRAMPOLINE:
        return ("builtin", "Builtins_InterpreterEntryTrampoline")
    if address == LAZY:
        return ("builtin", "Builtins_CompileLazy")
    return ("other", "memory that is neither V8's JIT memory nor the node binary")


class World:
    """A fake heap with a script, and helpers that lay out functions as V8 does."""

    def __init__(self, heap: Heap) -> None:
        self.heap = heap
        self.undefined = heap.alloc(48, L.oddball_type)
        self.script = heap.script("/srv/app.js", APP)

    def sfi(self, name: str, *, locals_: int = 2, compiled: bool = True, script: int | None = None) -> int:
        h = self.heap
        at = APP.find("function " + name)
        s = h.string(name)
        word = h.scope_info(locals_, s, self.undefined, max(at, 0), max(at, 0) + 10) if compiled else s
        return h.sfi(word, self.script if script is None else script)

    def code(self, kind: int, start: int) -> int:
        c = self.heap.alloc(64, L.code_type)
        self.heap.put(c + L.code_flags, kind | 0x1230, 4)  # other flag bits set too
        self.heap.put(c + L.code_instruction_start, start)
        return c

    def function(self, sfi: int, code: int) -> int:
        f = self.heap.alloc(64, 2088)
        self.heap.put(f + L.jsfunction_shared, sfi)
        self.heap.put(f + L.jsfunction_code, code)
        return f


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    h = Heap()
    monkeypatch.setattr(V8Frames, "_mem", lambda self, pid: h)
    return World(h)


def tiers(w: World, **kw: float) -> Tiers:
    h = w.heap

    def bulk(address: int, n: int) -> bytes:
        return bytes(h.mem[address - h.base : address - h.base + n])

    regions = [(h.base, h.base + len(h.mem))]
    return Tiers(L, 1, h, bulk, regions, place, V8Frames(L, HeapLines(h)), **kw)


def said(w: World, *globs: str, **kw: float) -> list[str]:
    patterns = []
    for g in globs:
        script, _, name = g.rpartition(":")
        patterns.append((f"js:{g}", script.encode(), name.encode()))
    return lines(tiers(w, **kw), patterns)


def test_an_optimised_function_and_an_interpreted_one(world: World) -> None:
    w = world
    w.function(w.sfi("priceOf"), w.code(TURBOFAN, JIT + 0x40))
    w.function(w.sfi("other"), w.code(BUILTIN, TRAMPOLINE))
    got = said(w, "priceOf", "other")
    assert got == [
        "js:priceOf: priceOf (app.js:2) runs V8's optimised code (TurboFan) as the trace ends: calls of optimised "
        "code do not enter the builtins utrace probes, so its count is a lower bound",
        "js:other: other (app.js:5) is not optimised as the trace ends (its code is the interpreter's entry, "
        "Builtins_InterpreterEntryTrampoline): its calls are seen unless an optimised caller inlined it",
    ]


def test_each_tier_by_its_code_kind(world: World) -> None:
    w = world
    w.function(w.sfi("priceOf"), w.code(MAGLEV, JIT))
    w.function(w.sfi("other"), w.code(10, JIT + 8))  # BASELINE: Sparkplug
    got = said(w, "priceOf", "other")
    assert "priceOf (app.js:2) runs V8's optimised code (Maglev)" in got[0]
    assert got[1] == (
        "js:other: other (app.js:5) is not optimised as the trace ends (Sparkplug code): its calls are seen unless "
        "an optimised caller inlined it"
    )


def test_a_function_not_compiled_yet(world: World) -> None:
    """Its SharedFunctionInfo names it by a String (no ScopeInfo yet), its code is CompileLazy."""
    w = world
    w.function(w.sfi("priceOf", compiled=False), w.code(BUILTIN, LAZY))
    assert said(w, "priceOf") == [
        "js:priceOf: priceOf (app.js) is not optimised as the trace ends (not compiled yet: its code is "
        "Builtins_CompileLazy): its calls are seen unless an optimised caller inlined it"
    ]


def test_closures_of_one_function_each_said(world: World) -> None:
    w = world
    sfi = w.sfi("priceOf", locals_=5)
    w.function(sfi, w.code(TURBOFAN, JIT))
    w.function(sfi, w.code(BUILTIN, TRAMPOLINE))
    (got,) = said(w, "priceOf")
    assert "(TurboFan) in 1 of its 2 closures as the trace ends" in got
    assert got.endswith(
        "(its other closures: its code is the interpreter's entry, Builtins_InterpreterEntryTrampoline)"
    )


def test_a_kind_its_place_contradicts_is_not_believed(world: World) -> None:
    w = world
    w.function(w.sfi("priceOf"), w.code(TURBOFAN, TRAMPOLINE))
    w.function(w.sfi("other"), w.code(TURBOFAN, OTHER))
    got = said(w, "priceOf", "other")
    assert got[0] == (
        "js:priceOf: priceOf (app.js:2): which code it runs was not read (its Code's kind is TurboFan's but its "
        "instructions are in Builtins_InterpreterEntryTrampoline)"
    )
    assert "not read (its Code's kind is TurboFan's but its instructions are in memory that is neither" in got[1]
    assert not any("runs V8's optimised code" in line for line in got)


def test_globs_script_narrowing_and_inferred_names(world: World) -> None:
    w = world
    h = w.heap
    w.function(w.sfi("priceOf"), w.code(TURBOFAN, JIT))
    w.function(w.sfi("prices"), w.code(BUILTIN, TRAMPOLINE))
    elsewhere = h.script("/srv/lib/util.js")
    w.function(w.sfi("priceOf", script=elsewhere), w.code(BUILTIN, TRAMPOLINE))
    # an anonymous function named by V8 from where it is assigned: its ScopeInfo's inferred-name slot
    anon = h.sfi(h.scope_info(1, h.string(""), h.string("Cart.add"), 0, 5), w.script)
    w.function(anon, w.code(MAGLEV, JIT))
    got = said(w, "pri*Of", "app.js:priceOf", "Cart.*")
    assert literal(b"pri*Of") == b"pri"
    assert len(got) == 4, got
    assert sorted(got[:2]) == sorted(
        [
            "js:pri*Of: priceOf (app.js:2) runs V8's optimised code (TurboFan) as the trace ends: calls of optimised "
            "code do not enter the builtins utrace probes, so its count is a lower bound",
            "js:pri*Of: priceOf (util.js) is not optimised as the trace ends (its code is the interpreter's entry, "
            "Builtins_InterpreterEntryTrampoline): its calls are seen unless an optimised caller inlined it",
        ]
    )
    assert got[2].startswith("js:app.js:priceOf: priceOf (app.js:2) runs V8's optimised code (TurboFan)")
    assert got[3].startswith("js:Cart.*: Cart.add (app.js:1) runs V8's optimised code (Maglev)")


def test_a_name_only_in_source_text_is_no_function(world: World) -> None:
    """The name's bytes in a script's source, in a String no SharedFunctionInfo names, or in a
    function whose slot was not found: no function, said so."""
    w = world
    w.heap.string("priceOf")  # an unreferenced String
    (got,) = said(w, "priceOf")  # and APP's source holds "function priceOf"
    assert got.startswith("js:priceOf: no function of that name was found in the node's heap as the trace ended")


def test_an_object_moved_after_the_search_is_not_reported(world: World) -> None:
    w = world
    sfi = w.sfi("priceOf")
    f = w.function(sfi, w.code(TURBOFAN, JIT))
    t = tiers(w)
    found = t.find([("js:priceOf", b"", b"priceOf")])
    assert found == {"js:priceOf": {sfi: [f]}}
    w.heap.put(f + L.jsfunction_shared, w.sfi("other"))  # the GC put another function there
    assert t.closure(f, sfi).why == "no longer this function's (moved by the GC)"
    w.heap.put(f + L.map, w.heap.map_of(L.sfi_type))
    assert t.closure(f, sfi).why == "no longer a JSFunction (moved by the GC)"
    (got,) = lines(t, [("js:priceOf", b"", b"priceOf")])
    assert got == (
        "js:priceOf: priceOf (app.js:2): no closure of it (JSFunction) was found in the heap (none may exist, or the "
        "GC moved it meanwhile), so whether it runs optimised code is not said"
    )


def test_the_search_is_bounded(world: World) -> None:
    w = world
    w.heap.alloc(1 << 14, L.oddball_type)  # the function lies beyond the first 16 KB
    w.function(w.sfi("priceOf"), w.code(TURBOFAN, JIT))
    assert said(w, "priceOf", seconds=-1) == [
        "which traced JavaScript functions are optimised was not read: the search of the node's heap took longer "
        f"than {v8tiers.SECONDS:.0f} s"
    ]
    got = said(w, "priceOf", max_bytes=1 << 14)
    assert got[-1] == "the node's anonymous memory is 0.1 MB: only 0.0 MB of it were searched for the traced functions"
    assert got[0].startswith("js:priceOf: no function of that name was found")
    assert "runs V8's optimised code" in said(w, "priceOf")[0]


def test_what_the_metadata_lacks_is_said() -> None:
    assert unreadable(L) is None
    assert unreadable(replace(L, jsfunction_code=None)) == (
        "its V8 metadata (v8dbg_*) describes no JSFunction.code (v8dbg_class_JSFunction__code__*)"
    )
    assert unreadable(replace(L, jsfunction_code=None, code_flags=None)) == (
        "its V8 metadata (v8dbg_*) describes no JSFunction.code (v8dbg_class_JSFunction__code__*) and no "
        "Code.flags (v8dbg_class_Code__flags__*)"
    )
    assert "not consecutive" in (unreadable(replace(L, code_kind_baseline=12)) or "")


def test_too_general_patterns_are_not_searched(monkeypatch: pytest.MonkeyPatch) -> None:
    def nothing(*_a: object) -> object:
        raise AssertionError("the process was read")

    monkeypatch.setattr(v8tiers.procfs, "read_text", nothing)
    got = v8tiers.read_tiers(1, L, [("js:p*", b"", b"p*")], V8Frames(L), "/usr/bin/node", lambda _o: None)
    assert got == [
        "js:p*: the pattern has no run of 3 characters without '*' to look its functions up in the heap by: "
        "whether they are optimised is not said"
    ]


def test_places_of_code() -> None:
    """The node binary's executable mappings (V8 may map its builtins twice), V8's JIT memory."""
    maps = [
        MapEntry(0x400000, 0xE38000, "r--p", 0, (254, 0), 7, "/usr/bin/node"),
        MapEntry(0xE3C000, 0x32FC000, "r-xp", 0xA3C000, (254, 0), 7, "/usr/bin/node"),
        MapEntry(0x7F3E425C0000, 0x7F3E427A0000, "r-xp", 0x1956000, (254, 0), 7, "/usr/bin/node"),
        MapEntry(0x7F3E30000000, 0x7F3E30040000, "rwxp", 0, (0, 0), 0, ""),
        MapEntry(0x7F3E31000000, 0x7F3E31040000, "rw-p", 0, (0, 0), 0, ""),
    ]
    offsets = {0xA3C010: "Builtins_CompileLazy", 0x1956020: "Builtins_InterpreterEntryTrampoline"}
    where = v8tiers._places(maps, "/usr/bin/node", offsets.get)
    assert where(0xE3C010) == ("builtin", "Builtins_CompileLazy")
    assert where(0x7F3E425C0020) == ("builtin", "Builtins_InterpreterEntryTrampoline")
    assert where(0xE3C018)[0] == "other"  # in node, in no function it names
    assert where(0x7F3E30000100) == ("jit", "")
    assert where(0x7F3E31000100)[0] == where(0x500000)[0] == "other"  # not executable; node's data
