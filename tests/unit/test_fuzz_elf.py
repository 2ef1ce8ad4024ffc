"""Property tests: corrupt ELF files and cache files give ElfError (or a result), never a traceback
or a hang; argument specs of any text parse to something."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hangs import no_hang
from tests.unit.elfgen import INDEX, PHDR, SYM, Probe, Sym, build_elf
from utrace.elf import index
from utrace.elf.buildid import read_build_id
from utrace.elf.reader import ElfImage
from utrace.elf.symbols import read_symbols
from utrace.elf.usdt_notes import parse_argument, parse_arguments, read_usdt_probes
from utrace.errors import ElfError
from utrace.model import OperandKind

FUZZ = settings(
    max_examples=200,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

BASES = [
    build_elf(
        shared=shared,
        symtab=[
            Sym("main", 0x10),
            Sym("_ZN3foo3barEv", 0x20),
            Sym("f.cold", 0x30, bind=0),
            Sym("obj", 0, ".probes", type=1),
        ],
        dynsym=[Sym("main", 0x10), Sym("dyn", 0x40)],
        probes=[Probe("prov", "a", 0x10, "8@%rdx -4@%eax", semaphore=2), Probe("prov", "b", 0x20, "8@152(%rdi)")],
        prelink_shift=shift,
        text_size=0x80,
    )
    for shared, shift in ((False, 0), (True, 0x1000))
]


def _note_headers(data: bytes, start: int, size: int) -> list[int]:
    out, pos = [], start
    while pos + 12 <= start + size:
        out.append(pos)
        namesz, descsz, _ = struct.unpack_from("<III", data, pos)
        pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return out


def _fields(built) -> list[tuple[int, int]]:
    """(file offset, width) of every header field worth corrupting."""
    f = [(32, 8), (40, 8), (54, 2), (56, 2), (58, 2), (60, 2), (62, 2)]
    for i in range(3):
        f += [(64 + i * PHDR.size + o, w) for o, w in ((0, 4), (8, 8), (16, 8), (32, 8))]
    for name in INDEX:
        f += [(built.shdr_field(name, o), w) for o, w in ((0, 4), (4, 4), (16, 8), (24, 8), (32, 8), (40, 4), (56, 8))]
    for name in (".note.gnu.build-id", ".note.stapsdt"):
        for pos in _note_headers(built.data, built.offsets[name], built.sizes[name]):
            namesz, descsz = struct.unpack_from("<II", built.data, pos)
            desc = pos + 12 + ((namesz + 3) & ~3)  # stapsdt: pc, base, semaphore words
            f += [(pos, 4), (pos + 4, 4), (pos + 8, 4), (pos + 12, 4)]
            f += [(desc + k, 8) for k in range(0, descsz - 7, 8)][:3]
    for name in (".symtab", ".dynsym"):
        for pos in range(built.offsets[name], built.offsets[name] + built.sizes[name], SYM.size):
            f += [(pos, 4), (pos + 4, 1), (pos + 6, 2), (pos + 8, 8)]
    return f


FIELDS = [_fields(b) for b in BASES]


@st.composite
def corrupted(draw) -> bytes:
    which = draw(st.integers(0, len(BASES) - 1))
    data = bytearray(BASES[which].data)
    n = len(data)
    for _ in range(draw(st.integers(0, 3))):
        pos, width = draw(st.sampled_from(FIELDS[which]))
        special = [0, 1, 2, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 63, (1 << 64) - 1, n - 1, n, n + 1, n // 2, pos]
        value = draw(st.sampled_from(special) | st.integers(0, (1 << (8 * width)) - 1))
        data[pos : pos + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    for _ in range(draw(st.integers(0, 4))):  # past e_ident: a bad magic is a dull, early exit
        data[draw(st.integers(16, n - 1))] = draw(st.integers(0, 255))
    if draw(st.integers(0, 3)) == 0:  # test_every_truncation covers truncation on its own
        del data[draw(st.integers(0, n)) :]
    return bytes(data)


@pytest.fixture(scope="module")
def fuzz_path(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz") / "corrupt.elf")


def _exercise(path: str) -> None:
    """Everything a command does with a file; each step may fail only with ElfError."""
    try:
        read_build_id(path)
    except ElfError:
        pass
    try:
        with ElfImage(path) as img:
            for sec in img.sections:
                img.vaddr_to_offset(sec.addr)
            table = read_symbols(img, None)
            for i in range(len(table)):
                table.symbol(i)
                table.containing(table.addresses[i])
            list(table.entries())
            for p in read_usdt_probes(img):
                assert p.arguments is not None
    except ElfError:
        pass
    try:
        index.symbols_for(path, use_cache=False)
    except ElfError:
        pass


def test_bases_are_valid(fuzz_path):
    for built in BASES:
        with open(fuzz_path, "wb") as f:
            f.write(built.data)
        with ElfImage(fuzz_path) as img:
            assert len(read_symbols(img, None)) == 4
            assert len(read_usdt_probes(img)) == 2
        assert read_build_id(fuzz_path) is not None


@FUZZ
@given(data=corrupted())
def test_corrupt_elf_never_crashes(fuzz_path, data):
    with open(fuzz_path, "wb") as f:
        f.write(data)
    with no_hang():
        _exercise(fuzz_path)


@FUZZ
@given(cut=st.integers(0, len(BASES[0].data)))
def test_every_truncation(fuzz_path, cut):
    with open(fuzz_path, "wb") as f:
        f.write(BASES[0].data[:cut])
    with no_hang():
        _exercise(fuzz_path)


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz-cache")
    elf = BASES[0].write(home / "a.out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(home))
        good = index.symbols_for(elf)
    [file] = list((home / "utrace").iterdir())
    return home, elf, file, file.read_bytes(), good


@FUZZ
@given(
    mutations=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, 1 << 12),
)
def test_corrupt_cache_file_never_crashes(cached, mutations, cut):
    home, elf, file, clean, good = cached
    data = bytearray(clean[:cut])
    for pos, value in mutations:
        if data:
            data[pos % len(data)] = value
    file.write_bytes(bytes(data))
    with pytest.MonkeyPatch.context() as mp, no_hang():
        mp.setenv("XDG_CACHE_HOME", str(home))
        table = index.symbols_for(elf)
    columns = (table.names, table.raws, table.addresses, table.sizes, table.bindings, table.clones)
    assert len({len(c) for c in columns}) == 1
    assert all(len(s) == 3 and all(isinstance(x, int) for x in s) for s in table.segments)
    if bytes(data) == clean:
        assert table.raws == good.raws and table.segments == good.segments


REGS = ["rax", "eax", "ax", "al", "ah", "cl", "sil", "r8", "r9d", "r15b", "rip", "xmm0", "bogus"]
NUM = st.one_of(
    st.just(""),
    st.from_regex(r"\A[-+]?(0x[0-9a-fA-F]{1,6}|[0-9]{1,6})\Z"),
    st.integers(4290, 4400).map(lambda n: "1" * n),  # past int()'s 4300-digit limit
)


def _mem(disp: str, base: str, idx: str | None, scale: str | None) -> str:
    return f"{disp}(%{base}" + (f",%{idx}" + (f",{scale}" if scale else "") if idx else "") + ")"


OPERAND = st.one_of(
    st.builds("%{}".format, st.sampled_from(REGS)),
    st.builds("${}".format, NUM),
    st.builds(
        _mem, NUM, st.sampled_from(REGS), st.none() | st.sampled_from(REGS), st.none() | st.sampled_from("12483")
    ),
    st.builds("{}{}(%rip)".format, st.from_regex(r"\A[a-z_][a-z0-9_.]{0,5}\Z"), NUM),
)
SPEC = st.builds(
    lambda size, op: f"{size}@{op}" if size else op,
    st.sampled_from(["", "1", "2", "4", "8", "-1", "-4", "-8", "3", "16"]),
    OPERAND,
)


@settings(max_examples=300, deadline=2000)
@given(text=st.text() | SPEC)
def test_parse_argument_never_raises(text):
    arg = parse_argument(text)
    assert arg.text == text
    assert arg.size in (1, 2, 4, 8)
    if arg.kind is OperandKind.REGISTER:
        assert arg.register and arg.subregister
    if arg.kind is OperandKind.MEMORY:
        assert arg.register
    parse_arguments(text)
