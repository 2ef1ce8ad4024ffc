"""ProbeSpec list -> one BPF C program for bcc. The only code in utrace that writes C.

Safety rule: no text from a binary or the command line ever reaches the C source. Names are
positional (`probe_3`, `f1`); everything else is an integer formatted by this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from utrace.model import (
    PREFIX_MAX,
    ArgKind,
    ArgSpec,
    Const,
    Deref,
    Diff,
    Filter,
    JsMatch,
    JsReturn,
    Location,
    PrefixFilter,
    ProbeKind,
    ProbeSpec,
    Reg,
    Stack,
    Tls,
)
from utrace.predicate import AfterEntry, Predicate
from utrace.probes import slow
from utrace.probes.layout import Field, fields_of
from utrace.v8layout import V8Layout

if TYPE_CHECKING:
    from utrace.probes.aggregate import Keyed

# x86-64 pt_regs member for each 64-bit register name.
PT_REGS = {
    "rax": "ax", "rbx": "bx", "rcx": "cx", "rdx": "dx", "rsi": "si", "rdi": "di", "rbp": "bp",
    "rsp": "sp", "r8": "r8", "r9": "r9", "r10": "r10", "r11": "r11", "r12": "r12", "r13": "r13",
    "r14": "r14", "r15": "r15", "rip": "ip",
}  # fmt: skip
SYSV_INT_ARGS = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")

_C_INT = {
    ArgKind.U64: "u64", ArgKind.S64: "s64", ArgKind.U32: "u32", ArgKind.S32: "s32",
    ArgKind.U16: "u16", ArgKind.S16: "s16", ArgKind.U8: "u8", ArgKind.S8: "s8",
    ArgKind.BOOL: "u8", ArgKind.PTR: "u64",
}  # fmt: skip


class CodegenError(ValueError):
    """A spec the generator cannot express (a programming error in a runtime plugin)."""


class Aggregate(StrEnum):
    """What the program does with a hit: stream it, or only count it in the kernel."""

    NONE = "none"  # every hit is an event in the ring buffer
    COUNT = "count"  # hits per (probe, pid) in a per-CPU hash; no events
    HIST = "hist"  # as COUNT, plus log2 latency buckets per (return probe, pid)


@dataclass(frozen=True, slots=True)
class FamilyOffsets:
    """Byte offsets in the running kernel's structs (from its BTF) that the process-family programs read:
    `task_struct.tgid` (a forked task's process id), `task_struct.signal` and `signal_struct.live` (the
    process's live threads: 0 when the exiting thread was its last)."""

    tgid: int
    signal: int
    live: int


@dataclass(frozen=True, slots=True)
class ExecOffsets:
    """Byte offsets in the running kernel's structs (from its BTF) that `utrace_exec` reads to know the
    file a process exec'd: `linux_binprm.file`, `file.f_inode`, `inode.i_ino`, `inode.i_sb` and
    `super_block.s_dev` (the kernel's dev_t: major << 20 | minor)."""

    bprm_file: int
    file_inode: int
    inode_ino: int
    inode_sb: int
    sb_dev: int


# `target` values: a traced process, or a launched one that is traced from its first exec on
TARGET_TRACED = 1
TARGET_AWAITING_EXEC = 2
TARGET_ENTRIES = 4096  # processes utrace names itself (the target, its descendants found in /proc)
TRACKED_ENTRIES = 32768  # descendants the fork program finds
# `family` slots: processes added to `tracked` by forks, entries of `target`/`tracked` removed at exits,
# and forked processes that found `tracked` full (not followed)
FAMILY_ADDED, FAMILY_REMOVED, FAMILY_OVERFLOW = 0, 1, 2
FAMILY_EXECED = 3  # with `exec_file`: processes added to `tracked` by an exec of the file


def slot_range(slot: int) -> tuple[int, int]:
    """The nanoseconds [low, high] (inclusive) of a `hist` slot: bcc's bpf_log2l(v) is
    floor(log2(v)) + 1, so slot k >= 1 holds 2^(k-1) .. 2^k - 1 (and slot 1 also 0)."""
    if slot <= 0:
        return 0, 0
    return 1 << (slot - 1), (1 << slot) - 1


@dataclass(frozen=True, slots=True)
class Options:
    """Program-wide settings.

    Attributes:
        pid: only events from the processes in the `target` map (tgids as utrace sees them: the backend
            puts this pid there), or None for all. Such a program also has `utrace_exec`, on the
            sched_process_exec raw tracepoint, which turns a launched process awaiting its exec into a
            traced one there (so nothing it runs before the exec, utrace's own code, is reported).
        follow: also events from every process a traced one forks, at any depth (`tracked`, host tgids).
        family: offsets for `utrace_fork` and `utrace_exit` (sched_process_fork/exit raw tracepoints),
            which keep `tracked`: the processes descending from a traced one (followed or not: a launched
            tree is ended through it, and without `follow` their count says what was not traced).
        exec_file: offsets for an `utrace_exec` that keeps the processes running one file: a process
            that execs it is added to `tracked` (host tgid), one that execs another file leaves `tracked`
            and `target`; with `family` (required), forks of such processes are traced too and exits
            remove them. The file's identity is in the `exe_file` map ([0] inode, [1] the kernel's
            dev_t), put there by the backend from `exe_identity`; the backend seeds `target` with the
            processes that ran the file already (pids as utrace sees them). `pid` is then None.
        exe_identity: (inode, kernel dev_t) of that file: validated here, only the backend uses it.
        pid_ns: (dev, inode) of utrace's PID namespace when it is not the initial one: pids are then
            read with bpf_get_ns_current_pid_tgid so they match what utrace's /proc shows.
        ring_pages: ring buffer size in pages (a power of two).
        fsbase_offset: byte offset of `thread.fsbase` in the running kernel's task_struct (from its
            BTF), needed by `Tls` locations; None when unknown.
        aggregate: stream events, or aggregate in the kernel (maps `counts` and `hist`, keyed by
            `agg_key` {probe, pid, slot}); a key that finds the map full counts as lost.
        stack_depth: capture up to this many user stack frames with every event (0: none), walked
            by frame pointers (see `_stack`).
        v8_frames: the V8 layout of a node target: with a stack, each frame also carries the slots that
            tell and name a JavaScript frame (see `_stack`).
        keyed: with COUNT, also count per value of one argument (`--count --by`, `--hist=ARG`: see
            `utrace.probes.aggregate`).
    """

    pid: int | None = None
    pid_ns: tuple[int, int] | None = None
    ring_pages: int = 4096
    fsbase_offset: int | None = None
    aggregate: Aggregate = Aggregate.NONE
    stack_depth: int = 0
    follow: bool = False
    family: FamilyOffsets | None = None
    exec_file: ExecOffsets | None = None
    exe_identity: tuple[int, int] | None = None
    keyed: Keyed | None = None
    slower_than_ns: int | None = None  # --slower-than: see utrace.probes.slow
    v8_frames: V8Layout | None = None  # with stack_depth: the target is a V8 node, see `_stack`


AGG_KEY = "<III"  # struct agg_key {u32 probe; u32 pid; u32 slot;} as the prelude declares it
MAX_STACK_DEPTH = 127  # as perf's default kernel.perf_event_max_stack


@dataclass(slots=True)
class BpfProgram:
    """Generated C plus what the backend and decoder need to use it."""

    source: str
    specs: list[ProbeSpec]
    fields: list[list[Field]]
    functions: list[str] = field(default_factory=list)
    options: Options = field(default_factory=Options)
    # (function, raw tracepoint) of the programs that run on scheduler events, not on probes
    tracepoints: list[tuple[str, str]] = field(default_factory=list)


def words_differ(buf: str, data: bytes) -> str:
    """A C expression that is 0 exactly when the first len(data) bytes of `buf` (an array of u64) are `data`.

    Eight bytes at a time (little-endian words, the last one masked), folded with XOR/OR into one test: a
    `==` per byte is a branch in BPF, and the verifier walks the branches of several compares as separate
    states (two 16-byte prefixes exceeded its limit, E2BIG), while one term per byte made clang spill past
    the 512-byte stack.
    """
    if not data:
        return "0"
    terms = []
    for i in range(0, len(data), 8):
        chunk = data[i : i + 8]
        word = f"{buf}[{i // 8}]"
        if len(chunk) < 8:
            word = f"({word} & {_int((1 << (8 * len(chunk))) - 1)})"
        terms.append(f"({word} ^ {_int(int.from_bytes(chunk, 'little'))})")
    return " | ".join(terms)


def _int(n: int) -> str:
    if not isinstance(n, int) or isinstance(n, bool):
        raise CodegenError(f"not an integer: {n!r}")
    if not -(1 << 63) <= n < (1 << 64):
        raise CodegenError(f"integer out of 64-bit range: {n}")
    if n == -(1 << 63):  # the literal 9223372036854775808 alone does not fit in long long
        return "(-9223372036854775807LL - 1)"
    return f"{n}LL" if n < 0 else f"{n}ULL"


class _Emitter:
    def __init__(self, fsbase_offset: int | None = None) -> None:
        self.lines: list[str] = []
        self.tmp = 0
        self.fsbase_offset = fsbase_offset
        # Locations are read once per probe: the goroutine pointer feeds the frame key, goid, ...
        self.memo: dict[Location, str] = {}
        self.js_layout: V8Layout | None = None  # set by a JsMatch filter: its captures read V8 values
        self.paired_only = False  # set by a JsReturn filter: a return without its start is not emitted

    def new(self) -> str:
        self.tmp += 1
        return f"t{self.tmp}"

    def emit(self, line: str) -> None:
        self.lines.append("    " + line)

    def value(self, loc: Location) -> str:
        """Emit statements computing `loc` into a u64 variable (once per location); return the variable."""
        known = self.memo.get(loc)
        if known is not None:
            return known
        v = self._compute(loc)
        self.memo[loc] = v
        return v

    def _compute(self, loc: Location) -> str:
        v = self.new()
        if isinstance(loc, Reg):
            member = PT_REGS.get(loc.name)
            if member is None:
                raise CodegenError(f"unknown register {loc.name!r}")
            self.emit(f"u64 {v} = ctx->{member};")
        elif isinstance(loc, Const):
            self.emit(f"u64 {v} = (u64){_int(loc.value)};")
        elif isinstance(loc, Stack):
            self.emit(f"u64 {v} = 0;")
            self.emit(f"bpf_probe_read_user(&{v}, 8, (void *)(ctx->sp + {_int(loc.offset)}));")
        elif isinstance(loc, Deref):
            if loc.size not in (1, 2, 4, 8):
                raise CodegenError(f"bad dereference size {loc.size}")
            base = self.value(loc.base)
            self.emit(f"u64 {v} = 0;")
            self.emit(f"bpf_probe_read_user(&{v}, {loc.size}, (void *)({base} + {_int(loc.offset)}));")
        elif isinstance(loc, Diff):
            a = self.value(loc.a)
            b = self.value(loc.b)
            self.emit(f"u64 {v} = {a} - {b};")
        elif isinstance(loc, Tls):
            if self.fsbase_offset is None:
                raise CodegenError("a thread-local location needs the kernel's task_struct fsbase offset")
            fs = self.new()
            self.emit(f"u64 {fs} = 0;")
            self.emit(
                f"bpf_probe_read_kernel(&{fs}, 8, (void *)(bpf_get_current_task() + {_int(self.fsbase_offset)}));"
            )
            self.emit(f"u64 {v} = 0;")
            self.emit(f"bpf_probe_read_user(&{v}, 8, (void *)({fs} + {_int(loc.offset)}));")
        else:
            raise CodegenError(f"unknown location {loc!r}")
        return v


def _prefix_filter(em: _Emitter, f: PrefixFilter) -> None:
    if not f.prefixes or any(not p or len(p) > PREFIX_MAX for p in f.prefixes):
        raise CodegenError(f"prefixes must be 1 to {PREFIX_MAX} bytes")
    size = max(len(p) for p in f.prefixes)
    words = (size + 7) // 8
    p = em.value(f.loc)
    ln = em.value(f.length)
    ltype = _C_INT.get(f.length_kind, "s64")
    want, k, buf, ok = em.new(), em.new(), em.new(), em.new()
    em.emit(f"s64 {want} = (s64)({ltype}){ln};")
    em.emit(f"if ({p} == 0 || {want} <= 0) return 0;")
    em.emit(f"u64 {k} = {want} > {size} ? {size} : (u64){want};")
    em.emit(f"u64 {buf}[{words}] = {{}};")
    em.emit(f"if (bpf_probe_read_user({buf}, {k}, (void *){p}) < 0) return 0;")
    em.emit(f"int {ok} = 0;")
    for prefix in f.prefixes:
        em.emit(f"if ({want} >= {len(prefix)} && ({words_differ(buf, prefix)}) == 0) {ok} = 1;")
    em.emit(f"if (!{ok}) return 0;")


def _filter(em: _Emitter, f: Filter | PrefixFilter | Predicate | AfterEntry | JsMatch | JsReturn) -> None:
    if isinstance(f, Predicate):
        from utrace.probes.predicate_c import emit_predicate

        emit_predicate(em, f)
        return
    if isinstance(f, AfterEntry):
        return  # after the entry's time is looked up (see _probe_body)
    if isinstance(f, PrefixFilter):
        _prefix_filter(em, f)
        return
    if isinstance(f, JsReturn):
        em.js_layout = f.layout
        em.paired_only = True
        return
    if isinstance(f, JsMatch):
        from utrace.probes import v8values

        try:
            v8values.emit_match(em, f)
        except ValueError as e:
            raise CodegenError(str(e)) from None
        em.js_layout = f.layout
        return
    v = em.value(f.loc)
    ctype = _C_INT.get(f.kind)
    if ctype is None:
        raise CodegenError(f"cannot filter on {f.kind}")
    em.emit(f"if (({ctype}){v} != ({ctype}){_int(f.value)}) return 0;")


def _capture(em: _Emitter, fl: Field) -> None:
    a: ArgSpec = fl.arg
    n = fl.c_name
    if a.kind is ArgKind.UNAVAILABLE:
        return
    if a.kind in (ArgKind.JSVALUE, ArgKind.JSNAME, ArgKind.JSSCRIPT):
        from utrace.probes import v8values

        if em.js_layout is None:
            raise CodegenError("a JavaScript value needs the probe's JsMatch filter (the V8 layout)")
        if a.kind is ArgKind.JSNAME:
            v8values.emit_name(em, n, fl.capacity)
        elif a.kind is ArgKind.JSSCRIPT:
            v8values.emit_script(em, n)
        else:
            v8values.emit_value(em, em.js_layout, a, n, fl.capacity)
        return
    if a.kind in (ArgKind.CSTR, ArgKind.PTRLEN_STR):
        # Ring buffer memory is not zeroed; bytes past `_len` are never decoded.
        em.emit(f"e->{n}_len = 0;")
        em.emit(f"e->{n}_flags = 0;")
    if a.kind is ArgKind.CSTR:
        p = em.value(a.loc)
        em.emit(f"if ({p} == 0) {{ e->{n}_flags = 1; }} else {{")
        em.emit(f"    long r = bpf_probe_read_user_str(e->{n}, {fl.capacity}, (void *){p});")
        em.emit(f"    if (r < 0) {{ e->{n}_flags = 4; }}")
        em.emit(f"    else {{ e->{n}_len = r > 0 ? r - 1 : 0;")
        em.emit(f"           if (r == {fl.capacity}) e->{n}_flags = 2; }}")
        em.emit("}")
        return
    if a.kind is ArgKind.PTRLEN_STR:
        if a.length is None:
            raise CodegenError("a pointer+length string needs a length location")
        p = em.value(a.loc)
        ln = em.value(a.length)
        ltype = _C_INT.get(a.length_kind, "s64")
        want = em.new()
        em.emit(f"s64 {want} = (s64)({ltype}){ln};")
        em.emit(f"e->{n}_len = {want} < 0 ? 0 : (u32){want};")
        # (NULL, 0) is an empty string (Go's zero value), not a NULL one
        em.emit(f"if ({p} == 0 && {want} != 0) {{ e->{n}_flags = 1; }} else if ({want} > 0) {{")
        # 64-bit on purpose: with a u32 clang may pass the unextended register to the helper, and the
        # verifier then sees an unbounded size ("R2 min value is negative")
        em.emit(f"    u64 k = {want} > {fl.capacity} ? {fl.capacity} : (u64){want};")
        em.emit(f"    if ({want} > {fl.capacity}) e->{n}_flags = 2;")
        em.emit(f"    if (k > {fl.capacity}) k = {fl.capacity};")
        em.emit(f"    if (bpf_probe_read_user(e->{n}, k, (void *){p}) < 0) e->{n}_flags = 4;")
        em.emit("}")
        return
    v = em.value(a.loc)
    em.emit(f"e->{n} = {v};")


def _frame_key(em: _Emitter, spec: ProbeSpec, pair_id: int, sp_adjust: int) -> None:
    """Declare `sk`, the key that the entry of a call and its return both compute.

    `start_key` is {a, b, pair, who}: (stack pointer, 0, function, thread id) by default, or
    (owner, depth, function, process id) for frames owned by goroutines, which move between threads.
    USDT begin/end pairs are keyed by nesting depth per thread (see `slow.nest_key`).
    """
    if spec.kind is ProbeKind.USDT:
        slow.nest_key(em, pair_id, end=spec.latency)
        return
    if spec.frame is None:
        # The stack pointer at entry identifies the frame and keeps recursive calls apart.
        sp = f"ctx->sp - {_int(sp_adjust)}" if sp_adjust else "ctx->sp"
        em.emit(f"struct start_key sk = {{ .a = {sp}, .b = 0, .pair = {pair_id}, .who = tid }};")
        return
    owner = em.value(spec.frame[0])
    depth = em.value(spec.frame[1])
    em.emit(f"struct start_key sk = {{ .a = {owner}, .b = {depth}, .pair = {pair_id}, .who = pid }};")


def _count(em: _Emitter, table: str, probe: int, slot: str, indent: str = "") -> None:
    """Add one to `table`[{probe, pid, slot}] (this CPU's slot of a per-CPU hash); a full map is a loss."""
    k, v = em.new(), em.new()
    em.emit(f"{indent}struct agg_key {k} = {{ .probe = {_int(probe)}, .pid = pid, .slot = {slot} }};")
    em.emit(f"{indent}u64 *{v} = {table}.lookup(&{k});")
    em.emit(f"{indent}if (!{v}) {{")
    em.emit(f"{indent}    u64 zero = 0;")
    em.emit(f"{indent}    {table}.insert(&{k}, &zero);")  # fails if another CPU was first: fine
    em.emit(f"{indent}    {v} = {table}.lookup(&{k});")
    em.emit(f"{indent}}}")
    # this CPU's own slot, so no atomics; no slot at all means the map is full
    em.emit(f"{indent}if ({v}) *{v} += 1; else utrace_lost();")


def _stack(em: _Emitter, spec: ProbeSpec, depth: int, v8: V8Layout | None = None) -> None:
    """Walk the user stack by frame pointers into `e->ustack`, innermost first.

    Not bpf_get_stack: at a function's first instruction (entry probes, and Go's exit probes on `ret`)
    the function has not pushed its frame yet, so the frame-pointer chain starts at the caller's frame
    and skips the caller itself; the kernel adds that return address back only since Linux 6.11 and
    only when the probed instruction is `push %rbp` or `endbr64` (never for Go). Here the return
    address at [sp] is taken explicitly at those probes, the same on every kernel.

    With `v8` (a node target), each frame also gets `e->ustack_js[i]`: the slots of the frame whose code
    holds that address, as V8 lays out its frames (`v8dbg_off_fp_*`): [0] the context or frame-type
    marker slot (a Smi there is a typed frame: stub, entry, exit; V8's StackFrame::ComputeType), [1] the
    function slot, and, when that is a heap object, [2] its SharedFunctionInfo and [3] that SFI's
    name_or_scope_info word (what `utrace.process.v8frames` names the frame by, and checks the SFI still
    holds). The frame of a return address read at `fp` is the caller's, at [fp]; at an entry, [sp]
    returns into the frame at rbp. At a `js:` entry (a JsMatch probe) the function being entered has
    no frame yet: its JSFunction and context are in rdi and rsi (V8's JS calling convention), given to
    frame 0. At the baseline prologue (called from the callee's own code, `spec.frame` = (rbp, [sp+8]))
    they go to frame 1, [sp], the return into the callee's own code; the return into the caller is at
    [sp+8], which the frame-pointer chain skips: it is taken explicitly too.
    """
    at_entry = spec.kind in (ProbeKind.ENTRY, ProbeKind.EXIT)
    first = 2 if at_entry else 1
    js_entry = v8 is not None and any(isinstance(f, JsMatch) and not f.handoff for f in spec.filters)
    skip = 0
    if js_entry and spec.frame is not None and isinstance(spec.frame[1], Stack) and spec.frame[1].offset:
        skip = spec.frame[1].offset
        if skip % 8 or not 0 < skip <= 64 or depth < 4:
            raise CodegenError(f"a return address at [sp+{skip}] is not one utrace walks to")
    em.emit("e->ustack[0] = ctx->ip;")
    if v8 is not None:
        # the ring's memory is not zeroed: each frame's slots are written whole (those past ustack_n are
        # never read)
        _js_zero(em, "0")
        if js_entry:
            # the function being entered: at the trampoline frame 0; at the baseline prologue frame 1,
            # the return into its own code (frame 0 is the prologue, a builtin)
            own = "1" if skip else "0"
            if skip:
                _js_zero(em, own)
            em.emit(f"e->ustack_js[{own}][0] = ctx->si;")
            match = next(f for f in spec.filters if isinstance(f, JsMatch))
            _js_slots(em, v8, own, em.value(match.function))
    if at_entry:
        em.emit("e->ustack[1] = 0;")
        em.emit("bpf_probe_read_user(&e->ustack[1], 8, (void *)ctx->sp);")
        if v8 is not None and skip:
            em.emit("e->ustack[2] = 0;")
            em.emit(f"bpf_probe_read_user(&e->ustack[2], 8, (void *)(ctx->sp + {skip}));")
            _js_frame(em, v8, "2", "ctx->bp")
            first = 3
        elif v8 is not None:
            _js_frame(em, v8, "1", "ctx->bp")
    elif v8 is not None and spec.kind is ProbeKind.RETURN:
        _js_frame(em, v8, "0", "ctx->bp")  # a uretprobe fires on the return address into the frame at rbp
    em.emit(f"s64 sn = {first};")
    em.emit("u64 fp = ctx->bp;")
    em.emit(f"for (int i = {first}; i < {depth}; i++) {{")
    em.emit("    u64 fr[2] = {};")  # the saved frame pointer and the return address above it
    em.emit("    if (fp == 0 || (fp & 7) || bpf_probe_read_user(fr, 16, (void *)fp) < 0 || fr[1] == 0) break;")
    em.emit("    e->ustack[i] = fr[1];")
    if v8 is not None:
        _js_frame(em, v8, "i", "fr[0]", indent="    ")
    em.emit("    sn = i + 1;")
    em.emit("    if (fr[0] <= fp) break;")  # callers' frames lie higher up the stack: anything else is not a chain
    em.emit("    fp = fr[0];")
    em.emit("}")
    em.emit("e->ustack_n = sn;")


def _js_zero(em: _Emitter, i: str, indent: str = "") -> None:
    em.emit(indent + " ".join(f"e->ustack_js[{i}][{k}] = 0;" for k in range(4)))


def _js_frame(em: _Emitter, v8: V8Layout, i: str, fp: str, indent: str = "") -> None:
    """`e->ustack_js[i]` from the V8 frame whose frame pointer is `fp` (see `_stack`)."""
    assert v8.fp_context_or_frame_type is not None
    _js_zero(em, i, indent)
    em.emit(f"{indent}if ({fp} && !({fp} & 7)) {{")
    marker = _int(v8.fp_context_or_frame_type)
    em.emit(f"{indent}    bpf_probe_read_user(&e->ustack_js[{i}][0], 8, (void *)({fp} + {marker}));")
    em.emit(f"{indent}    u64 jf = 0;")
    em.emit(f"{indent}    bpf_probe_read_user(&jf, 8, (void *)({fp} + {_int(v8.fp_function)}));")
    _js_slots(em, v8, i, "jf", indent + "    ")
    em.emit(f"{indent}}}")


def _js_slots(em: _Emitter, v8: V8Layout, i: str, fn: str, indent: str = "") -> None:
    """`e->ustack_js[i][1..3]`: the function `fn`, its SharedFunctionInfo and that SFI's name word."""
    em.emit(f"{indent}e->ustack_js[{i}][1] = {fn};")
    em.emit(f"{indent}if (({fn} & {_int(v8.heap_object_tag_mask)}) == {_int(v8.heap_object_tag)}) {{")
    em.emit(f"{indent}    u64 js = 0;")
    em.emit(f"{indent}    bpf_probe_read_user(&js, 8, (void *)({fn} + {_int(v8.jsfunction_shared)}));")
    em.emit(f"{indent}    e->ustack_js[{i}][2] = js;")
    em.emit(f"{indent}    if ((js & {_int(v8.heap_object_tag_mask)}) == {_int(v8.heap_object_tag)})")
    word = _int(v8.sfi_name_or_scope_info)
    em.emit(f"{indent}        bpf_probe_read_user(&e->ustack_js[{i}][3], 8, (void *)(js + {word}));")
    em.emit(f"{indent}}}")


def _struct(index: int, fields: list[Field], stack_depth: int = 0, v8_frames: bool = False) -> list[str]:
    out = [f"struct event_{index} {{", "    struct header h;"]
    for fl in fields:
        if not fl.present:
            continue
        if fl.is_string or fl.arg.kind is ArgKind.JSNAME:
            out += [f"    u32 {fl.c_name}_len;", f"    u32 {fl.c_name}_flags;"]
            out.append(f"    char {fl.c_name}[{fl.capacity}];")
        elif fl.arg.kind is ArgKind.JSVALUE:
            out += [f"    u32 {fl.c_name}_kind;", f"    u32 {fl.c_name}_len;", f"    u64 {fl.c_name}_val;"]
            out.append(f"    char {fl.c_name}[{2 * fl.capacity}];")
        elif fl.arg.kind is ArgKind.JSSCRIPT:
            c = fl.c_name
            out += [f"    u32 {c}_len;", f"    u32 {c}_why;", f"    s64 {c}_pos;", f"    s64 {c}_end;"]
            out += [f"    u64 {c}_src;", f"    u64 {c}_srclen;", f"    char {c}[{fl.capacity}];"]
        else:
            out.append(f"    u64 {fl.c_name};")
    if stack_depth:
        out += ["    s64 ustack_n;", f"    u64 ustack[{stack_depth}];"]
        if v8_frames:
            out.append(f"    u64 ustack_js[{stack_depth}][4];")
    out.append("} __attribute__((packed));")
    return out


# Events are submitted without waking the reader (BPF_RB_NO_WAKEUP): the reader polls with a timeout
# and then consumes whatever is there. Waking it on every event (the kernel's default whenever the reader
# has caught up, which on a fast reader is nearly always) costs the traced thread an irq_work and a
# wakeup per event: a third of the wall time of 200,000 streamed calls. Each CPU still forces a wakeup
# after `_wake_bytes` of events, so a fast producer cannot fill the ring between two polls.
_PRELUDE = """\
#include <uapi/linux/ptrace.h>

struct header {
    u32 probe;
    u32 pid;
    u32 tid;
    u32 cpu;
    u64 ts;
    u64 latency;
    char comm[16];
} __attribute__((packed));

struct start_key {
    u64 a;
    u64 b;
    u32 pair;
    u32 who;
};

struct agg_key {
    u32 probe;
    u32 pid;
    u32 slot;
};

BPF_RINGBUF_OUTPUT(events, RING_PAGES);
BPF_PERCPU_ARRAY(lost, u64, 1);
BPF_PERCPU_ARRAY(unwoken, u64, 1);
AGG_MAPS
static __always_inline void utrace_lost(void) {
    u32 zero = 0;
    u64 *n = lost.lookup(&zero);
    if (n) *n += 1;
}

static __always_inline u64 utrace_wakeup(u64 size) {
    u32 zero = 0;
    u64 *n = unwoken.lookup(&zero);
    if (!n) return 0;
    if (*n == 0) {
        *n = 1;
        return BPF_RB_FORCE_WAKEUP;
    }
    *n += size;
    if (*n < WAKE_BYTES) return BPF_RB_NO_WAKEUP;
    *n = 1;
    return BPF_RB_FORCE_WAKEUP;
}

static __always_inline int utrace_ids(u32 *pid, u32 *tid) {
PID_READ
    return 0;
}
FAMILY_HELPERS"""

# The processes descending from traced ones are kept by host tgid (a fork's child is not the current
# task, so its pid in utrace's namespace cannot be asked for); `target` holds pids as utrace sees them.
_FAMILY_HELPERS = """
static __always_inline int utrace_followed(void) {
    u32 host = bpf_get_current_pid_tgid() >> 32;
    return tracked.lookup(&host) != 0;
}

static __always_inline void utrace_family(u32 slot) {
    u64 *n = family.lookup(&slot);
    if (n) __sync_fetch_and_add(n, 1);
}
"""

_PID_HOST = """\
    u64 id = bpf_get_current_pid_tgid();
    *pid = id >> 32;
    *tid = (u32)id;"""

_PID_NS = """\
    struct bpf_pidns_info ns = {};
    if (bpf_get_ns_current_pid_tgid(NS_DEV, NS_INO, &ns, sizeof(ns)))
        return -1;
    *pid = ns.tgid;
    *tid = ns.pid;"""


def _wake_bytes(pages: int) -> int:
    """Bytes of events a CPU submits before it wakes the reader up (see the prelude's utrace_wakeup).

    A CPU's first event wakes the reader at once (its counter starts at 0, and is 1 from then on):
    the first event of a trace shows without waiting for the reader's poll timeout."""
    return max(4096, pages * 4096 // 16)


def render(specs: list[ProbeSpec], options: Options | None = None) -> BpfProgram:
    """Generate the BPF C program for `specs`.

    Raises:
        CodegenError: a spec uses a location or kind the generator cannot express.
    """
    opts = options or Options()
    _check(opts)
    timing = _Timing.of(specs, opts)
    lines = [_prelude(opts, _maps(specs, opts, timing))]
    pair_ids = _pair_ids(specs)
    all_fields: list[list[Field]] = []
    functions: list[str] = []
    for i, spec in enumerate(specs):
        fields = fields_of(spec)
        all_fields.append(fields)
        lines += _struct(i, fields, opts.stack_depth, opts.v8_frames is not None)
        body = _probe_body(i, spec, fields, opts, timing, pair_ids.get(spec.pair, 0))
        fn = f"probe_{i}"
        functions.append(fn)
        lines += [f"int {fn}(struct pt_regs *ctx) {{", *body, "}", ""]
    tracepoints: list[tuple[str, str]] = []
    if _filtered(opts):
        family = _family(opts)
        lines += _family_programs(family, opts.exec_file)
        tracepoints.append(("utrace_exec", "sched_process_exec"))
        if family is not None:
            tracepoints += [("utrace_fork", "sched_process_fork"), ("utrace_exit", "sched_process_exit")]
    return BpfProgram("\n".join(lines), list(specs), all_fields, functions, opts, tracepoints)


def _check(opts: Options) -> None:
    """Raises CodegenError for options the generator cannot express (see `Options`)."""
    pages = opts.ring_pages
    if pages <= 0 or pages & (pages - 1):
        raise CodegenError(f"ring buffer pages must be a power of two, not {pages}")
    depth = opts.stack_depth
    if not isinstance(depth, int) or not 0 <= depth <= MAX_STACK_DEPTH:
        raise CodegenError(f"stack depth must be 0 to {MAX_STACK_DEPTH}, not {depth!r}")
    if depth and opts.aggregate is not Aggregate.NONE:
        raise CodegenError("stacks are captured with streamed events only")
    if opts.v8_frames is not None and opts.v8_frames.fp_context_or_frame_type is None:
        raise CodegenError("V8 frames need the frame slot of the context or frame-type marker")
    if opts.keyed is not None and opts.aggregate is not Aggregate.COUNT:
        raise CodegenError("counts per value are kept with --count only")
    if opts.keyed is not None and opts.slower_than_ns is not None:
        raise CodegenError("counts per value are of every call, not only slow ones")
    _pid_read(opts)
    if opts.slower_than_ns is not None and not (isinstance(opts.slower_than_ns, int) and opts.slower_than_ns > 0):
        raise CodegenError(f"a latency threshold must be a positive number of nanoseconds, not {opts.slower_than_ns!r}")
    if opts.follow and (opts.pid is None or opts.family is None):
        raise CodegenError("following forked processes needs a pid filter and the kernel's task_struct offsets")
    if opts.exec_file is not None and (opts.pid is not None or opts.family is None or opts.exe_identity is None):
        raise CodegenError(
            "tracing the processes of one file needs no pid, the file's identity and the kernel's offsets"
        )
    if opts.pid is not None:
        _int(opts.pid)  # validated here although only the backend uses it (it goes into a map)
    if opts.exe_identity is not None:
        for v in opts.exe_identity:
            _int(v)  # into the `exe_file` map by the backend


def _filtered(opts: Options) -> bool:
    """Whether the program keeps to the processes in its `target` (and `tracked`) maps."""
    return opts.pid is not None or opts.exec_file is not None


def _family(opts: Options) -> FamilyOffsets | None:
    """The offsets for the fork and exit programs, which only a filtered program has."""
    return opts.family if _filtered(opts) else None


@dataclass(frozen=True, slots=True)
class _Timing:
    """Which probes time a call: an entry whose time a return probe needs (`starts`), and a return
    with latency (`returns`). Counting needs no timing: entries and returns are only counted."""

    latency_pairs: frozenset[str]
    counting: bool
    # pair -> (index, event bytes) of its begin (--slower-than)
    begins: dict[str, tuple[int, int]] = field(default_factory=dict)

    @staticmethod
    def of(specs: list[ProbeSpec], opts: Options) -> _Timing:
        counting = opts.aggregate is Aggregate.COUNT and opts.slower_than_ns is None  # counting slow calls times them
        return _Timing(
            slow.latency_pairs(specs), counting, slow.begin_index(specs, opts.stack_depth, opts.v8_frames is not None)
        )

    def starts(self, spec: ProbeSpec) -> bool:
        return slow.is_begin(spec, self.latency_pairs) and not self.counting

    def returns(self, spec: ProbeSpec) -> bool:
        return slow.is_end(spec) and not self.counting


def _pair_ids(specs: list[ProbeSpec]) -> dict[str, int]:
    """A number per `pair` key, in order of first appearance (what `start_key.pair` holds)."""
    ids: dict[str, int] = {}
    for spec in specs:
        if spec.pair:
            ids.setdefault(spec.pair, len(ids))
    return ids


def _pid_read(opts: Options) -> str:
    """The body of the prelude's `utrace_ids`: host ids, or those of utrace's PID namespace."""
    if opts.pid_ns is None:
        return _PID_HOST
    return _PID_NS.replace("NS_DEV", _int(opts.pid_ns[0])).replace("NS_INO", _int(opts.pid_ns[1]))


def _maps(specs: list[ProbeSpec], opts: Options, timing: _Timing) -> str:
    """The map declarations besides the prelude's own (ring buffer, loss and wakeup counters)."""
    maps = ""
    family = _family(opts)
    if _filtered(opts):
        # the pid is a map key, not a constant: the program's text (and so its compiled form,
        # which the backend caches) is the same whichever process is traced
        maps += f"BPF_HASH(target, u32, u32, {TARGET_ENTRIES});\n"
    if family is not None:
        maps += f"BPF_HASH(tracked, u32, u32, {TRACKED_ENTRIES});\n"
        maps += f"BPF_ARRAY(family, u64, {4 if opts.exec_file is not None else 3});\n"
    if opts.exec_file is not None:
        maps += "BPF_ARRAY(exe_file, u64, 2);\n"
    if any(isinstance(f, JsMatch) for s in specs for f in s.filters):
        from utrace.probes.v8values import MAPS

        maps += MAPS
    kept = opts.slower_than_ns is not None and opts.aggregate is Aggregate.NONE  # times kept in `slow_open`
    if any(timing.starts(s) or timing.returns(s) for s in specs) and not kept:
        maps += 'BPF_TABLE("lru_hash", struct start_key, u64, starts, 65536);\n'
    if opts.slower_than_ns is not None or any(
        s.kind is ProbeKind.USDT and (timing.starts(s) or timing.returns(s)) for s in specs
    ):
        maps += slow.program_maps(specs, opts, timing)
    if opts.aggregate is not Aggregate.NONE:
        # allocated as keys appear: a preallocated 65536-key per-CPU hash took 70 ms to create
        maps += 'BPF_F_TABLE("percpu_hash", struct agg_key, u64, counts, 65536, BPF_F_NO_PREALLOC);\n'
        if opts.aggregate is Aggregate.HIST:
            maps += 'BPF_F_TABLE("percpu_hash", struct agg_key, u64, hist, 65536, BPF_F_NO_PREALLOC);\n'
    if opts.keyed is not None:
        from utrace.probes import aggregate

        maps += aggregate.maps(opts.keyed)
    return maps


def _prelude(opts: Options, maps: str) -> str:
    """The program's declarations and helpers, before the probes' structs and functions."""
    # aggregating, there are no events: the ring buffer only has to exist
    pages = opts.ring_pages if opts.aggregate is Aggregate.NONE else 1
    return (
        _PRELUDE.replace("RING_PAGES", str(int(pages)))
        .replace("WAKE_BYTES", str(_wake_bytes(pages)))
        .replace("PID_READ", _pid_read(opts))
        .replace("AGG_MAPS", maps)
        .replace("FAMILY_HELPERS", _FAMILY_HELPERS if _family(opts) is not None else "")
    )


def _probe_body(
    index: int, spec: ProbeSpec, fields: list[Field], opts: Options, timing: _Timing, pair_id: int
) -> list[str]:
    """The statements of `probe_INDEX`: filter, time, then count or submit an event."""
    em = _Emitter(opts.fsbase_offset)
    em.emit("u32 pid = 0, tid = 0;")
    em.emit("if (utrace_ids(&pid, &tid)) return 0;")
    if _filtered(opts):
        em.emit("u32 *want = target.lookup(&pid);")
        if opts.follow or opts.exec_file is not None:
            em.emit(f"if ((!want || *want != {TARGET_TRACED}) && !utrace_followed()) return 0;")
        else:
            em.emit(f"if (!want || *want != {TARGET_TRACED}) return 0;")
    for f in spec.filters:
        _filter(em, f)
    if opts.slower_than_ns is not None:
        slow.body(em, index, spec, fields, opts, timing, pair_id)
        return em.lines
    agg = opts.aggregate
    is_return, is_start = timing.returns(spec), timing.starts(spec)
    if agg is Aggregate.NONE or is_return or is_start:
        em.emit("u64 now = bpf_ktime_get_ns();")
    if is_start:
        _frame_key(em, spec, pair_id, sp_adjust=0)
        em.emit("starts.update(&sk, &now);")
    if is_return:
        # A uretprobe runs after `ret` popped the return address (sp + 8 of the entry's sp);
        # an exit probe sits on the `ret` itself, where sp equals the entry's sp again.
        _frame_key(em, spec, pair_id, sp_adjust=8 if spec.kind is ProbeKind.RETURN else 0)
        em.emit("u64 *start = starts.lookup(&sk);")
        if em.paired_only:
            em.emit("if (!start) return 0;")
        em.emit("u64 latency = 0;")
        em.emit("if (start) { latency = now - *start; starts.delete(&sk); }")
        if any(isinstance(f, AfterEntry) for f in spec.filters):
            em.emit("if (!start) return 0;")
    elif any(isinstance(f, AfterEntry) for f in spec.filters):
        raise CodegenError("a return reported only after its entry needs the entry's time (latency)")
    if agg is not Aggregate.NONE:
        _count(em, "counts", index, "0")
        if opts.keyed is not None:
            from utrace.probes import aggregate

            aggregate.emit(em, index, opts.keyed)
        if agg is Aggregate.HIST and is_return:
            em.emit("if (start) {")
            _count(em, "hist", index, "bpf_log2l(latency)", indent="    ")
            em.emit("}")
        em.emit("return 0;")
    else:
        _submit(em, index, spec, fields, opts.stack_depth, "latency" if is_return else "0", opts.v8_frames)
    return em.lines


def _submit(
    em: _Emitter, index: int, spec: ProbeSpec, fields: list[Field], depth: int, latency: str, v8: V8Layout | None = None
) -> None:
    """Reserve `struct event_INDEX` in the ring (or count a loss), fill it and submit it."""
    em.emit(f"struct event_{index} *e = events.ringbuf_reserve(sizeof(struct event_{index}));")
    em.emit("if (!e) {")
    em.emit("    utrace_lost();")
    em.emit("    return 0;")
    em.emit("}")
    _fill(em, index, spec, fields, depth, latency, v8)
    if depth:
        # stacks are resolved through /proc/PID, read while the process lives: the kernel's default wakes
        # a reader that has caught up (one behind reads this record next; see utrace.app.readahead).
        # Forcing a wakeup per event was measured: no earlier read, an irq_work per call.
        em.emit("events.ringbuf_submit(e, 0);")
    else:
        em.emit(f"events.ringbuf_submit(e, utrace_wakeup(sizeof(struct event_{index})));")
    em.emit("return 0;")


def _fill(
    em: _Emitter, index: int, spec: ProbeSpec, fields: list[Field], depth: int, latency: str, v8: V8Layout | None = None
) -> None:
    """Fill `e`, a `struct event_INDEX *`: header, captured values, user stack."""
    em.emit(f"e->h.probe = {index};")
    em.emit("e->h.pid = pid;")
    em.emit("e->h.tid = tid;")
    em.emit("e->h.cpu = bpf_get_smp_processor_id();")
    em.emit("e->h.ts = now;")
    em.emit(f"e->h.latency = {latency};")
    em.emit("bpf_get_current_comm(&e->h.comm, sizeof(e->h.comm));")
    for fl in fields:
        _capture(em, fl)
    if depth:
        _stack(em, spec, depth, v8)


def _family_programs(family: FamilyOffsets | None, exec_file: ExecOffsets | None = None) -> list[str]:
    """The raw tracepoint programs of a pid-filtered program (see `Options`).

    `utrace_exec` runs in the exec'ing process once its new image is in place, before its first
    instruction. `utrace_fork` runs in the parent (args[1] is the child's task_struct); a new thread has
    its parent's tgid and is not a new process. `utrace_exit` runs in each exiting thread; a process has
    ended when its `signal->live` count is 0 (the kernel decrements it just before this tracepoint), not
    when its first thread (the leader) exits, which may be long before the others, or by an exec from
    another thread. Entries are removed before the kernel frees the pid, so a pid in either map is
    never a later process that reused the number. With `exec_file`, `utrace_exec` compares the exec'd
    file (args[2] is the linux_binprm) with the one in `exe_file` instead (see `Options`).
    """
    out = (
        _exec_file_program(exec_file)
        if exec_file is not None
        else [
            "int utrace_exec(struct bpf_raw_tracepoint_args *ctx) {",
            "    u32 pid = 0, tid = 0;",
            "    if (utrace_ids(&pid, &tid)) return 0;",
            "    u32 *t = target.lookup(&pid);",
            f"    if (t && *t == {TARGET_AWAITING_EXEC}) *t = {TARGET_TRACED};",
            "    return 0;",
            "}",
            "",
        ]
    )
    if family is None:
        return out
    tgid, signal, live = (_int(v) for v in (family.tgid, family.signal, family.live))
    return [
        *out,
        "int utrace_fork(struct bpf_raw_tracepoint_args *ctx) {",
        "    u32 pid = 0, tid = 0;",
        "    if (utrace_ids(&pid, &tid)) return 0;",
        "    u32 *t = target.lookup(&pid);",
        f"    if ((!t || *t != {TARGET_TRACED}) && !utrace_followed()) return 0;",
        "    u32 host = bpf_get_current_pid_tgid() >> 32;",
        "    u32 child = 0;",
        f"    bpf_probe_read_kernel(&child, 4, (void *)(ctx->args[1] + {tgid}));",
        "    if (child == 0 || child == host) return 0;",
        "    u32 one = 1;",
        "    if (tracked.insert(&child, &one) == 0) {",
        f"        utrace_family({FAMILY_ADDED});",
        "    } else if (!tracked.lookup(&child)) {",
        f"        utrace_family({FAMILY_OVERFLOW});",
        "    }",
        "    return 0;",
        "}",
        "",
        "int utrace_exit(struct bpf_raw_tracepoint_args *ctx) {",
        "    u64 task = bpf_get_current_task();",
        "    u64 sig = 0;",
        "    s32 live = 1;",
        f"    bpf_probe_read_kernel(&sig, 8, (void *)(task + {signal}));",
        f"    if (sig == 0 || bpf_probe_read_kernel(&live, 4, (void *)(sig + {live})) < 0 || live != 0) return 0;",
        "    u32 host = bpf_get_current_pid_tgid() >> 32;",
        f"    if (tracked.delete(&host) == 0) utrace_family({FAMILY_REMOVED});",
        "    u32 pid = 0, tid = 0;",
        f"    if (utrace_ids(&pid, &tid) == 0 && target.delete(&pid) == 0) utrace_family({FAMILY_REMOVED});",
        "    return 0;",
        "}",
        "",
    ]


def _exec_file_program(o: ExecOffsets) -> list[str]:
    """`utrace_exec` for `Options.exec_file`: the process now runs the file (by inode and device, as the
    kernel's superblock has it), or it no longer does."""
    bprm_file, f_inode, i_ino, i_sb, s_dev = (
        _int(v) for v in (o.bprm_file, o.file_inode, o.inode_ino, o.inode_sb, o.sb_dev)
    )
    return [
        "int utrace_exec(struct bpf_raw_tracepoint_args *ctx) {",
        "    u32 pid = 0, tid = 0;",
        "    if (utrace_ids(&pid, &tid)) return 0;",
        "    u32 host = bpf_get_current_pid_tgid() >> 32;",
        "    u32 k_ino = 0, k_dev = 1;",
        "    u64 *want_ino = exe_file.lookup(&k_ino);",
        "    u64 *want_dev = exe_file.lookup(&k_dev);",
        "    if (!want_ino || !want_dev) return 0;",
        "    u64 file = 0, inode = 0, sb = 0, ino = 0;",
        "    u32 dev = 0;",
        f"    bpf_probe_read_kernel(&file, 8, (void *)(ctx->args[2] + {bprm_file}));",
        f"    if (file) bpf_probe_read_kernel(&inode, 8, (void *)(file + {f_inode}));",
        "    if (inode) {",
        f"        bpf_probe_read_kernel(&ino, 8, (void *)(inode + {i_ino}));",
        f"        bpf_probe_read_kernel(&sb, 8, (void *)(inode + {i_sb}));",
        "    }",
        f"    if (sb) bpf_probe_read_kernel(&dev, 4, (void *)(sb + {s_dev}));",
        "    if (sb && ino == *want_ino && dev == *want_dev) {",
        "        u32 one = 1;",
        "        if (tracked.insert(&host, &one) == 0) {",
        f"            utrace_family({FAMILY_EXECED});",
        "        } else if (!tracked.lookup(&host)) {",
        f"            utrace_family({FAMILY_OVERFLOW});",
        "        }",
        "        return 0;",
        "    }",
        f"    if (tracked.delete(&host) == 0) utrace_family({FAMILY_REMOVED});",
        f"    if (target.delete(&pid) == 0) utrace_family({FAMILY_REMOVED});",
        "    return 0;",
        "}",
        "",
    ]
