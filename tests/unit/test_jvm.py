"""The JVM runtime without a JVM: finding libjvm.so, the probe catalogue, gate flags, Java names,
begin/end pairing, and the variable lookup it reads flags with."""

from __future__ import annotations

import io
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.elfgen import STB_LOCAL, STT_OBJECT, Probe, Sym, build_elf
from utrace.elf.reader import ElfImage
from utrace.elf.usdt_notes import parse_arguments, read_usdt_probes
from utrace.elf.variables import read_variables
from utrace.errors import NotFoundError, TargetError, UsageError
from utrace.model import ArgKind, Deref, Event, Module, Reg, Target, UsdtProbe
from utrace.probes.decode import StringValue
from utrace.runtimes.base import TraceRequest
from utrace.runtimes.jvm import (
    CATEGORIES,
    GATE_FLAGS,
    GATES,
    LAYOUTS,
    HotspotEvents,
    JvmRuntime,
    LaunchFlags,
    flags_from_options,
    flags_of_command,
    home_of_launcher,
    hotspot_args,
    java_class_name,
    java_major,
    java_parameters,
    launcher_options,
    libjvm_from_spec,
    libjvm_in_home,
    resolve,
    tool_options,
)

# Argument strings exactly as readelf -n prints them for Debian OpenJDK 17's libjvm.so.
JDK17_NOTES = {
    "class__loaded": "8@%rdx -4@%eax 8@152(%rdi) 1@%cl",
    "thread__start": "8@%r13 -4@-60(%rbp) -8@-56(%rbp) 8@%r15 1@%al",
    "gc__begin": "1@%dil",
    "gc__end": "",
    "mem__pool__gc__begin": "8@%r14 8@%rbx 8@%r13 8@%rdi 8@%r8 8@%rax 8@%r9 8@%rdx",
    "method__entry": "-8@%rax 8@%rdx -4@%ecx 8@%rsi -4@%edi 8@%r8 -4@%r9d",
    "method__return": "-8@%rax 8@%rdx -4@%ecx 8@%rsi -4@%edi 8@%r8 -4@%r9d",
    "monitor__wait": "-8@%rdx 8@%r14 8@%rcx -4@%eax -8@%r13",
    "compiled__method__load": "8@%r12 -4@%r15d 8@%rdx -4@%ecx 8@%rsi -4@%r8d 8@%r14 -4@%eax",
    "vmops__begin": "8@%r12 8@%rdx -4@%eax",
}


def usdt(name: str, args: str | None = None, provider: str = "hotspot", offset: int = 0x100) -> UsdtProbe:
    return UsdtProbe(provider, name, offset, offset, offset, None, None,
                     parse_arguments(JDK17_NOTES[name] if args is None else args), "/x/libjvm.so")  # fmt: skip


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("internal", "java"),
    [
        ("java/lang/Object", "java.lang.Object"),
        ("java/util/TreeMap$Entry", "java.util.TreeMap$Entry"),
        ("Demo", "Demo"),
        ("[Ljava/lang/String;", "[Ljava.lang.String;"),
        ("java/lang/invoke/LambdaForm$MH+0x0000000082040800", "java.lang.invoke.LambdaForm$MH/0x0000000082040800"),
    ],
)
def test_java_class_name(internal, java):
    assert java_class_name(internal) == java


@pytest.mark.parametrize(
    ("descriptor", "params"),
    [
        ("()V", ""),
        ("([Ljava/lang/String;)V", "java.lang.String[]"),
        ("(Ljava/lang/String;ILjava/util/Map;)V", "java.lang.String, int, java.util.Map"),
        ("(JZ[[BCDFS)Ljava/lang/Object;", "long, boolean, byte[][], char, double, float, short"),
        ("(Ljava/lang/Str", None),  # cut at the capture limit
        ("(Q)V", None),
        ("put", None),
    ],
)
def test_java_parameters(descriptor, params):
    assert java_parameters(descriptor) == params


