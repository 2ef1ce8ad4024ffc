"""The runtime plugin contract and what plugins share: requests, plans, symbol search."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, Protocol

from utrace.elf.demangle import base_name, display_name
from utrace.elf.index import function_table
from utrace.elf.match import function_not_found, match_functions
from utrace.elf.symbols import SymbolTable
from utrace.errors import ElfError, NotFoundError
from utrace.model import Event, ProbeSpec, Symbol, Target
from utrace.process.v8heap import SourceLines
from utrace.v8layout import V8Layout


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """What the user asked for, independent of the command line that said it.

    Attributes:
        runtime: plugin name ("native", "node"...).
        binary: a path or command name to trace, or None (then the pid or the command decides).
        pid: a running process, or None.
        command: argv of a program to launch held and trace from its first instruction.
        probes: the user's probe expressions (names, globs, `name(signature)`).
        ret: also trace returns.
        max_len: string capture limit in bytes.
        extra: values of the runtime's own options (CommandSpec.options) that no field above holds.
        where: a `--where` predicate over the probes' arguments (utrace.app.where), applied to the plan.
    """

    runtime: str
    binary: str | None = None
    pid: int | None = None
    command: tuple[str, ...] = ()
    probes: tuple[str, ...] = ()
    ret: bool = False
    max_len: int = 128
    extra: tuple[tuple[str, str | bool | None], ...] = ()
    where: str | None = None


@dataclass(slots=True)
class Plan:
    """Probe specs to attach, and lines to tell the user about choices made (aliases, skips).

    `refine`, when a runtime sets it, sees every decoded event in order and returns the event to report:
    the place for what only user space can do (pairing two USDT probes into a duration, rewriting a
    VM's internal names). It must return exactly one event per event, so nothing is lost or invented.

    `needs_tls`: some location reads the thread pointer (Go's `g` in the stack ABI), so the program
    needs the running kernel's task_struct layout.

    `only_exe`: trace only the processes whose executable is this file (by inode, found when they exec
    it and, at the start, in /proc), and what they fork: set for a file traced by path whose probes sit
    in a library it imports, which every other process on the machine runs too.

    `launch_env`: variables set in a launched command's environment (full values: a runtime that adds
    to one the user set includes theirs), so that it runs with what the probes need; `launch_check`
    then tells whether the processes it started did. `launch_args` go right after a launched command's
    program name when that program is the target's executable (V8 flags node refuses in NODE_OPTIONS).

    `counters`: (per-CPU array of the program, warning with `{n}`): said at the end when the count is
    not 0 (hits a probe could not decide on, such as JavaScript calls whose function name was unreadable).
    `closing`, given the events per probe label and a reader of the program's hash maps' keys (by map
    name), returns lines to say at the end (the closest JavaScript names seen for a pattern that matched none).
    """

    specs: list[ProbeSpec] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    refine: Callable[[Event], Event] | None = None
    needs_tls: bool = False
    only_exe: str | None = None
    launch_env: dict[str, str] = field(default_factory=dict)
    launch_args: tuple[str, ...] = ()
    counters: tuple[tuple[str, str], ...] = ()
    closing: Callable[[Mapping[str, int], Callable[[str], list[bytes]]], list[str]] | None = None
    launch_check: LaunchCheck | None = None
    change: TargetChange | None = None
    v8_frames: V8Layout | None = None  # a V8 node target: its stacks' JavaScript frames are named
    # a V8 node target: the lines of its scripts, for `js:` events and stack frames (each script read once)
    source_lines: SourceLines | None = None


class LaunchCheck(Protocol):
    """Whether launched processes came up with what `Plan.launch_env` set up (a JVM's flags)."""

    def check(self, pid: int) -> str | None:
        """A warning, once, when `pid` is seen without it; None otherwise (fine, or not decided yet)."""
        ...

    def settled(self, pid: int) -> bool:
        """Whether `check(pid)` has decided (then asking again tells nothing new)."""
        ...

    def final(self, per_probe: Mapping[str, int]) -> str | None:
        """At the end, from all that was checked and the events seen per probe: what to repeat or say."""
        ...


class TargetChange(Protocol):
    """A change made to a running target for its probes (an option such as java's --set-flags), undone at the end."""

    def apply(self) -> str:
        """Make the change; the line that says what was done. Raises TargetError if it cannot be made."""
        ...

    def undo(self) -> str | None:
        """Put back what apply changed; a warning line if it could not be."""
        ...


class Operands(Enum):
    """How a runtime's command reads the words after its name."""

    BINARY_THEN_PROBES = "args"  # ARGS...: BINARY first (left out with --pid or -- COMMAND), then probes
    PROBES = "probes"  # PROBES...: probe expressions only (the binary, if any, from an option)


class Completion(Enum):
    """What shell completion offers for a word."""

    FILE = "file"
    NAMES = "names"  # functions and USDT probes of the target on the line
    FUNCTIONS = "functions"  # functions of the target on the line
    CATALOGUE = "catalogue"  # the runtime's own catalogue (no binary read)


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One extra option of a runtime's command (besides the options every trace command has).

    Attributes:
        flags: spellings, long first ("--binary",).
        dest: the TraceRequest field it fills ("binary"); any other name goes to TraceRequest.extra.
        help: one line for `--help`.
        flag: an on/off switch rather than an option with a value (a string).
        complete: what completion offers for its value.
    """

    flags: tuple[str, ...]
    dest: str
    help: str
    flag: bool = False
    complete: Completion | None = None


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Probe names a runtime knows without reading a binary: `names` offered for an empty word,
    `more` as well once something is typed."""

    names: tuple[str, ...]
    more: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A runtime's command, as data: the CLI builds `utrace NAME` (and its aliases) from it.

    Attributes:
        summary: the first paragraph of `--help` (its first sentence is the line in `utrace --help`).
        examples: command lines shown under the summary, one a line.
        notes: a paragraph shown as written, between the summary and the examples.
        aliases: other names of the same command (`jvm` for `java`).
        operands: how the words after the command name are read.
        options: options of this runtime only.
        probes: what completion offers for a probe word.
        catalogue: the runtime's own probe names (for `probes=Completion.CATALOGUE`).
        refused: (option, message): common trace options that do not apply to this runtime.
    """

    summary: str
    examples: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    operands: Operands = Operands.BINARY_THEN_PROBES
    options: tuple[OptionSpec, ...] = ()
    probes: Completion = Completion.NAMES
    catalogue: Catalogue | None = None
    refused: tuple[tuple[str, str], ...] = ()


class Runtime(Protocol):
    """A runtime plugin: its command as data, then what to trace for a request.

    An instance is made per use and keeps nothing from one call to the next: whatever `plan`
    needs from `target` is in the Target or found again from the request.
    """

    name: ClassVar[str]
    command: ClassVar[CommandSpec]

    def target(self, request: TraceRequest) -> Target: ...

    def plan(self, request: TraceRequest, target: Target) -> Plan: ...


@dataclass(slots=True)
class ModuleSymbols:
    path: str
    display: str
    table: SymbolTable


def load_modules(target: Target) -> list[ModuleSymbols]:
    """Symbol tables of the target's modules (unreadable secondary modules are skipped)."""
    out: list[ModuleSymbols] = []
    for n, m in enumerate(target.modules):
        try:
            out.append(ModuleSymbols(m.path, m.display, function_table(m.path)))
        except ElfError:
            if n == 0:
                raise
    return out


def find_functions(modules: Sequence[ModuleSymbols], pattern: str) -> list[Symbol]:
    """Function entries matching a name or glob in any module, one per (module, address)."""
    found: list[Symbol] = []
    seen: set[tuple[str, int]] = set()
    for ms in modules:
        for i in match_functions(ms.table, pattern):
            sym = ms.table.symbol(i)
            key = (sym.module, sym.address)
            if key in seen or sym.offset < 0:
                continue
            seen.add(key)
            found.append(sym)
    return found


def not_found(modules: Sequence[ModuleSymbols], name: str, where: str) -> NotFoundError:
    return function_not_found((ms.table for ms in modules), name, where)


__all__ = [
    "Catalogue",
    "CommandSpec",
    "Completion",
    "LaunchCheck",
    "ModuleSymbols",
    "Operands",
    "OptionSpec",
    "Plan",
    "Runtime",
    "TargetChange",
    "TraceRequest",
    "base_name",
    "display_name",
    "find_functions",
    "load_modules",
    "not_found",
]
