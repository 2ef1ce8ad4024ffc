"""USDT (SystemTap SDT) probes from `.note.stapsdt`, and their argument specs.

Note layout (sys/sdt.h): name "stapsdt", type 3, desc = pc, base, semaphore (three 64-bit words),
then provider, probe name and argument string, each NUL-terminated. When the file has a
`.stapsdt.base` section, pc and semaphore are shifted by (section address - base) to undo prelinking.
pyelftools mislabels these notes (as GNU ABI tags by type number), so notes are matched by name here.
"""

from __future__ import annotations

import re
import struct

from utrace.elf.buildid import iter_notes
from utrace.elf.reader import SHT_NOTE, ElfImage
from utrace.model import OperandKind, UsdtArgument, UsdtProbe

NT_STAPSDT = 3

_REGS64 = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
]  # fmt: skip
_ALIASES: dict[str, str] = {}
for _r, _aliases in {
    "rax": "eax ax al ah",
    "rbx": "ebx bx bl bh",
    "rcx": "ecx cx cl ch",
    "rdx": "edx dx dl dh",
    "rsi": "esi si sil",
    "rdi": "edi di dil",
    "rbp": "ebp bp bpl",
    "rsp": "esp sp spl",
}.items():
    _ALIASES[_r] = _r
    for _a in _aliases.split():
        _ALIASES[_a] = _r
for _n in range(8, 16):
    for _suffix in ("", "d", "w", "b", "l"):
        _ALIASES[f"r{_n}{_suffix}"] = f"r{_n}"
_ALIASES["rip"] = "rip"

_SPEC_RE = re.compile(r"^(-?)(1|2|4|8)@(.+)$")
_MEM_RE = re.compile(
    r"^(?P<disp>[-+]?(?:0x[0-9a-fA-F]+|\d+))?"
    r"\(%(?P<base>\w+)(?:,%(?P<index>\w+)(?:,(?P<scale>[1248]))?)?\)$"
)
_RIP_SYM_RE = re.compile(r"^(?P<sym>[A-Za-z_.$][\w.$@]*)(?P<disp>[-+](?:0x[0-9a-fA-F]+|\d+))?\(%rip\)$")


def canonical_register(name: str) -> str | None:
    """The 64-bit register holding an x86-64 (sub)register name: "eax" -> "rax", "r9d" -> "r9"."""
    return _ALIASES.get(name)


def parse_argument(text: str) -> UsdtArgument:
    """Parse one x86-64 argument spec: `8@%rdx`, `-4@%eax`, `8@152(%rdi)`, `1@%cl`, `-4@$-1`,
    `8@-16(%rbp,%rax,8)`, `4@counter+8(%rip)`.

    A size-less operand (old notes: `%rdi`) is taken as 8 bytes signed. Specs this reader does not
    understand (other architectures, floating-point registers) come back as UNSUPPORTED, keeping the
    text, so listings still show them and tracing can refuse that one argument with a reason.
    """
    m = _SPEC_RE.match(text)
    if m:
        signed = m.group(1) == "-"
        size = int(m.group(2))
        op = m.group(3)
    else:
        signed, size, op = True, 8, text
    unsupported = UsdtArgument(text, size, signed, OperandKind.UNSUPPORTED)
    if op.startswith("%"):
        reg = canonical_register(op[1:])
        if reg is None or reg == "rip":
            return unsupported
        return UsdtArgument(text, size, signed, OperandKind.REGISTER, register=reg, subregister=op[1:])
    if op.startswith("$"):
        try:
            value = int(op[1:], 0)
        except ValueError:
            return unsupported
        return UsdtArgument(text, size, signed, OperandKind.CONSTANT, value=value)
    mm = _MEM_RE.match(op)
    if mm:
        base = canonical_register(mm.group("base"))
        index = mm.group("index")
        index_reg = canonical_register(index) if index else ""
        if base is None or index_reg is None:
            return unsupported
        disp = _displacement(mm.group("disp"))
        if disp is None:
            return unsupported
        scale = int(mm.group("scale")) if mm.group("scale") else 1
        return UsdtArgument(
            text, size, signed, OperandKind.MEMORY, register=base, offset=disp,
            index=index_reg or "", scale=scale, subregister=mm.group("base"),
        )  # fmt: skip
    rm = _RIP_SYM_RE.match(op)
    if rm:
        disp = _displacement(rm.group("disp"))
        if disp is None:
            return unsupported
        return UsdtArgument(
            text,
            size,
            signed,
            OperandKind.MEMORY,
            register="rip",
            offset=disp,
            symbol=rm.group("sym"),
        )
    return unsupported


def _displacement(text: str | None) -> int | None:
    """A displacement as written: "152", "-0x10", "+8"; "010" is decimal (as libbpf reads it, where
    `int(x, 0)` would raise). None when unusable (e.g. beyond int()'s digit limit)."""
    if not text:
        return 0
    try:
        return int(text, 16) if "x" in text.lower() else int(text, 10)
    except ValueError:
        return None


def parse_arguments(spec: str) -> tuple[UsdtArgument, ...]:
    """Split a note's argument string on whitespace and parse each spec."""
    return tuple(parse_argument(t) for t in spec.split())


def read_usdt_probes(image: ElfImage) -> list[UsdtProbe]:
    """Every USDT probe site in `image`, in note order.

    Raises:
        ElfError: a `.note.stapsdt` section lies outside the file.
    """
    notes_sections = [s for s in image.sections if s.type == SHT_NOTE and s.name == ".note.stapsdt"]
    if not notes_sections:
        return []
    base_sec = image.section(".stapsdt.base")
    probes: list[UsdtProbe] = []
    for sec in notes_sections:
        for name, ntype, desc in iter_notes(image.section_bytes(sec)):
            if name != b"stapsdt" or ntype != NT_STAPSDT or len(desc) < 24:
                continue
            pc, base, sem = struct.unpack_from("<QQQ", desc, 0)
            strings = desc[24:].split(b"\0")
            if len(strings) < 3:
                continue
            provider, probe_name, args = (s.decode("utf-8", "replace") for s in strings[:3])
            delta = (base_sec.addr - base) if (base_sec is not None and base) else 0
            real_pc = (pc + delta) & 0xFFFFFFFFFFFFFFFF
            real_sem = ((sem + delta) & 0xFFFFFFFFFFFFFFFF) if sem else 0
            offset = image.vaddr_to_offset(real_pc)
            sem_offset = image.vaddr_to_offset(real_sem) if real_sem else None
            probes.append(
                UsdtProbe(
                    provider=provider,
                    name=probe_name,
                    address=pc,
                    pc=real_pc,
                    offset=-1 if offset is None else offset,
                    semaphore=sem or None,
                    semaphore_offset=sem_offset,
                    arguments=parse_arguments(args),
                    module=image.path,
                )
            )
    return probes


def usdt_probes_for(path: str) -> list[UsdtProbe]:
    """Open `path` and read its USDT probes. Raises ElfError for bad files."""
    with ElfImage(path) as image:
        return read_usdt_probes(image)
