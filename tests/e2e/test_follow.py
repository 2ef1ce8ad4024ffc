"""--follow: processes as servers run them (pre-fork workers, PostgreSQL backends), a launched command
seen only from its exec on, and the launched tree ended when utrace stops.

Oracles: what the workers print themselves (the C fixture `hot` prints how many calls it made), the
Python program's own count of its calls, and PostgreSQL's server log (log_statement=all, each line with
the backend's pid): nothing here decides what the right answer is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Background, need, run_utrace

pytestmark = pytest.mark.usefixtures("root_bpf")

CALLS = re.compile(r"^calls (\d+) sum \d+$", re.M)
PG_CACHE = Path(os.environ.get("UTRACE_CACHE", Path.home() / ".cache" / "utrace")) / "realworld" / "postgresql"


def _json_lines(out: str) -> tuple[list[dict[str, object]], dict[str, object]]:
    objs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert objs and objs[-1]["kind"] == "summary", out[-2000:]
    return objs[:-1], objs[-1]


def _counts(objs: list[dict[str, object]]) -> Counter[int]:
    return Counter({int(o["pid"]): int(o["count"]) for o in objs if o["kind"] == "count"})  # type: ignore[call-overload]


@pytest.fixture
def hot(fixtures_built: Path) -> str:
    return str(fixtures_built / "c" / "hot")


# --- launch mode: a shell forking workers ----------------------------------------------------------


def test_launched_shell_forking_workers_is_followed(hot: str) -> None:
    """`sh` forks three subshells that exec `hot`: with --follow each worker's calls are counted, per
    worker, exactly as many as it printed; without it nothing is seen and the end says why."""
    script = f"for n in 300 500 700; do ({hot} $n) & done; wait"
    p = run_utrace("native", hot, "hot", "--follow", "--count", "--json", "--", "sh", "-c", script)
    assert p.returncode == 0, p.stderr
    printed = sorted(int(n) for n in CALLS.findall(p.stdout))
    assert printed == [300, 500, 700], p.stdout
    objs, summary = _json_lines(p.stdout)
    counts = _counts(objs)
    assert sorted(counts.values()) == printed, counts
    launched = int(re.search(r"launched pid (\d+)", p.stderr)[1])  # type: ignore[index]
    assert launched not in counts  # sh itself never runs hot's code
    assert summary["stopped_by"] == "target exited"

    p = run_utrace("native", hot, "hot", "--count", "--json", "--", "sh", "-c", script)
    assert p.returncode == 0, p.stderr
    objs, summary = _json_lines(p.stdout)
    assert sorted(int(n) for n in CALLS.findall(p.stdout)) == [300, 500, 700]
    assert summary["events"] == 0 and not _counts(objs)
    assert "add --follow" in p.stderr and "started 3 process(es)" in p.stderr, p.stderr


# --- --pid: a pre-fork master, workers forked before and after utrace starts ---------------------

MASTER = r"""
import os, sys
hot = sys.argv[1]
def worker(n, gate):
    pid = os.fork()
    if pid == 0:
        if gate is not None:
            os.read(gate, 1)  # a worker forked before tracing starts waits for the go
        os.execv(hot, [hot, str(n)])
    return pid
r, w = os.pipe()
early = [worker(n, r) for n in (110, 120)]
print("ready", flush=True)
sys.stdin.readline()  # utrace is attached
os.write(w, b"gg")
late = [worker(n, None) for n in (130, 140, 150)]
for pid in early + late:
    os.waitpid(pid, 0)
print("done", flush=True)
sys.stdin.readline()
"""


@pytest.mark.parametrize("follow", [True, False], ids=["--follow", "without --follow"])
def test_pid_of_a_prefork_master_follows_old_and_new_workers(hot: str, follow: bool) -> None:
    """A Python master forks two workers, then utrace attaches to the master's pid, then the master
    forks three more; every worker execs `hot` and prints its own count. With --follow all five are
    counted exactly; without it none (the master never calls hot) and the end suggests --follow."""
    master = subprocess.Popen(
        [sys.executable, "-c", MASTER, hot], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert master.stdin is not None and master.stdout is not None
    bg = None
    try:
        assert master.stdout.readline().strip() == "ready"
        args = ["native", hot, "hot", "--pid", str(master.pid), "--count", "--json"]
        bg = Background(*args, *(["--follow"] if follow else []))
        bg.wait_attached()
        master.stdin.write("go\n")
        master.stdin.flush()
        lines = []
        while (line := master.stdout.readline().strip()) != "done":
            assert line, "the master ended early"
            lines.append(line)
        time.sleep(0.3)
        bg.proc.send_signal(signal.SIGINT)
        out, err, rc = bg.finish()
        assert rc == 0, err
    finally:
        if master.poll() is None:
            master.kill()
        master.wait()
    printed = sorted(int(m) for m in CALLS.findall("\n".join(lines)))
    assert printed == [110, 120, 130, 140, 150]
    objs, summary = _json_lines(out)
    counts = _counts(objs)
    if follow:
        assert sorted(counts.values()) == printed, counts
        assert master.pid not in counts
    else:
        assert summary["events"] == 0 and not counts
        assert f"pid {master.pid} started 3 process(es)" in err and "add --follow" in err, err


# --- launch mode: nothing from utrace's own child before the exec ---------------------------------

PY_SCRIPT = """\
import sys
calls = 0
{pad}
def traced_fn(i):
    global calls
    calls += 1
    return i
