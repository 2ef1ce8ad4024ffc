"""`native`: any C, C++ or Rust ELF. Demangled or raw names and globs; SysV arguments."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import ClassVar

from utrace.elf.demangle import demangle_many
from utrace.elf.dynamic import needed_libraries
from utrace.elf.index import function_table
from utrace.elf.match import name_matcher, probe_not_found
from utrace.elf.symbols import imported_functions
from utrace.elf.usdt_notes import usdt_probes_for
from utrace.errors import ElfError, TargetError, UsageError
from utrace.model import ArgKind, ArgSpec, Filter, ProbeKind, ProbeSpec, Reg, Symbol, Target, UsdtProbe
from utrace.process.target import file_target, process_target, resolve_path
from utrace.runtimes.base import (
    CommandSpec,
    ModuleSymbols,
    Plan,
    TraceRequest,
    display_name,
    find_functions,
    load_modules,
    not_found,
)
from utrace.runtimes.cxxthis import MembershipOracle
from utrace.runtimes.signature import (
    SYSV_INT_ARGS,
    default_args,
    param_list,
    parse_user_probe,
    split_params,
    sysv_args,
)
from utrace.runtimes.usdt import catalogue_args, find_usdt, probe_spec, typed_args, usdt_args

MAX_PROBES = 512


def command_path(argv0: str) -> str:
    """The executable a launch command runs: argv[0] as a path, or found on PATH; for a script, the
    interpreter its `#!` line runs (`npm` -> `#!/usr/bin/env node` -> node on PATH)."""
    from utrace.process.launch import resolve_script

    if os.sep in argv0:
        return resolve_script(resolve_path(argv0))
    import shutil

    found = shutil.which(argv0)
    if not found:
        raise TargetError(f"{argv0}: command not found")
    return resolve_script(os.path.realpath(found))


def maps_file(target: Target, binary: str) -> bool:
    """Whether the process `target` maps the file `binary` names (the same inode), or a file at that
    path (one replaced on disk since: an upgrade; the process's own copy is the one to probe)."""
    try:
        want = os.stat(binary)
    except OSError:
        return True  # let the process's own modules be used; the name is reported missing elsewhere
    real = os.path.realpath(binary)
    if any(m.display == real for m in target.modules):
        return True
    for m in target.modules:
        try:
            st = os.stat(m.path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            return True
    return False


CLONE_KINDS = (".isra", ".constprop", ".part")


def clone_kind(sym: Symbol) -> str:
    """The GCC clone suffix (`.isra.0`, `.constprop.0`, `.part.0`) of a function whose calling convention
    the compiler changed (arguments dropped, split or passed in other registers), or ""."""
    return sym.clone if any(k in sym.clone for k in CLONE_KINDS) else ""


def clone_args(sym: Symbol) -> list[ArgSpec]:
    note = (
        f"GCC clone {sym.clone}: the compiler changed its calling convention, so the source signature does not "
        "say where its arguments are"
    )
    return [ArgSpec("args", ArgKind.UNAVAILABLE, note=note)]


def uncertain_args(params: list[str], why: str, max_len: int) -> list[ArgSpec]:
    """Raw registers for a C++ function nobody can say takes `this`: arg0.. as they are, each marked
    uncertain (with `this` the parameters start at arg1; without it, at arg0)."""
    known = [a for a in sysv_args(params, max_len=max_len) if a.kind is not ArgKind.UNAVAILABLE]
    count = min(len(SYSV_INT_ARGS), len(known) + 1)
    return [ArgSpec(f"arg{i}", ArgKind.PTR, Reg(SYSV_INT_ARGS[i]), uncertain=why) for i in range(count)]


def args_for(
    sym: Symbol, user_params: list[str] | None, max_len: int, oracle: MembershipOracle | None = None
) -> list[ArgSpec]:
    """Arguments from a user signature, else the demangled C++ signature, else arg0..arg5.

    A GCC clone is never decoded with its source signature; a C++ function whose `this` nobody can
    confirm gets its registers marked uncertain (see `utrace.runtimes.cxxthis`).
    """
    if clone_kind(sym):
        return clone_args(sym)
    if user_params is not None:
        return sysv_args(user_params, max_len=max_len)
    if sym.name != sym.raw:
        pl = param_list(sym.name)
        if pl is not None:
            params = split_params(pl[0])
            m = (oracle or MembershipOracle([])).decide(sym)
            if m.member is None:
                return uncertain_args(params, m.why, max_len)
            return sysv_args(params, this=m.member, max_len=max_len)
    return default_args()


RET_DEFAULT = ArgSpec("ret", ArgKind.S64, Reg("rax"))


def specs_for(
    symbols: list[Symbol],
    args_of: dict[int, list[ArgSpec]],
    *,
    ret: bool,
    filters_of: dict[int, tuple[Filter, ...]] | None = None,
) -> list[ProbeSpec]:
    specs: list[ProbeSpec] = []
    for n, sym in enumerate(symbols):
        label = display_name(sym.name)
        pair = f"{sym.module}:{sym.offset}"
        specs.append(
            ProbeSpec(
                name=label,
                module=sym.module,
                offset=sym.offset,
                kind=ProbeKind.ENTRY,
                args=tuple(args_of[n]),
                filters=(filters_of or {}).get(n, ()),
                pair=pair,
                address=sym.address,
            )
        )
        if ret:
            specs.append(
                ProbeSpec(
                    name=label,
                    module=sym.module,
                    offset=sym.offset,
                    kind=ProbeKind.RETURN,
                    ret=RET_DEFAULT,
                    latency=True,
                    pair=pair,
                    address=sym.address,
                )
            )
    return specs


class NativeRuntime:
    name: ClassVar[str] = "native"
    command: ClassVar[CommandSpec] = CommandSpec(
        summary="Trace functions of any C, C++ or Rust program.",
        examples=(
            "utrace native ./prog demo_add 'demo::Shape::area*'",
            "utrace native --pid 1234 'parse_*'",
            "utrace native demo_greet -- ./prog world",
            "utrace native ./prog 'my_func(const char *name, int n)'   # your own signature",
        ),
    )

    def target(self, request: TraceRequest) -> Target:
        if request.pid is not None:
            t = process_target(request.pid)
            if request.binary and not maps_file(t, request.binary):
                # a file the process does not run: what its descendants exec (--follow), probed by path
                return replace(file_target(request.binary), pid=t.pid, nspid=t.nspid)
            return t
        if request.binary:
            return file_target(request.binary)
        if request.command:
            return file_target(command_path(request.command[0]))
        raise UsageError("give a BINARY, --pid PID, or -- COMMAND")

    def resolve(
        self, modules: list[ModuleSymbols], expr: str, request: TraceRequest
    ) -> tuple[list[Symbol], list[str] | None]:
        """Symbols for one probe expression, and the user's signature if it carried one."""
        found = find_functions(modules, expr)
        if found:
            return found, None
        name, params = parse_user_probe(expr)
        if params is not None and name != expr:
            found = find_functions(modules, name)
            if found:
                return found, params
        return [], None

    def resolve_expr(
        self, modules: list[ModuleSymbols], expr: str, request: TraceRequest, plan: Plan
    ) -> tuple[list[Symbol], list[str] | None, tuple[Filter, ...]]:
        """Functions for one probe expression, the user's signature if any, and entry filters.

        A function the executable imports is looked for in the libraries it needs (or, for a process,
        in those it maps), and the plan says which library it was found in.

        Raises:
            NotFoundError: nothing matches (with the closest names).
        """
        found, params = self.resolve(modules, expr, request)
        exe = modules[0]
        if found and all(s.module != exe.path for s in found):
            self._note_imported(modules, found, plan)
        if not found:
            found, params = self._resolve_imported(exe, expr, request, plan)
        if not found:
            raise not_found(modules, expr, os.path.basename(modules[0].display))
        return found, params, ()

    def _note_imported(self, modules: list[ModuleSymbols], found: list[Symbol], plan: Plan) -> None:
        exe = modules[0]
        shown = {m.path: m.display for m in modules}
        try:
            imported = imported_functions(exe.path)
        except ElfError:
            return
        names = sorted({display_name(s.name) for s in found if s.raw.split("@", 1)[0] in imported})
        libs = sorted({shown.get(s.module, s.module) for s in found})
        if names:
            plan.notes.append(
                f"{', '.join(names)}: imported by {os.path.basename(exe.display)}, traced in {', '.join(libs)}"
            )

    def _resolve_imported(
        self, exe: ModuleSymbols, expr: str, request: TraceRequest, plan: Plan
    ) -> tuple[list[Symbol], list[str] | None]:
        """Definitions, in the libraries the executable needs, of the functions it imports that `expr`
        names (the first library in the dynamic linker's breadth-first order that defines each)."""
        name, params = parse_user_probe(expr)
        pattern = name if params is not None else expr
        try:
            imported = imported_functions(exe.path)
        except ElfError:
            return [], None
        matcher = name_matcher(pattern)
        raws = sorted(imported)
        shown = demangle_many(raws)
        wanted = {r for r, d in zip(raws, shown, strict=True) if matcher is None or matcher(d) or matcher(r)}
        if not wanted:
            return [], None
        found: list[Symbol] = []
        for lib in needed_closure(exe.path):
            try:
                table = function_table(lib)
            except ElfError:
                continue
            ms = ModuleSymbols(lib, lib, table)
            here = [s for s in find_functions([ms], pattern) if s.raw.split("@", 1)[0] in wanted]
            if not here:
                continue
            for s in here:
                wanted.discard(s.raw.split("@", 1)[0])
            found += here
            if not wanted:
                break
        if not found:
            return [], None
        libs = sorted({s.module for s in found})
        names = sorted({display_name(s.name) for s in found})
        who = os.path.basename(exe.display)
        note = f"{', '.join(names)}: imported by {who}, traced in {', '.join(libs)}"
        if request.pid is None and not request.command:
            # a probe on the library fires in every process that maps it: only those running the file count
            plan.only_exe = exe.path
            note += f" (only in processes running {exe.display}, and what they fork)"
        plan.notes.append(note)
        return found, params

    def arguments(
        self, sym: Symbol, params: list[str] | None, request: TraceRequest, oracle: MembershipOracle
    ) -> list[ArgSpec]:
        """A function's arguments; `oracle` (one per plan) reads each file's class names and DWARF once."""
        return args_for(sym, params, request.max_len, oracle)

    def usdt_spec(self, probe: UsdtProbe, params: list[str] | None, request: TraceRequest, plan: Plan) -> ProbeSpec:
        """A USDT probe typed by the user's signature, else the catalogue, else the note's sizes."""
        if params is not None:
            got = typed_args(probe, params, max_len=request.max_len)
            if isinstance(got, str):
                raise UsageError(f"{probe.full_name}({', '.join(params)}): {got}")
            return probe_spec(probe, got, facts=(("types", "signature"),))
        args, source, note = catalogue_args(probe, request.max_len)
        if note and note not in plan.notes:
            plan.notes.append(note)
        if args is not None:
            said = f"{probe.provider}: argument types from {source}"
            if said not in plan.notes:
                plan.notes.append(said)
            return probe_spec(probe, args, facts=(("types", "catalogue"),))
        return probe_spec(probe, usdt_args(probe), facts=(("types", "untyped"),))

    def plan(self, request: TraceRequest, target: Target) -> Plan:
        modules = load_modules(target)
        plan = Plan()
        oracle = MembershipOracle(modules)
        pending: list[tuple[Symbol, list[str] | None, tuple[Filter, ...]]] = []
        at: dict[tuple[str, int], int] = {}
        usdt_specs: list[ProbeSpec] = []
        usdt_sites: list[UsdtProbe] = []
        usdt_seen: set[tuple[str, int]] = set()
        for expr in request.probes:
            usdt = usdt_expression(expr)
            if usdt is not None:
                pattern, params = usdt
                sites = find_usdt(target.modules, pattern)
                if not sites:
                    raise probe_not_found(find_usdt(target.modules, "*"), pattern, target.modules[0].display)
                for p in sites:
                    if (p.module, p.offset) not in usdt_seen:  # one probe per address
                        usdt_seen.add((p.module, p.offset))
                        usdt_specs.append(self.usdt_spec(p, params, request, plan))
                        usdt_sites.append(p)
                continue
            found, params, filters = self.resolve_expr(modules, expr, request, plan)
            for sym in found:
                key = (sym.module, sym.offset)
                if key not in at:  # overlapping patterns: one probe per address
                    at[key] = len(pending)
                    pending.append((sym, params, filters))
                elif params is not None and pending[at[key]][1] is None:
                    pending[at[key]] = (sym, params, filters)  # a later signature for the same function
        if len(pending) > MAX_PROBES:
            raise UsageError(f"{len(pending)} functions match; narrow the pattern (at most {MAX_PROBES})")
        oracle.prepare_dwarf([s for s, _p, _f in pending])
        symbols: list[Symbol] = []
        args_of: dict[int, list[ArgSpec]] = {}
        filters_of: dict[int, tuple[Filter, ...]] = {}
        for sym, params, filters in pending:
            args = self.arguments(sym, params, request, oracle)
            args_of[len(symbols)] = args
            filters_of[len(symbols)] = filters
            symbols.append(sym)
            label = display_name(sym.name)
            if clone_kind(sym):
                plan.notes.append(f"{label}: a GCC clone ({sym.clone}); traced, its arguments not decoded")
            uncertain = next((a.uncertain for a in args if a.uncertain), None)
            if uncertain:
                plan.notes.append(
                    f"{label}: arguments shown uncertain ({uncertain}); arg0 is `this` if it is a member; "
                    "give a signature to decode them"
                )
        if request.ret and usdt_sites:
            usdt_specs = self.usdt_pairs(usdt_sites, usdt_specs, request, plan)
        plan.specs = specs_for(symbols, args_of, ret=request.ret, filters_of=filters_of) + usdt_specs
        return plan

    def usdt_pairs(
        self, sites: list[UsdtProbe], specs: list[ProbeSpec], request: TraceRequest, plan: Plan
    ) -> list[ProbeSpec]:
        """With --ret: USDT begin/end pairs get a pair key (the end measures the latency), and the
        partner of a probe asked for alone is added (`query__start` brings `query__done`)."""
        from utrace.runtimes import usdt_pairs

        every: list[UsdtProbe] = []
        for module in dict.fromkeys(p.module for p in sites):
            every += [p for p in usdt_probes_for(module) if p.offset >= 0]
        added = usdt_pairs.partners(sites, every)
        for p in added:
            sites.append(p)
            specs.append(self.usdt_spec(p, None, request, plan))
        for name in dict.fromkeys(p.full_name for p in added):
            plan.notes.append(f"{name} added: it pairs with a probe asked for")
        plan.notes += [n for n in usdt_pairs.refused(sites) if n not in plan.notes]
        pairs = usdt_pairs.pairs_in(every)
        return [usdt_pairs.paired(s, p, pairs) for s, p in zip(specs, sites, strict=True)]


def usdt_expression(expr: str) -> tuple[str, list[str] | None] | None:
    """(`provider:name` pattern, the user's parameters or None) for a USDT probe expression, else None."""
    if "(" in expr:
        name, params = parse_user_probe(expr)
        if params is not None and ":" in name.replace("::", ""):
            return name, params
        return None
    if ":" in expr.replace("::", ""):
        return expr, None
    return None


_LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib")
MAX_LIBRARIES = 64


def _ld_cache() -> dict[str, str]:
    """soname -> path for x86-64 libraries in the dynamic linker's cache (`ldconfig -p`)."""
    import subprocess

    try:
        out = subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, timeout=5, check=False, errors="replace"
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[str, str] = {}
    for line in out.splitlines():
        head, sep, path = line.strip().partition(" => ")
        if sep and "x86-64" in head:
            found.setdefault(head.split(" ", 1)[0], path.strip())
    return found


def library_path(name: str, runpath: list[str], origin: str, cache: dict[str, str]) -> str | None:
    """Where the dynamic linker finds a DT_NEEDED name: RUNPATH/RPATH ($ORIGIN expanded),
    LD_LIBRARY_PATH, ld.so.cache, then the default folders."""
    if "/" in name:
        return os.path.realpath(name) if os.path.isfile(name) else None
    dirs = [p.replace("$ORIGIN", origin) for p in runpath]
    dirs += [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    for d in dirs:
        cand = os.path.join(d, name)
        if os.path.isfile(cand):
            return os.path.realpath(cand)
    if name in cache and os.path.isfile(cache[name]):
        return os.path.realpath(cache[name])
    for d in _LIB_DIRS:
        cand = os.path.join(d, name)
        if os.path.isfile(cand):
            return os.path.realpath(cand)
    return None


def needed_closure(exe: str) -> list[str]:
    """The libraries an executable loads, breadth first as the dynamic linker searches them."""
    cache = _ld_cache()
    order: list[str] = []
    queue: list[tuple[str, str]] = [(exe, "")]
    seen = {os.path.realpath(exe)}
    while queue and len(order) < MAX_LIBRARIES:
        path, _ = queue.pop(0)
        try:
            needed, runpath = needed_libraries(path)
        except ElfError:
            continue
        for lib in needed:
            found = library_path(lib, runpath, os.path.dirname(path), cache)
            if found and found not in seen:
                seen.add(found)
                order.append(found)
                queue.append((found, lib))
    return order
