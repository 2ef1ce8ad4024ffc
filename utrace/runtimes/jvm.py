"""`java` (alias `jvm`): HotSpot's USDT probes in `libjvm.so`, named as people think of them.

Where libjvm.so comes from: the pid's maps (through /proc/PID/root), the launch command (`java`
resolved through PATH and symlinks to JAVA_HOME/bin/java, then JAVA_HOME/lib/server/libjvm.so),
`--binary`, `JAVA_HOME`, or `java` on PATH. In launch mode the probes go on libjvm.so by path before
the command runs, so the first class load (`java.lang.Object`) is seen even though the launcher
dlopen()s libjvm later.

Arguments are read as the notes say (utrace's own USDT decoding). HotSpot passes every string as a
pointer and a byte count and never NUL-terminates it, so strings are captured as exactly `len` bytes.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from utrace.elf.match import close_names, match_probes, name_matcher
from utrace.elf.usdt_notes import usdt_probes_for
from utrace.elf.variables import variables_for
from utrace.errors import ElfError, NotFoundError, TargetError, UsageError
from utrace.model import (
    PREFIX_MAX,
    ArgKind,
    ArgSpec,
    Const,
    Event,
    Module,
    PrefixFilter,
    ProbeSpec,
    Target,
    UsdtProbe,
)
from utrace.predicate import Predicate, StrArg, any_of, java_method_glob
from utrace.probes.decode import StringValue
from utrace.process import procfs
from utrace.process.target import process_target
from utrace.runtimes.base import Catalogue, CommandSpec, Completion, Operands, OptionSpec, Plan, TraceRequest
from utrace.runtimes.native import command_path
from utrace.runtimes.usdt import integer_kind, location_of, probe_spec, usdt_args

PROVIDER = "hotspot"
LIBJVM = "libjvm.so"
CLASS_MIN_LEN = 256  # class names must come out whole to be compared with the JVM's own log

# --- the catalogue ---------------------------------------------------------------------------------
# Each hotspot probe's arguments in order (readelf -n of libjvm.so, hotspot.d): "str" takes two note
# arguments (pointer, byte count), everything else one. Integer widths come from the note itself.

_CLASS = (("class", "str"), ("loader", "ptr"), ("shared", "bool"))
_THREAD = (("thread", "str"), ("java_tid", "int"), ("os_tid", "int"), ("daemon", "bool"))
_POOL = (("manager", "str"), ("pool", "str"), ("init", "int"), ("used", "int"), ("committed", "int"), ("max", "int"))
_METHOD = (("java_tid", "int"), ("class", "str"), ("method", "str"), ("signature", "str"))
_MONITOR = (("java_tid", "int"), ("monitor", "ptr"), ("class", "str"))
_INIT = (("class", "str"), ("loader", "ptr"), ("thread_type", "int"), ("wait", "bool"))
_COMPILED = (("class", "str"), ("method", "str"), ("signature", "str"))

LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "class__loaded": _CLASS,
    "class__unloaded": _CLASS,
    "class__initialization__required": _INIT[:3],
    **{f"class__initialization__{s}": _INIT
       for s in ("recursive", "concurrent", "erroneous", "super__failed", "clinit", "error", "end")},
    "thread__start": _THREAD,
    "thread__stop": _THREAD,
    "thread__sleep__begin": (("millis", "int"),),
    "thread__sleep__end": (("interrupted", "bool"),),
    "thread__yield": (),
    "thread__park__begin": (("parker", "ptr"), ("absolute", "bool"), ("time", "int")),
    "thread__park__end": (("parker", "ptr"),),
    "thread__unpark": (("parker", "ptr"),),
    "gc__begin": (("full", "bool"),),
    "gc__end": (),
    "mem__pool__gc__begin": _POOL,
    "mem__pool__gc__end": _POOL,
    "method__entry": _METHOD,
    "method__return": _METHOD,
    "object__alloc": (("java_tid", "int"), ("class", "str"), ("size", "int")),
    "monitor__contended__enter": _MONITOR,
    "monitor__contended__entered": _MONITOR,
    "monitor__contended__exit": _MONITOR,
    "monitor__wait": (*_MONITOR, ("timeout", "int")),
    "monitor__waited": _MONITOR,
    "monitor__notify": _MONITOR,
    "monitor__notifyAll": _MONITOR,
    "compiled__method__load": (*_COMPILED, ("code", "ptr"), ("size", "int")),
    "compiled__method__unload": _COMPILED,
    "method__compile__begin": (("compiler", "str"), *_COMPILED),
    "method__compile__end": (("compiler", "str"), *_COMPILED, ("success", "bool")),
    "vmops__request": (("op", "str"), ("mode", "int")),
    "vmops__begin": (("op", "str"), ("mode", "int")),
    "vmops__end": (("op", "str"), ("mode", "int")),
    "vm__init__begin": (),
    "vm__init__end": (),
    "vm__shutdown": (),
}  # fmt: skip

# Friendly names -> hotspot probe names (globs).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "class-load": ("class__loaded",),
    "class-unload": ("class__unloaded",),
    "class-init": ("class__initialization__*",),
    "gc": ("gc__begin", "gc__end", "mem__pool__gc__begin", "mem__pool__gc__end"),
    "thread": ("thread__start", "thread__stop"),
    "method": ("method__entry", "method__return"),
    "alloc": ("object__alloc",),
    "monitor": ("monitor__*",),
    "jit": ("compiled__method__load", "compiled__method__unload"),
    "compile": ("method__compile__begin", "method__compile__end"),
    "vmops": ("vmops__*",),
    "sleep": ("thread__sleep__begin", "thread__sleep__end", "thread__yield"),
    "park": ("thread__park__begin", "thread__park__end", "thread__unpark"),
    "vm": ("vm__init__begin", "vm__init__end", "vm__shutdown"),
}

# Probes that fire only when the JVM was started with a flag (`if (DTraceMethodProbes)` at each site).
GATES: dict[str, str] = {
    "method__entry": "DTraceMethodProbes",
    "method__return": "DTraceMethodProbes",
    "object__alloc": "DTraceAllocProbes",
    **{n: "DTraceMonitorProbes" for n in LAYOUTS if n.startswith("monitor__")},
}
GATE_FLAGS = ("DTraceMethodProbes", "DTraceAllocProbes", "DTraceMonitorProbes")
GATE_TOPIC = {"DTraceMethodProbes": "method", "DTraceAllocProbes": "alloc", "DTraceMonitorProbes": "monitor"}
# JDK <= 19 only: turned the three on together. Obsolete in JDK 20, refused by JDK 25: never advised.
EXTENDED = "ExtendedDTraceProbes"

# end probe -> (begin probe, arguments that must be equal, (begin argument, name on the end event)...)
PAIRS: dict[str, tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "gc__end": ("gc__begin", (), (("full", "full"),)),
    "mem__pool__gc__end": ("mem__pool__gc__begin", ("manager", "pool"), (("used", "used_before"),)),
    "method__return": ("method__entry", ("method",), ()),
    "method__compile__end": ("method__compile__begin", ("method",), ()),
    "vmops__end": ("vmops__begin", ("op",), ()),
    "thread__sleep__end": ("thread__sleep__begin", (), (("millis", "millis"),)),
    "thread__park__end": ("thread__park__begin", ("parker",), ()),
    "monitor__contended__entered": ("monitor__contended__enter", ("monitor",), ()),
    "monitor__waited": ("monitor__wait", ("monitor",), ()),
}
_BEGINS = {b for b, _m, _c in PAIRS.values()}
MAX_OPEN = 4096  # unmatched begins kept per thread and probe (a JVM deep in recursion, or lost events)


# --- finding libjvm.so -----------------------------------------------------------------------------


def libjvm_in_home(home: str) -> str | None:
    """libjvm.so of a JAVA_HOME (JDK 9+: lib/server; JDK 8: jre/lib/amd64/server), server VM first."""
    for sub in ("lib", "jre/lib", "lib/amd64", "jre/lib/amd64"):
        for vm in ("server", "client", "zero", "minimal"):
            cand = os.path.join(home, sub, vm, LIBJVM)
            if os.path.isfile(cand):
                return os.path.realpath(cand)
    return None


def home_of_launcher(exe: str) -> str | None:
    """The JAVA_HOME an executable like .../bin/java belongs to (symlinks resolved), if it is one."""
    real = os.path.realpath(exe)
    home = os.path.dirname(os.path.dirname(real))
    if os.path.basename(os.path.dirname(real)) == "bin" and libjvm_in_home(home):
        return home
    return None


def libjvm_from_spec(spec: str) -> str:
    """libjvm.so from a user's `--binary`: the library itself, a java executable, or a JAVA_HOME."""
    path = spec
    if not os.path.exists(path) and os.sep not in spec:
        path = shutil.which(spec) or spec
    if not os.path.exists(path):
        raise TargetError(f"{spec}: no such file or directory")
    if os.path.isdir(path):
        found = libjvm_in_home(path)
        if found is None:
            raise TargetError(f"{spec}: no lib/server/{LIBJVM} in this directory (not a JAVA_HOME)")
        return found
    if os.path.basename(os.path.realpath(path)).startswith("libjvm"):
        return os.path.realpath(path)
    home = home_of_launcher(path)
    if home is None:
        raise TargetError(f"{spec}: not a java launcher, a JAVA_HOME or {LIBJVM}")
    found = libjvm_in_home(home)
    assert found is not None
    return found


