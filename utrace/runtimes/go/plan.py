"""`go`: Go programs. Functions from the pclntab (stripped binaries too), arguments by the Go ABI.

- Names as Go writes them (`net/http.Get`, `main.(*T).M`) and globs over them.
- Arguments by name and type from DWARF, or from a signature on the command line; placed by the
  register ABI (Go >= 1.17 on amd64) or the stack ABI (older, and `.abi0` assembly functions).
- Inlined calls: every DW_TAG_inlined_subroutine of the function is probed as well, its arguments
  read where DWARF's location lists say they are at that pc. Without DWARF the pclntab inline tree
  still says where the calls are; they are probed without arguments.
- Returns without uretprobes (which corrupt Go's movable stacks): a plain uprobe on every `ret`.
  Entry and return pair per goroutine frame: (g, g.stack.hi - sp) stays the same when the
  goroutine's stack is copied to grow, and the entry probe sits after the stack-bound check so the
  morestack retry does not fire it twice.
- Every event carries the goroutine id (`runtime.g.goid`: offset from DWARF, else by version).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

from utrace.elf.index import function_table
from utrace.elf.match import generic_base, go_name_matcher, go_not_found, name_matcher
from utrace.errors import ElfError, TargetError, UsageError
from utrace.model import (
    ArgKind,
    ArgSpec,
    Deref,
    Diff,
    Event,
    GoType,
    Location,
    ProbeKind,
    ProbeSpec,
    Reg,
    Target,
    Tls,
)
from utrace.runtimes.base import CommandSpec, Completion, Plan, TraceRequest
from utrace.runtimes.go.goargs import Captures, captures, present
from utrace.runtimes.native import NativeRuntime

if TYPE_CHECKING:
    # the planner's readers and the disassembler (capstone, ~30 ms to import) are imported where they
    # are used: a trace planned before is served from the cache (`utrace.store.plans`) without them
    from utrace.elf.go.buildinfo import GoInfo
    from utrace.elf.go.gobin import GoBinary
    from utrace.elf.go.godwarf import DwarfParam, GoDwarf, InlinedInstance
    from utrace.elf.go.inline import InlinedCall
    from utrace.elf.go.pclntab import GoFunc, Pclntab
    from utrace.runtimes.go.goabi import Abi, Assigned
    from utrace.runtimes.go.gosig import GoSignature

MAX_FUNCTIONS = 256
G_STACK_HI = 8  # runtime.g starts with `stack stack` = {lo, hi uintptr}
G_TLS_OFFSET = -8  # amd64: g is the last word below the thread pointer (runtime.tlsg)
PC_CONTEXT = "pc"  # PIE only: the probe's run-time pc, to learn the load bias (removed before output)


def goid_offset_by_version(info: GoInfo) -> int | None:
    """`runtime.g.goid` on 64-bit when DWARF cannot say: 152 up to go1.22, 160 in 1.23-1.24
    (syscallbp added), 152 again from 1.25 (gobuf.ret removed)."""
    v = info.version_tuple
    if v is None:
        return None
    if (1, 23, 0) <= v < (1, 25, 0):
        return 160
    return 152


def _result_names(params: list[tuple[str, GoType]]) -> list[tuple[str, GoType]]:
    """Unnamed results (`~r0`, `~r2` in older DWARF) become r0, r1... by position."""
    return [(n if n and not n.startswith("~") else f"r{i}", t) for i, (n, t) in enumerate(params)]


@dataclass(slots=True)
class _Presenter:
    """Plan.refine for Go: interfaces by dynamic type, floats from bits."""

    path: str
    pie: bool
    binary: GoBinary | None  # None for a plan from the cache: opened when a type is first named
    shown: dict[tuple[str, str], Captures] = field(default_factory=dict)
    sites: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # link-time pcs of each probe
    bias: dict[int, int] = field(default_factory=dict)

    def _learn_bias(self, ev: Event) -> None:
        """A PIE's load bias from the pc of the probe that fired (a page multiple: pc - link pc)."""
        pc = ev.context.pop(PC_CONTEXT, None)
        if not isinstance(pc, int) or ev.pid in self.bias:
            return
        for addr in self.sites.get((ev.probe, ev.kind), []):
            # ip is the probe address, or one past the int3 on kernels that report it so
            for delta in (pc - addr, pc - addr - 1):
                if delta >= 0 and delta % 4096 == 0:
                    self.bias[ev.pid] = delta
                    return

    def type_name(self, pid: int, addr: int) -> str | None:
        if self.binary is None:
            from utrace.elf.go.gobin import open_binary

            self.binary = open_binary(self.path)
        return self.binary.type_name(addr - self.bias.get(pid, 0))

    def saved(self) -> tuple[str, bool, dict[tuple[str, str], Captures], dict[tuple[str, str], list[int]]]:
        """What a cached plan keeps of it (`bias` is learnt anew by each trace, the binary reopened)."""
        return self.path, self.pie, self.shown, self.sites

    def __call__(self, ev: Event) -> Event:
        if self.pie:
            self._learn_bias(ev)
        caps = self.shown.get((ev.probe, ev.kind))
        if caps is None or not (caps.interfaces or caps.floats):
            return ev
        if ev.kind == "return" and isinstance(ev.ret, dict):
            return replace(ev, ret=present(ev.ret, caps, self.type_name, ev.pid))
        return replace(ev, args=present(ev.args, caps, self.type_name, ev.pid))