list(map(traced_fn, range(int(sys.argv[1]))))  # called from C: each call is a new frame, with its probe
# one write(): utrace writes its events to the same pipe, and print() makes a write of each piece when
# Python's output is unbuffered (PYTHONUNBUFFERED, set here): an event once landed inside this line
sys.stdout.write(f"calls {{calls}}\\n")
sys.stdout.flush()
"""


def test_launched_python_is_traced_from_its_exec_only(tmp_path: Path) -> None:
    """python3's own USDT probes function__entry and line (python3 is where utrace's held child runs Python code
    before it execs the command): every event comes from the launched python3, none from the child
    before its exec; the traced function's entries are as many as the script counted."""
    py = "/usr/bin/python3.11" if os.path.exists("/usr/bin/python3.11") else shutil.which("python3") or ""
    need(bool(py) and b"stapsdt" in Path(py).read_bytes(), "a python3 with USDT probes (Debian's)")
    first_line = 4242  # the traced function's first line, as the probe reports it (no other function has it)
    script = tmp_path / "x.py"
    script.write_text(PY_SCRIPT.format(pad="\n" * (first_line - 4)))
    assert script.read_text().splitlines()[first_line - 1].startswith("def traced_fn")
    # python:line too: CPython 3.11 checks function__entry's semaphore only in frames it runs with
    # tracing on, which the line probe's semaphore turns on
    p = run_utrace("native", py, "python:function__entry", "python:line", "--json", "--", py, str(script), "37")
    assert p.returncode == 0, p.stderr
    assert re.search(r"^calls 37$", p.stdout, re.M), p.stdout
    objs, _summary = _json_lines(p.stdout)
    launched = int(re.search(r"launched pid (\d+)", p.stderr)[1])  # type: ignore[index]
    assert objs and {o["pid"] for o in objs} == {launched}
    assert {o["comm"] for o in objs} == {os.path.basename(os.path.realpath(py))[:15]}, Counter(
        str(o["comm"]) for o in objs
    )
    entries = [o for o in objs if o["probe"] == "python:function__entry"]
    # typed by the catalogue of python's probes.d: (filename, funcname, lineno)
    mine = [o for o in entries if o["args"]["lineno"] == first_line]  # type: ignore[index]
    assert len(mine) == 37
    assert {o["args"]["funcname"] for o in mine} == {"traced_fn"}  # type: ignore[index]
    assert {o["args"]["filename"] for o in mine} == {str(script)}  # type: ignore[index]


# --- PostgreSQL: backends forked by the postmaster ------------------------------------------------


