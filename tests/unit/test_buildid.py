"""GNU build-id from the PT_NOTE segment, and the note splitter."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from tests.unit.elfgen import build_elf
from utrace.elf.buildid import check_elf_magic, iter_notes, read_build_id
from utrace.errors import ElfError


@pytest.mark.parametrize("shared", [False, True])
def test_build_id(tmp_path, shared):
    path = build_elf(shared=shared, build_id=bytes.fromhex("deadbeef" * 5)).write(tmp_path / "a")
    assert read_build_id(path) == "deadbeef" * 5


def test_no_build_id(tmp_path):
    assert read_build_id(build_elf(build_id=None).write(tmp_path / "a")) is None


def test_no_program_headers(tmp_path):
    data = bytearray(build_elf().data)
    struct.pack_into("<H", data, 56, 0)  # e_phnum = 0, e.g. a relocatable object
    (tmp_path / "a").write_bytes(bytes(data))
    assert read_build_id(str(tmp_path / "a")) is None


@pytest.mark.parametrize(
    ("field", "fmt", "value"),
    [(32, "<Q", 1 << 40), (56, "<H", 0xFFFF), (54, "<H", 16)],
)
def test_corrupt_program_headers(tmp_path, field, fmt, value):
    data = bytearray(build_elf().data)
    struct.pack_into(fmt, data, field, value)
    (tmp_path / "a").write_bytes(bytes(data))
    with pytest.raises(ElfError):
        read_build_id(str(tmp_path / "a"))


def test_note_segment_past_the_end(tmp_path):
    built = build_elf()
    data = bytearray(built.data)
    struct.pack_into("<Q", data, 64 + 2 * 56 + 8, len(data) - 4)  # PT_NOTE p_offset
    (tmp_path / "a").write_bytes(bytes(data))
    with pytest.raises(ElfError, match="note segment"):
        read_build_id(str(tmp_path / "a"))


def test_not_elf(tmp_path):
    (tmp_path / "a").write_bytes(b"MZ" + bytes(200))
    with pytest.raises(ElfError):
        read_build_id(str(tmp_path / "a"))
    with pytest.raises(ElfError, match="too short"):
        check_elf_magic(b"\x7fELF", "x")


def test_iter_notes():
    def note(name: bytes, ntype: int, desc: bytes) -> bytes:
        pad = lambda b: b + bytes(-len(b) % 4)
        return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)

    blob = note(b"GNU\0", 3, b"\x01\x02\x03") + note(b"stapsdt\0", 3, b"x" * 30) + note(b"", 1, b"")
    assert iter_notes(blob) == [(b"GNU", 3, b"\x01\x02\x03"), (b"stapsdt", 3, b"x" * 30), (b"", 1, b"")]
    assert iter_notes(blob[:-1]) == iter_notes(blob)[:2]  # the truncated last header is dropped
    assert iter_notes(struct.pack("<III", 0xFFFFFFFF, 0, 3) + bytes(8)) == []
    assert iter_notes(b"") == []


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_against_readelf(tmp_path):
    (tmp_path / "m.c").write_text("int main(void) { return 0; }\n")
    path = str(tmp_path / "m")
    subprocess.run(["gcc", "-Wl,--build-id=sha1", "-o", path, str(tmp_path / "m.c")], check=True)
    out = subprocess.run(["readelf", "-n", path], capture_output=True, text=True, check=True).stdout
    expected = out.split("Build ID: ")[1].split()[0]
    assert read_build_id(path) == expected
