"""JavaScript in BPF: a V8 function's name matched against globs, and V8 tagged values decoded.

Every offset and type number comes from the binary's `v8dbg_*` constants (`utrace.v8layout.V8Layout`),
written into the C as integers; the globs are written as byte values. Nothing read from the V8 heap is
trusted: each object's type is checked before it is read as that type, each length is bounded, and
a value of a shape not decoded here is sent as such (`OTHER` with its instance type), never guessed.

A function's name (`SharedFunctionInfo::DebugName`, what V8's own filters and coverage use): the SFI's
`name_or_scope_info` is the name String before the function is compiled and a ScopeInfo after. For a
function scope V8 always reserves the function-name slot and the inferred-name slot
(`ScopeInfo::Create`, scope-info.cc), right after the context locals' names and infos, which start at
`v8dbg_scopeinfo_idx_first_vars`: slots first_vars + v (name, or Smi 0 when anonymous), + v + 1
(a Smi) and + v + 2 (inferred name or undefined), v = 2n, n = context_local_count. With 75 or more
context locals (kScopeInfoMaxInlinedLocalNamesSize) the names are one NameToIndexHashTable (scope-info.tq:
context_local_names_hashtable) before the n infos: v = n + 1, once that slot is checked to hold an
object that is not a string. The shape of the three slots is checked; a name that cannot be read is
counted (UNDECIDED) and said at the end.

An object value is shown by what JavaScript names it, read in the kernel (`_object`): an array by its
length, a function by its name, any other object by its constructor's name (from its map).
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import Protocol

from utrace.model import JS_NAME_MAX, JS_SCRIPT_MAX, ArgSpec, JsMatch, Location
from utrace.v8layout import V8Layout, scopeinfo_position_slot

# value kinds in an event's JSVALUE field
K_UNREAD, K_SMI, K_DOUBLE, K_ODDBALL, K_STR1, K_STR2, K_OTHER, K_ABSENT, K_STRSHAPE = range(9)
# objects: an array (value: its length, a Smi), a function and an object by its constructor's name (value:
# instance type | status << 16 | null prototype << 24; length: the name's length; bytes: the name)
K_ARRAY, K_FUNCTION, K_OBJECT = 9, 10, 11
N_OK, N_NOT_READ, N_NO_NAME, N_NO_CONSTRUCTOR = range(4)  # statuses of a name read for K_FUNCTION/K_OBJECT
MAX_BACK_POINTERS = 64  # map transitions followed back to the map that holds the constructor
NOT_PASSED = "<not passed>"
MAX_INLINED_LOCALS = 75  # kScopeInfoMaxInlinedLocalNamesSize (scope-info.h)
MAX_NAME_PARTS = 16  # strings of a function name's cons chain read (see _name_string)
# the C struct member group of a JSVALUE: kind u32, length u32, value u64, bytes
MAPS = (
    "BPF_HASH(jshandoff, u32, u64, 16384);\nBPF_PERCPU_ARRAY(jsundecided, u64, 1);\n"
    "struct jskey { u64 sfi; u64 globs; };\n"
    "struct jsname { u8 s[64]; };\n"
    "BPF_HASH(jsseen, struct jsname, u8, 4096);\n"
    'BPF_TABLE("lru_hash", struct jskey, u64, jsnot, 65536);\n'
    f"struct jsscript {{ u64 len; u64 why; s64 pos; s64 end; u64 src; u64 srclen; u8 s[{JS_SCRIPT_MAX}]; }};\n"
    "BPF_PERCPU_ARRAY(jsscr, struct jsscript, 1);\n"
)
# why a matched call's script name was not read (JsScript.why: the code, V8's instance type << 8)
W_OK, W_NOT_SCRIPT, W_NAME_SHAPE, W_UNSUPPORTED = range(4)
# why its start position is not known (a negative JsScript.pos)
P_NOT_SCOPEINFO, P_NO_POSITION, P_MANY_LOCALS, P_LAYOUT = -1, -2, -3, -4


def globs_id(globs: tuple[bytes, ...], script: bytes = b"") -> int:
    """The number that keys a set of globs (narrowed to `script`) in the `jsnot` cache (the planner
    refuses two sets with one)."""
    return zlib.crc32(b"\0".join(globs) + (b"\0\0" + script if script else b""))


SEEN = "jsseen"  # names of functions seen and not matched (64 bytes, NUL-padded)
UNDECIDED = "jsundecided"  # calls whose function name could not be read (see Plan.counters)
_UNDECIDED = "{ u32 jz = 0; u64 *jc = jsundecided.lookup(&jz); if (jc) *jc += 1; return 0; }"


class Emitter(Protocol):
    def new(self) -> str: ...
    def emit(self, line: str) -> None: ...
    def value(self, loc: Location) -> str: ...


def _i(n: int) -> str:
    if not isinstance(n, int) or isinstance(n, bool):
        raise ValueError(f"not an integer: {n!r}")
    return f"{n}LL" if n < 0 else f"{n}ULL"


def _read(em: Emitter, size: int, addr: str) -> str:
    v = em.new()
    em.emit(f"u64 {v} = 0;")
    em.emit(f"bpf_probe_read_user(&{v}, {size}, (void *)({addr}));")
    return v


def _is_heap(L: V8Layout, v: str) -> str:
    return f"(({v} & {_i(L.heap_object_tag_mask)}) == {_i(L.heap_object_tag)})"


def _type_of(em: Emitter, L: V8Layout, obj: str) -> str:
    """The instance type of a heap object (0xffff when it is not one or cannot be read)."""
    t = em.new()
    em.emit(f"u64 {t} = 0xffff;")
    em.emit(f"if {_is_heap(L, obj)} {{")
    m = _read(em, 8, f"{obj} + {_i(L.map)}")
    em.emit(f"    if ({m} && bpf_probe_read_user(&{t}, 2, (void *)({m} + {_i(L.instance_type)})) < 0) {t} = 0xffff;")
    em.emit("}")
    return t


def _seq_one_byte(L: V8Layout, t: str) -> str:
    return (
        f"({t} < {_i(L.first_nonstring_type)} && ({t} & {_i(L.string_repr_mask)}) == {_i(L.seq_tag)} && "
        f"({t} & {_i(L.string_encoding_mask)}) == {_i(L.one_byte_tag)})"
    )


def _flat_one_byte(em: Emitter, L: V8Layout, s: str, dest: str, cap: int, tail: bool = False) -> tuple[str, str, str]:
    """A bounded read of `s` when it is a flat (sequential) one-byte string: its first (`tail`: last)
    `cap` bytes or fewer into `dest` (a buffer of at least `cap` bytes). Returns the C variables of the
    read's status (0: not such a string, or a length no string has; 1: the bytes could not be read;
    2: read, or none to read), the string's length (when the status is not 0) and its instance type."""
    t = _type_of(em, L, s)
    rd, ln = em.new(), em.new()
    em.emit(f"u64 {rd} = 0, {ln} = 0;")
    em.emit(f"if ({_seq_one_byte(L, t)}) {{")
    em.emit(f"    bpf_probe_read_user(&{ln}, 4, (void *)({s} + {_i(L.string_length)}));")
    em.emit(f"    {ln} = (u32){ln};")
    em.emit(f"    if ({ln} <= 0x3fffffff) {{")
    k = em.new()
    em.emit(f"        u64 {k} = {ln} > {cap} ? {cap} : {ln};")
    at = f"{s} + {_i(L.seq_one_byte_chars)}" + (f" + {ln} - {k}" if tail else "")
    em.emit(f"        {rd} = 2;")
    em.emit(f"        if ({k} > 0 && {k} <= {cap} && bpf_probe_read_user({dest}, {k}, (void *)({at})) < 0) {rd} = 1;")
    em.emit("    }")
    em.emit("}")
    return rd, ln, t


