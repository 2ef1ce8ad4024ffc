"""User stack addresses -> functions: ELF symbols (demangled C++), Go's pclntab, JIT perf maps.

An address is looked up in the process's `/proc/PID/maps`: in a file mapping it becomes a file offset,
then an address in the ELF file's own terms, then the function holding it, from the same symbol index
`utrace list` uses (a stripped Go binary's functions come from its pclntab). An address in anonymous
executable memory is JIT code: it is looked up in `/tmp/perf-NSPID.map` under the process's root
(`/proc/PID/root`, with the pid the process sees itself as), re-read when the file has grown.

Return addresses (every frame but the innermost) are looked up one byte back, at the call, so a call
that ends a function (to a function that does not return) is not shown as the next function.

In a node target, frames that carry V8's frame slots and are JavaScript frames are named from V8's heap
(utrace.process.v8frames), without a perf map.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from utrace.errors import ElfError
from utrace.model import Frame, RawStack
from utrace.process import procfs
from utrace.process.perfmap import PerfMap
from utrace.process.target import namespace_pid
from utrace.process.v8frames import V8Frames
from utrace.process.v8heap import SourceLines
from utrace.v8layout import V8Layout

PERF_MAP_MODULE = "[perf-map]"
_RELOAD_S = 0.1  # re-read a process's maps at most this often when an address is not in them
_RELOAD_UNMAPPED_S = 0.005  # ... and when an address is in none of its mappings
_WATCH_S = 1.0  # how often `watch` re-reads the maps of a process that resolves fine
_PERF_MAP_RETRY_S = 0.02  # look for a perf map that was not there (the runtime writes it once started)
_CACHE_MAX = 1 << 20


@dataclass(slots=True)
class _Mapping:
    start: int
    end: int
    offset: int
    name: str  # as the process names it: a path, "[vdso]", or "" for anonymous memory
    key: tuple[int, int] | None  # (dev, inode) of the file through /proc/PID/root, when readable
    host: str  # the file's path from here
    mapped: str = ""  # /proc/PID/map_files/START-END: the mapped file itself, whatever its path names now


@dataclass(slots=True)
class _Process:
    pid: int
    mappings: list[_Mapping] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    loaded: float = -1.0
    perf_map: PerfMap | None = None
    perf_map_checked: float = -1.0
    uids: frozenset[int] | None = None  # the process's uids, once read: who may own its perf map
    # modules placed without the maps (see Symbolizer.learn): path -> (table, load bias, name to show)
    placed: dict[str, tuple[_Table, int, str] | None] = field(default_factory=dict)


class _Table:
    """A module's function symbols in address order, for lookups."""

    def __init__(self, names: list[str], addresses: list[int], sizes: list[int], segments: list[tuple[int, int, int]]):
        order = sorted(range(len(addresses)), key=addresses.__getitem__)
        self.addresses = [addresses[i] for i in order]
        self.ends = [addresses[i] + max(sizes[i], 1) for i in order]
        self.names = [names[i] for i in order]
        self.segments = segments

    def holds(self, vaddr: int) -> bool:
        return any(v <= vaddr < v + filesz for v, _offset, filesz in self.segments)

    def vaddr(self, file_offset: int) -> int | None:
        for vaddr, offset, filesz in self.segments:
            if offset <= file_offset < offset + filesz:
                return vaddr + file_offset - offset
        return None

    def function(self, vaddr: int) -> tuple[str, int] | None:
        k = bisect.bisect_right(self.addresses, vaddr) - 1
        # nested or overlapping symbols (aliases, local labels): the closest start that holds it
        for j in range(k, max(k - 16, -1), -1):
            if vaddr < self.ends[j]:
                return self.names[j], self.addresses[j]
        return None


