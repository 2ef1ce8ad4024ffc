"""The BPF C generator: golden programs, errors, the no-text-reaches-C rule, and a C syntax check.

Golden files live in tests/unit/golden/. After an intended change to the generator, regenerate them
with `UTRACE_UPDATE_GOLDEN=1 pytest tests/unit/test_codegen.py` and review the diff.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from utrace.model import (
    ArgKind,
    ArgSpec,
    Const,
    Deref,
    Diff,
    Filter,
    PrefixFilter,
    ProbeKind,
    ProbeSpec,
    Reg,
    Stack,
    Tls,
)
from utrace.probes import slow
from utrace.probes.codegen import (
    PREFIX_MAX,
    PT_REGS,
    Aggregate,
    CodegenError,
    ExecOffsets,
    FamilyOffsets,
    Options,
    render,
    slot_range,
)
from utrace.probes.layout import HEADER_FORMAT, event_format

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UTRACE_UPDATE_GOLDEN") == "1"

HANDLE_LABELS = ((7, "pipe"), (12, "tcp"), (15, "udp"))
TCP_ONLY = Filter(Deref(Reg("rdi"), 16, 4), ArgKind.S32, 12)


def entry_specs() -> list[ProbeSpec]:
    """An entry probe using every capture style: ints of several widths, strings, derefs, stack, filter."""
    args = (
        ArgSpec("name", ArgKind.CSTR, Reg("rdi"), max_len=32),
        ArgSpec("n", ArgKind.S32, Reg("rsi")),
        ArgSpec("data", ArgKind.PTRLEN_STR, Reg("rdx"), length=Reg("rcx"), length_kind=ArgKind.S32, max_len=20),
        ArgSpec("type", ArgKind.S32, Deref(Reg("rdi"), 16, 4), labels=HANDLE_LABELS),
        ArgSpec("ratio", ArgKind.UNAVAILABLE, note="floating-point register"),
        ArgSpec("ok", ArgKind.BOOL, Reg("r8")),
        ArgSpec("handle", ArgKind.PTR, Reg("r9")),
        ArgSpec("seventh", ArgKind.U64, Stack(8)),
        ArgSpec("inner", ArgKind.U16, Deref(Deref(Reg("rsi"), 8, 8), -4, 2)),
    )
    return [
        ProbeSpec(
            "demo_greet",
            "/srv/demo/prog",
            0x1130,
            ProbeKind.ENTRY,
            args=args,
            filters=(TCP_ONLY,),
            pair="/srv/demo/prog:4400",
            address=0x401130,
        )
    ]


def return_specs() -> list[ProbeSpec]:
    """An entry/return pair with latency, a second entry without a return, and a return without latency."""
    m = "/srv/demo/prog"
    ret = ArgSpec("ret", ArgKind.S64, Reg("rax"))
    return [
        ProbeSpec("other", m, 0x2000, ProbeKind.ENTRY, args=(ArgSpec("x", ArgKind.S64, Reg("rdi")),), pair=f"{m}:8192"),
        ProbeSpec(
            "demo_add",
            m,
            0x1150,
            ProbeKind.ENTRY,
            args=(ArgSpec("a", ArgKind.S64, Reg("rdi")), ArgSpec("b", ArgKind.S64, Reg("rsi"))),
            pair=f"{m}:4432",
        ),
        ProbeSpec("demo_add", m, 0x1150, ProbeKind.RETURN, ret=ret, latency=True, pair=f"{m}:4432"),
        ProbeSpec("demo_alloc", m, 0x1200, ProbeKind.RETURN, ret=ArgSpec("ret", ArgKind.PTR, Reg("rax"))),
    ]


def usdt_specs() -> list[ProbeSpec]:
    """USDT probes: constants, a `-4@%eax` register, memory operands, an unreadable one, a ptr+len string."""
    m = "/usr/lib/jvm/libjvm.so"
    tick = (
        ArgSpec("arg0", ArgKind.S32, Const(-1)),
        ArgSpec("arg1", ArgKind.U64, Const(42)),
        ArgSpec("arg2", ArgKind.S32, Deref(Reg("rbp"), -8, 4)),
        ArgSpec("arg3", ArgKind.S32, Reg("rax")),
        ArgSpec("arg4", ArgKind.U64, Deref(Reg("rsp"), 152, 8)),
        ArgSpec("arg5", ArgKind.UNAVAILABLE, note="operand 8@(%rax,%rbx,8) not readable from BPF"),
    )
    loaded = (
        ArgSpec("name", ArgKind.PTRLEN_STR, Reg("rdi"), length=Reg("rsi"), length_kind=ArgKind.S32, max_len=64),
        ArgSpec("loader", ArgKind.PTR, Reg("rdx")),
        ArgSpec("shared", ArgKind.BOOL, Reg("rcx")),
    )
    return [
        ProbeSpec("sdt_demo:tick", "/srv/demo/sdt_demo", 0x1188, ProbeKind.USDT, args=tick, ref_ctr_offset=0x4010),
        ProbeSpec("hotspot:class__loaded", m, 0x9A0F00, ProbeKind.USDT, args=loaded, ref_ctr_offset=0x1ACD2F0),
    ]


def pid_specs() -> list[ProbeSpec]:
    return [
        ProbeSpec(
            "uv_run", "/usr/lib/libuv.so.1", 0x1234, ProbeKind.ENTRY, args=(ArgSpec("mode", ArgKind.S32, Reg("rsi")),)
        )
    ]


def prefix_specs() -> list[ProbeSpec]:
    """HotSpot's method__entry narrowed in BPF to classes starting with `Demo` or `java/util/`."""
    cls = ArgSpec("class", ArgKind.PTRLEN_STR, Reg("rdx"), length=Reg("rcx"), length_kind=ArgKind.S32, max_len=256)
    only = PrefixFilter(cls.loc, Reg("rcx"), ArgKind.S32, (b"Demo", b"java/util/"))
    return [
        ProbeSpec(
            "hotspot:method__entry",
            "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so",
            0x9B0000,
            ProbeKind.USDT,
            args=(ArgSpec("java_tid", ArgKind.S64, Reg("rax")), cls),
            filters=(only,),
        )
    ]


