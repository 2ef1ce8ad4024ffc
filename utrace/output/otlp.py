"""`--otlp ENDPOINT`: calls with their returns as OpenTelemetry spans, sent over OTLP/HTTP.

Spans are built with the official `opentelemetry-proto` messages and POSTed as binary protobuf
(`ExportTraceServiceRequest`, Content-Type application/x-protobuf) to ENDPOINT/v1/traces (an
ENDPOINT that already ends in /v1/traces is used as is). Binary protobuf is the encoding every OTLP
receiver must accept; the JSON mapping has traps of its own (hex ids, 64-bit integers as strings).

- Span: name = the function (or `hotspot:gc` for a paired USDT begin/end), start = the call, end =
  the return, converted from the kernel's CLOCK_MONOTONIC to Unix epoch nanoseconds with one offset
  taken when tracing starts. A call made inside another on the same thread (goroutine for Go) is
  its child, in the same trace. Kind INTERNAL.
- Attributes: `code.function.name`, `thread.id`, `thread.name` (the comm), `process.pid`, each
  argument as `utrace.arg.NAME`, the return value as `utrace.return` (Go results as
  `utrace.return.NAME`), context such as `utrace.goid`.
- Resource, one per traced process: `service.name` (the executable's name), `process.pid`,
  `process.executable.name` and `.path`, `host.name`.

The event loop never waits on the network: finished spans go into a bounded queue (a full queue
drops and counts), and a thread sends them in batches. Failures (connection refused, HTTP errors,
spans the receiver rejects) are counted and reported in one line at the end; they never stop the trace.
"""

from __future__ import annotations

import ipaddress
import os
import queue
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, TextIO

from utrace import __version__
from utrace.app.session import Summary
from utrace.errors import EnvironmentProblem, UsageError
from utrace.model import Event, Target
from utrace.output.escape import safe, utf8_text
from utrace.output.spans import Pairer, Span, returning
from utrace.probes.decode import StringValue
from utrace.runtimes.base import Plan

if TYPE_CHECKING:
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

TRACES_PATH = "/v1/traces"
_INT64 = (-(1 << 63), (1 << 63) - 1)


