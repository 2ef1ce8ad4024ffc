"""ElfImage: headers, sections, segments and address -> file offset, on synthetic files."""

from __future__ import annotations

import struct

import pytest

from tests.unit.elfgen import DATA_SHIFT, DYN_BASE, EXEC_BASE, Sym, build_elf
from utrace.elf.reader import SHT_DYNSYM, SHT_NOTE, SHT_SYMTAB, ElfImage
from utrace.errors import ElfError


@pytest.mark.parametrize(("shared", "base"), [(False, EXEC_BASE), (True, DYN_BASE)])
def test_headers_sections_and_segments(tmp_path, shared, base):
    built = build_elf(shared=shared, symtab=[Sym("f", 0)])
    with ElfImage(built.write(tmp_path / "a.out")) as img:
        assert img.is_shared is shared
        assert img.machine == 62
        names = [s.name for s in img.sections]
        assert names[0] == ""
        assert names[1:] == list(built.offsets)
        text = img.section(".text")
        assert text is not None
        assert (text.offset, text.addr, text.size) == (
            built.offsets[".text"],
            built.addrs[".text"],
            built.sizes[".text"],
        )
        assert img.section(".symtab").type == SHT_SYMTAB  # type: ignore[union-attr]
        assert img.section(".dynsym").type == SHT_DYNSYM  # type: ignore[union-attr]
        assert img.section(".note.stapsdt").type == SHT_NOTE  # type: ignore[union-attr]
        assert img.section(".nope") is None
        assert img.section_at(len(img.sections)) is None and img.section_at(-1) is None
        assert [(s.vaddr - s.offset) for s in img.segments] == [base, base + DATA_SHIFT]
        assert img.section_bytes(text) == b"\x90" * built.sizes[".text"]


@pytest.mark.parametrize("shared", [False, True])
def test_vaddr_to_offset_goes_through_the_right_segment(tmp_path, shared):
    built = build_elf(shared=shared)
    with ElfImage(built.write(tmp_path / "a.out")) as img:
        for name in (".text", ".probes"):
            addr, off = built.addrs[name], built.offsets[name]
            assert addr != off
            assert img.vaddr_to_offset(addr) == off
            assert img.vaddr_to_offset(addr + 5) == off + 5
        # Between the two segments, and past the end of the data segment: unmapped.
        assert img.vaddr_to_offset(built.addrs[".stapsdt.base"] + 1) is None
        assert img.vaddr_to_offset(built.addrs[".probes"] + built.sizes[".probes"]) is None
        assert img.vaddr_to_offset(0) is None


def test_read_bounds(tmp_path):
    built = build_elf()
    with ElfImage(built.write(tmp_path / "a.out")) as img:
        assert img.read(0, 4) == b"\x7fELF"
        with pytest.raises(ElfError):
            img.read(len(built.data) - 2, 4)
        with pytest.raises(ElfError):
            img.read(-1, 1)


def test_close_is_idempotent_and_context_manager_closes(tmp_path):
    img = ElfImage(build_elf().write(tmp_path / "a.out"))
    img.close()
    img.close()
    with pytest.raises(ElfError, match="cannot read"):
        img.read(0, 4)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "too short"),
        (b"#!/bin/sh\n" + bytes(100), "not an ELF file"),
        (b"\x7fELF\x01\x01" + bytes(100), "64-bit little-endian"),
        (b"\x7fELF\x02\x02" + bytes(100), "64-bit little-endian"),
    ],
)
def test_not_elf(tmp_path, content, message):
    path = tmp_path / "f"
    path.write_bytes(content)
    with pytest.raises(ElfError, match=message):
        ElfImage(str(path))


def test_missing_directory_and_unreadable(tmp_path):
    with pytest.raises(ElfError, match="no such file"):
        ElfImage(str(tmp_path / "missing"))
    with pytest.raises(ElfError, match="directory"):
        ElfImage(str(tmp_path))


