"""Shell completion through click's protocol: `utrace completion bash|zsh|fish` prints the script,
the shell calls `utrace` back with `_UTRACE_COMPLETE=<shell>_complete` and the words typed so far.

Commands, runtimes and options come from click itself; the callbacks here add the probe names of
the BINARY already on the line (or of `--pid`), the JVM catalogue, and process ids.

Bash splits words at `COMP_WORDBREAKS` (`:` and `=` among them), which cuts C++ names (`node::fs::`)
and USDT names (`provider:name`) into pieces. utrace's bash script therefore also passes the line up
to the cursor and the current word: names are matched against the whole token, and each reply is
trimmed to the part bash replaces. Replies are backslash-escaped for bash (Go's `main.(*T).M`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from click.shell_completion import (
    BashComplete,
    CompletionItem,
    FishComplete,
    ZshComplete,
    add_completion_class,
    split_arg_string,
)

if TYPE_CHECKING:
    from utrace.runtimes.base import CommandSpec, Completion

COMPLETE_VAR = "_UTRACE_COMPLETE"
_AFTER_DASHES = {"value": False}  # the word being completed is after `--` (the command to launch)

_BASH_SOURCE = """\
%(complete_func)s() {
    local IFS=$'\\n'
    local response

    response=$(env COMP_WORDS="${COMP_WORDS[*]}" COMP_CWORD=$COMP_CWORD \\
_UTRACE_COMP_LINE="${COMP_LINE:0:COMP_POINT}" _UTRACE_COMP_CUR="${COMP_WORDS[COMP_CWORD]}" \\
%(complete_var)s=bash_complete $1)

    for completion in $response; do
        IFS=',' read -r type value <<< "$completion"

        if [[ $type == 'dir' ]]; then
            COMPREPLY=()
            compopt -o dirnames
        elif [[ $type == 'file' ]]; then
            COMPREPLY=()
            compopt -o default
        elif [[ $type == 'plain' ]]; then
            COMPREPLY+=("$value")
        fi
    done

    return 0
}

%(complete_func)s_setup() {
    complete -o nosort -F %(complete_func)s %(prog_name)s
}

