"""The `utrace` command. Thin: parse arguments, call the library, render, map errors to exit codes."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click

from utrace import __version__
from utrace.errors import UtraceError

INTERNAL_ERROR = 70


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="utrace")
def cli() -> None:
    """utrace: trace functions and USDT probes inside running Node.js, Go, Java and native programs."""


@cli.command("list")
@click.argument("target", required=False)
@click.argument("pattern", required=False)
@click.option("--pid", "-p", type=int, help="List every module mapped by this process.")
@click.option("--usdt", "only_usdt", is_flag=True, help="Only USDT probes.")
@click.option("--functions", "only_functions", is_flag=True, help="Only functions.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_cmd(
    target: str | None,
    pattern: str | None,
    pid: int | None,
    only_usdt: bool,
    only_functions: bool,
    as_json: bool,
) -> None:
    """List the functions and USDT probes of TARGET (a file or command name) matching PATTERN (a glob).

    With --pid, TARGET may be omitted (then the first argument is the pattern).
    """
    from utrace.errors import UsageError
    from utrace.listing import list_target
    from utrace.output.listing import ColdIndexProgress, TABLE_LIMIT, write_json, write_plain, write_table
    from utrace.target import file_target, process_target

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
    progress = ColdIndexProgress(sys.stderr)
    try:
        listing = list_target(
            tgt, pattern, functions=not only_usdt, usdt=not only_functions, on_cold=progress
        )
    finally:
        progress.stop()
    out = sys.stdout
    total = listing.function_count + len(listing.probes)
    if as_json:
        write_json(listing, out)
    elif out.isatty() and total <= TABLE_LIMIT:
        write_table(listing, out)
    else:
        write_plain(listing, out)
    if pattern is not None and total == 0:
        raise UsageError(f"nothing matches {pattern!r}")


@cli.command("doctor")
@click.option("--no-compile", is_flag=True, help="Skip the compile-and-load test.")
def doctor_cmd(no_compile: bool) -> None:
    """Check that this machine can trace, and say how to fix what is missing. Exit 0 only if it can."""
    from utrace.doctor import run_checks
    from utrace.output.doctor import write_checks

    checks = run_checks(compile_test=not no_compile)
    write_checks(checks, sys.stdout)
    if not all(c.ok for c in checks):
        sys.exit(4)


def _fail(message: str, code: int) -> NoReturn:
    try:
        sys.stderr.write(f"utrace: error: {message}\n")
        sys.stderr.flush()
    finally:
        os._exit(code) if code == INTERNAL_ERROR else sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; one line on stderr and a distinct exit code for every failure."""
    try:
        cli.main(args=argv, prog_name="utrace", standalone_mode=False)
    except UtraceError as e:
        _fail(str(e), e.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
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
        _fail(f"internal error: {type(e).__name__}: {e} (set UTRACE_DEBUG=1 for a traceback)", INTERNAL_ERROR)
    _fast_exit(0)


def _fast_exit(code: int) -> NoReturn:
    """Flush and leave without tearing down the heap (100k+ objects after a big listing)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code)


if __name__ == "__main__":
    main()
