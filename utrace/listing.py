"""`utrace list`: which functions and USDT probes a target offers, filtered by a glob."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from utrace.elf.demangle import display_name
from utrace.elf.index import symbols_for
from utrace.elf.symbols import SymbolTable
from utrace.elf.usdt import usdt_probes_for
from utrace.model import Target, UsdtProbe


@dataclass(slots=True)
class ModuleFunctions:
    display: str
    table: SymbolTable
    indices: list[int]


@dataclass(slots=True)
class Listing:
    functions: list[ModuleFunctions] = field(default_factory=list)
    probes: list[tuple[str, UsdtProbe]] = field(default_factory=list)

    @property
    def function_count(self) -> int:
        return sum(len(m.indices) for m in self.functions)


def name_matcher(pattern: str | None) -> Callable[[str], bool] | None:
    """A predicate for a glob over names; None when everything matches.

    Without "(" in the pattern, a demangled C++ name also matches with its parameter list ignored, so
    `node::TCPWrap::Listen` finds `node::TCPWrap::Listen(v8::FunctionCallbackInfo<v8::Value> const&)`
    and `demo::Shape::area` finds every overload; a template's leading return type may be left out.
    """
    if pattern is None or pattern in ("*", ""):
        return None
    body = fnmatch.translate(pattern)
    if body.endswith(r"\Z"):
        body = body[:-2]
    if "(" not in pattern:
        body += r"(?:\(.*)?"
    rx = re.compile(body + r"\Z")

    def matches(s: str) -> bool:
        if rx.match(s):
            return True
        # Demangled function templates carry their return type first ("int demo::twice<int>(int)"):
        # a pattern may leave it out. Only names with a space before their parameters can have one.
        paren = s.find("(")
        return paren > 0 and " " in s[:paren] and rx.match(display_name(s)) is not None

    return matches


def match_functions(table: SymbolTable, pattern: str | None) -> list[int]:
    """Indices of function entries (never `.cold` parts) whose demangled or raw name matches."""
    entries = table.entries()
    m = name_matcher(pattern)
    if m is None:
        return list(entries)
    names, raws = table.names, table.raws
    return [i for i in entries if m(names[i]) or (raws[i] is not names[i] and m(raws[i]))]


def match_probes(probes: list[UsdtProbe], pattern: str | None) -> list[UsdtProbe]:
    m = name_matcher(pattern)
    if m is None:
        return probes
    return [p for p in probes if m(p.full_name) or m(p.name)]


def list_target(
    target: Target,
    pattern: str | None,
    *,
    functions: bool = True,
    usdt: bool = True,
    on_cold: Callable[[str], None] | None = None,
) -> Listing:
    """Collect the matching functions and USDT probes of every module of `target`.

    Raises:
        ElfError: the main executable is not a readable ELF file. Other modules of a process that cannot
            be read are skipped (a library may be replaced on disk while mapped).
    """
    from utrace.errors import ElfError

    listing = Listing()
    for n, module in enumerate(target.modules):
        try:
            if functions:
                table = symbols_for(module.path, on_cold=on_cold)
                if len(table) == 0:
                    # a stripped Go binary still names every function in its pclntab
                    from utrace.elf.gosyms import go_function_table

                    table = go_function_table(module.path) or table
                listing.functions.append(ModuleFunctions(module.display, table, match_functions(table, pattern)))
            if usdt:
                for p in match_probes(usdt_probes_for(module.path), pattern):
                    listing.probes.append((module.display, p))
        except ElfError:
            if n == 0:
                raise
    return listing