@pytest.fixture
def postgres() -> Iterator[tuple[subprocess.Popen[bytes], Path, Path, Path]]:
    """A PostgreSQL 15 server (Debian's build, fetched by scripts/fetch-postgres.sh) run as uid 65534
    from a hard-linked copy of the cache (the cache under /root is not reachable for that user), with
    every statement logged with the backend's pid. Yields (postmaster, bin dir, socket dir, log)."""
    root = PG_CACHE / "root"
    need((root / "usr/lib/postgresql/15/bin/postgres").exists(), "run scripts/fetch-postgres.sh")
    need(shutil.which("setpriv") is not None, "setpriv (util-linux)")
    work = Path(tempfile.mkdtemp(prefix="utrace-pg-", dir="/tmp"))
    proc = None
    try:
        try:
            subprocess.run(["cp", "-al", str(root), str(work / "root")], check=True)
        except subprocess.CalledProcessError:
            shutil.copytree(root, work / "root", symlinks=True)
        bindir = work / "root/usr/lib/postgresql/15/bin"
        libs = str(work / "root/usr/lib/x86_64-linux-gnu")
        sock = work / "sock"
        sock.mkdir()
        os.chown(work, 65534, 65534)
        os.chown(sock, 65534, 65534)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", f"LD_LIBRARY_PATH={libs}"]
        subprocess.run(
            [*as_nobody, str(bindir / "initdb"), "-D", str(work / "data"), "-A", "trust", "-U", "postgres",
             "--no-sync"],
            check=True, capture_output=True, cwd="/tmp", timeout=120,
        )  # fmt: skip
        log = work / "server.log"
        proc = subprocess.Popen(
            [*as_nobody, str(bindir / "postgres"), "-D", str(work / "data"), "-k", str(sock),
             "-c", "listen_addresses=", "-c", "log_statement=all", "-c", "log_line_prefix=%p ",
             "-c", "jit=off", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=open(log, "wb"), cwd="/tmp",  # noqa: SIM115
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (sock / ".s.PGSQL.5432").exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "postgres did not start"
            time.sleep(0.1)
        yield proc, bindir, sock, log
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def _queries(bindir: Path, sock: Path, n: int) -> None:
    env = dict(os.environ, LD_LIBRARY_PATH=str(bindir.parents[3] / "lib/x86_64-linux-gnu"))
    for i in range(n):
        subprocess.run(
            [str(bindir / "psql"), "-X", "-h", str(sock), "-U", "postgres", "-d", "postgres", "-Atc",
             f"SELECT {i} + 1"],
            check=True, capture_output=True, env=env, timeout=60,
        )  # fmt: skip


def _logged_statements(log: Path, n: int) -> Counter[int]:
    """Backend pid -> statements PostgreSQL logged (waiting until the server has written `n`)."""
    deadline = time.monotonic() + 30
    while True:
        found = Counter(int(m) for m in re.findall(r"^(\d+) LOG:  statement: ", log.read_text(), re.M))
        if sum(found.values()) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.parametrize("follow", [True, False], ids=["--follow", "without --follow"])
def test_postgres_backends_query_start_matches_the_server_log(
    postgres: tuple[subprocess.Popen[bytes], Path, Path, Path], follow: bool
) -> None:
    """`--pid <postmaster>` with postgresql:query__start (a USDT probe Debian's --enable-dtrace build
    has): each query runs in a backend the postmaster forks for its connection. With --follow the
    events per backend pid are exactly the statements the server log records for that pid; without
    it, none, and the end suggests --follow."""
    proc, bindir, sock, log = postgres
    postmaster = proc.pid  # setpriv and env exec: the postmaster is the started process
    assert (bindir / "postgres").samefile(f"/proc/{postmaster}/exe")
    args = ["native", str(bindir / "postgres"), "postgresql:query__start", "--pid", str(postmaster), "--json"]
    with Background(*args, *(["--follow"] if follow else [])) as bg:
        bg.wait_attached()
        _queries(bindir, sock, 4)
        logged = _logged_statements(log, 4)
        out, err, rc = bg.interrupt(settle=0.5)
    assert rc == 0, err
    assert sum(logged.values()) == 4 and postmaster not in logged, log.read_text()
    objs, summary = _json_lines(out)
    seen = Counter(int(o["pid"]) for o in objs if o["probe"] == "postgresql:query__start")  # type: ignore[call-overload]
    if follow:
        assert seen == logged, (seen, logged)
    else:
        assert not seen and summary["events"] == 0
        assert f"pid {postmaster} started" in err and "add --follow" in err, err


def test_follow_needs_a_pid_or_a_command() -> None:
    p = run_utrace("native", str(ROOT / "fixtures" / "build" / "c" / "hot"), "hot", "--follow")
    assert p.returncode == 2 and "--follow needs --pid PID or -- COMMAND" in p.stderr, p.stderr


DAEMONIZING = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited: the whole tree ignores SIGTERM
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(300)  # a daemon: its parent exits, it is re-parented away from the launched tree
        os._exit(0)
    os._exit(0)
print("ready", flush=True)
time.sleep(300)
"""


def _with_token(token: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and token.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                found.append(int(name))
        except OSError:
            continue
    return found


def test_launched_tree_is_ended_even_daemonized_and_ignoring_sigterm(hot: str) -> None:
    """When --duration ends the trace, the launched program and what it started are ended: here all of
    them ignore SIGTERM and one has double-forked into its own session (re-parented to init, so no
    /proc walk from the launched pid finds it): the kernel's fork tracking does, and after the grace
    period both left get SIGKILL, which utrace reports."""
    token = f"utrace-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        p = run_utrace("native", hot, "hot", "-d", "2", "--", sys.executable, "-c", DAEMONIZING, token)
        assert p.returncode == 0, p.stderr
        assert "ready" in p.stdout
        assert "stopped by duration" in p.stderr
        assert "2 process(es) of the launched command were still running" in p.stderr, p.stderr
        deadline = time.monotonic() + 10
        while _with_token(token) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _with_token(token) == []
    finally:
        for pid in _with_token(token):
            os.kill(pid, signal.SIGKILL)