PID_OPTIONS = Options(pid=4242, pid_ns=(4, 4026532281), ring_pages=256)
FAMILY = FamilyOffsets(tgid=0x4F4, signal=0x738, live=4)
FOLLOW_OPTIONS = Options(pid=4242, ring_pages=256, follow=True, family=FAMILY)
EXEC = ExecOffsets(bprm_file=0x40, file_inode=0x20, inode_ino=0x40, inode_sb=0x28, sb_dev=0x10)
EXEC_FILE_OPTIONS = Options(ring_pages=256, family=FAMILY, exec_file=EXEC, exe_identity=(260601, 254 << 20))


def go_specs() -> list[ProbeSpec]:
    """A Go function in the stack ABI: entry after the stack check, one exit probe per `ret`."""
    g = Tls(-8)
    frame = (g, Diff(Deref(g, 8), Reg("rsp")))
    goid = (ArgSpec("goid", ArgKind.S64, Deref(g, 152)),)
    name = ArgSpec("name", ArgKind.PTRLEN_STR, Stack(8), length=Stack(16), max_len=64)
    res = (ArgSpec("r0", ArgKind.S64, Stack(32)),)
    common = {"module": "/srv/greet", "pair": "main.Greet", "frame": frame, "context": goid, "latency": True}
    return [
        ProbeSpec("main.Greet", offset=0x9E84D, kind=ProbeKind.ENTRY, args=(name,), **common),  # type: ignore[arg-type]
        ProbeSpec("main.Greet", offset=0x9E935, kind=ProbeKind.EXIT, args=res, **common),  # type: ignore[arg-type]
    ]


GO_OPTIONS = Options(fsbase_offset=0x1B48)


def timed_specs() -> list[ProbeSpec]:
    """return_specs without the probes --slower-than cannot time (an entry alone, a return without latency)."""
    specs = return_specs()
    untimed = slow.untimed(specs)
    return [s for s in specs if s not in untimed]


def usdt_pair_specs() -> list[ProbeSpec]:
    """A USDT begin/end pair (PostgreSQL's query__start/query__done), paired per thread and nesting."""
    m = "/usr/lib/postgresql/15/bin/postgres"
    q = (ArgSpec("query", ArgKind.CSTR, Reg("rbx"), max_len=256),)
    key = f"usdt:{m}:postgresql:query__start"
    return [
        ProbeSpec("postgresql:query__start", m, 0x4A1F0, ProbeKind.USDT, args=q, pair=key),
        ProbeSpec("postgresql:query__done", m, 0x4A3C8, ProbeKind.USDT, args=q, pair=key, latency=True),
    ]


SLOW = 10_000_000

CASES = {
    "entry": (entry_specs, None),
    "return_latency": (return_specs, None),
    "usdt": (usdt_specs, None),
    "pid_ns": (pid_specs, PID_OPTIONS),
    "follow": (pid_specs, FOLLOW_OPTIONS),
    "exec_file": (pid_specs, EXEC_FILE_OPTIONS),
    "go_stack_abi": (go_specs, GO_OPTIONS),
    "prefix_filter": (prefix_specs, None),
    "count": (entry_specs, Options(aggregate=Aggregate.COUNT)),
    "hist": (return_specs, Options(aggregate=Aggregate.HIST)),
    "hist_go": (go_specs, Options(fsbase_offset=0x1B48, aggregate=Aggregate.HIST)),
    "stack": (lambda: return_specs() + go_specs() + usdt_specs(), Options(fsbase_offset=0x1B48, stack_depth=16)),
    "usdt_pair": (usdt_pair_specs, None),
    "usdt_pair_hist": (usdt_pair_specs, Options(aggregate=Aggregate.HIST)),
    "slower_than": (lambda: timed_specs() + usdt_pair_specs(), Options(slower_than_ns=SLOW)),
    "slower_than_count": (timed_specs, Options(aggregate=Aggregate.COUNT, slower_than_ns=SLOW)),
    "slower_than_hist": (
        lambda: timed_specs() + usdt_pair_specs(),
        Options(aggregate=Aggregate.HIST, slower_than_ns=SLOW),
    ),
    "slower_than_go_stack": (go_specs, Options(fsbase_offset=0x1B48, stack_depth=16, slower_than_ns=SLOW)),
}


