"""Unit tests of utrace.elf.go.gobin on synthetic data: build info (both formats), varints, versions,
pclntab headers, a small synthetic Go ELF file, and fuzzing (corrupt input gives ElfError, never a traceback)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from utrace.elf.dwarf import uleb128
from utrace.elf.go import buildinfo, gobin
from utrace.elf.go.inline import inlined_calls
from utrace.elf.go.pclntab import MAGIC_12, MAGIC_116, MAGIC_120, parse_pclntab_header
from utrace.errors import ElfError

FUZZ = settings(
    max_examples=200,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SENTINEL_A = bytes.fromhex("3077af0c9274080241e1c107e6d618e6")
SENTINEL_B = bytes.fromhex("f932433186182072008242104116d8f2")


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


MODINFO_TEXT = (
    "path\texample.com/cmd/tool\n"
    "mod\texample.com\t(devel)\t\n"
    "dep\tgolang.org/x/net\tv0.1.0\th1:abc=\n"
    "build\t-buildmode=exe\n"
    "build\t-compiler=gc\n"
    'build\t-ldflags="-s -w"\n'
    "build\tCGO_ENABLED=0\n"
    "build\tGOARCH=amd64\n"
    "build\tGOAMD64=v1\n"
)


def inline_buildinfo(version: str, mod: bytes) -> bytes:
    head = buildinfo.BUILDINFO_MAGIC + bytes([8, 2])
    head += bytes(32 - len(head))
    return head + uvarint(len(version)) + version.encode() + uvarint(len(mod)) + mod


# ----------------------------------------------------------------------------- small decoders


def test_uvarint_roundtrip() -> None:
    for n in (0, 1, 127, 128, 300, 1 << 20, (1 << 63) + 5):
        data = b"\xaa" + uvarint(n) + b"\xbb"
        assert uleb128(data, 1) == (n, 1 + len(uvarint(n)))


def test_uvarint_truncated() -> None:
    with pytest.raises(ElfError):
        uleb128(b"\x80\x80", 0)
    with pytest.raises(ElfError):
        uleb128(b"\xff" * 11, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("go1.19.8", (1, 19, 8)),
        ("go1.9", (1, 9, 0)),
        ("go1.20", (1, 20, 0)),
        ("go1.21rc2", (1, 21, 0)),
        ("go1.21.0", (1, 21, 0)),
        ("go1.22.3 X:nocoverageredesign", (1, 22, 3)),
        ("devel go1.23-abcdef Tue Jan 1 00:00:00 2024 +0000", (1, 23, 0)),
        ("devel +abcdef", None),
        ("", None),
        (None, None),
        ("gccgo", None),
    ],
)
def test_parse_version(text: str | None, expected: tuple[int, int, int] | None) -> None:
    assert buildinfo.parse_version(text) == expected


def test_version_compare_is_numeric() -> None:
    # Lexicographic comparison gets this wrong ("go1.9" > "go1.20" as strings).
    assert "go1.9" > "go1.20"
    assert buildinfo.parse_version("go1.9") < buildinfo.parse_version("go1.20")  # type: ignore[operator]
    assert not buildinfo.version_at_least("go1.9", (1, 20))
    assert buildinfo.version_at_least("go1.20", (1, 20))
    assert buildinfo.version_at_least("go1.17", (1, 17))
    assert not buildinfo.version_at_least("go1.16.15", (1, 17))
    assert buildinfo.version_at_least((1, 21, 0), (1, 18))
    assert not buildinfo.version_at_least(None, (1, 2))


# ----------------------------------------------------------------------------- build info


def test_buildinfo_inline_format() -> None:
    mod = SENTINEL_A + MODINFO_TEXT.encode() + SENTINEL_B
    version, raw = buildinfo.parse_buildinfo(inline_buildinfo("go1.22.3", mod))
    assert version == "go1.22.3"
    assert buildinfo.strip_modinfo(raw) == MODINFO_TEXT.encode()
    info = buildinfo.parse_modinfo(raw)
    assert info.main_path == "example.com/cmd/tool"
    assert info.module_path == "example.com"
    assert info.module_version == "(devel)"
    assert info.deps == [("golang.org/x/net", "v0.1.0")]
    assert info.settings == {
        "-buildmode": "exe",
        "-compiler": "gc",
        "-ldflags": "-s -w",
        "CGO_ENABLED": "0",
        "GOARCH": "amd64",
        "GOAMD64": "v1",
    }


def test_buildinfo_pointer_format() -> None:
    # Go < 1.18: two pointers to string headers, resolved through the address space.
    mem: dict[int, bytes] = {}
    mod = SENTINEL_A + b"path\tcommand-line-arguments\n" + SENTINEL_B
    mem[0x500000] = struct.pack("<QQ", 0x501000, 9)
    mem[0x501000] = b"go1.15.15"
    mem[0x500010] = struct.pack("<QQ", 0x502000, len(mod))
    mem[0x502000] = mod

    def read_va(va: int, n: int) -> bytes:
        for base, blob in mem.items():
            if base <= va and va + n <= base + len(blob):
                return blob[va - base : va - base + n]
        raise ElfError(f"address {va:#x} not mapped")

    blob = buildinfo.BUILDINFO_MAGIC + bytes([8, 0]) + struct.pack("<QQ", 0x500000, 0x500010)
    version, raw = buildinfo.parse_buildinfo(blob, read_va)
    assert version == "go1.15.15"
    assert buildinfo.parse_modinfo(raw).main_path == "command-line-arguments"
    with pytest.raises(ElfError):
        buildinfo.parse_buildinfo(blob)  # pointer format needs an address reader
    broken = buildinfo.BUILDINFO_MAGIC + bytes([8, 0]) + struct.pack("<QQ", 0x900000, 0x500010)
    with pytest.raises(ElfError):
        buildinfo.parse_buildinfo(broken, read_va)


def test_buildinfo_empty_modinfo_and_short_mod() -> None:
    version, raw = buildinfo.parse_buildinfo(inline_buildinfo("go1.21.13", b""))
    assert (version, raw) == ("go1.21.13", b"")
    assert buildinfo.parse_modinfo(b"").settings == {}
    # Too short to carry sentinels: left alone.
    assert buildinfo.strip_modinfo(b"path\tx\n") == b"path\tx\n"


def test_find_buildinfo_alignment() -> None:
    blob = bytes(5) + buildinfo.BUILDINFO_MAGIC + bytes(13) + buildinfo.BUILDINFO_MAGIC + bytes(32)
    assert buildinfo.find_buildinfo(blob) == 32
    assert buildinfo.find_buildinfo(bytes(64)) == -1


# ----------------------------------------------------------------------------- a synthetic Go ELF file

TEXT_VA = 0x401000
BASE = 0x400000


@dataclass
class Fn:
    name: str
    size: int


def pclntab_120(funcs: list[Fn], text_start: int) -> bytes:
    """A Go 1.20+ pclntab: header, funcnametab, (empty cutab/filetab), pctab, functab + _func records."""
    names = b""
    name_offs = []
    for f in funcs:
        name_offs.append(len(names))
        names += f.name.encode() + b"\0"
    hdr_size = 8 + 8 * 8
    funcname_off = hdr_size
    cu_off = filetab_off = funcname_off + len(names)
    pctab_off = cu_off
    pctab = b"\0"  # offset 0 means "no table"
    pcln_off = pctab_off + len(pctab)
    pcln_off += -pcln_off % 4
    n = len(funcs)
    functab = b""
    funcs_blob = b""
    entry = 0
    first_func = (n + 1) * 8
    for i, f in enumerate(funcs):
        functab += struct.pack("<II", entry, first_func + len(funcs_blob))
        # entryOff, nameOff, args, deferreturn, pcsp, pcfile, pcln, npcdata, cuOffset, startLine,
        # funcID, flag, pad, nfuncdata
        funcs_blob += struct.pack("<IiiIIIIIIiBBBB", entry, name_offs[i], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        entry += f.size
    functab += struct.pack("<I", entry) + bytes(4)  # end sentinel; _func records start 8-aligned
    header = struct.pack("<IBBBB", MAGIC_120, 0, 0, 1, 8)
    header += struct.pack("<8Q", n, 0, text_start, funcname_off, cu_off, filetab_off, pctab_off, pcln_off)
    body = header + names + pctab
    body += bytes(pcln_off - len(body))
    return body + functab + funcs_blob


def go_note(build_id: bytes) -> bytes:
    return struct.pack("<III", 4, len(build_id), 4) + b"Go\0\0" + build_id + bytes(-len(build_id) % 4)


def build_go_elf(
    funcs: list[Fn],
    *,
    version: str = "go1.22.3",
    mod: bytes | None = None,
    c_prefix: int = 0,
    header_text: int | None = None,
    module: dict[str, int] | None = None,
    module_section: str = ".go.module",
    code: bytes | None = None,
) -> bytes:
    """ELF64 x86-64 executable: one R+X PT_LOAD at 0x400000 mapping the whole file, one RW PT_LOAD
    for .go.buildinfo, sections .text .gopclntab .note.go.buildid .go.buildinfo .shstrtab.

    `c_prefix` bytes of C code open `.text` before the Go functions (an external link); `header_text` is
    pcHeader.textStart (default: the Go functions' start; Go 1.26 writes 0). `module` adds Go 1.20+ module
    data (section `module_section`, in the RW segment) with fields pcHeader, ftab, nftab, minpc, maxpc,
    text, etext, each defaulting to what the linker writes."""
    if mod is None:
        mod = SENTINEL_A + MODINFO_TEXT.encode() + SENTINEL_B
    go_text = TEXT_VA + c_prefix
    text = b"\xc3" * c_prefix + (code if code is not None else b"\xc3" * sum(f.size for f in funcs))
    assert len(text) == c_prefix + sum(f.size for f in funcs)
    pcln = pclntab_120(funcs, go_text if header_text is None else header_text)
    sections: list[tuple[str, int, bytes, int]] = [  # name, type, contents, flags
        (".text", 1, text, 6),
        (".gopclntab", 1, pcln, 2),
        (".note.go.buildid", 7, go_note(b"abc/def"), 2),
        (".go.buildinfo", 1, inline_buildinfo(version, mod), 3),
    ]
    if module is not None:
        pcln_va = TEXT_VA + 0x1000 * 0 + len(text) + -len(text) % 16  # .gopclntab follows .text (16-aligned)
        pcln_off = struct.unpack_from("<Q", pcln, 8 + 7 * 8)[0]
        end = go_text + sum(f.size for f in funcs)
        md = {"pcHeader": pcln_va, "ftab": pcln_va + pcln_off, "nftab": len(funcs) + 1, "minpc": go_text,
              "maxpc": end, "text": go_text, "etext": end} | module  # fmt: skip
        words = [0] * 24
        words[0], words[16], words[17], words[18] = md["pcHeader"], md["ftab"], md["nftab"], md["nftab"]
        words[20], words[21], words[22], words[23] = md["minpc"], md["maxpc"], md["text"], md["etext"]
        sections.append((module_section, 1, struct.pack("<24Q", *words), 3))
    shstr = b"\0" + b"".join(n.encode() + b"\0" for n, *_ in sections) + b".shstrtab\0"
    out = bytearray(0x1000)  # ELF header + program headers live in the first page; .text at 0x1000
    placed: list[tuple[str, int, int, int, int]] = []  # name, type, offset, size, flags
    for name, stype, data, flags in sections:
        out += bytes(-len(out) % (0x1000 if name == ".go.buildinfo" else 16))  # the RW segment starts here
        if name == ".gopclntab":
            assert BASE + len(out) == TEXT_VA + len(text) + -len(text) % 16
        placed.append((name, stype, len(out), len(data), flags))
        out += data
    shstr_off = len(out)
    out += shstr
    out += bytes(-len(out) % 8)
    shoff = len(out)
    bi = next(p for p in placed if p[0] == ".go.buildinfo")
    data_off = bi[2] - bi[2] % 0x1000
    phdrs = [
        (1, 5, 0, BASE, data_off),
        (1, 6, data_off, BASE + 0x100000 + data_off, len(out) - data_off),
    ]
    shdrs = [bytes(64)]
    name_pos = 1
    for name, stype, off, size, flags in placed:
        va = BASE + off if flags != 3 else BASE + 0x100000 + off
        shdrs.append(struct.pack("<IIQQQQIIQQ", name_pos, stype, flags, va, off, size, 0, 0, 16, 0))
        name_pos += len(name) + 1
    shdrs.append(struct.pack("<IIQQQQIIQQ", name_pos, 3, 0, 0, shstr_off, len(shstr), 0, 0, 1, 0))
    out += b"".join(shdrs)
    ehdr = struct.pack(
        "<16sHHIQQQIHHHHHH",
        b"\x7fELF\x02\x01\x01" + bytes(9),
        2,
        62,
        1,
        TEXT_VA,
        64,
        shoff,
        0,
        64,
        56,
        len(phdrs),
        64,
        len(shdrs),
        len(shdrs) - 1,
    )
    out[0:64] = ehdr
    for i, (t, fl, off, va, size) in enumerate(phdrs):
        out[64 + 56 * i : 64 + 56 * (i + 1)] = struct.pack("<IIQQQQQQ", t, fl, off, va, va, size, size, 0x1000)
    return bytes(out)


FUNCS = [Fn("internal/cpu.Initialize", 0x20), Fn("main.(*T).M", 0x10), Fn("main.main", 0x40)]


@pytest.fixture
def go_elf(tmp_path: Path) -> Path:
    p = tmp_path / "prog"
    p.write_bytes(build_go_elf(FUNCS))
    return p


def test_synthetic_info(go_elf: Path) -> None:
    info = gobin.go_info(str(go_elf))
    assert info is not None
    assert info.version == "go1.22.3" and info.version_tuple == (1, 22, 3)
    assert info.version_source == "buildinfo"
    assert info.build_id == "abc/def"
    assert info.settings["-ldflags"] == "-s -w"
    assert info.arch == "amd64" and info.abi == "regabi" and info.abi_source == "version go1.22.3"
    assert not info.pie and info.cgo is False and not info.has_symtab and not info.has_dwarf
    assert info.main_path == "example.com/cmd/tool"


@pytest.mark.parametrize(("version", "abi"), [("go1.16.15", "stack"), ("go1.17", "regabi"), ("go1.9", "stack")])
def test_synthetic_abi_by_version(tmp_path: Path, version: str, abi: str) -> None:
    p = tmp_path / "prog"
    p.write_bytes(build_go_elf(FUNCS, version=version))
    info = gobin.go_info(str(p))
    assert info is not None and info.abi == abi


def test_synthetic_pclntab(go_elf: Path) -> None:
    tab = gobin.pclntab(str(go_elf))
    assert tab.version_range == "go1.20+" and tab.found == "section .gopclntab"
    assert tab.text_start == TEXT_VA and tab.text_start_source == "pcHeader.textStart"
    got = [(f.name, f.entry, f.end, f.offset) for f in tab]
    assert got == [
        ("internal/cpu.Initialize", TEXT_VA, TEXT_VA + 0x20, 0x1000),
        ("main.(*T).M", TEXT_VA + 0x20, TEXT_VA + 0x30, 0x1020),
        ("main.main", TEXT_VA + 0x30, TEXT_VA + 0x70, 0x1030),
    ]
    assert tab.lookup("main.main") is tab.functions[2]
    assert tab.function_at(TEXT_VA + 0x25) is tab.functions[1]
    assert tab.function_at(TEXT_VA + 0x70) is None
    assert all(f.abi0 is None for f in tab)  # no .symtab: unknown
    assert inlined_calls(tab, "main.main") == []


# ----------------------------------------------------------------------------- text base (issue #15)


def test_text_base_from_module_data_when_text_start_is_zero(tmp_path: Path) -> None:
    """Go 1.26, external link: C code opens .text and pcHeader.textStart is 0; the runtime's base is
    moduledata.text, 0x100 bytes past the start of .text here."""
    p = tmp_path / "prog"
    p.write_bytes(build_go_elf(FUNCS, c_prefix=0x100, header_text=0, module={}))
    with gobin.GoBinary(str(p)) as b:
        tab = b.pclntab()
        md_va = b.img.section(".go.module").addr
        assert tab.text_start == TEXT_VA + 0x100 and tab.module_va == md_va
        assert tab.text_start_source == f"moduledata.text (module data at {md_va:#x})"
        assert [(f.name, f.entry) for f in tab] == [
            ("internal/cpu.Initialize", TEXT_VA + 0x100),
            ("main.(*T).M", TEXT_VA + 0x120),
            ("main.main", TEXT_VA + 0x130),
        ]


def test_text_base_module_data_found_without_its_section_name(tmp_path: Path) -> None:
    p = tmp_path / "prog"
    p.write_bytes(build_go_elf(FUNCS, c_prefix=0x40, header_text=0, module={}, module_section=".noptrdata"))
    with gobin.GoBinary(str(p)) as b:
        assert b.img.section(".go.module") is None
        tab = b.pclntab()
        assert tab.text_start == TEXT_VA + 0x40 and tab.module_va == b.img.section(".noptrdata").addr


def test_text_base_module_data_wins_over_a_stale_text_start(tmp_path: Path) -> None:
    p = tmp_path / "prog"
    p.write_bytes(build_go_elf(FUNCS, c_prefix=0x100, header_text=TEXT_VA, module={}))
    assert gobin.pclntab(str(p)).text_start == TEXT_VA + 0x100


@pytest.mark.parametrize(
    "bad",
    [
        {"minpc": TEXT_VA},  # minpc != text + ftab[0].entryoff: the runtime would throw "minpc or maxpc invalid"
        {"maxpc": TEXT_VA + 0x100 + 0x60},
        {"nftab": 3},  # ftab must have nfunc + 1 entries
        {"ftab": TEXT_VA},  # ftab does not point into this pclntab
        {"pcHeader": TEXT_VA},  # not this table's module data
        {"text": 0, "minpc": 0, "maxpc": 0x70},  # consistent, but not executable code
    ],
    ids=["minpc", "maxpc", "nftab", "ftab", "pcHeader", "not-executable"],
)
def test_text_base_refused_without_proof(tmp_path: Path, bad: dict[str, int]) -> None:
    """No module data that passes the runtime's own checks, textStart 0, no runtime.text: one clear error,
    never the start of .text (0x100 bytes early, in the middle of other functions' instructions)."""
    p = tmp_path / "prog"
    p.write_bytes(build_go_elf(FUNCS, c_prefix=0x100, header_text=0, module=bad))
    with pytest.raises(ElfError, match=r"cannot prove where the Go functions start.*refusing to guess"):
        gobin.pclntab(str(p))


def test_text_base_refused_without_module_data(tmp_path: Path) -> None:
    p = tmp_path / "prog"
    p.write_bytes(build_go_elf(FUNCS, c_prefix=0x100, header_text=0))
    with pytest.raises(ElfError, match="refusing to guess"):
        gobin.pclntab(str(p))


def test_text_start_outside_executable_code_refused(tmp_path: Path) -> None:
    p = tmp_path / "prog"
    p.write_bytes(build_go_elf(FUNCS, header_text=0x10000000))
    with pytest.raises(ElfError, match="refusing to guess"):
        gobin.pclntab(str(p))


def test_not_go(tmp_path: Path) -> None:
    from tests.unit.elfgen import build_elf

    p = tmp_path / "c"
    p.write_bytes(build_elf().data)
    assert gobin.go_info(str(p)) is None
    with pytest.raises(ElfError, match="no Go pclntab"):
        gobin.pclntab(str(p))


def test_pclntab_header_parsing() -> None:
    blob = pclntab_120(FUNCS, 0x1000)
    hdr = parse_pclntab_header(blob)
    assert (hdr.magic, hdr.quantum, hdr.ptr_size, hdr.nfunc, hdr.text_start) == (MAGIC_120, 1, 8, 3, 0x1000)
    for bad in (
        b"\xf2\xff\xff\xff" + blob[4:],  # unknown magic
        blob[:6] + b"\x03" + blob[7:],  # quantum 3
        blob[:7] + b"\x05" + blob[8:],  # pointer size 5
        blob[:40],  # truncated
        blob[:8] + struct.pack("<Q", 1 << 30) + blob[16:],  # absurd count
    ):
        with pytest.raises(ElfError):
            parse_pclntab_header(bad)


def test_old_header_formats() -> None:
    # Go 1.2 layout: magic, pad, quantum, ptrsize, nfunctab, then the functab inline.
    old = struct.pack("<IBBBBQ", MAGIC_12, 0, 0, 1, 8, 1) + struct.pack("<QQQ", 0x401000, 0x30, 0x401010)
    old += bytes(0x40)
    hdr = parse_pclntab_header(old)
    assert hdr.functab_off == 16 and hdr.nfunc == 1 and hdr.version_range == "go1.2-1.15"
    v116 = struct.pack("<IBBBB7Q", MAGIC_116, 0, 0, 4, 8, 1, 0, 64, 64, 64, 64, 72) + bytes(64)
    hdr = parse_pclntab_header(v116)
    assert (hdr.quantum, hdr.pcln_off, hdr.version_range) == (4, 72, "go1.16-1.17")


# ----------------------------------------------------------------------------- fuzzing


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_decoders(data: bytes) -> None:
    for fn in (
        lambda: buildinfo.parse_buildinfo(buildinfo.BUILDINFO_MAGIC + data, lambda va, n: data[:n]),
        lambda: parse_pclntab_header(data),
        lambda: uleb128(data, 0),
    ):
        try:
            fn()
        except ElfError:
            pass
    buildinfo.parse_modinfo(data)
    buildinfo.parse_version(data.decode("latin-1"))


_BASE_FILE = build_go_elf(FUNCS)


# Half of the edits land in the Go tables (.text/.gopclntab/.note.go.buildid follow the first page).
_POSITIONS = st.one_of(st.integers(0, len(_BASE_FILE) - 1), st.integers(0x1000, 0x1200))


@FUZZ
@given(st.lists(st.tuples(_POSITIONS, st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzz_corrupt_file(tmp_path: Path, edits: list[tuple[int, int]]) -> None:
    data = bytearray(_BASE_FILE)
    for pos, val in edits:
        data[pos] = val
    p = tmp_path / "corrupt"
    p.write_bytes(bytes(data))
    try:
        with gobin.GoBinary(str(p)) as b:
            b.info()
            tab = b.pclntab()
            for f in tab:
                assert f.entry <= f.end
            inlined_calls(tab, "main.main")
            b.type_name(TEXT_VA)
            b.itab_type(TEXT_VA)
    except ElfError as e:
        assert "\n" not in str(e)


@FUZZ
@given(st.integers(0, len(_BASE_FILE)))
def test_fuzz_truncated_file(tmp_path: Path, cut: int) -> None:
    p = tmp_path / "short"
    p.write_bytes(_BASE_FILE[:cut])
    try:
        info = gobin.go_info(str(p))
        assert info is None or info.arch == "amd64"
        gobin.pclntab(str(p))
    except ElfError:
        pass


# ----------------------------------------------------------------------------- regressions found by fuzzing


def test_version_with_thousands_of_digits_names_no_release(tmp_path: Path) -> None:
    huge = "go1." + "9" * 5000  # int() refuses past 4300 digits: a ValueError escaped info() before
    assert buildinfo.parse_version(huge) is None
    p = tmp_path / "prog"
    p.write_bytes(build_go_elf(FUNCS, version=huge))
    with gobin.GoBinary(str(p)) as b:
        info = b.info()
    assert info is not None and info.version == huge and info.version_tuple is None
    assert info.abi_source == "pclntab magic go1.20+ (version unknown)"


def test_listing_a_go_binary_with_a_broken_pclntab_is_an_error_not_an_empty_list(tmp_path: Path) -> None:
    from utrace.elf.go.gosyms import go_function_table

    data = bytearray(_BASE_FILE)
    at = data.find(struct.pack("<I", MAGIC_120) + b"\0\0")
    data[at : at + 4] = b"\0\0\0\0"
    p = tmp_path / "prog"
    p.write_bytes(bytes(data))
    with pytest.raises(ElfError, match="not a Go pclntab"):
        go_function_table(str(p))
    good = tmp_path / "good"
    good.write_bytes(_BASE_FILE)
    table = go_function_table(str(good))
    assert table is not None and table.names == [f.name for f in FUNCS]


def test_capstone_data_bytes_end_the_prologue_search() -> None:
    from utrace.elf.go.goasm import after_stack_check, return_sites

    # 0x06 is not an instruction in 64-bit mode: capstone's skipdata yields a ".byte" pseudo-instruction,
    # whose regs_access() raised CsError (seen with a damaged program header moving the code).
    assert after_stack_check(b"\x06\x06\xc3", 0x401000) is None
    assert return_sites(b"\x06\xc3", 0x401000) == [0x401001]
