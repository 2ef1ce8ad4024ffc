"""Plain immutable data passed between the layers (ELF readers, runtimes, probes, backend, output)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from utrace.predicate import AfterEntry, Predicate

from utrace.v8layout import V8Layout


class Binding(StrEnum):
    LOCAL = "local"
    GLOBAL = "global"
    WEAK = "weak"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Symbol:
    """One function symbol of one module.

    Attributes:
        name: demangled name (the raw name when it is not mangled or demangling failed).
        raw: the name exactly as in `.symtab`/`.dynsym`.
        address: the symbol value (virtual address as `nm` prints it).
        size: `st_size` in bytes (0 for some assembly symbols).
        binding: local, global or weak.
        offset: file offset of the first instruction, what a uprobe attaches to.
        module: path of the ELF file as the tracer opens it.
        clone: GCC clone suffix such as ".cold", ".part.0", ".isra.0", ".constprop.0"; "" if none.
    """

    name: str
    raw: str
    address: int
    size: int
    binding: Binding
    offset: int
    module: str
    clone: str = ""


class OperandKind(StrEnum):
    REGISTER = "register"
    MEMORY = "memory"
    CONSTANT = "constant"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class UsdtArgument:
    """One parsed USDT argument spec such as `-4@%eax` or `8@152(%rdi)`.

    Attributes:
        text: the spec as written in the note.
        size: width in bytes (1, 2, 4 or 8).
        signed: True for a negative size prefix.
        kind: register, memory (base register + displacement [+ index*scale]) or constant.
        register: canonical 64-bit register name ("rax") for REGISTER operands and the base of MEMORY ones;
            for REGISTER operands `subregister` keeps the exact name used ("eax").
        offset: displacement for MEMORY operands.
        value: the immediate for CONSTANT operands.
        index: index register for MEMORY operands with an index, else "".
        scale: scale of the index register.
        subregister: the register name exactly as written.
        symbol: for `sym+disp(%rip)` operands, the symbol the address is relative to.
    """

    text: str
    size: int
    signed: bool
    kind: OperandKind
    register: str = ""
    offset: int = 0
    value: int = 0
    index: str = ""
    scale: int = 1
    subregister: str = ""
    symbol: str = ""


@dataclass(frozen=True, slots=True)
class UsdtProbe:
    """One USDT (SystemTap SDT) probe site from `.note.stapsdt`.

    Attributes:
        provider: provider name ("hotspot").
        name: probe name ("class__loaded").
        address: pc as stored in the note (what `readelf -n` prints as Location).
        pc: the address after the `.stapsdt.base` adjustment (where the probe really is).
        offset: file offset of `pc`, what a uprobe attaches to.
        semaphore: semaphore address as stored in the note, None when the probe has none.
        semaphore_offset: file offset of the adjusted semaphore (the kernel's ref_ctr_offset), or None.
        arguments: parsed argument specs.
        module: path of the ELF file.
    """

    provider: str
    name: str
    address: int
    pc: int
    offset: int
    semaphore: int | None
    semaphore_offset: int | None
    arguments: tuple[UsdtArgument, ...]
    module: str

    @property
    def full_name(self) -> str:
        return f"{self.provider}:{self.name}"

    @property
    def argument_texts(self) -> list[str]:
        return [a.text for a in self.arguments]


@dataclass(frozen=True, slots=True)
class Module:
    """An ELF file that belongs to a target.

    Attributes:
        path: the path the tracer opens (through /proc/PID/root for a process).
        display: the path as the traced process sees it.
        base: load address of the first mapping in the process (0 for a file target).
    """

    path: str
    display: str
    base: int = 0


@dataclass(frozen=True, slots=True)
class Target:
    """What the user pointed at: a file, or a running process and the ELF files it maps.

    Attributes:
        exe: path of the main executable (opened through /proc/PID/root for a process).
        pid: host pid, or None for a file target.
        nspid: the pid as the process sees it inside its own PID namespace.
        root: /proc/PID/root for a process, "" for a file.
        modules: the executable first, then every other mapped ELF file.
    """

    exe: str
    pid: int | None = None
    nspid: int | None = None
    root: str = ""
    modules: tuple[Module, ...] = field(default_factory=tuple)


# --- What to capture: declared by runtime plugins, turned into C only by utrace.probes -------------


class ArgKind(StrEnum):
    """How a captured value is read and shown. A small closed set: the code generator knows each."""

    U64 = "u64"
    S64 = "s64"
    U32 = "u32"
    S32 = "s32"
    U16 = "u16"
    S16 = "s16"
    U8 = "u8"
    S8 = "s8"
    BOOL = "bool"
    PTR = "ptr"  # shown as hex
    CSTR = "cstr"  # NUL-terminated string at a pointer
    PTRLEN_STR = "ptrlen_str"  # `length` bytes at a pointer, never reading past them
    UNAVAILABLE = "unavailable"  # known to exist but not readable from BPF (e.g. float registers)
    JSVALUE = "jsvalue"  # a V8 tagged value, decoded in BPF (utrace.probes.v8values)
    JSNAME = "jsname"  # the name of the JavaScript function a JsMatch filter matched
    JSSCRIPT = "jsscript"  # the matched function's script (name tail) and start position (utrace.probes.v8values)


STRING_KINDS = frozenset({ArgKind.CSTR, ArgKind.PTRLEN_STR})


@dataclass(frozen=True, slots=True)
class Reg:
    """A general-purpose register at the probe point ("rdi", "rax"... 64-bit names)."""

    name: str


@dataclass(frozen=True, slots=True)
class Stack:
    """The 8-byte slot at stack pointer + offset at the probe point."""

    offset: int


@dataclass(frozen=True, slots=True)
class Const:
    value: int


@dataclass(frozen=True, slots=True)
class Deref:
    """The `size`-byte value in user memory at (value of `base`) + offset."""

    base: Location
    offset: int = 0
    size: int = 8


@dataclass(frozen=True, slots=True)
class Diff:
    """The value of `a` minus the value of `b` (a goroutine's stack depth: stack.hi - sp)."""

    a: Location
    b: Location


@dataclass(frozen=True, slots=True)
class Tls:
    """The 8-byte value at the thread pointer (x86-64 fs base) + offset: Go's `g` in the stack ABI."""

    offset: int


Location = Reg | Stack | Const | Deref | Diff | Tls


@dataclass(frozen=True, slots=True)
class ArgSpec:
    """One value to capture.

    Attributes:
        name: parameter name shown to users ("backlog", or "arg0" when unknown).
        kind: how to read and show it.
        loc: where the value (for strings: the pointer) is.
        length: for PTRLEN_STR, where the byte count is.
        length_kind: integer width and signedness of the byte count (HotSpot passes `-4@%eax`).
        max_len: string capture limit in bytes (longer strings are cut and flagged).
        labels: names for integer values (an enum such as libuv's handle types).
        note: why a value is UNAVAILABLE, shown instead of it.
        uncertain: why the value read may not be this argument (a C++ `this` nobody can confirm);
            None when the location is known. The event shows the value with this reason.
        present_if: (location, n): the value exists only when the integer there is greater than n
            (a JavaScript argument beyond the count the caller passed is not on the stack).
    """

    name: str
    kind: ArgKind
    loc: Location = Const(0)
    length: Location | None = None
    length_kind: ArgKind = ArgKind.S64
    max_len: int = 128
    labels: tuple[tuple[int, str], ...] = ()
    note: str = ""
    uncertain: str | None = None
    present_if: tuple[Location, int] | None = None


@dataclass(frozen=True, slots=True)
class Filter:
    """Only emit when the integer at `loc` (read as `kind`) equals `value`."""

    loc: Location
    kind: ArgKind
    value: int


@dataclass(frozen=True, slots=True)
class PrefixFilter:
    """Only emit when the (pointer, length) string at `loc`/`length` starts with one of `prefixes`.

    Runs in BPF before anything is reserved, so a filtered-out hit costs no ring-buffer space (HotSpot's
    method probes fire hundreds of thousands of times while a JVM starts). Prefixes are compared as
    bytes, each at most PREFIX_MAX long.
    """

    loc: Location
    length: Location
    length_kind: ArgKind
    prefixes: tuple[bytes, ...]


PREFIX_MAX = 64


@dataclass(frozen=True, slots=True)
class JsMatch:
    """Only emit when the V8 JSFunction at `function` is named by one of `globs` (`*` for any bytes).

    The name is read in BPF through `layout` (utrace.probes.v8values). `handoff`: this probe sits where
    V8 hands a call it already entered on to other code (a builtin's `jmp REG`): it emits nothing and
    marks the call, so that the entry it leads to (`sp_delta` bytes below... see v8values) is not
    counted twice. `sp_delta`: the stack pointer at this probe minus the stack pointer of the call's
    first entry (-8 where the entry is a builtin called from the function's own code). `script`:
    when not empty, only functions of a script whose name is it or ends with `/` and it.
    """

    function: Location
    layout: V8Layout
    globs: tuple[bytes, ...]
    handoff: bool = False
    sp_delta: int = 0
    script: bytes = b""


JS_NAME_MAX = 64
JS_SCRIPT_MAX = 128  # bytes of a script's name kept (its tail)


@dataclass(frozen=True, slots=True)
class JsReturn:
    """On a return path V8 shares between all functions (the interpreter's, Sparkplug's): emit only a
    return whose entry was seen (a start for its frame exists); its values are V8 values (`layout`)."""

    layout: V8Layout


class ProbeKind(StrEnum):
    ENTRY = "entry"  # uprobe at a function's first instruction (or just after Go's stack check)
    RETURN = "return"  # uretprobe (never used on Go)
    EXIT = "exit"  # plain uprobe on one return instruction (Go): `args` are the results
    USDT = "usdt"  # uprobe at a USDT note's pc


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """One attach point and what to capture there.

    Attributes:
        name: the probe's display name ("uv__tcp_listen", "hotspot:class__loaded").
        module: path of the ELF file to attach to (as utrace opens it).
        offset: file offset of the instruction.
        kind: entry, return or USDT.
        args: values captured, in order.
        ret: for RETURN probes, how to show the return value.
        ref_ctr_offset: file offset of a USDT semaphore (0 when none).
        filters: all must hold for an event to be emitted (`Predicate`, `AfterEntry`: utrace.predicate).
        latency: pair this RETURN probe with the ENTRY probe of the same `pair` to measure latency.
        pair: key shared by an entry and its return probe (the function).
        address: the symbol or note address (for display).
        frame: how an ENTRY and its EXIT recognise the same call, as (owner, depth) values read at
            both probes (Go: the goroutine pointer and stack.hi - sp, which stay equal when the
            goroutine's stack is copied); None pairs by thread id and stack pointer.
        context: values shown with every event of this probe but not as arguments (Go's goid).
        facts: fixed (name, text) pairs shown with every event's context, known when planning (where
            a USDT probe's argument types came from).
    """

    name: str
    module: str
    offset: int
    kind: ProbeKind
    args: tuple[ArgSpec, ...] = ()
    ret: ArgSpec | None = None
    ref_ctr_offset: int = 0
    filters: tuple[Filter | PrefixFilter | Predicate | AfterEntry | JsMatch | JsReturn, ...] = ()
    latency: bool = False
    pair: str = ""
    address: int = 0
    frame: tuple[Location, Location] | None = None
    context: tuple[ArgSpec, ...] = ()
    facts: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of a user stack: an address and, when known, the function holding it.

    `offset` is the address's distance from the function's start; `module` is the file (as the traced
    process names it) or a region such as "[vdso]"; both None when nothing maps the address. JIT code
    is named from the process's perf map (`module` is then "[perf-map]").

    `js` (a node target's frames, see utrace.process.v8frames): None for a native frame; "" for a
    JavaScript frame whose function was read from V8's heap (`function` is its name, "" when it has
    none; `module` its script's name when read, `line` the line of the function's start in that
    script when known); otherwise why the JavaScript frame's function was not read. `v8_slots`: the
    raw V8 frame slots captured with the address (codegen._stack), for the symbolizer; not shown.
    """

    address: int
    function: str | None = None
    offset: int = 0
    module: str | None = None
    js: str | None = None
    line: int | None = None
    v8_slots: tuple[int, int, int, int] | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.js is not None:
            if self.js:
                return f"<JS frame, function not read: {self.js}> {self.address:#x}"
            at = f":{self.line}" if self.line is not None else ""
            where = f" ({self.module.rsplit('/', 1)[-1]}{at})" if self.module else ""
            return f"{self.function or '(anonymous)'} [JS]{where}"
        where = f" ({self.module.rsplit('/', 1)[-1]})" if self.module else ""
        if self.function is None:
            return f"{self.address:#x}{where}"
        return f"{self.function}+{self.offset:#x}{where}"


class RawStack(NamedTuple):
    """A record's stack as `Decoder.raw_stack` reads it: no Frames built, nothing symbolised."""

    pid: int
    ts_ns: int  # the event's time (CLOCK_MONOTONIC, as time.monotonic_ns)
    addresses: tuple[int, ...]
    slots: list[tuple[int, int, int, int]]  # V8's frame slots, one tuple per address (or none at all)


@dataclass(frozen=True, slots=True)
class Event:
    """One decoded event.

    `kind` is "call" (function entry), "return" or "event" (USDT hit); `args` are keyed by parameter
    name; `ret` and `latency_ns` only for returns (latency when the entry was seen). A Go return has
    several results: `ret` is then a dict keyed by result name. `context` holds per-event facts that
    are not arguments (Go's goroutine id). `stack` is the user stack, innermost frame first, when
    stacks were asked for. `ns_pid`/`ns_tid` are the ids the process sees in its own PID namespace (a
    container), set only where they differ from `pid`/`tid`.
    """

    kind: str
    probe: str
    pid: int
    tid: int
    comm: str
    ts_ns: int
    cpu: int
    args: dict[str, object]
    ret: object = None
    latency_ns: int | None = None
    context: dict[str, object] = field(default_factory=dict)
    stack: tuple[Frame, ...] = ()
    ns_pid: int | None = None
    ns_tid: int | None = None


# --- Go types: produced by the DWARF reader or a user signature, consumed by the Go ABI --------------


class GoKind(StrEnum):
    """How a Go type is passed (abi-internal.md) and shown."""

    BOOL = "bool"
    INT = "int"  # int, int8..int64 (signed)
    UINT = "uint"  # uint, uint8..uint64, uintptr
    FLOAT = "float"  # float32, float64
    COMPLEX = "complex"  # complex64, complex128
    STRING = "string"  # {ptr, len}
    SLICE = "slice"  # {ptr, len, cap}
    IFACE = "iface"  # non-empty interface such as error: {itab, data}
    EFACE = "eface"  # interface{} / any: {type, data}
    POINTER = "pointer"  # *T, map, chan, func, unsafe.Pointer: one word
    STRUCT = "struct"
    ARRAY = "array"


@dataclass(frozen=True, slots=True)
class GoField:
    name: str
    offset: int
    type: GoType


@dataclass(frozen=True, slots=True)
class GoType:
    """A Go type as far as passing and showing it needs.

    Attributes:
        name: as Go writes it ("string", "[]uint8", "*net/http.Response", "error", "main.T").
        kind: see GoKind.
        size: bytes in memory.
        fields: STRUCT members in declaration order with their offsets.
        elem: element type of SLICE and ARRAY, pointee of POINTER when known.
        length: ARRAY element count.
    """

    name: str
    kind: GoKind
    size: int
    fields: tuple[GoField, ...] = ()
    elem: GoType | None = None
    length: int = 0
