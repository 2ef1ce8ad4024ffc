"""Does a C++ function take `this` in rdi? Decided from evidence, never from the spelling of a name.

A mangled name does not say whether `geo::canvas::draw(int)` belongs to a class `geo::canvas` or a
namespace `geo::canvas`, nor whether a member is static. In order:

1. a const/volatile/ref qualifier (`f() const`): only non-static members have one;
2. constructors and destructors: members;
3. a scope the language defines as a namespace (`std`, `__gnu_cxx`...): not a member;
4. DWARF, when the file has it for that function (`utrace.elf.cxxdwarf`): exact, static members too;
5. evidence that the scope is a class: a vtable or typeinfo for it, a constructor or destructor of
   it, or the scope used as a parameter type in another function's signature. A member function of a
   class is taken as non-static (the mangled name cannot tell a static one; DWARF can);
6. otherwise unknown: the arguments are shown uncertain, with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from utrace.elf.cxxdwarf import cxx_members
from utrace.elf.demangle import base_name, display_name, operator_at
from utrace.elf.symbols import class_names
from utrace.errors import ElfError
from utrace.model import Symbol
from utrace.runtimes.base import ModuleSymbols
from utrace.runtimes.signature import param_list

# Namespaces of the C++ standard library and its ABI (the standard says these are namespaces).
KNOWN_NAMESPACES = frozenset(
    {
        "std",
        "std::__cxx11",
        "std::__detail",
        "std::__exception_ptr",
        "std::chrono",
        "std::filesystem",
        "std::__cxx11::filesystem",
        "std::pmr",
        "std::ranges",
        "std::this_thread",
        "std::literals",
        "__gnu_cxx",
        "__cxxabiv1",
    }
)
_QUALIFIERS = re.compile(r"^(?:const|volatile|&|&&)\b|^&")


@dataclass(frozen=True, slots=True)
class Membership:
    """`member`: True (this in rdi), False (no this), None (unknown); `why`: the evidence or, when
    unknown, the reason shown with the arguments."""

    member: bool | None
    why: str


def split_scope(name: str) -> tuple[str, str]:
    """`ns::cls<int>::f<long>` -> ("ns::cls<int>", "f<long>"): split at the last `::` outside brackets
    and operator names (`ns::S::operator std::string` -> ("ns::S", "operator std::string"))."""
    depth = 0
    last = -1
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "o" and (end := operator_at(name, i)) > 0:
            i = end
            continue
        if ch in "<([{":
            depth += 1
        elif ch in ">)]}":
            depth -= 1
        elif ch == ":" and depth == 0 and name.startswith("::", i):
            last = i
            i += 2
            continue
        i += 1
    if last < 0:
        return "", name
    return name[:last], name[last + 2 :]


def function_scope(demangled: str) -> tuple[str, str, str]:
    """(name without parameters, scope, last component) of a demangled function name:
    `geo::canvas::draw(int)` -> ("geo::canvas::draw", "geo::canvas", "draw"), operators included
    (`demo::Shape::operator<(demo::Shape const&)` -> scope "demo::Shape")."""
    base = base_name(display_name(demangled))
    scope, last = split_scope(base)
    return base, scope, last


def mangled_scope(raw: str) -> str | None:
    """`_ZN4node2fs9AfterStatEP7uv_fs_s` -> `_ZN4node2fs`: the mangled prefix naming a function's scope,
    for plain nested names (source names only: no templates, substitutions or special names)."""
    if not raw.startswith("_ZN"):
        return None
    pos = 3
    while pos < len(raw) and raw[pos] in "rVKRO":
        pos += 1
    if pos != 3:
        return None  # a qualified member function: never asked about
    ends: list[int] = []
    while pos < len(raw) and (raw[pos].isdigit() or (raw[pos] == "L" and raw[pos + 1 : pos + 2].isdigit())):
        if raw[pos] == "L":  # internal linkage (`static`): the function's own name
            pos += 1
        start = pos
        while pos < len(raw) and raw[pos].isdigit():
            pos += 1
        pos += int(raw[start:pos])
        if pos > len(raw):
            return None
        ends.append(pos)
    if len(ends) < 2 or pos >= len(raw) or raw[pos] != "E":
        return None
    return raw[: ends[-2]]


def internal_linkage(raw: str) -> bool:
    """Whether a mangled function name has internal linkage (`_ZN4node2fsL10ExistsSync...`)."""
    prefix = mangled_scope(raw)
    return prefix is not None and raw.startswith("L", len(prefix))


def _strip_template(component: str) -> str:
    cut = component.find("<")
    return component[:cut] if cut > 0 else component


@dataclass(slots=True)
class MembershipOracle:
    """Answers for the functions of the modules of one trace (each file read at most once)."""

    modules: list[ModuleSymbols]
    _dwarf: dict[str, dict[int, bool] | None] = field(default_factory=dict)
    _asked: dict[str, set[int]] = field(default_factory=dict)
    _classes: dict[str, set[str]] = field(default_factory=dict)
    _joined: dict[str, str] = field(default_factory=dict)
    _scopes: dict[tuple[str, str], str] = field(default_factory=dict)

    def prepare_dwarf(self, symbols: list[Symbol]) -> None:
        """Ask DWARF about all the functions of a trace at once (one pass per file; only the compile
        units that hold them are read). A file without DWARF is not opened again."""
        by_module: dict[str, list[tuple[int, str]]] = {}
        for s in symbols:
            known = self._dwarf.get(s.module, {})
            asked = self._asked.setdefault(s.module, set())
            if s.name != s.raw and known is not None and s.address not in asked:
                asked.add(s.address)
                by_module.setdefault(s.module, []).append((s.address, s.raw))
        for module, funcs in by_module.items():
            try:
                found = cxx_members(module, funcs)
            except ElfError:
                found = None
            self._dwarf[module] = None if found is None else {**(self._dwarf.get(module) or {}), **found}

    def decide(self, sym: Symbol) -> Membership:
        pl = param_list(sym.name)
        if pl is None:
            return Membership(False, "not a C++ function")
        if _QUALIFIERS.match(pl[1]):
            return Membership(True, f"{pl[1]}-qualified")
        base, scope, last = function_scope(sym.name)
        if not scope:
            return Membership(False, "not in a class or namespace")
        scope_last = _strip_template(split_scope(scope)[1])
        if "{lambda" in scope_last:
            return Membership(True, "a lambda's call operator")
        if last == scope_last or last == "~" + scope_last:
            return Membership(True, "a constructor or destructor")
        if scope in KNOWN_NAMESPACES or scope.endswith("(anonymous namespace)"):
            return Membership(False, f"{scope} is a namespace")
        self.prepare_dwarf([sym])  # nothing to do when the plan already asked
        dwarf = self._dwarf.get(sym.module)
        if dwarf is not None and sym.address in dwarf:
            m = dwarf[sym.address]
            return Membership(m, "DWARF: " + ("non-static member" if m else "not a non-static member"))
        evidence = self._class_evidence(sym.module, scope, scope_last)
        if evidence:
            return Membership(True, f"{scope} is a class ({evidence})")
        if self._has_internal_function(sym):
            return Membership(False, f"{scope} is a namespace (it holds a function with internal linkage, `static`)")
        where = "no DWARF" if dwarf is None else "DWARF does not describe it"
        return Membership(None, f"no evidence whether {base} is a member function; {where}")

    def _class_evidence(self, module: str, scope: str, scope_last: str) -> str:
        key = (module, scope)
        if key in self._scopes:
            return self._scopes[key]
        if module not in self._classes:
            try:
                self._classes[module] = class_names(module)
            except ElfError:
                self._classes[module] = set()
        found = ""
        if scope in self._classes[module]:
            found = f"vtable or typeinfo for {scope}"
        else:
            text = self._names_text(module)
            esc = re.escape(scope)
            ctor = re.search(rf"^{esc}::~?{re.escape(scope_last)}(?:<[^\n]*>)?\(", text, re.M)
            if ctor:
                found = "it has a constructor or destructor"
            elif re.search(rf"[(<,] ?{esc}(?=[ &*),>])", text):
                found = f"{scope} is a parameter type"
        self._scopes[key] = found
        return found

    def _has_internal_function(self, sym: Symbol) -> bool:
        """Whether the function's scope holds a `static` (internal linkage) function: the Itanium ABI
        marks those with `L` (`_ZN4node2fsL9AfterStatEP7uv_fs_s`), and only namespace-scope entities
        can have internal linkage, never class members."""
        prefix = mangled_scope(sym.raw)
        if prefix is None:
            return False
        if internal_linkage(sym.raw):
            return True
        return ("\n" + prefix + "L") in self._raws_text(sym.module)

    def _raws_text(self, module: str) -> str:
        key = "raw:" + module
        if key not in self._joined:
            raws: list[str] = []
            for ms in self.modules:
                if ms.path == module:
                    raws = [r for r in ms.table.raws if r.startswith("_ZN")]
            self._joined[key] = "\n" + "\n".join(raws)
        return self._joined[key]

    def _names_text(self, module: str) -> str:
        if module not in self._joined:
            names: list[str] = []
            for ms in self.modules:
                if ms.path == module:
                    names = [n for n in ms.table.names if "::" in n]
            self._joined[module] = "\n".join(names)
        return self._joined[module]
