"""`--where`: the parser (precedence, errors with columns), the binder (names, types, honesty about
uncertain values), and the C it becomes, compiled with gcc and run against Python's own comparisons
and fnmatch on the same inputs."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from utrace.app.where import Binary, Bool, Name, Num, Str, Unary, WhereError, apply_where, bind, parse
from utrace.model import ArgKind, ArgSpec, Deref, ProbeKind, ProbeSpec, Reg
from utrace.predicate import AfterEntry, Predicate, StrArg, java_method_glob
from utrace.probes.codegen import _Emitter, render
from utrace.probes.predicate_c import emit_predicate

ROOT = Path(__file__).resolve().parents[2]
GCC = shutil.which("gcc")


def spec(*args: ArgSpec, name: str = "f", kind: ProbeKind = ProbeKind.ENTRY, pair: str = "") -> ProbeSpec:
    return ProbeSpec(name=name, module="/m", offset=0, kind=kind, args=args, pair=pair)


S32 = ArgSpec("n", ArgKind.S32, Reg("rdi"))
NAME = ArgSpec("name", ArgKind.CSTR, Reg("rsi"))
URL = ArgSpec("url", ArgKind.PTRLEN_STR, Reg("rdx"), length=Reg("rcx"))
FLAGS = ArgSpec("flags", ArgKind.U64, Reg("r8"))
DAEMON = ArgSpec("daemon", ArgKind.BOOL, Reg("r9"))
PROBE = spec(S32, NAME, URL, FLAGS, DAEMON)


# --- parsing -----------------------------------------------------------------------------------------


def test_precedence():
    # || loosest, then &&, then !, then comparisons, then & (tighter than comparisons, unlike C)
    assert parse("a || b && c") == Binary("||", Name("a", 1), Binary("&&", Name("b", 6), Name("c", 11), 8), 3)
    assert parse("!a == 1 && b") == Binary(
        "&&", Unary("!", Binary("==", Name("a", 2), Num(1, 7), 4), 1), Name("b", 12), 9
    )
    assert parse("f & 4 == 4") == Binary("==", Binary("&", Name("f", 1), Num(4, 5), 3), Num(4, 10), 7)
    assert parse("(a || b) && c") == Binary("&&", Binary("||", Name("a", 2), Name("b", 7), 4), Name("c", 13), 10)
    assert parse("n >= -0x10") == Binary(">=", Name("n", 1), Num(-16, 6), 3)
    assert parse("s ~ 'a\\x41\\n*'") == Binary("~", Name("s", 1), Str(b"aA\n*", 5), 3)
    assert parse("t.Base != false") == Binary("!=", Name("t.Base", 1), Bool(False, 11), 8)


@pytest.mark.parametrize(
    ("text", "col", "message"),
    [
        ("n > > 3", 5, "expected a name, a number, a string or '(', found '>'"),
        ("n >", 4, "expected a name, a number, a string or '(', found the end"),
        ("(n > 3", 7, "expected ')' to close the '(' at column 1, found the end"),
        ("n > 3)", 6, "expected &&, || or the end, found ')'"),
        ('name == "bob', 9, "unterminated string"),
        ("n # 3", 3, "unexpected '#'"),
        ("1 < n < 3", 7, "comparisons do not chain"),
        ("url ~ http", 7, "expected a quoted pattern after ~"),
        ("", 1, "empty expression"),
        ("n = 3", 3, "unexpected '='"),
        ("'a\\q'", 3, "unknown escape \\q"),
    ],
)
def test_malformed_expressions_say_where(text, col, message):
    with pytest.raises(WhereError) as e:
        parse(text)
    assert e.value.col == col
    assert str(e.value).startswith(f"--where {text!r}: column {col}: {message}")


# --- binding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "col", "message"),
    [
        ("nn > 3", 1, "f has no argument 'nn' (names: n, name, url, flags, daemon, pid, tid, comm)"),
        ("name > 3", 6, "strings are compared with ==, != or ~, not >"),
        ('n == "bob"', 1, "n is a number, not a string"),
        ("name", 1, "a string is not a condition"),
        ("n + 1", 3, "unexpected '+'"),
        ("flags > -1", 7, "-1 compared with an unsigned value"),
        ('comm == "a-very-long-thread-name"', 9, "comm is at most 15 bytes"),
        ('name ~ "*.txt"', 8, "a * before the end needs a string with a known length"),
        ('url ~ "a*b*"', 7, "at most one * is supported"),
        ("(n > 1) & 2", 4, "a condition where a number is expected"),
        ('name == "' + "x" * 129 + '"', 9, "strings compared in BPF are at most 128 bytes"),
        (" || ".join(['url == "' + "x" * 100 + '"'] * 4), 347, "the strings of one --where add up to more than 440"),
    ],
)
def test_names_and_types_are_checked_against_the_probe(text, col, message):
    with pytest.raises(WhereError) as e:
        bind(text, parse(text), PROBE)
    assert e.value.col == col
    assert message in str(e.value)


def test_uncertain_and_unavailable_values_are_refused():
    this = ArgSpec("arg1", ArgKind.S64, Reg("rsi"), uncertain="no evidence whether f is a member function; no DWARF")
    fl = ArgSpec("x", ArgKind.UNAVAILABLE, note="float64 in xmm0")
    p = spec(this, fl)
    with pytest.raises(WhereError, match=r"column 1: arg1 of f is uncertain \(no evidence whether f is a member"):
        bind("arg1 == 3", parse("arg1 == 3"), p)
    with pytest.raises(WhereError, match=r"column 5: x of f cannot be read in BPF \(float64 in xmm0\)"):
        bind("1 < x", parse("1 < x"), p)


def test_positions_context_and_builtins():
    goid = ArgSpec("goid", ArgKind.S64, Deref(Reg("r14"), 152))
    pc = ArgSpec("pc", ArgKind.PTR, Reg("rip"))
    p = ProbeSpec(name="main.F", module="/m", offset=0, kind=ProbeKind.ENTRY, args=(S32, NAME), context=(goid, pc))
    assert bind("arg0 > 1", parse("arg0 > 1"), p) == bind("n > 1", parse("n > 1"), p)
    text = "goid == 1 && pid > 0 && tid > 0 && comm == 'greet'"
    bind(text, parse(text), p)
    with pytest.raises(WhereError, match=r"main.F has no argument 'pc' \(names: n, name, goid, pid, tid, comm\)"):
        bind("pc", parse("pc"), p)
    with pytest.raises(WhereError, match="has no argument 'arg2'"):
        bind("arg2", parse("arg2"), p)


def test_a_return_is_reported_after_its_entry_passed():
    entry = spec(S32, pair="k")
    ret = replace(spec(kind=ProbeKind.RETURN, pair="k"), latency=True)
    out = apply_where("n > 100", [entry, ret])
    assert isinstance(out[0].filters[0], Predicate)
    assert out[1].filters == (AfterEntry(),)
    with pytest.raises(WhereError, match="no argument 'zz'"):
        apply_where("zz > 1", [entry, ret])
    from utrace.probes.codegen import Options

    src = render([*out, replace(ret, pair="other")], Options()).source
    body = src.split("int probe_1(")[1].split("\n}\n")[0]
    assert "if (start) { latency = now - *start; starts.delete(&sk); }\n    if (!start) return 0;" in body
    assert "if (!start) return 0;" not in src.split("int probe_2(")[1]


# --- the C, run ---------------------------------------------------------------------------------------

HARNESS = r"""
#include <stdint.h>
#include <stdio.h>
#include <string.h>
typedef uint64_t u64; typedef int64_t s64; typedef uint32_t u32; typedef int32_t s32;
typedef uint16_t u16; typedef int16_t s16; typedef uint8_t u8; typedef int8_t s8;
struct pt_regs { u64 di, si, dx, cx, r8, r9, ax, bx, bp, sp, r10, r11, r12, r13, r14, r15, ip; };
static inline long bpf_probe_read_user(void *dst, u64 n, const void *src) {
    if (!src) return -14;
    memcpy(dst, src, n);
    return 0;
}
static inline long bpf_probe_read_user_str(void *dst, u64 n, const void *src) {
    u64 i = 0;
    if (!src) return -14;
    for (; i + 1 < n && ((const char *)src)[i]; i++) ((char *)dst)[i] = ((const char *)src)[i];
    ((char *)dst)[i] = 0;
    return (long)i + 1;
}
static char COMM[16];
static inline long bpf_get_current_comm(void *dst, u64 n) { memcpy(dst, COMM, n); return 0; }
static int check(struct pt_regs *ctx, u32 pid, u32 tid) {
BODY
    return 1;
}
int main(void) {
    struct pt_regs r;
CASES
    return 0;
}
"""


def _c_bytes(b: bytes) -> str:
    return '"' + "".join(f"\\x{c:02x}" for c in b) + '"'


def run_c(tmp_path: Path, predicate: Predicate, cases: list[dict[str, object]]) -> list[bool]:
    """Each case sets registers: an int, or bytes (a pointer to them; for pointer+length strings the
    length goes in the register named by the `len` entry), None for a NULL pointer; `comm` and `pid`."""
    em = _Emitter()
    emit_predicate(em, predicate)
    lines = []
    for n, case in enumerate(cases):
        lines.append("    memset(&r, 0, sizeof(r));")
        lines.append(f"    memset(COMM, 0, 16); strncpy(COMM, {_c_bytes(case.get('comm', b'prog'))}, 15);")  # type: ignore[arg-type]
        for reg, v in case.items():
            if reg in ("comm", "pid"):
                continue
            if isinstance(v, bytes):
                lines.append(f"    static const char s{n}_{reg}[] = {_c_bytes(v)};")
                lines.append(f"    r.{reg} = (u64)s{n}_{reg};")
            elif v is None:
                lines.append(f"    r.{reg} = 0;")
            else:
                lines.append(f"    r.{reg} = {int(v) & (2**64 - 1)}ULL;")  # type: ignore[call-overload]
        lines.append(f'    printf("%d\\n", check(&r, {case.get("pid", 4242)}, 7));')
    src = HARNESS.replace("BODY", "\n".join(em.lines)).replace("CASES", "\n".join(lines))
    c = tmp_path / "where.c"
    c.write_text(src)
    exe = tmp_path / "where"
    cc = [GCC, "-O1", "-Wall", "-Wno-unused-variable", "-Werror", "-o", str(exe), str(c)]
    subprocess.run(cc, check=True, capture_output=True, timeout=60)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=30).stdout.split()
    return [x == "1" for x in out]


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


needs_gcc = pytest.mark.skipif(GCC is None, reason="gcc not installed")


@needs_gcc
def test_integer_predicates_run_as_python_computes_them(tmp_path):
    text = "(n > 100 || n <= -5) && !(flags & 4) || daemon && pid == 4242"
    pred = bind(text, parse(text), PROBE)
    # registers carry garbage above an int's 32 bits: the s32 must be read from the low half
    values = [0, 100, 101, -5, -4, 0xDEADBEEF_FFFFFF9C, 0x1_00000065, 2**31 - 1, -(2**31)]
    cases: list[dict[str, object]] = []
    want = []
    for v in values:
        for flags in (0, 4, 5, 2**63):
            for daemon in (0, 1, 0x100):
                for pid in (4242, 1):
                    cases.append({"di": v, "r8": flags, "r9": daemon, "pid": pid})
                    n = _s32(v)
                    want.append(((n > 100 or n <= -5) and not (flags & 4)) or (bool(daemon & 0xFF) and pid == 4242))
    assert run_c(tmp_path, pred, cases) == want


STRINGS = [b"", b"h", b"http://api/", b"http://api/v1/users", b"http://apx/", b"https://api/x", b"x" * 40,
           b"http://api/" + b"y" * 100, b"bob", b"bobby", b"bo", b"ob", b"users"]  # fmt: skip
PATTERNS = ["http://api/*", "*users", "http://*users", "bob", "*", "b*b", "", "http://api/v1/users*", "x" * 40]


@needs_gcc
@pytest.mark.parametrize("pattern", PATTERNS)
def test_string_globs_run_as_fnmatch_says(tmp_path, pattern):
    lit = pattern.replace('"', '\\"')
    ptrlen = bind(f'url ~ "{lit}"', parse(f'url ~ "{lit}"'), PROBE)
    cases: list[dict[str, object]] = [{"dx": s, "cx": len(s)} for s in STRINGS]
    cases += [{"dx": None, "cx": 3}, {"dx": None, "cx": 0}, {"dx": b"http://api/", "cx": -1}]
    want = [fnmatch.fnmatchcase(s.decode(), pattern) for s in STRINGS]
    # NULL with a length, or a negative length, is no string; (NULL, 0) is Go's empty string
    want += [False, fnmatch.fnmatchcase("", pattern), False]
    assert run_c(tmp_path, ptrlen, cases) == want
    if "*" in pattern[:-1]:
        return  # C strings: a trailing * only
    cstr = bind(f'name ~ "{lit}"', parse(f'name ~ "{lit}"'), PROBE)
    cases = [{"si": s} for s in STRINGS] + [{"si": None}]
    assert run_c(tmp_path, cstr, cases) == [fnmatch.fnmatchcase(s.decode(), pattern) for s in STRINGS] + [False]


@needs_gcc
def test_equality_inequality_and_comm(tmp_path):
    text = 'name != "bob" && url == "bob" || comm == "worker-1" || comm ~ "pg*"'
    pred = bind(text, parse(text), PROBE)
    cases: list[dict[str, object]] = []
    want = []
    for name in (b"bob", b"bobby", b"bo", b"", None):
        for url in (b"bob", b"bobx", b"bo"):
            for comm in (b"prog", b"worker-1", b"worker-10", b"pgbench", b"p"):
                cases.append({"si": name, "dx": url, "cx": len(url), "comm": comm})
                want.append(
                    (name is not None and name != b"bob" and url == b"bob")
                    or comm == b"worker-1"
                    or comm.startswith(b"pg")
                )
    assert run_c(tmp_path, pred, cases) == want


CLASSES = ["com/shop/Cart", "com/shop/CartItem", "com/shop/sub/Cart", "com/shopping/Cart", "Demo", "Demo$Worker",
           "java/util/TreeMap", "java/util/TreeMap$Entry", "com/shop", "com/shopTest"]  # fmt: skip
METHODS = ["total", "totals", "subtotal", "run", "<init>", "Cart", "total$1"]
GLOBS = ["com.shop.*.total", "*.total", "com.shop.Cart.*", "com.shop.Cart.total", "Demo", "java.util.TreeMap",
         "com.shop.*", "*Cart.total", "com.shop.Cart.to*", "com.shop.C*l", "Demo*", "com.shop*.Cart.run",
         "*$Worker.run", "com.shop.Cart.tot*l"]  # fmt: skip


@needs_gcc
@pytest.mark.parametrize("pattern", GLOBS)
def test_java_method_globs_run_as_fnmatch_over_class_dot_method(tmp_path, pattern):
    cls = StrArg(ArgKind.PTRLEN_STR, Reg("rdi"), Reg("rsi"), ArgKind.S32)
    meth = StrArg(ArgKind.PTRLEN_STR, Reg("rdx"), Reg("rcx"), ArgKind.S32)
    pred = Predicate(java_method_glob(cls, meth, pattern))
    cases: list[dict[str, object]] = []
    want = []
    for c in CLASSES:
        for m in METHODS:
            cases.append({"di": c.encode(), "si": len(c), "dx": m.encode(), "cx": len(m)})
            full = f"{c.replace('/', '.')}.{m}"
            ok = fnmatch.fnmatchcase(full, pattern)
            if "*" not in pattern:  # also the class-name prefix method:CLASS always was
                ok = ok or c.replace("/", ".").startswith(pattern)
            want.append(ok)
    assert run_c(tmp_path, pred, cases) == want


def test_the_c_holds_no_text_from_the_expression():
    text = 'url ~ "*/*/evil\\"); system(\\"x" || name == "AAAA"'
    with pytest.raises(WhereError, match="at most one"):
        bind(text, parse(text), PROBE)
    text = 'url ~ "evil\\"); x(*" || name == "AAAAzzzz"'
    em = _Emitter()
    emit_predicate(em, bind(text, parse(text), PROBE))
    c = "\n".join(em.lines)
    for word in ("evil", "AAAA", "zzzz", "x("):
        assert word not in c


# --- the command line ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "line"),
    [
        ("n >", "utrace: error: --where 'n >': column 4: expected a name, a number, a string or '(', found the end"),
        ("x > 3", "utrace: error: --where 'x > 3': column 1: hot has no argument 'x' (names: arg0, arg1, arg2, "
                  "arg3, arg4, arg5, pid, tid, comm)"),
        ('comm > 3', "utrace: error: --where 'comm > 3': column 6: strings are compared with ==, != or ~, not >"),
    ],
)  # fmt: skip
def test_cli_one_line_exit_2(where, line):
    hot = ROOT / "fixtures" / "build" / "c" / "hot"
    if not hot.exists():
        pytest.skip("fixtures not built")
    p = subprocess.run(
        [sys.executable, "-m", "utrace", "native", str(hot), "hot", "--where", where, "--dump-bpf"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert p.returncode == 2
    assert p.stderr.splitlines() == [line]
    assert p.stdout == ""


def test_integers_shown_by_name_compare_with_their_names():
    kind = ArgSpec("type", ArgKind.S32, Deref(Reg("rdi"), 16, 4), labels=((7, "pipe"), (12, "tcp")))
    p = spec(kind)
    assert bind('type == "tcp"', parse('type == "tcp"'), p) == bind("type == 12", parse("type == 12"), p)
    assert bind('"pipe" != type', parse('"pipe" != type'), p) == bind("type != 7", parse("type != 7"), p)
    assert bind("type > 3", parse("type > 3"), p)  # still a number
    with pytest.raises(WhereError, match=r"column 9: type is one of pipe, tcp \(or a number\)"):
        bind('type == "udp"', parse('type == "udp"'), p)