@pytest.mark.parametrize(
    ("field", "fmt", "value"),
    [
        (40, "<Q", 1 << 40),  # e_shoff past the end
        (32, "<Q", 1 << 40),  # e_phoff past the end
        (56, "<H", 0xFFFF),  # e_phnum absurd
        (60, "<H", 0xFEFF),  # e_shnum too many for the file
        (58, "<H", 8),  # e_shentsize too small
        (54, "<H", 8),  # e_phentsize too small
    ],
)
def test_corrupt_header_fields(tmp_path, field, fmt, value):
    data = bytearray(build_elf().data)
    struct.pack_into(fmt, data, field, value)
    path = tmp_path / "bad"
    path.write_bytes(bytes(data))
    with pytest.raises(ElfError, match=r"corrupt|truncated"):
        ElfImage(str(path))


def test_section_past_the_end(tmp_path):
    built = build_elf(symtab=[Sym("f", 0)])
    data = bytearray(built.data)
    struct.pack_into("<Q", data, built.shdr_field(".symtab", 32), 1 << 32)  # sh_size
    path = tmp_path / "bad"
    path.write_bytes(bytes(data))
    with pytest.raises(ElfError, match="past the end"):
        ElfImage(str(path))


def test_truncated_file(tmp_path):
    built = build_elf()
    path = tmp_path / "cut"
    path.write_bytes(built.data[: built.shoff + 100])
    with pytest.raises(ElfError):
        ElfImage(str(path))


def test_no_section_headers(tmp_path):
    data = bytearray(build_elf().data)
    struct.pack_into("<Q", data, 40, 0)  # e_shoff = 0: a stripped-of-sections file
    path = tmp_path / "nosh"
    path.write_bytes(bytes(data))
    with ElfImage(str(path)) as img:
        assert img.sections == []
        assert len(img.segments) == 2


TRUNCATE_WHILE_READING = """
import os, shutil, sys
from utrace.elf.reader import ElfImage
from utrace.errors import ElfError
src, copy, how = sys.argv[1:]
shutil.copyfile(src, copy)
with ElfImage(copy) as img:
    sec = max((s for s in img.sections if s.type != 8), key=lambda s: s.offset + s.size)
    os.truncate(copy, 4096)  # the traced process shrinks its file: what was mapped is gone
    try:
        if how == "read":
            img.section_bytes(sec)
        else:
            img.find(b"no such bytes in this file", 0, img.size)
    except ElfError as e:
        print(e)
"""


@pytest.mark.parametrize("how", ["read", "find"])
def test_a_file_truncated_while_it_is_read_is_one_error_not_a_crash(tmp_path, how):
    """A real ELF file (this Python interpreter) shrinks after it was opened: with the file memory-mapped
    that was a SIGBUS, which ended utrace (and its probes) without a word."""
    import os
    import subprocess
    import sys

    copy = tmp_path / "victim"
    p = subprocess.run([sys.executable, "-c", TRUNCATE_WHILE_READING, os.path.realpath(sys.executable), str(copy), how],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert p.stdout == f"{copy}: the file shrank while utrace read it (truncated by another process?)\n"


def test_find_across_chunk_boundaries(tmp_path, monkeypatch):
    import random

    import utrace.elf.reader as reader

    built = build_elf()
    rnd = random.Random(7)
    data = built.data + bytes(rnd.choice(b"ab") for _ in range(1000))  # after the headers and sections
    path = tmp_path / "a.out"
    path.write_bytes(data)
    monkeypatch.setattr(reader, "_CHUNK", 16)
    with ElfImage(str(path)) as img:
        for needle in (b"ab", b"abba", b"aaaaa", b"babab" * 3, b"\x7fELF", b"zz"):
            for start, end in ((0, len(data)), (len(data) - 900, len(data) - 300), (len(data) - 9, len(data) - 8),
                               (len(data) - 500, 10**9), (-5, 40)):  # fmt: skip
                assert img.find(needle, start, end) == data.find(needle, max(start, 0), end), (needle, start)