def emit_match(em: Emitter, f: JsMatch) -> None:
    """Statements that return 0 unless the function's name matches; a name not read is a loss."""
    L = f.layout
    if not f.globs or any(not g or len(g) > JS_NAME_MAX for g in f.globs):
        raise ValueError(f"JavaScript name patterns must be 1 to {JS_NAME_MAX} bytes")
    fn = em.value(f.function)
    em.emit(f"if (!{_is_heap(L, fn)}) return 0;")
    sfi = _read(em, 8, f"{fn} + {_i(L.jsfunction_shared)}")
    nsi = _read(em, 8, f"{sfi} + {_i(L.sfi_name_or_scope_info)}")
    # Functions known not to match, by SharedFunctionInfo address: valid while that SFI still holds the
    # same name-or-ScopeInfo pointer (an SFI that moved has another address; one that took a freed
    # address holds its own name or ScopeInfo). Only "no" is cached: a match reads the name for the event.
    em.emit(f"struct jskey jk = {{ .sfi = {sfi}, .globs = {_i(globs_id(f.globs, f.script))} }};")
    em.emit("u64 *jknown = jsnot.lookup(&jk);")
    em.emit(f"if (jknown && *jknown == {nsi}) return 0;")
    t = _type_of(em, L, nsi)
    em.emit("u64 jc1 = 0, jc2 = 0;")  # the name, then the inferred name
    em.emit("int jbad = 0;")
    em.emit(f"s64 jpos = {P_NOT_SCOPEINFO}, jend = 0;")  # the function's start and end positions
    # a Smi there is V8's kNoSharedNameSentinel (0): a function without a name of its own
    em.emit(f"if (!{_is_heap(L, nsi)}) {{ if ({nsi}) jbad = 1; }}")
    em.emit(f"else if ({t} < {_i(L.first_nonstring_type)}) {{ jc1 = {nsi}; }}")
    em.emit(f"else if ({t} == {_i(L.scope_info_type)}) {{")
    n = _read(em, 8, f"{nsi} + {_i(L.map + 8 + 8 * L.scopeinfo_ncontextlocals)}")
    # the variable part's slots: a name and an info per context local, or (MAX_INLINED_LOCALS or more)
    # one names table (a NameToIndexHashTable: an object, never a string) and the infos
    em.emit(f"    u64 jn = {n} >> {L.smi_shift}, jv = 2 * jn;")
    em.emit(f"    if ({n} & {_i(L.smi_tag_mask)}) {{ jbad = 1; jpos = {P_MANY_LOCALS}; }}")
    em.emit(f"    else if (jn >= {MAX_INLINED_LOCALS}) {{")
    table = _read(em, 8, f"{nsi} + {_i(L.map + 8 + 8 * L.scopeinfo_first_vars)}")
    tt = _type_of(em, L, table)
    em.emit(f"        if ({tt} < {_i(L.first_nonstring_type)} || {tt} == 0xffff) {{")
    em.emit(f"            jbad = 1; jpos = {P_MANY_LOCALS};")
    em.emit("        }")
    em.emit("        jv = jn + 1;")
    em.emit("    }")
    em.emit("    if (!jbad) {")
    # after the three name slots, a function scope's position info: start and end (Smis)
    em.emit("        u64 js3[5] = {};")
    em.emit(
        f"        if (bpf_probe_read_user(js3, 40, (void *)({nsi} + {_i(L.map + 8 + 8 * L.scopeinfo_first_vars)}"
        " + 8 * jv)) < 0) jbad = 1;"
    )
    # slot 2 is the inferred name (function scopes) or already a position (Smi): no inferred name
    em.emit(f"        else if (js3[1] & {_i(L.smi_tag_mask)}) jbad = 1;")
    em.emit(
        f"        else {{ if ({_is_heap(L, 'js3[0]')}) jc1 = js3[0]; else if (js3[0]) jbad = 1;"
        f" if ({_is_heap(L, 'js3[2]')}) jc2 = js3[2]; }}"
    )
    _position(em, L, nsi)
    em.emit("    }")
    em.emit("} else { jbad = 1; }")
    em.emit(f"if (jbad) {_UNDECIDED}")
    em.emit("u8 jname[128] = {};")
    em.emit("s64 jlen = 0;")
    _name_string(em, L)
    em.emit("int jok = 0, jund = 0;")
    for g in f.globs:
        _glob(em, g)
    em.emit(f"if (!jok && jund) {_UNDECIDED}")
    # a function seen and not matched: its name is kept (4096 at most) for "closest names seen"
    em.emit("if (!jok) {")
    em.emit(f"    u64 jv = {nsi};")
    em.emit("    jsnot.update(&jk, &jv);")
    em.emit("    if (jlen > 0 && jlen <= 64) { u8 jone = 1; jsseen.update((struct jsname *)jname, &jone); }")
    em.emit("    return 0;")
    em.emit("}")
    if not f.handoff or f.script:
        _script(em, L, sfi, nsi, f.script)
    if f.handoff:
        em.emit("u64 jsp = ctx->sp;")
        em.emit("jshandoff.update(&tid, &jsp);")
        em.emit("return 0;")
        return
    em.emit("u64 *jh = jshandoff.lookup(&tid);")
    em.emit("if (jh) {")
    em.emit("    u64 jhv = *jh;")
    em.emit("    jshandoff.delete(&tid);")
    em.emit(f"    if (jhv == ctx->sp - {_i(f.sp_delta)}) return 0;")  # the same call, entered again
    em.emit("}")


