"""Shell completion through the real protocol: the installed `utrace` script called the way the
shells call it (`_UTRACE_COMPLETE=bash_complete COMP_WORDS=... COMP_CWORD=...`), and the bash script
sourced into a real bash whose completion function fills COMPREPLY.

Oracles: `nm` / `nm -C` (function names), `readelf -n` (USDT probes), the unstripped Go binary's
`nm` for the stripped one's pclntab names, and utrace's own `--help` texts for commands and the JVM
catalogue. No root needed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, need

pytestmark = pytest.mark.e2e

UTRACE = Path(sys.executable).parent / "utrace"  # the console script pip installed


@pytest.fixture(scope="module")
def built(fixtures_built: Path) -> Path:
    need(UTRACE.exists(), f"{UTRACE} is not installed (make setup)")
    need(shutil.which("nm") is not None and shutil.which("readelf") is not None, "binutils not installed")
    return fixtures_built


def complete(line: str, shell: str = "bash") -> list[str]:
    """What `utrace` answers for the words of `line` (the last one, possibly empty, being completed)."""
    words = line.split(" ")
    env = {**os.environ, "_UTRACE_COMPLETE": f"{shell}_complete", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
    p = subprocess.run([str(UTRACE)], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return p.stdout.splitlines()


def plain(line: str) -> list[str]:
    """Bash's plain candidates, unescaped."""
    out = []
    for entry in complete(line):
        kind, _, value = entry.partition(",")
        assert kind == "plain", entry
        out.append(re.sub(r"\\(.)", r"\1", value))
    return out


