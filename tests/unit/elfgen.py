"""A small in-memory writer of synthetic ELF64 little-endian x86-64 files for the ELF-layer tests.

Layout (file order): ELF header, program headers, then
  .text  .note.gnu.build-id  .stapsdt.base   -> first PT_LOAD (R+X), vaddr = base + offset
  .probes                                     -> second PT_LOAD (RW), vaddr = base + DATA_SHIFT + offset
  .note.stapsdt .symtab .strtab .dynsym .dynstr .shstrtab (not loaded), then the section headers.
A PT_NOTE segment covers .note.gnu.build-id. Both PT_LOAD segments have a non-zero p_vaddr - p_offset,
so a file offset computed from an address is only right if it goes through the segment table.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

ET_EXEC, ET_DYN = 2, 3
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_GNU_IFUNC = 0, 1, 2, 10
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
SHN_UNDEF, SHN_ABS = 0, 0xFFF1
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOTE, SHT_DYNSYM = 1, 2, 3, 7, 11
EXEC_BASE, DYN_BASE, DATA_SHIFT = 0x400000, 0x10000, 0x200000
MASK64 = (1 << 64) - 1

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
SHDR = struct.Struct("<IIQQQQIIQQ")
SYM = struct.Struct("<IBBHQQ")
# Section header index of each section (index 0 is the null section).
ORDER = (
    ".text",
    ".note.gnu.build-id",
    ".stapsdt.base",
    ".probes",
    ".note.stapsdt",
    ".symtab",
    ".strtab",
    ".dynsym",
    ".dynstr",
    ".shstrtab",
)
INDEX = {name: i + 1 for i, name in enumerate(ORDER)}


@dataclass
class Sym:
    """A symbol; `value` is relative to `section`'s address, or absolute when `section` is None."""

    name: str
    value: int
    section: str | None = ".text"
    size: int = 16
    type: int = STT_FUNC
    bind: int = STB_GLOBAL
    shndx: int | None = None  # override, e.g. SHN_UNDEF or SHN_ABS


@dataclass
class Probe:
    """A stapsdt note: `pc` is an offset into .text, `semaphore` an offset into .probes (or None)."""

    provider: str
    name: str
    pc: int
    args: str = ""
    semaphore: int | None = None


@dataclass
class Built:
    data: bytes
    offsets: dict[str, int] = field(default_factory=dict)
    addrs: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    shoff: int = 0

    def write(self, path: object) -> str:
        with open(str(path), "wb") as f:
            f.write(self.data)
        return str(path)

    def shdr_field(self, section: str, field_offset: int) -> int:
        """File offset of a field of a section header (sh_offset is 24, sh_size 32, sh_link 40)."""
        return self.shoff + INDEX[section] * SHDR.size + field_offset


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)

    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def _strtab(names: list[str]) -> tuple[bytes, dict[str, int]]:
    blob, where = b"\0", {"": 0}
    for n in names:
        if n not in where:
            where[n] = len(blob)
            blob += n.encode("utf-8", "surrogateescape") + b"\0"
    return blob, where


