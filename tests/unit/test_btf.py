"""The BTF member-offset reader on synthetic blobs, and on this kernel's own BTF when there is one."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from utrace.bpf.btf import VMLINUX_BTF, BtfError, exec_file_offsets, struct_members, task_fsbase_offset


def blob(types: list[tuple[str, int, list[tuple[str, int]], bool]]) -> bytes:
    """types: (name, kind, [(member, bit offset)], kind_flag)."""
    strings = b"\0"
    offs: dict[str, int] = {}

    def s(name: str) -> int:
        nonlocal strings
        if name not in offs:
            offs[name] = len(strings)
            strings += name.encode() + b"\0"
        return offs[name]

    body = b""
    for name, kind, members, flag in types:
        info = (kind << 24) | len(members) | (1 << 31 if flag else 0)
        body += struct.pack("<III", s(name), info, 8)
        if kind == 1:  # INT carries one extra word
            body += struct.pack("<I", 64)
        for m, bits in members:
            body += struct.pack("<III", s(m), 1, bits)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strings))
    return hdr + body + strings


def test_offsets_in_bytes_and_bitfield_encoding():
    data = blob(
        [
            ("long", 1, [], False),
            ("task_struct", 4, [("pid", 0), ("thread", 3000 * 8)], False),
            ("thread_struct", 4, [("sp", 24 * 8), ("fsbase", (5 << 24) | 40 * 8)], True),
        ]
    )
    m = struct_members(data, {"task_struct", "thread_struct"})
    assert m["task_struct"] == {"pid": 0, "thread": 3000}
    assert m["thread_struct"] == {"sp": 24, "fsbase": 40}  # bitfield size bits are masked off


def test_bad_blobs_raise_btf_error():
    with pytest.raises(BtfError):
        struct_members(b"\0" * 10, {"x"})
    with pytest.raises(BtfError):
        struct_members(b"\x00\x00" + b"\0" * 30, {"x"})
    good = blob([("task_struct", 4, [("thread", 64)], False)])
    with pytest.raises(BtfError):
        struct_members(good[:-12], {"task_struct", "nothing"})


@given(st.binary(max_size=200))
def test_garbage_never_raises_anything_else(data):
    try:
        struct_members(data, {"task_struct"})
    except BtfError:
        pass


@pytest.mark.skipif(not os.path.exists(VMLINUX_BTF), reason="kernel without BTF")
def test_this_kernel_has_a_plausible_fsbase_offset():
    off = task_fsbase_offset()
    assert off is not None and 1000 < off < 20000 and off % 8 == 0


@pytest.mark.skipif(not os.path.exists(VMLINUX_BTF), reason="kernel without BTF")
def test_this_kernel_says_where_the_execd_file_is():
    got = exec_file_offsets()
    assert got is not None
    bprm_file, f_inode, i_ino, i_sb, s_dev = got
    # pointers and an unsigned long are 8-aligned; dev_t is 4-aligned; all well inside their structs
    assert all(v % 8 == 0 and 0 <= v < 1024 for v in (bprm_file, f_inode, i_ino, i_sb))
    assert s_dev % 4 == 0 and s_dev < 1024