@dataclass(slots=True)
class _Planning:
    """What one `plan` call reads once and each probe expression uses; nothing of it outlives the call."""

    request: TraceRequest
    where: str  # the executable, as shown
    binary: GoBinary
    info: GoInfo
    tab: Pclntab
    dwarf: GoDwarf | None
    abi_main: Abi
    abi_stack: Abi
    goid: int | None
    presenter: _Presenter
    plan: Plan = field(default_factory=Plan)
    specs: list[ProbeSpec] = field(default_factory=list)


class GoRuntime:
    name: ClassVar[str] = "go"
    command: ClassVar[CommandSpec] = CommandSpec(
        summary="Trace Go functions: arguments by name and type, returns without uretprobes.",
        examples=(
            "utrace go ./bin net/http.Get",
            "utrace go ./bin 'main.(*T).*' --ret",
            "utrace go --pid 1234 'main.Greet'",
            "utrace go ./stripped 'main.Greet(name string, n int) (string, error)' --ret",
            "utrace go main.Greet -- ./bin world",
        ),
        probes=Completion.FUNCTIONS,
    )

    def target(self, request: TraceRequest) -> Target:
        return NativeRuntime().target(request)

    # ------------------------------------------------------------------ resolution

    def _match(self, funcs: list[GoFunc], name: str) -> list[GoFunc]:
        m = go_name_matcher(name)
        return list(funcs) if m is None else [f for f in funcs if m(f.name) or m(f.symbol)]

    def _c_functions(self, binary: GoBinary, go_names: set[str], name: str) -> list[str]:
        """The functions of the program outside Go's function table (cgo's C code, C libraries linked in)
        that `name` matches, as `utrace native` names them."""
        m = name_matcher(name)
        try:
            table = function_table(binary.path)
        except ElfError:
            return []
        return [n for n in dict.fromkeys(table.names) if n not in go_names and (m is None or m(n))]

    def _instance_names(self, binary: GoBinary, found: list[GoFunc]) -> list[GoFunc]:
        """Go 1.18-1.19 pclntabs name every instantiation "F[...]": the ELF symbol at the same entry has the
        full name ("main.Scale[go.shape.int_0]", as DWARF has it too). Without one (stripped), instances
        that share a name get their entry address appended, so each probe keeps its own name."""
        if not any(f.name.endswith("[...]") or "[...]" in f.name for f in found):
            return found
        full: dict[int, str] = {}
        if binary.has_symtab:
            try:
                table = function_table(binary.path)  # names them as `utrace list` does
            except ElfError:
                table = None
            if table is not None:
                want = {f.entry for f in found if "[...]" in f.name}
                for name, addr in zip(table.names, table.addresses, strict=True):
                    if addr in want and "[...]" not in name:
                        full.setdefault(addr, name)
        out = [replace(f, name=full[f.entry]) if f.entry in full else f for f in found]
        count: dict[str, int] = {}
        for f in out:
            count[f.name] = count.get(f.name, 0) + 1
        return [replace(f, name=f"{f.name}@{f.entry:#x}") if count[f.name] > 1 else f for f in out]

    # ------------------------------------------------------------------ arguments

    def _types_for(
        self, fn: GoFunc, sig: GoSignature | None, dwarf: GoDwarf | None
    ) -> tuple[list[tuple[str, GoType]], list[tuple[str, GoType]], bool]:
        """(params, results, known) for a function: a user signature wins over DWARF."""
        if sig is not None:
            from utrace.runtimes.go.gosig import parse_type

            params = list(sig.params)
            m = re.search(r"\.\(\*([^)]+)\)\.[^.]+$", fn.name)
            if m:
                recv = parse_type("*" + fn.name[: m.start()] + "." + m.group(1))
                params.insert(0, ("recv", recv))
            return params, list(sig.results or ()), True
        if dwarf is not None:
            df = dwarf.function(fn.name)
            if df is not None:
                ps = [(p.name, p.type) for p in df.params if not p.is_result]
                rs = _result_names([(p.name, p.type) for p in df.params if p.is_result])
                return ps, rs, True
        return [], [], False

    def _goid(self, info: GoInfo, dwarf: GoDwarf | None) -> int | None:
        if dwarf is not None:
            try:
                off = dwarf.struct_member_offset("runtime.g", "goid")
            except ElfError:
                off = None
            if off is not None:
                return off
        return goid_offset_by_version(info)

    # ------------------------------------------------------------------ planning

    def plan(self, request: TraceRequest, target: Target) -> Plan:
        """The probes for `request`; a request planned before on the same file comes from the cache."""
        from utrace.runtimes.go import plancache

        cached = plancache.load(request, target)
        if cached is not None:
            specs, notes, needs_tls, (path, pie, shown, sites) = cached
            return Plan(specs=specs, notes=notes, needs_tls=needs_tls, refine=_Presenter(path, pie, None, shown, sites))
        plan = self._plan(request, target)
        assert isinstance(plan.refine, _Presenter)
        plancache.save(request, target, (plan.specs, plan.notes, plan.needs_tls, plan.refine.saved()))
        return plan

    def _plan(self, request: TraceRequest, target: Target) -> Plan:
        job = self._planning(request, target)
        # (expression, instance of a generic name: only its inlined copies, which the generic name's own
        # matching cannot see, are probed)
        work: list[tuple[str, bool]] = [(p, False) for p in request.probes]
        while work:
            expr, instance = work.pop(0)
            work[:0] = self._plan_expression(job, expr, instance)
        plan, presenter, specs = job.plan, job.presenter, job.specs
        for spec in specs:
            presenter.sites.setdefault((spec.name, "call" if spec.kind is ProbeKind.ENTRY else "return"), []).append(
                spec.address
            )
        plan.specs = specs
        plan.needs_tls = any(_uses_tls(s) for s in specs)
        plan.refine = presenter
        return plan

    def _planning(self, request: TraceRequest, target: Target) -> _Planning:
        """The executable read once for one `plan` call: build info, ABIs, pclntab, DWARF, goid offset."""
        from utrace.elf.go.gobin import open_binary
        from utrace.elf.go.godwarf import GoDwarf
        from utrace.runtimes.go.goabi import UnsupportedArch, abi_for

        exe = target.modules[0]
        binary = open_binary(exe.path)
        info = binary.info()
        if info is None:
            raise TargetError(
                f"{exe.display} is not a Go binary (no .note.go.buildid, .go.buildinfo or .gopclntab); "
                "for C/C++ use `utrace native`"
            )
        try:
            abi_main = abi_for(info.arch, info.abi == "regabi")
            abi_stack = abi_for(info.arch, False)
        except UnsupportedArch as e:
            raise TargetError(f"{exe.display}: {e}") from None
        tab = binary.pclntab()
        dwarf: GoDwarf | None = GoDwarf(exe.path) if info.has_dwarf else None
        if dwarf is not None and not dwarf.has_dwarf:
            dwarf = None
        presenter = _Presenter(exe.path, info.pie, binary)
        goid = self._goid(info, dwarf)
        return _Planning(request, exe.display, binary, info, tab, dwarf, abi_main, abi_stack, goid, presenter)

    def _plan_expression(self, job: _Planning, expr: str, instance: bool) -> list[tuple[str, bool]]:
        """Probes for one expression (into job.specs); returns the generic instances to probe next."""
        from utrace.runtimes.go.gosig import parse_signature

        request, binary, dwarf, plan, presenter = job.request, job.binary, job.dwarf, job.plan, job.presenter
        sig = parse_signature(expr)
        name = sig.function if sig is not None else expr
        funcs = job.tab.functions
        found = [] if instance else self._instance_names(binary, self._match(funcs, name))
        inlined_dw, inlined_pc, generics = self._inlined(job, name, instance)
        if instance:
            if not inlined_dw and not inlined_pc:
                return []
            found = []
        elif not found and not inlined_dw and not inlined_pc and generics:
            pass  # only inlined instances, probed as their own items next
        elif not found and not inlined_dw and not inlined_pc:
            go_names = {f.name for f in funcs}
            raise go_not_found(go_names, name, generic_base(name), job.where, self._c_functions(binary, go_names, name))
        if len(found) > MAX_FUNCTIONS:
            raise UsageError(f"{len(found)} functions match {name!r}; narrow the pattern (at most {MAX_FUNCTIONS})")
        specs = job.specs
        for fn in found:
            specs += self._function_specs(fn, sig, dwarf, job.info, job.abi_main, job.abi_stack, job.goid, request,
                                          plan, presenter, binary)  # fmt: skip
        for inst in inlined_dw:
            assert dwarf is not None  # instances come from it
            spec = self._inlined_spec(name, inst, dwarf, job.abi_main, job.goid, request, presenter, plan.notes)
            if spec is not None:
                specs.append(spec)
                plan.notes.append(
                    f"{name} is inlined into {inst.caller} at {inst.entry_pc:#x}: probed there too, "
                    "arguments from DWARF location lists"
                )
        for call in inlined_pc:
            off = binary.img.vaddr_to_offset(call.call_pc)
            if off is None or _refused(binary, call.call_pc, name, plan.notes) is not None:
                continue
            specs.append(self._bare_inlined_spec(name, call, binary.path, off, job.abi_main, job.goid, job.info.pie))
            plan.notes.append(
                f"{name} is inlined into {call.caller} at {call.call_pc:#x} (pclntab inline tree); "
                "without DWARF its arguments there cannot be located"
            )
        if (inlined_dw or inlined_pc) and request.ret:
            plan.notes.append(f"returns of inlined calls of {name} are not traced (there is no return instruction)")
        if not found and (inlined_dw or inlined_pc) and not instance:
            plan.notes.append(f"{name} has no out-of-line copy in {job.where} (every call was inlined)")
        return [(g, True) for g in generics]

    def _inlined(
        self, job: _Planning, name: str, instance: bool
    ) -> tuple[list[InlinedInstance], list[InlinedCall], list[str]]:
        """Inlined copies of `name` (from DWARF, else the pclntab's inline tree), and the names of its
        generic instances (Go >= 1.18) when `name` is not one itself. Globs have none."""
        from utrace.elf.go.godwarf import package_of
        from utrace.elf.go.pclntab import instance_names

        inlined_dw: list[InlinedInstance] = []
        inlined_pc: list[InlinedCall] = []
        generics: list[str] = []
        if not instance and any(c in name for c in "*?["):
            return inlined_dw, inlined_pc, generics
        calls = self._pcln_inlined(job.tab, name)
        if job.dwarf is None:
            inlined_pc = calls or []
        elif calls is None or calls:
            # the inline tree says which packages' compile units hold the copies; when it cannot be
            # read, every unit is searched (1-2 s on a program with net/http)
            cus = sorted({package_of(c.caller) for c in calls}) if calls else None
            inlined_dw = job.dwarf.inlined_instances(name, cus)
            if instance and not inlined_dw and calls and "[...]" in name:
                inlined_pc = calls  # Go 1.18-1.19 "F[...]": DWARF spells the instance out
        version = job.info.version_tuple
        if not instance and version is not None and version >= (1, 18, 0):
            generics = instance_names(job.tab, name)
        return inlined_dw, inlined_pc, generics

    def _pcln_inlined(self, tab: Pclntab, name: str) -> list[InlinedCall] | None:
        """Where the pclntab's inline trees say `name` was inlined; None when they cannot be read."""
        from utrace.elf.go.inline import inlined_calls

        try:
            return inlined_calls(tab, name)
        except ElfError:
            return None

    def _frame(self, abi: Abi) -> tuple[Location, tuple[Location, Location]]:
        g: Location = Reg(abi.goroutine_reg) if abi.goroutine_reg else Tls(G_TLS_OFFSET)
        return g, (g, Diff(Deref(g, G_STACK_HI), Reg("rsp")))

    def _context(self, g: Location, goid: int | None, pie: bool) -> tuple[ArgSpec, ...]:
        out: list[ArgSpec] = []
        if goid is not None:
            out.append(ArgSpec("goid", ArgKind.S64, Deref(g, goid)))
        if pie:
            out.append(ArgSpec(PC_CONTEXT, ArgKind.PTR, Reg("rip")))
        return tuple(out)

    def _function_specs(
        self,
        fn: GoFunc,
        sig: GoSignature | None,
        dwarf: GoDwarf | None,
        info: GoInfo,
        abi_main: Abi,
        abi_stack: Abi,
        goid: int | None,
        request: TraceRequest,
        plan: Plan,
        presenter: _Presenter,
        binary: GoBinary,
    ) -> list[ProbeSpec]:
        from utrace.elf.boundary import check_boundary
        from utrace.elf.go.goasm import after_stack_check, return_sites
        from utrace.runtimes.go.goabi import DICT_PARAM, assign, dictionary_index, with_dictionary

        if fn.offset is None:
            return []
        abi = abi_stack if fn.abi0 else abi_main
        params, results, known = self._types_for(fn, sig, dwarf)
        if not known and dwarf is None:
            shown = generic_base(fn.name).split("@0x")[0]  # a signature names the generic function
            note = f"no DWARF in this binary: arguments not decoded (give a signature: '{shown}(name string, n int)')"
            if not any(n.startswith("no DWARF") for n in plan.notes):
                plan.notes.append(note)
        if known and abi is abi_main and info.version_tuple is not None and info.version_tuple >= (1, 18, 0):
            generic = re.sub(r"@0x[0-9a-f]+$", "", fn.name)  # see _instance_names
            params = with_dictionary(generic, params)
            if "[...]" in generic and dictionary_index(generic) is not None:
                plan.notes.append(
                    f"{fn.name}: taken as a shaped generic body with a dictionary argument first (this Go "
                    "1.18-1.19 binary has no symbol table to say which instantiation it is)"
                )
        args, res = assign(params, results, abi)
        # the dictionary is placed (it takes a register) but not shown: it is no declared argument
        args = [a for a in args if a.name != DICT_PARAM]
        arg_caps = captures(args, request.max_len)
        res_caps = captures(res, request.max_len)
        presenter.shown[(fn.name, "call")] = arg_caps
        presenter.shown[(fn.name, "return")] = res_caps
        code = binary.img.read(fn.offset, fn.end - fn.entry)
        # the entry probe goes after the stack-bound check: the morestack path re-enters at the top
        at = after_stack_check(code, fn.entry) or fn.entry
        refused = check_boundary(binary.path, at, fn.entry, fn.size)
        if refused is not None:
            plan.notes.append(f"{fn.name} not traced: refused the entry probe: {refused}")
            return []
        g, frame = self._frame(abi)
        context = self._context(g, goid, info.pie)
        specs = [
            ProbeSpec(
                name=fn.name, module=binary.path, offset=fn.offset + (at - fn.entry), kind=ProbeKind.ENTRY,
                args=tuple(arg_caps.args), pair=fn.name, address=at, frame=frame, context=context,
            )
        ]  # fmt: skip
        if request.ret:
            rets = return_sites(code, fn.entry)
            if not rets:
                plan.notes.append(f"{fn.name} has no return instruction (it never returns or tail-calls): no returns")
            for r in rets:
                refused = check_boundary(binary.path, r, fn.entry, fn.size)
                if refused is not None:
                    plan.notes.append(f"{fn.name}: refused a return probe: {refused}")
                    continue
                specs.append(
                    ProbeSpec(
                        name=fn.name, module=binary.path, offset=fn.offset + (r - fn.entry), kind=ProbeKind.EXIT,
                        args=tuple(res_caps.args), latency=True, pair=fn.name, address=r, frame=frame,
                        context=context,
                    )
                )  # fmt: skip
        return specs

    def _inlined_spec(
        self,
        name: str,
        inst: InlinedInstance,
        dwarf: GoDwarf,
        abi: Abi,
        goid: int | None,
        request: TraceRequest,
        presenter: _Presenter,
        notes: list[str],
    ) -> ProbeSpec | None:
        binary = presenter.binary
        assert binary is not None  # (planning: the binary is open)
        off = binary.img.vaddr_to_offset(inst.entry_pc)
        if off is None or _refused(binary, inst.entry_pc, name, notes) is not None:
            return None
        values = [_from_dwarf(p, inst.entry_pc, dwarf) for p in inst.params if not p.is_result]
        caps = captures(values, request.max_len)
        presenter.shown[(name, "call")] = caps
        g, _frame = self._frame(abi)
        return ProbeSpec(
            name=name, module=binary.path, offset=off, kind=ProbeKind.ENTRY, args=tuple(caps.args),
            address=inst.entry_pc, context=self._context(g, goid, presenter.pie),
        )  # fmt: skip

    def _bare_inlined_spec(
        self, name: str, call: InlinedCall, path: str, off: int, abi: Abi, goid: int | None, pie: bool
    ) -> ProbeSpec:
        g, _frame = self._frame(abi)
        note = ArgSpec("args", ArgKind.UNAVAILABLE, note="inlined call: arguments need DWARF")
        return ProbeSpec(
            name=name, module=path, offset=off, kind=ProbeKind.ENTRY, args=(note,),
            address=call.call_pc, context=self._context(g, goid, pie),
        )  # fmt: skip


