"""The `utrace` command. Thin: parse arguments, call the library, render, map errors to exit codes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import click

from utrace import __version__
from utrace.cli import completion as comp
from utrace.errors import UtraceError

if TYPE_CHECKING:
    from typing import TextIO

    from utrace.app.session import Reporter, SessionOptions
    from utrace.output.top import TopReporter
    from utrace.probes.aggregate import ByRequest
    from utrace.runtimes.base import CommandSpec, OptionSpec, TraceRequest

INTERNAL_ERROR = 70


class _Commands(click.Group):
    """utrace's own commands, then one per registered runtime (built-in or plugin), built from its
    CommandSpec when first named: `utrace node ...` loads the node runtime only."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from utrace.runtimes.registry import commands

        return sorted({*super().list_commands(ctx), *commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            return cmd
        from utrace.runtimes import registry

        found = registry.command(cmd_name)
        if found is None:
            return None
        runtime, spec = found
        if runtime not in _BUILT:  # one command object for a runtime and its aliases
            _BUILT[runtime] = runtime_command(runtime, spec)
        return _BUILT[runtime]


_BUILT: dict[str, click.Command] = {}


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="utrace")
def cli() -> None:
    """utrace: trace functions and USDT probes inside running Node.js, Go, Java and native programs."""


@cli.command("list")
@click.argument("target", required=False, shell_complete=comp.complete_list_target)
@click.argument("pattern", required=False, shell_complete=comp.complete_list_pattern)
@click.option(
    "--pid", "-p", type=int, help="List every module mapped by this process.", shell_complete=comp.complete_pid
)
@click.option("--usdt", "only_usdt", is_flag=True, help="Only USDT probes.")
@click.option("--functions", "only_functions", is_flag=True, help="Only functions.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--js",
    "js_glob",
    is_flag=False,
    flag_value="*",
    default=None,
    metavar="[GLOB]",
    help="With --pid: the JavaScript functions matching GLOB (default *) the node process calls during "
    "--for seconds, with their call counts (arms probes: needs root).",
)
@click.option(
    "--for",
    "for_s",
    type=float,
    default=None,
    metavar="SECONDS",
    help="With --js: how long to watch the calls (default 2, at most 60).",
)
def list_cmd(
    target: str | None,
    pattern: str | None,
    pid: int | None,
    only_usdt: bool,
    only_functions: bool,
    as_json: bool,
    js_glob: str | None,
    for_s: float | None,
) -> None:
    """List the functions and USDT probes of TARGET (a file or command name) matching PATTERN (a glob).

    With --pid, TARGET may be omitted (then the first argument is the pattern). With --pid and --js, the
    JavaScript functions the process calls while watched (not every function that exists).
    """
    if js_glob is not None or for_s is not None:
        _list_js(target, pattern, pid, only_usdt or only_functions, as_json, js_glob, for_s)
        return
    from utrace.app.list_probes import list_target
    from utrace.errors import UsageError
    from utrace.output.listing import (
        JSON,
        PLAIN,
        TABLE_LIMIT,
        ColdIndexProgress,
        write_json,
        write_plain,
        write_table,
    )
    from utrace.process.target import file_target, process_target

    if only_usdt and only_functions:
        raise UsageError("--usdt and --functions exclude each other")
    if pid is not None:
        if target is not None and pattern is None:
            pattern, target = target, None
        if target is not None:
            raise UsageError("give either TARGET or --pid, not both")
        tgt = process_target(pid)
    else:
        if target is None:
            raise UsageError("missing TARGET (a file, a command on PATH, or --pid PID)")
        tgt = file_target(target)
    out = sys.stdout
    tty = out.isatty()
    progress = ColdIndexProgress(sys.stderr)
    try:
        listing = list_target(
            tgt,
            pattern,
            functions=not only_usdt,
            usdt=not only_functions,
            on_cold=progress,
            render=JSON if as_json else PLAIN,
            cached_above=TABLE_LIMIT if tty and not as_json else 0,  # a terminal gets a table up to that
        )
    finally:
        progress.stop()
    total = listing.function_count + len(listing.probes)
    if as_json:
        write_json(listing, out)
    elif tty and total <= TABLE_LIMIT:
        write_table(listing, out)
    else:
        out.flush()
        write_plain(listing, out.buffer)
    if pattern is not None and total == 0:
        raise UsageError(f"nothing matches {pattern!r}")
    _KEEP.append(listing)


def _list_js(
    target: str | None,
    pattern: str | None,
    pid: int | None,
    kinds: bool,
    as_json: bool,
    js_glob: str | None,
    for_s: float | None,
) -> None:
    """`utrace list --pid PID --js [GLOB] [--for SECONDS]`."""
    from utrace.app.list_probes import DEFAULT_FOR_S, check_window, list_js, nothing_called
    from utrace.errors import UsageError
    from utrace.output.escape import safe
    from utrace.output.listing import js_notes, write_js_json, write_js_plain

    if js_glob is None:
        raise UsageError("--for applies to --js (utrace list --pid PID --js GLOB --for SECONDS)")
    if target is not None or pattern is not None:
        raise UsageError(f"--js takes the glob itself: utrace list --pid PID --js {target or pattern!r}")
    if kinds:
        raise UsageError("--usdt and --functions do not apply to --js")
    if pid is None:
        raise UsageError("--js lists the functions a running node calls: give --pid PID")
    seconds = check_window(DEFAULT_FOR_S if for_s is None else for_s)

    def armed(_probes: int) -> None:
        sys.stderr.write(
            f"utrace: watching the JavaScript calls of pid {pid} for {seconds:g} s; Ctrl-C to stop sooner\n"
        )
        sys.stderr.flush()

    listing = list_js(pid, js_glob, seconds, on_armed=armed)
    for line in js_notes(listing):
        sys.stderr.write(f"utrace: note: {safe(line)}\n")
    if not listing.functions:
        raise UsageError(nothing_called(listing))
    out = sys.stdout
    if as_json:
        write_js_json(listing, out)
    else:
        out.flush()
        write_js_plain(listing, out.buffer)


# Objects never freed: the process leaves through `_fast_exit`, and freeing a big listing (200k objects
# on pages a cache writer forked off shares, so each first touch copies a page) costs 30 ms for nothing.
_KEEP: list[object] = []


_LAUNCH: list[str] = []
STACK_DEPTH = 64  # frames captured per event with --stack
HIST_OF = "--hist-of"  # what `--hist=ARG` becomes before click parses it (see _TraceCommand)


def _trace_params() -> list[click.Parameter]:
    """The options of every trace command, after its runtime's own."""
    return [
        click.Option(["--pid", "-p"], type=int, help="Trace only this running process.",
                     shell_complete=comp.complete_pid),
        click.Option(["--follow", "-f"], is_flag=True,
                     help="Also trace every process the target forks or execs, at any depth (servers' "
                          "workers, `npm start` -> sh -> node)."),
        click.Option(["--keep-running"], is_flag=True,
                     help="Leave a launched command and what it started running when tracing stops "
                          "(by default they get SIGTERM, then SIGKILL)."),
        click.Option(["--ret"], is_flag=True, help="Also trace returns (value and latency)."),
        click.Option(["--slower-than", "slower_than"], metavar="DURATION",
                     help="Only calls at least this long (10ms, 1.5s, 250us, 800ns), decided in the kernel: "
                          "the call with its arguments, then its return with the latency."),
        click.Option(["--json", "as_json"], is_flag=True, help="JSON lines (schema in the README): --format json."),
        click.Option(["--format", "fmt"], type=click.Choice(["text", "json", "perfetto"]), default=None,
                     help="text (default), json lines, or perfetto (Trace Event Format JSON for ui.perfetto.dev)."),
        click.Option(["--otlp"], metavar="URL",
                     help="Also send calls with returns as OpenTelemetry spans to an OTLP/HTTP receiver "
                          "(e.g. http://127.0.0.1:4318)."),
        click.Option(["-o", "--output"], type=click.Path(dir_okay=False, writable=True), help="Write events to FILE."),
        click.Option(["--duration", "-d"], type=float, help="Stop after SECONDS."),
        click.Option(["--max-events", "-n"], type=int, help="Stop after N events."),
        click.Option(["--count", "count"], is_flag=True,
                     help="Count calls per probe and process in the kernel; print the counts at the end."),
        click.Option(["--hist"], is_flag=True,
                     help="Latency histogram per function (log2 buckets, computed in the kernel). "
                          "--hist=ARG (with the '='): log2 histogram of integer argument ARG (ret: the "
                          "return value) instead."),
        click.Option([HIST_OF, "hist_arg"], metavar="ARG", hidden=True, help="--hist=ARG, as the parser gets it."),
        click.Option(["--by"], metavar="ARG",
                     help="With --count: count calls per value of argument ARG (a string, as cut at --max-len, "
                          "or an integer; ret: the return value), in the kernel; the top 20 are shown."),
        click.Option(["--stack"], is_flag=True,
                     help="Show each event's user stack (frame pointers; C++, Go, and JIT code via perf maps)."),
        click.Option(["--top"], is_flag=True,
                     help="Live table of the busiest probes (counted in the kernel), redrawn every interval."),
        click.Option(["--interval"], type=float, metavar="SECONDS", help="--top's refresh interval (default 1)."),
        click.Option(["--dump-bpf"], is_flag=True, help="Print the generated BPF program and exit."),
        click.Option(["--buffer-mb"], type=float, default=16.0, show_default=True, help="Ring buffer size."),
        click.Option(["--max-len"], type=click.IntRange(8, 4096), default=128, show_default=True,
                     help="String capture limit in bytes."),
        click.Option(["--where"], metavar="EXPR",
                     help="Only calls whose arguments satisfy EXPR, tested in the kernel: "
                          "'n > 100 && name == \"bob\"', 'url ~ \"http://api/*\"', pid, tid, comm, goid."),
    ]  # fmt: skip


def _ring_pages(mb: float) -> int:
    from utrace.errors import UsageError

    if not 0 < mb <= 1024:  # NaN too
        raise UsageError(f"--buffer-mb must be more than 0 and at most 1024, not {mb:g}")
    pages = max(1, int(mb * 1024 * 1024) // 4096)
    return 1 << (pages - 1).bit_length()


def _check_options(probes: tuple[str, ...], opts: dict[str, Any]) -> None:
    """Limits and patterns that would trace nothing, or everything, or never stop as asked.

    Raises:
        UsageError: before anything is resolved, launched or attached.
    """
    import math

    from utrace.errors import UsageError

    for p in probes:
        if not p.strip():
            raise UsageError(f"empty pattern {p!r}: name a function or probe (a glob such as 'parse_*' is fine)")
    duration = opts["duration"]
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise UsageError(f"--duration must be a positive number of seconds, not {duration:g}")
    if opts["max_events"] is not None and opts["max_events"] < 1:
        raise UsageError(f"--max-events must be at least 1, not {opts['max_events']}")
    _ring_pages(opts["buffer_mb"])
    if opts["where"] is not None:
        from utrace.app.where import parse

        parse(opts["where"])  # a malformed expression fails before anything is resolved


def _run_trace(
    runtime: str,
    binary: str | None,
    probes: tuple[str, ...],
    opts: dict[str, Any],
    extra: tuple[tuple[str, Any], ...] = (),
) -> None:
    """One trace command: check the options, then dump the program or trace until stopped."""
    from utrace.app.session import build
    from utrace.runtimes.base import TraceRequest

    command = tuple(_LAUNCH)
    _check_trace(probes, opts, command)
    by = _by_request(opts)
    request = TraceRequest(
        runtime=runtime,
        binary=binary,
        pid=opts["pid"],
        command=command,
        probes=probes,
        ret=opts["ret"] or opts["hist"] or opts["slower_than"] is not None or (by is not None and by.on_return),
        max_len=opts["max_len"],
        extra=extra,
        where=opts["where"],
    )
    session, fmt = _session_options(opts)
    otlp = None
    if opts["otlp"]:
        from utrace.output.otlp import OtlpReporter

        otlp = OtlpReporter(opts["otlp"])  # checks the URL before anything is traced
    if opts["dump_bpf"]:
        with _hist_hint(opts["hist"]):
            _target, plan, program = build(request, session)
        from utrace.output.escape import safe

        for note in plan.notes:
            sys.stderr.write(f"utrace: {safe(note)}\n")
        sys.stdout.write(program.source)
        return
    from utrace.bpf.backend import privileges_problem

    problem = privileges_problem()  # before the target is resolved or a command launched
    if problem is not None:
        from utrace.errors import EnvironmentProblem

        raise EnvironmentProblem(problem)
    with _hist_hint(opts["hist"]):
        _trace(request, session, fmt, opts["output"], otlp)


@contextmanager
def _hist_hint(hist: bool) -> Iterator[None]:
    """`--hist n` is the latency flag and a probe named n: when a probe is not found, say how to ask for a
    histogram of argument n."""
    from utrace.errors import NotFoundError

    try:
        yield
    except NotFoundError as e:
        if not hist:
            raise
        raise NotFoundError(
            f"{e.message} (--hist takes no value: a histogram of argument ARG is --hist=ARG)", e.suggestions
        ) from None


def _check_trace(probes: tuple[str, ...], opts: dict[str, Any], command: tuple[str, ...]) -> None:
    """What is wrong with the words and options alone, before anything is resolved, launched or attached.

    Raises:
        UsageError: no probe, a bad limit or pattern, or options that contradict each other.
        OutputError: standard output is closed and events would go there.
    """
    from utrace.errors import UsageError

    if not probes:
        raise UsageError("name at least one function or probe to trace")
    _check_options(probes, opts)
    if sys.stdout is None and (opts["dump_bpf"] or not opts["output"]):  # started with stdout closed (>&-)
        from utrace.errors import OutputError

        raise OutputError("cannot write standard output: it is closed")
    if opts["pid"] is not None and command:
        raise UsageError("give either --pid or -- COMMAND, not both")
    if opts["follow"] and opts["pid"] is None and not command:
        raise UsageError("--follow needs --pid PID or -- COMMAND (without either, every process is traced)")
    if opts["keep_running"] and not command:
        raise UsageError("--keep-running applies to a launched command (-- COMMAND)")


def _by_request(opts: dict[str, Any]) -> ByRequest | None:
    """`--count --by ARG` or `--hist=ARG`, checked against the other aggregation options.

    Raises:
        UsageError: --by without --count, an empty ARG, or options that contradict each other.
    """
    from utrace.errors import UsageError
    from utrace.probes.aggregate import ByRequest

    by, hist_arg = opts["by"], opts["hist_arg"]
    if by is None and hist_arg is None:
        return None
    if hist_arg is not None and not hist_arg.strip():
        raise UsageError("--hist=ARG needs an argument name (--hist alone is the latency histogram)")
    if by is not None and not by.strip():
        raise UsageError("--by needs an argument name")
    if by is not None and hist_arg is not None:
        raise UsageError("--by and --hist=ARG exclude each other (--by counts per value, --hist=ARG per log2 range)")
    if hist_arg is not None and opts["hist"]:
        raise UsageError("--hist and --hist=ARG exclude each other: one histogram, of latency or of ARG")
    if hist_arg is not None and opts["count"]:
        raise UsageError("--count and --hist=ARG exclude each other (--hist=ARG counts calls too)")
    if by is not None and not opts["count"]:
        raise UsageError(f"--by counts calls per value of an argument: add --count (--count --by {by})")
    if opts["top"]:
        raise UsageError(f"--top and {'--by' if by is not None else '--hist=ARG'} exclude each other")
    if opts["ret"]:
        raise UsageError("--ret does not apply to --by or --hist=ARG: name the return value as ARG ret")
    return ByRequest(by, hist=False) if by is not None else ByRequest(hist_arg, hist=True)


def _session_options(opts: dict[str, Any]) -> tuple[SessionOptions, str]:
    """The session's options and the output format (text, json, perfetto).

    Raises:
        UsageError: aggregation options that contradict each other or the streaming ones.
    """
    from utrace.app.session import SessionOptions
    from utrace.errors import UsageError
    from utrace.probes.codegen import Aggregate

    if opts["count"] and opts["hist"]:
        raise UsageError("--count and --hist exclude each other (--hist counts calls too)")
    by = _by_request(opts)
    interval = _top_interval(opts)
    top = interval is not None
    counting = opts["count"] or top or by is not None
    aggregate = Aggregate.COUNT if counting else Aggregate.HIST if opts["hist"] else Aggregate.NONE
    if aggregate is not Aggregate.NONE and opts["max_events"] is not None:
        raise UsageError(f"--max-events applies to streamed events, not to {'--top' if top else '--count or --hist'}")
    if aggregate is not Aggregate.NONE and opts["stack"]:
        raise UsageError(f"--stack applies to streamed events, not to {'--top' if top else '--count or --hist'}")
    if aggregate is Aggregate.COUNT and opts["ret"]:
        what = "--top" if top else "--count"
        raise UsageError(f"--ret does not apply to {what}: it counts calls (--hist shows the returns' latencies)")
    fmt = _output_format(opts, aggregate)
    slower_than = _slower_than(opts, top)
    if slower_than is not None and by is not None:
        raise UsageError("--slower-than does not combine with --by or --hist=ARG (they count every call)")
    session = SessionOptions(
        duration=opts["duration"],
        max_events=opts["max_events"],
        ring_pages=_ring_pages(opts["buffer_mb"]),
        aggregate=aggregate,
        stack_depth=STACK_DEPTH if opts["stack"] else 0,
        refresh_s=interval,
        follow=opts["follow"],
        keep_running=opts["keep_running"],
        on_warning=_warn,
        by=by,
        slower_than_ns=slower_than,
    )
    return session, fmt


def _slower_than(opts: dict[str, Any], top: bool) -> int | None:
    """--slower-than in nanoseconds, or None.

    Raises:
        UsageError: not a duration with a unit, or with --top.
    """
    from utrace.errors import UsageError
    from utrace.probes.slow import DurationError, parse_duration

    text: str | None = opts["slower_than"]
    if text is None:
        return None
    if top:
        raise UsageError("--slower-than does not apply to --top (use --count --slower-than)")
    try:
        return parse_duration(text)
    except DurationError as e:
        raise UsageError(str(e)) from None


def _trace(request: TraceRequest, session: SessionOptions, fmt: str, output: str | None, otlp: Reporter | None) -> None:
    """Trace until stopped, events to `output` (else standard output), then the notes on what was missed."""
    from utrace.app.session import run
    from utrace.errors import UsageError

    try:
        out = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    except OSError as e:
        raise UsageError(f"cannot write {output}: {e.strerror}") from None
    top_view: TopReporter | None = None
    try:
        reporter: Reporter
        if session.refresh_s is not None:
            from utrace.output.top import TopReporter

            reporter = top_view = TopReporter(out, interval_s=session.refresh_s)
        else:
            reporter = _stream_reporter(out, fmt, bool(request.command))
        if otlp is not None:
            from utrace.output.tee import TeeReporter

            reporter = TeeReporter(reporter, otlp)
        summary = run(request, session, reporter)
        for line in summary.warnings:  # said when found, and again here after the summary
            _warn(line)
        if summary.forked and not summary.followed and not summary.events:
            who = f"pid {request.pid}" if request.pid is not None else "the launched command"
            sys.stderr.write(
                f"utrace: note: nothing was seen, and {who} started {summary.forked} process(es) while traced, "
                "which were not traced: add --follow to trace them too\n"
            )
        if summary.killed:
            sys.stderr.write(
                f"utrace: note: {summary.killed} process(es) of the launched command were still running "
                "after SIGTERM and a grace period, and were killed (--keep-running leaves them running)\n"
            )
    finally:
        if top_view is not None:
            top_view.close()  # an error must not leave the terminal mid-frame with its cursor hidden
        if out is not sys.stdout:
            try:
                out.close()
            except OSError:  # only when it already failed (the error being raised says how)
                pass


def _stream_reporter(out: TextIO, fmt: str, launched: bool) -> Reporter:
    """Where streamed events go: perfetto, json lines or text."""
    from utrace.output.stream import JsonReporter, TextReporter

    if fmt == "perfetto":
        from utrace.output.perfetto import PerfettoReporter

        if out is sys.stdout and launched:
            sys.stderr.write("utrace: note: the traced program shares stdout with the trace; use -o FILE\n")
        return PerfettoReporter(out)
    return JsonReporter(out) if fmt == "json" else TextReporter(out)


def _warn(line: str) -> None:
    from utrace.output.escape import safe

    sys.stderr.write(f"utrace: warning: {safe(line)}\n")
    sys.stderr.flush()


def _top_interval(opts: dict[str, Any]) -> float | None:
    """--top's refresh interval in seconds, or None without --top.

    Raises:
        UsageError: --interval without --top, a bad interval, or --top with an option it replaces.
    """
    from utrace.errors import UsageError

    if not opts["top"]:
        if opts["interval"] is not None:
            raise UsageError("--interval applies to --top")
        return None
    for flag, given in (
        ("--count", opts["count"]),
        ("--hist", opts["hist"]),
        ("--json", opts["as_json"]),
        ("--format", opts["fmt"] not in (None, "text")),
        ("--otlp", opts["otlp"]),
    ):
        if given:
            raise UsageError(f"--top and {flag} exclude each other (--top shows live counts as a table)")
    interval = 1.0 if opts["interval"] is None else float(opts["interval"])
    if not 0.1 <= interval <= 3600:
        raise UsageError("--interval must be between 0.1 and 3600 seconds")
    return interval


def _output_format(opts: dict[str, Any], aggregate: Any) -> str:
    """--format, with --json as its alias; perfetto and --otlp need streamed events.

    Raises:
        UsageError: contradicting options.
    """
    from utrace.errors import UsageError
    from utrace.probes.codegen import Aggregate

    fmt: str = opts["fmt"] or ("json" if opts["as_json"] else "text")
    if opts["as_json"] and fmt != "json":
        raise UsageError(f"--json and --format {fmt} exclude each other")
    if aggregate is not Aggregate.NONE and (fmt == "perfetto" or opts["otlp"]):
        raise UsageError("--format perfetto and --otlp export events; --count and --hist do not stream them")
    return fmt


def _binary_and_probes(args: tuple[str, ...], opts: dict[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    """BINARY comes first; with --pid or a command it may be left out (an existing path is still BINARY)."""
    first_is_file = os.sep in args[0] and os.path.exists(args[0])
    if (opts["pid"] is None and not _LAUNCH) or first_is_file:
        return args[0], args[1:]
    return None, args


# ----------------------------------------------------------------------------- runtime commands


def _help(spec: CommandSpec) -> str:
    """A runtime's `--help` text from its CommandSpec: summary, notes and examples kept as written."""
    parts = [spec.summary]
    if spec.notes:
        parts.append("\b\n" + "\n".join(spec.notes))
    if spec.examples:
        parts.append("\b\n" + "\n".join("  " + e for e in spec.examples))
    return "\n\n".join(parts)


def _runtime_option(option: OptionSpec) -> click.Option:
    return click.Option(
        [*option.flags, option.dest],
        is_flag=option.flag,
        help=option.help,
        shell_complete=comp.option_completer(option.complete),
    )


def runtime_command(runtime: str, spec: CommandSpec) -> click.Command:
    """`utrace RUNTIME`: its operands and options as the runtime declares them, then the trace options."""
    params: list[click.Parameter] = [
        click.Argument(
            [spec.operands.value],
            nargs=-1,
            required=True,
            shell_complete=comp.probe_completer(runtime, spec),
        ),
        *(_runtime_option(o) for o in spec.options),
        *_trace_params(),
    ]

    def callback(**values: Any) -> None:
        from utrace.errors import UsageError
        from utrace.runtimes.base import Operands

        words: tuple[str, ...] = values.pop(spec.operands.value)
        own = {o.dest: values.pop(o.dest) for o in spec.options}
        for dest, message in spec.refused:
            if values[dest]:
                raise UsageError(message)
        binary: str | None = own.pop("binary", None)
        probes = words
        if spec.operands is Operands.BINARY_THEN_PROBES:
            binary, probes = _binary_and_probes(words, values)
        _run_trace(runtime, binary, probes, values, tuple(own.items()))

    return _TraceCommand(runtime, callback=callback, params=params, help=_help(spec))


class _TraceCommand(click.Command):
    """A trace command. `--hist` is a flag (the latency histogram) and `--hist=ARG` a histogram of ARG:
    only the `=` form takes a value, so `--hist main.Fib` still means the flag and a probe (click's own
    optional values would take the probe as the value). `--hist=ARG` is handed to click as `--hist-of ARG`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        words: list[str] = []
        for a in args:
            if a.startswith("--hist="):
                words += [HIST_OF, a.removeprefix("--hist=")]
            else:
                words.append(a)
        return super().parse_args(ctx, words)


@cli.command("completion")
@click.argument("shell", type=click.Choice(comp.SHELLS))
def completion_cmd(shell: str) -> None:
    """Print the completion script for SHELL: commands, options, probe names of the BINARY on the line.

    \b
      eval "$(utrace completion bash)"        # in ~/.bashrc
      eval "$(utrace completion zsh)"         # in ~/.zshrc
      utrace completion fish > ~/.config/fish/completions/utrace.fish
    """
    sys.stdout.write(comp.script(cli, shell))


@cli.command("doctor")
@click.option("--no-compile", is_flag=True, help="Skip the compile-and-load test.")
def doctor_cmd(no_compile: bool) -> None:
    """Check that this machine can trace, and say how to fix what is missing. Exit 0 only if it can."""
    from utrace.app.checks import run_checks
    from utrace.output.doctor import write_checks

    checks = run_checks(compile_test=not no_compile)
    write_checks(checks, sys.stdout)
    if not all(c.ok for c in checks):
        sys.exit(4)


def _fail(message: str, code: int) -> NoReturn:
    from utrace.output.escape import safe

    try:  # messages quote names from binaries and processes: escaped, and one line however they end
        sys.stderr.write(f"utrace: error: {safe(message)}\n")
        sys.stderr.flush()
    except OSError:
        pass
    _fast_exit(code)


class _NeverRaised(click.ClickException):
    """Stands in for NoArgsIsHelpError on a click that does not have it."""


# click >= 8.2 raises this for a group or command given no arguments; its message is the help text
_NO_ARGS_IS_HELP: type[click.ClickException] = getattr(click.exceptions, "NoArgsIsHelpError", _NeverRaised)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; one line on stderr and a distinct exit code for every failure."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" in args:  # everything after `--` is the command to launch, untouched by option parsing
        i = args.index("--")
        _LAUNCH[:] = args[i + 1 :]
        args = args[:i]
    try:
        rc = cli.main(args=args, prog_name="utrace", standalone_mode=False)
        if isinstance(rc, int) and rc:
            _fast_exit(rc)
    except UtraceError as e:
        _fail(str(e), e.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except _NO_ARGS_IS_HELP as e:
        # `utrace` or `utrace native` alone: click's own help text (ours, not a traced program's),
        # printed as it is; the error line below would show its line breaks as escapes
        sys.stderr.write(e.format_message() + "\n")
        _fast_exit(2)
    except click.ClickException as e:
        _fail(e.format_message(), e.exit_code if e.exit_code else 2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # the reader went away (`utrace list node | head`): not an error worth a line
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        finally:
            sys.exit(0)
    except SystemExit:
        raise
    except Exception as e:
        if os.environ.get("UTRACE_DEBUG"):
            raise
        _fail(
            f"internal error: {type(e).__name__}: {e} (set UTRACE_DEBUG=1 for a traceback)",
            INTERNAL_ERROR,
        )
    _fast_exit(0)


def _fast_exit(code: int) -> NoReturn:
    """Flush and leave without tearing down the heap (100k+ objects after a big listing)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # gone, closed, or None (started with it closed)
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
