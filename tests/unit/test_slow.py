"""--slower-than's duration parsing and probe selection, and the USDT begin/end pairing rules."""

from __future__ import annotations

import pytest

from utrace.app.timed import timed_specs
from utrace.errors import UsageError
from utrace.model import ProbeKind, ProbeSpec, UsdtProbe
from utrace.probes.slow import DurationError, parse_duration
from utrace.runtimes import usdt_pairs
from utrace.runtimes.base import Plan
from utrace.runtimes.jvm import kernel_pairs


@pytest.mark.parametrize(
    ("text", "ns"),
    [("10ms", 10_000_000), ("1.5s", 1_500_000_000), ("250us", 250_000), ("250µs", 250_000), ("800ns", 800),
     ("0.5ms", 500_000), (" 2s ", 2_000_000_000), ("1.0000000001s", 1_000_000_000)],
)  # fmt: skip
def test_durations(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "says"),
    [("10", "give a unit"), ("1.5", "give a unit"), ("5xs", "not a duration"), ("-1ms", "not a duration"),
     ("0ms", "more than 0"), ("0.1ns", "more than 0"), ("ms", "not a duration"), ("", "not a duration"),
     ("10 ms", "not a duration"), ("1e3ms", "not a duration"), ("99999999999s", "too long")],
)  # fmt: skip
def test_bad_durations(text: str, says: str) -> None:
    with pytest.raises(DurationError, match=says) as e:
        parse_duration(text)
    assert "\n" not in str(e.value)


def _usdt(name: str, offset: int, provider: str = "postgresql", module: str = "/pg") -> UsdtProbe:
    return UsdtProbe(provider, name, offset, offset, offset, None, None, (), module)


PG = [
    _usdt(n, i * 16)
    for i, n in enumerate(
        ["query__start", "query__done", "transaction__start", "transaction__commit", "transaction__abort",
         "buffer__checkpoint__sync__start", "lwlock__acquire", "sort__start", "sort__done"]
    )
]  # fmt: skip


def test_pairs_by_name_and_catalogue() -> None:
    pairs = usdt_pairs.pairs_in(PG)
    role = {name: pairs.get(("/pg", "postgresql", name)) for _m, _p, name in ((0, 0, p.name) for p in PG)}
    assert role["query__start"] == ("usdt:/pg:postgresql:query__start", "begin")
    assert role["query__done"] == ("usdt:/pg:postgresql:query__start", "end")
    # two ends for one begin, from the catalogue
    assert (
        role["transaction__commit"] == role["transaction__abort"] == ("usdt:/pg:postgresql:transaction__start", "end")
    )
    # a begin without its end in the file, and a probe that is no begin
    assert role["buffer__checkpoint__sync__start"] is None and role["lwlock__acquire"] is None


def test_partners_of_a_begin_or_an_end() -> None:
    start = [p for p in PG if p.name == "query__start"]
    assert [p.name for p in usdt_pairs.partners(start, PG)] == ["query__done"]
    commit = [p for p in PG if p.name == "transaction__commit"]
    assert sorted(p.name for p in usdt_pairs.partners(commit, PG)) == ["transaction__abort", "transaction__start"]


def test_python_function_probes_are_never_paired() -> None:
    py = [_usdt("function__entry", 0, "python", "/py"), _usdt("function__return", 16, "python", "/py")]
    assert usdt_pairs.pairs_in(py) == {}
    assert any("python/cpython#98894" in n for n in usdt_pairs.refused(py))


def _spec(name: str, kind: ProbeKind, pair: str = "", latency: bool = False) -> ProbeSpec:
    return ProbeSpec(name, "/m", 0, kind, pair=pair, latency=latency)


def test_timed_specs_refuse_a_probe_without_return() -> None:
    plan = Plan(specs=[_spec("f", ProbeKind.ENTRY, "f"), _spec("f", ProbeKind.RETURN, "f", True),
                       _spec("p:tick", ProbeKind.USDT)])  # fmt: skip
    with pytest.raises(UsageError, match="p:tick"):
        timed_specs(plan)


def test_timed_specs_leave_out_inlined_copies_of_a_timed_function() -> None:
    specs = [_spec("main.F", ProbeKind.ENTRY, "main.F"), _spec("main.F", ProbeKind.EXIT, "main.F", True),
             _spec("main.F", ProbeKind.ENTRY)]  # fmt: skip
    plan = Plan(specs=specs)
    assert timed_specs(plan) == specs[:2]
    assert any("inlined copies of main.F" in n for n in plan.notes)


def test_java_pairs_for_the_kernel_keep_pool_gc_unpaired() -> None:
    names = ["gc__begin", "gc__end", "mem__pool__gc__begin", "mem__pool__gc__end", "method__entry", "class__loaded"]
    specs = kernel_pairs([_spec(f"hotspot:{n}", ProbeKind.USDT) for n in names])
    got = {s.name: (s.pair, s.latency) for s in specs}
    assert got["hotspot:gc__begin"] == ("hotspot:gc__begin", False)
    assert got["hotspot:gc__end"] == ("hotspot:gc__begin", True)
    # per-pool begins come in a row and end in the same order: not pairable by nesting
    assert got["hotspot:mem__pool__gc__begin"] == got["hotspot:mem__pool__gc__end"] == ("", False)
    # method__entry without method__return in the program, class__loaded without an end
    assert got["hotspot:method__entry"] == got["hotspot:class__loaded"] == ("", False)