def check_golden(name: str, source: str) -> None:
    path = GOLDEN / f"{name}.bpf.c"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(source, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with UTRACE_UPDATE_GOLDEN=1 to create it"
    assert source == path.read_text(encoding="utf-8"), f"generated C differs from {path.name}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    make, options = CASES[name]
    check_golden(name, render(make(), options).source)


def _probe_body(source: str, index: int) -> str:
    m = re.search(rf"^int probe_{index}\(struct pt_regs \*ctx\) {{\n(.*?)^}}\n", source, re.M | re.S)
    assert m, f"probe_{index} not found"
    return m.group(1)


def _struct_body(source: str, index: int) -> list[str]:
    m = re.search(rf"^struct event_{index} {{\n(.*?)^}} __attribute__\(\(packed\)\);", source, re.M | re.S)
    assert m, f"struct event_{index} not found"
    return [ln.strip() for ln in m.group(1).splitlines()]


# --- Targeted properties of the golden programs (so a bad golden file cannot hide a bug) ----------


def test_entry_program_shape():
    prog = render(entry_specs())
    assert prog.functions == ["probe_0"]
    assert len(prog.fields) == 1
    assert [f.c_name for f in prog.fields[0]] == [f"f{i}" for i in range(9)]
    # strings get a length, flags and a buffer rounded up to 8 bytes; the unavailable value has no member
    assert _struct_body(prog.source, 0) == [
        "struct header h;",
        "u32 f0_len;",
        "u32 f0_flags;",
        "char f0[32];",
        "u64 f1;",
        "u32 f2_len;",
        "u32 f2_flags;",
        "char f2[24];",
        "u64 f3;",
        "u64 f5;",
        "u64 f6;",
        "u64 f7;",
        "u64 f8;",
    ]
    body = _probe_body(prog.source, 0)
    # the filter runs before anything is reserved, on the 4-byte handle type at rdi+16
    before = body[: body.index("ringbuf_reserve")]
    assert "bpf_probe_read_user(&t1, 4, (void *)(t2 + 16ULL));" in before
    assert "if ((s32)t1 != (s32)12ULL) return 0;" in before
    assert "bpf_probe_read_user_str(e->f0, 32, " in body
    assert "(void *)(ctx->sp + 8ULL)" in body  # the seventh argument
    assert ", 2, (void *)(" in body and "+ -4LL));" in body  # the nested 2-byte dereference
    assert re.search(r"s64 t\d+ = \(s64\)\(s32\)t\d+;", body)  # a -4@ length is sign-extended before the checks
    assert "starts." not in body  # no latency pairing without a return probe
    assert "e->h.latency = 0;" in body


def test_return_program_pairs_entry_and_return():
    prog = render(return_specs())
    src = prog.source
    assert prog.functions == ["probe_0", "probe_1", "probe_2", "probe_3"]
    other, entry, ret, alloc = (_probe_body(src, i) for i in range(4))
    assert "starts." not in other  # its pair has no return probe
    assert "struct start_key sk = { .a = ctx->sp, .b = 0, .pair = 1, .who = tid };" in entry
    assert "starts.update(&sk, &now);" in entry
    assert "struct start_key sk = { .a = ctx->sp - 8ULL, .b = 0, .pair = 1, .who = tid };" in ret
    assert "starts.delete(&sk);" in ret
    assert "e->h.latency = latency;" in ret
    assert "starts." not in alloc and "e->h.latency = 0;" in alloc
    # the return value is the first (and only) field
    assert _struct_body(src, 2) == ["struct header h;", "u64 f0;"]
    assert "u64 t1 = ctx->ax;" in ret


def test_usdt_program_constants_and_memory():
    prog = render(usdt_specs())
    tick = _probe_body(prog.source, 0)
    assert "= (u64)-1LL;" in tick
    assert "= (u64)42ULL;" in tick
    assert "+ -8LL));" in tick
    assert "ctx->ax;" in tick
    assert "ctx->sp;" in tick and "+ 152ULL));" in tick
    assert [ln for ln in _struct_body(prog.source, 0) if ln.startswith("u64")] == [f"u64 f{i};" for i in range(5)]
    loaded = _probe_body(prog.source, 1)
    assert "char f0[64];" in _struct_body(prog.source, 1)
    assert "bpf_probe_read_user(e->f0, k, " in loaded
    # semaphores are the kernel's business (ref_ctr_offset): never in the C source
    assert str(0x4010) not in prog.source and str(0x1ACD2F0) not in prog.source


def test_prefix_filter_compares_bytes_before_reserving():
    body = _probe_body(render(prefix_specs()).source, 0)
    assert body.index("return 0;") < body.index("ringbuf_reserve")
    assert "u64 t5[2] = {};" in body  # 8-byte words covering the longest prefix
    assert "u64 t4 = t3 > 10 ? 10 : (u64)t3;" in body  # never more than the string's own length
    assert "bpf_probe_read_user(t5, t4, (void *)t1)" in body
    demo = int.from_bytes(b"Demo", "little")
    assert f"if (t3 >= 4 && (((t5[0] & {0xFFFFFFFF}ULL) ^ {demo}ULL)) == 0) t6 = 1;" in body
    java = [int.from_bytes(b"java/uti", "little"), int.from_bytes(b"l/", "little")]
    assert f"if (t3 >= 10 && ((t5[0] ^ {java[0]}ULL) | ((t5[1] & 65535ULL) ^ {java[1]}ULL)) == 0) t6 = 1;" in body
    assert "if (!t6) return 0;" in body
    assert "Demo" not in body and "java" not in body  # bytes as integers, never text


@pytest.mark.parametrize("prefixes", [(), (b"",), (b"x" * 65,)])
def test_prefix_filter_bounds(prefixes):
    f = PrefixFilter(Reg("rdx"), Reg("rcx"), ArgKind.S32, prefixes)
    with pytest.raises(CodegenError):
        render([ProbeSpec("p", "/m", 1, ProbeKind.USDT, filters=(f,))])


def test_pid_filter_and_namespace():
    src = render(pid_specs(), PID_OPTIONS).source
    assert "BPF_RINGBUF_OUTPUT(events, 256);" in src
    assert "bpf_get_ns_current_pid_tgid(4ULL, 4026532281ULL, &ns, sizeof(ns))" in src
    assert "bpf_get_current_pid_tgid()" not in src
    body = _probe_body(src, 0)
    assert body.index("u32 *want = target.lookup(&pid);") < body.index("if (!want || *want != 1) return 0;")
    assert body.index("if (!want || *want != 1) return 0;") < body.index("ringbuf_reserve")
    assert "BPF_HASH(target, u32, u32, 4096);" in src and "4242" not in src  # the backend puts the pid in the map
    other = replace(PID_OPTIONS, pid=17)
    assert render(pid_specs(), other).source == src  # one text (one cached compiled form) for every pid


def _function(source: str, name: str) -> str:
    m = re.search(rf"^int {name}\(struct bpf_raw_tracepoint_args \*ctx\) {{\n(.*?)^}}\n", source, re.M | re.S)
    assert m, f"{name} not found"
    return m.group(1)


def test_launched_process_is_traced_from_its_exec():
    """A pid filter comes with a program on sched_process_exec that turns a launched process awaiting
    its exec (2) into a traced one (1): probes only admit 1, so the held fork of utrace is never seen."""
    prog = render(pid_specs(), PID_OPTIONS)
    assert prog.tracepoints == [("utrace_exec", "sched_process_exec")]
    body = _function(prog.source, "utrace_exec")
    assert "if (t && *t == 2) *t = 1;" in body
    assert "tracked" not in prog.source and "utrace_fork" not in prog.source  # no offsets: no fork program
    assert render(pid_specs()).tracepoints == []  # no pid filter: nothing to follow


def test_follow_admits_tracked_processes_and_the_fork_program_keeps_them():
    prog = render(pid_specs(), FOLLOW_OPTIONS)
    assert [t for _, t in prog.tracepoints] == ["sched_process_exec", "sched_process_fork", "sched_process_exit"]
    probe = _probe_body(prog.source, 0)
    assert "if ((!want || *want != 1) && !utrace_followed()) return 0;" in probe
    fork = _function(prog.source, "utrace_fork")
    assert "ctx->args[1] + 1268ULL" in fork  # the child's tgid, at the kernel's offset
    assert "if (child == 0 || child == host) return 0;" in fork  # a new thread is not a new process
    exit_ = _function(prog.source, "utrace_exit")
    assert "task + 1848ULL" in exit_ and "sig + 4ULL" in exit_ and "live != 0) return 0;" in exit_
    assert "tracked.delete(&host)" in exit_ and "target.delete(&pid)" in exit_
    # without --follow the fork program still keeps the family (a launched tree is ended through it),
    # but the probes admit only the target
    quiet = render(pid_specs(), replace(FOLLOW_OPTIONS, follow=False))
    assert "utrace_followed()" not in _probe_body(quiet.source, 0)
    assert "utrace_fork" in quiet.source


def test_exec_file_keeps_the_processes_running_the_file():
    """Processes whose exec'd file has the inode and device in `exe_file` join `tracked`; one that execs
    another file leaves both maps; forks and exits keep them as with --follow; probes admit them."""
    prog = render(pid_specs(), EXEC_FILE_OPTIONS)
    assert [t for _, t in prog.tracepoints] == ["sched_process_exec", "sched_process_fork", "sched_process_exit"]
    assert "BPF_ARRAY(exe_file, u64, 2);" in prog.source and "BPF_ARRAY(family, u64, 4);" in prog.source
    assert "if ((!want || *want != 1) && !utrace_followed()) return 0;" in _probe_body(prog.source, 0)
    body = _function(prog.source, "utrace_exec")
    assert "ctx->args[2] + 64ULL" in body  # linux_binprm.file, at the kernel's offset
    assert "file + 32ULL" in body and "inode + 64ULL" in body and "inode + 40ULL" in body and "sb + 16ULL" in body
    assert "if (sb && ino == *want_ino && dev == *want_dev) {" in body
    assert "tracked.insert(&host, &one) == 0" in body
    assert "tracked.delete(&host)" in body and "target.delete(&pid)" in body
    assert "260601" not in prog.source  # the file's identity is a map value, not program text
    assert "utrace_fork" in prog.source and "utrace_exit" in prog.source


def test_exec_file_needs_no_pid_an_identity_and_offsets():
    for bad in (
        replace(EXEC_FILE_OPTIONS, pid=1),
        replace(EXEC_FILE_OPTIONS, family=None),
        replace(EXEC_FILE_OPTIONS, exe_identity=None),
    ):
        with pytest.raises(CodegenError):
            render(pid_specs(), bad)


def test_follow_needs_a_pid_and_offsets():
    with pytest.raises(CodegenError):
        render(pid_specs(), Options(follow=True, family=FAMILY))
    with pytest.raises(CodegenError):
        render(pid_specs(), Options(pid=1, follow=True))


def test_default_options_read_host_pids():
    src = render(pid_specs()).source
    assert "bpf_get_current_pid_tgid()" in src
    assert "bpf_get_ns_current_pid_tgid" not in src
    assert "pid != " not in src and "target" not in src
    assert "BPF_RINGBUF_OUTPUT(events, 4096);" in src


def test_empty_spec_list_renders_prelude_only():
    prog = render([])
    assert prog.functions == [] and prog.fields == []
    assert "int probe_" not in prog.source


def test_string_capacity_is_clamped_and_rounded():
    specs = [
        ProbeSpec("s", "/m", 0, ProbeKind.ENTRY, args=(ArgSpec("a", ArgKind.CSTR, Reg("rdi"), max_len=n),))
        for n in (1, 9, 4096, 100000)
    ]
    prog = render(specs)
    assert [f[0].capacity for f in prog.fields] == [8, 16, 4096, 4096]


# --- Errors ----------------------------------------------------------------------------------------


def _one(arg: ArgSpec) -> list[ProbeSpec]:
    return [ProbeSpec("p", "/m", 0, ProbeKind.ENTRY, args=(arg,))]


@pytest.mark.parametrize("reg", ["eax", "xmm0", "RDI", "", "rdi; x", "di"])
def test_bad_register(reg):
    with pytest.raises(CodegenError, match="register"):
        render(_one(ArgSpec("a", ArgKind.S64, Reg(reg))))


def test_bad_register_inside_deref_and_filter():
    with pytest.raises(CodegenError):
        render(_one(ArgSpec("a", ArgKind.S64, Deref(Reg("eax"), 0, 8))))
    spec = ProbeSpec("p", "/m", 0, ProbeKind.ENTRY, filters=(Filter(Reg("bogus"), ArgKind.S32, 1),))
    with pytest.raises(CodegenError):
        render([spec])


@pytest.mark.parametrize("pages", [0, -4, 3, 6, 100, 4095])
def test_ring_pages_not_power_of_two(pages):
    with pytest.raises(CodegenError, match="power of two"):
        render(pid_specs(), Options(ring_pages=pages))


@pytest.mark.parametrize("pages", [1, 2, 64, 4096, 1 << 18])
def test_ring_pages_power_of_two(pages):
    assert f"BPF_RINGBUF_OUTPUT(events, {pages});" in render(pid_specs(), Options(ring_pages=pages)).source


@pytest.mark.parametrize("size", [0, 3, 5, 16, -8])
def test_bad_deref_size(size):
    with pytest.raises(CodegenError, match="size"):
        render(_one(ArgSpec("a", ArgKind.S64, Deref(Reg("rdi"), 0, size))))


def test_ptrlen_without_length():
    with pytest.raises(CodegenError, match="length"):
        render(_one(ArgSpec("s", ArgKind.PTRLEN_STR, Reg("rdi"))))


@pytest.mark.parametrize("kind", [ArgKind.CSTR, ArgKind.PTRLEN_STR, ArgKind.UNAVAILABLE])
def test_filter_on_non_integer(kind):
    spec = ProbeSpec("p", "/m", 0, ProbeKind.ENTRY, filters=(Filter(Reg("rdi"), kind, 1),))
    with pytest.raises(CodegenError):
        render([spec])


@pytest.mark.parametrize("value", [True, "1", 1.0, None])
def test_non_integer_constants(value):
    with pytest.raises(CodegenError, match="integer"):
        render(_one(ArgSpec("a", ArgKind.S64, Const(value))))  # type: ignore[arg-type]
    with pytest.raises(CodegenError):
        render(_one(ArgSpec("a", ArgKind.S64, Stack(value))))  # type: ignore[arg-type]
    if value is not None:  # pid=None means "every process"
        with pytest.raises(CodegenError):
            render(pid_specs(), Options(pid=value))  # type: ignore[arg-type]


def test_unknown_location():
    with pytest.raises(CodegenError, match="location"):
        render(_one(ArgSpec("a", ArgKind.S64, "rdi")))  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [1 << 64, -(1 << 63) - 1, 99999999999999999999999])