# --- libjvm.so -----------------------------------------------------------------------------------


def fake_jdk(root: Path, sub: str = "lib/server") -> Path:
    home = root / "jdk"
    (home / "bin").mkdir(parents=True)
    (home / sub).mkdir(parents=True)
    (home / sub / "libjvm.so").write_bytes(b"\x7fELF")
    (home / "bin" / "java").write_text("#!/bin/sh\n")
    (home / "bin" / "java").chmod(0o755)
    return home


@pytest.mark.parametrize("sub", ["lib/server", "jre/lib/amd64/server", "lib/client"])
def test_libjvm_in_home_layouts(tmp_path, sub):
    home = fake_jdk(tmp_path, sub)
    assert libjvm_in_home(str(home)) == str(home / sub / "libjvm.so")
    assert libjvm_in_home(str(tmp_path)) is None


def test_launcher_resolved_through_symlinks(tmp_path):
    """/usr/bin/java -> /etc/alternatives/java -> JAVA_HOME/bin/java, as Debian installs it."""
    home = fake_jdk(tmp_path)
    alt = tmp_path / "alternatives"
    alt.mkdir()
    (alt / "java").symlink_to(home / "bin" / "java")
    (tmp_path / "java").symlink_to(alt / "java")
    assert home_of_launcher(str(tmp_path / "java")) == str(home)
    assert libjvm_from_spec(str(tmp_path / "java")) == str(home / "lib/server/libjvm.so")
    assert libjvm_from_spec(str(home)) == str(home / "lib/server/libjvm.so")
    assert libjvm_from_spec(str(home / "lib/server/libjvm.so")) == str(home / "lib/server/libjvm.so")
    with pytest.raises(TargetError, match="not a JAVA_HOME"):
        libjvm_from_spec(str(alt))
    with pytest.raises(TargetError, match="not a java launcher"):
        libjvm_from_spec("/bin/sh")


def test_launch_command_finds_libjvm_on_path(tmp_path, monkeypatch):
    home = fake_jdk(tmp_path)
    monkeypatch.setenv("PATH", f"{home / 'bin'}:{os.environ['PATH']}")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    rt = JvmRuntime()
    t = rt.target(TraceRequest(runtime="java", command=("java", "-cp", "app", "Main"), probes=("class-load",)))
    assert t.modules[0].path == str(home / "lib/server/libjvm.so")
    rt = JvmRuntime()
    t = rt.target(TraceRequest(runtime="java", probes=("class-load",)))  # neither pid nor command: PATH
    assert t.modules[0].path == str(home / "lib/server/libjvm.so")


# --- gate flags ----------------------------------------------------------------------------------


def test_launcher_options_stop_at_the_main_class():
    argv = ["java", "-cp", "-XX:+DTraceMethodProbes", "-Xmx1g", "-XX:+DTraceAllocProbes", "Main",
            "-XX:+DTraceMonitorProbes"]  # fmt: skip
    # the class path's value is not an option, and options after the main class are the program's
    assert launcher_options(argv) == ["-cp", "-Xmx1g", "-XX:+DTraceAllocProbes"]
    assert launcher_options(["java", "-jar", "app.jar", "-XX:+DTraceMethodProbes"]) == []


def test_flags_last_one_wins_and_extended_sets_all():
    f = flags_from_options(["-XX:+DTraceMethodProbes", "-XX:-DTraceMethodProbes", "-XX:+DTraceAllocProbes"])
    assert f == {"DTraceMethodProbes": False, "DTraceAllocProbes": True, "DTraceMonitorProbes": False}
    assert set(flags_from_options(["-XX:+ExtendedDTraceProbes"]).values()) == {True}
    unsure = flags_from_options(["-XX:Flags=.hotspotrc", "-XX:+DTraceAllocProbes"])
    assert unsure == {"DTraceMethodProbes": None, "DTraceAllocProbes": True, "DTraceMonitorProbes": None}