def _position(em: Emitter, L: V8Layout, nsi: str) -> None:
    """`jpos`/`jend`: the function's start and end positions from its ScopeInfo's position info (two
    Smis, start <= end), where `scopeinfo_position_slot` says they are: after the name slots, already
    read into `js3` (from the variable part's end, `jn` context locals), or at a fixed slot."""
    em.emit(f"        jpos = {P_NO_POSITION};")
    rule = scopeinfo_position_slot(L)
    k = rule[0] - L.scopeinfo_first_vars if rule is not None and rule[1] == 2 else -1
    if rule is not None and rule[1] == 2 and 0 <= k <= 3:
        em.emit(f"        u64 jp0 = js3[{k}], jp1 = js3[{k + 1}];")
    elif rule is not None and rule[1] == 0:
        em.emit("        u64 jp[2] = {};")
        at = _i(L.map + 8 + 8 * rule[0])
        em.emit(f"        bpf_probe_read_user(jp, 16, (void *)({nsi} + {at}));")
        em.emit("        u64 jp0 = jp[0], jp1 = jp[1];")
    else:
        em.emit(f"        jpos = {P_LAYOUT};")
        return
    em.emit(
        f"        if (!(jp0 & {_i(L.smi_tag_mask)}) && !(jp1 & {_i(L.smi_tag_mask)}) && "
        f"(s64)jp0 >= 0 && jp0 <= jp1) {{ jpos = (s64)(jp0 >> {L.smi_shift}); jend = (s64)(jp1 >> {L.smi_shift}); }}"
    )


def _script(em: Emitter, L: V8Layout, sfi: str, nsi: str, script: bytes) -> None:
    """The matched function's script into the per-CPU `jsscr`: the tail of its name (a flat one-byte
    String, or a ThinString over one: its last JS_SCRIPT_MAX bytes), the address and length of its
    source, the function's start and end positions; and, when narrowing to `script`, return 0 unless
    the name is `script` or ends with `/` and `script` (a name not read is a loss; a mismatch is cached
    like a name's)."""
    if L.script_type is None or L.script_source is None:
        raise ValueError("this V8 does not say where a function's script is (v8dbg_type_Script__SCRIPT_TYPE)")
    if len(script) >= JS_SCRIPT_MAX:
        raise ValueError(f"a script name to match must be shorter than {JS_SCRIPT_MAX} bytes")
    em.emit("u32 jsz = 0;")
    em.emit("struct jsscript *jsc = jsscr.lookup(&jsz);")
    em.emit("if (!jsc) return 0;")
    em.emit(f"jsc->len = 0; jsc->why = {W_OK}; jsc->pos = jpos; jsc->end = jend; jsc->src = 0; jsc->srclen = 0;")
    scr = _read(em, 8, f"{sfi} + {_i(L.sfi_script)}")
    st = _type_of(em, L, scr)
    em.emit(f"if ({st} != {_i(L.script_type)}) {{ jsc->why = {W_NOT_SCRIPT} | ({st} << 8); }} else {{")
    nm0 = _read(em, 8, f"{scr} + {_i(L.script_name)}")
    nt0 = _type_of(em, L, nm0)
    # a name V8 internalised since is a ThinString: its characters are in the one it points to
    nm = em.new()
    em.emit(f"    u64 {nm} = {nm0};")
    em.emit(
        f"    if ({nt0} < {_i(L.first_nonstring_type)} && ({nt0} & {_i(L.string_repr_mask)}) == {_i(L.thin_tag)}) "
        f"bpf_probe_read_user(&{nm}, 8, (void *)({nm0} + {_i(L.thin_actual)}));"
    )
    rd, ln, nt = _flat_one_byte(em, L, nm, "jsc->s", JS_SCRIPT_MAX, tail=True)
    em.emit(f"    if (!{rd}) jsc->why = {W_NAME_SHAPE} | ({nt} << 8); else jsc->len = {ln};")
    src = _read(em, 8, f"{scr} + {_i(L.script_source)}")
    srt = _type_of(em, L, src)
    em.emit(f"    if ({srt} < {_i(L.first_nonstring_type)}) {{")
    sl = _read(em, 4, f"{src} + {_i(L.string_length)}")
    em.emit(f"        jsc->src = {src}; jsc->srclen = (u32){sl};")
    em.emit("    }")
    em.emit("}")
    if not script:
        return
    n = len(script)
    em.emit("{")
    em.emit(f"    u64 jl = jsc->len, jk3 = jl > {JS_SCRIPT_MAX} ? {JS_SCRIPT_MAX} : jl;")
    em.emit(f"    int jsm = jsc->why == {W_OK} && jl >= {n};")
    for i, b in enumerate(script):
        em.emit(f"    if (jsm && jsc->s[(jk3 - {n - i}) & {JS_SCRIPT_MAX - 1}] != {b}) jsm = 0;")
    em.emit(f"    if (jsm && jl > {n} && jsc->s[(jk3 - {n + 1}) & {JS_SCRIPT_MAX - 1}] != {ord('/')}) jsm = 0;")
    em.emit(f"    if (jsc->why != {W_OK}) {_UNDECIDED}")
    em.emit(f"    if (!jsm) {{ u64 jv2 = {nsi}; jsnot.update(&jk, &jv2); return 0; }}")
    em.emit("}")


