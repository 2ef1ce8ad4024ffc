"""Which traced JavaScript functions a running node has optimised: read from its heap, at the end of a trace.

In a node traced by `--pid`, a function V8 has compiled with Maglev or TurboFan is called without
entering the builtins the `js:` probes sit on (utrace.runtimes.v8js): its calls are not counted. Which
code a function runs is its JSFunction's `code` (a Code object) and that Code's kind (`Code.flags`),
both described by the binary's own metadata (v8dbg_class_JSFunction__code__*, v8dbg_class_Code__flags__*,
v8dbg_CodeKindFieldMask/Shift) where its V8 has them (node 22); `unreadable` says what a V8 lacks.

The metadata gives the kinds INTERPRETED_FUNCTION and BASELINE only; MAGLEV and TURBOFAN follow
BASELINE in V8's CodeKind enum, which V8 pins with static_asserts (src/objects/code-kind.h:
INTERPRETED_FUNCTION + 1 == BASELINE, BASELINE + 1 == MAGLEV, MAGLEV + 1 == TURBOFAN; node 22's own
CodeKindToString table lists them so), and a JSFunction's code is optimised exactly when its kind is one
of those two (CodeKindIsOptimizedJSFunction). An optimised Code's instructions must also lie in V8's
JIT memory (anonymous executable mappings), a builtin's in the node binary (where the function holding
them names it: Builtins_InterpreterEntryTrampoline is an interpreted function's code, Builtins_CompileLazy
one not compiled yet): a kind its place contradicts is said, not believed.

A function is found without any event (an optimised one is never seen by the probes): the name's bytes
in the process's anonymous readable memory (at most MAX_BYTES of it, chunked), the one-byte Strings
holding exactly a matching name there, the 8-byte-aligned words pointing at them that are a
SharedFunctionInfo's name_or_scope_info or a ScopeInfo's function-name or inferred-name slot (then the
words pointing at that ScopeInfo from a SharedFunctionInfo), then the words pointing at those
SharedFunctionInfos from a JSFunction's `shared`. Nothing from that snapshot is reported as it was seen:
the garbage collector moves objects, so every JSFunction is read again (its type, its `shared`, its
`code` before and after the Code's kind is read) and every function named afresh by
utrace.process.v8frames (its name as V8's DebugName, the one the probes match, its script and line).
An object that moved during the search is missed, never misnamed: a function not found is said so.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from utrace.model import JS_NAME_MAX
from utrace.process import procfs
from utrace.process.v8frames import MAX_INLINED_LOCALS, V8Frames, _Mem, _Unread
from utrace.v8layout import V8Layout

MAX_BYTES = 512 << 20  # of the process's anonymous memory searched
CHUNK = 4 << 20
SECONDS = 10.0  # the whole search stops after this long
MAX_HITS = 20000  # places of one name's bytes looked at
MAX_REFS = 4096  # words pointing at one object looked at
MIN_LITERAL = 3  # characters of a glob's longest literal run searched for

Pattern = tuple[str, bytes, bytes]  # (probe label, script narrowing or b"", name glob)
Place = Callable[[int], tuple[str, str]]  # an address -> ("jit", "") | ("builtin", name) | ("other", why)


def unreadable(layout: V8Layout) -> str | None:
    """What this node's V8 metadata lacks to say which code a function runs (None: nothing)."""
    missing = []
    if layout.jsfunction_code is None:
        missing.append("JSFunction.code (v8dbg_class_JSFunction__code__*)")
    if layout.code_flags is None:
        missing.append("Code.flags (v8dbg_class_Code__flags__*)")
    if layout.code_type is None:
        missing.append("the Code instance type (v8dbg_type_Code__CODE_TYPE)")
    if missing:
        return "its V8 metadata (v8dbg_*) describes no " + " and no ".join(missing)
    if layout.code_kind_interpreted + 1 != layout.code_kind_baseline:
        return (
            f"its V8 metadata gives CodeKindInterpretedFunction {layout.code_kind_interpreted} and CodeKindBaseline "
            f"{layout.code_kind_baseline}, not consecutive as V8's CodeKind enum has them"
        )
    return None


def literal(glob: bytes) -> bytes:
    """The longest run of a glob without `*` (the bytes searched for)."""
    return max(glob.split(b"*"), key=len)


def _matcher(glob: bytes) -> re.Pattern[bytes]:
    return re.compile(b".*".join(re.escape(p) for p in glob.split(b"*")), re.S)


