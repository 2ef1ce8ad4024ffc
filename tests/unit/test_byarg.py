"""`--count --by ARG` and `--hist=ARG`: resolving ARG on typed specs, the generated C (golden files, a C
syntax check, no text from names reaching it), reading keys back, and the output."""

from __future__ import annotations

import io
import itertools
import json
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.test_codegen import GCC, _gcc_check, check_golden, entry_specs, go_specs, return_specs, usdt_specs
from utrace.app.session import Summary
from utrace.errors import UsageError
from utrace.model import ArgKind, ArgSpec, Event, ProbeKind, ProbeSpec, Reg
from utrace.output.argcounts import TOP_N, json_lines, write_text
from utrace.output.stream import JsonReporter, TextReporter
from utrace.probes.aggregate import ByRequest, KeyedTable, collect, select, value_slot_range
from utrace.probes.codegen import Aggregate, CodegenError, Options, render
from utrace.probes.decode import StringValue
from utrace.probes.layout import STR_FAULT, STR_NULL, STR_TRUNCATED


def label(spec: ProbeSpec) -> str:
    return f"{spec.name} (return)" if spec.kind in (ProbeKind.RETURN, ProbeKind.EXIT) else spec.name


def program(specs: list[ProbeSpec], request: ByRequest, **options: object):  # type: ignore[no-untyped-def]
    kept, keyed, notes = select(specs, request)
    return render(kept, Options(aggregate=Aggregate.COUNT, keyed=keyed, **options)), keyed, notes  # type: ignore[arg-type]


# --- resolving ARG ------------------------------------------------------------------------------------


def test_an_entry_argument_keeps_the_entries_only() -> None:
    kept, keyed, notes = select(return_specs(), ByRequest("a"))
    assert [s.kind for s in kept] == [ProbeKind.ENTRY, ProbeKind.ENTRY]
    assert [(k.probe, k.arg.name) for k in keyed.probes] == [(1, "a")]
    assert notes == ["--by a: other has no argument 'a': counted per call only"]


def test_ret_keeps_the_returns_that_have_a_value() -> None:
    kept, keyed, _ = select(return_specs(), ByRequest("ret", hist=True))
    assert [(s.name, s.kind) for s in kept] == [
        ("other", ProbeKind.ENTRY),
        ("demo_add", ProbeKind.ENTRY),
        ("demo_add", ProbeKind.RETURN),
        ("demo_alloc", ProbeKind.RETURN),
    ]
    assert [kept[k.probe].kind for k in keyed.probes] == [ProbeKind.RETURN, ProbeKind.RETURN]


def test_go_results_by_name_and_ret_for_a_single_one() -> None:
    _kept, keyed, _ = select(go_specs(), ByRequest("ret"))
    assert [k.arg.name for k in keyed.probes] == ["r0"]
    _kept, keyed, _ = select(go_specs(), ByRequest("ret.r0", hist=True))
    assert [k.arg.name for k in keyed.probes] == ["r0"]
    _kept, keyed, _ = select(go_specs(), ByRequest("name"))
    assert [k.arg.kind for k in keyed.probes] == [ArgKind.PTRLEN_STR]


def test_an_unknown_argument_lists_the_names_each_probe_offers() -> None:
    with pytest.raises(UsageError) as e:
        select(entry_specs() + usdt_specs(), ByRequest("nope"))
    msg = str(e.value)
    assert "no traced probe has an argument 'nope'" in msg
    assert "demo_greet: name, n, data, type, ratio, ok, handle, seventh, inner" in msg
    assert "hotspot:class__loaded: name, loader, shared" in msg
    with pytest.raises(UsageError, match=r"main.Greet \(return\)|main.Greet: ret"):
        select(go_specs(), ByRequest("ret.err"))


def test_hist_of_a_string_or_an_unreadable_value_is_refused() -> None:
    with pytest.raises(UsageError, match="name of demo_greet is a string, and --hist=ARG needs an integer"):
        select(entry_specs(), ByRequest("name", hist=True))
    with pytest.raises(UsageError, match="ratio of demo_greet cannot be read in the kernel: floating-point"):
        select(entry_specs(), ByRequest("ratio"))


def test_uncertain_values_are_said_to_be() -> None:
    spec = ProbeSpec(
        "f", "/m", 0x10, ProbeKind.ENTRY, args=(ArgSpec("arg1", ArgKind.S64, Reg("rsi"), uncertain="no DWARF"),)
    )
    _kept, _keyed, notes = select([spec], ByRequest("arg1"))
    assert notes == ["arg1 of f is uncertain: no DWARF"]


# --- the C ---------------------------------------------------------------------------------------------