def test_flags_of_command_reads_the_jvm_variables():
    argv = ["/usr/bin/java", "-cp", "x", "Main"]
    assert flags_of_command(argv, {})["DTraceMethodProbes"] is False
    assert flags_of_command(argv, {"JAVA_TOOL_OPTIONS": "-XX:+DTraceMethodProbes"})["DTraceMethodProbes"] is True
    env = {"JAVA_TOOL_OPTIONS": "-XX:+DTraceMethodProbes", "_JAVA_OPTIONS": "-XX:-DTraceMethodProbes"}
    assert flags_of_command(argv, env)["DTraceMethodProbes"] is False
    assert flags_of_command(["sh", "-c", "java Main"], {})["DTraceMethodProbes"] is None


# --- catalogue -----------------------------------------------------------------------------------


def test_every_category_and_gate_names_known_probes():
    for globs in CATEGORIES.values():
        for g in globs:
            assert any(__import__("fnmatch").fnmatchcase(n, g) for n in LAYOUTS), g
    assert set(GATES) <= set(LAYOUTS)


def test_class_loaded_arguments_read_exactly_len_bytes():
    args = hotspot_args(usdt("class__loaded"), 128)
    assert args is not None
    cls, loader, shared = args
    assert (cls.name, cls.kind, cls.loc, cls.length, cls.length_kind) == (
        "class",
        ArgKind.PTRLEN_STR,
        Reg("rdx"),
        Reg("rax"),
        ArgKind.S32,
    )
    assert cls.max_len >= 256  # class names come out whole
    assert (loader.kind, loader.loc) == (ArgKind.PTR, Deref(Reg("rdi"), 152, 8))
    assert (shared.name, shared.kind) == ("shared", ArgKind.BOOL)  # fmt: skip


def test_thread_and_pool_and_method_layouts():
    names = [a.name for a in hotspot_args(usdt("thread__start"), 64) or []]
    assert names == ["thread", "java_tid", "os_tid", "daemon"]
    pool = hotspot_args(usdt("mem__pool__gc__begin"), 64) or []
    assert [a.name for a in pool] == ["manager", "pool", "init", "used", "committed", "max"]
    assert pool[0].length_kind is ArgKind.U64  # 8@ lengths here
    method = hotspot_args(usdt("method__entry"), 64) or []
    assert [a.name for a in method] == ["java_tid", "class", "method", "signature"]
    assert method[0].kind is ArgKind.S64
    assert [a.name for a in hotspot_args(usdt("compiled__method__load"), 64) or []][-2:] == ["code", "size"]


def test_unexpected_note_layout_falls_back():
    assert hotspot_args(usdt("class__loaded", "8@%rdx -4@%eax"), 64) is None
    assert hotspot_args(usdt("class__loaded", provider="hotspot_jni"), 64) is None


def test_resolve_friendly_raw_and_glob_names():
    probes = [usdt(n, offset=0x100 + i) for i, n in enumerate(JDK17_NOTES)]
    assert [p.name for p in resolve(probes, "gc")] == ["gc__begin", "gc__end", "mem__pool__gc__begin"]
    assert [p.name for p in resolve(probes, "monitor")] == ["monitor__wait"]  # a category's glob
    assert [p.name for p in resolve(probes, "vmops")] == ["vmops__begin"]
    assert [p.name for p in resolve(probes, "hotspot:class__loaded")] == ["class__loaded"]
    assert [p.name for p in resolve(probes, "class__loaded")] == ["class__loaded"]
    assert [p.name for p in resolve(probes, "hotspot:method__*")] == ["method__entry", "method__return"]
    assert resolve(probes, "class-lod") == []


# --- planning against a synthetic libjvm.so ------------------------------------------------------