def _refused(binary: GoBinary, pc: int, name: str, notes: list[str]) -> str | None:
    """Why a probe at `pc` (inside some function, e.g. an inlined call site) may not be armed, noted once."""
    from utrace.elf.boundary import check_boundary

    fn = binary.pclntab().function_at(pc)
    reason = f"{pc:#x} is in no Go function" if fn is None else check_boundary(binary.path, pc, fn.entry, fn.size)
    if reason is not None:
        notes.append(f"{name}: refused the probe at {pc:#x}: {reason}")
    return reason


def _from_dwarf(p: DwarfParam, pc: int, dwarf: GoDwarf) -> Assigned:
    """An inlined call's parameter as an ABI-style assignment, from its DWARF location pieces."""
    from utrace.elf.dwarf import FrameLoc, RegLoc, Unavailable
    from utrace.runtimes.go.goabi import Assigned, Part, memory_parts, parts

    layout = parts(p.type) or memory_parts(p.type)
    placed: list[Part] = []
    pieces: list[tuple[int, int, object]] = []
    pos = 0
    for piece in p.location:
        pieces.append((pos, piece.size, piece.where))
        pos += piece.size
    for part in layout:
        where: object = None
        inner = 0
        for start, size, w in pieces:
            if start <= part.offset < start + size:
                where, inner = w, part.offset - start
                break
        reg: str | None = None
        stack: int | None = None
        missing = ""
        if isinstance(where, RegLoc) and inner == 0:
            reg = where.name
        elif isinstance(where, FrameLoc):
            fa = dwarf.frame_address(where.offset + inner, pc)
            if fa is not None and fa[0] == "rsp":
                stack = fa[1]
            else:
                missing = f"no frame rule at {pc:#x}"
        elif isinstance(where, Unavailable):
            missing = where.reason
        else:
            missing = f"no location at {pc:#x}"
        placed.append(Part(part.path, part.type, part.offset, part.size, part.is_float, reg, stack, missing))
    return Assigned(p.name, p.type, False, tuple(placed), True, None)


def _uses_tls(spec: ProbeSpec) -> bool:
    def walk(loc: object) -> bool:
        if isinstance(loc, Tls):
            return True
        if isinstance(loc, Deref):
            return walk(loc.base)
        if isinstance(loc, Diff):
            return walk(loc.a) or walk(loc.b)
        return False

    locs: list[object] = []
    for a in (*spec.args, *spec.context):
        locs += [a.loc, a.length]
    if spec.frame is not None:
        locs += list(spec.frame)
    return any(walk(x) for x in locs)
