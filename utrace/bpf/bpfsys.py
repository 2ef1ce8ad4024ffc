"""The kernel's BPF interface without bcc: maps, program loading, map reads and the ring buffer.

bcc is the compiler (utrace/bpf/backend.py): its clang run turns the generated C into BPF instructions
whose map references are `ld_imm64` instructions carrying map fds (BPF_PSEUDO_MAP_FD). What it
produced is kept as a `Compiled`: the maps' definitions and each function's instructions with those
references rewritten as map indices. Loading a `Compiled` creates the maps, puts their new fds into
the instructions and loads the programs with bpf(2) here. The kernel cannot tell the difference (it
sees the same instructions), and a `Compiled` can be cached: a second run with the same program
skips libbcc and clang, which took about 0.45 s of utrace's 0.8 s start-up on these machines.

The ring buffer is read as libbpf reads it (tools/lib/bpf/ringbuf.c): a read-write page holding the
consumer position, then a read-only producer page and the data area mapped twice in a row, so a
record that wraps around the end is contiguous. Records start with a u32 length whose top bits say
"still being written" (BUSY) or "discarded" (DISCARD), and a u32 page offset; the sample follows,
8-byte aligned. x86-64 keeps loads ordered with loads and stores with stores, which is what the
acquire/release pairs of libbpf's reader need there; the positions are single aligned 8-byte loads
and stores (see RingBuffer).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import select
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

_NR_BPF = {"x86_64": 321, "aarch64": 280}

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_LINK_CREATE = 28

BPF_PROG_TYPE_KPROBE = 2
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_NOEXIST = 1
BPF_MAP_TYPE_PROG_ARRAY = 3
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
BPF_MAP_TYPE_RINGBUF = 27
_PERCPU = {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}

BPF_LD_IMM64 = 0x18  # BPF_LD | BPF_IMM | BPF_DW: two instruction slots
BPF_PSEUDO_MAP_FD = 1
BPF_TRACE_UPROBE_MULTI = 48  # enum bpf_attach_type, Linux 6.6
BPF_F_UPROBE_MULTI_RETURN = 1
_FUNC_TAIL_CALL = 12
_FUNC_GET_ATTACH_COOKIE = 174

_ATTR_SIZE = 128
_RINGBUF_BUSY = 1 << 31
_RINGBUF_DISCARD = 1 << 30
_RINGBUF_HDR = 8

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """bpf(2) refused: errno, and for a program the start of the verifier's log."""


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise BpfError(0, f"unsupported architecture {platform.machine()}")
    ret = int(_libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(_ATTR_SIZE)))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, os.strerror(err))
    return ret


