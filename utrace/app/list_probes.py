"""`utrace list`: which functions and USDT probes a target offers, filtered by a glob."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from utrace.elf.index import function_table
from utrace.elf.match import match_functions, match_probes, name_matcher
from utrace.elf.symbols import SymbolTable
from utrace.elf.usdt_notes import usdt_probes_for
from utrace.model import Event, Target, UsdtProbe

if TYPE_CHECKING:
    from utrace.store.cache import CacheJob


@dataclass(slots=True)
class ModuleFunctions:
    """The matching functions of one module.

    `rendered`, when a renderer was given to `list_target`, holds their lines as it renders them; a
    listing of every function may then come from the cache without the table (`table` None, `indices` a
    range, `rendered` a view of the file read).
    """

    display: str
    table: SymbolTable | None
    indices: Sequence[int]
    rendered: bytes | memoryview | None = None
    rendered_as: str = ""  # the renderer's name


@dataclass(slots=True)
class Listing:
    functions: list[ModuleFunctions] = field(default_factory=list)
    probes: list[tuple[str, UsdtProbe]] = field(default_factory=list)

    @property
    def function_count(self) -> int:
        return sum(len(m.indices) for m in self.functions)


Renderer = Callable[[SymbolTable, Sequence[int], str], bytes]  # (table, indices, module display)
_RENDER_FORMAT = 5  # 2: Go programs named by their pclntab; 3: keyed by the file's identity; 4: Go 1.18-1.19
# instantiations by their ELF names; 5: keyed by the module's display too


def list_target(
    target: Target,
    pattern: str | None,
    *,
    functions: bool = True,
    usdt: bool = True,
    on_cold: Callable[[str], None] | None = None,
    render: tuple[str, Renderer] | None = None,
    cached_above: int = 0,
) -> Listing:
    """Collect the matching functions and USDT probes of every module of `target`.

    Args:
        render: (name, function) to render each module's functions as text up front. The text of a
            module's complete listing is cached by build-id under `name`, so the next complete listing
            reads one file and neither loads nor formats the symbol table. The process is assumed to
            exit soon after (big cache files are written from a detached child).
        cached_above: a module's cached text serves only listings of more functions than this (a
            terminal shows fewer as a table, which needs the symbol table).

    Raises:
        ElfError: the main executable is not a readable ELF file. Other modules of a process that cannot
            be read are skipped (a library may be replaced on disk while mapped).
    """
    from utrace.errors import ElfError
    from utrace.store.cache import write_behind, write_jobs

    listing = Listing()
    writes: list[CacheJob] = []
    for n, module in enumerate(target.modules):
        try:
            if functions:
                mf = _module_functions(module.path, module.display, pattern, on_cold, render, writes, cached_above)
                listing.functions.append(mf)
            if usdt:
                for p in match_probes(usdt_probes_for(module.path), pattern):
                    listing.probes.append((module.display, p))
        except ElfError:
            if n == 0:
                raise
    if render is not None and sum(len(m.indices) for m in listing.functions) >= _WRITE_BEHIND_COUNT:
        write_behind(writes)  # on the other core, while this process prints and exits
    else:
        write_jobs(writes)
    return listing


_WRITE_BEHIND_COUNT = 20000  # functions; below that, writing the cache files costs a few ms


def _module_functions(
    path: str,
    display: str,
    pattern: str | None,
    on_cold: Callable[[str], None] | None,
    render: tuple[str, Renderer] | None,
    writes: list[CacheJob],
    cached_above: int = 0,
) -> ModuleFunctions:
    rendered_file = None
    if render is not None and name_matcher(pattern) is None:
        from utrace.elf.index import cache_key
        from utrace.store.cache import read_sealed, trusted_cache_dir

        cache = trusted_cache_dir()
        # the text may hold the module's display name (JSON lines): the file names it, its header holds it
        name = f"{render[0]}-v{_RENDER_FORMAT}-{cache_key(path)}-{zlib.crc32(_display_bytes(display)):08x}.txt"
        rendered_file = cache / name if cache else None
        body = read_sealed(rendered_file) if rendered_file is not None else None
        if body is not None:
            head = bytes(body[: 1 << 16])
            count, _, shown = head[: max(head.find(b"\n"), 0)].partition(b" ")
            if count.isdigit() and shown == _display_bytes(display) and int(count) > cached_above:
                text = body[len(count) + len(shown) + 2 :]
                return ModuleFunctions(display, None, range(int(count)), text, render[0])
    # A cold read may hand over the first symbol table's functions before the rest is read: they are
    # rendered then, while another process still compares the second table with the first.
    early: list[tuple[int, list[int], bytes]] = []  # (size of the first part, its matches, their lines)

    def render_first(part: SymbolTable) -> None:
        if render is not None:
            matching = match_functions(part, pattern)
            early.append((len(part), matching, render[1](part, matching, display)))

    # A Go program is named by its pclntab (stripped or not, C symbols or not): no early part then (a
    # Go table replaces an ELF one only when that was empty, so an early part is always a prefix).
    table = function_table(path, on_cold=on_cold, defer_write=writes, first_part=render_first if render else None)
    # the part is a prefix of the table's entries: its matches are the table's first ones
    part_size, part_matches, first_lines = early[0] if early else (0, [], b"")
    rest = match_functions(table, pattern, start=part_size)
    mf = ModuleFunctions(display, table, part_matches + rest if part_matches else rest)
    if render is not None:
        lines = first_lines + render[1](table, rest, display) if rest else first_lines
        mf.rendered, mf.rendered_as = lines, render[0]
        if rendered_file is not None:
            from utrace.store.cache import seal

            header = b"%d %s\n" % (len(mf.indices), _display_bytes(display))
            writes.append((rendered_file, lambda: seal(header + lines)))
    return mf


def _display_bytes(display: str) -> bytes:
    """A module's display name on one line of ASCII, exactly (backslash escapes)."""
    return display.encode("unicode_escape")


