"""`js:NAME` probes: JavaScript functions in stock Node.js, by name, with their arguments.

Where a call is seen (official builds keep `.symtab`, so V8's embedded builtins are file-backed
functions): `Builtins_InterpreterEntryTrampoline` is entered by every call of a function running in
the interpreter, `Builtins_BaselineOutOfLinePrologue` is called first thing by every function compiled
by Sparkplug. At both, `rdi` holds the callee JSFunction and `rax` the argument count including the
receiver (V8's x64 JS calling convention); the arguments lie above the return address, receiver
lowest: at the trampoline `[rsp+16]` is the first argument, at the prologue (a call from the function's
own code, one return address more) `[rsp+24]`. A trampoline entry may hand the same call on
(`jmp REG`: to the function's baseline code once it has some, or to itself after compiling): probes on
those jumps mark the call so its next entry is not counted twice.

Optimised code (Maglev, TurboFan) enters neither builtin, and an inlined call does not exist: a
launched node gets V8 flags that keep the traced functions out of those tiers (`--maglev-filter`,
`--turbo-filter`, no inlining), or, when the names cannot be said as one V8 filter, every function
(`--max-opt=1`). In a running node (`--pid`) the counts are lower bounds, and which traced functions run
optimised code is said at the end, where the binary's metadata lets it be read (utrace.process.v8tiers).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from utrace.elf.boundary import check_boundary
from utrace.elf.index import function_table
from utrace.elf.match import close_names
from utrace.elf.v8meta import V8MetaError, exits, v8_layout
from utrace.errors import ElfError, TargetError, UsageError
from utrace.model import (
    JS_NAME_MAX,
    JS_SCRIPT_MAX,
    ArgKind,
    ArgSpec,
    Const,
    Diff,
    Event,
    JsMatch,
    JsReturn,
    ProbeKind,
    ProbeSpec,
    Reg,
    Stack,
    Target,
)
from utrace.probes.decode import Rendered, Uncertain
from utrace.probes.v8values import NOT_PASSED, SEEN, UNDECIDED, JsScript, globs_id
from utrace.process.v8frames import V8Frames
from utrace.process.v8heap import SourceLines
from utrace.process.v8tiers import read_tiers, unreadable
from utrace.runtimes.base import Plan, TraceRequest
from utrace.v8layout import V8Layout

TRAMPOLINE = "Builtins_InterpreterEntryTrampoline"
PROLOGUE = "Builtins_BaselineOutOfLinePrologue"
LEAVE = "Builtins_BaselineLeaveFrame"
MAX_ARGS = 4  # arguments shown per call
_NAME = re.compile(rb"^[A-Za-z0-9_$.*<>#\[\] -]+$")
# the start of the warning about calls whose function names the kernel could not read (plan.counters)
_UNREAD_NAMES = (
    "{n} JavaScript call(s) of functions whose names utrace could not read (strings of a shape it does not "
    "read, such as two-byte ones; scope data of a shape it does not read, such as an ES module's top-level "
    "code's; longer than 64 bytes for a glob with text after a '*')"
)
_SCRIPT = re.compile(rb"^[\x20-\x29\x2b-\x7e]+$")  # printable ASCII but '*'


def is_js(expr: str) -> bool:
    return expr.startswith("js:")


def _glob(expr: str) -> tuple[bytes, bytes]:
    """(script, name glob) of `js:NAME` or `js:SCRIPT:NAME` (script b"" when not narrowed)."""
    body = expr[3:]
    script, _, name = body.rpartition(":")
    g = name.encode("utf-8")
    if not g or len(g) > JS_NAME_MAX or not _NAME.match(g) or g.strip(b"*") == b"":
        raise UsageError(f"{expr!r}: a JavaScript function name or glob of 1 to {JS_NAME_MAX} characters")
    s = script.encode("utf-8")
    if ":" in body and (not s or len(s) >= JS_SCRIPT_MAX or not _SCRIPT.match(s)):
        raise UsageError(
            f"{expr!r}: js:SCRIPT:NAME needs a script file name or path suffix (app.js, lib/util.js) of 1 to "
            f"{JS_SCRIPT_MAX - 1} printable ASCII characters, without '*'"
        )
    return s, g


def _node_file(target: Target) -> tuple[str, str]:
    for m in target.modules:
        try:
            if function_table(m.path).has_raw(TRAMPOLINE):
                return m.path, m.display
        except ElfError:
            continue
    raise TargetError(
        f"{target.modules[0].display} has no {TRAMPOLINE} symbol (V8's builtins are not named in it): "
        "JavaScript functions cannot be traced in this build (official nodejs.org builds have them)"
    )


def _symbol(path: str, raw: str) -> tuple[int, int, int]:
    """(address, size, file offset) of a builtin."""
    table = function_table(path)
    for i in table.entries():
        sym = table.symbol(i)
        if sym.raw == raw and sym.offset >= 0:
            return sym.address, sym.size, sym.offset
    raise TargetError(f"{path} has no {raw} symbol: JavaScript functions cannot be traced in this build")


def _offset(path: str, address: int, start: int, size: int, base_offset: int) -> int:
    why = check_boundary(path, address, start, size)
    if why is not None:
        raise TargetError(f"cannot probe {TRAMPOLINE} at {address:#x}: {why}")
    return base_offset + (address - start)


def _arguments(first: int) -> tuple[ArgSpec, ...]:
    return tuple(
        ArgSpec(f"arg{i}", ArgKind.JSVALUE, Stack(first + 8 * i), max_len=0, present_if=(Reg("rax"), i + 1))
        for i in range(MAX_ARGS)
    )


def _sites(path: str, ret: bool) -> _Sites:
    """Where the probes go: the trampoline's and the prologue's entries, the trampoline's handoff jumps,
    and (for returns) the `ret`s of the trampoline and of Builtins_BaselineLeaveFrame."""
    t_addr, t_size, t_off = _symbol(path, TRAMPOLINE)
    p_addr, _p_size, p_off = _symbol(path, PROLOGUE)
    jumps, t_rets = exits(path, t_addr, t_size)
    handoffs = [_offset(path, a, t_addr, t_size, t_off) for a in jumps]
    rets = [(_offset(path, a, t_addr, t_size, t_off), a) for a in t_rets]
    if ret:
        l_addr, l_size, l_off = _symbol(path, LEAVE)
        rets += [(_offset(path, a, l_addr, l_size, l_off), a) for a in exits(path, l_addr, l_size)[1]]
    return _Sites((t_off, t_addr), (p_off, p_addr), handoffs, rets)


@dataclass(frozen=True, slots=True)
class _Sites:
    trampoline: tuple[int, int]  # (file offset, address)
    prologue: tuple[int, int]
    handoffs: list[int]
    rets: list[tuple[int, int]]


def _specs(
    request: TraceRequest, path: str, layout: V8Layout, pattern: tuple[bytes, bytes], sites: _Sites
) -> list[ProbeSpec]:
    """The probes of one pattern (script, name glob)."""
    t_off, t_addr = sites.trampoline
    p_off, p_addr = sites.prologue
    out: list[ProbeSpec] = []
    script, g = pattern
    name = _label(pattern)
    # the function's script and start position (made a name and a line by `_with_lines`); how many
    # arguments the call passed (V8's count in rax includes the receiver): only MAX_ARGS are shown, so
    # an event says when there were more
    ctx = (
        ArgSpec("function", ArgKind.JSNAME),
        ArgSpec("script", ArgKind.JSSCRIPT),
        ArgSpec("nargs", ArgKind.S64, Diff(Reg("rax"), Const(1))),
    )
    args = tuple(
        ArgSpec(a.name, a.kind, a.loc, max_len=request.max_len, present_if=a.present_if) for a in _arguments(16)
    )
    bargs = tuple(
        ArgSpec(a.name, a.kind, a.loc, max_len=request.max_len, present_if=a.present_if) for a in _arguments(24)
    )
    match = JsMatch(Reg("rdi"), layout, (g,), script=script)
    pair = name if request.ret else ""
    # a call's frame: the caller's frame pointer and the return address into the caller, the same
    # at the call's entry and on the `ret` that ends it
    out.append(
        ProbeSpec(
            name, path, t_off, ProbeKind.ENTRY, args, filters=(match,), context=ctx, address=t_addr,
            pair=pair, frame=(Reg("rbp"), Stack(0)),
        )
    )  # fmt: skip
    out.append(
        ProbeSpec(
            name, path, p_off, ProbeKind.ENTRY, bargs,
            filters=(JsMatch(Reg("rdi"), layout, (g,), sp_delta=-8, script=script),), context=ctx,
            address=p_addr, pair=pair, frame=(Reg("rbp"), Stack(8)),
        )
    )  # fmt: skip
    if request.ret:
        value = (ArgSpec("value", ArgKind.JSVALUE, Reg("rax"), max_len=request.max_len),)
        for off, addr in sites.rets:
            out.append(
                ProbeSpec(
                    name, path, off, ProbeKind.EXIT, value, filters=(JsReturn(layout),), latency=True,
                    pair=pair, frame=(Reg("rbp"), Stack(0)), address=addr,
                )
            )  # fmt: skip
    for off in sites.handoffs:
        handoff = JsMatch(Reg("rdi"), layout, (g,), handoff=True, script=script)
        out.append(ProbeSpec(name, path, off, ProbeKind.ENTRY, filters=(handoff,)))
    return out


def plan_js(request: TraceRequest, target: Target, exprs: list[str], plan: Plan) -> None:
    """Add the probes of the `js:` expressions to `plan`, and the V8 flags a launched node needs."""
    path, display = _node_file(target)
    try:
        layout = v8_layout(path)
    except V8MetaError as e:
        raise TargetError(str(e)) from None
    sites = _sites(path, request.ret)
    patterns: list[tuple[bytes, bytes]] = []
    for expr in exprs:
        pat = _glob(expr)
        if pat in patterns:
            continue
        if any(globs_id((pat[1],), pat[0]) == globs_id((h,), sc) for sc, h in patterns):
            raise UsageError(f"{expr!r} and another pattern share a cache key: trace them one at a time")
        patterns.append(pat)
        plan.specs += _specs(request, path, layout, pat, sites)
    globs = list(dict.fromkeys(g for _s, g in patterns))
    plan.refine = _with_lines(layout, plan, _without_absent(plan.refine))
    plan.closing = _closest_seen([(_label(p), p[1].decode()) for p in patterns])
    plan.counters += (
        (
            UNDECIDED,
            _UNREAD_NAMES + ", or whose script's name it could not read when narrowing to a script, were not "
            "matched: counts may be short",
        ),
    )
    if request.command:
        flags = _v8_flags(path, globs)
        plan.launch_args = tuple(flags)
        plan.notes.append(
            "keeping the traced JavaScript functions out of V8's optimising tiers so every call is seen: "
            + " ".join(flags)
        )
    else:
        why = unreadable(layout)
        tiers = why is None and target.pid is not None
        plan.notes.append(
            "JavaScript calls from functions V8 has already optimised (Maglev/TurboFan) are not seen in a "
            "running node: counts are lower bounds"
            + ("; which traced functions run optimised code is said at the end" if tiers else "")
        )
        if why is not None:
            plan.notes.append(f"which traced JavaScript functions are optimised is not read in this node: {why}")
        elif target.pid is not None:  # (a file's processes are not searched)
            labelled = [(_label(p), *p) for p in patterns]
            plan.closing = _with_tiers(plan.closing, target.pid, layout, plan, path, display, labelled)


def _v8_flags(path: str, globs: list[bytes]) -> list[str]:
    """V8 flags for the launched node. A V8 filter (SharedFunctionInfo::PassesFilter) is one name,
    `name*` (a prefix) or `-name`/`-name*` (all but): one exact name or prefix excludes just those
    functions; anything else keeps every function out of the optimising tiers."""
    known = _v8_options(path)
    if len(globs) == 1 and b"*" not in globs[0].rstrip(b"*") and globs[0].count(b"*") <= 1:
        f = "-" + globs[0].decode()
        flags = [f"--maglev-filter={f}", f"--turbo-filter={f}"]
        flags += [x for x in ("--no-turbo-inlining", "--no-maglev-inlining") if x[5:] in known]
        if all(x[2:].split("=")[0] in known for x in flags[:2]):
            return flags
    return ["--max-opt=1"]


def _v8_options(path: str) -> set[str]:
    try:
        out = subprocess.run(
            [path, "--v8-options"], capture_output=True, timeout=20, check=False, env={"PATH": os.defpath}
        ).stdout[: 1 << 20]
    except (OSError, subprocess.SubprocessError):
        return set()
    return {m.decode() for m in re.findall(rb"^\s+--([a-z0-9-]+)", out, re.M)}


def _with_tiers(
    inner: Callable[[Mapping[str, int], Callable[[str], list[bytes]]], list[str]],
    pid: int,
    layout: V8Layout,
    plan: Plan,
    path: str,
    display: str,
    patterns: list[tuple[str, bytes, bytes]],
) -> Callable[[Mapping[str, int], Callable[[str], list[bytes]]], list[str]]:
    """`inner`'s lines, then which traced functions run optimised code as the trace ends
    (utrace.process.v8tiers: found in the process's heap, no event needed)."""

    def closing(per_probe: Mapping[str, int], keys: Callable[[str], list[bytes]]) -> list[str]:
        frames = V8Frames(layout, plan.source_lines)
        try:
            return inner(per_probe, keys) + read_tiers(pid, layout, patterns, frames, display, _builtin_names(path))
        finally:
            frames.forget(pid)

    return closing


def _builtin_names(path: str) -> Callable[[int], str | None]:
    """A file offset of the node binary -> the name of the function holding it (a V8 builtin's)."""
    try:
        table = function_table(path)
    except ElfError:
        return lambda _offset: None

    def name(offset: int) -> str | None:
        for vaddr, start, size in table.segments:
            if start <= offset < start + size:
                i = table.containing(offset - start + vaddr)
                return table.raw_at(i) if i is not None else None
        return None

    return name


def _closest_seen(
    labels: list[tuple[str, str]],
) -> Callable[[Mapping[str, int], Callable[[str], list[bytes]]], list[str]]:
    """For a pattern that matched no call: the closest names of the JavaScript functions the probes saw
    called (and did not match) while tracing, up to 4096 of them."""

    def closing(per_probe: Mapping[str, int], keys: Callable[[str], list[bytes]]) -> list[str]:
        missing = [(label, pattern) for label, pattern in labels if not per_probe.get(label)]
        if not missing:
            return []
        seen = sorted({k.rstrip(b"\0").decode("latin-1") for k in keys(SEEN)} - {""})
        out = []
        for label, pattern in missing:
            close = close_names(pattern.replace("*", ""), seen, 5, cutoff=0.6) if seen else []
            hint = (
                f"; closest names of the {len(seen)} JavaScript functions seen called: {', '.join(close)}"
                if close
                else ""
            )
            out.append(f"{label} matched no JavaScript call{hint}")
        return out

    return closing


def _label(pattern: tuple[bytes, bytes]) -> str:
    script, g = pattern
    return f"js:{script.decode()}:{g.decode()}" if script else f"js:{g.decode()}"


def _with_lines(layout: V8Layout, plan: Plan, inner: Callable[[Event], Event]) -> Callable[[Event], Event]:
    """Events (after what `inner` does) whose `script` context is the script's name and a `line`: the
    line of the function's start in its script's source, read from the process (utrace.process.v8heap),
    or `?` with the reason it is not known. The plan's `source_lines` (made here when it has none) are
    the session's: its stack frames' lines are read with the same."""
    if plan.source_lines is None:
        plan.source_lines = SourceLines(layout)
    lines = plan.source_lines

    def refine(ev: Event) -> Event:
        ev = inner(ev)
        js = ev.context.get("script")
        if not isinstance(js, JsScript):
            return ev
        context: dict[str, object] = {}
        for k, v in ev.context.items():
            if k != "script":
                context[k] = v
                continue
            name = js.name
            context["script"] = name if name is not None else Uncertain(Rendered("?"), js.why_not)
            if js.pos < 0:
                context["line"] = Uncertain(Rendered("?"), js.why_no_position)
            else:
                line, why = lines.line(ev.pid, js.src, js.srclen, js.pos)
                context["line"] = line if line is not None else Uncertain(Rendered("?"), why)
        return replace(ev, context=context)

    return refine


def _without_absent(inner: Callable[[Event], Event] | None) -> Callable[[Event], Event]:
    """Events without the arguments a call did not pass (after what `inner` does)."""

    def refine(ev: Event) -> Event:
        if inner is not None:
            ev = inner(ev)
        if not ev.probe.startswith("js:"):
            return ev
        args = {k: v for k, v in ev.args.items() if not (isinstance(v, Rendered) and v == NOT_PASSED)}
        return replace(ev, args=args)

    return refine


# --- `utrace list --js GLOB`: the functions a running node calls during a window ---------------------

SEEN_MAX = 4096  # entries of the kernel's map of names seen and not matched (v8values.SEEN)


def list_glob(text: str) -> bytes:
    """The glob of `utrace list --js GLOB`: a name or glob as in `js:NAME`, or `*` alone (every function).

    Raises:
        UsageError: empty, longer than JS_NAME_MAX bytes, or a character no function name has here.
    """
    g = text.encode("utf-8", "surrogateescape")
    if not g or len(g) > JS_NAME_MAX or not _NAME.match(g):
        raise UsageError(
            f"--js {text!r}: a JavaScript function name or glob of 1 to {JS_NAME_MAX} characters "
            "(letters, digits, _ $ . < > # [ ] - and space; * for any run of them)"
        )
    return g


@dataclass(slots=True)
class SeenNames:
    """The names of the functions the probes saw called and did not match (at most SEEN_MAX of them:
    `full` when the kernel's table filled up, so a name may be missing), filled in once they are removed."""

    names: list[str] = field(default_factory=list)
    full: bool = False


def plan_list(request: TraceRequest, target: Target, glob: bytes, plan: Plan) -> SeenNames:
    """Add to `plan` the `js:` entry probes of the functions matching `glob` (`*`: all), without their
    arguments: each call seen is an event with the function's name and the context every `js:` call
    carries. Returns where the names seen and not matched will be."""
    path, _display = _node_file(target)
    try:
        layout = v8_layout(path)
    except V8MetaError as e:
        raise TargetError(str(e)) from None
    specs = _specs(replace(request, ret=False), path, layout, (b"", glob), _sites(path, False))
    plan.specs += [replace(s, args=()) for s in specs]
    plan.refine = _with_lines(layout, plan, _without_absent(plan.refine))
    plan.counters += (
        (
            UNDECIDED,
            _UNREAD_NAMES + " are not listed",
        ),
    )
    seen = SeenNames()

    def closing(_per_probe: Mapping[str, int], keys: Callable[[str], list[bytes]]) -> list[str]:
        found = keys(SEEN)
        seen.full = len(found) >= SEEN_MAX
        seen.names = sorted({k.rstrip(b"\0").decode("latin-1") for k in found} - {""})
        return []

    plan.closing = closing
    return seen
