"""Stack symbolisation: perf maps (as node and HotSpot write them) and addresses of this very process."""

from __future__ import annotations

import ctypes
import os
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utrace.model import Frame
from utrace.process.perfmap import PerfMap
from utrace.process.stacks import PERF_MAP_MODULE, Symbolizer

NODE_LINES = b"""3c1b2e04a0e0 4c LazyCompile:~fib /app/fib.js:1
3c1b2e04a140 120 JS:*run /app/main.js:10:3
"""
HOTSPOT_LINES = b"""0x00007f2d3c4b5a20 0x0000000000000120 int java.lang.String.hashCode()
0x00007f2d3c4b5b40 0x0000000000000098 long StackDemo.tick(int)
"""


def _map(tmp_path, data: bytes) -> tuple[PerfMap, str]:
    path = tmp_path / "perf-1.map"
    path.write_bytes(data)
    m = PerfMap.open(str(path))
    assert m is not None
    return m, str(path)


def test_node_format(tmp_path):
    m, _ = _map(tmp_path, NODE_LINES)
    assert len(m) == 2
    assert m.lookup(0x3C1B2E04A0E0) == ("LazyCompile:~fib /app/fib.js:1", 0x3C1B2E04A0E0)
    assert m.lookup(0x3C1B2E04A0E0 + 0x4B) == ("LazyCompile:~fib /app/fib.js:1", 0x3C1B2E04A0E0)
    assert m.lookup(0x3C1B2E04A0E0 + 0x4C) is None  # the gap between the two regions
    assert m.lookup(0x3C1B2E04A140 + 0x11F)[0] == "JS:*run /app/main.js:10:3"
    assert m.lookup(0x3C1B2E04A140 + 0x120) is None
    assert m.lookup(0x1000) is None


def test_hotspot_format_with_0x(tmp_path):
    m, _ = _map(tmp_path, HOTSPOT_LINES)
    assert m.lookup(0x7F2D3C4B5B40 + 0x40) == ("long StackDemo.tick(int)", 0x7F2D3C4B5B40)
    assert m.lookup(0x7F2D3C4B5A20)[0] == "int java.lang.String.hashCode()"


def test_reread_as_the_file_grows_and_half_lines_wait(tmp_path):
    m, path = _map(tmp_path, NODE_LINES)
    assert m.lookup(0x500000) is None
    with open(path, "ab") as f:
        f.write(b"500000 10 JS:~late /app/late.js:1")  # no newline yet: the runtime is still writing
        f.flush()
        assert not m.refresh()
        assert m.lookup(0x500004) is None
        f.write(b"\n")
    assert m.refresh()
    assert m.lookup(0x500004) == ("JS:~late /app/late.js:1", 0x500000)
    assert not m.refresh()  # nothing new


def test_later_line_for_the_same_start_wins_and_nested_regions(tmp_path):
    m, _ = _map(tmp_path, b"1000 100 old\n1000 80 new\n1010 10 inner\n")
    assert m.lookup(0x1012) == ("inner", 0x1010)
    assert m.lookup(0x1030) == ("new", 0x1000)
    assert m.lookup(0x1090) is None  # "old" was replaced by the shorter "new"


def test_rewritten_shorter_file_is_read_again(tmp_path):
    m, path = _map(tmp_path, NODE_LINES)
    with open(path, "wb") as f:  # same inode, truncated and rewritten
        f.write(b"2000 10 fresh\n")
    assert m.refresh()
    assert m.lookup(0x2001) == ("fresh", 0x2000)
    assert m.lookup(0x3C1B2E04A0E0) is None


def test_missing_map_is_none(tmp_path):
    assert PerfMap.open(str(tmp_path / "perf-99.map")) is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.integers(0, (1 << 64) - 1))
def test_any_bytes_parse_without_errors(data, address):
    m = PerfMap()
    m.add_lines(data)
    hit = m.lookup(address)
    if hit is not None:
        assert hit[1] <= address