GOLDEN_CASES = {
    "count_by_string": (entry_specs, ByRequest("name")),
    "count_by_ptrlen": (usdt_specs, ByRequest("name")),
    "hist_arg_signed": (usdt_specs, ByRequest("arg2", hist=True)),
    "hist_ret": (return_specs, ByRequest("ret", hist=True)),
    "count_by_go_string": (go_specs, ByRequest("name")),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden(name: str) -> None:
    make, request = GOLDEN_CASES[name]
    prog, _keyed, _ = program(make(), request, fsbase_offset=0x1B48)
    check_golden(name, prog.source)


@pytest.mark.skipif(GCC is None, reason="gcc not installed")
@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_programs_are_valid_c(tmp_path: Path, name: str) -> None:
    make, request = GOLDEN_CASES[name]
    prog, _keyed, _ = program(make(), request, fsbase_offset=0x1B48)
    _gcc_check(tmp_path, prog)


def test_key_layout_and_limits() -> None:
    prog, keyed, _ = program(entry_specs(), ByRequest("name"))
    assert keyed.capacity == 32 and keyed.key_format == "<IIQ32s" and keyed.entries == 10240
    assert "char s[32];" in prog.source and "by_counts, 10240," in prog.source
    long = [replace(entry_specs()[0], args=(ArgSpec("name", ArgKind.CSTR, Reg("rdi"), max_len=4096),))]
    _prog, keyed, _ = program(long, ByRequest("name"))
    assert keyed.capacity == 4096 and keyed.entries == (8 << 20) // 4112  # bounded memory
    # integers need no scratch slot: the key is on the stack
    prog, keyed, _ = program(usdt_specs(), ByRequest("arg2", hist=True))
    assert keyed.key_format == "<IIQ" and "by_scratch" not in prog.source


def test_names_never_reach_the_c() -> None:
    evil = 'x"); system("rm -rf /"); //'
    spec = ProbeSpec(evil, "/m", 0x10, ProbeKind.ENTRY, args=(ArgSpec(evil, ArgKind.CSTR, Reg("rdi")),))
    prog, _keyed, _ = program([spec], ByRequest(evil))
    assert "system" not in prog.source and "rm -rf" not in prog.source


def test_keyed_needs_count() -> None:
    _kept, keyed, _ = select(entry_specs(), ByRequest("n"))
    with pytest.raises(CodegenError):
        render(entry_specs(), Options(aggregate=Aggregate.HIST, keyed=keyed))


def test_programs_without_the_options_are_unchanged() -> None:
    plain = render(entry_specs(), Options(aggregate=Aggregate.COUNT)).source
    assert "by_" not in plain
    assert plain == (Path(__file__).parent / "golden" / "count.bpf.c").read_text(encoding="utf-8")


# --- reading keys back ------------------------------------------------------------------------------------


def test_value_slots_cover_every_64_bit_value_once() -> None:
    assert value_slot_range(0) == (0, 0)
    assert value_slot_range(1) == (1, 1)
    assert value_slot_range(2) == (2, 3)
    assert value_slot_range(64) == (1 << 63, (1 << 64) - 1)
    assert value_slot_range(65) == (-1, -1)
    assert value_slot_range(66) == (-3, -2)
    assert value_slot_range(128) == (-((1 << 64) - 1), -(1 << 63))
    ranges = sorted(value_slot_range(s) for s in range(129))
    for (_lo, hi), (lo2, _hi2) in itertools.pairwise(ranges):
        assert lo2 == hi + 1


def _key(fmt: str, probe: int, flags: int, num: int, s: bytes = b"") -> bytes:
    return struct.pack(fmt, probe, flags, num, *([s] if s else []))


def test_collect_decodes_strings_and_merges_sites() -> None:
    specs = [*usdt_specs(), usdt_specs()[1]]  # a probe with two sites: one table
    kept, keyed, _ = select(specs, ByRequest("name"))
    fmt = keyed.key_format
    cap = keyed.capacity
    counts = {
        _key(fmt, 1, 0, 16, b"java/lang/Object".ljust(cap, b"\0")): 3,
        _key(fmt, 2, 0, 16, b"java/lang/Object".ljust(cap, b"\0")): 2,
        _key(fmt, 1, STR_TRUNCATED, cap, b"L" * cap): 4,
        _key(fmt, 1, STR_NULL, 0, b"\0" * cap): 1,
        _key(fmt, 2, STR_FAULT, 0, b"\0" * cap): 1,
        _key(fmt, 1, 0, 2, b"\xff\x1b".ljust(cap, b"\0")): 1,
    }
    lost = {struct.pack("<I", 1): 7, struct.pack("<I", 0): 0}
    (table,) = collect(keyed, kept, counts, lost, label)
    assert table.probe == "hotspot:class__loaded" and table.lost == 7 and table.counted == 12
    got = {(str(v) if v is not None else None, cut): n for (v, cut), n in table.values.items()}
    assert got == {
        ("java/lang/Object", False): 5,
        ("L" * cap, True): 4,
        (None, False): 1,
        ("<unreadable>", False): 1,
        ("\udcff\x1b", False): 1,
    }
    out = io.StringIO()
    write_text(out, [table])
    text = out.getvalue()
    assert '"LLLL' in text and '"…' in text and "\x1b" not in text and "\\udcff\\u001b" in text
    assert "7  not counted: more than 10240 distinct values (map full)" in text


def test_collect_refines_strings_as_events_show_them() -> None:
    kept, keyed, _ = select(usdt_specs(), ByRequest("name"))
    counts = {_key(keyed.key_format, 1, 0, 3, b"a/b".ljust(keyed.capacity, b"\0")): 2}

    def refine(ev: Event) -> Event:
        return replace(ev, args={k: str(v).replace("/", ".") for k, v in ev.args.items()})

    (table,) = collect(keyed, kept, counts, {}, label, refine)
    ((value, cut),) = table.values
    assert value == "a.b" and isinstance(value, StringValue) and not cut


def test_collect_integers_with_labels_and_hist_slots() -> None:
    kept, keyed, _ = select(entry_specs(), ByRequest("type"))
    counts = {_key("<IIQ", 0, 0, 12): 5, _key("<IIQ", 0, 0, 0xFFFFFFFF): 1}
    (table,) = collect(keyed, kept, counts, {}, label)
    assert table.values == {("tcp", False): 5, (-1, False): 1}
    kept, keyed, _ = select(usdt_specs(), ByRequest("arg2", hist=True))
    (table,) = collect(keyed, kept, {_key("<IIQ", 0, 0, 0): 2, _key("<IIQ", 0, 0, 66): 3}, {}, label)
    assert table.buckets == {0: 2, 66: 3}
    (line,) = json_lines([table], json.dumps)
    obj = json.loads(line)
    assert obj["kind"] == "hist" and obj["unit"] == "value" and obj["arg"] == "arg2" and obj["count"] == 5
    assert obj["buckets"] == [{"low": -3, "high": -2, "count": 3}, {"low": 0, "high": 0, "count": 2}]


def test_top_n_then_the_rest_in_one_line() -> None:
    t = KeyedTable("f", "url", False, 10240)
    for i in range(TOP_N + 5):
        s = StringValue(f"u{i:02d}")
        t.values[(s, False)] = 100 - i
    lines = [json.loads(x) for x in json_lines([t], json.dumps)]
    assert [x["kind"] for x in lines] == ["by"] * TOP_N + ["by_rest"]
    assert lines[0] == {"kind": "by", "probe": "f", "arg": "url", "value": "u00", "count": 100}
    assert lines[-1] == {
        "kind": "by_rest", "probe": "f", "arg": "url", "values": 5,
        "count": sum(100 - i for i in range(TOP_N, TOP_N + 5)), "lost": 0,
    }  # fmt: skip
    out = io.StringIO()
    write_text(out, [t])
    text = out.getvalue()
    assert f"f by url: {t.counted} calls, top {TOP_N} of {TOP_N + 5} values" in text
    assert "(5 other values)" in text and '"u19"' in text and '"u20"' not in text


def test_reporters_print_the_tables_with_the_counts() -> None:
    t = KeyedTable("f", "n", True, 10240, buckets={3: 4})
    summary = Summary(events=4, counts={("f", 1): 4}, keyed=[t])
    out = io.StringIO()
    TextReporter(out, err=io.StringIO(), color=False).finished(summary)
    assert "f by n: 4 calls, log2 histogram" in out.getvalue() and "4 .. 7" in out.getvalue()
    out = io.StringIO()
    JsonReporter(out, err=io.StringIO()).finished(summary)
    kinds = [json.loads(x)["kind"] for x in out.getvalue().splitlines()]
    assert kinds == ["count", "hist", "summary"]


def _go_like(ev: Event) -> Event:
    """A runtime that shows `x` as a float from its bits and folds `e` (a type word) into a text."""
    args = dict(ev.args)
    if isinstance(args.get("x"), int):
        args["x"] = struct.unpack("<d", int(args["x"]).to_bytes(8, "little"))[0]  # type: ignore[call-overload]
    if isinstance(args.get("e"), int):
        args["e"] = f"*T({args['e']:#x})"
    return replace(ev, args=args)


def test_values_the_runtime_rewrites() -> None:
    spec = ProbeSpec(
        "main.F", "/m", 0x10, ProbeKind.ENTRY,
        args=(ArgSpec("x", ArgKind.U64, Reg("rax")), ArgSpec("e", ArgKind.U64, Reg("rbx"))),
    )  # fmt: skip
    with pytest.raises(UsageError, match=r"x of main\.F is a floating-point value; --hist=ARG takes integers"):
        select([spec], ByRequest("x", hist=True), _go_like)
    with pytest.raises(UsageError, match=r"e of main\.F is part of a value assembled from several captures"):
        select([spec], ByRequest("e"), _go_like)
    kept, keyed, _ = select([spec], ByRequest("x"), _go_like)
    bits = struct.unpack("<Q", struct.pack("<d", 2.5))[0]
    (table,) = collect(keyed, kept, {_key("<IIQ", 0, 0, bits): 4}, {}, label, _go_like)
    assert table.values == {(2.5, False): 4}


def test_ret_on_probes_without_returns() -> None:
    with pytest.raises(UsageError, match="none of the traced probes has a return value"):
        select(usdt_specs(), ByRequest("ret"))