%(complete_func)s_setup;
"""

_BASH_SAFE = re.compile(r"[^\w@%+=:,./-]", re.ASCII)


class UtraceBash(BashComplete):
    """Bash, with whole tokens across COMP_WORDBREAKS and escaped replies (see the module docstring)."""

    source_template = _BASH_SOURCE

    def get_completion_args(self) -> tuple[list[str], str]:
        self._trim = 0
        self._quote = ""  # the opening quote of the word being completed, kept in the reply
        line = os.environ.get("_UTRACE_COMP_LINE")
        if line is None:  # called with the plain protocol (COMP_WORDS, COMP_CWORD) only
            args, incomplete = super().get_completion_args()
        else:
            words = split_arg_string(line)
            ends_word = not line or line[-1].isspace()
            incomplete = "" if ends_word or not words else words.pop()
            args = words[1:]
            cur = os.environ.get("_UTRACE_COMP_CUR", "")
            token = "" if ends_word or not line.split() else line.split()[-1]
            self._quote = token[:1] if token[:1] in ("'", '"') else ""
            if not ends_word and not self._quote and incomplete.endswith(cur):
                self._trim = len(incomplete) - len(cur)  # what bash split off before its current word
        _AFTER_DASHES["value"] = "--" in args
        return args, incomplete

    def format_completion(self, item: CompletionItem) -> str:
        value = str(item.value)
        if item.type == "plain":
            value = value[self._trim :]
            # bash replaces the whole word: inside the user's quote keep it, else escape for the shell
            value = self._quote + value if self._quote else _BASH_SAFE.sub(lambda m: "\\" + m.group(0), value)
        return f"{item.type},{value}"


class UtraceZsh(ZshComplete):
    def get_completion_args(self) -> tuple[list[str], str]:
        args, incomplete = super().get_completion_args()
        _AFTER_DASHES["value"] = "--" in args
        return args, incomplete


class UtraceFish(FishComplete):
    def get_completion_args(self) -> tuple[list[str], str]:
        args, incomplete = super().get_completion_args()
        _AFTER_DASHES["value"] = "--" in args
        return args, incomplete


for _cls in (UtraceBash, UtraceZsh, UtraceFish):
    add_completion_class(_cls)

SHELLS = ("bash", "zsh", "fish")


def script(cli: click.Command, shell: str) -> str:
    """The completion script for `shell` (what `utrace completion SHELL` prints)."""
    classes: dict[str, type[Any]] = {"bash": UtraceBash, "zsh": UtraceZsh, "fish": UtraceFish}
    return str(classes[shell](cli, {}, "utrace", COMPLETE_VAR).source())


# ----------------------------------------------------------------------------- callbacks


def _files(incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(incomplete, type="file")]


def _names(runtime: str, ctx: click.Context, incomplete: str, binary: str | None, usdt: bool) -> list[CompletionItem]:
    from utrace.app.candidates import narrow, target_names
    from utrace.errors import UtraceError
    from utrace.runtimes.base import TraceRequest
    from utrace.runtimes.registry import get_runtime

    request = TraceRequest(runtime=runtime, binary=binary, pid=ctx.params.get("pid"))
    try:
        target = get_runtime(runtime).target(request)
        names = target_names(target, incomplete, usdt=usdt)
    except (UtraceError, OSError):
        return []
    return [CompletionItem(n) for n in narrow(names, incomplete)]


Callback = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


def probe_completer(runtime: str, spec: CommandSpec) -> Callback:
    """Completion of a runtime command's operands, as its CommandSpec says: names from its catalogue,
    or from the target on the line (BINARY first, else `--binary`, or --pid); after `--`, files."""
    from utrace.runtimes.base import Completion, Operands

    usdt = spec.probes is Completion.NAMES
    catalogue = spec.catalogue if spec.probes is Completion.CATALOGUE else None
    binary_first = spec.operands is Operands.BINARY_THEN_PROBES

    def complete(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        if _AFTER_DASHES["value"] or spec.probes is Completion.FILE:
            return _files(incomplete)
        if catalogue is not None:
            from utrace.app.candidates import catalogue_names

            return [CompletionItem(n) for n in catalogue_names(catalogue, incomplete)]
        if not binary_first:
            return _names(runtime, ctx, incomplete, ctx.params.get("binary"), usdt)
        args: tuple[str, ...] = ctx.params.get(spec.operands.value) or ()
        pid = ctx.params.get("pid")
        if pid is None and not args:
            return _files(incomplete)
        binary = args[0] if args and (pid is None or (os.sep in args[0] and os.path.exists(args[0]))) else None
        return _names(runtime, ctx, incomplete, binary, usdt)

    return complete


def option_completer(kind: Completion | None) -> Callback | None:
    """Completion of a runtime option's value (files, or nothing)."""
    return complete_file if kind is not None and kind.value == "file" else None


def complete_file(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _files(incomplete)


def complete_list_target(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """`utrace list TARGET`: a file, or with --pid (TARGET then left out) the start of a pattern."""
    if ctx.params.get("pid") is not None:
        return complete_list_pattern(ctx, param, incomplete)
    return _files(incomplete)


def complete_list_pattern(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """`utrace list TARGET PATTERN`: names of TARGET (or of --pid) as a start of the glob."""
    from utrace.app.candidates import narrow, target_names
    from utrace.errors import UtraceError
    from utrace.process.target import file_target, process_target

    try:
        pid, target = ctx.params.get("pid"), ctx.params.get("target")
        tgt = process_target(pid) if pid is not None else file_target(target) if target else None
        if tgt is None:
            return []
        return [CompletionItem(n) for n in narrow(target_names(tgt, incomplete), incomplete)]
    except (UtraceError, OSError):
        return []


def complete_pid(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Process ids, with each process's name as help (zsh and fish show it), escaped: a comm is the process's."""
    from utrace.output.escape import safe

    out: list[CompletionItem] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry.startswith(incomplete):
            try:
                with open(f"/proc/{entry}/comm", encoding="utf-8", errors="replace") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            out.append(CompletionItem(entry, help=safe(comm)))
    return sorted(out, key=lambda c: int(c.value))[:500]