def _name_string(em: Emitter, L: V8Layout) -> None:
    """The name into `jname` (its first JS_NAME_MAX bytes) and `jlen` (its length): `jc1` when it is a
    non-empty string, else the inferred name `jc2` when it is a string. Read: a flat one-byte string (or
    a ThinString over one), or a chain of cons strings whose first halves are flat one-byte strings and
    whose last second half is one: V8 builds an inferred name such as `Socket._writeGeneric` that way
    (AstConsString::Allocate: cons(first part, cons(".", ...)), a piece shorter than
    ConsString::kMinLength flattened), followed MAX_NAME_PARTS deep or until JS_NAME_MAX bytes are read.
    Any other string is undecided."""
    c1 = _type_of(em, L, "jc1")
    em.emit("u64 jcs = 0;")  # the string read
    em.emit(f"if (jc1 && {c1} < {_i(L.first_nonstring_type)}) {{")
    em.emit("    u64 jl1 = 0;")
    em.emit(f"    if (bpf_probe_read_user(&jl1, 4, (void *)(jc1 + {_i(L.string_length)})) < 0) {_UNDECIDED}")
    em.emit("    if ((u32)jl1) jcs = jc1;")
    em.emit("}")
    c2 = _type_of(em, L, "jc2")
    em.emit(f"if (!jcs && jc2 && {c2} < {_i(L.first_nonstring_type)}) jcs = jc2;")
    em.emit("if (jcs) {")
    em.emit("    u64 jl = 0;")
    em.emit(f"    bpf_probe_read_user(&jl, 4, (void *)(jcs + {_i(L.string_length)}));")
    em.emit("    jl = (u32)jl;")
    em.emit(f"    if (jl > 0x3fffffff) {_UNDECIDED}")
    em.emit("    jlen = (s64)jl;")
    ts = _type_of(em, L, "jcs")
    em.emit("    u64 jpart = jcs, jgot = 0, jsum = 0;")
    em.emit(
        f"    if ({ts} < {_i(L.first_nonstring_type)} && ({ts} & {_i(L.string_repr_mask)}) == {_i(L.thin_tag)}) "
        f"bpf_probe_read_user(&jpart, 8, (void *)(jcs + {_i(L.thin_actual)}));"
    )
    em.emit("    int jfin = 0;")  # 1: the last part read, 2: JS_NAME_MAX bytes read
    em.emit("    #pragma clang loop unroll(disable)")
    em.emit(f"    for (int i = 0; i < {MAX_NAME_PARTS}; i++) {{")
    em.emit("        u64 jseg = jpart, jnext = 0;")
    tp = _type_of(em, L, "jpart")
    em.emit(f"        u64 jst = {tp};")
    cons = f"jst < {_i(L.first_nonstring_type)} && (jst & {_i(L.string_repr_mask)}) == {_i(L.cons_tag)}"
    em.emit(f"        if ({cons}) {{")
    em.emit(
        f"            if (bpf_probe_read_user(&jseg, 8, (void *)(jpart + {_i(L.cons_first)})) < 0 || "
        f"bpf_probe_read_user(&jnext, 8, (void *)(jpart + {_i(L.cons_second)})) < 0 || !jnext) break;"
    )
    tf = _type_of(em, L, "jseg")
    em.emit(f"            jst = {tf};")
    em.emit("        }")
    em.emit(f"        if (!{_seq_one_byte(L, 'jst')}) break;")
    em.emit("        u64 jsl = 0;")
    em.emit(f"        if (bpf_probe_read_user(&jsl, 4, (void *)(jseg + {_i(L.string_length)})) < 0) break;")
    em.emit("        jsl = (u32)jsl;")
    em.emit("        if (jsl > 0x3fffffff) break;")
    em.emit("        jsum += jsl;")
    em.emit(f"        u64 jk = {JS_NAME_MAX} - jgot; if (jk > jsl) jk = jsl;")
    em.emit(
        f"        if (jgot < {JS_NAME_MAX} && jk > 0 && jk <= {JS_NAME_MAX}) {{"
        f" if (bpf_probe_read_user(jname + (jgot & {JS_NAME_MAX - 1}), jk, "
        f"(void *)(jseg + {_i(L.seq_one_byte_chars)})) < 0) break; jgot += jk; }}"
    )
    em.emit("        if (!jnext) { jfin = 1; break; }")
    em.emit(f"        if (jgot >= {JS_NAME_MAX}) {{ jfin = 2; break; }}")
    em.emit("        jpart = jnext;")
    em.emit("    }")
    # the parts' lengths add up to the string's: else not the shape read
    em.emit(f"    if (!jfin || (jfin == 1 && jsum != jl) || jgot > jl) {_UNDECIDED}")
    em.emit("}")


