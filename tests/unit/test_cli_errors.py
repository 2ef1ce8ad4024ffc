"""The CLI's failure contract, run as a real subprocess: documented exit code (2 usage, 3 target),
exactly one `utrace: error:` line on stderr, and never a traceback. No root needed."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.elfgen import Probe, Sym, build_elf

REPO = Path(__file__).resolve().parents[2]
TRUE = shutil.which("true") or "/bin/true"
NO_PID = 4194305  # above the largest possible pid_max (2**22)
USAGE, TARGET = 2, 3


def run(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "UTRACE_DEBUG"}
    env["XDG_CACHE_HOME"] = str(cache)  # a warm cache must not change the outcome
    return subprocess.run(
        [sys.executable, "-m", "utrace", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("targets")
    passwd = d / "passwd"
    passwd.write_bytes(Path("/etc/passwd").read_bytes())
    elf = Path(TRUE).read_bytes()
    truncated = d / "truncated"
    truncated.write_bytes(elf[:200])
    corrupt = bytearray(elf)
    struct.pack_into("<Q", corrupt, 0x28, 0x7FFF_FFFF_0000)  # e_shoff far past the end of the file
    (d / "corrupt").write_bytes(bytes(corrupt))
    demo = build_elf(
        symtab=[Sym("demo_greet", 0x10), Sym("demo_add", 0x20), Sym("_ZN4demo5greetEPKci", 0x30)],
        build_id=bytes(range(0x60, 0x74)),
    ).write(d / "demo")
    for name, probes in (("jdk", [Probe("hotspot", "class__loaded", 0x10, "8@%rdx -4@%eax 8@152(%rdi) 1@%cl"),
                                  Probe("hotspot", "method__entry", 0x20, "-8@%rax 8@%rdx -4@%ecx 8@%rsi -4@%edi "
                                                                        "8@%r8 -4@%r9d")]),
                         ("jdk-nousdt", [])):  # fmt: skip
        (d / name / "lib" / "server").mkdir(parents=True)
        build_elf(shared=True, probes=probes).write(d / name / "lib" / "server" / "libjvm.so")
    return {
        "jdk": str(d / "jdk"),
        "jdk_nousdt": str(d / "jdk-nousdt"),
        "dir": str(d),
        "missing": str(d / "no-such-file"),
        "passwd": str(passwd),
        "truncated": str(truncated),
        "corrupt": str(d / "corrupt"),
        "demo": demo,
    }


def assert_one_error(r: subprocess.CompletedProcess[str], code: int, contains: str) -> str:
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("utrace: error: "), r.stderr
    assert contains in lines[0], lines[0]
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "internal error" not in lines[0]
    return lines[0]


CASES = [
    # (id, argv with {placeholders}, exit code, text in the message)
    ("list-missing", ["list", "{missing}"], TARGET, "no such file"),
    ("list-directory", ["list", "{dir}"], TARGET, "is a directory"),
    ("list-not-elf", ["list", "{passwd}"], TARGET, "not an ELF file"),
    ("list-truncated", ["list", "{truncated}"], TARGET, "truncated"),
    ("list-corrupt-shoff", ["list", "{corrupt}"], TARGET, "corrupt"),
    ("list-no-pid", ["list", "--pid", str(NO_PID)], TARGET, f"no process with pid {NO_PID}"),
    ("list-pid-zero", ["list", "--pid", "0"], USAGE, "invalid pid"),
    ("list-unknown-option", ["list", "--bogus", TRUE], USAGE, "No such option"),
    ("list-no-target", ["list"], USAGE, "missing TARGET"),
    ("list-nothing-matches", ["list", "{demo}", "zzz_nothing*"], USAGE, "nothing matches"),
    ("unknown-command", ["nosuchcmd"], USAGE, "No such command"),
    ("native-missing", ["native", "{missing}", "main"], TARGET, "no such file"),
    ("native-directory", ["native", "{dir}", "main"], TARGET, "is a directory"),
    ("native-not-elf", ["native", "{passwd}", "main"], TARGET, "not an ELF file"),
    ("native-truncated", ["native", "{truncated}", "main"], TARGET, "truncated"),
    ("native-corrupt-shoff", ["native", "{corrupt}", "main", "--dump-bpf"], TARGET, "corrupt"),
    ("native-no-pid", ["native", "--pid", str(NO_PID), "main"], TARGET, f"no process with pid {NO_PID}"),
    ("native-not-found", ["native", TRUE, "nonexistent_fn"], USAGE, "no function matches 'nonexistent_fn'"),
    ("native-not-found-dump", ["native", TRUE, "nonexistent_fn", "--dump-bpf"], USAGE, "no function matches"),
    ("native-no-usdt", ["native", TRUE, "nosuch:probe", "--dump-bpf"], USAGE, "no USDT probe matches"),
    ("native-no-probes", ["native", TRUE], USAGE, "name at least one function"),
    ("native-bad-max-len", ["native", TRUE, "main", "--max-len", "3"], USAGE, "--max-len"),
    ("native-bad-buffer", ["native", TRUE, "main", "--buffer-mb", "0", "--dump-bpf"], USAGE, "--buffer-mb"),
    ("native-pid-not-int", ["native", "--pid", "abc", "main"], USAGE, "--pid"),
    ("native-unknown-option", ["native", TRUE, "main", "--bogus"], USAGE, "No such option"),
    ("native-missing-command", ["native", "main", "--", "{missing}"], TARGET, "no such file"),
    ("node-not-node", ["node", "--binary", TRUE, "uv_listen", "--dump-bpf"], TARGET, "not a Node.js executable"),
    ("java-not-a-jvm", ["java", "--pid", str(os.getpid()), "class-load", "--dump-bpf"], TARGET, "is not a JVM"),
    ("java-home-without-libjvm", ["java", "--binary", "{dir}", "class-load"], TARGET, "not a JAVA_HOME"),
    ("java-not-a-launcher", ["java", "--binary", TRUE, "class-load"], TARGET, "not a java launcher"),
    ("java-no-usdt", ["java", "--binary", "{jdk_nousdt}", "class-load", "--dump-bpf"], TARGET, "no USDT probes"),
    ("jvm-unknown-probe", ["jvm", "--binary", "{jdk}", "class-lod", "--dump-bpf"], USAGE, "did you mean: class-load"),
    ("java-ret", ["java", "--binary", "{jdk}", "gc", "--ret"], USAGE, "--ret does not apply"),
    ("count-ret", ["native", TRUE, "main", "--count", "--ret", "--dump-bpf"], USAGE, "--ret does not apply to --count"),
    ("top-ret", ["native", TRUE, "main", "--top", "--ret", "--dump-bpf"], USAGE, "--ret does not apply to --top"),
    ("format-unknown", ["native", TRUE, "main", "--format", "xml"], USAGE, "'xml' is not one of"),
    ("format-and-json", ["native", TRUE, "main", "--json", "--format", "perfetto"], USAGE, "exclude each other"),
    ("perfetto-count", ["native", TRUE, "main", "--format", "perfetto", "--count"], USAGE, "do not stream"),
    ("otlp-hist", ["native", TRUE, "main", "--otlp", "http://127.0.0.1:4318", "--hist"], USAGE, "do not stream"),
    ("otlp-no-scheme", ["native", TRUE, "main", "--otlp", "127.0.0.1:4318"], USAGE, "--otlp needs an http://"),
    ("otlp-bad-port", ["native", TRUE, "main", "--otlp", "http://127.0.0.1:99999"], USAGE, "bad port"),
    # options checked before anything is resolved: the function exists, so only the option is wrong
    ("duration-zero", ["native", "{demo}", "demo_greet", "-d", "0", "--dump-bpf"], USAGE, "--duration must be"),
    ("duration-nan", ["native", "{demo}", "demo_greet", "-d", "nan", "--dump-bpf"], USAGE, "--duration must be"),
    ("duration-negative", ["native", "{demo}", "demo_greet", "-d", "-1", "--dump-bpf"], USAGE, "--duration must be"),
    ("duration-inf", ["native", "{demo}", "demo_greet", "-d", "inf", "--dump-bpf"], USAGE, "--duration must be"),
    ("max-events-zero", ["native", "{demo}", "demo_greet", "-n", "0", "--dump-bpf"], USAGE, "--max-events must be"),
    ("max-events-negative", ["native", "{demo}", "demo_greet", "-n", "-1", "--dump-bpf"], USAGE, "--max-events"),
    ("buffer-nan", ["native", "{demo}", "demo_greet", "--buffer-mb", "nan", "--dump-bpf"], USAGE, "--buffer-mb"),
    ("empty-pattern", ["native", "{demo}", "", "--dump-bpf"], USAGE, "empty pattern ''"),
    ("blank-pattern", ["native", "{demo}", "demo_greet", " ", "--dump-bpf"], USAGE, "empty pattern ' '"),
    ("node-empty-pattern", ["node", "", "--dump-bpf"], USAGE, "empty pattern"),
    ("java-empty-pattern", ["java", "--binary", "{jdk}", "", "--dump-bpf"], USAGE, "empty pattern"),
    (
        "otlp-unclosed-ipv6",
        ["native", "{demo}", "demo_greet", "--otlp", "http://[::1", "--dump-bpf"],
        USAGE,
        "malformed",
    ),
    ("otlp-space", ["native", "{demo}", "demo_greet", "--otlp", "http://exa mple:4318", "--dump-bpf"], USAGE, "spaces"),
    ("otlp-newline", ["native", "{demo}", "demo_greet", "--otlp", "http://host\n", "--dump-bpf"], USAGE, "control"),
    (
        "otlp-bad-host",
        ["native", "{demo}", "demo_greet", "--otlp", "http://-bad-:4318", "--dump-bpf"],
        USAGE,
        "bad host",
    ),
    (
        "otlp-not-an-ip",
        ["native", "{demo}", "demo_greet", "--otlp", "http://999.1.1.1", "--dump-bpf"],
        USAGE,
        "bad host",
    ),
    (
        "otlp-port-zero",
        ["native", "{demo}", "demo_greet", "--otlp", "http://127.0.0.1:0", "--dump-bpf"],
        USAGE,
        "bad port",
    ),
]

BAD_OPTIONS = [["-d", "0"], ["-d", "nan"], ["-d", "-1"], ["-n", "0"], ["-n", "-1"], ["--buffer-mb", "nan"],
               ["--otlp", "http://[::1"], ["--otlp", "http://a b"], ["--otlp", "http://999.1.1.1"]]  # fmt: skip


@pytest.mark.parametrize(("argv", "code", "contains"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error(files, tmp_path, argv, code, contains):
    r = run(*(a.format(**files) for a in argv), cache=tmp_path / "cache")
    assert_one_error(r, code, contains)
    assert r.stdout == ""


@pytest.mark.parametrize("bad", BAD_OPTIONS, ids=" ".join)
def test_bad_option_stops_before_anything_is_launched_or_attached(files, tmp_path, bad):
    """Without --dump-bpf: the command to launch never runs (it would print), nothing is attached."""
    r = run("native", files["demo"], "demo_greet", *bad, "--", "/bin/echo", "launched", cache=tmp_path / "cache")
    assert_one_error(r, USAGE, {"-d": "--duration", "-n": "--max-events"}.get(bad[0], bad[0]))
    assert "launched" not in r.stdout and "attached" not in r.stderr


def test_empty_pattern_among_others_is_refused(files, tmp_path):
    r = run("native", files["demo"], "demo_greet", "", "--", "/bin/echo", "launched", cache=tmp_path / "cache")
    assert_one_error(r, USAGE, "empty pattern")
    assert "launched" not in r.stdout


def test_error_lines_escape_names_from_the_binary(tmp_path):
    """A suggestion quotes names from the file: shown escaped, on one line, never raw."""
    hostile = "demo_greet\x1b]0;\x07\x9b[/x]\n"
    elf = build_elf(symtab=[Sym(hostile, 0x10)]).write(tmp_path / "hostile")
    r = run("native", elf, "demo_greet[/x]", "--dump-bpf", cache=tmp_path / "cache")
    line = assert_one_error(r, USAGE, "did you mean: demo_greet\\x1b]0;\\x07\\x9b[/x]\\x0a")
    assert not any(c in line for c in "\x1b\x07\x9b")


def test_not_found_suggests_close_names(files, tmp_path):
    r = run("native", files["demo"], "demo_gret", "--dump-bpf", cache=tmp_path / "cache")
    line = assert_one_error(r, USAGE, "no function matches 'demo_gret'")
    assert "did you mean: demo_greet" in line


def test_not_found_suggests_demangled_base_names(files, tmp_path):
    r = run("native", files["demo"], "demo::gret", cache=tmp_path / "cache")
    line = assert_one_error(r, USAGE, "no function matches 'demo::gret'")
    assert "did you mean" in line and "demo::greet" in line


def test_usdt_not_found_suggests_the_closest_probes(tmp_path):
    """Debian's python3 (built by others): its probes as readelf -n lists them are the suggestions."""
    python = os.path.realpath("/usr/bin/python3")
    notes = subprocess.run(["readelf", "-n", python], capture_output=True, text=True, check=True).stdout
    if "Provider: python" not in notes:
        pytest.skip(f"{python} has no USDT probes")
    assert "Name: function__entry" in notes and "Name: function__return" in notes
    for typo in ("python:function__entyr", "pyhton:function__entry"):
        line = assert_one_error(run("native", python, typo, "--dump-bpf", cache=tmp_path / "cache"), USAGE,
                                f"no USDT probe matches {typo!r}")  # fmt: skip
        assert line.endswith("(did you mean: python:function__entry, python:function__return)"), line


