"""Go programs as Debian sid builds them: externally linked (cgo), stripped, a few C symbols in `.dynsym`.

webhook (Go 1.26), prometheus-node-exporter (Go 1.26) and fzf (Go 1.27) from scripts/fetch-debian-go-programs.sh.
Their pclntab says textStart = 0; the Go functions start 0x100 bytes past `.text` (C code comes first).

Oracles, none written here:
- the live Go runtime's own function table: with GOTRACEBACK=system a SIGQUIT makes the runtime print,
  for every frame, the function name, `+0xOFF` (pc - entry, entry computed by the runtime from its module
  data) and `pc=0x...`; so pc - OFF is the entry as the runtime knows it, compared with `utrace list`;
- the servers' own request accounting: webhook -verbose logs each request it receives; node-exporter
  counts its scrapes in promhttp_metric_handler_requests_total;
- `go tool nm` of an unstripped externally linked cgo program built here with Go 1.26 (Debian's
  -dbgsym packages are in the debian-debug archive, which this network does not serve).
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Background, need, run_utrace
from utrace.elf.go import gobin

pytestmark = pytest.mark.e2e

PROGRAMS = ["webhook", "prometheus-node-exporter", "fzf"]
_FRAME = re.compile(r"^(\S+)\(.*\)\n\t\S+:\d+ \+0x([0-9a-f]+) fp=0x[0-9a-f]+ sp=0x[0-9a-f]+ pc=0x([0-9a-f]+)$", re.M)


@functools.cache
def _debian_root() -> str | None:
    p = subprocess.run(
        [str(ROOT / "scripts" / "fetch-debian-go-programs.sh")], capture_output=True, text=True, timeout=600
    )
    lines = p.stdout.strip().splitlines()
    return lines[-1] if p.returncode == 0 and lines else None


def program(name: str) -> str:
    root = _debian_root()
    need(root is not None, "Debian sid's Go programs could not be fetched (scripts/fetch-debian-go-programs.sh)")
    return f"{root}/usr/bin/{name}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def listing(path: str, *pattern: str) -> dict[str, int]:
    p = run_utrace("list", path, *pattern, "--functions", "--json", check=True)
    return {json.loads(line)["symbol"]: json.loads(line)["address"] for line in p.stdout.splitlines()}


def listing_all(path: str) -> dict[str, set[int]]:
    """Name -> every listed address with it (a Go program may have two functions of one name, e.g. an
    assembly function and its ABI wrapper)."""
    out: dict[str, set[int]] = {}
    for line in run_utrace("list", path, "--functions", "--json", check=True).stdout.splitlines():
        row = json.loads(line)
        out.setdefault(row["symbol"], set()).add(row["address"])
    return out


def count_of(out: str, probe: str) -> int:
    """The calls column of utrace --count's row for `probe`."""
    rows = re.findall(rf"^{re.escape(probe)}\s+\d+\s+(\d+)$", out, re.M)
    assert len(rows) == 1, out
    return int(rows[0])


# ----------------------------------------------------------------------------- the runtime's own addresses