def test_out_of_range_constant_is_a_codegen_error(value):
    with pytest.raises(CodegenError):
        render(_one(ArgSpec("a", ArgKind.S64, Const(value))))


# --- Security: no text from binaries or the command line reaches the C source -----------------------

HOSTILE = [
    "*/ int x; /*",
    '"\n#include </etc/shadow>\n',
    "a\\\n#define u64 char",
    "probe_0(struct pt_regs *ctx) { return 1; }",
    "}; int evil(void) { return 0; } //",
    "\x00\x01\u202e\ud800",
    "%s%n%x",
]


def _with_text(text: str) -> list[ProbeSpec]:
    """The golden specs with every free-text field replaced by `text` (pairs kept distinct)."""
    out: list[ProbeSpec] = []
    for make, _ in CASES.values():
        for s in make():
            args = tuple(_rename(a, text) for a in s.args)
            ret = _rename(s.ret, text) if s.ret else None
            out.append(
                ProbeSpec(
                    name=text,
                    module=text,
                    offset=s.offset,
                    kind=s.kind,
                    args=args,
                    ret=ret,
                    ref_ctr_offset=s.ref_ctr_offset,
                    filters=s.filters,
                    latency=s.latency,
                    pair=(text + "\0" + s.pair) if s.pair else "",
                    address=s.address,
                )
            )
    return out