def traces_url(endpoint: str) -> str:
    """ENDPOINT -> the URL to POST to.

    Raises:
        UsageError: not an http(s) URL with a valid host name or address and port.
    """
    if any(c.isspace() or not c.isprintable() for c in endpoint):  # urlsplit would drop tabs and newlines
        raise UsageError(f"--otlp: the URL {endpoint!r} holds spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(endpoint)
    except ValueError as e:  # an unclosed [IPv6 literal
        raise UsageError(f"--otlp: malformed URL {endpoint!r} ({e})") from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--otlp needs an http:// or https:// URL such as http://127.0.0.1:4318, not {endpoint!r}")
    if not _valid_host(parts.hostname):
        raise UsageError(f"--otlp: bad host name {parts.hostname!r} in {endpoint!r}")
    try:
        port = parts.port
    except ValueError as e:
        raise UsageError(f"--otlp: bad port in {endpoint!r}") from e
    if port == 0:
        raise UsageError(f"--otlp: bad port in {endpoint!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(TRACES_PATH):
        path += TRACES_PATH
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _valid_host(host: str) -> bool:
    """An IP address, or a DNS name of letters, digits, `-` and `_` (internationalised names via IDNA)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_host.removesuffix(".").split(".")
    if all(label.isdigit() for label in labels):  # 999.1.1.1: meant as an address, and not one
        return False
    return len(ascii_host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def _load_proto() -> None:
    try:
        import opentelemetry.proto.collector.trace.v1.trace_service_pb2  # noqa: F401
    except ImportError as e:
        raise EnvironmentProblem(
            f"--otlp needs the opentelemetry-proto package ({e}); pip install opentelemetry-proto"
        ) from e


def any_value(key: str, v: object) -> list[KeyValue]:
    """One captured value as OTLP attributes (a dict of Go results as one attribute per result)."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    if isinstance(v, dict):
        return [kv for k, x in v.items() for kv in any_value(f"{key}.{k}", x)]
    key = utf8_text(key)  # protobuf strings must be UTF-8; names from a binary need not be
    if v is None:  # OTLP attributes have no null: a NULL pointer is an absent attribute
        return []
    if isinstance(v, bool):
        value = AnyValue(bool_value=v)
    elif isinstance(v, int) and not isinstance(v, StringValue):
        value = AnyValue(int_value=v) if _INT64[0] <= v <= _INT64[1] else AnyValue(string_value=str(v))
    elif isinstance(v, float):
        value = AnyValue(double_value=v)
    else:
        value = AnyValue(string_value=utf8_text(str(v)))
    return [KeyValue(key=key, value=value)]


def process_resource(pid: int, comm: str, known_exe: str = "") -> list[KeyValue]:
    """Resource attributes of a traced process, read from /proc while it is there (else `known_exe`:
    a short program launched by utrace is often gone by the time its first events are read)."""
    exe = ""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = known_exe
    name = os.path.basename(exe.removesuffix(" (deleted)")) if exe else comm
    attrs: list[KeyValue] = []
    attrs += any_value("service.name", name)
    attrs += any_value("process.pid", pid)
    attrs += any_value("process.executable.name", name)
    if exe:
        attrs += any_value("process.executable.path", exe)
    attrs += any_value("host.name", socket.gethostname())
    return attrs


def span_message(span: Span, epoch_offset_ns: int) -> PbSpan:
    """A finished span as the OTLP `Span` message."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

    assert span.end_ns is not None
    msg = PbSpan(
        trace_id=span.trace_id.to_bytes(16, "big"),
        span_id=span.span_id.to_bytes(8, "big"),
        name=utf8_text(span.name),
        kind=PbSpan.SpanKind.SPAN_KIND_INTERNAL,
        start_time_unix_nano=span.start_ns + epoch_offset_ns,
        end_time_unix_nano=span.end_ns + epoch_offset_ns,
    )
    if span.parent_id is not None:
        msg.parent_span_id = span.parent_id.to_bytes(8, "big")
    attrs = msg.attributes
    attrs.extend(any_value("code.function.name", span.name))
    attrs.extend(any_value("thread.id", span.tid))
    attrs.extend(any_value("thread.name", span.comm))
    attrs.extend(any_value("process.pid", span.pid))
    for k, v in span.args.items():
        attrs.extend(any_value(f"utrace.arg.{k}", v))
    if span.has_ret:
        attrs.extend(any_value("utrace.return", span.ret))
    for k, v in span.context.items():
        attrs.extend(any_value(f"utrace.{k}", v))
    return msg


# OTLP/HTTP: "429, 502, 503 and 504 are retryable"; the receiver may say when with Retry-After
_RETRYABLE = frozenset({429, 502, 503, 504})
_RETRIES = 3
_MAX_RETRY_DELAY_S = 5.0


def retry_delay(retry_after: str | None, attempt: int) -> float:
    """Seconds to wait before retrying: the receiver's Retry-After in seconds (an HTTP date is not
    honoured), else 0.25 s doubling with each attempt; never more than 5 s."""
    delay: float = 0.25 * 2.0**attempt
    if retry_after is not None and retry_after.strip().isdigit():
        delay = float(retry_after.strip())
    return min(delay, _MAX_RETRY_DELAY_S)


def _reason(e: BaseException) -> str:
    """A failed POST in a few words: `HTTP 503 Service Unavailable`, `connection refused`."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError) and isinstance(e.reason, BaseException):
        e = e.reason
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve host ({e.strerror})"
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


class OtlpReporter:
    """Exports spans to an OTLP/HTTP receiver from a background thread; prints one line at the end."""

    def __init__(
        self,
        endpoint: str,
        err: TextIO | None = None,
        batch_size: int = 512,
        max_queued: int = 65536,
        linger_s: float = 1.0,
        timeout_s: float = 5.0,
        drain_s: float = 10.0,
    ) -> None:
        import sys

        self.url = traces_url(endpoint)
        _load_proto()
        self.err = err or sys.stderr
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.timeout_s = timeout_s
        self.drain_s = drain_s
        self.queue: queue.Queue[Span] = queue.Queue(max_queued)
        self.pairer = Pairer(())
        self.epoch_offset_ns = time.time_ns() - time.monotonic_ns()
        self.resources: dict[int, list[KeyValue]] = {}
        self.exes: dict[int, str] = {}
        # counters: written by the sender thread, read once it has stopped (or timed out)
        self.spans = 0
        self.sent = 0
        self.rejected = 0
        self.failed = 0
        self.failed_requests = 0
        self.retries = 0
        self.requests = 0
        self.dropped = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="utrace-otlp", daemon=True)

    # --- Reporter ----------------------------------------------------------------------------------
    def started(self, target: Target, plan: Plan, attached: int, launched: int | None) -> None:
        self.pairer = Pairer(returning(plan.specs))
        # what runs the traced executable, known without /proc (display: the path as the process sees it)
        self.exes = {p: target.modules[0].display for p in (target.pid, launched) if p is not None}
        # CLOCK_MONOTONIC (bpf_ktime_get_ns) -> Unix time: one offset, taken as close together as we can
        self.epoch_offset_ns = time.time_ns() - time.monotonic_ns()
        self._thread.start()

    def event(self, ev: Event) -> None:
        for item in self.pairer.feed(ev):
            if isinstance(item, Span) and item.end_ns is not None:
                if item.pid not in self.resources:
                    self.resources[item.pid] = process_resource(item.pid, item.comm, self.exes.get(item.pid, ""))
                self.spans += 1
                try:
                    self.queue.put_nowait(item)
                except queue.Full:
                    self.dropped += 1

    def flush(self) -> None:
        pass

    def snapshot(self, counts: dict[tuple[str, int], int], elapsed_s: float) -> None:
        pass  # spans come from events; counts (--top) are not exported

    def lost(self, total: int) -> None:
        pass  # the main output already says so

    def finished(self, summary: Summary) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.drain_s)
        # queued or in flight when we stopped waiting (the counters are final once the thread is done)
        unsent = self.spans - self.sent - self.failed - self.dropped
        open_calls = len(self.pairer.finish())
        self.err.write(safe(self.report(unsent, open_calls, self._thread.is_alive())) + "\n")  # a receiver's words
        self.err.flush()

    def report(self, unsent: int, open_calls: int, still_sending: bool) -> str:
        """The one line printed at the end."""
        extra = []
        if self.failed_requests:
            extra.append(f"{self.failed_requests} request(s) failed (last: {self.last_error})")
        if self.rejected:
            extra.append(f"{self.rejected} rejected by the receiver")
        if self.dropped:
            extra.append(f"{self.dropped} dropped (queue full)")
        if unsent or still_sending:
            extra.append(f"{unsent} not sent in time")
        if open_calls:
            extra.append(f"{open_calls} call(s) still open not exported")
        ok = self.sent - self.rejected
        head = f"{ok} of {self.spans} span(s) exported to {self.url} in {self.requests} request(s)"
        if self.retries:
            head += f" ({self.retries} retried after HTTP 429/502/503/504)"
        if ok == self.spans and not extra:
            return f"utrace: otlp: {head}"
        return f"utrace: warning: otlp: {head}" + ("; " + ", ".join(extra) if extra else "")

    # --- sender thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch: list[Span] = []
            deadline: float | None = None
            while len(batch) < self.batch_size:
                wait = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
                try:
                    batch.append(self.queue.get(timeout=wait))
                except queue.Empty:
                    if self._stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                        break
                    continue
                if deadline is None:
                    deadline = time.monotonic() + (0.0 if self._stop.is_set() else self.linger_s)
            if batch:
                self._send(batch)
            elif self._stop.is_set():
                return

    def _send(self, batch: list[Span]) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        request = ExportTraceServiceRequest()
        by_pid: dict[int, list[Span]] = {}
        for span in batch:
            by_pid.setdefault(span.pid, []).append(span)
        for pid, spans in by_pid.items():
            rs = request.resource_spans.add()
            rs.resource.attributes.extend(self.resources.get(pid, []))
            ss = rs.scope_spans.add()
            ss.scope.name = "utrace"
            ss.scope.version = __version__
            ss.spans.extend(span_message(s, self.epoch_offset_ns) for s in spans)
        body = request.SerializeToString()
        req = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/x-protobuf"}
        )
        for attempt in range(_RETRIES + 1):
            self.requests += 1
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    data = resp.read()
                    kind = resp.headers.get("Content-Type", "")
                break
            except Exception as e:  # every failure is counted and reported, none stops the trace
                self.last_error = _reason(e)
                if not (isinstance(e, urllib.error.HTTPError) and e.code in _RETRYABLE) or attempt == _RETRIES:
                    self.failed_requests += 1
                    self.failed += len(batch)
                    return
                self.retries += 1
                time.sleep(retry_delay(e.headers.get("Retry-After"), attempt))
        self.sent += len(batch)
        if data and "protobuf" in kind:
            try:
                answer = ExportTraceServiceResponse.FromString(data)
            except Exception:
                return
            if answer.HasField("partial_success") and answer.partial_success.rejected_spans:
                self.rejected += answer.partial_success.rejected_spans
                self.last_error = answer.partial_success.error_message or "rejected"