def default_libjvm() -> tuple[str, str]:
    """libjvm.so from JAVA_HOME, else from `java` on PATH; with a word on where it came from."""
    home = os.environ.get("JAVA_HOME", "")
    if home:
        found = libjvm_in_home(home)
        if found:
            return found, "JAVA_HOME"
    java = shutil.which("java")
    if java:
        h = home_of_launcher(java)
        if h:
            found = libjvm_in_home(h)
            if found:
                return found, f"java on PATH ({os.path.realpath(java)})"
    raise TargetError(f"no {LIBJVM} found: set JAVA_HOME, put java on PATH, or give --binary")


# --- flags that gate probes ------------------------------------------------------------------------

_VALUE_OPTIONS = {
    "-cp", "-classpath", "--class-path", "-p", "--module-path", "--upgrade-module-path", "--add-modules",
    "--limit-modules", "--add-reads", "--add-exports", "--add-opens", "--patch-module", "--source",
    "--enable-native-access", "--describe-module", "-d",
}  # fmt: skip
_END_OPTIONS = {"-jar", "-m", "--module"}


def launcher_options(argv: Sequence[str]) -> list[str]:
    """The JVM options of a `java` command line: everything before the main class, jar or module."""
    out: list[str] = []
    i = 1
    while i < len(argv):
        a = argv[i]
        if a in _END_OPTIONS or not a.startswith("-"):
            break
        out.append(a)
        if a in _VALUE_OPTIONS:
            i += 1
        i += 1
    return out


