"""utrace.bpf.bpfsys without the kernel: finding map references in instructions, moving them to new
fds, and the cached form's round trip and rejection of anything else."""

from __future__ import annotations

import ctypes
import marshal
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from utrace.bpf.bpfsys import Compiled, Function, MapSpec, RingBuffer, map_references, relocate


def insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


def ld_map(dst: int, fd: int) -> bytes:  # what clang emits for bpf_pseudo_fd(1, fd): two slots
    return insn(0x18, dst, 1, 0, fd) + insn(0, 0, 0, 0, 0)


def ld_imm64(dst: int, value: int) -> bytes:
    return insn(0x18, dst, 0, 0, value & 0xFFFFFFFF) + insn(0, 0, 0, 0, value >> 32)


EXIT = insn(0x95)
MOV_R0_0 = insn(0xB7, 0, 0, 0, 0)


def test_map_references_are_found_and_plain_constants_skipped() -> None:
    # both slots of a 64-bit constant are skipped: its second slot is never read as an instruction
    tricky = ld_imm64(3, (0x18 | (0x10 << 8)) << 32 | 7)
    code = MOV_R0_0 + ld_map(1, 5) + tricky + ld_map(2, 9) + EXIT
    assert map_references(code) == [(1, 5), (5, 9)]


def test_relocate_rewrites_only_the_immediates() -> None:
    code = MOV_R0_0 + ld_map(1, 5) + ld_map(2, 9) + EXIT
    out = relocate(code, ((1, 1), (3, 0)), [40, 41])
    assert map_references(out) == [(1, 41), (3, 40)]
    assert len(out) == len(code)
    changed = [i for i in range(len(code)) if code[i] != out[i]]
    assert all(8 * 1 + 4 <= i < 8 * 1 + 8 or 8 * 3 + 4 <= i < 8 * 3 + 8 for i in changed)


@pytest.mark.parametrize("src", [2, 3, 4, 5, 6])
def test_other_pseudo_loads_are_refused(src: int) -> None:
    code = insn(0x18, 1, src, 0, 3) + insn(0) + EXIT
    with pytest.raises(ValueError, match="pseudo kind"):
        map_references(code)


def _compiled() -> Compiled:
    maps = (MapSpec("events", 27, 0, 0, 1 << 24, 0), MapSpec("counts", 5, 12, 8, 65536, 1))
    fn = Function("probe_0", MOV_R0_0 + ld_map(1, 0) + ld_map(2, 1) + EXIT, ((1, 0), (3, 1)))
    return Compiled(maps, (fn,), "GPL", 0x601200)


def test_compiled_round_trips_through_marshal() -> None:
    c = _compiled()
    assert Compiled.from_plain(marshal.loads(marshal.dumps(c.to_plain()))) == c


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p["functions"][0].__setitem__(1, b"\x00" * 7),  # not whole instructions
        lambda p: p["functions"][0].__setitem__(2, [[99, 0]]),  # relocation past the end
        lambda p: p["functions"][0].__setitem__(2, [[1, 5]]),  # a map that is not there
        lambda p: p.__setitem__("maps", [["x", 1, 2]]),  # short map entry
        lambda p: p.pop("license"),
    ],
)
def test_damaged_cached_forms_are_rejected(damage: object) -> None:
    plain = _compiled().to_plain()
    damage(plain)  # type: ignore[operator]
    with pytest.raises((ValueError, TypeError, KeyError)):
        Compiled.from_plain(plain)


