"""--format perfetto and --otlp on real programs.

Oracles: the Perfetto file is read by Chrome DevTools' trace engine (tests/e2e/oracles, installed by
scripts/setup.sh; Perfetto's own trace_processor_shell cannot be downloaded on this machine, see the
README), OTLP requests are decoded with the official opentelemetry-proto messages by a real HTTP
server, and both are checked against what the traced programs print and what their recursion implies.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, need, run_utrace, uprobe_events
from tests.e2e.test_tracing import events

pytestmark = pytest.mark.usefixtures("root_bpf")

ORACLES = ROOT / "tests" / "e2e" / "oracles"
JDK17 = "/usr/lib/jvm/java-17-openjdk-amd64"
HOT = "hot(long i, long j)"  # the fixture has no DWARF: its signature
XLOG_PAUSE = re.compile(r"\[gc\s*\] GC\(\d+\) Pause Full \(System\.gc\(\)\) \S+ (\d+\.\d+)ms")


def fib_calls(n: int) -> int:
    """How many calls Fib(n) makes, itself included (the fixture recurses on n-1 and n-2 down to n < 2)."""
    a, b = 1, 1  # calls(0), calls(1)
    for _ in range(n - 1):
        a, b = b, a + b + 1
    return b if n >= 1 else a


def devtools(path: Path) -> dict[str, Any]:
    """What Chrome DevTools' trace engine makes of a trace file (see oracles/devtools_trace.mjs)."""
    node = shutil.which("node")
    need(node is not None, "node is not installed")
    need(
        (ORACLES / "node_modules" / "@paulirish" / "trace_engine").is_dir(),
        "the DevTools trace engine is not installed (scripts/setup.sh runs npm ci in tests/e2e/oracles)",
    )
    p = subprocess.run(
        [str(node), str(ORACLES / "devtools_trace.mjs"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ORACLES,
    )
    assert p.returncode == 0, p.stderr
    out: dict[str, Any] = json.loads(p.stdout)
    return out


def entries(model: dict[str, Any], name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(thread, entry) for every entry called `name`, across threads."""
    return [(t, e) for t in model["threads"] for e in t["entries"] if e["name"] == name]


# --- Perfetto ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "-go1.15"])
def test_perfetto_go_fib_slices_nest_like_the_recursion(fixtures_built: Path, tmp_path: Path, suffix: str) -> None:
    exe = fixtures_built / "go" / f"greet{suffix}"
    need(exe.exists(), f"{exe} not built")
    out = tmp_path / "fib.json"
    p = run_utrace("go", str(exe), "main.Fib", "--ret", "--format", "perfetto", "-o", str(out), "--",
                   str(exe), "1", "12", timeout=180)  # fmt: skip
    assert p.returncode == 0, p.stderr
    printed = re.search(r"^Fib\(12\)=(\d+)$", p.stdout, re.M)
    assert printed, p.stdout
    model = devtools(out)
    fibs = entries(model, "main.Fib")
    assert len(fibs) == fib_calls(12) == 465
    (thread,) = {id(t): t for t, _ in fibs}.values()  # every call on one track: main's goroutine
    assert thread["name"] == "goroutine 1"
    assert model["processes"][str(thread["pid"])] == exe.name
    es = thread["entries"]
    assert all(e["ph"] == "X" and e["dur"] > 0 for e in es)
    assert all(e["parent"] != "dropped" for e in es), "the engine placed every slice in its call tree"
    children: dict[int, list[int]] = {i: [] for i in range(len(es))}
    roots = []
    for i, e in enumerate(es):
        if e["parent"] is None:
            roots.append(i)
        else:
            children[e["parent"]].append(i)
    assert len(roots) == 1
    root = es[roots[0]]
    assert root["args"]["n"] == 12 and root["args"]["return"]["r0"] == int(printed.group(1))
    for i, e in enumerate(es):
        n, kids = e["args"]["n"], [es[k] for k in children[i]]
        if n < 2:
            assert kids == [] and e["args"]["return"]["r0"] == n
        else:  # Fib(n) calls Fib(n-1) then Fib(n-2) and returns their sum
            assert [k["args"]["n"] for k in kids] == [n - 1, n - 2]
            assert e["args"]["return"]["r0"] == sum(k["args"]["return"]["r0"] for k in kids)
            assert kids[0]["ts"] + kids[0]["dur"] <= kids[1]["ts"]
    assert "465 slice(s)" in p.stderr
    assert uprobe_events() == ""


def test_perfetto_native_returns_match_the_program(fixtures_built: Path, tmp_path: Path) -> None:
    """hot(i, i + 1) returns i ^ (i + 1); the program prints how many calls it made and their sum."""
    hot = fixtures_built / "c" / "hot"
    out = tmp_path / "hot.json"
    p = run_utrace("native", str(hot), HOT, "--ret", "--format", "perfetto", "-o", str(out), "--", str(hot), "2000")
    assert p.returncode == 0, p.stderr
    said = re.search(r"calls (\d+) sum (\d+)", p.stdout)
    assert said, p.stdout
    model = devtools(out)
    hots = entries(model, "hot")
    assert len(hots) == int(said.group(1)) == 2000
    assert sum(e["args"]["return"] for _t, e in hots) == int(said.group(2))
    assert sorted(e["args"]["i"] for _t, e in hots) == list(range(2000))
    for thread, e in hots:
        a = e["args"]
        assert a["j"] == a["i"] + 1 and a["return"] == a["i"] ^ a["j"]
        assert e["ph"] == "X" and e["dur"] > 0 and e["parent"] is None
        assert thread["pid"] == thread["tid"] and thread["name"] == "hot"
        assert model["processes"][str(thread["pid"])] == "hot"


def test_perfetto_usdt_and_calls_without_returns_are_instants(fixtures_built: Path, tmp_path: Path) -> None:
    sdt = fixtures_built / "c" / "sdt_demo"
    out = tmp_path / "sdt.json"
    p = run_utrace("native", str(sdt), "utrace_demo:tick", "demo_add(int a, int b)", "--format", "perfetto", "-o",
                   str(out), "--", str(sdt), "4")  # fmt: skip
    assert p.returncode == 0, p.stderr
    printed = re.findall(r"^iter (\d+) add\((\d+),(\d+)\)=\d+ \S+ tick\((\d+),([^,]+),(-?\d+)\)", p.stdout, re.M)
    assert len(printed) == 4, p.stdout
    model = devtools(out)
    ticks = [e for _t, e in entries(model, "utrace_demo:tick")]
    adds = [e for _t, e in entries(model, "demo_add")]
    assert all(e["ph"] == "I" for e in ticks + adds)
    # USDT arguments are positional (arg1 is the message's address)
    assert [(e["args"]["arg0"], e["args"]["arg2"]) for e in ticks] == [(int(c), int(v)) for *_x, c, _m, v in printed]
    assert [(e["args"]["a"], e["args"]["b"]) for e in adds] == [(int(a), int(b)) for _i, a, b, *_ in printed]
    assert "0 slice(s), 8 instant(s)" in p.stderr


def test_perfetto_jvm_gc_pairs_are_slices(fixtures_built: Path, tmp_path: Path) -> None:
    """Each System.gc() is one `hotspot:gc` slice lasting what the JVM logged for the pause."""
    need(Path(f"{JDK17}/bin/java").exists(), f"{JDK17} missing")
    classes = fixtures_built / "java"
    need((classes / "Demo.class").exists(), "fixtures/java not built")
    log, out = tmp_path / "gc.log", tmp_path / "gc.json"
    p = run_utrace("java", "gc", "--format", "perfetto", "-o", str(out), "--", f"{JDK17}/bin/java",
                   f"-Xlog:gc:file={log}", "-cp", str(classes), "Demo", timeout=180)  # fmt: skip
    assert p.returncode == 0, p.stderr
    pauses_ms = [float(x) for x in XLOG_PAUSE.findall(log.read_text())]
    assert len(pauses_ms) == len(re.findall(r"^gc \d$", p.stdout, re.M)) == 2
    model = devtools(out)
    gcs = sorted((e for _t, e in entries(model, "hotspot:gc")), key=lambda e: e["ts"])
    assert [e["ph"] for e in gcs] == ["X", "X"]
    for e, logged in zip(gcs, pauses_ms, strict=True):
        assert e["args"]["full"] is True
        got_ms = e["dur"] / 1000
        assert abs(got_ms - logged) <= 0.5 + 0.25 * logged, (got_ms, logged)
    begins = [e for _t, e in entries(model, "hotspot:gc__begin")]
    assert [e["ph"] for e in begins] == ["I", "I"]
    assert len([e for _t, e in entries(model, "hotspot:mem__pool__gc")]) > 0


def test_perfetto_jvm_method_slices_are_named_by_method(fixtures_built: Path, tmp_path: Path) -> None:
    """HotSpot's method entry/return pairs become slices named by the method, on the thread that ran it:
    `Demo$Worker.run()` once per worker the program says ran, `Demo.main(java.lang.String[])` once."""
    need(Path(f"{JDK17}/bin/java").exists(), f"{JDK17} missing")
    classes = fixtures_built / "java"
    need((classes / "Demo.class").exists(), "fixtures/java not built")
    out = tmp_path / "methods.json"
    p = run_utrace("java", "method:Demo", "--format", "perfetto", "-o", str(out), "--", f"{JDK17}/bin/java",
                   "-XX:+DTraceMethodProbes", "-cp", str(classes), "Demo", timeout=180)  # fmt: skip
    assert p.returncode == 0, p.stderr
    workers = re.findall(r"^thread (worker-\d) put \d+$", p.stdout, re.M)
    model = devtools(out)
    runs = entries(model, "Demo$Worker.run()")
    assert sorted(t["name"] for t, _e in runs) == sorted(workers) and len(workers) == 2
    (main,) = entries(model, "Demo.main(java.lang.String[])")
    assert all(e["ph"] == "X" for _t, e in [*runs, main])
    assert not entries(model, "hotspot:method")


# --- OTLP --------------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """An OTLP/HTTP receiver: CPython's http.server, bodies decoded with the official messages."""

    port: int
    status: int = 200
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    answers: list[tuple[int, str | None]] = field(default_factory=list)  # (status, Retry-After), used first
    statuses: list[int] = field(default_factory=list)  # what each request was answered
    times: list[float] = field(default_factory=list)  # when each arrived (time.monotonic)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, Span message) for every span received."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        out = []
        for _path, _ctype, body in self.requests:
            req = ExportTraceServiceRequest.FromString(body)
            for rs in req.resource_spans:
                res = attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    assert ss.scope.name == "utrace"
                    out += [(res, s) for s in ss.spans]
        return out


def attributes(kvs: Any) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    state = Receiver(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.times.append(time.monotonic())
            state.requests.append((self.path, self.headers["Content-Type"], body))
            status, retry_after = state.answers.pop(0) if state.answers else (state.status, None)
            state.statuses.append(status)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(status)
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_otlp_go_fib_spans(fixtures_built: Path, receiver: Receiver) -> None:
    """Spans against the JSON events of the same run and against the shape of the recursion."""
    exe = fixtures_built / "go" / "greet"
    before = time.time_ns()
    p = run_utrace("go", str(exe), "main.Fib", "--ret", "--json", "--otlp", receiver.url, "--",
                   str(exe), "1", "12", timeout=180)  # fmt: skip
    after = time.time_ns()
    assert p.returncode == 0, p.stderr
    assert re.search(r"^Fib\(12\)=144$", p.stdout, re.M), p.stdout
    evs, summary = events(p.stdout)
    assert summary["lost"] == 0
    assert all(path == "/v1/traces" and ctype == "application/x-protobuf" for path, ctype, _ in receiver.requests)
    got = receiver.spans()
    assert len(got) == fib_calls(12) == 465
    pid = evs[0]["pid"]
    for res, s in got:
        assert res["service.name"] == "greet" and res["process.pid"] == pid
        assert res["process.executable.path"] == str(exe)
        a = attributes(s.attributes)
        assert s.name == "main.Fib" == a["code.function.name"] and a["process.pid"] == pid
        assert a["thread.name"] == "greet" and a["utrace.goid"] == 1
        assert before < s.start_time_unix_nano < s.end_time_unix_nano < after
    # the same calls as the JSON lines say: start offsets from the first call and latencies, exactly
    calls = {e["ts_ns"]: e["args"]["n"] for e in evs if e["kind"] == "call"}
    rets = [e for e in evs if e["kind"] == "return"]
    t0 = min(calls)
    want = sorted(
        (e["ts_ns"] - e["latency_ns"] - t0, e["latency_ns"], calls[e["ts_ns"] - e["latency_ns"]]) for e in rets
    )
    s0 = min(s.start_time_unix_nano for _r, s in got)
    have = sorted(
        (
            s.start_time_unix_nano - s0,
            s.end_time_unix_nano - s.start_time_unix_nano,
            attributes(s.attributes)["utrace.arg.n"],
        )
        for _r, s in got
    )
    assert have == want
    # one trace; Fib(n) is the parent of Fib(n-1) and Fib(n-2), each inside its parent's time
    by_id = {s.span_id: s for _r, s in got}
    assert len({s.trace_id for s in by_id.values()}) == 1
    kids: dict[bytes, list[Any]] = {k: [] for k in by_id}
    roots = []
    for s in by_id.values():
        if s.parent_span_id:
            kids[s.parent_span_id].append(s)
        else:
            roots.append(s)
    assert len(roots) == 1 and attributes(roots[0].attributes)["utrace.return.r0"] == 144
    for s in by_id.values():
        n = attributes(s.attributes)["utrace.arg.n"]
        ks = sorted(kids[s.span_id], key=lambda k: k.start_time_unix_nano)
        assert [attributes(k.attributes)["utrace.arg.n"] for k in ks] == ([n - 1, n - 2] if n >= 2 else [])
        r = attributes(s.attributes)["utrace.return.r0"]
        assert r == (sum(attributes(k.attributes)["utrace.return.r0"] for k in ks) if n >= 2 else n)
        for k in ks:
            assert s.start_time_unix_nano < k.start_time_unix_nano < k.end_time_unix_nano < s.end_time_unix_nano
    (line,) = [ln for ln in p.stderr.splitlines() if "otlp" in ln]
    assert line.startswith("utrace: otlp: 465 of 465 span(s) exported to " + receiver.url + "/v1/traces")


def test_otlp_native_spans_and_text_output(fixtures_built: Path, receiver: Receiver) -> None:
    """--otlp next to the default text output; uretprobe returns of a C function."""
    hot = fixtures_built / "c" / "hot"
    p = run_utrace("native", str(hot), HOT, "--ret", "--otlp", receiver.url + "/v1/traces", "--", str(hot), "1500")
    assert p.returncode == 0, p.stderr
    said = re.search(r"calls (\d+) sum (\d+)", p.stdout)
    assert said, p.stdout
    assert len([ln for ln in p.stdout.splitlines() if "<- hot" in ln]) == 1500  # the text output is still there
    got = receiver.spans()
    assert len(got) == int(said.group(1)) == 1500
    rets = [attributes(s.attributes) for _r, s in got]
    assert sum(a["utrace.return"] for a in rets) == int(said.group(2))
    assert all(a["utrace.return"] == a["utrace.arg.i"] ^ a["utrace.arg.j"] for a in rets)
    assert len({s.trace_id for _r, s in got}) == 1500 and not any(s.parent_span_id for _r, s in got)
    assert all(path == "/v1/traces" for path, _c, _b in receiver.requests)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_otlp_retries_what_the_receiver_asks_to_retry(fixtures_built: Path, receiver: Receiver) -> None:
    """429 with Retry-After, then 503, then accepted: every span arrives once accepted, and the line
    says so (with the retries), without a warning."""
    receiver.answers = [(429, "1"), (503, None)]
    hot = fixtures_built / "c" / "hot"
    p = run_utrace("native", str(hot), "hot", "--ret", "--otlp", receiver.url, "--", str(hot), "300")
    assert p.returncode == 0, p.stderr
    answered = zip(receiver.statuses, receiver.requests, strict=True)
    accepted = [body for status, (_p, _c, body) in answered if status == 200]
    assert receiver.statuses[:3] == [429, 503, 200]
    assert receiver.times[1] - receiver.times[0] >= 0.9, "Retry-After: 1 was honoured"
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans = [
        s
        for b in accepted
        for rs in ExportTraceServiceRequest.FromString(b).resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    assert len(spans) == 300 and len({s.span_id for s in spans}) == 300
    (line,) = [ln for ln in p.stderr.splitlines() if "otlp" in ln]
    n = len(receiver.requests)
    assert line == (
        f"utrace: otlp: 300 of 300 span(s) exported to {receiver.url}/v1/traces in {n} request(s) "
        "(2 retried after HTTP 429/502/503/504)"
    ), line


def test_otlp_unreachable_endpoint_is_one_line_and_the_trace_completes(fixtures_built: Path) -> None:
    hot = fixtures_built / "c" / "hot"
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    p = run_utrace("native", str(hot), "hot", "--ret", "--json", "--otlp", url, "--", str(hot), "3000")
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    evs, summary = events(p.stdout)
    assert summary["exit_code"] == 0 and len([e for e in evs if e["kind"] == "return"]) == 3000
    (line,) = [ln for ln in p.stderr.splitlines() if "otlp" in ln]
    assert line.startswith(f"utrace: warning: otlp: 0 of 3000 span(s) exported to {url}/v1/traces")
    assert "request(s) failed (last: connection refused)" in line
    assert uprobe_events() == ""


def test_otlp_http_errors_are_counted(fixtures_built: Path, receiver: Receiver) -> None:
    """A receiver that always answers 503: each batch is tried four times (three retries), then
    counted as failed; nothing is claimed exported."""
    receiver.status = 503
    hot = fixtures_built / "c" / "hot"
    p = run_utrace("native", str(hot), "hot", "--ret", "--otlp", receiver.url, "--", str(hot), "700")
    assert p.returncode == 0, p.stderr
    n = len(receiver.requests)
    batches = len({body for _p, _c, body in receiver.requests})
    assert n == 4 * batches and len(receiver.spans()) == 4 * 700, "every span was offered 4 times, and refused"
    (line,) = [ln for ln in p.stderr.splitlines() if "otlp" in ln]
    head = f"utrace: warning: otlp: 0 of 700 span(s) exported to {receiver.url}/v1/traces in {n} request(s)"
    assert line.startswith(f"{head} ({n - batches} retried after HTTP 429/502/503/504)"), line
    assert f"{batches} request(s) failed (last: HTTP 503 Service Unavailable)" in line
    assert Counter(path for path, _c, _b in receiver.requests) == {"/v1/traces": n}
