"""Candidates for shell completion: the probe names a target offers, and a runtime's catalogue.

No shell or click here (utrace/cli/completion.py speaks the shells' protocol); this module answers
"which names start with what the user typed". Names come from the same symbol index as `utrace list`
(cached by build-id, so a second TAB on node reads one file), the pclntab of a Go program (see
`elf.go.gosyms`), and `.note.stapsdt`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from utrace.elf.demangle import base_name, display_name
from utrace.model import Target

if TYPE_CHECKING:
    from utrace.runtimes.base import Catalogue

LIMIT = 100  # candidates per TAB: bash asks "Display all N possibilities?" past 100

# Where a name can be cut to group candidates: C++ scopes, Go packages and methods, C prefixes.
_SEPARATORS = re.compile(r"::|[._/:<(\[]")


def probe_name(demangled: str) -> str:
    """The name to type for a function: a C++ name without its parameter list (which matches every
    overload) and without a template's leading return type; other names as they are."""
    paren = demangled.find("(")
    if paren > 0:
        head = demangled[:paren]
        if " " not in head and "<" not in head and not head.endswith("operator") and ")::" not in demangled:
            # most names: no return type, no template arguments, no `(anonymous namespace)::` or local
            # scope (`f(int)::Local::g`) before the parameters
            return head
    return base_name(display_name(demangled))


def target_names(target: Target, prefix: str = "", *, functions: bool = True, usdt: bool = True) -> set[str]:
    """The probe names of the target's modules that start with `prefix`: function names (demangled, cut
    as `probe_name`, and raw when they differ) and USDT probes as `provider:name`. Modules that cannot be
    read are skipped.
    """
    from utrace.elf.index import function_table
    from utrace.elf.usdt_notes import usdt_probes_for
    from utrace.errors import ElfError

    names: set[str] = set()
    for module in target.modules:
        try:
            if functions:
                table = function_table(module.path)
                entries = set(table.entries())
                raws = table.raws
                names.update(raws[i] for i in entries if raws[i].startswith(prefix))
                # A demangled name may lose a leading return type: test the substring first (a C-speed
                # scan of ~100k names for node), cut only the few that contain it.
                demangled = table.names
                for i in entries:
                    if prefix in demangled[i] and demangled[i] != raws[i]:
                        name = probe_name(demangled[i])
                        if name.startswith(prefix):
                            names.add(name)
            if usdt:
                names.update(p.full_name for p in usdt_probes_for(module.path) if p.full_name.startswith(prefix))
        except ElfError:
            continue
    names.discard("")
    return names


def narrow(names: Iterable[str], incomplete: str, limit: int = LIMIT) -> list[str]:
    """The names that start with `incomplete`, at most `limit` of them.

    When more match, they are grouped by their next part (`uv_fs_`, `node::fs::`, `net/http.`), and
    while there is only one group the prefix grows, so the shell can always extend the word: with one
    candidate it would take it as a finished word.
    """
    # a name with control bytes, escape sequences or stray bytes is never handed to the shell, which
    # would write it to the terminal raw; such a name could not be typed as a probe anyway
    matching = sorted({n for n in names if n.startswith(incomplete) and n.isprintable()})
    prefix = incomplete
    while len(matching) > limit:
        groups: set[str] = set()
        for n in matching:
            m = _SEPARATORS.search(n, len(prefix) + 1)
            groups.add(n[: m.end()] if m else n)
        if len(groups) == 1:
            (only,) = groups
            if only == prefix or only in matching:
                break
            prefix = only
            matching = [n for n in matching if n.startswith(prefix)]
            continue
        return sorted(groups)[:limit]
    return matching[:limit]


def catalogue_names(catalogue: Catalogue, incomplete: str) -> list[str]:
    """A runtime's catalogue (`utrace java`: class-load, gc ...), then its other names once typed."""
    if not incomplete:
        return sorted(catalogue.names)
    return narrow([*catalogue.names, *catalogue.more], incomplete)
