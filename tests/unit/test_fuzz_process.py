"""Property tests for what a traced (possibly hostile) process controls: its perf map, its
/proc/PID/maps, the USDT notes, Go tables and DWARF of the files it maps, and the strings captured from
its memory. Each input is arbitrary or adversarial; each call must finish within a time bound, with a
result or a one-line utrace error, never another exception, and with bounded memory (perf maps)."""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hangs import no_hang
from tests.unit.elfgen import Probe, build_elf
from tests.unit.test_gobin import FUNCS, TEXT_VA, build_go_elf
from utrace.elf.go import gobin
from utrace.elf.go.godwarf import GoDwarf
from utrace.elf.go.inline import inlined_calls
from utrace.elf.reader import ElfImage
from utrace.elf.usdt_notes import read_usdt_probes
from utrace.errors import ElfError, TargetError
from utrace.model import ArgKind, ArgSpec, Deref, Event, ProbeKind, ProbeSpec, Reg
from utrace.output.stream import JsonReporter, TextReporter
from utrace.probes.codegen import Options, render
from utrace.probes.decode import Decoder
from utrace.process import perfmap, procfs, stacks, target
from utrace.process.perfmap import PerfMap

FUZZ = settings(
    max_examples=150,
    deadline=5000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

HEX = st.integers(0, (1 << 64) + 5).map(lambda n: f"{n:x}".encode())
WORD = st.one_of(
    HEX, st.binary(max_size=12), st.sampled_from([b"-1", b"0x", b"0x10", b"", b"ffffffffffffffffff", b"_1"])
)


@st.composite
def perf_map_text(draw) -> bytes:
    """Lines that look like a perf map (hex start, hex size, name) mixed with arbitrary bytes."""
    lines = []
    for _ in range(draw(st.integers(0, 40))):
        if draw(st.booleans()):
            name = draw(st.binary(max_size=40).filter(lambda b: b"\n" not in b))
            lines.append(b" ".join([draw(WORD), draw(WORD), name]))
        else:
            lines.append(draw(st.binary(max_size=60)))
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n"]))


def _model(data: bytes) -> dict[int, tuple[int, bytes]]:
    """The regions a perf map's complete lines define, written independently of PerfMap."""
    regions: dict[int, tuple[int, bytes]] = {}
    complete = data[: data.rfind(b"\n") + 1]
    for line in complete.split(b"\n"):
        f = line.split(None, 2)
        if len(f) != 3 or len(line) > perfmap.MAX_LINE:
            continue
        try:
            start, size = int(f[0], 16), int(f[1], 16)
        except ValueError:
            continue
        if start >= 0 and size > 0 and start + size <= 1 << 64:
            regions[start] = (start + size, f[2].strip()[: perfmap.MAX_NAME])
    return regions


@FUZZ
@given(data=perf_map_text(), cuts=st.lists(st.integers(0, 4000), max_size=4))
def test_perf_map_arbitrary_text(tmp_path: Path, data: bytes, cuts: list[int]) -> None:
    """Read as it grows (appended in pieces), a perf map gives exactly the regions its lines define."""
    path = tmp_path / "perf-1.map"
    path.write_bytes(b"")
    m = PerfMap.open(str(path))
    assert m is not None
    with no_hang():
        for cut in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
            with open(path, "r+b") as f:
                f.seek(0, os.SEEK_END)
                f.write(data[f.tell() : cut])
            while m.refresh():
                pass
        model = _model(data)
        assert len(m) == len(model)
        for start, (end, _name) in list(model.items())[:20]:
            for address in (start, end - 1):
                hit = m.lookup(address)
                assert hit is not None
                assert isinstance(hit[0], str) and hit[1] <= address
        for address in (0, 1 << 63, (1 << 64) - 1):
            hit = m.lookup(address)
            assert hit is None or isinstance(hit[0], str)
    m.close()


def test_perf_map_limits_regions_and_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_REGIONS new starts are ignored and reading stops; past MAX_BYTES nothing more is read."""
    monkeypatch.setattr(perfmap, "MAX_REGIONS", 1000)
    monkeypatch.setattr(perfmap, "CHUNK", 4096)
    path = tmp_path / "perf-2.map"
    path.write_bytes(b"".join(b"%x 10 f%d\n" % (0x1000 + i * 0x10, i) for i in range(5000)))
    m = PerfMap.open(str(path))
    assert m is not None
    reads = 0
    with no_hang():
        while m.refresh():
            reads += 1
    assert len(m) == 1000 and m.capped
    assert m.lookup(0x1000) == ("f0", 0x1000)
    monkeypatch.setattr(perfmap, "MAX_BYTES", 8192)
    m2 = PerfMap.open(str(path))
    assert m2 is not None
    while m2.refresh():
        pass
    assert m2.capped and 0 < len(m2) < 1000


@st.composite
def maps_text(draw) -> str:
    """/proc/PID/maps lines, well-formed or not, with paths that are anything (spaces, escapes, ' (deleted)')."""
    lines = []
    for _ in range(draw(st.integers(0, 30))):
        if draw(st.integers(0, 3)) == 0:
            lines.append(draw(st.text(max_size=80)))
            continue
        lo = draw(st.integers(0, (1 << 64) + 1))
        hi = draw(st.one_of(st.integers(0, (1 << 64) + 1), st.just(lo + 0x1000)))
        perms = draw(st.sampled_from(["r-xp", "r--p", "rwxs", "x", "----", "r-xpq"]))
        off = draw(st.one_of(st.integers(0, 1 << 40).map(lambda n: f"{n:08x}"), st.text(max_size=4)))
        dev = draw(st.sampled_from(["08:01", "fe:00", "00:00", "zz:1", "1", ":"]))
        inode = draw(st.one_of(st.integers(0, 1 << 40).map(str), st.just("-5"), st.text(max_size=3)))
        path = draw(
            st.one_of(
                st.just(""),
                st.sampled_from(["[vdso]", "[heap]", "/usr/bin/true", "/nonexistent/x (deleted)", "/dev/zero"]),
                st.text(max_size=40).map(lambda t: "/" + t),
            )
        )
        lines.append(f"{lo:x}-{hi:x} {perms} {off} {dev} {inode}        {path}")
    return "\n".join(lines)


@FUZZ
@given(text=maps_text())
def test_maps_parse_never_raises(text: str) -> None:
    for e in procfs.parse_maps(text):
        assert 0 <= e.start < e.end < 1 << 64 and e.offset >= 0 and e.inode >= 0
        assert "\n" not in e.path and not e.path.endswith(" (deleted)")


@FUZZ
@given(text=maps_text(), addresses=st.lists(st.integers(0, (1 << 64) - 1), max_size=6))
def test_symbolizer_and_target_on_hostile_maps(
    monkeypatch: pytest.MonkeyPatch, text: str, addresses: list[int]
) -> None:
    """This process's maps replaced by arbitrary text: stack symbolization and `--pid` resolution give
    frames or a TargetError, never another exception or a hang (paths are opened as procfs does)."""
    me = os.getpid()
    real = procfs.read_text

    def fake(path: str, max_bytes: int) -> str:
        return text if path == f"/proc/{me}/maps" else real(path, max_bytes)

    monkeypatch.setattr(procfs, "read_text", fake)
    with no_hang(10):
        sym = stacks.Symbolizer()
        for a in addresses:
            f = sym.frame(me, a, returning=True)
            assert f.address == a and (f.function is None or isinstance(f.function, str))
        try:
            t = target.process_target(me)
            assert t.modules
        except TargetError as e:
            assert "\n" not in str(e)


@pytest.fixture(scope="module")
def usdt_base() -> tuple[bytes, int, int]:
    built = build_elf(probes=[Probe("prov", "a", 0x10, "8@%rdx -4@%eax", semaphore=2), Probe("p", "b", 0x20, "")])
    return built.data, built.offsets[".note.stapsdt"], built.sizes[".note.stapsdt"]


@st.composite
def stapsdt_notes(draw, size: int) -> bytes:
    """Note records with sane or absurd header fields, "stapsdt" or other names, arbitrary descriptors."""
    out = b""
    while len(out) < size and draw(st.integers(0, 4)):
        name = draw(st.sampled_from([b"stapsdt\0", b"stapsdt", b"GNU\0", b""]))
        desc = draw(st.binary(max_size=64))
        namesz = draw(st.one_of(st.just(len(name)), st.integers(0, 1 << 32 - 1)))
        descsz = draw(st.one_of(st.just(len(desc)), st.integers(0, 1 << 32 - 1)))
        ntype = draw(st.sampled_from([3, 1, 0]))
        out += struct.pack("<III", namesz, descsz, ntype) + name + bytes(-len(name) % 4) + desc + bytes(-len(desc) % 4)
    return (out + draw(st.binary(max_size=size)))[:size].ljust(size, b"\0")


@FUZZ
@given(data=st.data())
def test_usdt_notes_arbitrary(tmp_path: Path, usdt_base: tuple[bytes, int, int], data: st.DataObject) -> None:
    base, off, size = usdt_base
    notes = data.draw(stapsdt_notes(size))
    path = tmp_path / "usdt.elf"
    path.write_bytes(base[:off] + notes + base[off + size :])
    with no_hang():
        try:
            with ElfImage(str(path)) as img:
                for p in read_usdt_probes(img):
                    assert isinstance(p.provider, str) and isinstance(p.name, str) and p.arguments is not None
        except ElfError as e:
            assert "\n" not in str(e)


_GO = build_go_elf(FUNCS)


def _go_section(name: str) -> tuple[int, int]:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"utrace-fuzz-go-{os.getpid()}"
    path.write_bytes(_GO)
    try:
        with ElfImage(str(path)) as img:
            sec = img.section(name)
            assert sec is not None
            return sec.offset, sec.size
    finally:
        path.unlink()


PCLN_OFF, PCLN_SIZE = _go_section(".gopclntab")
BUILDINFO_OFF, BUILDINFO_SIZE = _go_section(".go.buildinfo")
BOUNDARY = [0, 1, 7, 8, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 63, (1 << 64) - 1]


@st.composite
def go_tables(draw) -> bytes:
    """The synthetic Go binary with its pclntab (header words, offsets, functab, _func records) and
    build info overwritten: words set to boundary values, bytes and runs to anything."""
    data = bytearray(_GO)
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.sampled_from(["pcln-word", "pcln-run", "buildinfo"]))
        if where == "pcln-word":
            pos = PCLN_OFF + 8 * draw(st.integers(0, PCLN_SIZE // 8 - 1))
            data[pos : pos + 8] = draw(st.sampled_from(BOUNDARY) | st.integers(0, (1 << 64) - 1)).to_bytes(8, "little")
        elif where == "pcln-run":
            pos = PCLN_OFF + draw(st.integers(8, PCLN_SIZE - 1))
            run = draw(st.binary(min_size=1, max_size=48))
            data[pos : pos + len(run)] = run[: PCLN_OFF + PCLN_SIZE - pos]
        else:
            pos = BUILDINFO_OFF + draw(st.integers(0, BUILDINFO_SIZE - 1))
            data[pos] = draw(st.integers(0, 255))
    return bytes(data)


@FUZZ
@given(blob=go_tables(), addrs=st.lists(st.integers(0, (1 << 64) - 1) | st.just(TEXT_VA), max_size=3))
def test_go_pclntab_and_module_data_arbitrary(tmp_path: Path, blob: bytes, addrs: list[int]) -> None:
    path = tmp_path / "go.elf"
    path.write_bytes(blob)
    with no_hang():
        try:
            with gobin.GoBinary(str(path)) as b:
                b.info()
                tab = b.pclntab()
                for f in tab:
                    assert f.entry <= f.end and isinstance(f.name, str)
                    tab.pcdata_table(f, 0)
                for a in addrs:
                    tab.function_at(a)
                    b.type_name(a)
                    b.itab_type(a)
                tab.lookup("main.main")
                inlined_calls(tab, "main.main")
                b.moduledata()
        except ElfError as e:
            assert "\n" not in str(e)


def _elf_with_sections(sections: list[tuple[str, bytes]]) -> bytes:
    """A minimal ELF64 x86-64 file with these PROGBITS sections (no program headers)."""
    shstr = b"\0" + b"".join(n.encode() + b"\0" for n, _ in sections) + b".shstrtab\0"
    out = bytearray(64)
    placed = []
    for name, body in sections:
        out += bytes(-len(out) % 8)
        placed.append((name, len(out), len(body)))
        out += body
    shstr_off = len(out)
    out += shstr + bytes(-(len(out) + len(shstr)) % 8)
    shoff = len(out)
    shdrs = [bytes(64)]
    pos = 1
    for name, off, size in placed:
        shdrs.append(struct.pack("<IIQQQQIIQQ", pos, 1, 0, 0, off, size, 0, 0, 1, 0))
        pos += len(name) + 1
    shdrs.append(struct.pack("<IIQQQQIIQQ", pos, 3, 0, 0, shstr_off, len(shstr), 0, 0, 1, 0))
    out += b"".join(shdrs)
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    out[:64] = struct.pack(
        "<16sHHIQQQIHHHHHH", ident, 2, 62, 1, 0, 0, shoff, 0, 64, 56, 0, 64, len(shdrs), len(shdrs) - 1
    )
    return bytes(out)


def _cu(version: int, body: bytes) -> bytes:
    """A DWARF compile unit header (32-bit) around `body`: the reader gets past the header at least."""
    head = struct.pack("<HBBI", version, 1, 8, 0) if version >= 5 else struct.pack("<HIB", version, 0, 8)
    return struct.pack("<I", len(head) + len(body)) + head + body


DWARF_SECTIONS = [".debug_abbrev", ".debug_str", ".debug_line", ".debug_frame", ".debug_loc", ".debug_ranges"]


@FUZZ
@given(
    version=st.sampled_from([2, 3, 4, 5]),
    info=st.binary(max_size=200),
    raw_info=st.booleans(),
    others=st.lists(st.binary(max_size=120), min_size=len(DWARF_SECTIONS), max_size=len(DWARF_SECTIONS)),
    pc=st.integers(0, (1 << 64) - 1),
)
def test_dwarf_arbitrary(
    tmp_path: Path, version: int, info: bytes, raw_info: bool, others: list[bytes], pc: int
) -> None:
    """Arbitrary DWARF sections (the info section behind a plausible unit header, or raw): every
    question utrace asks of DWARF gives an answer, None, or one ElfError line."""
    sections = [(".debug_info", info if raw_info else _cu(version, info)), *zip(DWARF_SECTIONS, others, strict=True)]
    path = tmp_path / "dwarf.elf"
    path.write_bytes(_elf_with_sections(sections))
    with no_hang(10):
        d = GoDwarf(str(path))
        try:
            for ask in (
                lambda: d.has_dwarf,
                lambda: d.producer,
                lambda: d.regabi,
                lambda: d.go_version,
                d.compile_units,
                lambda: d.function("main.main"),
                lambda: d.function("main.main", pc),
                lambda: d.inlined_instances("main.f"),
                lambda: d.type_named("string"),
                lambda: d.struct_member_offset("runtime.g", "goid"),
                lambda: d.cfa(pc),
                lambda: d.frame_address(8, pc),
            ):
                try:
                    ask()
                except ElfError as e:
                    assert "\n" not in str(e)
        finally:
            d.close()


STRINGS = (
    ArgSpec("s", ArgKind.CSTR, Deref(Reg("rdi"))),
    ArgSpec("p", ArgKind.PTRLEN_STR, Reg("rsi"), length=Reg("rdx"), max_len=64),
    ArgSpec("n", ArgKind.S32, Reg("rcx")),
    ArgSpec("ptr", ArgKind.PTR, Reg("r8")),
)


@pytest.fixture(scope="module")
def string_program():
    spec = ProbeSpec("f", "/srv/prog", 0x1000, ProbeKind.ENTRY, args=STRINGS, pair="/srv/prog:f")
    return render([spec], Options(stack_depth=8))


@FUZZ
@given(payload=st.binary(min_size=0, max_size=2048))
def test_strings_from_memory_arbitrary(string_program, payload: bytes) -> None:
    """Whatever bytes the BPF program copied out of the process (strings, lengths, flags, stack words,
    comm): the decoded event is text and numbers, and the text and JSON writers print it."""
    dec = Decoder(string_program)
    size = dec.sizes[0]
    record = (bytes(4) + payload).ljust(size, b"\0")[:size]  # probe 0, then anything
    with no_hang():
        ev = dec.decode(record)
        assert isinstance(ev, Event) and isinstance(ev.comm, str)
        for v in ev.args.values():
            assert v is None or isinstance(v, (str, int, bool))
        out, err = io.StringIO(), io.StringIO()
        for reporter in (TextReporter(out, err, color=False), JsonReporter(out, err)):
            reporter.event(ev)
            reporter.flush()
        assert out.getvalue()
        for line in out.getvalue().splitlines():
            if line.startswith('{"kind"'):
                assert json.loads(line)["probe"] == "f"