# --- `utrace list --pid PID --js GLOB`: the JavaScript functions a running node calls ---------------------

DEFAULT_FOR_S = 2.0  # --for: seconds the probes stay armed
MAX_FOR_S = 60.0
MAX_ROWS = 65536  # distinct (function, script, line) rows kept; calls of others are counted in `unlisted`


@dataclass(slots=True)
class JsFunction:
    """A function seen called: its name, its calls seen in the window, and its script and line when the
    events carry them (context fields `script` and `line`; None when they do not)."""

    name: str
    calls: int
    script: object = None
    line: object = None


@dataclass(slots=True)
class JsListing:
    """The JavaScript functions matching `glob` called in `pid` while the probes were armed (`seconds`)."""

    pid: int
    glob: str
    window_s: float  # asked for
    seconds: float = 0.0  # the probes were armed this long
    stopped_by: str = ""  # "duration", or why sooner ("SIGINT", "target exited"...)
    functions: list[JsFunction] = field(default_factory=list)
    lost: int = 0  # calls seen by the probes that never reached utrace (a full ring)
    unlisted: int = 0  # calls of functions past MAX_ROWS distinct rows
    notes: list[str] = field(default_factory=list)  # what the plan said (optimised code is not seen)
    warnings: list[str] = field(default_factory=list)  # calls whose names were unreadable
    seen: list[str] = field(default_factory=list)  # names of functions called that did not match
    seen_full: bool = False  # the kernel's table of those names filled up

    @property
    def calls(self) -> int:
        return sum(f.calls for f in self.functions)


def check_window(seconds: float) -> float:
    """--for, checked.

    Raises:
        UsageError: not a number of seconds more than 0 and at most MAX_FOR_S.
    """
    import math

    from utrace.errors import UsageError

    if not (math.isfinite(seconds) and 0 < seconds <= MAX_FOR_S):
        raise UsageError(f"--for must be a number of seconds more than 0 and at most {MAX_FOR_S:g}, not {seconds:g}")
    return seconds


