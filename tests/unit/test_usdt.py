"""USDT notes (synthetic and against `readelf -n`) and x86-64 argument spec parsing."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess

import pytest

from tests.unit.elfgen import Probe, build_elf
from utrace.elf.reader import ElfImage
from utrace.elf.usdt_notes import canonical_register, parse_argument, parse_arguments, read_usdt_probes, usdt_probes_for
from utrace.model import OperandKind, UsdtArgument

PROBES = [
    Probe("myprov", "start", 0x20, "8@%rdx -4@%eax", semaphore=4),
    Probe("myprov", "noargs", 0x30),
    Probe("other", "stop", 0x44, "8@152(%rdi)", semaphore=6),
]


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("shift", [0, 0x1000, -0x2000])
def test_probes_from_notes(tmp_path, shared, shift):
    built = build_elf(shared=shared, probes=PROBES, prelink_shift=shift)
    with ElfImage(built.write(tmp_path / "a.out")) as img:
        probes = read_usdt_probes(img)
    text, text_off = built.addrs[".text"], built.offsets[".text"]
    data, data_off = built.addrs[".probes"], built.offsets[".probes"]
    assert [p.full_name for p in probes] == ["myprov:start", "myprov:noargs", "other:stop"]
    for p, spec in zip(probes, PROBES, strict=True):
        assert p.address == text + spec.pc - shift  # raw note pc, as readelf prints Location
        assert p.pc == text + spec.pc
        assert p.offset == text_off + spec.pc
        assert p.module == img.path
        if spec.semaphore is None:
            assert p.semaphore is None and p.semaphore_offset is None
        else:
            assert p.semaphore == data + spec.semaphore - shift
            assert p.semaphore_offset == data_off + spec.semaphore
    assert probes[0].argument_texts == ["8@%rdx", "-4@%eax"]
    assert probes[0].arguments[1].register == "rax" and probes[0].arguments[1].signed
    assert probes[1].arguments == ()


def test_no_stapsdt_notes(tmp_path):
    assert usdt_probes_for(build_elf().write(tmp_path / "a.out")) == []


def test_foreign_and_short_notes_are_skipped(tmp_path):
    built = build_elf(probes=[Probe("p", "n", 0x10)])
    data = bytearray(built.data)
    off = built.offsets[".note.stapsdt"]
    struct.pack_into("<I", data, off + 8, 4)  # note type 4: not a stapsdt probe
    path = tmp_path / "a.out"
    path.write_bytes(bytes(data))
    assert usdt_probes_for(str(path)) == []
    struct.pack_into("<II", data, off + 4, 20, 3)  # descsz 20 < 24: too short for pc/base/sem
    path.write_bytes(bytes(data))
    assert usdt_probes_for(str(path)) == []


def test_probe_outside_segments_has_offset_minus_one(tmp_path):
    built = build_elf(probes=[Probe("p", "n", 0x10_0000)])
    assert usdt_probes_for(built.write(tmp_path / "a.out"))[0].offset == -1


# -- argument specs -------------------------------------------------------------------------------


def _arg(text, size, signed, kind, **kw) -> UsdtArgument:
    return UsdtArgument(text, size, signed, kind, **kw)


R, M, C, U = OperandKind.REGISTER, OperandKind.MEMORY, OperandKind.CONSTANT, OperandKind.UNSUPPORTED


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8@%rdx", _arg("8@%rdx", 8, False, R, register="rdx", subregister="rdx")),
        ("-4@%eax", _arg("-4@%eax", 4, True, R, register="rax", subregister="eax")),
        ("1@%cl", _arg("1@%cl", 1, False, R, register="rcx", subregister="cl")),
        ("-2@%r9w", _arg("-2@%r9w", 2, True, R, register="r9", subregister="r9w")),
        ("4@%r12d", _arg("4@%r12d", 4, False, R, register="r12", subregister="r12d")),
        ("1@%sil", _arg("1@%sil", 1, False, R, register="rsi", subregister="sil")),
        ("8@152(%rdi)", _arg("8@152(%rdi)", 8, False, M, register="rdi", offset=152, subregister="rdi")),
        ("-4@-4(%rbp)", _arg("-4@-4(%rbp)", 4, True, M, register="rbp", offset=-4, subregister="rbp")),
        ("8@(%rsp)", _arg("8@(%rsp)", 8, False, M, register="rsp", subregister="rsp")),
        ("8@0x10(%r8)", _arg("8@0x10(%r8)", 8, False, M, register="r8", offset=16, subregister="r8")),
        (
            "8@-16(%rbp,%rax,8)",
            _arg(
                "8@-16(%rbp,%rax,8)", 8, False, M, register="rbp", offset=-16, index="rax", scale=8, subregister="rbp"
            ),
        ),
        ("4@(%rdi,%esi)", _arg("4@(%rdi,%esi)", 4, False, M, register="rdi", index="rsi", subregister="rdi")),
        ("-4@$-1", _arg("-4@$-1", 4, True, C, value=-1)),
        ("8@$0x20", _arg("8@$0x20", 8, False, C, value=32)),
        ("4@counter+8(%rip)", _arg("4@counter+8(%rip)", 4, False, M, register="rip", offset=8, symbol="counter")),
        ("8@_ZN2ns3varE(%rip)", _arg("8@_ZN2ns3varE(%rip)", 8, False, M, register="rip", symbol="_ZN2ns3varE")),
        ("%rdi", _arg("%rdi", 8, True, R, register="rdi", subregister="rdi")),
    ],
)
def test_parse_argument(text, expected):
    assert parse_argument(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        "",
        "8@",
        "8@%xmm0",
        "8@%rip",
        "3@%rax",
        "8@$",
        "8@$abc",
        "8@(%bogus)",
        "8@4(%rax,%nope,2)",
        "8@[x0, 8]",
        "-8@x1",
        "8@%",
        "8@16(%rax",
        "4@sym+(%rip)",
    ],
)
def test_parse_argument_unsupported(text):
    arg = parse_argument(text)
    assert arg.kind is OperandKind.UNSUPPORTED
    assert arg.text == text


@pytest.mark.parametrize(
    ("text", "offset"),
    [("8@010(%rdi)", 10), ("8@-010(%rdi)", -10), ("8@+8(%rdi)", 8), ("4@v+010(%rip)", 10)],
)
def test_parse_argument_leading_zero_displacement(text, offset):
    # GAS reads these as decimal in a USDT spec; must never raise (int(x, 0) rejects "010").
    arg = parse_argument(text)
    assert arg.kind is OperandKind.MEMORY and arg.offset == offset


def test_parse_argument_huge_displacement_does_not_raise():
    assert parse_argument("8@" + "9" * 5000 + "(%rdi)").kind is OperandKind.UNSUPPORTED
    assert parse_argument("8@$" + "9" * 5000).kind is OperandKind.UNSUPPORTED


def test_parse_arguments_splits_on_whitespace():
    args = parse_arguments(" 8@%rdx  -4@%eax\t1@%cl ")
    assert [a.text for a in args] == ["8@%rdx", "-4@%eax", "1@%cl"]
    assert parse_arguments("") == ()


def test_canonical_register():
    assert canonical_register("eax") == "rax"
    assert canonical_register("r9d") == "r9"
    assert canonical_register("r15b") == "r15"
    assert canonical_register("xmm0") is None


# -- against readelf -n on a program built with <sys/sdt.h> -----------------------------------

WITH_SEMAPHORES = r"""
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>
__extension__ unsigned short app_guarded_semaphore __attribute__((section(".probes"), used));
int counter = 3;
int guarded(long a, int b, const char *s) {
    if (app_guarded_semaphore)
        DTRACE_PROBE3(app, guarded, a, b, s);
    return b + 1;
}
"""

WITHOUT_SEMAPHORES = r"""
#include <sys/sdt.h>
extern int counter;
int guarded(long a, int b, const char *s);
int main(int argc, char **argv) {
    long x = argc * 7L;
    STAP_PROBE(app, noargs);
    STAP_PROBE2(app, two, x, argc);
    STAP_PROBE3(app, three, argv, counter, -1);
    return guarded(x, argc, argv[0]);
}
"""


def _readelf_probes(path: str) -> list[tuple[str, str, int, int, str]]:
    out = subprocess.run(["readelf", "-nW", path], check=True, capture_output=True, text=True).stdout
    pattern = re.compile(
        r"Provider: (\S+)\s+Name: (\S+)\s+Location: (0x[0-9a-f]+), Base: 0x[0-9a-f]+, "
        r"Semaphore: (0x[0-9a-f]+)\s+Arguments:[ \t]*([^\n]*)"
    )
    return [(m[1], m[2], int(m[3], 16), int(m[4], 16), m[5].strip()) for m in pattern.finditer(out)]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
@pytest.mark.parametrize("opt", [("-O0", "-pie"), ("-O2", "-no-pie")])
def test_against_readelf(tmp_path, opt):
    (tmp_path / "a.c").write_text(WITH_SEMAPHORES)
    (tmp_path / "b.c").write_text(WITHOUT_SEMAPHORES)
    path = str(tmp_path / "prog")
    proc = subprocess.run(
        ["gcc", *opt, "-o", path, str(tmp_path / "a.c"), str(tmp_path / "b.c")],
        capture_output=True,
        text=True,
    )
    if proc.returncode and "sys/sdt.h" in proc.stderr:
        pytest.skip("sys/sdt.h not installed (systemtap-sdt-dev)")
    assert proc.returncode == 0, proc.stderr
    probes = usdt_probes_for(path)
    expected = _readelf_probes(path)
    assert len(expected) == 4
    got = [(p.provider, p.name, p.address, p.semaphore or 0, " ".join(p.argument_texts)) for p in probes]
    assert got == expected
    with open(path, "rb") as f:
        data = f.read()
    for p in probes:
        assert p.pc == p.address  # not prelinked
        assert data[p.offset] == 0x90, p.full_name  # sys/sdt.h puts a nop at each probe site
        assert all(a.kind is not OperandKind.UNSUPPORTED for a in p.arguments), p.arguments
    guarded = next(p for p in probes if p.name == "guarded")
    assert guarded.semaphore and guarded.semaphore_offset is not None
    with ElfImage(path) as img:
        sec = img.section(".probes")
        assert sec is not None
        assert guarded.semaphore_offset == sec.offset + guarded.semaphore - sec.addr
    assert all(p.semaphore is None for p in probes if p.name != "guarded")