def _glob(em: Emitter, glob: bytes) -> None:
    """`jok = 1` when `jname`/`jlen` matches; `jund = 1` when the name is too long to decide."""
    parts = glob.split(b"*")
    head, tail, middle = parts[0], parts[-1] if len(parts) > 1 else b"", parts[1:-1]
    if len(parts) == 1:  # no star: the whole name, which fits the buffer whenever it is that long
        cond = [f"jlen == {len(head)}"] + [f"jname[{i}] == {b}" for i, b in enumerate(head)]
        em.emit(f"if ({' && '.join(cond)}) jok = 1;")
        return
    need = len(head) + len(tail) + sum(len(m) for m in middle)
    em.emit("{")
    em.emit(f"    int m = jlen >= {need};")
    for i, b in enumerate(head):
        em.emit(f"    if (m && jname[{i}] != {b}) m = 0;")
    if tail or middle:
        em.emit(f"    if (m && jlen > {JS_NAME_MAX}) {{ m = 0; jund = 1; }}")
    if tail:
        em.emit(f"    s64 te = jlen - {len(tail)};")
        for i, b in enumerate(tail):
            em.emit(f"    if (m && jname[(te + {i}) & 63] != {b}) m = 0;")
    else:
        em.emit("    s64 te = jlen;")
    em.emit(f"    s64 at = {len(head)};")
    for seg in middle:
        if not seg:
            continue
        em.emit("    if (m) {")
        em.emit("        int found = 0;")
        em.emit(f"        for (int p = 0; p <= {JS_NAME_MAX - len(seg)}; p++) {{")
        em.emit(f"            if (found || p < at || p + {len(seg)} > te) continue;")
        em.emit("            int eq = 1;")
        for i, b in enumerate(seg):
            em.emit(f"            if (jname[(p + {i}) & 63] != {b}) eq = 0;")
        em.emit(f"            if (eq) {{ found = 1; at = p + {len(seg)}; }}")
        em.emit("        }")
        em.emit("        if (!found) m = 0;")
        em.emit("    }")
    em.emit("    if (m) jok = 1;")
    em.emit("}")


def emit_name(em: Emitter, field: str, capacity: int) -> None:
    """Copy the matched function's name (from `emit_match`) into `e->FIELD` (a string field)."""
    em.emit(f"e->{field}_len = jlen < 0 ? 0 : (u32)jlen;")
    em.emit(f"e->{field}_flags = jlen > {min(capacity, JS_NAME_MAX)} ? 2 : 0;")
    em.emit(f"__builtin_memcpy(e->{field}, jname, {min(capacity, JS_NAME_MAX)});")


def emit_script(em: Emitter, field: str) -> None:
    """Copy the matched function's script (from `emit_match`) into `e->FIELD*` (a JSSCRIPT field)."""
    em.emit(f"e->{field}_len = (u32)jsc->len; e->{field}_why = (u32)jsc->why; e->{field}_pos = jsc->pos;")
    em.emit(f"e->{field}_end = jsc->end; e->{field}_src = jsc->src; e->{field}_srclen = jsc->srclen;")
    em.emit(f"__builtin_memcpy(e->{field}, jsc->s, {JS_SCRIPT_MAX});")


@dataclass(frozen=True, slots=True)
class JsScript:
    """A matched call's script as the probe read it: `tail` the last bytes of its name (`length` in
    all), or `why` (code | instance type << 8) it was not read; the function's start/end positions
    (`pos` negative: why not known); the address and length of the script's source (0: not a string)."""

    length: int
    why: int
    pos: int
    end: int
    src: int
    srclen: int
    tail: bytes

    @property
    def name(self) -> str | None:
        """The name as read (a leading `…` when only its tail was kept), None when not read."""
        if self.why & 0xFF != W_OK or self.length == 0:
            return None
        text = self.tail[: min(self.length, JS_SCRIPT_MAX)].decode("latin-1")
        return ("…" + text) if self.length > JS_SCRIPT_MAX else text

    @property
    def why_not(self) -> str:
        """Why the name was not read."""
        code, t = self.why & 0xFF, self.why >> 8
        if code == W_NOT_SCRIPT:
            return f"the function's script slot holds no Script (V8 instance type {t})"
        if code == W_NAME_SHAPE:
            return f"the script's name is not a flat one-byte string (V8 instance type {t})"
        if self.length == 0:
            return "the script has an empty name"
        return "not read"

    @property
    def why_no_position(self) -> str:
        return {
            P_NOT_SCOPEINFO: "the function has no ScopeInfo (not compiled)",
            P_MANY_LOCALS: (
                f"the function's ScopeInfo has {MAX_INLINED_LOCALS} or more context locals and not the names "
                "table expected (not read)"
            ),
            P_LAYOUT: "this V8's ScopeInfo header is not one utrace reads positions from",
        }.get(self.pos, "the function's ScopeInfo holds no position")