def _rename(a: ArgSpec, text: str) -> ArgSpec:
    return ArgSpec(
        name=text,
        kind=a.kind,
        loc=a.loc,
        length=a.length,
        length_kind=a.length_kind,
        max_len=a.max_len,
        labels=tuple((v, text) for v, _ in a.labels),
        note=text if a.note else "",
    )


def _baseline() -> str:
    return render(_with_text("x"), PID_OPTIONS).source


def _assert_only_generated_text(src: str) -> None:
    assert src.count("#include") == 1
    assert set(re.findall(r'"([^"]*)"', src)) <= {"lru_hash", "percpu_hash"}  # BPF_TABLE("lru_hash", ...)
    assert src.count('"') == 2 * len(re.findall(r'"(?:lru_hash|percpu_hash)"', src))
    assert "/*" not in src and "*/" not in src and "//" not in src
    assert "\\" not in src
    assert src.isascii()


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_names_never_reach_c(text):
    src = render(_with_text(text), PID_OPTIONS).source
    assert src == _baseline()
    _assert_only_generated_text(src)
    for fragment in ("int x;", "evil", "/etc/shadow", "#define", "%n"):
        assert fragment not in src


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_arbitrary_text_never_reaches_c(text):
    assert render(_with_text(text), PID_OPTIONS).source == _baseline()


def _with_texts(draw_text) -> list[ProbeSpec]:
    """The golden specs with every free-text field replaced by its own `draw_text()` (a pair key by one
    text per original key, so entries and their returns stay paired)."""
    out: list[ProbeSpec] = []
    pairs: dict[str, str] = {}
    for make, _ in CASES.values():
        for s in make():

            def rename(a: ArgSpec) -> ArgSpec:
                return ArgSpec(
                    name=draw_text(),
                    kind=a.kind,
                    loc=a.loc,
                    length=a.length,
                    length_kind=a.length_kind,
                    max_len=a.max_len,
                    labels=tuple((v, draw_text()) for v, _ in a.labels),
                    note=draw_text() if a.note else "",
                )

            out.append(
                replace(
                    s,
                    name=draw_text(),
                    module=draw_text(),
                    args=tuple(rename(a) for a in s.args),
                    ret=rename(s.ret) if s.ret else None,
                    context=tuple(rename(a) for a in s.context),
                    pair=(pairs.setdefault(s.pair, draw_text()) + "\0" + s.pair) if s.pair else "",
                )
            )
    return out


# Probe names as users write them (C++ signatures, Go methods, USDT provider:name, globs) and as binaries
# carry them (mangled names, paths), mixed with C syntax and control characters.
_NAMEISH = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from(list("abcXYZ_:.*()<>[]&, /\\'\"#%;{}\n\t\x00-+=~!?$@`|^")), max_size=40),
    st.sampled_from(HOSTILE),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_independent_texts_in_every_field_never_reach_c(data):
    """Every name (probe, module, argument, label, note, pair key) drawn separately: the C is the same as
    with plain names, so none of it, nor any combination of it, is in the program."""
    specs = _with_texts(lambda: data.draw(_NAMEISH))
    assert render(specs, _TEXTS_OPTIONS).source == _TEXTS_BASELINE


_TEXTS_OPTIONS = replace(PID_OPTIONS, fsbase_offset=0x1B48)  # the Go specs keep their thread-local frame keys
_TEXTS_BASELINE = render(_with_texts(lambda: "x"), _TEXTS_OPTIONS).source


_PREFIX_TEST = re.compile(r"if \(t\d+ >= (\d+) && \((.*)\) == 0\) t\d+ = 1;")
_WORD_TERM = re.compile(r"\(\(?t\d+\[(\d+)\](?: & (\d+)ULL\))? \^ (\d+)ULL\)")