def flags_from_options(options: Sequence[str]) -> dict[str, bool | None]:
    """The gate flags as a list of JVM options leaves them (last one wins); None when they could be
    set somewhere utrace cannot see (a flags file, an @argfile)."""
    state: dict[str, bool | None] = dict.fromkeys(GATE_FLAGS, False)
    unsure = False
    for o in options:
        if o.startswith(("-XX:Flags=", "-XX:VMOptionsFile=", "@")) or o == "-XX:+ReadVMOptionsFile":
            unsure = True
        for flag in (*GATE_FLAGS, EXTENDED):
            for sign, value in (("+", True), ("-", False)):
                if o == f"-XX:{sign}{flag}":
                    for f in GATE_FLAGS if flag == EXTENDED else (flag,):
                        state[f] = value
    if unsure:
        state = {k: (True if v else None) for k, v in state.items()}
    return state


def flags_of_command(argv: Sequence[str], env: dict[str, str]) -> dict[str, bool | None]:
    """Gate flags of a java command about to be launched, from its options and the JVM's variables
    (JAVA_TOOL_OPTIONS first, then JDK_JAVA_OPTIONS and the command line, _JAVA_OPTIONS last)."""
    if not argv or os.path.basename(argv[0]) != "java":
        return dict.fromkeys(GATE_FLAGS)
    opts: list[str] = []
    for var in ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS"):
        opts += _split(env.get(var, ""))
    opts += launcher_options(argv)
    opts += _split(env.get("_JAVA_OPTIONS", ""))
    return flags_from_options(opts)


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def flags_of_process(pid: int, module: Module) -> dict[str, bool | None]:
    """Gate flags of a running JVM, read from its memory: the bytes of HotSpot's own flag variables
    (`.symtab` of libjvm.so), so flags from any source count. None for a flag that cannot be read."""
    try:
        where = variables_for(module.path, (*GATE_FLAGS, EXTENDED))
    except ElfError:
        where = {}
    state: dict[str, bool | None] = dict.fromkeys(GATE_FLAGS)
    try:
        with open(f"/proc/{pid}/mem", "rb") as mem:

            def read(name: str) -> bool | None:
                if name not in where:
                    return None
                mem.seek(module.base + where[name])
                b = mem.read(1)
                return bool(b[0]) if b else None

            extended = read(EXTENDED)
            for f in GATE_FLAGS:
                v = read(f)
                state[f] = True if extended else v
    except OSError:
        pass
    return state


# HotSpot's `static volatile bool _init_completed` (init.cpp), set at the end of JNI_CreateJavaVM, long
# after the options were parsed: once it is set, the flag bytes are final.
INIT_COMPLETED = "_ZL15_init_completed"
TOOL_OPTIONS = "JAVA_TOOL_OPTIONS"  # read by every HotSpot JVM however it is started (JNI_CreateJavaVM)


def tool_options(current: str | None, flags: Sequence[str]) -> str:
    """JAVA_TOOL_OPTIONS with `-XX:+FLAG` for each flag appended to what the user set (kept first)."""
    add = " ".join(f"-XX:+{f}" for f in flags)
    return f"{current} {add}" if current and current.strip() else add


def _maps(pid: int) -> list[procfs.MapEntry]:
    try:
        return procfs.parse_maps(procfs.read_text(f"/proc/{pid}/maps", procfs.MAX_MAPS_BYTES))
    except OSError:
        return []


def _libjvm_mapping(maps: Sequence[procfs.MapEntry]) -> procfs.MapEntry | None:
    """The first mapping of a libjvm.so in the process, if it has one."""
    return next((m for m in maps if os.path.basename(m.path) == LIBJVM), None)


def _writable(maps: Sequence[procfs.MapEntry], addr: int) -> bool:
    """Is `addr` in writable memory? While the loader maps libjvm.so, its whole span is first one read-only
    mapping of the file: a variable's address then holds file bytes, not the variable."""
    return any(m.start <= addr < m.end and "w" in m.perms for m in maps)


