"""Struct member offsets of the running kernel, from its BTF (`/sys/kernel/btf/vmlinux`).

The BPF programs are compiled against whatever kernel headers are at hand (Debian's 6.1 headers on a
6.18 kernel here), so `task->thread.fsbase` written in C could read the wrong bytes. The running
kernel's own type information gives the exact offset instead.
"""

from __future__ import annotations

import struct

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F

_KIND_STRUCT = 4
_KIND_UNION = 5
# Bytes that follow the 12-byte btf_type for each kind: a fixed part plus a per-vlen part.
_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
_PER_VLEN = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}


class BtfError(ValueError):
    """The BTF blob is missing, truncated or not BTF."""


def struct_members(data: bytes, wanted: set[str]) -> dict[str, dict[str, int]]:
    """Byte offsets of the members of the named structs: {struct: {member: offset}}.

    Only the first struct of each name counts (the kernel's BTF has one `task_struct`).

    Raises:
        BtfError: not a BTF blob, or a record runs past the end.
    """
    if len(data) < 24:
        raise BtfError("BTF blob too short")
    magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
    if magic != BTF_MAGIC:
        raise BtfError("not a BTF blob (bad magic)")
    types = hdr_len + type_off
    strings = hdr_len + str_off
    end = types + type_len
    if end > len(data) or strings + str_len > len(data):
        raise BtfError("BTF sections run past the end")

    def name(off: int) -> str:
        a = strings + off
        b = data.find(b"\0", a, strings + str_len)
        return data[a:b].decode("ascii", "replace") if b >= 0 else ""

    found: dict[str, dict[str, int]] = {}
    pos = types
    while pos < end and len(found) < len(wanted):
        if pos + 12 > end:
            raise BtfError("truncated BTF type record")
        name_off, info, _size = struct.unpack_from("<III", data, pos)
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        kind_flag = info >> 31
        body = pos + 12
        pos = body + _FIXED.get(kind, 0) + _PER_VLEN.get(kind, 0) * vlen
        if kind not in (_KIND_STRUCT, _KIND_UNION) or pos > end:
            continue
        sname = name(name_off)
        if sname not in wanted or sname in found:
            continue
        members: dict[str, int] = {}
        for i in range(vlen):
            m_name, _m_type, m_off = struct.unpack_from("<III", data, body + 12 * i)
            bits = m_off & 0xFFFFFF if kind_flag else m_off
            members[name(m_name)] = bits // 8
        found[sname] = members
    if pos > end:
        raise BtfError("truncated BTF type record")
    return found


def task_fsbase_offset(path: str = VMLINUX_BTF) -> int | None:
    """Offset of `thread.fsbase` in the running kernel's `struct task_struct` (x86-64), or None."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        m = struct_members(data, {"task_struct", "thread_struct"})
    except (OSError, BtfError):
        return None
    thread = m.get("task_struct", {}).get("thread")
    fsbase = m.get("thread_struct", {}).get("fsbase")
    if thread is None or fsbase is None:
        return None
    return thread + fsbase


def task_family_offsets(path: str = VMLINUX_BTF) -> tuple[int, int, int] | None:
    """Offsets of `task_struct.tgid`, `task_struct.signal` and `signal_struct.live` in the running
    kernel (what the process-family programs read), or None when its BTF does not say."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        m = struct_members(data, {"task_struct", "signal_struct"})
    except (OSError, BtfError):
        return None
    task, sig = m.get("task_struct", {}), m.get("signal_struct", {})
    tgid, signal, live = task.get("tgid"), task.get("signal"), sig.get("live")
    if tgid is None or signal is None or live is None:
        return None
    return tgid, signal, live


def exec_file_offsets(path: str = VMLINUX_BTF) -> tuple[int, int, int, int, int] | None:
    """Offsets of `linux_binprm.file`, `file.f_inode`, `inode.i_ino`, `inode.i_sb` and
    `super_block.s_dev` in the running kernel (what tells which file a process exec'd), or None."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        m = struct_members(data, {"linux_binprm", "file", "inode", "super_block"})
    except (OSError, BtfError):
        return None
    got = (
        m.get("linux_binprm", {}).get("file"),
        m.get("file", {}).get("f_inode"),
        m.get("inode", {}).get("i_ino"),
        m.get("inode", {}).get("i_sb"),
        m.get("super_block", {}).get("s_dev"),
    )
    if any(v is None for v in got):
        return None
    a, b, c, d, e = (int(v) for v in got if v is not None)
    return a, b, c, d, e