@dataclass(frozen=True, slots=True)
class MapSpec:
    """A map as the program declares it (what BPF_MAP_CREATE needs)."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@dataclass(frozen=True, slots=True)
class Function:
    """A program's instructions; `relocations` are (instruction index, map index) of its map references."""

    name: str
    insns: bytes
    relocations: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Compiled:
    """Everything needed to load a compiled program again, without the compiler."""

    maps: tuple[MapSpec, ...]
    functions: tuple[Function, ...]
    license: str
    kern_version: int

    def to_plain(self) -> dict[str, object]:
        return {
            "maps": [[m.name, m.type, m.key_size, m.value_size, m.max_entries, m.flags] for m in self.maps],
            "functions": [[f.name, f.insns, [list(r) for r in f.relocations]] for f in self.functions],
            "license": self.license,
            "kern_version": self.kern_version,
        }

    @staticmethod
    def from_plain(obj: object) -> Compiled:
        """Raises ValueError (or TypeError/KeyError) on anything that is not what `to_plain` wrote."""
        if not isinstance(obj, dict):
            raise ValueError("not a compiled program")
        maps = tuple(MapSpec(str(n), int(t), int(k), int(v), int(m), int(f)) for n, t, k, v, m, f in obj["maps"])
        functions = []
        for name, insns, relocs in obj["functions"]:
            if not isinstance(insns, bytes) or len(insns) % 8:
                raise ValueError("instructions are not 8-byte words")
            rel = tuple((int(i), int(m)) for i, m in relocs)
            if any(not 0 <= i < len(insns) // 8 or not 0 <= m < len(maps) for i, m in rel):
                raise ValueError("relocation out of range")
            functions.append(Function(str(name), insns, rel))
        return Compiled(maps, tuple(functions), str(obj["license"]), int(obj["kern_version"]))


def map_references(insns: bytes) -> list[tuple[int, int]]:
    """(instruction index, fd) of every map-fd load in `insns`.

    Raises:
        ValueError: a 64-bit load of another pseudo kind (map values, BTF ids, functions): nothing
            utrace's programs use, and nothing this loader knows how to move to new fds.
    """
    out = []
    n = len(insns) // 8
    i = 0
    while i < n:
        op, regs = insns[8 * i], insns[8 * i + 1]
        if op == BPF_LD_IMM64:
            src = regs >> 4
            if src == BPF_PSEUDO_MAP_FD:
                out.append((i, struct.unpack_from("<i", insns, 8 * i + 4)[0]))
            elif src != 0:
                raise ValueError(f"64-bit load of pseudo kind {src} at instruction {i}")
            i += 2
        else:
            i += 1
    return out


def relocate(insns: bytes, relocations: tuple[tuple[int, int], ...], fds: list[int]) -> bytes:
    """`insns` with each map reference pointing at `fds[map index]`."""
    buf = bytearray(insns)
    for i, m in relocations:
        struct.pack_into("<i", buf, 8 * i + 4, fds[m])
    return bytes(buf)


def create_map(spec: MapSpec) -> int:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIIII", attr, 0, spec.type, spec.key_size, spec.value_size, spec.max_entries, spec.flags)
    struct.pack_into("16s", attr, 28, spec.name.encode()[:15])
    try:
        return _bpf(BPF_MAP_CREATE, attr)
    except BpfError as e:
        raise BpfError(e.errno, f"cannot create map {spec.name}: {e.strerror}") from None


def load_program(
    name: str,
    insns: bytes,
    license: str,
    kern_version: int,
    attach_type: int = 0,
    prog_type: int = BPF_PROG_TYPE_KPROBE,
) -> int:
    """Load a kprobe-type program (what uprobes run); BpfError carries the verifier's complaint.

    `attach_type` BPF_TRACE_UPROBE_MULTI makes a program for `attach_uprobe_multi` (and only for it);
    `prog_type` BPF_PROG_TYPE_RAW_TRACEPOINT one for `attach_raw_tracepoint`.
    """
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIQQ", attr, 0, prog_type, len(insns) // 8, ctypes.addressof(code),
                     ctypes.addressof(lic))  # fmt: skip
    struct.pack_into("<I", attr, 40, kern_version)
    struct.pack_into("16s", attr, 48, name.encode()[:15])
    struct.pack_into("<I", attr, 68, attach_type)  # expected_attach_type
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except BpfError as first:
        if first.errno not in (errno.EACCES, errno.EINVAL):  # the verifier's refusals: ask it why
            raise BpfError(first.errno, f"cannot load {name}: {first.strerror}") from None
    log = ctypes.create_string_buffer(1 << 20)
    struct.pack_into("<IIQ", attr, 24, 1, len(log), ctypes.addressof(log))
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except BpfError as e:
        lines = [ln for ln in log.value.decode(errors="replace").splitlines() if ln.strip()]
        why = lines[-2] if len(lines) >= 2 and lines[-1].startswith("processed") else (lines[-1] if lines else "")
        raise BpfError(e.errno, f"the kernel refused {name}: {why or e.strerror}") from None