class LaunchFlags:
    """Did the JVMs a launched command started come up with the gate flags utrace put in JAVA_TOOL_OPTIONS?

    Read from each JVM's memory once HotSpot says its initialization is complete (INIT_COMPLETED):
    the flag bytes then hold what every source of options (the command line, JAVA_TOOL_OPTIONS,
    JDK_JAVA_OPTIONS, _JAVA_OPTIONS, flags files) made of them. A wrapper that clears the variable, or
    options that turn a flag off again, are found this way; so is a JVM of another JDK than the one
    whose libjvm.so carries the probes.
    """

    def __init__(self, libjvm: str, flags: Mapping[str, Sequence[str]]) -> None:
        self.libjvm = libjvm
        self.flags = dict(flags)  # gate flag -> the user's expressions that need it
        self.decided: dict[int, bool] = {}  # pid -> came up with every flag
        self.starting: dict[int, list[str]] = {}  # pid -> flags off the last time it was read, while starting
        try:
            st = os.stat(libjvm)
            self.identity: tuple[int, int] | None = (st.st_dev, st.st_ino)
            self.where = variables_for(libjvm, (*self.flags, EXTENDED, INIT_COMPLETED))
        except (OSError, ElfError):
            self.identity, self.where = None, {}

    def settled(self, pid: int) -> bool:
        return pid in self.decided

    def check(self, pid: int) -> str | None:
        if pid in self.decided:
            return None
        maps = _maps(pid)
        m = _libjvm_mapping(maps)
        if m is None:
            return None  # not a JVM (yet): a wrapper script, or the java launcher before it loads libjvm
        try:
            st = os.stat(f"/proc/{pid}/map_files/{m.start:x}-{m.end:x}")
            same = (st.st_dev, st.st_ino) == self.identity
        except OSError:
            same = m.inode == (self.identity[1] if self.identity else -1)
        if not same:
            self.decided[pid] = False
            return (
                f"pid {pid} runs {m.path}, not {self.libjvm} whose probes are traced: "
                f"nothing is seen from it (give --binary {m.path})"
            )
        base = m.start - m.offset
        if INIT_COMPLETED not in self.where or not all(f in self.where for f in self.flags):
            return None  # cannot be read: the events (or their absence) tell, see final()
        names = (INIT_COMPLETED, EXTENDED, *self.flags)
        values = self._read(pid, base, [n for n in names if n in self.where and _writable(maps, base + self.where[n])])
        off = [f for f in self.flags if not (values.get(f) or values.get(EXTENDED))]
        if not values.get(INIT_COMPLETED):
            self.starting[pid] = off  # still parsing options or starting up: ask again later
            return None
        self.starting.pop(pid, None)
        self.decided[pid] = not off
        if not off:
            return None
        need, probes = self._names(off)
        return (
            f"the JVM (pid {pid}) came up without {need} ({TOOL_OPTIONS} did not reach it, or its options "
            f"turn it off): {probes} will show no events from it; add {need} to its java command"
        )

    def _names(self, flags: Sequence[str]) -> tuple[str, str]:
        need = " ".join(f"-XX:+{f}" for f in flags)
        return need, ", ".join(dict.fromkeys(e for f in flags for e in self.flags[f]))

    def _read(self, pid: int, base: int, names: Sequence[str]) -> dict[str, bool]:
        """One byte per variable (HotSpot's bools); a variable not found or not readable is absent."""
        out: dict[str, bool] = {}
        try:
            with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
                for name in names:
                    if name in self.where:
                        mem.seek(base + self.where[name])
                        b = mem.read(1)
                        if b:
                            out[name] = bool(b[0])
        except OSError:
            pass
        return out

    def final(self, per_probe: Mapping[str, int]) -> str | None:
        if any(self.decided.values()):
            return None  # a JVM had them: what it did not report did not happen
        if any(n for p, n in per_probe.items() if GATES.get(p.removeprefix(f"{PROVIDER}:")) in self.flags):
            return None  # the gated probes fired: the flags took
        if self.decided:
            return None  # each JVM found without them was named when found (and again above)
        for pid, off in self.starting.items():
            if off:  # it ended before its startup completed, as far as utrace saw
                need, probes = self._names(off)
                return (
                    f"the JVM (pid {pid}) ended before utrace could confirm its flags: {need} was off while it "
                    f"started ({TOOL_OPTIONS} did not reach it?), and {probes} showed no events"
                )
        need = " ".join(f"-XX:+{f}" for f in self.flags)
        return (
            f"utrace could not confirm that the launched JVM had {need}: no traced process was seen to be "
            "a JVM once it had started, and none of its probes fired"
        )


# JDK 24 (JDK-8335946) generates the interpreter's and native wrappers' DTrace calls only when the flags are
# on at start-up: from then on, a flag set later turns nothing on there.
FLAGS_AT_RUN_TIME_BEFORE = 24
RELEASE_MAX = 1 << 16


def java_major(libjvm_inside: str, root: str) -> int | None:
    """The feature version (17, 25...) of the JDK a libjvm.so belongs to, from the `release` file of its
    JAVA_HOME (JAVA_VERSION="17.0.15", "1.8.0_412"), read inside the process's root; None if unknown."""
    d = os.path.dirname(libjvm_inside)
    for _ in range(4):
        d = os.path.dirname(d)
        try:
            with procfs.open_file(root + os.path.join(d, "release"), max_size=RELEASE_MAX) as f:
                text = f.read(RELEASE_MAX).decode("utf-8", "replace")
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "JAVA_VERSION":
                parts = value.strip().strip('"').split(".")
                try:
                    major = int(parts[0])
                    return int(parts[1]) if major == 1 and len(parts) > 1 else major
                except ValueError:
                    return None
        return None
    return None