class _CallCounter:
    """The session's reporter: counts the calls per (function, script, line), at most MAX_ROWS rows."""

    def __init__(self, on_armed: Callable[[int], None] | None) -> None:
        self.rows: dict[tuple[str, object, object], int] = {}
        self.unlisted = 0
        self._on_armed = on_armed

    def started(self, target: Target, plan: object, attached: int, launched: int | None) -> None:
        if self._on_armed is not None:
            self._on_armed(attached)

    def event(self, ev: Event) -> None:
        ctx = ev.context
        key = (str(ctx.get("function", "")), _hashable(ctx.get("script")), _hashable(ctx.get("line")))
        n = self.rows.get(key)
        if n is not None:
            self.rows[key] = n + 1
        elif len(self.rows) < MAX_ROWS:
            self.rows[key] = 1
        else:
            self.unlisted += 1

    def flush(self) -> None:
        pass

    def lost(self, total: int) -> None:
        pass

    def finished(self, summary: object) -> None:
        pass

    def snapshot(self, counts: dict[tuple[str, int], int], elapsed_s: float) -> None:
        pass


def _hashable(v: object) -> object:
    return v if v is None or isinstance(v, (str, int, float, bytes)) else str(v)


def list_js(pid: int, glob: str, seconds: float, on_armed: Callable[[int], None] | None = None) -> JsListing:
    """Arm the `js:` entry probes of the functions matching `glob` in node process `pid` for `seconds`
    (Ctrl-C, SIGTERM or the process's exit end it sooner), then remove them and count the calls seen per
    function. Only functions called in that window are listed, and only calls V8's interpreter or baseline
    code makes are seen (not those from code Maglev or TurboFan optimised, nor inlined ones).

    Args:
        on_armed: told the number of probes once they are armed.

    Raises:
        UsageError: a bad glob or window. EnvironmentProblem: this process cannot trace (not root).
        TargetError: no such process, not a node, or no V8 metadata or builtins in its binary.
    """
    from utrace.app.session import SessionOptions, run
    from utrace.bpf.backend import privileges_problem
    from utrace.errors import EnvironmentProblem
    from utrace.runtimes.base import Plan, TraceRequest
    from utrace.runtimes.registry import get_runtime
    from utrace.runtimes.v8js import list_glob, plan_list

    check_window(seconds)
    g = list_glob(glob)
    problem = privileges_problem()
    if problem is not None:
        raise EnvironmentProblem(f"listing JavaScript functions arms probes in the process: {problem}")
    request = TraceRequest(runtime="node", pid=pid, probes=(f"js:{glob}",))
    target = get_runtime("node").target(request)
    plan = Plan()
    seen = plan_list(request, target, g, plan)
    counter = _CallCounter(on_armed)
    summary = run(request, SessionOptions(duration=seconds), counter, planned=(target, plan))
    functions = [
        JsFunction(name, n, script, line)
        for (name, script, line), n in sorted(counter.rows.items(), key=lambda kv: (-kv[1], kv[0][0]))
    ]
    return JsListing(
        pid=pid,
        glob=glob,
        window_s=seconds,
        seconds=summary.duration_s,
        stopped_by=summary.stopped_by,
        functions=functions,
        lost=summary.lost,
        unlisted=counter.unlisted,
        notes=list(plan.notes),
        warnings=list(summary.warnings),
        seen=seen.names,
        seen_full=seen.full,
    )


def nothing_called(listing: JsListing) -> str:
    """One line for a window in which no function matching the glob was called: the closest names seen."""
    from utrace.elf.match import close_names

    what = "no JavaScript function" if listing.glob == "*" else f"no JavaScript function matching {listing.glob!r}"
    line = f"{what} was called in pid {listing.pid} during {listing.seconds:.1f} s"
    close = close_names(listing.glob.replace("*", ""), listing.seen, 5, cutoff=0.6) if listing.seen else []
    if close:
        of = f"{len(listing.seen)}{'+' if listing.seen_full else ''}"
        line += f"; closest names of the {of} functions seen called: {', '.join(close)}"
    elif listing.seen:
        line += f" ({len(listing.seen)} other functions were, none with a close name)"
    else:
        line += " (calls from code V8 has optimised are not seen: try a longer --for while the program is busy)"
    return line