def emit_value(em: Emitter, L: V8Layout, arg: ArgSpec, field: str, capacity: int) -> None:
    """Decode the tagged value at `arg.loc` into `e->FIELD_kind/_len/_val` and the bytes `e->FIELD`."""
    em.emit(f"e->{field}_kind = {K_UNREAD}; e->{field}_len = 0; e->{field}_val = 0;")
    if arg.present_if is not None:
        cnt = em.value(arg.present_if[0])
        em.emit(f"if ((s64){cnt} <= {_i(arg.present_if[1])}) {{ e->{field}_kind = {K_ABSENT}; }} else {{")
    else:
        em.emit("{")
    v = em.value(arg.loc)
    em.emit(f"if (({v} & {_i(L.smi_tag_mask)}) == 0) {{ e->{field}_kind = {K_SMI}; e->{field}_val = {v}; }}")
    em.emit(f"else if {_is_heap(L, v)} {{")
    t = _type_of(em, L, v)
    em.emit(f"    if ({t} == {_i(L.heap_number_type)}) {{")
    em.emit(f"        if (bpf_probe_read_user(&e->{field}_val, 8, (void *)({v} + {_i(L.heap_number_value)})) == 0)")
    em.emit(f"            e->{field}_kind = {K_DOUBLE};")
    em.emit(f"    }} else if ({t} == {_i(L.oddball_type)}) {{")
    em.emit(f"        if (bpf_probe_read_user(&e->{field}_val, 8, (void *)({v} + {_i(L.oddball_kind)})) == 0)")
    em.emit(f"            e->{field}_kind = {K_ODDBALL};")
    em.emit(f"    }} else if ({t} < {_i(L.first_nonstring_type)}) {{")
    _string(em, L, v, t, field, capacity)
    em.emit("    } else {")
    em.emit(f"        e->{field}_kind = {K_OTHER}; e->{field}_val = {t};")
    _object(em, L, v, t, field, capacity)
    em.emit("    }")
    em.emit("}")
    em.emit("}")


def _string(em: Emitter, L: V8Layout, v: str, t: str, field: str, capacity: int) -> None:
    """A string: sequential, or thin/sliced over a sequential one, or a cons whose halves are sequential
    (the first `capacity` bytes of first + second). Any other shape: K_STRSHAPE with its type."""
    s, st, off, ln = em.new(), em.new(), em.new(), em.new()
    em.emit(f"u64 {s} = {v}, {st} = {t}, {off} = 0, {ln} = 0;")
    em.emit(f"bpf_probe_read_user(&{ln}, 4, (void *)({v} + {_i(L.string_length)}));")
    em.emit(f"{ln} = (u32){ln};")
    em.emit(f"e->{field}_len = (u32){ln};")
    em.emit(f"u64 rep = {st} & {_i(L.string_repr_mask)};")
    em.emit(f"if (rep == {_i(L.thin_tag)}) bpf_probe_read_user(&{s}, 8, (void *)({v} + {_i(L.thin_actual)}));")
    em.emit(f"if (rep == {_i(L.sliced_tag)}) {{")
    em.emit(f"    bpf_probe_read_user(&{s}, 8, (void *)({v} + {_i(L.sliced_parent)}));")
    em.emit(f"    bpf_probe_read_user(&{off}, 8, (void *)({v} + {_i(L.sliced_offset)}));")
    em.emit(f"    {off} = ({off} & {_i(L.smi_tag_mask)}) ? 0xffffffff : {off} >> {L.smi_shift};")
    em.emit("}")
    em.emit(f"u64 s2 = 0, l1 = {ln};")
    em.emit(f"if (rep == {_i(L.cons_tag)}) {{")
    em.emit(f"    bpf_probe_read_user(&{s}, 8, (void *)({v} + {_i(L.cons_first)}));")
    em.emit(f"    bpf_probe_read_user(&s2, 8, (void *)({v} + {_i(L.cons_second)}));")
    em.emit(f"    l1 = 0; bpf_probe_read_user(&l1, 4, (void *)({s} + {_i(L.string_length)})); l1 = (u32)l1;")
    em.emit("}")
    t2 = _type_of(em, L, s)
    em.emit(f"u64 t2r = {t2} & {_i(L.string_repr_mask)};")
    em.emit(f"if ({t2} >= {_i(L.first_nonstring_type)} || t2r != {_i(L.seq_tag)} || {off} > 0x3fffffff) {{")
    em.emit(f"    e->{field}_kind = {K_STRSHAPE}; e->{field}_val = {st};")
    em.emit("} else {")
    em.emit(f"    int one = ({t2} & {_i(L.string_encoding_mask)}) == {_i(L.one_byte_tag)};")
    em.emit("    u64 unit = one ? 1 : 2;")
    em.emit(f"    u64 base = {s} + (one ? {_i(L.seq_one_byte_chars)} : {_i(L.seq_two_byte_chars)}) + {off} * unit;")
    em.emit(f"    u64 k = l1 * unit; if (k > {capacity}) k = {capacity};")
    em.emit(f"    if (k > 0 && k <= {capacity}) bpf_probe_read_user(e->{field}, k, (void *)base);")
    em.emit(f"    e->{field}_kind = one ? {K_STR1} : {K_STR2};")
    em.emit(f"    e->{field}_val = k;")
    # the second half of a cons: only when it is sequential with the same encoding
    em.emit(f"    if (rep == {_i(L.cons_tag)} && k < {capacity} && k < {ln} * unit) {{")
    t3 = _type_of(em, L, "s2")
    em.emit(
        f"        if ({t3} < {_i(L.first_nonstring_type)} && ({t3} & {_i(L.string_repr_mask)}) == {_i(L.seq_tag)} && "
        f"(({t3} & {_i(L.string_encoding_mask)}) == {_i(L.one_byte_tag)}) == one) {{"
    )
    em.emit(f"            u64 k2 = {capacity} - k;")
    em.emit(f"            if (k2 > ({ln} - l1) * unit) k2 = ({ln} - l1) * unit;")
    em.emit(f"            if (k < {capacity} && k2 > 0 && k2 < {capacity}) {{")
    em.emit(f"                bpf_probe_read_user(e->{field} + (k & {capacity - 1}), k2 & {capacity - 1},")
    em.emit(f"                    (void *)(s2 + (one ? {_i(L.seq_one_byte_chars)} : {_i(L.seq_two_byte_chars)})));")
    em.emit(f"                e->{field}_val = k + k2;")
    em.emit("            }")
    em.emit("        } else {")
    em.emit(f"            e->{field}_kind = {K_STRSHAPE}; e->{field}_val = {st};")
    em.emit("        }")
    em.emit("    }")
    em.emit("}")