def nm_functions(path: Path, *, demangle: bool = False) -> list[str]:
    args = ["nm", "--defined-only", *(["-C"] if demangle else []), str(path)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [ln.split(" ", 2)[2] for ln in out.splitlines() if ln.split(" ", 2)[1:2] and ln.split(" ", 2)[1] in "TtWw"]


def test_commands_are_those_of_the_help(built: Path) -> None:
    help_text = subprocess.run([str(UTRACE), "--help"], capture_output=True, text=True, check=True).stdout
    commands = re.findall(r"^  (\w+)\s", help_text.split("Commands:")[1], re.M)
    assert sorted(plain("utrace ")) == sorted(commands)
    assert plain("utrace na") == ["native"]
    assert "--dump-bpf" in plain("utrace go --d") and "--duration" in plain("utrace go --d")


def test_native_function_names_are_nm_s(built: Path) -> None:
    exe = built / "c" / "sdt_demo"
    assert complete(f"utrace native {exe.parent}/sdt") == [f"file,{exe.parent}/sdt"]  # BINARY first: files
    expected = sorted(n for n in nm_functions(exe) if n.startswith("demo_"))
    assert expected and plain(f"utrace native {exe} demo_") == expected
    assert plain(f"utrace native {exe} demo_add demo_g") == ["demo_greet"]  # every later word too


def test_usdt_probes_are_readelf_s(built: Path) -> None:
    exe = built / "c" / "sdt_demo"
    notes = subprocess.run(["readelf", "-n", str(exe)], capture_output=True, text=True, check=True).stdout
    probes = sorted(f"{p}:{n}" for p, n in re.findall(r"Provider: (\S+)\s+Name: (\S+)", notes))
    assert probes and plain(f"utrace native {exe} {probes[0].split(':')[0]}:") == probes


def test_cpp_names_are_nm_c_s_without_parameters(built: Path) -> None:
    exe = built / "cpp" / "overloads"
    expected = set()
    for name in nm_functions(exe, demangle=True):
        head = name.split("(")[0]
        if head.startswith("demo::"):
            expected.add(head)
        elif " demo::" in head:  # a template's return type comes first
            expected.add("demo::" + head.split(" demo::", 1)[1])
    assert expected and sorted(plain(f"utrace native {exe} demo::")) == sorted(expected)
    mangled = sorted(n for n in nm_functions(exe) if n.startswith("_ZN4demo5Shape"))
    assert mangled and plain(f"utrace native {exe} _ZN4demo5Shape") == mangled  # raw names match too


def test_stripped_go_names_come_from_the_pclntab(built: Path) -> None:
    """The stripped binary has no symbols: its candidates must be the unstripped build's symbols."""
    stripped, full = built / "go" / "greet-stripped", built / "go" / "greet"
    assert not _has_symtab(stripped)
    expected = sorted(n for n in nm_functions(full) if n.startswith("main."))
    assert "main.(*T).M" in expected
    assert plain(f"utrace go {stripped} main.") == expected
    assert plain(f"utrace go {full} main.(") == ["main.(*T).M"]


def _has_symtab(path: Path) -> bool:
    return ".symtab" in subprocess.run(["readelf", "-S", str(path)], capture_output=True, text=True).stdout


def test_java_catalogue_is_the_one_in_the_help(built: Path) -> None:
    help_text = subprocess.run([str(UTRACE), "java", "--help"], capture_output=True, text=True, check=True).stdout
    listed = help_text.split("PROBES:")[1].split(", or hotspot")[0].split()
    assert sorted(plain("utrace java ")) == sorted(listed)
    assert plain("utrace java --pid 1 class-") == ["class-init", "class-load", "class-unload"]


def test_node_names_are_nm_s_and_few(built: Path) -> None:
    node = shutil.which("node")
    need(node is not None, "node is not installed")
    assert node is not None
    names = nm_functions(Path(os.path.realpath(node)))
    expected = sorted(n for n in set(names) if n.startswith("uv_fs_"))
    assert plain("utrace node uv_fs_") == expected
    everything = plain("utrace node ")
    assert 1 < len(everything) <= 100  # 100k names: grouped by their next part
    raw = set(names)
    demangled = set(nm_functions(Path(os.path.realpath(node)), demangle=True))
    assert all(any(n.startswith(c) for n in raw | demangled) for c in everything[:20])


def test_after_the_double_dash_come_files(built: Path) -> None:
    exe = built / "c" / "sdt_demo"
    assert complete(f"utrace native {exe} demo_add -- {exe.parent}/sd") == [f"file,{exe.parent}/sd"]


def test_pids_with_their_names(built: Path) -> None:
    proc = subprocess.Popen([str(built / "go" / "greet"), "--wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"ready")
        # zsh's protocol carries the help: type, value, help per candidate
        triples = complete(f"utrace native --pid {proc.pid}", shell="zsh")
        pids = dict(zip(triples[1::3], triples[2::3], strict=True))
        assert pids[str(proc.pid)] == "greet"
        # the probe names of the process's executable
        assert plain(f"utrace go --pid {proc.pid} main.Gr") == ["main.Greet"]
    finally:
        proc.kill()
        proc.wait()


def _bash(script: str) -> str:
    bash = shutil.which("bash")
    need(bash is not None, "bash is not installed")
    assert bash is not None
    env = {**os.environ, "PATH": f"{UTRACE.parent}:{os.environ.get('PATH', '')}"}
    p = subprocess.run([bash, "--norc", "--noprofile", "-c", script], capture_output=True, text=True, env=env,
                       timeout=120, cwd=ROOT)  # fmt: skip
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_bash_script_registers_and_fills_compreply(built: Path) -> None:
    """The script in a real bash: COMP_WORDS split the way bash splits them (COMP_WORDBREAKS has `:`)."""
    exe = built / "c" / "sdt_demo"
    cpp = built / "cpp" / "overloads"
    greet = built / "go" / "greet"
    out = _bash(f"""
        eval "$(utrace completion bash)"
        complete -p utrace
        call() {{ COMPREPLY=(); COMP_LINE="$1"; COMP_POINT=${{#COMP_LINE}}; shift; COMP_WORDS=("$@");
                  COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); _utrace_completion utrace;
                  printf '%s|' "${{COMPREPLY[@]}}"; echo; }}
        call "utrace native {exe} demo_" utrace native {exe} demo_
        call "utrace native {exe} utrace_demo:t" utrace native {exe} utrace_demo : t
        call "utrace native {exe} utrace_demo:" utrace native {exe} utrace_demo :
        call "utrace native {cpp} demo::Shape::a" utrace native {cpp} demo :: Shape :: a
        call "utrace go {greet} main.(" utrace go {greet} 'main.\\('
        call "utrace go {greet} 'main.(" utrace go {greet} "'main.("
    """)
    lines = out.splitlines()
    assert lines[0] == "complete -o nosort -F _utrace_completion utrace"
    assert lines[1:] == [
        "demo_add|demo_greet|",
        "tick|",  # replaces bash's current word `t`: the line reads utrace_demo:tick
        ":gated|:tick|",  # replaces the word `:`
        "area|",
        r"main.\(\*T\).M|",  # escaped for the shell
        "'main.(*T).M|",  # inside the user's quote
    ]


def test_zsh_and_fish_scripts_call_back_utrace(built: Path) -> None:
    for shell in ("zsh", "fish"):
        p = subprocess.run([str(UTRACE), "completion", shell], capture_output=True, text=True, check=True)
        assert f"_UTRACE_COMPLETE={shell}_source" not in p.stdout and f"{shell}_complete" in p.stdout
    p = subprocess.run([str(UTRACE), "completion", "tcsh"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("utrace: error:") and len(p.stderr.splitlines()) == 1