def _prefixes_in(src: str) -> list[bytes]:
    """Read the prefixes back from the C: per prefix, XOR terms of (masked) 8-byte words and constants."""
    out = []
    for n, terms in _PREFIX_TEST.findall(src):
        raw = b""
        for i, (word, mask, value) in enumerate(_WORD_TERM.findall(terms)):
            assert int(word) == i
            width = 8 if not mask else (int(mask).bit_length() // 8)
            assert not mask or int(mask) == (1 << (8 * width)) - 1
            raw += int(value).to_bytes(8, "little")[:width]
        assert len(raw) == int(n)
        out.append(raw)
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=PREFIX_MAX), min_size=1, max_size=4))
def test_filter_prefixes_reach_c_only_as_numbers(prefixes):
    """`method:CLASS` prefixes are bytes from the command line: the C holds them as integers that read
    back to exactly those bytes, and nothing else of them."""
    cls = ArgSpec("class", ArgKind.PTRLEN_STR, Reg("rdx"), length=Reg("rcx"), length_kind=ArgKind.S32, max_len=256)
    spec = replace(prefix_specs()[0], filters=(PrefixFilter(cls.loc, Reg("rcx"), ArgKind.S32, tuple(prefixes)),))
    src = render([spec]).source
    _assert_only_generated_text(src)
    assert _prefixes_in(src) == prefixes
    same_lengths = tuple(b"A" * len(p) for p in prefixes)
    neutral = replace(spec, filters=(PrefixFilter(cls.loc, Reg("rcx"), ArgKind.S32, same_lengths),))
    assert re.sub(r"\^ \d+ULL", "^ N", src) == re.sub(r"\^ \d+ULL", "^ N", render([neutral]).source)


_C_WORD = re.compile(r"\b[A-Za-z_]\w*")
_NUMBERED = re.compile(r"(?:t|f|probe_|event_)\d+(?:_len|_flags)?")
_GOLDEN_WORDS = {w for path in GOLDEN.glob("*.bpf.c") for w in _C_WORD.findall(path.read_text())}
# Strings as an ELF file holds them: any bytes but NUL, UTF-8 or not (elfgen writes str with surrogateescape).
_ELF_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=24
) | (st.binary(min_size=1, max_size=24).map(lambda b: b.replace(b"\0", b"?").decode("utf-8", "surrogateescape")))


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield tmp_path_factory.mktemp("elves")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    symbols=st.lists(_ELF_TEXT | st.sampled_from([h for h in HOSTILE if "\x00" not in h]), min_size=1, max_size=6),
    notes=st.lists(st.tuples(_ELF_TEXT, _ELF_TEXT, _ELF_TEXT | st.just("")), max_size=3),
    ret=st.booleans(),
)
def test_names_from_a_binary_never_reach_c(private_cache, symbols, notes, ret):
    """The whole `--dump-bpf` path on an ELF file whose symbol names, USDT providers, names and argument
    specs are arbitrary text: every word of the C is one the generator writes (the golden programs'
    words and numbered names), never one of the file's."""
    from tests.unit.elfgen import Probe, Sym, build_elf
    from utrace.app.session import SessionOptions, build
    from utrace.errors import UtraceError
    from utrace.runtimes.base import TraceRequest

    elf = build_elf(
        symtab=[Sym(n, 0x10 * i) for i, n in enumerate(symbols)],
        probes=[Probe(prov, name, 0x10 * i, spec) for i, (prov, name, spec) in enumerate(notes)],
        build_id=os.urandom(20),  # the symbol cache is keyed by build-id
        text_size=0x100,
    )
    path = elf.write(private_cache / f"elf-{next(_ELF_NAMES)}")
    built = 0
    for probes in (("*",), ("*:*",), tuple(symbols[:2])):
        try:
            _t, _plan, program = build(
                TraceRequest(runtime="native", binary=path, probes=probes, ret=ret), SessionOptions()
            )
        except UtraceError:
            continue
        built += 1
        _assert_only_generated_text(program.source)
        words = set(_C_WORD.findall(program.source))
        assert {w for w in words - _GOLDEN_WORDS if not _NUMBERED.fullmatch(w)} == set()
    assert built  # '*' matches the functions at least


_ELF_NAMES = itertools.count()


# --- Random specs: the C struct layout matches the decoder's struct format ---------------------------

REGS = sorted(PT_REGS)
# -(1 << 63) itself renders as `-9223372036854775808LL`, which compilers accept with a warning only
# (the literal is unsigned before the minus); the range starts one above so the gcc check can use -Werror.
I64_MIN = -(1 << 63) + 1
U64_MAX = (1 << 64) - 1
# JavaScript values need a probe with a JsMatch filter (the V8 layout): tested in test_v8js.py
JS_KINDS = (ArgKind.JSVALUE, ArgKind.JSNAME, ArgKind.JSSCRIPT)
INT_KINDS = [k for k in ArgKind if k not in (ArgKind.CSTR, ArgKind.PTRLEN_STR, ArgKind.UNAVAILABLE, *JS_KINDS)]
FILTER_KINDS = [*INT_KINDS]

locations = st.recursive(
    st.one_of(
        st.builds(Reg, st.sampled_from(REGS)),
        st.builds(Stack, st.integers(-4096, 4096)),
        st.builds(Const, st.integers(I64_MIN, U64_MAX)),
        st.builds(Tls, st.integers(-4096, 4096)),
    ),
    lambda inner: st.one_of(
        st.builds(Deref, inner, st.integers(-(1 << 31), 1 << 31), st.sampled_from([1, 2, 4, 8])),
        st.builds(Diff, inner, inner),
    ),
    max_leaves=3,
)


@st.composite
def arg_specs(draw):
    kind = draw(st.sampled_from([k for k in ArgKind if k not in JS_KINDS]))
    name = draw(st.text(max_size=8))
    if kind is ArgKind.UNAVAILABLE:
        return ArgSpec(name, kind, note=draw(st.text(max_size=8)))
    loc = draw(locations)
    if kind is ArgKind.PTRLEN_STR:
        return ArgSpec(
            name,
            kind,
            loc,
            length=draw(locations),
            length_kind=draw(st.sampled_from(INT_KINDS)),
            max_len=draw(st.integers(1, 5000)),
        )
    return ArgSpec(name, kind, loc, max_len=draw(st.integers(1, 5000)))


