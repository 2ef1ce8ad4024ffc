"""`native`: any C, C++ or Rust ELF. Demangled or raw names and globs; SysV arguments."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from typing import ClassVar

from utrace.errors import NotFoundError, TargetError, UsageError
from utrace.model import ArgKind, ArgSpec, Filter, ProbeKind, ProbeSpec, Reg, Symbol, Target
from utrace.runtimes.base import (
    ModuleSymbols,
    Plan,
    TraceRequest,
    base_name,
    display_name,
    find_functions,
    load_modules,
    not_found,
)
from utrace.runtimes.signature import (
    default_args,
    param_list,
    parse_user_probe,
    split_params,
    sysv_args,
)
from utrace.runtimes.usdt import find_usdt, probe_spec, usdt_args
from utrace.target import file_target, process_target, resolve_path

MAX_PROBES = 512


def command_path(argv0: str) -> str:
    """The executable a launch command runs: argv[0] as a path, or found on PATH; for a script, the
    interpreter its `#!` line runs (`npm` -> `#!/usr/bin/env node` -> node on PATH)."""
    from utrace.launch import resolve_script

    if os.sep in argv0:
        return resolve_script(resolve_path(argv0))
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


def guess_this(demangled: str) -> bool:
    """Whether a demangled C++ function probably has an implicit `this` in rdi.

    Mangled names do not say whether a member function is static, so this is a heuristic: a const
    qualified function is certainly a member; otherwise a scope spelt like a class (`Shape::area`,
    capitalised) is taken as a non-static member. A signature on the command line overrides it.
    """
    pl = param_list(demangled)
    if pl is None:
        return False
    if pl[1].startswith("const"):
        return True
    name = base_name(demangled)
    if name.startswith(("operator", "std::")) or "::" not in name:
        return False
    scope = name.rsplit("::", 1)[0].rsplit("::", 1)[-1]
    return bool(scope[:1].isupper())


def args_for(sym: Symbol, user_params: list[str] | None, max_len: int) -> list[ArgSpec]:
    """Arguments from a user signature, else the demangled C++ signature, else arg0..arg5."""
    if user_params is not None:
        return sysv_args(user_params, max_len=max_len)
    if sym.name != sym.raw:
        pl = param_list(sym.name)
        if pl is not None:
            return sysv_args(split_params(pl[0]), this=guess_this(sym.name), max_len=max_len)
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

        Raises:
            NotFoundError: nothing matches (with the closest names).
        """
        found, params = self.resolve(modules, expr, request)
        if not found:
            raise not_found(modules, expr, os.path.basename(modules[0].display))
        return found, params, ()

    def arguments(self, sym: Symbol, params: list[str] | None, request: TraceRequest) -> list[ArgSpec]:
        return args_for(sym, params, request.max_len)

    def plan(self, request: TraceRequest, target: Target) -> Plan:
        modules = load_modules(target)
        plan = Plan()
        symbols: list[Symbol] = []
        args_of: dict[int, list[ArgSpec]] = {}
        filters_of: dict[int, tuple[Filter, ...]] = {}
        usdt_specs: list[ProbeSpec] = []
        for expr in request.probes:
            if ":" in expr.replace("::", "") and "(" not in expr:
                sites = find_usdt(target.modules, expr)
                if not sites:
                    raise NotFoundError(f"no USDT probe matches {expr!r} in {target.modules[0].display}")
                usdt_specs += [probe_spec(p, usdt_args(p)) for p in sites]
                continue
            found, params, filters = self.resolve_expr(modules, expr, request, plan)
            for sym in found:
                args_of[len(symbols)] = self.arguments(sym, params, request)
                filters_of[len(symbols)] = filters
                symbols.append(sym)
        if len(symbols) > MAX_PROBES:
            raise UsageError(f"{len(symbols)} functions match; narrow the pattern (at most {MAX_PROBES})")
        plan.specs = specs_for(symbols, args_of, ret=request.ret, filters_of=filters_of) + usdt_specs
        return plan