NAMES = st.text(st.characters(whitelist_categories=("L", "N", "P", "Zs")), min_size=1, max_size=30).filter(str.strip)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 1 << 12), st.integers(1, 1 << 12), NAMES), max_size=40), st.randoms())
def test_lookup_agrees_with_a_linear_scan(layout, rnd):
    """Disjoint regions (gaps between them), written in any order: every address finds its own."""
    regions, at = [], 0x10000
    for gap, size, name in layout:
        at += gap
        regions.append((at, size, name.strip()))
        at += size
    shuffled = regions[:]
    rnd.shuffle(shuffled)
    m = PerfMap()
    m.add_lines("".join(f"{a:x} {n:#x} {name}\n" for a, n, name in shuffled).encode())
    for start, size, name in regions:
        for probe in (start, start + size // 2, start + size - 1):
            assert m.lookup(probe) == (name, start)
        assert all(not (s <= start + size < s + n) for s, n, _ in regions) == (m.lookup(start + size) is None)
    assert m.lookup(0x10000) is None


# --- This process's own addresses --------------------------------------------------------------------


def _libc_path() -> str:
    with open("/proc/self/maps") as f:
        for line in f:
            if "libc.so" in line or "libc-" in line:
                return line.split()[-1]
    pytest.skip("no libc mapped")


def test_own_libc_function_resolves_like_nm():
    """getpid's address in this process resolves to getpid (or an alias nm -D puts at its address)."""
    libc = ctypes.CDLL(None)
    address = ctypes.cast(libc.getpid, ctypes.c_void_p).value
    assert address is not None
    frame = Symbolizer().frame(os.getpid(), address)
    assert frame.module is not None and os.path.realpath(frame.module) == os.path.realpath(_libc_path())
    nm = subprocess.run(["nm", "-D", "--defined-only", frame.module], capture_output=True, text=True, check=True)
    at: dict[int, set[str]] = {}
    where: dict[str, int] = {}
    for line in nm.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TtWwi":
            name = parts[2].split("@")[0]
            at.setdefault(int(parts[0], 16), set()).add(name)
            where[name] = int(parts[0], 16)
    assert frame.offset == 0
    assert frame.function in at[where["getpid"]]


def test_return_addresses_are_looked_up_at_the_call():
    """A return address is looked up one byte back: at a function's first byte it is the previous one's."""
    libc = ctypes.CDLL(None)
    address = ctypes.cast(libc.getpid, ctypes.c_void_p).value
    assert address is not None
    s = Symbolizer()
    entry = s.frame(os.getpid(), address)
    assert s.frame(os.getpid(), address + 1, returning=True) == Frame(address + 1, entry.function, 1, entry.module)
    before = s.frame(os.getpid(), address, returning=True)
    assert before.function != entry.function
    assert before.address == address and before.module == entry.module


def test_unknown_addresses_and_dead_processes():
    s = Symbolizer()
    f = s.frame(os.getpid(), 0x10)
    assert f == Frame(0x10)
    assert str(f) == "0x10"
    assert s.frame(0x7FFFFFF0, 0x401000) == Frame(0x401000)  # no such pid


def test_jit_frames_from_the_perf_map():
    """Anonymous executable memory of this process, named in /tmp/perf-PID.map, resolves from it."""
    import mmap

    prot = mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
    mm = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=prot)
    lo = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    path = f"/tmp/perf-{os.getpid()}.map"
    try:
        s = Symbolizer()
        assert s.frame(os.getpid(), lo + 0x10) == Frame(lo + 0x10)  # JIT code nobody has named yet
        with open(path, "w") as f:
            f.write(f"{lo:x} 40 JS:*hot /app/hot.js:3\n")
        # (a fresh Symbolizer: one that found no map looks again only after a short while)
        frame = Symbolizer().frame(os.getpid(), lo + 0x10)
        assert frame == Frame(lo + 0x10, "JS:*hot /app/hot.js:3", 0x10, PERF_MAP_MODULE)
        assert str(frame) == "JS:*hot /app/hot.js:3+0x10 ([perf-map])"
    finally:
        mm.close()
        if os.path.exists(path):
            os.unlink(path)


def _free_pid() -> int:
    for pid in range(4_194_000, 4_000_000, -1):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    pytest.skip("no free pid")


def test_a_gone_process_resolves_from_where_its_probe_fired():
    """Maps unreadable (the process exited): the probe's file offset and the address it fired at place
    the module, as for a PIE executable whose process was gone before its first event was read."""
    libc = ctypes.CDLL(None)
    address = ctypes.cast(libc.getpid, ctypes.c_void_p).value
    assert address is not None
    here = Symbolizer().frame(os.getpid(), address)
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= address < hi:
                file_offset = address - lo + int(parts[2], 16)
                path = parts[5]
    gone = _free_pid()
    s = Symbolizer()
    assert s.frame(gone, address + 2) == Frame(address + 2)  # nothing known yet
    s.learn(gone, path, "libc.so.6", file_offset, address)
    assert s.frame(gone, address + 3) == Frame(address + 3, here.function, 3, "libc.so.6")


def test_perf_map_of_a_launched_process_after_it_exited():
    gone = _free_pid()
    path = f"/tmp/perf-{gone}.map"
    with open(path, "w") as f:
        f.write("7f0000001000 100 JS:~main /app/main.js:1\n")
    try:
        assert Symbolizer().frame(gone, 0x7F0000001010).function is None  # not ours: its /tmp is unknown
        frame = Symbolizer(launched=gone).frame(gone, 0x7F0000001010)
        assert frame == Frame(0x7F0000001010, "JS:~main /app/main.js:1", 0x10, PERF_MAP_MODULE)
    finally:
        os.unlink(path)
