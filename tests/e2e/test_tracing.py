"""Tracing real processes, checked against what the programs themselves print."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Background, load_base, read_text_byte, run_utrace, uprobe_events, utrace_cmd

pytestmark = pytest.mark.usefixtures("root_bpf")
SERVER = str(ROOT / "fixtures" / "node" / "server.js")
FSOPS = str(ROOT / "fixtures" / "node" / "fsops.js")


def events(stdout: str) -> tuple[list[dict[str, object]], dict[str, object]]:
    objs = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert objs and objs[-1]["kind"] == "summary", stdout[-500:]
    return objs[:-1], objs[-1]


def start_waiting(argv: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready"), line
    return proc


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def test_node_pid_uv_tcp_listen_backlog(node_bin: str, background: list[Background]) -> None:
    server = start_waiting([node_bin, SERVER, "--wait"])
    try:
        bg = Background("node", "--pid", str(server.pid), "uv_tcp_listen", "--json", "-n", "1")
        background.append(bg)
        bg.wait_attached()
        release(server)
        out, err, rc = bg.finish()
        assert rc == 0, err
        evs, summary = events(out)
        assert "renamed uv__tcp_listen" in err  # says which function it really traced
        assert len(evs) == 1 and evs[0]["probe"] == "uv__tcp_listen"
        args = evs[0]["args"]
        assert isinstance(args, dict)
        assert args["backlog"] == 511 and args["type"] == "tcp"
        assert evs[0]["pid"] == server.pid
        assert summary["lost"] == 0
        assert server.poll() is None, "the traced server must still be running"
        assert server.stdout is not None
        assert server.stdout.readline().startswith("listening")
    finally:
        server.terminate()
        server.wait()


def test_node_launch_mode_and_demangled_cpp_probe(node_bin: str) -> None:
    script = "require('net').createServer().listen(0, () => { console.log('up'); process.exit(7) })"
    p = run_utrace("node", "uv_listen", "node::TCPWrap::Listen", "--json", "--", node_bin, "-e", script)
    assert p.returncode == 0, p.stderr
    evs, summary = events(p.stdout)
    probes = [e["probe"] for e in evs]
    assert "uv_listen" in probes
    assert any(str(x).startswith("node::TCPWrap::Listen(") for x in probes)
    listen = next(e for e in evs if e["probe"] == "uv_listen")
    assert listen["args"]["backlog"] == 511  # type: ignore[index]
    assert summary["exit_code"] == 7
    assert summary["stopped_by"] == "target exited"


def test_node_fs_counts_equal_the_script(node_bin: str, background: list[Background]) -> None:
    proc = start_waiting([node_bin, FSOPS, "--wait", "--files", "4"])
    try:
        bg = Background("node", "--pid", str(proc.pid), "uv_fs_*", "--json")
        background.append(bg)
        bg.wait_attached()
        release(proc)
        out_app, _ = proc.communicate(timeout=60)
        out, err, rc = bg.finish()
        assert rc == 0, err
        want = json.loads(out_app.strip().splitlines()[-1])
        evs, _summary = events(out)
        got: dict[str, int] = {}
        for e in evs:
            got[str(e["probe"]).removeprefix("uv_fs_")] = got.get(str(e["probe"]).removeprefix("uv_fs_"), 0) + 1
        assert {k: got.get(k, 0) for k in want} == want
        opened = [e["args"]["path"] for e in evs if e["probe"] == "uv_fs_open"]  # type: ignore[index]
        assert all("utrace-fsops-" in str(p) for p in opened)
    finally:
        if proc.poll() is None:
            proc.kill()


ITER = re.compile(r"iter (\d+) add\((\d+),(\d+)\)=(\d+) greet\(([^,]+),(\d+)\) tick\((\d+),([^,]+),(-?\d+)\)")


@pytest.mark.parametrize("multi", ["1", "0"], ids=["multi-uprobe links", "perf events"])
def test_native_c_arguments_and_usdt_exact(fixtures_built: Path, monkeypatch: pytest.MonkeyPatch, multi: str) -> None:
    """Both ways of attaching (one multi-uprobe link per file and kind, Linux >= 6.6; one perf event
    per probe, older kernels or UTRACE_UPROBE_MULTI=0) deliver every argument, return and USDT probe,
    the semaphore-gated one included."""
    monkeypatch.setenv("UTRACE_UPROBE_MULTI", multi)
    exe = str(fixtures_built / "c" / "sdt_demo")
    p = run_utrace(
        "native", exe, "demo_add(int a, int b)", "demo_greet(const char *name, long n)",
        "utrace_demo:tick", "utrace_demo:gated", "--ret", "--json", "--", exe, "6",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    evs, summary = events(p.stdout)
    printed = ITER.findall(p.stdout)
    assert len(printed) == 6
    adds = [e for e in evs if e["probe"] == "demo_add" and e["kind"] == "call"]
    rets = [e for e in evs if e["probe"] == "demo_add" and e["kind"] == "return"]
    greets = [e for e in evs if e["probe"] == "demo_greet" and e["kind"] == "call"]
    ticks = [e for e in evs if e["probe"] == "utrace_demo:tick"]
    gated = [e for e in evs if e["probe"] == "utrace_demo:gated"]
    for row, add, ret, greet, tick in zip(printed, adds, rets, greets, ticks, strict=True):
        _i, a, b, s, name, n, ti, _tmsg, tval = row
        assert add["args"] == {"a": int(a), "b": int(b)}
        assert ret["ret"] == int(s) and isinstance(ret["latency_ns"], int) and ret["latency_ns"] > 0
        assert greet["args"] == {"name": name, "n": int(n)}
        assert tick["args"]["arg0"] == int(ti) and tick["args"]["arg2"] == int(tval)  # type: ignore[index]
    fired = int(re.search(r"gated fired (\d+)", p.stdout)[1])  # type: ignore[index]
    assert fired == 6, "the kernel must have raised the semaphore while the probe was attached"
    assert len(gated) == fired
    assert summary["lost"] == 0


def _attachments(pid: int) -> tuple[list[tuple[str, int]], int]:
    """What process `pid` holds, as the kernel reports it: (link type, uprobe count) of each BPF link,
    and the number of perf event fds."""
    links, perf = [], 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            what = os.readlink(f"/proc/{pid}/fd/{fd}")
            lines = Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines()
            info = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
        except OSError:
            continue
        if what == "anon_inode:bpf_link":
            links.append((info.get("link_type", "?"), int(info.get("uprobe_cnt", "0"))))
        elif what == "anon_inode:[perf_event]":
            perf += 1
    return sorted(links), perf


@pytest.mark.parametrize("multi", ["1", "0"], ids=["multi-uprobe links", "perf events"])
def test_probes_are_grouped_into_one_link_per_file_and_kind(
    fixtures_built: Path, monkeypatch: pytest.MonkeyPatch, multi: str
) -> None:
    """Entry and return probes on two functions of the executable and one of libc: the kernel's fdinfo
    shows one multi-uprobe link per file and kind (detaching then waits for the kernel once per link,
    not once per probe), or one perf event per probe when multi links are off; detaching removes
    every breakpoint either way."""
    monkeypatch.setenv("UTRACE_UPROBE_MULTI", multi)
    exe = str(fixtures_built / "c" / "sdt_demo-pie")
    prog = start_waiting([exe, "--wait", "100", "20"])
    try:
        bg = Background("native", "--pid", str(prog.pid), "demo_add", "demo_greet", "strlen", "--ret", "--json")
        bg.wait_attached()
        links, perf = _attachments(bg.proc.pid)
        # a --pid trace also runs programs on the exec, fork and exit tracepoints (see test_follow.py)
        assert [link for link in links if link[0] == "raw_tracepoint"] == [("raw_tracepoint", 0)] * 3, links
        links = [link for link in links if link[0] != "raw_tracepoint"]
        if multi == "1":
            # strlen is an IFUNC in libc: it resolves to one implementation in its own module
            assert perf == 0 and links == sorted(
                [("uprobe_multi", 2), ("uretprobe_multi", 2), ("uprobe_multi", 1), ("uretprobe_multi", 1)]
            ), links
        else:
            assert links == [] and perf == 6
        from utrace.elf.index import symbols_for

        t = symbols_for(exe)
        addr = t.addresses[t.raws.index("demo_add")] + load_base(prog.pid, exe)
        assert read_text_byte(prog.pid, addr) == 0xCC
        release(prog)
        time.sleep(0.3)
        bg.proc.send_signal(signal.SIGINT)
        out, err, rc = bg.finish()
        assert rc == 0, err
        evs, _summary = events(out)
        assert {e["probe"] for e in evs} >= {"demo_add", "demo_greet"}
        assert read_text_byte(prog.pid, addr) != 0xCC, "breakpoint removed after detach"
    finally:
        if prog.poll() is None:
            prog.kill()
        prog.wait()


def test_semaphore_is_zero_without_utrace(fixtures_built: Path) -> None:
    out = subprocess.run([str(fixtures_built / "c" / "sdt_demo"), "2"], capture_output=True, text=True).stdout
    assert "gated fired 0" in out


def test_lost_events_are_counted(fixtures_built: Path) -> None:
    hot = str(fixtures_built / "c" / "hot")
    n = 50000
    p = run_utrace("native", hot, "hot", "--json", "--buffer-mb", "0.004", "--", hot, str(n), timeout=300)
    assert p.returncode == 0, p.stderr
    _evs, summary = events(p.stdout)
    assert summary["lost"] > 0, "a one-page ring buffer must overflow"
    assert summary["events"] + summary["lost"] == n, "every call is either delivered or counted as lost"
    assert "lost" in p.stderr


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "target-exit"])
def test_detaches_and_leaves_the_program_running(fixtures_built: Path, how: str) -> None:
    exe = str(fixtures_built / "c" / "sdt_demo-pie")
    prog = start_waiting([exe, "--wait", "200", "20"])
    try:
        bg = Background("native", "--pid", str(prog.pid), "demo_add", "--json")
        bg.wait_attached()
        from utrace.elf.index import symbols_for

        t = symbols_for(exe)
        addr = t.addresses[t.raws.index("demo_add")] + load_base(prog.pid, exe)
        assert read_text_byte(prog.pid, addr) == 0xCC, "uprobe breakpoint installed while tracing"
        release(prog)
        time.sleep(0.3)
        if how == "target-exit":
            prog.kill()
            prog.wait()
        else:
            bg.proc.send_signal(getattr(signal, how))
        out, err, rc = bg.finish()
        assert rc == 0, err
        _evs, summary = events(out)
        assert summary["stopped_by"] == ("target exited" if how == "target-exit" else how)
        assert "utrace" not in uprobe_events()
        if how != "target-exit":
            assert summary["events"] > 0
            assert prog.poll() is None, "the traced program keeps running"
            assert read_text_byte(prog.pid, addr) != 0xCC, "breakpoint removed after detach"
            os.kill(prog.pid, signal.SIGTERM)
    finally:
        if prog.poll() is None:
            prog.kill()
        prog.wait()


def test_node_debian_layout_libnode_and_system_libuv() -> None:
    """Debian's own node 18: code in libnode.so.108 and the system libuv.so.1 (1.44, stripped of
    `uv__tcp_listen`), so `uv_tcp_listen` must fall back to `uv_listen` restricted to TCP handles."""
    fetch = subprocess.run([str(ROOT / "scripts" / "fetch-debian-node.sh")], capture_output=True, text=True)
    from tests.e2e.conftest import need

    need(fetch.returncode == 0, f"Debian's nodejs 18 could not be fetched: {fetch.stderr[-300:]}")
    root = fetch.stdout.strip().splitlines()[-1]
    node = f"{root}/usr/bin/node"
    libdir = f"{root}/usr/lib/x86_64-linux-gnu"
    script = "require('net').createServer().listen(0, () => process.exit(0))"
    inner = (
        f"mkdir -p /usr/share/nodejs; mount --bind {root}/usr/share/nodejs /usr/share/nodejs && "
        f'exec {node} -e "{script}"'
    )
    env_cmd = ["env", f"LD_LIBRARY_PATH={libdir}"]
    p = subprocess.run(
        [*env_cmd, *utrace_cmd("node", "--binary", node, "uv_tcp_listen", "node::TCPWrap::Listen", "--json",
                                 "--", "unshare", "-m", "sh", "-c", inner)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    evs, summary = events(p.stdout)
    assert "tracing uv_listen (restricted to TCP handles)" in p.stderr
    listen = [e for e in evs if e["probe"] == "uv_listen"]
    assert len(listen) == 1 and listen[0]["args"]["backlog"] == 511  # type: ignore[index]
    assert listen[0]["args"]["type"] == "tcp"  # type: ignore[index]
    assert any(str(e["probe"]).startswith("node::TCPWrap::Listen(") for e in evs)
    assert summary["exit_code"] == 0


def test_ring_buffer_wraps_without_losing_or_garbling_events(fixtures_built: Path, tmp_path: Path) -> None:
    """More events than the ring holds (250,000 of 104 bytes in 16 MiB): it wraps round, records
    that straddle its end are read whole, and the consumer position the kernel reads is never torn
    (a byte-wise store of it made the kernel see the ring full and drop events).

    The reader must keep up for "nothing lost" to be a fair demand: hot makes its calls faster than
    Python decodes them (about 190,000 a second against 60,000 on this machine kind, so 250,000 free
    calls overflow 16 MiB and the loss is counted). Both run on one CPU with hot at nice 19, so utrace
    runs whenever it is woken and the backlog stays far below the ring's size while it still wraps."""
    hot = str(fixtures_built / "c" / "hot")
    out = tmp_path / "ev.json"
    n = 250_000
    p = subprocess.run(
        ["taskset", "-c", "0", *utrace_cmd("native", hot, "hot", "--json", "-o", str(out),
                                           "--", "taskset", "-c", "0", "nice", "-n", "19", hot, str(n))],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"calls {n} sum {sum(i ^ (i + 1) for i in range(n))}"
    evs, summary = events(out.read_text())
    assert summary["lost"] == 0 and summary["events"] == n
    args = [e["args"] for e in evs]
    assert [a["arg0"] for a in args] == list(range(n))  # type: ignore[index]
    assert all(a["arg1"] == a["arg0"] + 1 for a in args)  # type: ignore[index]