def synthetic_libjvm(tmp_path: Path, probes: dict[str, str] | None = None) -> str:
    notes = probes if probes is not None else JDK17_NOTES
    built = build_elf(
        shared=True,
        probes=[Probe("hotspot", n, 0x10 + 4 * i, a) for i, (n, a) in enumerate(notes.items())],
        symtab=[Sym("DTraceMethodProbes", 1, section=".probes", type=STT_OBJECT, bind=STB_LOCAL, size=1)],
    )
    home = tmp_path / "jdk"
    (home / "lib/server").mkdir(parents=True)
    return built.write(home / "lib/server/libjvm.so")


def plan_for(lib: str, probes: tuple[str, ...], command: tuple[str, ...] = ()):
    rt = JvmRuntime()
    req = TraceRequest(runtime="java", binary=lib, probes=probes, command=command)
    return rt.plan(req, rt.target(req))


def test_plan_names_and_pairs(tmp_path):
    lib = synthetic_libjvm(tmp_path)
    plan = plan_for(lib, ("class-load", "gc", "hotspot:class__loaded"))
    assert [s.name for s in plan.specs] == ["hotspot:class__loaded", "hotspot:gc__begin", "hotspot:gc__end",
                                            "hotspot:mem__pool__gc__begin"]  # fmt: skip
    assert plan.refine is not None


def test_unknown_probe_suggests_close_names(tmp_path):
    lib = synthetic_libjvm(tmp_path)
    with pytest.raises(NotFoundError) as e:
        plan_for(lib, ("class-lod",))
    assert e.value.suggestions[0] == "class-load"


def test_gated_probes_off_in_a_running_jvm_give_the_exact_flag(tmp_path, monkeypatch):
    lib = synthetic_libjvm(tmp_path)
    monkeypatch.setattr(JvmRuntime, "flags", lambda self, request, target: dict.fromkeys(GATE_FLAGS, False))
    rt = JvmRuntime()
    target = rt.target(TraceRequest(runtime="java", binary=lib))
    with pytest.raises(UsageError) as e:
        rt.plan(TraceRequest(runtime="java", pid=1, probes=("method",)), target)
    assert str(e.value) == ("method probes are off in this JVM: they need -XX:+DTraceMethodProbes (a startup-only "
                            "flag: restart the JVM with it)")  # fmt: skip
    plan = rt.plan(TraceRequest(runtime="java", pid=1, probes=("method", "gc")), target)
    assert not any("method" in s.name for s in plan.specs) and not plan.launch_env
    assert any("-XX:+DTraceMethodProbes" in n for n in plan.notes)
    # --set-flags with nothing to set: said, and no change planned
    plan = rt.plan(TraceRequest(runtime="java", pid=1, probes=("gc",), extra=(("set_flags", True),)), target)
    assert plan.change is None and plan.notes == [
        "--set-flags: nothing to change (the flags these probes need are on, or none are needed)"
    ]
    with pytest.raises(UsageError, match="--set-flags applies to --pid"):
        rt.plan(
            TraceRequest(runtime="java", probes=("method",), command=("java", "Main"), extra=(("set_flags", True),)),
            target,
        )


