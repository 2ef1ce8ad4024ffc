"""Nothing raw reaches the terminal: a hostile program's names, comm, file name, USDT provider and string
arguments carry a window-title sequence (OSC 0 ... BEL), a clear-screen CSI, a raw C1 byte and rich
markup. utrace traces and lists it with exit 0, shows every such byte as a visible escape in text, and
keeps the exact values in JSON. Oracles: nm and readelf for the names, the program's own printout for
its comm and the string it passes.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, need

TITLE = b"\x1b]0;pwned\x07"
COMM = TITLE + b"[/x]"  # 13 bytes: fits comm's 15
SYMBOL = b"hostile_\x1b]0;evil\x07\x1b[2J\x9b[/x][bold]"  # a raw 0x9b: not UTF-8
PROVIDER = b"\x1b]0;e\x07[/"  # the same length as "evilprov", patched into the note
ARG = b"\x1b]0;title\x07\xc2\x9b[/x]"  # the string the program passes: UTF-8 with a C1 CSI
FILE = "prog-\x1b]0;file\x07[red]"  # no "/" in a file name

SOURCE = r"""
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/sdt.h>
#include <unistd.h>
#include <stdlib.h>

__attribute__((noinline)) int hostile_fn(int n) { __asm__ volatile(""); return n + 1; }
__attribute__((noinline)) int take_str(const char *s) { __asm__ volatile(""); return (int)strlen(s); }