class FlagWrite:
    """`--set-flags`: the gate flags turned on in a running JVM by writing HotSpot's flag bytes through
    /proc/PID/mem, and turned off again at the end (only those utrace turned on, and only if still on).

    The template interpreter and the native wrappers test the bytes at each call, and the monitor
    probes' runtime code too; code the JIT compiled before the change has no probes compiled in (or
    out) and keeps running as it was until it is compiled again.
    """

    def __init__(self, pid: int, module: Module, flags: Sequence[str]) -> None:
        self.pid = pid
        self.base = module.base
        self.flags = list(flags)
        self.set: list[str] = []
        major = java_major(module.display, f"/proc/{pid}/root")
        if major is None or major >= FLAGS_AT_RUN_TIME_BEFORE:
            which = f"JDK {major}" if major is not None else "a JDK whose version utrace cannot read (no release file)"
            raise UsageError(
                f"--set-flags: pid {pid} runs {which}: since JDK {FLAGS_AT_RUN_TIME_BEFORE} the JVM generates its "
                "method and allocation DTrace calls only when the flags are on at start-up (JDK-8335946), and utrace "
                "sets flags only in older JDKs: restart it with " + " ".join(f"-XX:+{f}" for f in self.flags)
            )
        try:
            self.where = variables_for(module.path, self.flags)
        except ElfError as e:
            raise TargetError(f"--set-flags: cannot find the JVM's flags in {module.display}: {e}") from None
        missing = [f for f in self.flags if f not in self.where]
        if missing:
            raise TargetError(f"--set-flags: {module.display} has no symbol for {', '.join(missing)}")

    def _write(self, flag: str, old: int, new: int) -> bool:
        """Set one flag byte to `new` if it holds `old`; whether it holds `new` afterwards."""
        with open(f"/proc/{self.pid}/mem", "r+b", buffering=0) as mem:
            at = self.base + self.where[flag]
            mem.seek(at)
            if mem.read(1) != bytes([old]):
                return False
            mem.seek(at)
            mem.write(bytes([new]))
            mem.seek(at)
            return mem.read(1) == bytes([new])

    def apply(self) -> str:
        for f in self.flags:
            try:
                ok = self._write(f, 0, 1)
            except OSError as e:
                self.undo()
                raise TargetError(f"--set-flags: cannot write pid {self.pid}'s memory: {e.strerror}") from None
            if not ok:
                self.undo()
                raise TargetError(f"--set-flags: {f} in pid {self.pid} did not hold 0 then 1 as expected; left alone")
            self.set.append(f)
        need = " ".join(f"-XX:+{f}" for f in self.flags)
        jit = [f for f in self.flags if f != "DTraceMonitorProbes"]
        tail = (
            f"; code the JIT compiled before now fires no {'/'.join(GATE_TOPIC[f] for f in jit)} probes until it is "
            f"compiled again (`jcmd {self.pid} Compiler.codelist` lists it)"
            if jit
            else ""
        )
        return f"--set-flags: set {need} in the running JVM (pid {self.pid}) until utrace ends{tail}"

    def undo(self) -> str | None:
        left: list[str] = []
        for f in list(self.set):
            try:
                self._write(f, 1, 0)
            except OSError:
                if os.path.exists(f"/proc/{self.pid}"):
                    left.append(f)
            self.set.remove(f)
        if left:
            return f"could not turn {', '.join(left)} off again in pid {self.pid}: restart it or set them back yourself"
        return None


def gate_advice(flag: str, launch: bool) -> str:
    how = "add it to the java command" if launch else "restart the JVM with it"
    return f"-XX:+{flag} (a startup-only flag: {how})"


# --- arguments -------------------------------------------------------------------------------------


def hotspot_args(probe: UsdtProbe, max_len: int) -> list[ArgSpec] | None:
    """Named ArgSpecs for a hotspot probe, strings as (pointer, length); None when the note does not
    have the layout utrace knows (then the caller falls back to plain integers)."""
    layout = LAYOUTS.get(probe.name)
    if layout is None or probe.provider != PROVIDER:
        return None
    need = sum(2 if form == "str" else 1 for _n, form in layout)
    if need != len(probe.arguments):
        return None
    out: list[ArgSpec] = []
    i = 0
    for name, form in layout:
        a = probe.arguments[i]
        loc = location_of(a)
        if form == "str":
            ln = probe.arguments[i + 1]
            lloc = location_of(ln)
            i += 2
            if loc is None or lloc is None:
                out.append(ArgSpec(name, ArgKind.UNAVAILABLE, note=f"operands {a.text} {ln.text} not readable"))
                continue
            cap = max(max_len, CLASS_MIN_LEN) if name == "class" else max_len
            out.append(ArgSpec(name, ArgKind.PTRLEN_STR, loc, length=lloc, length_kind=integer_kind(ln), max_len=cap))
            continue
        i += 1
        if loc is None:
            out.append(ArgSpec(name, ArgKind.UNAVAILABLE, note=f"operand {a.text} not readable from BPF"))
        elif form == "ptr":
            out.append(ArgSpec(name, ArgKind.PTR, loc))
        elif form == "bool":
            out.append(ArgSpec(name, ArgKind.BOOL, loc))
        else:
            out.append(ArgSpec(name, integer_kind(a), loc))
    return out


# --- names as Java writes them ---------------------------------------------------------------------

_PRIMITIVES = {
    "B": "byte", "C": "char", "D": "double", "F": "float", "I": "int", "J": "long", "S": "short",
    "Z": "boolean", "V": "void",
}  # fmt: skip


def java_class_name(internal: str) -> str:
    """`java/util/TreeMap$Entry` -> `java.util.TreeMap$Entry` (Class.getName()); a hidden class's
    `Foo$$Lambda+0x0000000800c01000` -> `Foo$$Lambda/0x0000000800c01000`, as the JVM logs it."""
    name = internal.replace("/", ".")
    plus = name.rfind("+0x")
    if plus > 0:
        name = name[:plus] + "/" + name[plus + 1 :]
    return name


def java_parameters(descriptor: str) -> str | None:
    """`(Ljava/lang/Object;I[J)V` -> `java.lang.Object, int, long[]`; None if it is not a descriptor."""
    if not descriptor.startswith("(") or ")" not in descriptor:
        return None
    body = descriptor[1 : descriptor.index(")")]
    out: list[str] = []
    i = 0
    while i < len(body):
        dims = 0
        while i < len(body) and body[i] == "[":
            dims += 1
            i += 1
        if i >= len(body):
            return None
        c = body[i]
        if c == "L":
            end = body.find(";", i)
            if end < 0:
                return None
            t = java_class_name(body[i + 1 : end])
            i = end + 1
        elif c in _PRIMITIVES and c != "V":
            t = _PRIMITIVES[c]
            i += 1
        else:
            return None
        out.append(t + "[]" * dims)
    return ", ".join(out)


def _like(old: object, text: str) -> object:
    """A rewritten string keeps the truncation mark of the captured one."""
    if isinstance(old, StringValue):
        s = StringValue(text)
        s.truncated = old.truncated
        s.full_length = old.full_length
        return s
    return text