def test_a_c_function_asked_of_utrace_go_points_to_utrace_native(tmp_path):
    """x_cgo_init, cgo's C start-up function in an externally linked Go program: in its ELF symbols (nm), not
    in Go's function table. `utrace go` says so and names `utrace native`, which does trace it."""
    prog = REPO / "fixtures" / "build" / "go" / "greet-go1.26-extlink"
    if not prog.exists():
        pytest.skip(f"{prog} not built (scripts/build-fixtures.sh)")
    nm = subprocess.run(["nm", str(prog)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert any(ln.split()[1:] == ["T", "x_cgo_init"] for ln in nm if len(ln.split()) == 3)
    line = assert_one_error(run("go", str(prog), "x_cgo_init", "--dump-bpf", cache=tmp_path / "cache"), USAGE,
                            "no Go function 'x_cgo_init'")  # fmt: skip
    assert line.endswith("it names a C function of this program, not Go code: trace C functions with `utrace native`")
    r = run("native", str(prog), "x_cgo_init", "--dump-bpf", cache=tmp_path / "cache")
    assert r.returncode == 0 and r.stdout.count("\nint probe_") == 1, r.stderr
    # a Go name that is not there keeps its own reason and suggestions
    line = assert_one_error(run("go", str(prog), "main.Gret", "--dump-bpf", cache=tmp_path / "cache"), USAGE,
                            "package main is linked in")  # fmt: skip
    assert "utrace native" not in line


@pytest.mark.parametrize("warm", [False, True])
def test_errors_do_not_depend_on_the_cache(files, tmp_path, warm):
    cache = tmp_path / "cache"
    if warm:
        run("list", files["demo"], cache=cache)
    for _ in range(2):  # the second run reads what the first one cached
        r = run("native", files["demo"], "nonexistent_fn", cache=cache)
        assert_one_error(r, USAGE, "no function matches")
        r = run("list", files["truncated"], cache=cache)
        assert_one_error(r, TARGET, "truncated")


def test_dump_bpf_succeeds_without_root(files, tmp_path):
    """The control case: the same invocation style works when the function exists."""
    r = run("native", files["demo"], "demo_greet(const char *name, long n)", "--dump-bpf", cache=tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert "int probe_0(struct pt_regs *ctx) {" in r.stdout
    assert "bpf_probe_read_user_str(e->f0, 128, " in r.stdout
    assert "int probe_1(" not in r.stdout
    assert "demo_greet" not in r.stdout  # names never reach the C source


def test_java_dump_bpf_succeeds_without_root(files, tmp_path):
    r = run("jvm", "--binary", files["jdk"], "hotspot:class__loaded", "--dump-bpf", cache=tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert "bpf_probe_read_user(e->f0, k, " in r.stdout  # the class name: exactly `len` bytes
    assert "int probe_1(" not in r.stdout


def test_list_succeeds(files, tmp_path):
    r = run("list", files["demo"], "demo*", cache=tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert "demo_greet" in r.stdout and "demo_add" in r.stdout and "demo::greet(char const*, int)" in r.stdout


def test_no_command_prints_the_usage_as_written(tmp_path):
    """`utrace` alone: click's help text with its line breaks (it is ours; only a traced program's text is
    escaped), exit 2, no traceback; the escaping of error lines once showed it as one line of `\\x0a`s."""
    r = run(cache=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("Usage: utrace [OPTIONS] COMMAND [ARGS]...\n") and "\\x0a" not in r.stderr
    assert "\n  native " in r.stderr and "Traceback" not in r.stderr