def test_launch_adds_the_flags_it_needs_to_java_tool_options(tmp_path, monkeypatch):
    lib = synthetic_libjvm(tmp_path)
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-Xmx64m")  # the user's own: kept, first
    plan = plan_for(lib, ("method:Demo", "gc", "method:Foo"), command=("java", "-cp", "x", "Main"))
    assert [s.name for s in plan.specs] == ["hotspot:method__entry", "hotspot:method__return", "hotspot:gc__begin",
                                            "hotspot:gc__end", "hotspot:mem__pool__gc__begin"]  # fmt: skip
    assert plan.launch_env == {"JAVA_TOOL_OPTIONS": "-Xmx64m -XX:+DTraceMethodProbes"}
    assert isinstance(plan.launch_check, LaunchFlags) and plan.launch_check.flags == {
        "DTraceMethodProbes": ["method:Demo", "method:Foo"]
    }
    assert plan.notes == ["the command runs with -XX:+DTraceMethodProbes added to JAVA_TOOL_OPTIONS "
                          "(needed by method:Demo, method:Foo)"]  # fmt: skip
    # already on: nothing added, nothing to check
    plan = plan_for(lib, ("method",), command=("java", "-XX:+DTraceMethodProbes", "-cp", "x", "Main"))
    assert plan.launch_env == {} and plan.launch_check is None
    # no gated probe: nothing added
    plan = plan_for(lib, ("gc",), command=("java", "-cp", "x", "Main"))
    assert plan.launch_env == {} and plan.launch_check is None
    # a wrapper script (flags unknown): added all the same, in the order HotSpot lists them
    monkeypatch.delenv("JAVA_TOOL_OPTIONS")
    plan = plan_for(lib, ("monitor", "method"), command=("./gradlew", "run"))
    assert plan.launch_env == {"JAVA_TOOL_OPTIONS": "-XX:+DTraceMethodProbes -XX:+DTraceMonitorProbes"}


@pytest.mark.parametrize(
    ("current", "want"),
    [(None, "-XX:+A"), ("", "-XX:+A"), ("  ", "-XX:+A"), ("-Dx=1 -Xss1m", "-Dx=1 -Xss1m -XX:+A")],
)
def test_tool_options_append(current, want):
    assert tool_options(current, ["A"]) == want


def test_jdk_without_usdt_says_so(tmp_path):
    lib = synthetic_libjvm(tmp_path, probes={})
    with pytest.raises(TargetError, match="no USDT probes"):
        plan_for(lib, ("class-load",))


def test_read_variables_finds_object_symbols(tmp_path):
    built = build_elf(
        shared=True,
        symtab=[
            Sym("DTraceMethodProbes", 5, section=".probes", type=STT_OBJECT, bind=STB_LOCAL, size=1),
            Sym("NotAFlag", 6, section=".probes", type=STT_OBJECT),
            Sym("DTraceAllocProbes", 0x20),  # a function of that name is not the variable
        ],
    )
    with ElfImage(built.write(tmp_path / "lib.so")) as img:
        found = read_variables(img, ["DTraceMethodProbes", "DTraceAllocProbes", "Missing"])
        assert read_usdt_probes(img) == []
    assert found == {"DTraceMethodProbes": built.addrs[".probes"] + 5}


# --- events --------------------------------------------------------------------------------------


def ev(probe: str, ts: int, tid: int = 7, **args: object) -> Event:
    return Event("event", f"hotspot:{probe}", 1, tid, "java", ts, 0, dict(args))


def test_class_names_rewritten_and_internal_kept():
    raw = StringValue("java/util/TreeMap$Entry")
    out = HotspotEvents()(ev("class__loaded", 1, **{"class": raw, "loader": 5, "shared": True}))
    assert out.args == {"class": "java.util.TreeMap$Entry", "internal": "java/util/TreeMap$Entry",
                        "loader": 5, "shared": True}  # fmt: skip
    assert out.latency_ns is None


def test_gc_pairs_carry_full_flag_and_duration():
    h = HotspotEvents()
    h(ev("gc__begin", 1000, full=True))
    end = h(ev("gc__end", 5000))
    assert end.latency_ns == 4000 and end.args == {"full": True}
    assert h(ev("gc__end", 6000)).latency_ns is None  # no begin left: no invented duration


def test_pool_ends_pair_by_pool_in_sequence():
    h = HotspotEvents()
    for n, pool in enumerate(("eden", "old")):
        h(ev("mem__pool__gc__begin", 10 + n, manager="G1", pool=pool, used=100 + n))
    a = h(ev("mem__pool__gc__end", 50, manager="G1", pool="eden", used=1))
    b = h(ev("mem__pool__gc__end", 60, manager="G1", pool="old", used=2))
    assert (a.latency_ns, a.args["used_before"]) == (40, 100)
    assert (b.latency_ns, b.args["used_before"]) == (49, 101)