def method_display(cls: object, method: object, sig: object) -> object:
    if not isinstance(cls, str) or not isinstance(method, str):
        return method
    base = f"{java_class_name(cls)}.{method}"
    params = java_parameters(sig) if isinstance(sig, str) else None
    text = f"{base}({params})" if params is not None else f"{base}{sig if isinstance(sig, str) else ''}"
    return _like(sig if isinstance(sig, StringValue) and sig.truncated else method, text)


@dataclass(slots=True)
class _Open:
    key: tuple[object, ...]
    ts_ns: int
    args: dict[str, object]


class HotspotEvents:
    """Rewrites hotspot events for people and pairs begin/end probes (see PAIRS) into durations.

    Pairs are matched per OS thread and probe, the latest open begin with the same key first, so
    nested method calls and recursion pair with the right return; an end with no begin (one that
    happened before attaching) gets no duration.
    """

    def __init__(self) -> None:
        self.open: dict[tuple[int, str], list[_Open]] = {}

    def __call__(self, ev: Event) -> Event:
        provider, _, name = ev.probe.partition(":")
        if provider != PROVIDER:
            return ev
        args = self._names(name, dict(ev.args))
        latency: int | None = None
        if name in _BEGINS:
            stack = self.open.setdefault((ev.tid, name), [])
            pair_key = next((m for b, m, _c in PAIRS.values() if b == name), ())
            stack.append(_Open(tuple(args.get(k) for k in pair_key), ev.ts_ns, args))
            if len(stack) > MAX_OPEN:
                del stack[0]
        elif name in PAIRS:
            begin, match, carry = PAIRS[name]
            stack = self.open.get((ev.tid, begin), [])
            key = tuple(args.get(k) for k in match)
            for n in range(len(stack) - 1, -1, -1):
                if stack[n].key == key:
                    # only this one: per-pool begins come in a row and their ends in the same order
                    opened = stack.pop(n)
                    latency = ev.ts_ns - opened.ts_ns
                    for src, dst in carry:
                        if src in opened.args:
                            args[dst] = opened.args[src]
                    break
        return replace(ev, args=args, latency_ns=latency)

    @staticmethod
    def _names(name: str, args: dict[str, object]) -> dict[str, object]:
        if "method" in args and "class" in args and "signature" in args:
            display = method_display(args.pop("class"), args.pop("method"), args.pop("signature"))
            return {"method": display, **args}
        cls = args.get("class")
        if isinstance(cls, str):
            args["class"] = _like(cls, java_class_name(cls))
            if name in ("class__loaded", "class__unloaded"):
                rest = {k: v for k, v in args.items() if k != "class"}
                return {"class": args["class"], "internal": cls, **rest}
        return args


# Pairs that nest per thread (an end closes the latest open begin of its thread), so the kernel can pair
# them by depth (utrace.probes.slow). Per-pool GC begins come in a row and end in the same order: not these.
KERNEL_PAIRED = frozenset(PAIRS) - {"mem__pool__gc__end"}


def kernel_pairs(specs: Sequence[ProbeSpec]) -> list[ProbeSpec]:
    """Specs with the begin/end pairs of KERNEL_PAIRED keyed for the kernel (the end measures latency),
    for --hist and --slower-than; HotspotEvents still names and pairs the events that are sent."""
    names = {s.name.partition(":")[2] for s in specs if s.name.startswith(f"{PROVIDER}:")}
    out: list[ProbeSpec] = []
    for s in specs:
        name = s.name.partition(":")[2] if s.name.startswith(f"{PROVIDER}:") else ""
        if name in KERNEL_PAIRED and PAIRS[name][0] in names:
            s = replace(s, pair=f"{PROVIDER}:{PAIRS[name][0]}", latency=True)
        elif any(b == name and end in names for end, (b, _m, _c) in PAIRS.items() if end in KERNEL_PAIRED):
            s = replace(s, pair=f"{PROVIDER}:{name}")
        out.append(s)
    return out


# --- the runtime -----------------------------------------------------------------------------------


def _all_names() -> list[str]:
    return [*CATEGORIES, *LAYOUTS, *(f"{PROVIDER}:{n}" for n in LAYOUTS)]


def resolve(probes: Sequence[UsdtProbe], expr: str) -> list[UsdtProbe]:
    """Sites for one expression: a friendly name, `hotspot:name`, a bare probe name, or a glob."""
    if expr in CATEGORIES:
        matchers = [name_matcher(g) for g in CATEGORIES[expr]]
        return [p for p in probes if p.provider == PROVIDER and any(m is None or m(p.name) for m in matchers)]
    return [p for p in match_probes(list(probes), expr) if p.offset >= 0]


def split_class_filter(expr: str) -> tuple[str, bytes | None]:
    """`method:com.example.*` -> ("method", b"com/example/"): a friendly name narrowed to classes whose
    name starts with a prefix (Java form, an optional trailing `*`); other expressions pass through.

    Raises:
        UsageError: the class part is not a plain prefix, or is too long to compare in BPF.
    """
    name, sep, cls = expr.partition(":")
    if not sep or name not in CATEGORIES:
        return expr, None
    prefix = cls.removesuffix("*")
    if not prefix or any(c in prefix for c in "*?[]"):
        raise UsageError(f"{expr!r}: after {name}: give a class name prefix such as com.example or Demo*")
    raw = prefix.replace(".", "/").encode()
    if len(raw) > PREFIX_MAX:
        raise UsageError(f"{expr!r}: a class prefix may be at most {PREFIX_MAX} bytes")
    return name, raw