def runtime_entries(cmd: list[str], stdin: bool = False) -> dict[str, int]:
    """Function entries the live Go runtime reports (pc - offset of every frame of a SIGQUIT dump)."""
    env = {**os.environ, "GOTRACEBACK": "system"}
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        time.sleep(1.5)
        assert proc.poll() is None, f"{cmd[0]} exited early"
        proc.send_signal(signal.SIGQUIT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    entries: dict[str, int] = {}
    for name, off, pc in _FRAME.findall(err):
        entries.setdefault(name, int(pc, 16) - int(off, 16))
    return entries


@pytest.mark.parametrize("name", PROGRAMS)
def test_listing_equals_the_runtime_function_entries(tmp_path: Path, name: str) -> None:
    path = program(name)
    if name == "webhook":
        hooks = tmp_path / "hooks.json"
        hooks.write_text('[{"id": "ping", "execute-command": "/bin/true"}]')
        cmd = [path, "-hooks", str(hooks), "-ip", "127.0.0.1", "-port", str(free_port())]
    elif name == "prometheus-node-exporter":
        cmd = [path, f"--web.listen-address=127.0.0.1:{free_port()}", "--collector.disable-defaults"]
    else:
        cmd = [path, "--filter", "x"]  # reads stdin until EOF: stays alive while the pipe is open
    reported = runtime_entries(cmd, stdin=name == "fzf")
    assert len(reported) >= 10, f"too few frames in {name}'s SIGQUIT dump: {reported}"
    listed = listing_all(path)
    compared = [n for n in reported if "[...]" not in n]
    assert len(compared) >= 10
    wrong = {
        n: (hex(reported[n]), sorted(map(hex, listed.get(n, ()))))
        for n in compared
        if reported[n] not in listed.get(n, ())
    }
    assert wrong == {}, "runtime entry vs utrace list"
    # the functions in those stacks are among thousands: the listing is the pclntab's, not `.dynsym`'s three
    assert len(listed) > 4000


@pytest.mark.parametrize("name", PROGRAMS)
def test_text_base_is_the_module_data_not_text_section(name: str) -> None:
    path = program(name)
    with gobin.GoBinary(path) as b:
        tab = b.pclntab()
        text = b.img.section(".text")
        module = b.img.section(".go.module")
        assert tab.header is not None and tab.header.text_start == 0  # what made the old code guess
        assert text is not None and module is not None
        assert tab.module_va == module.addr and tab.text_start_source.startswith("moduledata.text")
        # external link: C code first, the Go functions after it
        assert tab.text_start > text.addr


def test_completion_offers_go_names_of_a_debian_program() -> None:
    path = program("webhook")
    env = {
        **os.environ,
        "_UTRACE_COMPLETE": "bash_complete",
        "COMP_WORDS": f"utrace go {path} main.hookH",
        "COMP_CWORD": "3",
    }
    p = subprocess.run([sys.executable, "-m", "utrace"], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "plain,main.hookHandler" in lines and all(line.startswith("plain,main.hookHandler") for line in lines)


def test_native_traces_a_debian_go_program_by_its_pclntab(root_bpf: None) -> None:
    """`utrace native` names a file as `list` does: webhook's ELF tables hold no Go function (its .dynsym
    names only cgo helpers), its pclntab does. main.main runs once; the version line is webhook's own."""
    path = program("webhook")
    p = run_utrace("native", "main.main", "--", path, "-version", timeout=180)
    assert p.returncode == 0, p.stderr
    assert re.search(r"^webhook version \d", p.stdout, re.M), p.stdout
    calls = [line for line in p.stdout.splitlines() if re.search(r"-> main\.main\b", line)]
    assert len(calls) == 1, p.stdout + p.stderr


# ----------------------------------------------------------------------------- real servers, --pid


def test_webhook_requests_counted_by_pid(tmp_path: Path, root_bpf: None, background: list[Background]) -> None:
    path = program("webhook")
    port = free_port()
    hooks = tmp_path / "hooks.json"
    hooks.write_text('[{"id": "ping", "execute-command": "/bin/true", "response-message": "pong"}]')
    log = tmp_path / "webhook.log"
    with open(log, "w") as logf:
        server = subprocess.Popen(
            [path, "-hooks", str(hooks), "-verbose", "-ip", "127.0.0.1", "-port", str(port)],
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}/hooks/ping"
        wait_http(url)
        before = log.read_text().count("incoming HTTP")
        t = Background("go", "--pid", str(server.pid), "main.hookHandler", "--count", "--duration", "120")
        background.append(t)
        t.wait_attached()
        for _ in range(6):
            assert urllib.request.urlopen(url, timeout=10).read() == b"pong"
        time.sleep(0.5)
        t.proc.send_signal(signal.SIGINT)
        out, err, rc = t.finish()
        assert rc == 0, err
        served = log.read_text().count("incoming HTTP") - before  # the server's own log
        assert served == 6
        assert count_of(out, "main.hookHandler") == served
        assert server.poll() is None, "webhook died while traced"
        assert urllib.request.urlopen(url, timeout=10).read() == b"pong"
    finally:
        server.kill()
        server.wait()


def test_webhook_stack_names_agree_with_the_listing(
    tmp_path: Path, root_bpf: None, background: list[Background]
) -> None:
    """--stack names frames from the same source as `utrace list`: each frame's address minus its offset
    is a listed entry of that name, and the innermost frame is the traced function."""
    path = program("webhook")
    port = free_port()
    hooks = tmp_path / "hooks.json"
    hooks.write_text('[{"id": "ping", "execute-command": "/bin/true"}]')
    server = subprocess.Popen(
        [path, "-hooks", str(hooks), "-ip", "127.0.0.1", "-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/hooks/ping"
        wait_http(url)
        t = Background("go", "--pid", str(server.pid), "main.hookHandler", "--stack", "--json", "-n", "1")
        background.append(t)
        t.wait_attached()
        urllib.request.urlopen(url, timeout=10).read()
        out, err, rc = t.finish()
        assert rc == 0, err
        event = next(json.loads(line) for line in out.splitlines() if '"stack"' in line)
        frames = [f for f in event["stack"] if f["module"] and f["module"].endswith("webhook")]
        assert frames[0]["function"] == "main.hookHandler"
        listed = listing_all(path)
        named = [f for f in frames if f["function"]]
        assert len(named) >= 3 and len(named) == len(frames)
        for f in named:
            assert f["address"] - f["offset"] in listed[f["function"]], f
        assert any(f["function"].startswith("net/http.") for f in named)
    finally:
        server.kill()
        server.wait()


def _scrapes(url: str) -> int:
    body = urllib.request.urlopen(url, timeout=30).read().decode()
    m = re.search(r'^promhttp_metric_handler_requests_total\{code="200"\} (\d+)$', body, re.M)
    assert m, body[:500]
    return int(m.group(1))


def test_node_exporter_scrapes_counted_by_pid(root_bpf: None, background: list[Background]) -> None:
    path = program("prometheus-node-exporter")
    port = free_port()
    server = subprocess.Popen(
        [path, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults", "--collector.loadavg"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    handler = "github.com/prometheus/client_golang/prometheus/promhttp.HandlerForTransactional.func1"
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_http(url)
        first = _scrapes(url)  # counted once it has been served
        t = Background("go", "--pid", str(server.pid), handler, "--hist", "--duration", "120")
        background.append(t)
        t.wait_attached()
        for _ in range(5):
            urllib.request.urlopen(url, timeout=30).read()
        t.proc.send_signal(signal.SIGINT)
        out, err, rc = t.finish()
        assert rc == 0, err
        traced = _scrapes(url) - first - 1  # the server's counter: scrapes served while traced
        assert traced == 5
        assert count_of(out, handler) == traced
        assert count_of(out, handler + " (return)") == traced  # return-instruction probes, no uretprobe
        assert server.poll() is None, "node-exporter died while traced"
    finally:
        server.kill()
        server.wait()


# ----------------------------------------------------------------------------- our own external link, go tool nm

CGO_PROGRAM = """package main

/*
static int add(int a, int b) { return a + b; }
*/
import "C"

import (
\t"fmt"
\t"os"
)

//go:noinline
func Work(n int) int { return int(C.add(C.int(n), 1)) }

func main() {
\tfmt.Println(Work(len(os.Args)))
}
"""


@pytest.fixture(
    scope="module",
    params=[("1.26", "exe"), ("1.26", "pie"), ("1.24", "exe"), ("1.15", "exe")],
    ids=["go1.26", "go1.26-pie", "go1.24", "go1.15"],
)
def external_build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(unstripped, stripped copy, GOROOT) of a cgo program linked by gcc, as Debian links: Go 1.26 (textStart
    0), also as a PIE (module data words relocated at load time), 1.24 (1.20 table, textStart set) and 1.15
    (1.2 table, absolute entries)."""
    version, mode = request.param
    fetch = subprocess.run([str(ROOT / "scripts" / "fetch-go.sh"), version], capture_output=True, text=True)
    lines = fetch.stdout.strip().splitlines()
    cached = Path(os.environ.get("UTRACE_TOOLCHAINS", Path.home() / ".cache" / "utrace" / "toolchains"))
    cached = cached / f"go-{version}" / "usr" / "lib" / f"go-{version}"
    goroot = lines[-1] if fetch.returncode == 0 and lines else str(cached)
    need(Path(goroot, "bin", "go").exists(), f"Go {version} toolchain not available (scripts/fetch-go.sh {version})")
    d = tmp_path_factory.mktemp("cgo")
    (d / "main.go").write_text(CGO_PROGRAM)
    env = {k: v for k, v in os.environ.items() if k not in ("GOFLAGS", "GOOS", "GOARCH")}
    cache = Path(os.environ.get("UTRACE_CACHE", Path.home() / ".cache" / "utrace")) / "gocache"
    env.update(GOROOT=goroot, GOTOOLCHAIN="local", GO111MODULE="off", CGO_ENABLED="1", GOCACHE=str(cache))
    full, stripped = d / "cgo-ext", d / "cgo-ext-stripped"
    subprocess.run(
        [f"{goroot}/bin/go", "build", f"-buildmode={mode}", "-ldflags=-linkmode=external", "-o", str(full)],
        cwd=d,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    subprocess.run(["strip", "-o", str(stripped), str(full)], check=True)
    return full, stripped, goroot


def test_external_link_listing_equals_go_tool_nm(external_build: tuple[Path, Path, str]) -> None:
    full, stripped, goroot = external_build
    out = subprocess.run(
        [f"{goroot}/bin/go", "tool", "nm", str(full)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GOROOT": goroot, "GOTOOLCHAIN": "local"},
    ).stdout
    nm: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1] in "Tt":
            nm[parts[2].replace("·", ".")] = int(parts[0], 16)
    text, etext = nm.pop("runtime.text"), nm["runtime.etext"]
    with gobin.GoBinary(str(full)) as b:
        sec = b.img.section(".text")
        assert sec is not None and sec.addr < text  # C code first: the start of .text is not the base
    got = {k.replace("·", "."): v for k, v in listing(str(full)).items()}
    # every listed function (Go from the pclntab, C from .symtab) is where nm says
    assert {k: v for k, v in got.items() if k in nm} == {k: nm[k] for k in got if k in nm}
    assert set(got) - set(nm) == set()
    # every Go function nm knows is listed
    go_nm = {k: v for k, v in nm.items() if text <= v < etext and k != "runtime.etext"}
    assert {k: got.get(k) for k in go_nm} == go_nm
    assert "main.Work" in go_nm and len(go_nm) > 1000
    # the C part (cgo's runtime) is listed from .symtab, outside the Go functions
    assert got["x_cgo_init"] == nm["x_cgo_init"] and not text <= nm["x_cgo_init"] < etext
    # stripped: the same Go functions at the same addresses, from the pclntab alone
    # (names as pairs: without .symtab an assembly function and its ABI wrapper share one name)
    got_stripped = {(k.replace("·", "."), a) for k, addrs in listing_all(str(stripped)).items() for a in addrs}
    assert {(k, a) for k, a in got_stripped if text <= a < etext} == {
        (k.removesuffix(".abi0"), a) for k, a in go_nm.items()
    }


def test_external_link_stripped_traced(external_build: tuple[Path, Path, str], root_bpf: None) -> None:
    _full, stripped, _goroot = external_build
    p = run_utrace("go", str(stripped), "main.Work", "--ret", "--json", "--", str(stripped), "a", "b", timeout=180)
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    kinds = [e.get("kind") for e in events if e.get("probe") == "main.Work"]
    assert kinds == ["call", "return"], p.stdout
