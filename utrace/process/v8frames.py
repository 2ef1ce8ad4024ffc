"""JavaScript frames of a node stack, named from V8's own frame slots (no --perf-basic-prof needed).

The kernel captures, with each return address of a node target's stack, the slots of the frame whose
code holds it (`utrace.probes.codegen._stack`): the context-or-marker slot, the function slot, the
function's SharedFunctionInfo and the SFI's name_or_scope_info word. A frame is JavaScript (interpreted,
baseline, Maglev or TurboFan) when its address is V8's code (a `Builtins_*` function of the node binary,
or anonymous executable memory: JIT code) and its marker slot is not a Smi (V8's StackFrame::ComputeType:
a typed frame, stub, entry or exit, has a Smi frame-type marker there, a JavaScript frame its context).

The name is read here from /proc/PID/mem, after the event: the SFI must still be a SharedFunctionInfo
holding the word the kernel saw (the key the BPF `jsnot` cache uses: an SFI that moved has another
address, one that took a freed address holds its own name or ScopeInfo), checked again after the name
was read. It is read as `SharedFunctionInfo::DebugName` (what `utrace.probes.v8values.emit_match`
matches): the String there, or the ScopeInfo's function-name slot, else its inferred-name slot. The
line is that of the function's start position, read from its ScopeInfo where
`utrace.v8layout.scopeinfo_position_slot` says (as the `js:` probes read it), in its script's source
(`utrace.process.v8heap.SourceLines`); a line not known is left out (the script alone is shown). Every
read is bounded; whatever cannot be confirmed is said (`Frame.js` holds the reason), never guessed.
Answers are cached by (pid, SFI, word).
"""

from __future__ import annotations

import os
from dataclasses import replace

from utrace.model import Frame
from utrace.process.v8heap import SourceLines
from utrace.v8layout import V8Layout, scopeinfo_position_slot

PERF_MAP_MODULE = "[perf-map]"
NAME_MAX = 256  # bytes of a name or script name shown
_STRING_DEPTH = 8  # cons/thin/sliced strings followed this deep
_FDS_MAX = 16  # /proc/PID/mem files kept open
_CACHE_MAX = 1 << 16
MAX_INLINED_LOCALS = 75  # as utrace.probes.v8values (kScopeInfoMaxInlinedLocalNamesSize)


_Named = tuple[str, str | None, int | None]  # a function's name, its script's name, its line


class _Unread(Exception):
    """A V8 object that could not be read or is not what it must be: the message says which."""


class _Mem:
    """Bounded reads of one process's memory."""

    def __init__(self, pid: int) -> None:
        self.fd: int | None = None
        self.why = ""
        try:
            self.fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            self.why = f"the process's memory cannot be read ({e.strerror or e})"

    def read(self, address: int, n: int) -> bytes:
        if self.fd is None:
            raise _Unread(self.why)
        if not 0 < n <= 4096 or not 0 < address < 1 << 63:
            raise _Unread(f"no object at {address:#x}")
        try:
            data = os.pread(self.fd, n, address)
        except OSError as e:
            why = e.strerror or str(e)
            raise _Unread(f"memory at {address:#x} not readable ({why}): the process may have exited") from None
        if len(data) != n:
            raise _Unread(f"memory at {address:#x} not readable: the process may have exited")
        return data

    def word(self, address: int) -> int:
        return int.from_bytes(self.read(address, 8), "little")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def is_v8_code(frame: Frame) -> bool:
    """Whether a symbolised frame's address is V8's code: a builtin of the node binary, or JIT code
    (anonymous executable memory, or named by a perf map)."""
    if frame.module is None or frame.module == PERF_MAP_MODULE:
        return True
    return frame.function is not None and frame.function.startswith("Builtins_")