def script_matches(script: bytes, name: str | None) -> bool:
    """Whether a function's script name is `script` or ends with `/` + `script` (as the probes narrow)."""
    if not script:
        return True
    if name is None:
        return False
    s = script.decode("latin-1")
    return name == s or name.endswith("/" + s)


class _Stop(Exception):
    """The search ran out of time."""


@dataclass(slots=True)
class _Search:
    """What the heap search met that limits what it can say."""

    searched: int = 0  # bytes
    total: int = 0  # bytes of anonymous readable memory
    unread: int = 0  # bytes that could not be read
    capped: set[bytes] = field(default_factory=set)  # needles with more hits than were looked at


@dataclass(frozen=True, slots=True)
class Closure:
    """One JSFunction of a traced function, as read at the end: `tier` is "TurboFan" or "Maglev" when it
    runs optimised code, else what it runs ("interpreted", "Sparkplug code", ...); `why` when not read."""

    optimised: bool
    tier: str
    why: str = ""


class Tiers:
    """Finds the JSFunctions of traced names in one process's heap and reads which code each runs.

    `mem` reads small ranges (utrace.process.v8frames._Mem: at most 4096 bytes, raising _Unread),
    `bulk(address, n)` large ones for the search (b"" when not readable), `regions` are the (start, end)
    ranges searched, `place` says where an address of code lies, `frames` names functions."""

    def __init__(
        self,
        layout: V8Layout,
        pid: int,
        mem: _Mem,
        bulk: Callable[[int, int], bytes],
        regions: Sequence[tuple[int, int]],
        place: Place,
        frames: V8Frames,
        seconds: float = SECONDS,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.L = layout
        self.pid = pid
        self.mem = mem
        self.bulk = bulk
        self.place = place
        self.frames = frames
        self.deadline = time.monotonic() + seconds
        self.search = _Search(total=sum(e - s for s, e in regions))
        self.regions: list[tuple[int, int]] = []
        left = max_bytes
        for s, e in regions:
            if left <= 0:
                break
            self.regions.append((s, min(e, s + left)))
            left -= min(e, s + left) - s
        self.search.searched = sum(e - s for s, e in self.regions)
        self._types: dict[int, int] = {}

    # --- reading objects -------------------------------------------------------------------------

    def _heap(self, v: int) -> bool:
        return v != 0 and (v & self.L.heap_object_tag_mask) == self.L.heap_object_tag

    def _type(self, obj: int, fresh: bool = False) -> int:
        """The instance type of the object at tagged `obj` (-1 when it is not one or not readable); its
        map's type is remembered during the search, read again when `fresh`."""
        L = self.L
        if not self._heap(obj):
            return -1
        try:
            m = self.mem.word(obj + L.map)
            if not self._heap(m):
                return -1
            t = None if fresh else self._types.get(m)
            if t is None:
                t = int.from_bytes(self.mem.read(m + L.instance_type, 2), "little")
                if len(self._types) < 1 << 16:
                    self._types[m] = t
            return t
        except _Unread:
            return -1

    def _tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Stop

    def _is_function(self, t: int) -> bool:
        L = self.L
        if L.first_js_function_type is not None and L.last_js_function_type is not None:
            return L.first_js_function_type <= t <= L.last_js_function_type
        return t == L.js_function_type

    # --- the search ------------------------------------------------------------------------------

    def _scan(self, needles: set[bytes], aligned: bool, cap: int) -> dict[bytes, list[int]]:
        """The addresses of each needle in the searched regions (8-byte aligned ones only when `aligned`)."""
        hits: dict[bytes, list[int]] = {n: [] for n in needles}
        if not needles:
            return hits
        over = max(len(n) for n in needles) - 1
        # a pointer's high bytes are zeros, as are most of a heap's: searched for, they make every zero
        # byte a near-match (bytes.find ~10x slower); its low bytes are searched, the whole then compared
        keys = {n: n[: max(4, len(n.rstrip(b"\0")))] if aligned else n for n in needles}
        for start, end in self.regions:
            at = start
            while at < end:
                if time.monotonic() > self.deadline:
                    raise _Stop
                n = min(CHUNK, end - at)
                data = self.bulk(at, n + min(over, end - at - n))
                if len(data) < n:
                    self.search.unread += n
                    at += n
                    continue
                for needle, key in keys.items():
                    got = hits[needle]
                    i = data.find(key)
                    while 0 <= i < n:
                        if (not aligned or (at + i) % 8 == 0) and data.startswith(needle, i):
                            if len(got) >= cap:
                                self.search.capped.add(needle)
                                break
                            got.append(at + i)
                        i = data.find(key, i + 1)
                at += n
        return hits

    def _strings(self, glob: bytes, hits: list[int]) -> set[int]:
        """The one-byte sequential Strings (tagged pointers) whose whole text matches `glob`, among
        those whose characters hold one of `hits` (addresses of the glob's literal run)."""
        L = self.L
        lit = literal(glob)
        exact = b"*" not in glob
        match = _matcher(glob)
        tag_mod = (L.heap_object_tag + L.seq_one_byte_chars) % 8  # where characters start, modulo 8
        out: set[int] = set()
        for h in hits:
            if exact:
                starts = [h] if h % 8 == tag_mod else []
            else:
                first = h - (JS_NAME_MAX - len(lit))
                first += (tag_mod - first) % 8
                starts = list(range(first, h + 1, 8))
            self._tick()
            for c in starts:
                s = c - L.seq_one_byte_chars
                t = self._type(s)
                if t < 0 or t >= L.first_nonstring_type:
                    continue
                if (t & L.string_repr_mask) != L.seq_tag or (t & L.string_encoding_mask) != L.one_byte_tag:
                    continue
                try:
                    n = int.from_bytes(self.mem.read(s + L.string_length, 4), "little")
                    if not (c + n >= h + len(lit) and 0 < n <= JS_NAME_MAX):
                        continue
                    text = self.mem.read(c, n)
                except _Unread:
                    continue
                if match.fullmatch(text):
                    out.add(s)
        return out

    def _scope_infos(self, ref: int) -> set[int]:
        """The ScopeInfos whose function-name or inferred-name slot is the word at `ref` (the slots'
        place depends on the context-local count, checked against the candidate's own)."""
        L = self.L
        out = set()
        for n in range(MAX_INLINED_LOCALS):
            for k in (0, 16):
                si = ref - (L.map + 8 + 8 * L.scopeinfo_first_vars + 16 * n + k)
                if self._type(si) != L.scope_info_type:
                    continue
                try:
                    count = self.mem.word(si + L.map + 8 + 8 * L.scopeinfo_ncontextlocals)
                except _Unread:
                    continue
                if not count & L.smi_tag_mask and count >> L.smi_shift == n:
                    out.add(si)
        return out

    def find(self, patterns: Sequence[Pattern]) -> dict[str, dict[int, list[int]]]:
        """For each pattern's label: its SharedFunctionInfos found (tagged) -> their JSFunctions found.

        Raises:
            _Stop: out of time.
        """
        L = self.L
        lits = {literal(g) for _label, _script, g in patterns}
        at = self._scan(lits, aligned=False, cap=MAX_HITS)
        strings: dict[bytes, set[int]] = {}  # glob -> its Strings
        for _label, _script, g in patterns:
            if g not in strings:
                strings[g] = self._strings(g, at[literal(g)])
        every = set().union(*strings.values()) if strings else set()
        refs = self._scan({s.to_bytes(8, "little") for s in every}, aligned=True, cap=MAX_REFS)
        sfis_of: dict[int, set[int]] = {s: set() for s in every}  # a String -> SFIs naming it
        scope_of: dict[int, set[int]] = {}  # a ScopeInfo -> the Strings it names
        for s in every:
            for r in refs[s.to_bytes(8, "little")]:
                self._tick()
                cand = r - L.sfi_name_or_scope_info
                if self._type(cand) == L.sfi_type:
                    sfis_of[s].add(cand)
                for si in self._scope_infos(r):
                    scope_of.setdefault(si, set()).add(s)
        if scope_of:
            refs = self._scan({si.to_bytes(8, "little") for si in scope_of}, aligned=True, cap=MAX_REFS)
            for si, names in scope_of.items():
                for r in refs[si.to_bytes(8, "little")]:
                    cand = r - L.sfi_name_or_scope_info
                    if self._type(cand) == L.sfi_type:
                        for s in names:
                            sfis_of[s].add(cand)
        all_sfis = set().union(*sfis_of.values()) if sfis_of else set()
        refs = self._scan({x.to_bytes(8, "little") for x in all_sfis}, aligned=True, cap=MAX_REFS)
        functions: dict[int, list[int]] = {}
        for x in all_sfis:
            held = {r - L.jsfunction_shared for r in refs[x.to_bytes(8, "little")]}
            functions[x] = sorted(j for j in held if self._is_function(self._type(j)))
        out: dict[str, dict[int, list[int]]] = {}
        for label, _script, g in patterns:
            mine = out.setdefault(label, {})
            for s in strings[g]:
                for x in sfis_of[s]:
                    mine[x] = functions[x]
        return out

    # --- which code a function runs --------------------------------------------------------------

    def closure(self, jsf: int, sfi: int) -> Closure:
        """Which code the JSFunction at `jsf` (of the SFI `sfi`) runs, read now."""
        L = self.L
        assert L.jsfunction_code is not None and L.code_flags is not None
        if not self._is_function(self._type(jsf, fresh=True)):
            return Closure(False, "", "no longer a JSFunction (moved by the GC)")
        try:
            if self.mem.word(jsf + L.jsfunction_shared) != sfi:
                return Closure(False, "", "no longer this function's (moved by the GC)")
            code = self.mem.word(jsf + L.jsfunction_code)
            t = self._type(code, fresh=True)
            if t != L.code_type:
                return Closure(False, "", f"its code slot holds no Code (V8 instance type {t})")
            flags = int.from_bytes(self.mem.read(code + L.code_flags, 4), "little")
            start = None
            if L.code_instruction_start is not None:
                start = self.mem.word(code + L.code_instruction_start)
            if self.mem.word(jsf + L.jsfunction_code) != code or self.mem.word(jsf + L.jsfunction_shared) != sfi:
                return Closure(False, "", "its code changed while it was read")
        except _Unread as e:
            return Closure(False, "", str(e))
        kind = (flags & L.code_kind_mask) >> L.code_kind_shift
        where = self.place(start) if start is not None else None
        optimised = {L.code_kind_baseline + 1: "Maglev", L.code_kind_baseline + 2: "TurboFan"}
        if kind in optimised:
            if where is not None and where[0] != "jit":
                at = where[1] or "outside V8's JIT memory"
                return Closure(False, "", f"its Code's kind is {optimised[kind]}'s but its instructions are in {at}")
            return Closure(True, optimised[kind])
        if kind == L.code_kind_baseline:
            return Closure(False, "Sparkplug code")
        if kind == L.code_kind_interpreted:
            return Closure(False, "interpreted")
        if where is not None and where[0] == "builtin":
            # what the JSFunction's code slot holds: the trampoline may still hand a call on to baseline
            # or optimised code kept elsewhere (its SharedFunctionInfo, its feedback vector); that call
            # enters the trampoline, where the probes see it
            builtin = where[1]
            if builtin == "Builtins_InterpreterEntryTrampoline":
                return Closure(False, f"its code is the interpreter's entry, {builtin}")
            if builtin == "Builtins_CompileLazy":
                return Closure(False, f"not compiled yet: its code is {builtin}")
            return Closure(False, f"its code is the builtin {builtin}")
        return Closure(False, f"code of kind {kind}, not an optimising tier's")


def lines(tiers: Tiers, patterns: Sequence[Pattern]) -> list[str]:
    """What to say about each pattern's functions (see the module doc)."""
    search = tiers.search
    try:
        found = tiers.find(patterns)
    except _Stop:
        return [
            f"which traced JavaScript functions are optimised was not read: the search of the node's heap "
            f"took longer than {SECONDS:.0f} s"
        ]
    out = []
    for label, script, g in patterns:
        described: list[str] = []
        for sfi, jsfs in sorted(found.get(label, {}).items()):
            named = tiers.frames.function(tiers.pid, sfi)
            if isinstance(named, str):
                continue  # no longer a function (moved), or not readable: not this name's as far as known
            name, script_name, line = named
            if not _matcher(g).fullmatch(name.encode("latin-1", "replace")) or not script_matches(script, script_name):
                continue
            at = f":{line}" if line is not None else ""
            who = name or "(anonymous)"
            if script_name:
                who += f" ({script_name.rsplit('/', 1)[-1]}{at})"
            closures = [tiers.closure(j, sfi) for j in jsfs]
            read = [c for c in closures if not c.why]
            if not closures:
                described.append(
                    f"{label}: {who}: no closure of it (JSFunction) was found in the heap (none may exist, or the GC "
                    "moved it meanwhile), so whether it runs optimised code is not said"
                )
                continue
            if not read:
                described.append(f"{label}: {who}: which code it runs was not read ({closures[0].why})")
                continue
            opt = sorted({c.tier for c in read if c.optimised})
            other = sorted({c.tier for c in read if not c.optimised})
            of = f" in {sum(c.optimised for c in read)} of its {len(read)} closures" if len(read) > 1 else ""
            if opt:
                text = (
                    f"{label}: {who} runs V8's optimised code ({', '.join(opt)}){of} as the trace ends: calls of "
                    "optimised code do not enter the builtins utrace probes, so its count is a lower bound"
                )
                if other:
                    text += f" (its other closures: {', '.join(other)})"
            else:
                text = (
                    f"{label}: {who} is not optimised as the trace ends ({', '.join(other)}): its calls are seen "
                    "unless an optimised caller inlined it"
                )
            unread = len(closures) - len(read)
            if unread:
                text += f"; {unread} closure(s) not read"
            described.append(text)
        if described:
            out += described
        else:
            out.append(f"{label}: {_not_found(search, literal(g))}")
    if search.searched < search.total:
        out.append(
            f"the node's anonymous memory is {_mb(search.total)}: only {_mb(search.searched)} of it were searched for "
            "the traced functions"
        )
    return out


def _not_found(search: _Search, lit: bytes) -> str:
    why = []
    if lit in search.capped:
        why.append(f"its name's bytes occur more than {MAX_HITS} times: not every place was looked at")
    if search.unread:
        why.append(f"{_mb(search.unread)} of it could not be read")
    more = f" ({'; '.join(why)})" if why else ""
    return (
        "no function of that name was found in the node's heap as the trace ended, so whether it is optimised "
        "is not said (a name not stored as a flat one-byte string, or an object the GC moved meanwhile, is "
        f"missed){more}"
    )


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB"


def too_general(glob: bytes) -> bool:
    return len(literal(glob)) < MIN_LITERAL


# --- the live process ------------------------------------------------------------------------------


class _Bulk:
    """Large bounded reads of a process's memory (the search); b"" when not readable."""

    def __init__(self, pid: int) -> None:
        self.fd = os.open(f"/proc/{int(pid)}/mem", os.O_RDONLY | os.O_CLOEXEC)

    def read(self, address: int, n: int) -> bytes:
        try:
            return os.pread(self.fd, n, address)
        except OSError:
            return b""

    def close(self) -> None:
        os.close(self.fd)


def _places(maps: list[procfs.MapEntry], node_display: str, names: Callable[[int], str | None]) -> Place:
    """Where an address of code lies: V8's JIT memory (anonymous executable), a function of the node
    binary (any executable mapping of it: V8 may map its builtins a second time, near its code space),
    or elsewhere. `names` turns a file offset of the node binary into the function holding it."""
    node = [m for m in maps if m.path == node_display and "x" in m.perms]
    jit = [m for m in maps if m.path == "" and "x" in m.perms]

    def place(address: int) -> tuple[str, str]:
        for m in node:
            if m.start <= address < m.end:
                name = names(address - m.start + m.offset)
                return ("builtin", name) if name else ("other", "the node binary, in no function it names")
        if any(m.start <= address < m.end for m in jit):
            return ("jit", "")
        return ("other", "memory that is neither V8's JIT memory nor the node binary")

    return place


def read_tiers(
    pid: int,
    layout: V8Layout,
    patterns: Sequence[Pattern],
    frames: V8Frames,
    node_display: str,
    names: Callable[[int], str | None],
) -> list[str]:
    """What to say about the traced functions' tiers in the running process `pid` (see the module doc)."""
    out = []
    searched = []
    for p in patterns:
        if too_general(p[2]):
            out.append(
                f"{p[0]}: the pattern has no run of {MIN_LITERAL} characters without '*' to look its functions up "
                "in the heap by: whether they are optimised is not said"
            )
        else:
            searched.append(p)
    if not searched:
        return out
    try:
        maps = procfs.parse_maps(procfs.read_text(f"/proc/{int(pid)}/maps", procfs.MAX_MAPS_BYTES))
        bulk = _Bulk(pid)
    except OSError as e:
        return [
            *out,
            f"which traced JavaScript functions are optimised was not read: the process's memory cannot be read "
            f"({e.strerror or e}: it may have exited)",
        ]
    mem = _Mem(pid)
    try:
        regions = [(m.start, m.end) for m in maps if m.path == "" and m.perms[0] == "r" and "x" not in m.perms]
        tiers = Tiers(layout, pid, mem, bulk.read, regions, _places(maps, node_display, names), frames)
        return out + lines(tiers, searched)
    finally:
        bulk.close()
        mem.close()


__all__ = ["Closure", "Tiers", "lines", "literal", "read_tiers", "script_matches", "unreadable"]