def split_method_filter(expr: str) -> tuple[str, str] | None:
    """`method:PATTERN` -> ("method", PATTERN), checked to be a Class.method glob BPF can compare
    (utrace.predicate.java_method_glob); None for any other expression.

    Raises:
        UsageError: a pattern that cannot be compared in BPF.
    """
    name, sep, pattern = expr.partition(":")
    if not sep or name != "method":
        return None
    example = "such as com.shop.Cart.total, com.shop.*.total, Demo or com.example.*"
    if not pattern.strip("*"):
        raise UsageError(f"{expr!r}: give a class or Class.method after method: ({example}), or method alone")
    cls, meth = StrArg(ArgKind.PTRLEN_STR, Const(0), Const(0)), StrArg(ArgKind.PTRLEN_STR, Const(0), Const(0))
    try:
        java_method_glob(cls, meth, pattern)
    except ValueError as e:
        raise UsageError(f"{expr!r}: {e} ({example})") from None
    if len(pattern.encode()) > PREFIX_MAX:
        raise UsageError(f"{expr!r}: a method pattern may be at most {PREFIX_MAX} bytes")
    return name, pattern


def libjvm_for(request: TraceRequest) -> tuple[str, str]:
    """The libjvm.so a request without --pid traces, and where it was found (--binary, the command...)."""
    if request.binary:
        return libjvm_from_spec(request.binary), "--binary"
    if request.command:
        exe = command_path(request.command[0])
        home = home_of_launcher(exe)
        if home is not None:
            return libjvm_in_home(home) or "", f"the command ({exe})"
        lib, where = default_libjvm()
        return lib, f"{where}; {request.command[0]} is not a java launcher"
    return default_libjvm()


