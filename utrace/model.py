"""Plain immutable data passed between the layers (ELF readers, runtimes, probes, backend, output)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Binding(str, Enum):
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

    @property
    def is_entry(self) -> bool:
        """False for the `.cold` parts GCC splits out: they are not function entries."""
        return ".cold" not in self.clone


class OperandKind(str, Enum):
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
