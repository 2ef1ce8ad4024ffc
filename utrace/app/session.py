"""The one composer of the tracing pipeline:
request -> target -> plan -> BPF program -> attach -> poll -> decode -> reporter -> detach.

Stops on Ctrl-C, SIGTERM, SIGHUP, --duration, --max-events, when the traced process exits, when a
--pid target execs another file (its probes were placed in the old one), or when the output's reader
goes away (a broken pipe), and always detaches (the Tracer context manager closes every perf event,
which removes the uprobes).

Under load: each turn of the loop reads at most BATCH records or TURN_S seconds of them, writes them
out and checks the stop conditions, so any stop is seen within about TURN_S plus one poll, and memory
holds at most one batch (with --stack the ring is read ahead of the output, at most readahead.QUEUED
records: see utrace.app.readahead). What the reader cannot keep up with stays
in the ring, and the kernel counts the events it then cannot reserve as lost. On a stop the probes are
removed first (the flood ends), then the ring is read: for at most DRAIN_S when asked to stop (a
signal, --duration, --max-events), to its end when the target ended (until a signal says otherwise);
what is still in it is counted as lost.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import TYPE_CHECKING, Protocol

from utrace.errors import EnvironmentProblem, OutputError, UsageError
from utrace.model import Event, ProbeKind, ProbeSpec, Target
from utrace.probes.aggregate import ByRequest, KeyedTable
from utrace.probes.codegen import (
    TARGET_ENTRIES,
    TRACKED_ENTRIES,
    Aggregate,
    BpfProgram,
    ExecOffsets,
    FamilyOffsets,
    Options,
    render,
)
from utrace.probes.slow import is_end
from utrace.process.target import NamespaceIds, exe_identity, is_alive
from utrace.runtimes.base import LaunchCheck, Plan, TargetChange, TraceRequest
from utrace.runtimes.registry import get_runtime

if TYPE_CHECKING:
    from utrace.app.readahead import ReadAhead
    from utrace.bpf.backend import Tracer
    from utrace.process.stacks import Symbolizer

INIT_PID_NS_INODE = 0xEFFFFFFC
BATCH = 1024  # records read per turn of the loop, at most
TURN_S = 0.05  # seconds spent reading per turn, at most
DRAIN_S = 0.3  # after a stop: seconds spent reading what the ring still holds, at most
LOST_NOTE_S = 1.0  # "events lost so far" at most this often
# How often launched processes are checked against the plan's launch_check (see _LaunchWatch)
CHECK_FAST_S = 0.01
CHECK_FAST_FOR_S = 10.0
CHECK_S = 0.1
FOLLOW_CHECK_S = 0.5
_SIGNALS: dict[int, str] = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


@dataclass(frozen=True, slots=True)
class SessionOptions:
    duration: float | None = None
    max_events: int | None = None
    ring_pages: int = 4096
    aggregate: Aggregate = Aggregate.NONE
    stack_depth: int = 0  # user stack frames per event (0: none)
    refresh_s: float | None = None  # with aggregation: hand the reporter the counts this often (--top)
    follow: bool = False  # also every process the target forks, at any depth (--follow)
    keep_running: bool = False  # leave a launched program and its descendants running at the end
    on_warning: Callable[[str], None] | None = None  # told a warning the moment it is found (also in Summary)
    by: ByRequest | None = None  # with COUNT: also per value of one argument (--count --by ARG, --hist=ARG)
    slower_than_ns: int | None = None  # only calls at least this long (--slower-than, decided in BPF)


@dataclass(slots=True)
class Summary:
    events: int = 0
    lost: int = 0
    per_probe: Counter[str] = field(default_factory=Counter)
    duration_s: float = 0.0
    stopped_by: str = ""
    exit_code: int | None = None
    attached: int = 0
    # with in-kernel aggregation: hits per (probe, pid), a return's probe named "NAME (return)"; and
    # log2 latency buckets {slot: n} per (function, pid), slots as in codegen.slot_range
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    hist: dict[tuple[str, int], dict[int, int]] = field(default_factory=dict)
    # with SessionOptions.by: calls per value (or log2 slot) of the argument, per probe
    keyed: list[KeyedTable] = field(default_factory=list)
    # processes the traced ones forked while traced (at any depth), and whether they were traced too
    forked: int = 0
    followed: bool = False
    # a launched program (and its descendants) that utrace ended when it stopped: how many it had to SIGKILL
    killed: int = 0
    # what the launched processes lacked (Plan.launch_check), or a change not undone: repeated at the end
    warnings: list[str] = field(default_factory=list)


class Reporter(Protocol):
    def started(self, target: Target, plan: Plan, attached: int, launched: int | None) -> None: ...
    def event(self, ev: Event) -> None: ...
    def flush(self) -> None: ...
    def lost(self, total: int) -> None: ...
    def finished(self, summary: Summary) -> None: ...
    # with SessionOptions.refresh_s: the counts so far (as Summary.counts), seconds since the release
    def snapshot(self, counts: dict[tuple[str, int], int], elapsed_s: float) -> None: ...


def pid_namespace() -> tuple[int, int] | None:
    """(dev, inode) of utrace's PID namespace, or None when it is the initial one."""
    try:
        st = os.stat("/proc/self/ns/pid")
    except OSError:
        return None
    if st.st_ino == INIT_PID_NS_INODE:
        return None
    return st.st_dev, st.st_ino