def test_methods_pair_through_recursion_and_threads():
    h = HotspotEvents()
    m = {"class": "Demo", "method": "fib", "signature": "(I)I", "java_tid": 1}
    h(ev("method__entry", 0, **m))
    h(ev("method__entry", 10, **m))
    h(ev("method__entry", 15, tid=8, **m))  # another thread: its own stack
    inner = h(ev("method__return", 30, **m))
    other = h(ev("method__return", 35, tid=8, **m))
    outer = h(ev("method__return", 100, **m))
    assert inner.args["method"] == "Demo.fib(int)"
    assert (inner.latency_ns, other.latency_ns, outer.latency_ns) == (20, 20, 100)


def test_other_providers_untouched():
    e = Event("event", "hotspot_jni:GetVersion__entry", 1, 1, "java", 1, 0, {"arg0": 1})
    assert HotspotEvents()(e) is e


def test_reporters_show_a_paired_duration():
    from utrace.output.stream import JsonReporter, TextReporter

    e = Event("event", "hotspot:gc__end", 1, 2, "VM Thread", 10, 0, {"full": True}, latency_ns=4_700_000)
    out = io.StringIO()
    r = TextReporter(out, err=io.StringIO(), color=False)
    r.event(e)
    r.flush()
    assert out.getvalue().rstrip().endswith("@ hotspot:gc__end full=true 4700µs")
    out = io.StringIO()
    j = JsonReporter(out, err=io.StringIO())
    j.event(e)
    j.flush()
    assert '"latency_ns": 4700000' in out.getvalue()
    # a paired event that also carries context keeps its duration
    out = io.StringIO()
    j = JsonReporter(out, err=io.StringIO())
    j.event(replace(e, context={"goid": 7}))
    j.flush()
    obj = json.loads(out.getvalue())
    assert obj["latency_ns"] == 4_700_000 and obj["context"] == {"goid": 7}


def test_process_target_module_is_libjvm(tmp_path, monkeypatch):
    lib = synthetic_libjvm(tmp_path)
    exe = Module("/proc/1/root/usr/bin/java", "/usr/bin/java")
    jvm = Module("/proc/1/root" + lib, lib, base=0x7F0000000000)
    monkeypatch.setattr("utrace.runtimes.jvm.process_target", lambda pid: Target(exe.path, pid, pid, "/proc/1/root",
                                                                                (exe, jvm)))  # fmt: skip
    t = JvmRuntime().target(TraceRequest(runtime="java", pid=1, probes=("gc",)))
    assert t.modules == (jvm,)
    monkeypatch.setattr("utrace.runtimes.jvm.process_target", lambda pid: Target(exe.path, pid, pid, "", (exe,)))
    with pytest.raises(TargetError, match="is not a JVM"):
        JvmRuntime().target(TraceRequest(runtime="java", pid=1, probes=("gc",)))


def test_class_filter_syntax():
    from utrace.runtimes.jvm import split_class_filter

    assert split_class_filter("method:com.example.*") == ("method", b"com/example/")
    assert split_class_filter("alloc:Demo") == ("alloc", b"Demo")
    assert split_class_filter("hotspot:class__loaded") == ("hotspot:class__loaded", None)
    for bad in ("method:", "method:*", "method:a*b", "method:" + "x" * 65):
        with pytest.raises(UsageError):
            split_class_filter(bad)