def possible_cpus() -> int:
    """How many values a per-CPU map holds per key (the kernel's possible CPUs, not the online ones)."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            text = f.read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += (int(hi) if hi else int(lo)) - int(lo) + 1
    return n


class Map:
    """A created map: its fd and how to read it."""

    def __init__(self, spec: MapSpec, fd: int) -> None:
        self.spec = spec
        self.fd = fd
        self.percpu = spec.type in _PERCPU
        self.value_bytes = ((spec.value_size + 7) // 8 * 8) * possible_cpus() if self.percpu else spec.value_size

    def _op(self, cmd: int, key: bytes | None, out: ctypes.Array[ctypes.c_char], flags: int = 0) -> bool:
        kbuf = ctypes.create_string_buffer(key, len(key)) if key is not None else None
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("<IIQQQ", attr, 0, self.fd, 0, ctypes.addressof(kbuf) if kbuf is not None else 0,
                         ctypes.addressof(out), flags)  # fmt: skip
        try:
            _bpf(cmd, attr)
        except BpfError as e:
            if e.errno == errno.ENOENT:  # no such key / no next key
                return False
            raise
        return True

    def lookup(self, key: bytes) -> bytes | None:
        out = ctypes.create_string_buffer(self.value_bytes)
        return out.raw if self._op(BPF_MAP_LOOKUP_ELEM, key, out) else None

    def update(self, key: bytes, value: bytes) -> None:
        self._op(BPF_MAP_UPDATE_ELEM, key, ctypes.create_string_buffer(value, len(value)))

    def insert(self, key: bytes, value: bytes) -> bool:
        """Add `key` if it is absent (BPF_NOEXIST): False when it was there already."""
        try:
            self._op(BPF_MAP_UPDATE_ELEM, key, ctypes.create_string_buffer(value, len(value)), BPF_NOEXIST)
        except BpfError as e:
            if e.errno == errno.EEXIST:
                return False
            raise
        return True

    def delete(self, key: bytes) -> bool:
        """Remove `key`: False when it was not there."""
        return self._op(BPF_MAP_DELETE_ELEM, key, ctypes.create_string_buffer(0))

    def keys(self) -> Iterator[bytes]:
        key: bytes | None = None
        out = ctypes.create_string_buffer(self.spec.key_size)
        while self._op(BPF_MAP_GET_NEXT_KEY, key, out):
            key = out.raw
            yield key

    def sum_u64(self, key: bytes) -> int:
        """A u64 value, summed over CPUs for a per-CPU map; 0 when the key is absent."""
        raw = self.lookup(key)
        if raw is None:
            return 0
        if not self.percpu:
            return int(struct.unpack_from("<Q", raw)[0])
        step = (self.spec.value_size + 7) // 8 * 8
        return sum(struct.unpack_from("<Q", raw, off)[0] for off in range(0, len(raw), step))


@dataclass
class Loaded:
    """Maps and programs of a `Compiled`, in the kernel; `close` releases them.

    Loaded for multi-uprobe links, it also has a `dispatcher`: the one program the links run, which
    tail-calls the program whose index is the hit uprobe's cookie (`programs` are in `prog_array`).
    """

    maps: dict[str, Map] = field(default_factory=dict)
    programs: list[int] = field(default_factory=list)
    dispatcher: int | None = None
    prog_array: int | None = None
    raw_tracepoint: dict[str, int] = field(default_factory=dict)  # function -> program, for raw tracepoints

    def close(self) -> None:
        fds = [*self.programs, *self.raw_tracepoint.values(), self.dispatcher, self.prog_array]
        for fd in [*fds, *(m.fd for m in self.maps.values())]:
            if fd is not None:
                _close(fd)
        self.programs, self.maps, self.dispatcher, self.prog_array = [], {}, None, None
        self.raw_tracepoint = {}


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def load(compiled: Compiled, multi: bool = False, raw_tracepoint: frozenset[str] = frozenset()) -> Loaded:
    """Create the maps and load every function (in `compiled.functions` order); with `multi`, for
    multi-uprobe links, with a dispatcher (see `Loaded`). The functions named in `raw_tracepoint` are
    loaded as raw tracepoint programs, into `Loaded.raw_tracepoint` instead of `programs`.

    Raises:
        BpfError: a map or program the kernel refused (EINVAL for `multi` on a kernel without it).
    """
    loaded = Loaded()
    attach_type = BPF_TRACE_UPROBE_MULTI if multi else 0
    try:
        fds = []
        for spec in compiled.maps:
            fd = create_map(spec)
            loaded.maps[spec.name] = Map(spec, fd)
            fds.append(fd)
        for fn in compiled.functions:
            code = relocate(fn.insns, fn.relocations, fds)
            if fn.name in raw_tracepoint:
                loaded.raw_tracepoint[fn.name] = load_program(
                    fn.name, code, compiled.license, compiled.kern_version, prog_type=BPF_PROG_TYPE_RAW_TRACEPOINT
                )
                continue
            prog = load_program(fn.name, code, compiled.license, compiled.kern_version, attach_type)
            loaded.programs.append(prog)
        if multi:
            n = len(loaded.programs)
            array = MapSpec("utrace_progs", BPF_MAP_TYPE_PROG_ARRAY, 4, 4, max(n, 1), 0)
            loaded.prog_array = create_map(array)
            progs = Map(array, loaded.prog_array)
            for i, prog in enumerate(loaded.programs):
                progs.update(struct.pack("<I", i), struct.pack("<I", prog))
            loaded.dispatcher = load_program(
                "utrace_dispatch", dispatcher(loaded.prog_array), compiled.license, compiled.kern_version, attach_type
            )
    except BaseException:
        loaded.close()
        raise
    return loaded


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


def dispatcher(prog_array_fd: int) -> bytes:
    """The program a multi-uprobe link runs: tail-call program number `bpf_get_attach_cookie()`.

    r6 = ctx; r0 = get_attach_cookie(ctx); tail_call(ctx, prog_array, r0); return 0 (when there is no
    such program, which the links never ask for).
    """
    mov_reg, mov_imm, call, exit_ = 0xBF, 0xB7, 0x85, 0x95  # BPF_ALU64|BPF_MOV|BPF_X, ...|BPF_K, BPF_JMP|...
    return b"".join(
        [
            _insn(mov_reg, dst=6, src=1),
            _insn(call, imm=_FUNC_GET_ATTACH_COOKIE),
            _insn(mov_reg, dst=3, src=0),
            _insn(mov_reg, dst=1, src=6),
            _insn(BPF_LD_IMM64, dst=2, src=BPF_PSEUDO_MAP_FD, imm=prog_array_fd),
            _insn(0),
            _insn(call, imm=_FUNC_TAIL_CALL),
            _insn(mov_imm, dst=0, imm=0),
            _insn(exit_),
        ]
    )


def attach_uprobe_multi(
    prog_fd: int,
    path: str,
    offsets: list[int],
    ref_ctr_offsets: list[int],
    cookies: list[int],
    *,
    pid: int,
    retprobe: bool,
) -> int:
    """Attach `prog_fd` (loaded for BPF_TRACE_UPROBE_MULTI) at every file offset of `path` with one link,
    and return the link's fd. Closing it removes all those uprobes after a single wait for the kernel's
    grace period, where closing one perf event per uprobe waits once for each (~80 ms here).

    Args:
        ref_ctr_offsets: per offset, the file offset of a USDT semaphore to count up, or 0.
        cookies: per offset, what `bpf_get_attach_cookie` returns when it is hit.
        pid: only this process (0: every process that maps the file).

    Raises:
        BpfError: the kernel refused (EINVAL from a kernel without multi-uprobe links, Linux < 6.6).
    """
    n = len(offsets)
    path_buf = ctypes.create_string_buffer(os.fsencode(path))
    offs, refs, cks = ((ctypes.c_uint64 * n)(*values) for values in (offsets, ref_ctr_offsets, cookies))
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIII", attr, 0, prog_fd, 0, BPF_TRACE_UPROBE_MULTI, 0)
    addresses = [ctypes.addressof(b) for b in (path_buf, offs, refs, cks)]
    struct.pack_into("<QQQQIII", attr, 16, *addresses, n, BPF_F_UPROBE_MULTI_RETURN if retprobe else 0, pid)
    return _bpf(BPF_LINK_CREATE, attr)


def attach_raw_tracepoint(name: str, prog_fd: int) -> int:
    """Run `prog_fd` (a raw tracepoint program) on the kernel tracepoint `name` (`sched_process_fork`);
    returns the attachment's fd: closing it detaches, on any exit of this process.

    Raises:
        BpfError: the kernel refused (no such tracepoint, no privilege).
    """
    name_buf = ctypes.create_string_buffer(name.encode())
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<QI", attr, 0, ctypes.addressof(name_buf), prog_fd)
    return _bpf(BPF_RAW_TRACEPOINT_OPEN, attr)


_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value


def _mmap(fd: int, length: int, prot: int, offset: int) -> int:
    addr = _libc.mmap(None, length, prot, mmap.MAP_SHARED, fd, offset)
    if addr is None or addr == _MAP_FAILED:
        err = ctypes.get_errno()
        raise BpfError(err, f"cannot map the ring buffer: {os.strerror(err)}")
    return int(addr)


class RingBuffer:
    """A BPF_MAP_TYPE_RINGBUF map read from user space (see the module docstring).

    The positions are read and written as whole aligned 8-byte words through ctypes: Python's
    `struct` packs little-endian values a byte at a time, and the kernel reading a half-written
    consumer position sees the ring full and drops events (it did, before this was ctypes).
    """

    def __init__(self, m: Map) -> None:
        page = mmap.PAGESIZE
        size = m.spec.max_entries
        self.mask = size - 1
        self._spans: list[tuple[int, int]] = []
        cons = _mmap(m.fd, page, mmap.PROT_READ | mmap.PROT_WRITE, 0)
        self._spans.append((cons, page))
        try:
            prod = _mmap(m.fd, page + 2 * size, mmap.PROT_READ, page)
        except BpfError:
            self.close()
            raise
        self._spans.append((prod, page + 2 * size))
        self.consumer_pos = ctypes.c_uint64.from_address(cons)
        self.producer_pos = ctypes.c_uint64.from_address(prod)
        self.data = prod + page
        self.epoll = select.epoll()
        self.epoll.register(m.fd, select.EPOLLIN)

    def watch(self, fd: int) -> None:
        """Also wake `wait` when `fd` becomes readable (a pidfd: the target exited)."""
        self.epoll.register(fd, select.EPOLLIN)

    def wait(self, timeout_s: float) -> None:
        self.epoll.poll(timeout_s)

    def consume(self, callback: Callable[[bytes], None], limit: int | None = None, until: float | None = None) -> int:
        """Hand complete records to `callback`, oldest first; return how many.

        Stops when the ring is empty, after `limit` records, or once `time.monotonic()` passes
        `until` (checked every 64 records): a reader slower than the producer must still come back
        to check its stop conditions. What it leaves stays in the ring, whose back-pressure makes the
        kernel count what it cannot reserve as lost.
        """
        u32_at = ctypes.c_uint32.from_address
        string_at = ctypes.string_at
        data, mask = self.data, self.mask
        consumer_pos, producer_pos = self.consumer_pos, self.producer_pos
        n = 0
        cons = consumer_pos.value
        while True:
            prod = producer_pos.value
            progressed = False
            while cons < prod:
                if limit is not None and n >= limit:
                    return n
                if until is not None and n and not n & 63 and time.monotonic() >= until:
                    return n
                at = data + (cons & mask)
                length = u32_at(at).value
                if length & _RINGBUF_BUSY:
                    break
                size = length & ~(_RINGBUF_BUSY | _RINGBUF_DISCARD)
                progressed = True
                record = None if length & _RINGBUF_DISCARD else string_at(at + _RINGBUF_HDR, size)
                cons += (size + _RINGBUF_HDR + 7) & ~7
                consumer_pos.value = cons  # one aligned store: the space is the kernel's again
                if record is not None:
                    callback(record)
                    n += 1
            if not progressed:
                return n

    def skip(self) -> tuple[int, bool]:
        """Give every complete record back to the kernel unread; return (how many, whether a record
        still being written was left: its writer has not finished)."""
        header = struct.Struct("<I").unpack_from
        n = 0
        cons = self.consumer_pos.value
        while True:
            span = self.producer_pos.value - cons
            if span <= 0:
                return n, False
            # the data area is mapped twice in a row: `span` (at most the ring's size) is contiguous
            view = memoryview((ctypes.c_char * span).from_address(self.data + (cons & self.mask))).cast("B")
            off, busy = 0, False
            while off < span:
                length = header(view, off)[0]
                if length & _RINGBUF_BUSY:
                    busy = True
                    break
                if not length & _RINGBUF_DISCARD:
                    n += 1
                off += ((length & ~(_RINGBUF_BUSY | _RINGBUF_DISCARD)) + _RINGBUF_HDR + 7) & ~7
            view.release()
            cons += off
            self.consumer_pos.value = cons
            if busy:
                return n, True

    def close(self) -> None:
        if hasattr(self, "epoll"):
            self.epoll.close()
        for addr, length in self._spans:
            _libc.munmap(addr, length)
        self._spans = []