@st.composite
def probe_specs(draw):
    kind = draw(st.sampled_from(list(ProbeKind)))
    ret = draw(st.one_of(st.none(), arg_specs())) if kind is ProbeKind.RETURN else None
    frame = draw(st.one_of(st.none(), st.tuples(locations, locations)))
    return ProbeSpec(
        name=draw(st.text(max_size=10)),
        module=draw(st.text(max_size=10)),
        offset=draw(st.integers(0, 1 << 40)),
        kind=kind,
        args=tuple(draw(st.lists(arg_specs(), max_size=6))),
        ret=ret,
        filters=tuple(
            draw(
                st.lists(
                    st.builds(Filter, locations, st.sampled_from(FILTER_KINDS), st.integers(I64_MIN, U64_MAX)),
                    max_size=2,
                )
            )
        ),
        latency=draw(st.booleans()),
        pair=draw(st.sampled_from(["", "a", "b"])),
        frame=frame,
        context=tuple(draw(st.lists(arg_specs(), max_size=2))),
    )


options_st = st.builds(
    Options,
    pid=st.one_of(st.none(), st.integers(1, 1 << 22)),
    pid_ns=st.one_of(st.none(), st.tuples(st.integers(0, 1 << 32), st.integers(0, 1 << 32))),
    ring_pages=st.sampled_from([1, 8, 4096]),
    fsbase_offset=st.integers(0, 1 << 16),
    aggregate=st.sampled_from(list(Aggregate)),
    stack_depth=st.sampled_from([0, 0, 1, 2, 64, 127]),
)

_C_SIZES = {"u64": 8, "u32": 4}


def _c_struct_size(lines: list[str]) -> int:
    size = 0
    for ln in lines:
        if ln == "struct header h;":
            size += struct.calcsize(HEADER_FORMAT)
        elif m := re.fullmatch(r"char f\d+\[(\d+)\];", ln):
            size += int(m.group(1))
        elif ln == "s64 ustack_n;":
            size += 8
        elif m := re.fullmatch(r"u64 ustack\[(\d+)\];", ln):
            size += 8 * int(m.group(1))
        else:
            m = re.fullmatch(r"(u64|u32) f\d+(?:_len|_flags)?;", ln)
            assert m, ln
            size += _C_SIZES[m.group(1)]
    return size


@settings(max_examples=80, deadline=None)
@given(st.lists(probe_specs(), max_size=4), options_st)
def test_random_specs_render_consistent_layouts(specs, options):
    options = replace(options, aggregate=Aggregate.NONE)  # events, whose layout is checked here
    prog = render(specs, options)
    depth = options.stack_depth
    src = prog.source
    _assert_only_generated_text(src)
    assert prog.functions == [f"probe_{i}" for i in range(len(specs))]
    assert src.count("{") == src.count("}")
    for i, fields in enumerate(prog.fields):
        assert _c_struct_size(_struct_body(src, i)) == struct.calcsize(event_format(fields, depth))
        body = _probe_body(src, i)
        assert f"e->h.probe = {i};" in body
        submit = "0" if depth else f"utrace_wakeup(sizeof(struct event_{i}))"
        assert body.count(f"events.ringbuf_submit(e, {submit});") == 1
        # every captured value is written exactly once into the event
        for f in fields:
            if f.present and not f.is_string:
                assert len(re.findall(rf"e->{f.c_name} = ", body)) == 1


# --- Optional: the generated C is valid C (gcc with a stand-in for bcc's helpers and maps) ----------

GCC = shutil.which("gcc")

SHIM = """\
typedef unsigned long long u64; typedef long long s64; typedef unsigned int u32; typedef int s32;
typedef unsigned short u16; typedef short s16; typedef unsigned char u8; typedef signed char s8;
struct pt_regs { u64 r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip, cs, flags,
                 sp, ss; };
struct bpf_pidns_info { u32 pid; u32 tgid; };
#define __always_inline inline
#define BPF_RB_NO_WAKEUP 1
#define BPF_RB_FORCE_WAKEUP 2
u64 bpf_get_current_pid_tgid(void);
long bpf_get_ns_current_pid_tgid(u64 dev, u64 ino, struct bpf_pidns_info *nsdata, u32 size);
u64 bpf_ktime_get_ns(void);
u32 bpf_get_smp_processor_id(void);
long bpf_get_current_comm(void *buf, u32 size);
long bpf_probe_read_user(void *dst, u32 size, const void *src);
long bpf_probe_read_user_str(void *dst, u32 size, const void *src);
long bpf_probe_read_kernel(void *dst, u32 size, const void *src);
u64 bpf_get_current_task(void);
#define BPF_RINGBUF_OUTPUT(name, pages) \\
    struct { void *(*ringbuf_reserve)(u64); void (*ringbuf_submit)(void *, u64); \\
             long (*ringbuf_output)(void *, u64, u64); } name
#define BPF_PERCPU_ARRAY(name, type, n) struct { type *(*lookup)(u32 *); } name
#define BPF_TABLE(kind, k, v, name, n) \\
    struct { v *(*lookup)(k *); long (*update)(k *, v *); long (*delete)(k *); } name
#define BPF_PERCPU_HASH(name, k, v, n) struct { v *(*lookup)(k *); long (*insert)(k *, v *); } name
#define BPF_F_NO_PREALLOC 1
#define BPF_F_TABLE(kind, k, v, name, n, flags) \\
    struct { v *(*lookup)(k *); long (*insert)(k *, v *); long (*update)(k *, v *); long (*delete)(k *); } name
#define BPF_ARRAY(name, type, n) struct { type *(*lookup)(u32 *); } name
#define BPF_HASH(name, k, v, n) \
    struct { v *(*lookup)(k *); long (*insert)(k *, v *); long (*update)(k *, v *); long (*delete)(k *); } name
struct bpf_raw_tracepoint_args { u64 args[0]; };
unsigned int bpf_log2l(unsigned long v);
"""