def _is_function(L: V8Layout, t: str, constructor: bool) -> str:
    """A C condition: `t` is a JSFunction's instance type. V8 gives class constructors and some builtins types of their
    own, in a range the binary names (FirstJSFunctionType..LastJSFunctionType, node 22 on). Without the
    range (node 20) an argument is a function only with JS_FUNCTION_TYPE itself; a map's constructor slot
    holds only a Map, a JSFunction, a FunctionTemplateInfo, a Smi or null (map.h), so there any JS type
    from JS_FUNCTION_TYPE up is the function (its SharedFunctionInfo's type is checked as well)."""
    if L.first_js_function_type is not None and L.last_js_function_type is not None:
        return f"{t} >= {_i(L.first_js_function_type)} && {t} <= {_i(L.last_js_function_type)}"
    if constructor:
        return f"{t} >= {_i(L.js_function_type)} && {t} != 0xffff"
    return f"{t} == {_i(L.js_function_type)}"


def _function_name(em: Emitter, L: V8Layout, fn: str, field: str, capacity: int) -> str:
    """Read the name of the JSFunction `fn` (its SharedFunctionInfo's name: a String, or the function-name
    slot of its ScopeInfo, as in `emit_match`) into `e->FIELD` (the first `capacity` bytes) and
    `e->FIELD_len` (its length). Only a flat one-byte string is read. Returns the C variable holding
    the status (N_OK, N_NOT_READ, N_NO_NAME)."""
    st = em.new()
    em.emit(f"u64 {st} = {N_NOT_READ};")
    sfi = _read(em, 8, f"{fn} + {_i(L.jsfunction_shared)}")
    sft = _type_of(em, L, sfi)
    em.emit(f"if ({sft} == {_i(L.sfi_type)}) {{")
    nsi = _read(em, 8, f"{sfi} + {_i(L.sfi_name_or_scope_info)}")
    ns = em.new()
    em.emit(f"u64 {ns} = 0;")
    nt = _type_of(em, L, nsi)
    # a Smi there is V8's kNoSharedNameSentinel: a function without a name of its own
    em.emit(f"if (!{_is_heap(L, nsi)}) {{ if ({nsi} == 0) {st} = {N_NO_NAME}; }}")
    em.emit(f"else if ({nt} < {_i(L.first_nonstring_type)}) {{ {ns} = {nsi}; }}")
    em.emit(f"else if ({nt} == {_i(L.scope_info_type)}) {{")
    n = _read(em, 8, f"{nsi} + {_i(L.map + 8 + 8 * L.scopeinfo_ncontextlocals)}")
    em.emit(f"    u64 {n}v = {n} >> {L.smi_shift};")
    em.emit(f"    if (!({n} & {_i(L.smi_tag_mask)}) && {n}v < {MAX_INLINED_LOCALS}) {{")
    w = em.new()
    em.emit(f"        u64 {w}[2] = {{}};")
    em.emit(
        f"        if (bpf_probe_read_user({w}, 16, (void *)({nsi} + {_i(L.map + 8 + 8 * L.scopeinfo_first_vars)}"
        f" + 16 * {n}v)) == 0 && !({w}[1] & {_i(L.smi_tag_mask)})) {{"
    )
    em.emit(f"            if ({_is_heap(L, f'{w}[0]')}) {ns} = {w}[0]; else if ({w}[0] == 0) {st} = {N_NO_NAME};")
    em.emit("        }")
    em.emit("    }")
    em.emit("}")
    em.emit(f"if ({ns}) {{")
    rd, ln, _t = _flat_one_byte(em, L, ns, f"e->{field}", capacity)
    em.emit(f"    if ({rd} && {ln} == 0) {st} = {N_NO_NAME};")
    em.emit(f"    else if ({rd} == 2) {{ e->{field}_len = (u32){ln}; {st} = {N_OK}; }}")
    em.emit("}")
    em.emit("}")
    return st


def _object(em: Emitter, L: V8Layout, v: str, t: str, field: str, capacity: int) -> None:
    """An object (`e->FIELD_kind` is K_OTHER with its instance type until more is read): an array by its
    length, a function by its name, any other object by its constructor's name. That constructor is
    the one V8 keeps in the object's map (`Map::GetConstructor`: back pointers lead from a map to the
    one it was made from, whose constructor_or_back_pointer holds it), the function `new` ran or the
    builtin that made the literal (`Object` for `{}`): what `obj.constructor.name` gives unless the
    program changed prototypes. An object whose map's prototype is null is said to have one."""
    em.emit(f"if ({t} == {_i(L.js_array_type)}) {{")
    if L.js_array_length is not None:
        n = _read(em, 8, f"{v} + {_i(L.js_array_length)}")
        em.emit(f"    if (({n} & {_i(L.smi_tag_mask)}) == 0) {{ e->{field}_kind = {K_ARRAY}; e->{field}_val = {n}; }}")
    em.emit(f"}} else if ({_is_function(L, t, False)}) {{")
    st = _function_name(em, L, v, field, capacity)
    em.emit(f"    e->{field}_kind = {K_FUNCTION}; e->{field}_val = {t} | ({st} << 16);")
    em.emit("} else {")
    m = _read(em, 8, f"{v} + {_i(L.map)}")
    c, ct, cm = em.new(), em.new(), em.new()
    em.emit(f"    u64 {c} = 0, {ct} = 0xffff, {cm} = {m};")
    # a bounded loop the verifier walks, not 64 unrolled copies (each argument and return has one)
    em.emit("    #pragma clang loop unroll(disable)")
    em.emit(f"    for (int i = 0; i < {MAX_BACK_POINTERS}; i++) {{")
    em.emit(f"        {c} = 0; {ct} = 0xffff;")
    em.emit(f"        if (!{cm} || bpf_probe_read_user(&{c}, 8, (void *)({cm} + {_i(L.map_constructor)})) < 0) break;")
    ty = _type_of(em, L, c)
    em.emit(f"        {ct} = {ty};")
    em.emit(f"        if ({ct} != {_i(L.map_type)}) break;")
    em.emit(f"        {cm} = {c}; {ct} = 0xffff;")  # still a map after the last step: no constructor
    em.emit("    }")
    st = em.new()
    em.emit(f"    u64 {st} = {N_NO_CONSTRUCTOR};")
    em.emit(f"    if ({_is_heap(L, c)} && ({_is_function(L, ct, True)})) {{")
    got = _function_name(em, L, c, field, capacity)
    em.emit(f"        {st} = {got};")
    em.emit("    }")
    # a null prototype: the Oddball null there (a JSReceiver otherwise)
    p = _read(em, 8, f"{m} + {_i(L.map_prototype)}")
    pt = _type_of(em, L, p)
    nullp = em.new()
    em.emit(f"    u64 {nullp} = 0;")
    em.emit(f"    if ({pt} == {_i(L.oddball_type)}) {{")
    k = _read(em, 8, f"{p} + {_i(L.oddball_kind)}")
    null = L.oddball_null
    em.emit(f"        if ({k} == {_i(null)} || {k} == ({_i(null)} << 32)) {nullp} = 1;")
    em.emit("    }")
    em.emit(f"    e->{field}_kind = {K_OBJECT}; e->{field}_val = {t} | ({st} << 16) | ({nullp} << 24);")
    em.emit("}")