def plan_request(request: TraceRequest) -> tuple[Target, Plan]:
    """Resolve the target and plan the probes, without touching the kernel."""
    runtime = get_runtime(request.runtime)
    target = runtime.target(request)
    plan = runtime.plan(request, target)
    if not plan.specs:
        raise UsageError("nothing to trace")
    if request.where is not None:
        from utrace.app.where import apply_where

        plan.specs = apply_where(request.where, plan.specs)
    return target, plan


def specs_for(plan: Plan, aggregate: Aggregate, slower_than_ns: int | None = None) -> list[ProbeSpec]:
    """The probes a mode needs: counting needs no returns; a histogram needs them.

    Raises:
        UsageError: --hist for probes without returns; --slower-than for probes it cannot time.
    """
    if slower_than_ns is not None:
        from utrace.app.timed import timed_specs

        return timed_specs(plan)
    if aggregate is Aggregate.COUNT:
        return [s for s in plan.specs if s.kind not in (ProbeKind.RETURN, ProbeKind.EXIT)]
    if aggregate is Aggregate.HIST and not any(is_end(s) for s in plan.specs):
        raise UsageError("--hist needs functions with returns, or USDT begin/end pairs (other USDT probes have none)")
    return list(plan.specs)


def probe_label(spec: ProbeSpec) -> str:
    return f"{spec.name} (return)" if spec.kind in (ProbeKind.RETURN, ProbeKind.EXIT) else spec.name


def program_for(plan: Plan, pid: int | None, options: SessionOptions) -> BpfProgram:
    fsbase: int | None = None
    if plan.needs_tls:
        from utrace.bpf.btf import VMLINUX_BTF, task_fsbase_offset

        fsbase = task_fsbase_offset()
        if fsbase is None:
            raise EnvironmentProblem(
                f"cannot read the kernel's task_struct layout from {VMLINUX_BTF} (CONFIG_DEBUG_INFO_BTF): "
                "needed to find goroutines of stack-ABI Go code"
            )
    exec_file: ExecOffsets | None = None
    exe_id: tuple[int, int] | None = None
    if plan.only_exe is not None and pid is None:
        exec_file, exe_id = _exec_file(plan.only_exe)
    specs = specs_for(plan, options.aggregate, options.slower_than_ns)
    keyed = None
    if options.by is not None:
        from utrace.probes.aggregate import select

        specs, keyed, notes = select(plan.specs, options.by, plan.refine)
        plan.notes.extend(n for n in notes if n not in plan.notes)
    return render(
        specs,
        Options(
            pid=pid,
            pid_ns=pid_namespace(),
            ring_pages=options.ring_pages,
            fsbase_offset=fsbase,
            aggregate=options.aggregate,
            stack_depth=options.stack_depth,
            v8_frames=plan.v8_frames if options.stack_depth else None,
            follow=options.follow,
            family=_family_offsets(options.follow or exec_file is not None)
            if pid is not None or exec_file is not None
            else None,
            exec_file=exec_file,
            exe_identity=exe_id,
            keyed=keyed,
            slower_than_ns=options.slower_than_ns,
        ),
    )


def _exec_file(path: str) -> tuple[ExecOffsets, tuple[int, int]]:
    """The kernel's offsets that tell which file a process exec'd, and `path`'s (inode, the kernel's
    dev_t of its superblock: major << 20 | minor, see `procfs.file_identity`)."""
    from utrace.bpf.btf import VMLINUX_BTF, exec_file_offsets
    from utrace.process import procfs

    found = exec_file_offsets()
    if found is None:
        raise EnvironmentProblem(
            f"cannot read the kernel's linux_binprm/file/inode layout from {VMLINUX_BTF} (CONFIG_DEBUG_INFO_BTF): "
            f"needed to trace only the processes running {path}"
        )
    ident = procfs.file_identity(path)
    if ident is None:
        raise EnvironmentProblem(f"cannot open {path} to know which processes run it")
    return ExecOffsets(*found), (ident[1], ident[2])


def _seed_runners(tracer: Tracer, path: str) -> int:
    """Processes already running `path` (their /proc/PID/exe is that file), utrace itself excepted:
    traced from now on (what they fork, and processes that exec it later, the kernel adds)."""
    from utrace.process import procfs

    st = procfs.identity(path)
    if st is None:
        return 0
    want = (st.st_dev, st.st_ino)
    seeded = 0
    me = os.getpid()
    try:
        with os.scandir("/proc") as it:
            for entry in it:
                if seeded >= TARGET_ENTRIES:
                    break
                if not entry.name.isdigit() or int(entry.name) == me:
                    continue
                pid = int(entry.name)
                if exe_identity(pid) != want:
                    continue
                if not tracer.seed(pid):
                    continue
                if exe_identity(pid) != want and tracer.unseed(pid):  # exited (or exec'd) meanwhile
                    continue
                seeded += 1
    except OSError:
        pass
    return seeded