class V8Frames:
    """Names the JavaScript frames of one V8 layout's processes."""

    def __init__(self, layout: V8Layout, lines: SourceLines | None = None) -> None:
        self.layout = layout
        self.lines = lines if lines is not None else SourceLines(layout)
        self._mems: dict[int, _Mem] = {}
        self._names: dict[tuple[int, int, int], _Named | str] = {}

    def prefetch(self, pid: int, slots: tuple[int, int, int, int]) -> None:
        """Read the name a frame with these slots would have, before its address is symbolised (which
        can take long the first time): the process may not live much longer than its event."""
        if (slots[0] & self.layout.smi_tag_mask) and self._heap(slots[1]) and self._heap(slots[2]):
            self._lookup(pid, slots[2], slots[3])

    def frame(self, pid: int, resolved: Frame, slots: tuple[int, int, int, int]) -> Frame:
        """`resolved` (symbolised) as a JavaScript frame when it is one, else unchanged."""
        L = self.layout
        marker, function, sfi, word = slots
        if not is_v8_code(resolved) or (marker & L.smi_tag_mask) == 0:
            return resolved  # native code, or a typed frame (its marker is a Smi)
        if not self._heap(function):
            got: _Named | str = f"the function slot holds {function:#x}, not an object"
        elif not self._heap(sfi):
            got = f"the function's SharedFunctionInfo slot held {sfi:#x}"
        else:
            got = self._lookup(pid, sfi, word)
        if isinstance(got, str):
            if resolved.module == PERF_MAP_MODULE and resolved.function:
                return resolved  # named by the process's own perf map (which outlives it)
            return replace(resolved, js=got)
        name, script, line = got
        return replace(resolved, function=name, offset=0, module=script, js="", line=line)

    def _lookup(self, pid: int, sfi: int, word: int) -> _Named | str:
        key = (pid, sfi, word)
        got = self._names.get(key)
        if got is None:
            got = self._read(pid, sfi, word)
            if len(self._names) >= _CACHE_MAX:
                self._names.clear()
            self._names[key] = got
        return got

    def forget(self, pid: int) -> None:
        mem = self._mems.pop(pid, None)
        if mem is not None:
            mem.close()

    def _mem(self, pid: int) -> _Mem:
        mem = self._mems.get(pid)
        if mem is None:
            if len(self._mems) >= _FDS_MAX:
                self.forget(next(iter(self._mems)))
            mem = self._mems[pid] = _Mem(pid)
        return mem

    def _heap(self, v: int) -> bool:
        L = self.layout
        return v != 0 and (v & L.heap_object_tag_mask) == L.heap_object_tag

    def function(self, pid: int, sfi: int) -> _Named | str:
        """(name, script name or None, line or None) of the function whose SharedFunctionInfo is at
        `sfi` now (its name word read afresh, not cached), or why it was not read."""
        if not self._heap(sfi):
            return f"{sfi:#x} is not an object"
        try:
            word = self._mem(pid).word(sfi + self.layout.sfi_name_or_scope_info)
        except _Unread as e:
            return str(e)
        return self._read(pid, sfi, word)

    def _read(self, pid: int, sfi: int, word: int) -> _Named | str:
        """(name, script name or None, line or None), or why the function was not read."""
        mem = self._mem(pid)
        L = self.layout
        try:
            if self._type(mem, sfi) != L.sfi_type:
                raise _Unread("the function's SharedFunctionInfo is no longer one (moved by the GC)")
            if mem.word(sfi + L.sfi_name_or_scope_info) != word:
                raise _Unread("the function's SharedFunctionInfo changed since the event")
            name = self.debug_name(mem, word)
            pos = self.start_position(mem, word)
            script, src, srclen = self._script(mem, sfi)
            if mem.word(sfi + L.sfi_name_or_scope_info) != word:
                raise _Unread("the function's SharedFunctionInfo changed while it was read")
        except _Unread as e:
            return str(e)
        line = None
        if script is not None and pos is not None and src:
            line = self.lines.line(pid, src, srclen, pos)[0]
        return name, script, line

    def _type(self, mem: _Mem, obj: int) -> int:
        L = self.layout
        if not self._heap(obj):
            raise _Unread(f"{obj:#x} is not an object")
        m = mem.word(obj + L.map)
        if not self._heap(m):
            raise _Unread(f"the object at {obj:#x} has no map")
        return int.from_bytes(mem.read(m + L.instance_type, 2), "little")

    def debug_name(self, mem: _Mem, word: int) -> str:
        """SharedFunctionInfo::DebugName from its name_or_scope_info `word` ("" when it has none)."""
        L = self.layout
        if not self._heap(word):
            if word == 0:  # kNoSharedNameSentinel: a function without a name of its own
                return ""
            raise _Unread(f"the name slot holds {word:#x}")
        t = self._type(mem, word)
        if t < L.first_nonstring_type:
            return self.string(mem, word, t)
        if t != L.scope_info_type:
            raise _Unread(f"the name slot holds an object of V8 instance type {t}")
        v = self._variable_part(mem, word)
        raw = mem.read(word + L.map + 8 + 8 * (L.scopeinfo_first_vars + v), 24)
        fname, mid, inferred = (int.from_bytes(raw[i : i + 8], "little") for i in (0, 8, 16))
        if mid & L.smi_tag_mask:
            raise _Unread("the ScopeInfo has no function-name slots")
        if self._heap(fname):
            t = self._type(mem, fname)
            if t >= L.first_nonstring_type:
                raise _Unread(f"the ScopeInfo's function name is of V8 instance type {t}")
            got = self.string(mem, fname, t)
            if got:
                return got
        elif fname != 0:
            raise _Unread("the ScopeInfo's function-name slot is neither a name nor Smi 0")
        if self._heap(inferred):
            t = self._type(mem, inferred)
            if t < L.first_nonstring_type:
                return self.string(mem, inferred, t)
        return ""

    def _variable_part(self, mem: _Mem, scope_info: int) -> int:
        """The slots of the ScopeInfo's context locals (as `utrace.probes.v8values.emit_match` reads
        them): a name and an info each, or, with MAX_INLINED_LOCALS or more, one names table (an object
        that is not a string: a NameToIndexHashTable) and the infos."""
        L = self.layout
        n_word = mem.word(scope_info + L.map + 8 + 8 * L.scopeinfo_ncontextlocals)
        if n_word & L.smi_tag_mask:
            raise _Unread("the ScopeInfo's context-local count is not a Smi")
        n = n_word >> L.smi_shift
        if n < MAX_INLINED_LOCALS:
            return 2 * n
        table = mem.word(scope_info + L.map + 8 + 8 * L.scopeinfo_first_vars)
        if not self._heap(table) or self._type(mem, table) < L.first_nonstring_type:
            raise _Unread(f"{n} context variables, but the ScopeInfo holds no table of their names where expected")
        return n + 1

    def start_position(self, mem: _Mem, word: int) -> int | None:
        """The function's start position (a character offset in its script's source) from the ScopeInfo
        `word` (checked a function's by `debug_name`), where `scopeinfo_position_slot` says; None when
        `word` is no ScopeInfo, this V8's header is not one positions are read from, or the slots do not
        hold two Smis start <= end (as the `js:` probes check them)."""
        L = self.layout
        rule = scopeinfo_position_slot(L)
        if rule is None or not self._heap(word) or self._type(mem, word) != L.scope_info_type:
            return None
        base, per_local = rule
        raw = mem.read(word + L.map + 8 + 8 * (base + (self._variable_part(mem, word) if per_local else 0)), 16)
        start, end = (int.from_bytes(raw[i : i + 8], "little") for i in (0, 8))
        if (start | end) & L.smi_tag_mask or start >= 1 << 63 or start > end:
            return None
        return start >> L.smi_shift

    def string(self, mem: _Mem, s: int, t: int, depth: int = 0, budget: int = NAME_MAX) -> str:
        """The first `budget` bytes' worth of the V8 string `s` of instance type `t`."""
        L = self.layout
        if depth > _STRING_DEPTH:
            raise _Unread("a string nested too deep")
        length = int.from_bytes(mem.read(s + L.string_length, 4), "little")
        if length > 0x3FFFFFFF:
            raise _Unread("a string of implausible length")
        rep = t & L.string_repr_mask
        if rep == L.seq_tag:
            one = (t & L.string_encoding_mask) == L.one_byte_tag
            if one:
                k = min(length, budget)
                return mem.read(s + L.seq_one_byte_chars, k).decode("latin-1") if k else ""
            k = min(length, budget // 2)
            return mem.read(s + L.seq_two_byte_chars, 2 * k).decode("utf-16-le", "replace") if k else ""
        if rep == L.cons_tag:
            first = mem.word(s + L.cons_first)
            second = mem.word(s + L.cons_second)
            a = self.string(mem, first, self._string_type(mem, first), depth + 1, budget)
            if len(a) >= budget:
                return a
            return a + self.string(mem, second, self._string_type(mem, second), depth + 1, budget - len(a))
        if rep == L.thin_tag:
            actual = mem.word(s + L.thin_actual)
            return self.string(mem, actual, self._string_type(mem, actual), depth + 1, budget)
        if rep == L.sliced_tag:
            parent = mem.word(s + L.sliced_parent)
            off = mem.word(s + L.sliced_offset)
            if off & L.smi_tag_mask:
                raise _Unread("a sliced string's offset is not a Smi")
            whole = self.string(mem, parent, self._string_type(mem, parent), depth + 1, NAME_MAX * 4)
            start = off >> L.smi_shift
            return whole[start : start + min(length, budget)]
        raise _Unread(f"a string of a shape not read (V8 instance type {t})")

    def _string_type(self, mem: _Mem, s: int) -> int:
        t = self._type(mem, s)
        if t >= self.layout.first_nonstring_type:
            raise _Unread(f"a string's part is of V8 instance type {t}")
        return t

    def _script(self, mem: _Mem, sfi: int) -> tuple[str | None, int, int]:
        """The name of the SFI's script, when it has one (None: not a Script, or no string name), and
        the address and length of its source String (0, 0 when it has none)."""
        L = self.layout
        if L.script_type is None:
            return None, 0, 0
        script = mem.word(sfi + L.sfi_script)
        if not self._heap(script):
            return None, 0, 0
        try:
            if self._type(mem, script) != L.script_type:
                return None, 0, 0  # DebugInfo, or undefined
            name = mem.word(script + L.script_name)
            if not self._heap(name):
                return None, 0, 0
            t = self._type(mem, name)
            if t >= L.first_nonstring_type:
                return None, 0, 0
            got = self.string(mem, name, t) or None
        except _Unread:
            return None, 0, 0
        return (got, *self._source(mem, script))

    def _source(self, mem: _Mem, script: int) -> tuple[int, int]:
        """The address and length of the Script's source String ((0, 0): none, or not read)."""
        L = self.layout
        if L.script_source is None:
            return 0, 0
        try:
            src = mem.word(script + L.script_source)
            if not self._heap(src) or self._type(mem, src) >= L.first_nonstring_type:
                return 0, 0
            length = int.from_bytes(mem.read(src + L.string_length, 4), "little")
        except _Unread:
            return 0, 0
        return src, length


__all__ = ["V8Frames", "is_v8_code"]