def _gcc_check(tmp_path: Path, prog) -> None:
    src = prog.source.replace("#include <uapi/linux/ptrace.h>\n", SHIM, 1)
    offsets: list[str] = []
    for i, fields in enumerate(prog.fields):
        size = struct.calcsize(event_format(fields, prog.options.stack_depth))
        offsets.append(f'_Static_assert(sizeof(struct event_{i}) == {size}, "size {i}");')
        fmt = HEADER_FORMAT
        for f in fields:
            if not f.present:
                continue
            member = f"{f.c_name}_len" if f.is_string else f.c_name
            offsets.append(
                f"_Static_assert(__builtin_offsetof(struct event_{i}, {member}) == {struct.calcsize(fmt)},"
                f' "offset {i} {member}");'
            )
            fmt += f.struct_format
    c = tmp_path / "prog.c"
    c.write_text(src + "\n" + "\n".join(offsets) + "\n", encoding="utf-8")
    r = subprocess.run(
        [GCC, "-std=gnu11", "-fsyntax-only", "-Wall", "-Wno-unused-variable", "-Werror", str(c)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(GCC is None, reason="gcc not installed")
@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_programs_are_valid_c(tmp_path, name):
    make, options = CASES[name]
    _gcc_check(tmp_path, render(make(), options))


@pytest.mark.skipif(GCC is None, reason="gcc not installed")
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(probe_specs(), min_size=1, max_size=4), options_st)
def test_random_programs_are_valid_c(tmp_path, specs, options):
    if options.aggregate is not Aggregate.NONE:
        options = replace(options, stack_depth=0)
    _gcc_check(tmp_path, render(specs, options))


@pytest.mark.skipif(GCC is None, reason="gcc not installed")
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(probe_specs(), min_size=1, max_size=3),
    st.lists(st.sampled_from([ProbeKind.RETURN, ProbeKind.EXIT, ProbeKind.USDT]), min_size=3, max_size=3),
    options_st,
    st.integers(1, 1 << 40),
)
def test_random_slower_than_programs_are_valid_c(tmp_path, randoms, ends, options, threshold):
    # each random spec as the begin and the end of a pair (its captures, filters and frame kept)
    specs = []
    for n, (spec, end) in enumerate(zip(randoms, ends, strict=False)):
        begin = ProbeKind.USDT if end is ProbeKind.USDT else ProbeKind.ENTRY
        specs += [
            replace(spec, kind=begin, latency=False, pair=f"p{n}"),
            replace(spec, kind=end, latency=True, pair=f"p{n}"),
        ]
    assert not slow.untimed(specs)
    if options.aggregate is not Aggregate.NONE:
        options = replace(options, stack_depth=0)
    _gcc_check(tmp_path, render(specs, replace(options, slower_than_ns=threshold)))


@pytest.mark.parametrize("aggregate", [Aggregate.COUNT, Aggregate.HIST])
def test_aggregating_programs_send_no_events(aggregate):
    prog = render(return_specs(), Options(aggregate=aggregate))
    assert "ringbuf_reserve" not in prog.source and "ringbuf_submit" not in prog.source
    assert "BPF_RINGBUF_OUTPUT(events, 1);" in prog.source  # a one-page ring that stays empty
    assert 'BPF_F_TABLE("percpu_hash", struct agg_key, u64, counts, 65536, BPF_F_NO_PREALLOC);' in prog.source
    assert ('BPF_F_TABLE("percpu_hash", struct agg_key, u64, hist,' in prog.source) == (aggregate is Aggregate.HIST)
    assert ("bpf_log2l(latency)" in prog.source) == (aggregate is Aggregate.HIST)


def test_slot_ranges_match_bcc_log2l():
    def bpf_log2l(v: int) -> int:  # bcc's helpers.h, transcribed: floor(log2(v)) + 1, and 1 for 0
        return v.bit_length() if v else 1

    for v in [0, 1, 2, 3, 4, 7, 8, 1000, 4095, 4096, 10**9, 2**40 + 5]:
        low, high = slot_range(bpf_log2l(v))
        assert low <= v <= high or (v == 0 and low == 1)


# --- User stacks -----------------------------------------------------------------------------------


def test_stack_walk_takes_the_return_address_at_entries_only():
    specs = return_specs() + go_specs() + usdt_specs()
    prog = render(specs, Options(fsbase_offset=0x1B48, stack_depth=16))
    for i, spec in enumerate(specs):
        body = _probe_body(prog.source, i)
        assert _struct_body(prog.source, i)[-2:] == ["s64 ustack_n;", "u64 ustack[16];"]
        assert "e->ustack[0] = ctx->ip;" in body
        at_entry = spec.kind in (ProbeKind.ENTRY, ProbeKind.EXIT)
        # before the callee pushes its frame, the caller is only found at [sp]
        assert ("bpf_probe_read_user(&e->ustack[1], 8, (void *)ctx->sp);" in body) == at_entry
        assert f"for (int i = {2 if at_entry else 1}; i < 16; i++) {{" in body
        # the walk ends before the event is sent, with a wakeup: symbols come from /proc/PID, read soon
        assert body.index("e->ustack_n = sn;") < body.index("events.ringbuf_submit(e, 0);")


def test_no_stack_code_without_stacks():
    src = render(return_specs()).source
    assert "ustack" not in src


@pytest.mark.parametrize("depth", [-1, 128, 1000])
def test_stack_depth_bounds(depth):
    with pytest.raises(CodegenError):
        render(entry_specs(), Options(stack_depth=depth))


@pytest.mark.parametrize("aggregate", [Aggregate.COUNT, Aggregate.HIST])
def test_stacks_only_with_events(aggregate):
    with pytest.raises(CodegenError):
        render(return_specs(), Options(stack_depth=8, aggregate=aggregate))


def test_events_wake_the_reader_only_every_so_many_bytes():
    """Submitting without a wakeup per event; each CPU forces one after 1/16 of the ring (4 KiB at least)."""
    src = render(entry_specs(), Options(ring_pages=4096)).source
    assert "if (*n < 1048576) return BPF_RB_NO_WAKEUP;" in src
    assert "return BPF_RB_FORCE_WAKEUP;" in src
    wakeup = src[src.index("utrace_wakeup(u64 size)") :]
    # each CPU's first event wakes the reader (its counter starts at 0 and never returns to it)
    assert wakeup.index("if (*n == 0) {") < wakeup.index("*n += size;")
    assert "*n = 0;" not in wakeup.split("}\n\n")[0]
    assert "if (*n < 4096) return BPF_RB_NO_WAKEUP;" in render(entry_specs(), Options(ring_pages=8)).source