class Symbolizer:
    """Resolves stacks of any number of processes; caches maps, symbol tables and answers.

    A process can be gone before its maps were read (a short program, events read a few milliseconds
    late). Its frames still resolve where utrace knows where a module was loaded without the maps:
    `exe` (path, name to show) is the traced executable, whose addresses are its own when it is not
    position-independent (Go's default, `-no-pie` C); and `learn` is told, with every event, the address
    at which the probe fired, which places the probed module (PIE executables, libraries). `launched` is
    a pid utrace started itself, in its own mount namespace: its perf map is at /tmp/perf-PID.map even
    when /proc/PID is gone.
    """

    def __init__(
        self,
        exe: tuple[str, str] | None = None,
        launched: int | None = None,
        v8: V8Layout | None = None,
        lines: SourceLines | None = None,
    ) -> None:
        self._procs: dict[int, _Process] = {}
        self._v8 = V8Frames(v8, lines) if v8 is not None else None
        self._tables: dict[tuple[int, int], _Table | None] = {}
        self._by_path: dict[str, _Table | None] = {}
        self._answers: dict[tuple[int, int, bool], Frame] = {}
        self._exe = exe
        self._launched = launched
        self._fixed: _Table | bool | None = False  # False: not looked at yet
        # called before each slow step (a symbol table or the maps read): the session reads the ring
        # ahead then, so that the frames of events that came meanwhile are read while their process lives
        self.before_slow: Callable[[], None] | None = None

    def preload(self, path: str) -> None:
        """Read the function table of the file at `path` now (a large node takes a few tenths of a
        second), keyed by its identity as the maps will give it: a node's JavaScript frames are named
        from its memory, which must be read before it exits, and the first stack would otherwise wait
        for this."""
        try:
            st = os.stat(path)
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key not in self._tables:
            self._tables[key] = _read_table(path, key)

    def _table_at(self, path: str) -> _Table | None:
        """The function table of the file at `path`, read once per file (by its identity: `preload`,
        `learn`, the fixed executable and the maps share it) or once per path when it cannot be stat'ed."""
        try:
            st = os.stat(path)
        except OSError:
            if path not in self._by_path:
                self._slow()
                self._by_path[path] = _read_table(path)
            return self._by_path[path]
        key = (st.st_dev, st.st_ino)
        if key not in self._tables:
            self._slow()
            self._tables[key] = _read_table(path, key)
        return self._tables[key]

    def learn(self, pid: int, path: str, display: str, file_offset: int, address: int) -> None:
        """The instruction at `file_offset` of the file `path` ran at `address` in `pid` (a probe fired)."""
        proc = self._process(pid)
        if path in proc.placed:
            return
        table = self._table_at(path)
        vaddr = table.vaddr(file_offset) if table is not None else None
        proc.placed[path] = (table, address - vaddr, display) if table is not None and vaddr is not None else None

    def watch(self, pid: int) -> None:
        """Read a traced process's maps early (then again once a second) and open its perf map once there
        is one, so that what it maps and names is known even if it exits before its events are read.
        (An address that is not in the maps read so far re-reads them anyway, see `_resolve`.)"""
        proc = self._procs.get(pid)
        if proc is None or time.monotonic() - proc.loaded >= _WATCH_S:
            self._process(pid, reload=True)

    def prefetch(self, raw: RawStack) -> None:
        """Read from the process now what symbolising this stack needs while it lives: its maps, when an
        address is in none of the mappings known and they were read before the event (a library loaded
        since, or they were never read; at most every _RELOAD_UNMAPPED_S, as when symbolising: frameless
        code leaves addresses no mapping holds, which would otherwise re-read them per event), and the
        names of its JavaScript frames (see V8Frames.prefetch). Called as soon as a record is taken off
        the ring (utrace.app.readahead), as a short program may exit a few milliseconds after its event."""
        pid = raw.pid
        proc = self._procs.get(pid)
        if proc is None:
            self._process(pid)  # its maps, read now
        elif proc.loaded * 1e9 < raw.ts_ns and any(_mapping_at(proc, a) is None for a in raw.addresses):
            self._process(pid, reload=True, every=_RELOAD_UNMAPPED_S)
        v8 = self._v8
        if v8 is not None:
            for sl in raw.slots:
                v8.prefetch(pid, sl)

    def stack(self, pid: int, frames: tuple[Frame, ...], *, after_return: bool = False) -> tuple[Frame, ...]:
        """The frames of a raw stack of `pid` with functions and modules filled in.

        `after_return`: the innermost frame is a return address too (a uretprobe fires there).
        """
        v8 = self._v8
        out = tuple(self.frame(pid, f.address, returning=i > 0 or after_return) for i, f in enumerate(frames))
        if v8 is None:
            return out
        # a node's frames carry V8's frame slots: its JavaScript frames are named from them
        return tuple(
            v8.frame(pid, r, f.v8_slots) if f.v8_slots is not None else r for r, f in zip(out, frames, strict=True)
        )

    def frame(self, pid: int, address: int, *, returning: bool = False) -> Frame:
        key = (pid, address, returning)
        known = self._answers.get(key)
        if known is not None:
            return known
        found = self._resolve(pid, address, returning)
        if found.module is not None:  # what nothing maps yet (new JIT code) is asked again next time
            if len(self._answers) >= _CACHE_MAX:
                self._answers.clear()
            self._answers[key] = found
        return found

    def _process(self, pid: int, reload: bool = False, every: float = _RELOAD_S) -> _Process:
        proc = self._procs.get(pid)
        if proc is None:
            proc = self._procs[pid] = _Process(pid)
            reload = True
        if reload and (proc.loaded < 0 or time.monotonic() - proc.loaded >= every):
            self._slow()
            _load_maps(proc)
            _perf_map(proc, self._launched)  # opened while the process lives: readable after it exits
        return proc

    def _resolve(self, pid: int, address: int, returning: bool) -> Frame:
        proc = self._process(pid)
        m = _mapping_at(proc, address)
        if m is None or (not m.name and not _perf_map_has(proc, address)):
            # a library loaded, or JIT code, since the last read; an address in no mapping at all (V8
            # remapping its builtins early on, say) is worth a read sooner than anonymous code is
            proc = self._process(pid, reload=True, every=_RELOAD_S if m is not None else _RELOAD_UNMAPPED_S)
            m = _mapping_at(proc, address)
        look = address - 1 if returning else address
        if m is None and not proc.mappings:
            for placed in proc.placed.values():
                if placed is not None and placed[0].holds(look - placed[1]):
                    hit = placed[0].function(look - placed[1])
                    if hit is not None:
                        return Frame(address, hit[0], address - placed[1] - hit[1], placed[2])
            fixed = self._fixed_exe() if self._exe is not None else None
            hit = fixed.function(look) if fixed is not None and fixed.holds(look) else None
            if hit is not None and self._exe is not None:
                return Frame(address, hit[0], address - hit[1], self._exe[1])
        if m is not None and m.key is not None:
            table = self._table(m)
            if table is not None:
                vaddr = table.vaddr(look - m.start + m.offset)
                if vaddr is not None:
                    hit = table.function(vaddr)
                    if hit is not None:
                        return Frame(address, hit[0], vaddr + (address - look) - hit[1], m.name)
        # anonymous executable memory, or a file that is not ELF (JIT code double-mapped from a memfd)
        jit = _perf_map(proc, self._launched)
        if jit is not None:
            hit = jit.lookup(look)
            if hit is None and jit.refresh():
                hit = jit.lookup(look)
            if hit is not None:
                return Frame(address, hit[0], address - hit[1], PERF_MAP_MODULE)
        return Frame(address, None, 0, m.name if m is not None and m.name else None)

    def _slow(self) -> None:
        if self.before_slow is not None:
            self.before_slow()

    def _table(self, m: _Mapping) -> _Table | None:
        assert m.key is not None
        if m.key not in self._tables:
            self._slow()
            # only from the file the maps name (device and inode checked on what was opened): the path
            # is the process's to change, e.g. into a symlink to a file it may not read itself
            table = _read_table(m.host, m.key)
            if table is None and m.mapped:
                # the path names another file now (replaced, or a symlink): the mapping's own link
                table = _read_table(m.mapped, m.key)
            if table is None:
                # the process exited meanwhile (its /proc/PID/root went with it): the same file from here
                table = _read_table(m.name, m.key)
            self._tables[m.key] = table
        return self._tables[m.key]

    def _fixed_exe(self) -> _Table | None:
        if self._fixed is False:
            self._fixed = None
            assert self._exe is not None
            try:
                from utrace.elf.reader import ElfImage

                with ElfImage(self._exe[0]) as image:
                    shared = image.is_shared
                if not shared:
                    self._fixed = self._table_at(self._exe[0])
            except (ElfError, OSError):
                pass
        return self._fixed if isinstance(self._fixed, _Table) else None