def _family_offsets(required: bool) -> FamilyOffsets | None:
    """The kernel's struct offsets the fork and exit programs read; None (or, for --follow, an error)
    when its BTF does not give them."""
    from utrace.bpf.btf import VMLINUX_BTF, task_family_offsets

    found = task_family_offsets()
    if found is None:
        if required:
            raise EnvironmentProblem(
                f"cannot read the kernel's task_struct layout from {VMLINUX_BTF} (CONFIG_DEBUG_INFO_BTF): "
                "needed to follow forked processes"
            )
        return None
    return FamilyOffsets(*found)


def build(request: TraceRequest, options: SessionOptions) -> tuple[Target, Plan, BpfProgram]:
    """Everything up to the generated program (what `--dump-bpf` shows)."""
    if options.follow and request.pid is None and not request.command:
        raise UsageError("--follow needs --pid PID or -- COMMAND (without either, every process is traced)")
    target, plan = plan_request(request)
    pid = request.pid if request.pid is not None else (0 if request.command else None)
    return target, plan, program_for(plan, pid, options)


# Why tracing stopped -> whether a launched program (and what it started) is ended: SIGTERM (SIGINT when
# utrace got one), then SIGKILL after END_GRACE_S. The other ways out leave it running, as does
# --keep-running: a closed output pipe (it runs on, untraced), and the launched command's own exit
# (what it left running, a daemon `pg_ctl start` forked, it meant to leave; with --follow the trace
# only ends once they have all exited).
ENDS_LAUNCHED = frozenset({"SIGINT", "SIGTERM", "SIGHUP", "duration", "max-events", "output error", "error"})
END_GRACE_S = 2.0