@given(
    st.recursive(
        st.none() | st.integers() | st.binary() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)
    )
)
def test_arbitrary_data_is_rejected_or_well_formed(obj: object) -> None:
    try:
        c = Compiled.from_plain(obj)
    except (ValueError, TypeError, KeyError):
        return
    for fn in c.functions:
        assert len(fn.insns) % 8 == 0
        assert all(0 <= i < len(fn.insns) // 8 and 0 <= m < len(c.maps) for i, m in fn.relocations)


def test_dispatcher_refers_to_its_prog_array_only_and_ends_in_exit() -> None:
    """The multi-uprobe dispatcher: one map reference (the prog array, as an fd the loader fills in),
    two helper calls (get_attach_cookie 174, tail_call 12, as numbered in the kernel's uapi bpf.h),
    and a return of 0. The kernel's verifier loads it in the e2e tests."""
    from utrace.bpf.bpfsys import dispatcher

    code = dispatcher(7)
    assert len(code) % 8 == 0
    assert map_references(code) == [(4, 7)]
    insns = [struct.unpack_from("<BBhi", code, i) for i in range(0, len(code), 8)]
    assert [imm for op, _regs, _off, imm in insns if op == 0x85] == [174, 12]  # BPF_JMP | BPF_CALL
    assert insns[-1][0] == 0x95 and insns[-2] == (0xB7, 0, 0, 0)  # r0 = 0; exit


class FakeRing:
    """A ring's data area and positions in ordinary memory, laid out as the kernel writes them."""

    def __init__(self, size: int = 1 << 16) -> None:
        self.mem = ctypes.create_string_buffer(size)
        self.cons = ctypes.c_uint64(0)
        self.prod = ctypes.c_uint64(0)
        self.ring = object.__new__(RingBuffer)
        self.ring.mask = size - 1
        self.ring.data = ctypes.addressof(self.mem)
        self.ring.consumer_pos = self.cons
        self.ring.producer_pos = self.prod
        self.ring._spans = []

    def put(self, payload: bytes, flags: int = 0) -> None:
        at = self.prod.value
        struct.pack_into("<II", self.mem, at, len(payload) | flags, 0)
        self.mem[at + 8 : at + 8 + len(payload)] = payload
        self.prod.value = at + ((len(payload) + 8 + 7) & ~7)


BUSY, DISCARD = 1 << 31, 1 << 30


def test_consume_stops_after_limit_and_leaves_the_rest_in_the_ring() -> None:
    f = FakeRing()
    for i in range(10):
        f.put(b"r%d" % i)
    got: list[bytes] = []
    assert f.ring.consume(got.append, limit=4) == 4
    assert got == [b"r0", b"r1", b"r2", b"r3"]
    assert f.ring.consume(got.append) == 6
    assert got[4:] == [b"r%d" % i for i in range(4, 10)]
    assert f.cons.value == f.prod.value


def test_consume_stops_once_past_its_deadline_every_64_records() -> None:
    f = FakeRing()
    for i in range(200):
        f.put(b"x%d" % i)
    got: list[bytes] = []
    assert f.ring.consume(got.append, until=0.0) == 64  # the clock is checked every 64 records
    assert got[-1] == b"x63"


def test_skip_counts_committed_records_not_discarded_ones_and_stops_at_a_busy_one() -> None:
    f = FakeRing()
    for i in range(5):
        f.put(b"a%d" % i)
    f.put(b"gone", DISCARD)
    f.put(b"b")
    f.put(b"writing", BUSY)
    f.put(b"after")
    got: list[bytes] = []
    assert f.ring.consume(got.append, limit=2) == 2
    assert f.ring.skip() == (4, True)  # a2 a3 a4 b; "gone" was discarded by its writer
    busy_at = f.cons.value
    struct.pack_into("<I", f.mem, busy_at, len(b"writing"))  # its writer commits it
    assert f.ring.skip() == (2, False)
    assert f.cons.value == f.prod.value


def test_the_compiled_cache_is_keyed_by_the_kernels_build_and_bccs_release(tmp_path, monkeypatch) -> None:
    """Oracles: `uname -v` (the kernel's build), bcc's own __version__ (imported here, not by the key)."""
    import subprocess

    from utrace.bpf import backend

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr("utrace.store.cache._trusted_dirs", {})
    stamp = backend.toolchain_stamp()
    assert subprocess.run(["uname", "-v"], capture_output=True, text=True).stdout.strip() in stamp
    try:
        import bcc

        assert f"'{bcc.__version__}'" in stamp or f'"{bcc.__version__}"' in stamp
    except ImportError:
        assert "no bcc" in stamp
    first = backend._compiled_cache_file("int x;")
    assert first is not None and first == backend._compiled_cache_file("int x;")
    assert backend._compiled_cache_file("int y;") != first
    monkeypatch.setattr(backend, "toolchain_stamp", lambda: stamp + "another build")
    assert backend._compiled_cache_file("int x;") != first