def _read_table(path: str, key: tuple[int, int] | None = None) -> _Table | None:
    """The function table of the file at `path`; with `key`, only if that is its (device, inode)."""
    try:
        from utrace.elf.index import function_table

        t = function_table(path, identity=key)
    except (ElfError, OSError):
        return None
    return _Table(t.names, t.addresses, t.sizes, t.segments) if len(t) else None


def _load_maps(proc: _Process) -> None:
    root = f"/proc/{proc.pid}/root"
    begun = time.monotonic()  # what the maps say holds from here on
    try:
        entries = procfs.parse_maps(procfs.read_text(f"/proc/{proc.pid}/maps", procfs.MAX_MAPS_BYTES))
    except OSError:
        proc.loaded = begun
        return
    if proc.uids is None:
        proc.uids = procfs.process_uids(proc.pid)
    mappings: list[_Mapping] = []
    for e in entries:
        if "x" not in e.perms:
            continue
        key = None
        host = mapped = ""
        if e.path.startswith("/"):
            host = root + e.path
            mapped = f"/proc/{proc.pid}/map_files/{e.start:x}-{e.end:x}"
            # the file's identity as the kernel gives it in the maps: no stat that fails once the
            # process is gone (its /proc/PID/root goes with it)
            key = (os.makedev(*e.dev), e.inode) if e.inode else None
        mappings.append(_Mapping(e.start, e.end, e.offset, e.path, key, host, mapped))
    mappings.sort(key=lambda m: m.start)
    proc.mappings = mappings
    proc.starts = [m.start for m in mappings]
    proc.loaded = begun