class _Held:
    """A launched command held before exec until the probes are armed; `env` is added to its environment."""

    def __init__(self, argv: tuple[str, ...], env: dict[str, str] | None = None) -> None:
        environ = {**os.environ, **env} if env else None
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            try:
                os.read(r, 1)  # wait for "go"; EOF (utrace died) also releases, harmlessly
                os.close(r)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                # Python ignores these, and an ignored signal stays ignored across exec: a program
                # launched from a shell has them as default (a write to a closed pipe ends it)
                signal.signal(signal.SIGPIPE, signal.SIG_DFL)
                signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
                if environ is None:
                    os.execvp(argv[0], list(argv))
                os.execvpe(argv[0], list(argv), environ)
            except OSError as e:
                os.write(2, f"utrace: error: cannot run {argv[0]}: {e.strerror}\n".encode())
            os._exit(127)
        os.close(r)
        self.pid = pid
        self._w = w
        self.status: int | None = None
        self.released = False

    def release(self) -> None:
        os.write(self._w, b"g")
        os.close(self._w)
        self.released = True

    def poll(self) -> int | None:
        if self.status is None:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(st)
        return self.status

    def kill(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


class _LaunchWatch:
    """Asks the plan's launch_check about the launched process (and, followed, what it started) now
    and then; a warning is passed on the moment it is found, and kept for the summary.

    The launched process is asked every CHECK_FAST_S at first (a JVM may start and end in a fraction of
    a second); followed, what it started is found by a scan of /proc every FOLLOW_CHECK_S and each of
    those is asked every CHECK_S until the check has settled it or it is gone."""

    def __init__(self, check: LaunchCheck, pid: int, follow: bool, warn: Callable[[str], None] | None) -> None:
        self.check = check
        self.pid = pid
        self.follow = follow
        self.warn = warn
        self.warnings: list[str] = []
        self.pids = {pid}  # not settled yet
        self.start = time.monotonic()
        self.next = 0.0
        self.next_scan = 0.0

    def _fast(self, now: float) -> bool:
        return not self.follow and now - self.start < CHECK_FAST_FOR_S and self.pid in self.pids

    def wait_ms(self) -> int:
        """How long the loop may wait for events before the next check."""
        return round(CHECK_FAST_S * 1000) if self._fast(time.monotonic()) else 100

    def turn(self) -> None:
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + (CHECK_FAST_S if self._fast(now) else CHECK_S)
        if self.follow and now >= self.next_scan:
            from utrace.process import launch

            self.next_scan = now + FOLLOW_CHECK_S
            self.pids |= launch.descendants(self.pid)
        for pid in sorted(self.pids):
            line = self.check.check(pid)
            if line is not None:
                self.warnings.append(line)
                if self.warn is not None:
                    self.warn(line)
            if self.check.settled(pid) or not os.path.exists(f"/proc/{pid}"):
                self.pids.discard(pid)

    def final(self, summary: Summary) -> None:
        summary.warnings.extend(self.warnings)
        line = self.check.final(summary.per_probe)
        if line is not None:
            summary.warnings.append(line)


def _seed_descendants(tracer: Tracer, pid: int) -> int:
    """--pid with --follow: the target's descendants that exist already (PostgreSQL's background
    processes, a pre-fork server's workers) are traced too. Called once the fork program runs, so
    /proc is read again until it shows no new one (a process forked meanwhile by one not yet added).
    Returns how many were added: each will be counted out by the exit program."""
    from utrace.process import launch

    seen: set[int] = set()
    seeded = 0
    for _ in range(8):
        new = launch.descendants(pid) - seen
        if not new:
            break
        for child in new:
            seen.add(child)
            if not tracer.seed(child):
                continue
            if not is_alive(child) and tracer.unseed(child):
                continue  # it exited before it was added: no exit will count it out
            seeded += 1
    return seeded


def _followed_left(tracer: Tracer, seeds: int) -> int:
    """Processes still traced besides the target itself: seeds plus forks, minus those that exited."""
    added, removed, _overflow = tracer.family()
    return seeds + added - removed


def _end_launched(
    held: _Held,
    tracer: Tracer | None,
    stop: list[str],
    options: SessionOptions,
    summary: Summary,
    failure: BaseException | None,
) -> None:
    """When tracing has stopped (the probes are gone, the fork and exit programs still run): end the
    launched program and every process it started (found by the fork program, so also those
    re-parented away from it), unless the reason utrace stopped leaves it running (see
    ENDS_LAUNCHED) or --keep-running said so. A command never released is killed: it never ran."""
    from utrace.process import launch

    if not held.released:
        held.kill()
        return
    reason = stop[-1] if stop else "broken pipe" if isinstance(failure, BrokenPipeError) else "error"
    if options.keep_running or reason not in ENDS_LAUNCHED:
        return
    # the fork program keeps host pids: usable here only in the initial PID namespace
    host_pids = tracer is not None and pid_namespace() is None

    scanned: set[int] = set()

    def members() -> list[int]:
        found = set(tracer.tracked()) if tracer is not None and host_pids else set()
        scanned.clear()
        if held.poll() is None:
            found.add(held.pid)
            scanned.update(launch.descendants(held.pid))
        return sorted(found | scanned)

    def confirm(pid: int) -> bool:
        if pid == held.pid:
            return held.poll() is None  # not reaped: the pid is still the launched process's
        return (tracer is not None and host_pids and tracer.is_tracked(pid)) or pid in scanned

    signum = {"SIGINT": signal.SIGINT, "SIGHUP": signal.SIGHUP}.get(reason, signal.SIGTERM)
    summary.killed = launch.end_tree(members, signum, END_GRACE_S, confirm)
    held.poll()


def _pidfd(pid: int | None) -> int | None:
    """A pidfd of `pid` (readable once it exits), or None (no pid, gone already, or Linux < 5.3)."""
    if pid is None:
        return None
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def _output_error(e: OSError) -> OutputError:
    """A reporter's failed write (one that did not say which output it was) as an OutputError."""
    return OutputError(f"cannot write the trace: {e.strerror or e}", closed=isinstance(e, BrokenPipeError))


def _wait_released(held: _Held, stop: list[str]) -> None:
    """After the output's reader went away: the launched program runs on, untraced, to its own end,
    unless a signal comes to utrace meanwhile (then it is passed on, as for any other stop)."""
    seen = len(stop)
    while held.poll() is None and len(stop) == seen:
        time.sleep(0.05)


def run(
    request: TraceRequest, options: SessionOptions, reporter: Reporter, planned: tuple[Target, Plan] | None = None
) -> Summary:
    """Trace until a stop condition; return the summary. Detaches on every path out.

    `planned`: the target and plan, when the caller made them (`utrace list --js`); else from `request`.

    Raises:
        OutputError: the trace could not be written (not for a broken pipe: that ends tracing).
    """
    if options.follow and request.pid is None and not request.command:
        raise UsageError("--follow needs --pid PID or -- COMMAND (without either, every process is traced)")
    target, plan = planned if planned is not None else plan_request(request)
    summary = Summary(followed=options.follow)
    stop: list[str] = []  # why tracing stops, first reason first (signals append, an output failure goes first)
    output = _Output(reporter, stop)
    res = _Resources()
    with _stop_on_signals(stop):
        failure: BaseException | None = None
        try:
            _trace(request, options, target, plan, summary, output, res)
        except BaseException as e:
            failure = e
            raise
        finally:
            _give_back(res, stop, options, summary, failure)
    return _finish(summary, res.launched, output)


@contextmanager
def _stop_on_signals(stop: list[str]) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP append their name to `stop` while in the block."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.append(_SIGNALS.get(signum, "SIGTERM"))

    old_handlers = {signum: signal.signal(signum, on_signal) for signum in _SIGNALS}
    try:
        yield
    finally:
        for signum, handler in old_handlers.items():
            signal.signal(signum, handler)


@dataclass(slots=True)
class _Resources:
    """What a trace holds that is given back on every way out (`_give_back`), each field set by `_trace`
    as soon as it is acquired: the launched command, the tracer (its fork and exit programs outlive the
    probes, to end a launched tree), the pidfd that becomes readable when the target exits, and a
    change made to the target (Plan.change, undone)."""

    launched: _Held | None = None
    tracer: Tracer | None = None
    exit_fd: int | None = None
    change: TargetChange | None = None


class _Output:
    """The reporter as the session writes to it. Its first failure puts a stop reason first in `stop`
    and is kept in `error`; records read after it have nowhere to go and are counted in `dropped`."""

    __slots__ = ("dropped", "error", "reporter", "stop")

    def __init__(self, reporter: Reporter, stop: list[str]) -> None:
        self.reporter = reporter
        self.stop = stop
        self.error: OutputError | None = None
        self.dropped = 0  # records read but not handed to the reporter (the output had failed): lost

    def failed(self, e: OutputError | OSError) -> None:
        """The output failed: tracing stops (for a broken pipe, as at the end of --duration)."""
        self.error = e if isinstance(e, OutputError) else _output_error(e)
        self.stop.insert(0, "output closed" if self.error.closed else "output error")

    def event(self, ev: Event) -> None:
        try:
            self.reporter.event(ev)
        except (OutputError, OSError) as e:
            self.failed(e)

    def flush(self) -> None:
        if self.error is None:
            try:
                self.reporter.flush()
            except (OutputError, OSError) as e:
                self.failed(e)


class _Recorder:
    """The ring's callback: a record becomes an event (decoded, refined by the runtime, its stack
    symbolised, namespace ids added), counted in the summary and handed to the output. Records past
    --max-events are ignored."""

    __slots__ = (
        "_decoder",
        "_displays",
        "_limit",
        "_ns_ids",
        "_refine",
        "_specs",
        "_uretprobes",
        "symbolizer",
    )

    def __init__(
        self, program: BpfProgram, plan: Plan, target: Target, options: SessionOptions, launched: int | None
    ) -> None:
        from utrace.probes.decode import Decoder

        self._specs = program.specs
        self._decoder = Decoder(program)
        self._refine = plan.refine
        self._limit = options.max_events
        self._ns_ids = NamespaceIds()
        self.symbolizer: Symbolizer | None = None
        if options.stack_depth:
            from utrace.process.stacks import Symbolizer

            self.symbolizer = Symbolizer(
                (target.exe, target.modules[0].display), launched, program.options.v8_frames, plan.source_lines
            )
            if program.options.v8_frames is not None:
                for m in target.modules:
                    self.symbolizer.preload(m.path)
        self._displays = {m.path: m.display for m in target.modules}
        self._uretprobes = {s.name for s in program.specs if s.kind is ProbeKind.RETURN}

    def callback(self, summary: Summary, output: _Output) -> Callable[[bytes], None]:
        """The callback that records into `summary` and `output`."""
        limit = self._limit

        def on_record(data: bytes) -> None:
            if limit is not None and summary.events >= limit:
                return
            if output.error is not None:  # read after the output failed: nowhere to go
                output.dropped += 1
                return
            ev = self.event(data)
            summary.events += 1
            summary.per_probe[ev.probe if ev.kind != "return" else f"{ev.probe} (return)"] += 1
            output.event(ev)

        return on_record

    def prefetch(self, data: bytes) -> None:
        """Read from the process what symbolising the record's stack needs (as the ring is read ahead)."""
        if self.symbolizer is not None:
            self.symbolizer.prefetch(self._decoder.raw_stack(data))

    def event(self, data: bytes) -> Event:
        ev = self._decoder.decode(data)
        if self._refine is not None:
            ev = self._refine(ev)
        symbolizer = self.symbolizer
        if symbolizer is not None and ev.stack:
            spec = self._specs[self._decoder.probe_index(data)]
            if spec.kind is not ProbeKind.RETURN:  # the innermost frame is the probed instruction
                module = spec.module
                symbolizer.learn(ev.pid, module, self._displays.get(module, module), spec.offset, ev.stack[0].address)
            after_return = ev.kind == "return" and ev.probe in self._uretprobes
            ev = replace(ev, stack=symbolizer.stack(ev.pid, ev.stack, after_return=after_return))
        return self._ns_ids.annotate(ev)


@dataclass(frozen=True, slots=True)
class _Lifetime:
    """How the traced process's end is seen: `pid` (the launched command's, or --pid's) exits, or, with
    `exe_id` (a --pid target not followed), execs another file; followed, the trace ends only once the
    `seeds` processes found at the start and what they forked have all exited. `exit_fd`, a pidfd of
    `pid`, wakes a nap when it exits."""

    launched: _Held | None
    pid: int | None
    exe_id: tuple[int, int] | None
    follow: bool
    seeds: int
    exit_fd: int | None

    def nap(self, seconds: float) -> None:
        if self.exit_fd is None:
            time.sleep(seconds)
        else:
            select.select([self.exit_fd], [], [], seconds)

    def ended(self, tracer: Tracer) -> str | None:
        """Why the target's trace ends ("target exited", "target exec'd"), or None while it runs."""
        held, pid = self.launched, self.pid
        if (
            (held is not None and held.poll() is not None) or (pid is not None and held is None and not is_alive(pid))
        ) and not (self.follow and _followed_left(tracer, self.seeds) > 0):
            return "target exited"
        if self.exe_id is not None and pid is not None and exe_identity(pid) not in (self.exe_id, None):
            return "target exec'd"
        return None


def _trace(
    request: TraceRequest,
    options: SessionOptions,
    target: Target,
    plan: Plan,
    summary: Summary,
    output: _Output,
    res: _Resources,
) -> None:
    """Launch (held before exec), attach, read until a stop reason is in `output.stop`, remove the probes
    and collect: fills `summary` but for what `_give_back` and `_finish` add. What it acquires goes
    into `res` at once."""
    from utrace.bpf.backend import Tracer

    if request.command:
        # Held before exec: its pid goes into the program's filter, the probes are armed on the
        # files by path, and only then does it run its first instruction.
        res.launched = _Held(_with_args(request.command, plan, target), plan.launch_env)
    launched = res.launched
    watch = (
        _LaunchWatch(plan.launch_check, launched.pid, options.follow, options.on_warning)
        if launched is not None and plan.launch_check is not None
        else None
    )
    watch_pid = launched.pid if launched else request.pid
    # A launched command may exec through wrappers (sh -c, env) by design; a --pid target runs
    # the file its probes were planned for, so exec'ing another one ends the trace (unless its
    # descendants are followed: they may run the file still).
    follow = options.follow
    exe_id = exe_identity(watch_pid) if watch_pid is not None and launched is None and not follow else None
    program = program_for(plan, watch_pid, options)
    with Tracer(program, launched=launched is not None) as tracer:
        # a launched tree is ended after the probes are gone, through the fork program's map
        tracer.keep_family = launched is not None
        res.tracer = tracer
        seeds = _arm(tracer, program, plan, request.pid, watch_pid, follow, summary)
        recorder = _Recorder(program, plan, target, options, launched.pid if launched else None)
        aggregating = options.aggregate is not Aggregate.NONE
        ring = tracer if aggregating else _open_ring(tracer, recorder, summary, output)
        # readable once the target exits: no waiting out a timeout (followed, the trace goes on after)
        res.exit_fd = _pidfd(watch_pid) if not follow else None
        if res.exit_fd is not None:
            tracer.watch(res.exit_fd)
        life = _Lifetime(launched, watch_pid, exe_id, follow, seeds, res.exit_fd)
        if plan.change is not None:  # once the probes are armed; said with the other notes
            res.change = plan.change
            plan.notes.append(plan.change.apply())
        output.reporter.started(target, plan, tracer.attached, launched.pid if launched else None)
        # What was built so far (symbol tables, the program) lives as long as the trace: the collector
        # no longer walks it. Its first pass after setup walked node's ~200k table objects (loaded with
        # the collector off), 5-10 ms while the first events waited (their process, meanwhile, may exit
        # before its JavaScript frames are read)
        gc.freeze()
        if launched:
            launched.release()
            if watch is not None:
                watch.start = time.monotonic()  # its fast phase counts from the launch
        started = time.monotonic()
        labels = [probe_label(s) for s in program.specs]
        _read_until_stopped(tracer, ring, options, summary, output, life, recorder, labels, started, watch)
        tracer.unlink()  # first: a flood of events ends here
        unread = 0
        if aggregating:
            _collect_aggregates(tracer, program, labels, summary)
            _collect_keyed(tracer, program, plan, summary)
        else:
            unread = _drain(ring, output)
        summary.lost = tracer.lost() + unread + sum(t.lost for t in summary.keyed)
        _closing_warnings(tracer, options, plan, program, summary)
        if watch is not None:
            watch.final(summary)
        # not counting a wait for the launched program to end on its own
        summary.duration_s = time.monotonic() - started


def _closing_warnings(
    tracer: Tracer, options: SessionOptions, plan: Plan, program: BpfProgram, summary: Summary
) -> None:
    """What the program's counters, the plan's closing words and the fork program have to say."""
    if options.slower_than_ns is not None:
        from utrace.probes.slow import FULL_MAP, full_warning

        summary.warnings += full_warning(sum(tracer.sums(FULL_MAP).values()))
    for counter, text in plan.counters:
        if n := tracer.counter(counter):
            summary.warnings.append(text.format(n=n))
    if plan.closing is not None:
        summary.warnings.extend(plan.closing(summary.per_probe, tracer.keys))
    _family_summary(tracer, options.follow or program.options.exec_file is not None, summary)


def _open_ring(tracer: Tracer, recorder: _Recorder, summary: Summary, output: _Output) -> Tracer | ReadAhead:
    """Open the tracer's ring with the recorder as its callback; what the loop reads from: the tracer,
    or, with stacks (symbolised from the live process), a ReadAhead of its ring."""
    callback = recorder.callback(summary, output)
    if recorder.symbolizer is None:
        tracer.open_ring(callback)
        return tracer
    from utrace.app.readahead import ReadAhead

    ring = ReadAhead(tracer, recorder.prefetch)
    ring.handler = callback
    recorder.symbolizer.before_slow = ring.pump  # records that come meanwhile are read at once
    tracer.open_ring(ring.take)
    return ring


def _family_summary(tracer: Tracer, traced: bool, summary: Summary) -> None:
    """How many processes the fork program added, and a warning for the forks (or execs of the traced
    file) that found the kernel's table of followed processes (TRACKED_ENTRIES) full; `traced`: that
    table decides whose events are traced (--follow, or a launched command's processes running the
    target file), else only which processes a launched command's end takes with it."""
    summary.forked, _removed, n = tracer.family()
    if not n:
        return
    what = (
        "their events are missing from the trace"
        if traced
        else "utrace may not have ended them when it stopped (they may still be running)"
    )
    table = f"utrace's table of {TRACKED_ENTRIES} followed processes was full"
    summary.warnings.append(f"{n} new process(es) were not followed: {table}; {what}")


def _with_args(argv: tuple[str, ...], plan: Plan, target: Target) -> tuple[str, ...]:
    """The command with `plan.launch_args` after its program, when that program is the target's file."""
    if not plan.launch_args or not argv:
        return argv
    import shutil

    program = argv[0] if os.sep in argv[0] else shutil.which(argv[0])  # the file itself, not a #! interpreter
    try:
        same = program is not None and os.path.samefile(program, target.exe)
    except (OSError, ValueError):
        same = False
    if not same:
        plan.notes.append(f"{argv[0]} is not {target.exe}: it was not given " + " ".join(plan.launch_args))
        return argv
    return (argv[0], *plan.launch_args, *argv[1:])


def _arm(
    tracer: Tracer,
    program: BpfProgram,
    plan: Plan,
    pid: int | None,
    watch_pid: int | None,
    follow: bool,
    summary: Summary,
) -> int:
    """Load and attach the program, and seed its filter with what --follow (of --pid `pid`) or an
    executable filter finds running. Returns the processes traced so far that `_Lifetime.ended` waits
    for: the target itself and its descendants found."""
    tracer.load()
    # followed processes are filtered in BPF only: the kernel's own pid filter is one process
    tracer.attach(None if follow else watch_pid)
    # the target itself (and, launched, before its exec), then what --follow finds in /proc
    seeds = 1 + (_seed_descendants(tracer, pid) if follow and pid is not None else 0)
    if program.options.exec_file is not None and plan.only_exe is not None:
        # after the exec program is attached: a process that execs the file from now on is not missed
        if _seed_runners(tracer, plan.only_exe) >= TARGET_ENTRIES:
            plan.notes.append(
                f"{TARGET_ENTRIES} processes running {plan.only_exe} were found at the start, the most "
                "traced: any more that ran it already are not (those that exec it from now on are)"
            )
        summary.followed = True  # what they fork is traced: the note on untraced forks does not apply
    summary.attached = tracer.attached
    return seeds


def _read_until_stopped(
    tracer: Tracer,
    ring: Tracer | ReadAhead,
    options: SessionOptions,
    summary: Summary,
    output: _Output,
    life: _Lifetime,
    recorder: _Recorder,
    labels: list[str],
    started: float,
    watch: _LaunchWatch | None,
) -> None:
    """Each turn: read at most BATCH records for TURN_S (aggregating: wait, and hand the reporter the
    counts every --top interval), flush, check the launched processes (`watch`), note losses, then check
    the stop conditions; returns once `output.stop` has a reason."""
    stop = output.stop
    aggregating = options.aggregate is not Aggregate.NONE
    limit = options.max_events
    last_lost = 0
    next_lost_note = started
    deadline = started + options.duration if options.duration else None
    refresh = options.refresh_s if aggregating and options.refresh_s else 0.0
    next_refresh = started + refresh
    backlog = False  # the last turn read something: more may be waiting, do not sleep
    while not stop:
        if refresh:
            life.nap(min(0.1, max(0.0, next_refresh - time.monotonic())))
            now = time.monotonic()
            if now >= next_refresh:
                next_refresh += refresh
                if next_refresh <= now:  # late (a busy machine): keep the pace, do not bunch up
                    next_refresh = now + refresh
                try:
                    output.reporter.snapshot(_counts(tracer, labels), now - started)
                except (OutputError, OSError) as e:
                    output.failed(e)
        elif aggregating:
            life.nap(watch.wait_ms() / 1000 if watch is not None else 0.1)
        else:
            wait_ms = 0 if backlog else (watch.wait_ms() if watch is not None else 100)
            backlog = ring.poll(wait_ms, BATCH, time.monotonic() + TURN_S) > 0
        output.flush()
        if watch is not None:
            watch.turn()
        if recorder.symbolizer is not None and life.pid is not None:
            recorder.symbolizer.watch(life.pid)
        lost = tracer.lost()
        if lost != last_lost and time.monotonic() >= next_lost_note:
            last_lost = lost
            next_lost_note = time.monotonic() + LOST_NOTE_S
            output.reporter.lost(lost)
        if limit is not None and summary.events >= limit:
            stop.append("max-events")
        elif deadline is not None and time.monotonic() >= deadline:
            stop.append("duration")
        else:
            ended = life.ended(tracer)
            if ended is not None:
                stop.append(ended)


def _counts(tracer: Tracer, labels: list[str]) -> dict[tuple[str, int], int]:
    """The in-kernel counts so far, per (probe label, pid)."""
    out: Counter[tuple[str, int]] = Counter()
    for (probe, pid, _slot), n in tracer.aggregates("counts").items():
        if probe < len(labels):
            out[(labels[probe], pid)] += n
    return dict(out)


def _collect_aggregates(tracer: Tracer, program: BpfProgram, labels: list[str], summary: Summary) -> None:
    """The final counts (and latency buckets) into `summary`."""
    summary.counts = _counts(tracer, labels)
    summary.events = sum(summary.counts.values())
    for (label, _pid), n in summary.counts.items():
        summary.per_probe[label] += n
    for (probe, pid, slot), n in tracer.aggregates("hist").items():
        if probe < len(labels):  # keyed by the return probe, shown by the function's name
            buckets = summary.hist.setdefault((program.specs[probe].name, pid), {})
            buckets[slot] = buckets.get(slot, 0) + n


def _collect_keyed(tracer: Tracer, program: BpfProgram, plan: Plan, summary: Summary) -> None:
    """Counts per argument value into `summary` (those the full map could not count are lost too)."""
    keyed = program.options.keyed
    if keyed is None:
        return
    from utrace.probes.aggregate import collect

    summary.keyed = collect(
        keyed, program.specs, tracer.sums("by_counts"), tracer.sums("by_lost"), probe_label, plan.refine
    )


def _drain(tracer: Tracer | ReadAhead, output: _Output) -> int:
    """Once the probes are removed: read what the ring still holds (see the module's docstring) and
    return how many records were never handed to the output (lost), 0 after --max-events."""
    stop = output.stop
    if output.error is None and stop[0] != "max-events":
        # Asked to stop: read for DRAIN_S. The target ended: read all it left (the ring
        # holds a bounded amount, and nothing adds to it now) unless a signal comes.
        asked = stop[0] not in ("target exited", "target exec'd")
        end = time.monotonic() + DRAIN_S if asked else float("inf")
        seen = len(stop)
        while output.error is None and len(stop) == seen and time.monotonic() < end:
            if not tracer.drain(BATCH, min(end, time.monotonic() + TURN_S)):
                break
            output.flush()
        output.flush()
    # what is left was never read: lost, unless --max-events had all it asked for
    skipped = tracer.skip()
    return skipped + output.dropped if stop[0] != "max-events" else 0


def _give_back(
    res: _Resources, stop: list[str], options: SessionOptions, summary: Summary, failure: BaseException | None
) -> None:
    """On every way out of `_trace`: undo a change made to the target, close the pidfd, end (or leave
    running) the launched command, release the tracer's last programs."""
    if res.change is not None:
        undone = res.change.undo()
        if undone is not None:
            summary.warnings.append(undone)
    if res.exit_fd is not None:
        os.close(res.exit_fd)
    try:
        launched = res.launched
        if launched is not None and launched.poll() is None and stop and stop[0] == "output closed":
            _wait_released(launched, stop)  # not killed: it runs to its end, as it would without utrace
        if launched is not None:
            _end_launched(launched, res.tracer, stop, options, summary, failure)
    finally:
        if res.tracer is not None:
            res.tracer.release()


def _finish(summary: Summary, launched: _Held | None, output: _Output) -> Summary:
    """Why tracing stopped and the launched command's exit into `summary`, then the reporter's last word.

    Raises:
        OutputError: the output failed (not by closing) while tracing or in the summary.
    """
    stop = output.stop
    summary.stopped_by = stop[0] if stop else "error"
    if launched is not None:
        summary.exit_code = launched.status
    if output.error is not None and not output.error.closed:
        raise output.error
    try:
        output.reporter.finished(summary)
    except (OutputError, OSError) as e:
        error = e if isinstance(e, OutputError) else _output_error(e)
        if not error.closed:
            raise error from None
        summary.stopped_by = "output closed"
        output.reporter.finished(summary)  # a reporter that saw its pipe break writes the summary on stderr
    return summary
