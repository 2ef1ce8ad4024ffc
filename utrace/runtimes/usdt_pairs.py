"""USDT probes that come in begin/end pairs, paired by `--ret` (latency on the end event).

A begin named `X__start` ends at `X__done` or `X__end`, `X__entry` at `X__return`, `X__begin` at
`X__end` (PostgreSQL, Python, Ruby, MySQL, HotSpot follow this), when the module has that end; the
provider catalogue adds pairs named otherwise (`usdt_catalogue.PAIRS`). The BPF side pairs an end with
the latest open begin of the same pair on the same thread (nesting depth: recursion pairs right).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from utrace.model import ProbeSpec, UsdtProbe
from utrace.runtimes.usdt_catalogue import PAIRS, UNPAIRED

NOT_PAIRED = "is not paired with its end"  # in the notes `refused` writes
SUFFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("__start", ("__done", "__end")),
    ("__entry", ("__return",)),
    ("__begin", ("__end",)),
)


def ends_of(provider: str, name: str, names: Iterable[str]) -> tuple[str, ...]:
    """The end probes (present in `names`) of the begin probe `provider:name`; () if it is none."""
    if (provider, name) in UNPAIRED:
        return ()
    have = set(names)
    listed = PAIRS.get((provider, name))
    if listed is not None:
        return tuple(n for n in listed if n in have)
    for begin, ends in SUFFIXES:
        if name.endswith(begin):
            stem = name[: -len(begin)]
            return tuple(stem + e for e in ends if stem + e in have)
    return ()


def pairs_in(probes: Sequence[UsdtProbe]) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(module, provider, name) -> (pair key, "begin" or "end") for every probe of a pair."""
    names: dict[tuple[str, str], set[str]] = {}
    for p in probes:
        names.setdefault((p.module, p.provider), set()).add(p.name)
    out: dict[tuple[str, str, str], tuple[str, str]] = {}
    for (module, provider), have in names.items():
        for name in sorted(have):
            ends = ends_of(provider, name, have)
            if not ends:
                continue
            key = f"usdt:{module}:{provider}:{name}"
            out[(module, provider, name)] = (key, "begin")
            for end in ends:
                out.setdefault((module, provider, end), (key, "end"))
    return out


def refused(probes: Sequence[UsdtProbe]) -> list[str]:
    """Why some of `probes` are not paired although their names say begin/end (catalogue UNPAIRED)."""
    out: dict[str, None] = {}
    for p in probes:
        for (provider, begin), why in UNPAIRED.items():
            if p.provider != provider:
                continue
            ends = [begin[: -len(b)] + e for b, es in SUFFIXES if begin.endswith(b) for e in es]
            if p.name == begin or p.name in ends:
                out[f"{provider}:{begin} {NOT_PAIRED}: {why}"] = None
    return list(out)


def partners(chosen: Sequence[UsdtProbe], every: Sequence[UsdtProbe]) -> list[UsdtProbe]:
    """Sites of `every` not in `chosen` that pair with a chosen probe (its begin or its ends)."""
    pairs = pairs_in(every)
    keys = {pairs[(p.module, p.provider, p.name)][0] for p in chosen if (p.module, p.provider, p.name) in pairs}
    have = {(p.module, p.offset) for p in chosen}
    return [
        p
        for p in every
        if (p.module, p.offset) not in have
        and (p.module, p.provider, p.name) in pairs
        and pairs[(p.module, p.provider, p.name)][0] in keys
    ]


def paired(spec: ProbeSpec, probe: UsdtProbe, pairs: dict[tuple[str, str, str], tuple[str, str]]) -> ProbeSpec:
    """`spec` (of `probe`) with its pair key (from `pairs_in`), and latency on an end; unchanged when it
    pairs with nothing."""
    got = pairs.get((probe.module, probe.provider, probe.name))
    if got is None:
        return spec
    key, role = got
    return replace(spec, pair=key, latency=role == "end")