def _mapping_at(proc: _Process, address: int) -> _Mapping | None:
    k = bisect.bisect_right(proc.starts, address) - 1
    if k >= 0 and address < proc.mappings[k].end:
        return proc.mappings[k]
    return None


def _perf_map(proc: _Process, launched: int | None = None) -> PerfMap | None:
    if proc.perf_map is None:
        now = time.monotonic()
        if now - proc.perf_map_checked < _PERF_MAP_RETRY_S:
            return None
        proc.perf_map_checked = now
        nspid = namespace_pid(proc.pid)
        if proc.uids is None:
            proc.uids = procfs.process_uids(proc.pid)
        # written by the process itself: owned by one of its uids (or root, as perf accepts: a runtime
        # may open its map before it drops privileges), never followed through a symlink
        owners = (proc.uids if proc.uids is not None else frozenset({os.geteuid()})) | {0}
        proc.perf_map = PerfMap.open(f"/proc/{proc.pid}/root/tmp/perf-{nspid}.map", owners)
        if proc.perf_map is None and proc.pid == launched:
            # ours, and gone (or a zombie, whose /proc/PID/root no longer resolves): our /tmp is its /tmp
            proc.perf_map = PerfMap.open(f"/tmp/perf-{proc.pid}.map", owners)
    return proc.perf_map


def _perf_map_has(proc: _Process, address: int) -> bool:
    jit = proc.perf_map
    return jit is not None and jit.lookup(address) is not None