def test_plan_puts_class_prefixes_and_method_globs_in_bpf(tmp_path):
    from utrace.model import PrefixFilter
    from utrace.predicate import Predicate, StrArg, any_of, java_method_glob

    lib = synthetic_libjvm(tmp_path)
    cmd = ("java", "-XX:+DTraceMethodProbes", "-XX:+DTraceMonitorProbes", "Main")
    plan = plan_for(lib, ("method:Demo", "method:com.shop.*.total", "monitor:java.util.*", "class-load"), command=cmd)
    entry = next(s for s in plan.specs if s.name == "hotspot:method__entry")
    (f,) = entry.filters
    cls = StrArg(ArgKind.PTRLEN_STR, Reg("rdx"), Reg("rcx"), ArgKind.S32)
    meth = StrArg(ArgKind.PTRLEN_STR, Reg("rsi"), Reg("rdi"), ArgKind.S32)
    globs = [java_method_glob(cls, meth, g) for g in ("Demo", "com.shop.*.total")]
    assert isinstance(f, Predicate) and f == Predicate(any_of(globs))
    assert next(s for s in plan.specs if s.name == "hotspot:method__return").filters == (f,)
    (a,) = next(s for s in plan.specs if s.name == "hotspot:monitor__wait").filters
    assert isinstance(a, PrefixFilter) and a.prefixes == (b"java/util/",)
    assert not next(s for s in plan.specs if s.name == "hotspot:class__loaded").filters
    assert not any("narrow them" in n for n in plan.notes)
    assert any("narrow them" in n for n in plan_for(lib, ("method",), command=cmd).notes)
    with pytest.raises(UsageError, match="no class name"):
        plan_for(lib, ("gc:Demo",))
    for bad, why in (("method:*", "give a class or Class.method"), ("method:a*b*", "at most one"),
                     ("method:a?b", "not supported"), ("method:" + "x" * 65, "at most 64 bytes")):  # fmt: skip
        with pytest.raises(UsageError, match=why):
            plan_for(lib, (bad,), command=cmd)


def test_no_libjvm_anywhere_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(TargetError, match=r"no libjvm\.so found: set JAVA_HOME"):
        JvmRuntime().target(TraceRequest(runtime="java", probes=("gc",)))


def test_launch_flags_final_word(tmp_path):
    lib = synthetic_libjvm(tmp_path)
    check = LaunchFlags(lib, {"DTraceMethodProbes": ["method:Demo"]})
    assert check.check(os.getpid()) is None and not check.settled(os.getpid())  # no libjvm here: not a JVM
    # nothing seen to be a JVM, no event: said, not left silent
    line = check.final({})
    assert line is not None and line.startswith(
        "utrace could not confirm that the launched JVM had -XX:+DTraceMethodProbes:"
    )
    # the probes fired: the flag took
    assert check.final({"hotspot:method__entry": 3}) is None
    assert check.final({"hotspot:gc__begin": 3}) is not None  # not a probe the flag gates
    # seen starting with the flag off, gone before its start-up completed
    check.starting[123] = ["DTraceMethodProbes"]
    assert check.final({}) == (
        "the JVM (pid 123) ended before utrace could confirm its flags: -XX:+DTraceMethodProbes was off while it "
        "started (JAVA_TOOL_OPTIONS did not reach it?), and method:Demo showed no events"
    )
    check.decided[124] = True  # one JVM had it
    assert check.final({}) is None


@pytest.mark.parametrize(
    ("text", "major"),
    [('JAVA_VERSION="17.0.15"\n', 17), ('IMPLEMENTOR="x"\nJAVA_VERSION="25.0.3"\n', 25),
     ('JAVA_VERSION="1.8.0_412"', 8), ('JAVA_VERSION="x"', None), ("OTHER=1", None)],
)  # fmt: skip
def test_java_major_from_the_release_file(tmp_path, text, major):
    home = tmp_path / "jdk"
    (home / "lib" / "server").mkdir(parents=True)
    (home / "release").write_text(text)
    assert java_major(str(home / "lib" / "server" / "libjvm.so"), "") == major
    assert java_major(str(tmp_path / "nowhere" / "lib" / "server" / "libjvm.so"), "") is None