static void hex(const char *what, const char *s) {
    printf("%s=", what);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) printf("%02x", *p);
    printf("\n");
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 3, delay_ms = argc > 2 ? atoi(argv[2]) : 0;
    static const char arg[] = "@ARG@";
    char name[16] = {0};
    prctl(PR_SET_NAME, "@COMM@", 0, 0, 0);
    prctl(PR_GET_NAME, name, 0, 0, 0);
    hex("comm", name);
    hex("arg", arg);
    fflush(stdout);
    int r = 0;
    for (int i = 0; i < n; i++) {
        r += hostile_fn(i);
        r += take_str(arg);
        STAP_PROBE1(evilprov, evil_probe, i);
        if (delay_ms) usleep(delay_ms * 1000);
    }
    return r == 0;
}
"""


def c_literal(b: bytes) -> str:
    """The inside of a C string literal for `b`: each byte as `\\xNN` in a piece of its own (a hex escape
    in C takes every hex digit that follows), pieces joined by `""`."""
    return '""'.join(f"\\x{c:02x}" for c in b)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc, objcopy = shutil.which("gcc"), shutil.which("objcopy")
    need(gcc is not None and objcopy is not None, "gcc and objcopy (binutils) are needed to build the program")
    d = tmp_path_factory.mktemp("hostile")
    (d / "h.c").write_text(SOURCE.replace("@ARG@", c_literal(ARG)).replace("@COMM@", c_literal(COMM)))
    built = subprocess.run([gcc, "-O1", "-o", str(d / "h0"), str(d / "h.c")], capture_output=True, text=True)
    need(built.returncode == 0, f"cannot build the hostile program: {built.stderr.strip()[:300]}")
    out = d / FILE
    rename = b"hostile_fn=" + SYMBOL
    subprocess.run([objcopy, b"--redefine-sym=" + rename, str(d / "h0"), str(d / "h1")], check=True)
    data = (d / "h1").read_bytes()
    assert data.count(b"evilprov\0evil_probe\0") == 1
    out.write_bytes(data.replace(b"evilprov\0evil_probe\0", PROVIDER + b"\0evil_probe\0"))
    out.chmod(0o755)
    return out


def run(*args: str | os.PathLike[str], tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("UTRACE_DEBUG", "COLUMNS")}
    env.update(LC_ALL="C.UTF-8", XDG_CACHE_HOME=str(tmp / "cache"))  # UTF-8 stdio, strict encoding
    return subprocess.run(
        [sys.executable, "-m", "utrace", *map(str, args)], capture_output=True, timeout=timeout, cwd=ROOT, env=env
    )


def visible(data: bytes) -> str:
    """`data` as UTF-8 (it must be), with no character a terminal acts on but newline, or the reason why not."""
    text = data.decode("utf-8")
    bad = [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cs", "Cf")]
    assert not bad, f"raw control characters {bad!r} in {text!r}"
    return text


def shown(b: bytes) -> str:
    """How text output shows a name given as bytes: every control or non-UTF-8 byte as \\xNN."""
    s = b.decode("utf-8", "surrogateescape")
    return "".join(c if c.isprintable() else f"\\x{ord(c) & 0xFF:02x}" for c in s)


def nm_names(path: Path) -> list[bytes]:
    out = subprocess.run(["nm", "--defined-only", str(path)], capture_output=True, check=True).stdout
    return [line.split(b" ", 2)[2] for line in out.splitlines() if line.count(b" ") >= 2]


def readelf_providers(path: Path) -> list[bytes]:
    out = subprocess.run(["readelf", "-n", str(path)], capture_output=True, check=True).stdout
    return [line.split(b"Provider: ", 1)[1] for line in out.splitlines() if b"Provider: " in line]


def printed(stdout: bytes, key: str) -> bytes:
    """What the program printed about itself: `key=HEX`."""
    for line in stdout.splitlines():
        if line.startswith(key.encode() + b"="):
            return bytes.fromhex(line.split(b"=", 1)[1].decode())
    raise AssertionError(f"the program did not print {key}: {stdout!r}")


def test_oracles_see_the_hostile_names(hostile: Path) -> None:
    """The control case: the bytes really are in the file (nm, readelf) and in the process (its printout)."""
    assert SYMBOL in nm_names(hostile)
    assert readelf_providers(hostile) == [PROVIDER]
    out = subprocess.run([str(hostile)], capture_output=True, check=True).stdout
    assert printed(out, "comm") == COMM and printed(out, "arg") == ARG


def test_trace_shows_names_comm_strings_and_frames_escaped(root_bpf: None, hostile: Path, tmp_path: Path) -> None:
    probes = ("hostile_*", "take_str(const char *s)", "*:evil_probe")
    r = run("native", hostile, *probes, "--stack", "--", hostile, tmp=tmp_path)
    out, err = visible(r.stdout), visible(r.stderr)  # the program's own printout is hex: plain ASCII
    assert r.returncode == 0, err
    assert printed(r.stdout, "comm") == COMM
    calls = [line for line in out.splitlines() if " -> " in line or " @ " in line]
    assert len(calls) == 9, out
    comm = shown(COMM)
    assert all(f" {comm} " in line for line in calls)
    assert sum(f"-> {shown(SYMBOL)} " in line for line in calls) == 3
    assert sum('-> take_str s="\\u001b]0;title\\u0007\\u009b[/x]"' in line for line in calls) == 3
    assert sum(f"@ {shown(PROVIDER)}:evil_probe " in line for line in calls) == 3
    assert f"#0  {shown(SYMBOL)}+0x0 ({shown(FILE.encode())})" in out  # the frame: function and file
    # stderr: the attach line names the file, the summary table the probes, then the summary line
    assert f"attached to {shown(str(hostile).encode())} " in err
    assert shown(SYMBOL) in err and f"{shown(PROVIDER)}:evil_probe" in err
    assert "9 events, 0 lost" in err and "traced program exited with 0" in err


def test_json_keeps_the_exact_values(root_bpf: None, hostile: Path, tmp_path: Path) -> None:
    r = run("native", hostile, "hostile_*", "take_str(const char *s)", "--json", "--", hostile, tmp=tmp_path)
    visible(r.stdout)  # exact, yet JSON-escaped: nothing raw either
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith(b"{")]
    calls = [e for e in events if e["kind"] == "call"]
    assert len(calls) == 6
    symbol = SYMBOL.decode("utf-8", "surrogateescape")  # as Python's json reads the \udc9b escape back
    assert {e["probe"] for e in calls} == {symbol, "take_str"}
    assert {e["comm"].encode() for e in calls} == {printed(r.stdout, "comm")}
    assert {e["args"]["s"].encode() for e in calls if e["probe"] == "take_str"} == {printed(r.stdout, "arg")}
    assert events[-1]["kind"] == "summary" and events[-1]["per_probe"] == {symbol: 3, "take_str": 3}


@pytest.mark.parametrize("mode", ["count", "top"])
def test_counts_and_top_escape_names_and_comm(root_bpf: None, hostile: Path, tmp_path: Path, mode: str) -> None:
    extra = ["--top", "--interval", "0.2"] if mode == "top" else ["--count"]
    r = run("native", hostile, "hostile_*", *extra, "--", hostile, "12", "100", tmp=tmp_path)
    out, err = visible(r.stdout), visible(r.stderr)
    assert r.returncode == 0, err
    rows = [line for line in out.splitlines() if line.startswith(shown(SYMBOL) + " ")]
    assert rows and rows[-1].split()[-2 if mode == "top" else -1] == "12", out
    if mode == "top":  # the comm is read while the program runs (1.2 s), every 0.2 s
        assert any(f" {shown(COMM)} " in row for row in rows), out
    assert "12 events, 0 lost" in err


def test_plain_listing_cold_and_cached(hostile: Path, tmp_path: Path) -> None:
    for _ in range(2):  # the second run reads the lines the first one cached
        r = run("list", hostile, tmp=tmp_path)
        out = visible(r.stdout)
        assert r.returncode == 0, r.stderr
        assert f" {shown(SYMBOL)}\n" in out and " take_str\n" in out
        assert f" {shown(PROVIDER)}:evil_probe " in out
        assert out.splitlines()[0] == f"# {shown(str(hostile).encode())}: {out.count(chr(10)) - 3} functions"


def test_json_listing_is_exact(hostile: Path, tmp_path: Path) -> None:
    r = run("list", hostile, "--json", tmp=tmp_path)
    visible(r.stdout)
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    names = {row["symbol"].encode("utf-8", "surrogateescape") for row in rows if row["kind"] == "function"}
    assert SYMBOL in names and names <= set(nm_names(hostile))
    (usdt,) = [row for row in rows if row["kind"] == "usdt"]
    assert usdt["provider"].encode() == PROVIDER and usdt["module"].encode() == str(hostile).encode()


def test_table_listing_on_a_terminal(hostile: Path, tmp_path: Path) -> None:
    """On a terminal rich draws a table: the names are cells, never markup (`[/x]` crashed it)."""
    env = {k: v for k, v in os.environ.items() if k != "UTRACE_DEBUG"}
    env.update(LC_ALL="C.UTF-8", XDG_CACHE_HOME=str(tmp_path / "cache"), COLUMNS="400", TERM="xterm")
    leader, follower = pty.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "utrace", "list", str(hostile), "*_*"],
        stdout=follower,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    os.close(follower)
    data = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            data += chunk
        elif p.poll() is not None:
            break
    os.close(leader)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    text = data.decode("utf-8")
    # rich colours the table with SGR sequences of its own; the names' OSC, BEL, CSI 2J and C1 stay out
    for raw in ("\x1b]", "\x07", "\x1b[2J", "\x9b", "\udc9b"):
        assert raw not in text, (raw, text)
    assert "Functions" in text and "USDT probes" in text
    assert shown(SYMBOL) in text and f"{shown(PROVIDER)}:evil_probe" in text


def test_error_suggestions_quote_names_escaped(hostile: Path, tmp_path: Path) -> None:
    r = run("native", hostile, "hostile_[/x]", "--dump-bpf", tmp=tmp_path)
    err = visible(r.stderr)
    assert r.returncode == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("utrace: error: no function matches") and f"did you mean: {shown(SYMBOL)}" in err


def test_listing_a_running_process_escapes_its_module_paths(hostile: Path, tmp_path: Path) -> None:
    """`--pid`: module paths come from the process's own /proc/PID/maps."""
    prog = subprocess.Popen([str(hostile), "600", "50"], stdout=subprocess.DEVNULL)  # 30 s at most
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{prog.pid}/comm").read_bytes().rstrip(b"\n") != COMM:  # past exec and prctl
            assert time.monotonic() < deadline and prog.poll() is None
            time.sleep(0.05)
        r = run("list", "--pid", str(prog.pid), "hostile_*", tmp=tmp_path)
    finally:
        prog.kill()
        prog.wait()
    out = visible(r.stdout)
    assert r.returncode == 0, r.stderr
    assert out.splitlines()[0] == f"# {shown(str(hostile).encode())}: 1 functions", out
    assert out.splitlines()[1].endswith(" " + shown(SYMBOL))