def capacity(max_len: int) -> int:
    """Bytes of a JSVALUE's string (a power of two: the second half of a cons is masked into it;
    the event's buffer is twice that, so a masked write never leaves it)."""
    n = max(8, min(int(max_len), 4096))
    return 1 << (n - 1).bit_length()


def decode(layout: V8Layout | None, kind: int, length: int, val: int, buf: bytes) -> object:
    """The Python value shown for a JSVALUE field."""
    from utrace.probes.decode import Rendered, StringValue

    if kind == K_SMI:
        v = (val & (1 << 64) - 1) >> (layout.smi_shift if layout else 32)
        return v - (1 << 32) if v >= 1 << 31 else v
    if kind == K_DOUBLE:
        d = struct.unpack("<d", struct.pack("<Q", val & (1 << 64) - 1))[0]
        if math.isfinite(d) and d == int(d) and abs(d) < 1 << 53:
            return Rendered(str(int(d)))
        return Rendered(
            repr(d) if math.isfinite(d) else ("NaN" if math.isnan(d) else ("Infinity" if d > 0 else "-Infinity"))
        )
    if kind == K_ODDBALL:
        names = {}
        if layout is not None:
            names = {
                layout.oddball_false: "false",
                layout.oddball_true: "true",
                layout.oddball_null: "null",
                layout.oddball_undefined: "undefined",
            }
        # Oddball::kind is a Smi (value in the upper half) in the V8s with 8-byte tagged values
        kind_value = val >> 32 if val & 0xFFFFFFFF == 0 else val & 0xFFFFFFFF
        return Rendered(names.get(kind_value, f"<oddball kind {kind_value}>"))
    if kind in (K_STR1, K_STR2):
        got = buf[: max(0, min(val, len(buf)))]
        text = got.decode("latin-1") if kind == K_STR1 else got[: len(got) & ~1].decode("utf-16-le", "replace")
        s = StringValue(text)
        s.full_length = length
        s.truncated = len(text) < length
        return s
    if kind == K_ABSENT:
        return Rendered(NOT_PASSED)
    if kind == K_ARRAY:
        n = (val & (1 << 64) - 1) >> (layout.smi_shift if layout else 32)
        return Rendered(f"Array({n})" if n < 1 << 31 else "Array")
    if kind in (K_FUNCTION, K_OBJECT):
        return _named(layout, kind, length, val, buf)
    if kind == K_OTHER:
        t = val & 0xFFFF
        if layout is not None and t == layout.js_array_type:
            return Rendered("Array")  # its length not read (the binary does not say where it is)
        return Rendered(f"<object, V8 instance type {t}>")
    if kind == K_STRSHAPE:
        return Rendered(f"<string of a shape not read, V8 instance type {val & 0xFFFF}>")
    return Rendered("<unreadable>")


def _named(layout: V8Layout | None, kind: int, length: int, val: int, buf: bytes) -> object:
    """A function by its name, an object by its constructor's name (see `_object`)."""
    from utrace.probes.decode import Rendered

    t, status, null_proto = val & 0xFFFF, (val >> 16) & 0xFF, (val >> 24) & 1
    got = buf[: max(0, min(length, len(buf) // 2))]  # the name's bytes: the first half of the buffer
    name = got.decode("latin-1") + ("..." if len(got) < length else "")
    if kind == K_FUNCTION:
        if status == N_OK:
            return Rendered(f"Function {name}")
        return Rendered("Function" if status == N_NO_NAME else "Function <name not read>")
    # made by Function, of a JS type above JS_FUNCTION_TYPE in a V8 that names no range of function
    # types (node 20: a class): a function whose name is not read
    unnamed_type = layout is not None and layout.first_js_function_type is None and t > layout.js_function_type
    if status == N_OK and name == "Function" and not null_proto and unnamed_type:
        return Rendered("Function")
    if status == N_OK:
        return Rendered(f"[{name}: null prototype]{{}}" if null_proto else f"{name}{{}}")
    if status == N_NO_NAME:
        return Rendered("<object, its constructor has no name>")
    if status == N_NO_CONSTRUCTOR:
        return Rendered(f"<object, no JavaScript constructor, V8 instance type {t}>")
    return Rendered("<object, constructor name not read>")