def build_elf(
    *,
    shared: bool = False,
    text_size: int = 0x200,
    symtab: list[Sym] | None = None,
    dynsym: list[Sym] | None = None,
    probes: list[Probe] | None = None,
    build_id: bytes | None = bytes(range(1, 21)),
    prelink_shift: int = 0,
    probes_size: int = 0x40,
) -> Built:
    """Build a file. `prelink_shift` makes the stapsdt notes record addresses `prelink_shift` lower
    than the real ones (as prelink leaves them), with the base word lowered by the same amount."""
    base = DYN_BASE if shared else EXEC_BASE
    phnum = 3
    # Pass 1 computes sizes with zero addresses (sizes never depend on addresses); pass 2 fills in.
    addrs: dict[str, int] = dict.fromkeys(ORDER, 0)
    for _ in range(2):
        contents = _contents(addrs, text_size, symtab, dynsym, probes, build_id, prelink_shift, probes_size)
        offsets: dict[str, int] = {}
        pos = EHDR.size + phnum * PHDR.size
        for name in ORDER:
            pos += -pos % 16
            offsets[name] = pos
            pos += len(contents[name])
        for name in ORDER[:3]:
            addrs[name] = base + offsets[name]
        addrs[".probes"] = base + DATA_SHIFT + offsets[".probes"]
    shoff = pos + (-pos % 8)
    text_end = offsets[".stapsdt.base"] + len(contents[".stapsdt.base"])
    note_size = len(contents[".note.gnu.build-id"])
    phdrs = [  # (p_type, p_flags, p_offset, p_vaddr, p_filesz)
        (1, 5, 0, base, text_end),
        (1, 6, offsets[".probes"], addrs[".probes"], probes_size),
        (4, 4, offsets[".note.gnu.build-id"], addrs[".note.gnu.build-id"], note_size),
    ]
    e_type = ET_DYN if shared else ET_EXEC
    ehdr = EHDR.pack(b"\x7fELF\x02\x01\x01" + bytes(9), e_type, 62, 1, addrs[".text"], EHDR.size, shoff, 0,
                     EHDR.size, PHDR.size, phnum, SHDR.size, len(ORDER) + 1, INDEX[".shstrtab"])  # fmt: skip
    ehdr += b"".join(PHDR.pack(t, f, off, va, va, size, size, 0x1000 if t == 1 else 4) for t, f, off, va, size in phdrs)
    out = bytearray(ehdr)
    for name in ORDER:
        out += bytes(offsets[name] - len(out)) + contents[name]
    out += bytes(shoff - len(out)) + bytes(SHDR.size)
    shnames = _strtab(list(ORDER))[1]
    kinds = {
        ".text": (SHT_PROGBITS, 6, 0, 0, 16),
        ".note.gnu.build-id": (SHT_NOTE, 2, 0, 0, 4),
        ".stapsdt.base": (SHT_PROGBITS, 2, 0, 0, 1),
        ".probes": (SHT_PROGBITS, 3, 0, 0, 2),
        ".note.stapsdt": (SHT_NOTE, 0, 0, 0, 4),
        ".symtab": (SHT_SYMTAB, 0, INDEX[".strtab"], 24, 8),
        ".strtab": (SHT_STRTAB, 0, 0, 0, 1),
        ".dynsym": (SHT_DYNSYM, 2, INDEX[".dynstr"], 24, 8),
        ".dynstr": (SHT_STRTAB, 2, 0, 0, 1),
        ".shstrtab": (SHT_STRTAB, 0, 0, 0, 1),
    }
    for name in ORDER:
        sh_type, flags, link, entsize, align = kinds[name]
        addr = addrs[name] if flags & 2 else 0
        size = len(contents[name])
        out += SHDR.pack(
            shnames[name], sh_type, flags, addr, offsets[name], size, link, int(entsize > 0), align, entsize
        )
    sizes = {n: len(c) for n, c in contents.items()}
    return Built(bytes(out), offsets, dict(addrs), sizes, shoff)


def _contents(
    addrs: dict[str, int],
    text_size: int,
    symtab: list[Sym] | None,
    dynsym: list[Sym] | None,
    probes: list[Probe] | None,
    build_id: bytes | None,
    prelink_shift: int,
    probes_size: int,
) -> dict[str, bytes]:
    c = {".text": b"\x90" * text_size, ".stapsdt.base": b"\0", ".probes": bytes(probes_size)}
    c[".note.gnu.build-id"] = _note(b"GNU\0", 3, build_id) if build_id else b""
    notes = b""
    for p in probes or []:
        pc = addrs[".text"] + p.pc - prelink_shift
        sem = addrs[".probes"] + p.semaphore - prelink_shift if p.semaphore is not None else 0
        words = (pc, addrs[".stapsdt.base"] - prelink_shift, sem)
        desc = struct.pack("<QQQ", *(w & MASK64 for w in words))
        desc += b"\0".join(s.encode("utf-8", "surrogateescape") for s in (p.provider, p.name, p.args)) + b"\0"
        notes += _note(b"stapsdt\0", 3, desc)
    c[".note.stapsdt"] = notes
    for table, strname, syms in ((".symtab", ".strtab", symtab), (".dynsym", ".dynstr", dynsym)):
        blob, where = _strtab([s.name for s in syms or []])
        entries = bytes(SYM.size)
        for s in syms or []:
            value = s.value + (addrs[s.section] if s.section else 0)
            shndx = s.shndx if s.shndx is not None else INDEX[s.section] if s.section else SHN_ABS
            info = (s.bind << 4) | s.type
            entries += SYM.pack(where[s.name], info, 0, shndx, value, s.size)
        c[table], c[strname] = (entries, blob) if syms is not None else (b"", b"\0")
    c[".shstrtab"] = _strtab(list(ORDER))[0]
    return c