class JvmRuntime:
    name: ClassVar[str] = "java"
    command: ClassVar[CommandSpec] = CommandSpec(
        summary="Trace HotSpot's USDT probes in a JVM (`utrace jvm` is the same command).",
        notes=(
            "PROBES: class-load class-unload class-init gc thread method alloc monitor jit compile vmops sleep",
            "park vm, or hotspot names (hotspot:class__loaded, 'hotspot:thread__*', hotspot_jni:...).",
            "method, alloc and monitor need the JVM started with -XX:+DTraceMethodProbes,",
            "-XX:+DTraceAllocProbes, -XX:+DTraceMonitorProbes: a launched command gets them through",
            "JAVA_TOOL_OPTIONS (also when a script runs java), and each JVM is checked to have them.",
        ),
        examples=(
            "utrace java class-load -- java -cp app Main     # every class, from java.lang.Object on",
            "utrace java --pid 1234 gc thread",
            "utrace jvm method:com.example -- java -cp app Main",
            "utrace java 'method:com.shop.Cart.total' 'method:com.shop.*.get' -- java -cp app Main",
        ),
        aliases=("jvm",),
        operands=Operands.PROBES,
        options=(
            OptionSpec(
                ("--binary",),
                "binary",
                "libjvm.so, a java launcher or a JAVA_HOME (default: from --pid, the command, JAVA_HOME or PATH).",
                complete=Completion.FILE,
            ),
            OptionSpec(
                ("--set-flags",),
                "set_flags",
                "With --pid: turn on the -XX:+DTrace*Probes flags the probes need in the running JVM (written to its "
                "memory, said, turned off again when utrace ends; code the JIT compiled before fires no method "
                "probes until compiled again).",
                flag=True,
            ),
        ),
        probes=Completion.CATALOGUE,
        catalogue=Catalogue(
            names=tuple(sorted(CATEGORIES)),
            more=(*LAYOUTS, *(f"{PROVIDER}:{n}" for n in LAYOUTS)),
        ),
        refused=(("ret", "--ret does not apply to java: begin/end probes are paired automatically"),),
    )

    def target(self, request: TraceRequest) -> Target:
        if request.pid is not None:
            t = process_target(request.pid)
            jvm = [m for m in t.modules if os.path.basename(m.display) == LIBJVM]
            if not jvm:
                raise TargetError(f"pid {request.pid} ({t.modules[0].display}) is not a JVM: no {LIBJVM} mapped")
            return Target(exe=t.exe, pid=t.pid, nspid=t.nspid, root=t.root, modules=(jvm[0],))
        lib, _source = libjvm_for(request)
        return Target(exe=lib, modules=(Module(path=lib, display=lib),))

    def flags(self, request: TraceRequest, target: Target) -> dict[str, bool | None]:
        if request.pid is not None:
            return flags_of_process(request.pid, target.modules[0])
        if request.command:
            return flags_of_command(request.command, dict(os.environ))
        return dict.fromkeys(GATE_FLAGS)

    def plan(self, request: TraceRequest, target: Target) -> Plan:
        module = target.modules[0]
        probes = usdt_probes_for(module.path)
        plan = Plan(refine=HotspotEvents())
        if request.pid is None and request.command and not request.binary:
            _lib, source = libjvm_for(request)  # found again: the runtime object keeps nothing from target()
            if "not a java launcher" in source:
                plan.notes.append(f"using {module.display} from {source}")
        if not any(p.provider == PROVIDER for p in probes):
            raise TargetError(
                f"{module.display} has no USDT probes (no .note.stapsdt): this JDK was built without DTrace "
                "support; use one built with it, such as Debian's openjdk or Eclipse Temurin"
            )
        sites: list[UsdtProbe] = []
        # site offset -> class prefixes (bytes) or, for method probes, Class.method globs (str); None: all
        prefixes: dict[int, set[bytes | str] | None] = {}
        asked_by: dict[int, list[str]] = {}  # site offset -> the user's expressions that chose it
        for expr in request.probes:
            name, prefix = split_method_filter(expr) or split_class_filter(expr)
            found = resolve(probes, name)
            if not found:
                close = close_names(expr.removeprefix(f"{PROVIDER}:"), _all_names(), cutoff=0.6)
                raise NotFoundError(f"no JVM probe matches {expr!r} (known: {', '.join(CATEGORIES)})", close)
            if prefix is not None and not all("class" in dict(LAYOUTS.get(p.name, ())) for p in found):
                raise UsageError(f"{expr!r}: {name} probes carry no class name to filter on")
            for p in found:
                asked_by.setdefault(p.offset, []).append(expr)
                if p.offset not in prefixes:
                    sites.append(p)
                    prefixes[p.offset] = None if prefix is None else {prefix}
                else:
                    have = prefixes[p.offset]
                    prefixes[p.offset] = None if have is None or prefix is None else have | {prefix}
        flags = self.flags(request, target)
        if request.command:
            flags = self.launch_flags(plan, module.path, sites, flags, asked_by)
        if dict(request.extra).get("set_flags"):
            if request.pid is None:
                raise UsageError(
                    "--set-flags applies to --pid (a launched JVM gets the flags through JAVA_TOOL_OPTIONS)"
                )
            gates = [g for g in GATE_FLAGS if flags.get(g) is False and any(GATES.get(p.name) == g for p in sites)]
            if gates:
                plan.change = FlagWrite(request.pid, module, gates)
                flags = {**flags, **dict.fromkeys(gates, True)}
            else:
                plan.notes.append(
                    "--set-flags: nothing to change (the flags these probes need are on, or none are needed)"
                )
        off: dict[str, list[str]] = {}  # gate -> probes it turns off
        unknown: set[str] = set()
        kept: list[UsdtProbe] = []
        for p in sites:
            gate = GATES.get(p.name) if p.provider == PROVIDER else None
            state = flags.get(gate) if gate else True
            if state is False and gate:
                off.setdefault(gate, []).append(p.name)
                continue
            if state is None and gate:
                unknown.add(gate)
            kept.append(p)
        launch = bool(request.command)
        for gate in off:
            line = f"{GATE_TOPIC[gate]} probes are off in this JVM: they need {gate_advice(gate, launch)}"
            if not kept:
                raise UsageError(line)
            plan.notes.append(line + "; not traced")
        for gate in sorted(unknown):
            plan.notes.append(f"probes gated by {gate} fire only in JVMs started with -XX:+{gate}")
        if any(p.name == "method__entry" and prefixes[p.offset] is None for p in kept):
            plan.notes.append(
                "method probes fire on every Java call (hundreds of thousands while a JVM starts; what the "
                "ring buffer cannot hold is counted as lost): narrow them with method:CLASS, e.g. method:com.example"
            )
        plan.specs = [self.spec(p, request.max_len, prefixes[p.offset]) for p in kept]
        if request.ret:  # --hist or --slower-than: begin/end pairs timed in the kernel
            plan.specs = kernel_pairs(plan.specs)
        return plan

    @staticmethod
    def launch_flags(
        plan: Plan,
        libjvm: str,
        sites: Sequence[UsdtProbe],
        flags: dict[str, bool | None],
        asked_by: Mapping[int, Sequence[str]],
    ) -> dict[str, bool | None]:
        """A launched command gets the gate flags its probes need and it does not set already, through
        JAVA_TOOL_OPTIONS (which reaches a java that a wrapper script runs later); each JVM is then
        checked to have come up with them. Returns the flags as the command will have them."""
        needed: dict[str, dict[str, None]] = {}  # gate -> expressions that need it (ordered, once each)
        for p in sites:
            gate = GATES.get(p.name) if p.provider == PROVIDER else None
            if gate and flags.get(gate) is not True:
                needed.setdefault(gate, {}).update(dict.fromkeys(asked_by.get(p.offset, ())))
        if not needed:
            return flags
        order = [g for g in GATE_FLAGS if g in needed]
        plan.launch_env[TOOL_OPTIONS] = tool_options(os.environ.get(TOOL_OPTIONS), order)
        plan.launch_check = LaunchFlags(libjvm, {g: list(needed[g]) for g in order})
        need = " ".join(f"-XX:+{g}" for g in order)
        exprs = ", ".join(dict.fromkeys(e for g in order for e in needed[g]))
        plan.notes.append(f"the command runs with {need} added to {TOOL_OPTIONS} (needed by {exprs})")
        return {**flags, **dict.fromkeys(order, True)}

    @staticmethod
    def spec(probe: UsdtProbe, max_len: int, prefixes: set[bytes | str] | None = None) -> ProbeSpec:
        args = hotspot_args(probe, max_len)
        spec = probe_spec(probe, args if args is not None else usdt_args(probe))
        if not prefixes:
            return spec
        named = {a.name: a for a in spec.args}
        cls = named["class"]
        assert cls.length is not None
        globs = sorted(p for p in prefixes if isinstance(p, str))
        only: PrefixFilter | Predicate
        if globs:
            c, m = (StrArg(a.kind, a.loc, a.length, a.length_kind) for a in (cls, named["method"]))
            only = Predicate(any_of([java_method_glob(c, m, g) for g in globs]))
        else:
            raw = tuple(sorted(p for p in prefixes if isinstance(p, bytes)))
            only = PrefixFilter(cls.loc, cls.length, cls.length_kind, raw)
        return replace(spec, filters=(*spec.filters, only))
