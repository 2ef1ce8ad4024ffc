"""Rendering of `utrace list`: a rich table on a terminal, fast plain lines or JSON lines otherwise.

A big binary has ~100k functions; rich lays out a table at a few thousand rows per second, so past
`TABLE_LIMIT` rows (or when stdout is not a terminal) the plain writer is used: one line per entry
built with plain string formatting.

Names come from the file: plain lines and tables show them through `utrace.output.escape` (control
bytes and escape sequences as visible escapes, rich markup never interpreted); JSON keeps them exact.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate, chain, repeat
from operator import add, itemgetter
from typing import BinaryIO, TextIO

from utrace.app.list_probes import JsFunction, JsListing, Listing, ModuleFunctions
from utrace.elf.symbols import SymbolTable
from utrace.model import UsdtProbe
from utrace.output.escape import markup, needs_escape, safe, safe_bytes

TABLE_LIMIT = 3000


def write_json(listing: Listing, out: TextIO) -> None:
    """One JSON object per line: {"kind": "function", ...} and {"kind": "usdt", ...}."""
    import json

    for mf in listing.functions:
        if mf.rendered is not None and mf.rendered_as == JSON[0]:  # (maybe from the cache)
            out.flush()
            out.buffer.write(mf.rendered)
        else:
            out.write(json_lines(_table(mf), mf.indices, mf.display).decode("ascii"))
    for display, p in listing.probes:
        obj = {
            "kind": "usdt",
            "provider": p.provider,
            "name": p.name,
            "address": p.address,
            "semaphore": p.semaphore,
            "arguments": p.argument_texts,
            "signature": _typed(p),
            "module": display,
        }
        out.write(json.dumps(obj) + "\n")  # ASCII: exact, and nothing a terminal acts on


def json_lines(table: SymbolTable, indices: Sequence[int], display: str) -> bytes:
    """`write_json`'s function lines (ASCII) for `indices` (ascending, distinct) of `table`, a module
    shown as `display`: one % format for all, from the names as bytes; a name with a byte JSON escapes
    (a quote, a backslash, a control or non-ASCII byte: the rare case, found in C first) goes through
    json's own escaping of the decoded name."""
    import json

    esc = json.encoder.encode_basestring_ascii
    names, raws, addrs, sizes = table.names_as_bytes(), table.raws_as_bytes(), table.addresses, table.sizes
    if len(indices) != len(names):  # else distinct indices of the table: all of it, in order
        pick = itemgetter(*indices) if len(indices) > 1 else lambda col: [col[i] for i in indices]
        names, raws, addrs, sizes = list(pick(names)), list(pick(raws)), list(pick(addrs)), list(pick(sizes))

    def escaped(column: list[bytes]) -> list[bytes]:
        # each byte JSON escapes becomes a 0, every other a 1 (one translate, then memchr for the 0s)
        marked = b" ".join(column).translate(_JSON_SAFE)
        at = marked.find(0)
        if at < 0:
            return column
        column = list(column)
        ends = list(accumulate(map(add, map(len, column), repeat(1))))  # where each name ends (+ 1)
        while at >= 0:
            k = bisect_right(ends, at)  # the name holding the byte
            column[k] = esc(column[k].decode("utf-8", "surrogateescape"))[1:-1].encode("ascii")
            at = marked.find(0, ends[k])
        return column

    names, raws = escaped(names), escaped(raws)
    module = esc(display).encode("ascii").replace(b"%", b"%%")
    line = b'{"kind": "function", "name": "%s", "symbol": "%s", "address": %d, "size": %d, "module": ' + module
    return ((line + b"}\n") * len(indices)) % tuple(chain.from_iterable(zip(names, raws, addrs, sizes, strict=True)))


# 0 for the bytes json's ASCII encoder escapes (quote, backslash, controls, DEL and non-ASCII), else 1
_JSON_SAFE = bytes(0 if b < 0x20 or b >= 0x7F or b in b'"\\' else 1 for b in range(256))


JSON = ("json-lines", json_lines)  # the renderer `list_target` caches complete JSON listings with


def plain_lines(table: SymbolTable, indices: Sequence[int]) -> bytes:
    """`ADDRESS SIZE NAME` lines for the functions `indices` (ascending, distinct) of `table`, with one
    % format for all.

    Rendered from the names as bytes: a table just read from the file never decodes them. A name with
    a control byte or a non-ASCII byte is shown as `safe` shows it (the rare case: one check in C first).
    """
    names, addrs, sizes = table.names_as_bytes(), table.addresses, table.sizes
    if len(indices) == len(names):
        if needs_escape(names):
            names = [safe_bytes(n) for n in names]
    elif needs_escape(picked := [names[i] for i in indices]):
        names = list(names)
        for i, n in zip(indices, picked, strict=True):
            names[i] = safe_bytes(n)
    if len(indices) == len(names):  # distinct indices of the table: all of it, in order
        fields = chain.from_iterable(zip(addrs, sizes, names, strict=True))
    elif len(indices) > 1:
        pick = itemgetter(*indices)  # gathers in C
        fields = chain.from_iterable(zip(pick(addrs), pick(sizes), pick(names), strict=True))
    else:
        fields = chain.from_iterable((addrs[i], sizes[i], names[i]) for i in indices)
    return (b"%#014x %7d %s\n" * len(indices)) % tuple(fields)


def _plain(table: SymbolTable, indices: Sequence[int], display: str) -> bytes:
    return plain_lines(table, indices)


PLAIN = ("plain-escaped", _plain)  # the renderer `list_target` caches complete listings with


def write_plain(listing: Listing, out: BinaryIO) -> None:
    """Plain text: `ADDRESS SIZE NAME` per function, a `# module` line before each module."""
    for mf in listing.functions:
        if not mf.indices:
            continue
        out.write(_utf8(f"# {safe(mf.display)}: {len(mf.indices)} functions\n"))
        rendered = mf.rendered if mf.rendered_as == PLAIN[0] else None
        out.write(rendered if rendered is not None else plain_lines(_table(mf), mf.indices))
    if listing.probes:
        out.write(_utf8(f"# USDT probes: {len(listing.probes)}\n"))
        for display, p in listing.probes:
            sem = f" semaphore={p.semaphore:#x}" if p.semaphore else ""
            name = p.full_name + _params(p)
            line = f"{p.address:#014x} {name} [{' '.join(p.argument_texts)}]{sem} {display}"
            out.write(_utf8(safe(line) + "\n"))


def _typed(p: UsdtProbe) -> str | None:
    """The probe's typed signature (`query__start(const char *query)`) from the catalogue of
    well-known providers, when it fits the note's arguments; None otherwise."""
    from utrace.runtimes.usdt import catalogue_signature

    return catalogue_signature(p)


def _params(p: UsdtProbe) -> str:
    sig = _typed(p)
    return sig[len(p.name) :] if sig else ""


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _table(mf: ModuleFunctions) -> SymbolTable:
    if mf.table is None:
        raise AssertionError("a listing rendered from the cache has no table: list it without a renderer")
    return mf.table


def write_table(listing: Listing, out: TextIO) -> None:
    """Rich tables for a terminal: functions, then USDT probes."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    def cell(s: str) -> Text:  # a Text is never parsed as markup
        return Text(safe(s))

    console = Console(file=out)
    many_modules = len(listing.functions) > 1
    if listing.function_count:
        table = Table(title="Functions", title_justify="left", show_lines=False)
        table.add_column("Function", overflow="fold")
        table.add_column("Symbol", overflow="fold", style="dim")
        table.add_column("Address", justify="right", style="cyan")
        table.add_column("Size", justify="right")
        table.add_column("Bind")
        if many_modules:
            table.add_column("Module", overflow="fold", style="dim")
        for mf in listing.functions:
            t = _table(mf)
            for i in mf.indices:
                sym = t.symbol(i)
                row: list[Text | str] = [
                    cell(sym.name),
                    cell("" if sym.raw == sym.name else sym.raw),
                    f"{sym.address:#x}",
                    str(sym.size),
                    cell(sym.binding.value + (f" {sym.clone}" if sym.clone else "")),
                ]
                if many_modules:
                    row.append(cell(mf.display))
                table.add_row(*row)
        console.print(table)
    if listing.probes:
        table = Table(title="USDT probes", title_justify="left")
        table.add_column("Probe")
        table.add_column("Address", justify="right", style="cyan")
        table.add_column("Semaphore", justify="right")
        table.add_column("Arguments", overflow="fold")
        table.add_column("Module", overflow="fold", style="dim")
        for display, p in listing.probes:
            table.add_row(
                cell(p.full_name + _params(p)),
                f"{p.address:#x}",
                f"{p.semaphore:#x}" if p.semaphore else "-",
                cell(" ".join(p.argument_texts)),
                cell(display),
            )
        console.print(table)
    console.print(f"[dim]{listing.function_count} functions, {len(listing.probes)} USDT probes[/dim]")


def js_window(listing: JsListing) -> str:
    """The one line that says what a JavaScript listing is: the functions called during the window."""
    what = "" if listing.glob == "*" else f" matching {listing.glob!r}"
    n = len(listing.functions)
    return (
        f"{n} JavaScript function{'' if n == 1 else 's'}{what} called in pid {listing.pid} during "
        f"{listing.seconds:.1f} s: only functions called in that window are listed, not every function that "
        "exists (calls from code V8 has optimised, or inlined, are not seen: counts are lower bounds)"
    )


def js_notes(listing: JsListing) -> list[str]:
    """What else a JavaScript listing's reader must know: a window cut short, calls lost or unreadable."""
    out = []
    after = f"after {listing.seconds:.1f} s of {listing.window_s:g} s"
    if listing.stopped_by in ("target exited", "target exec'd"):  # the calls seen until then are listed
        out.append(f"pid {listing.pid} {listing.stopped_by.split()[1]} {after}")
    elif listing.stopped_by not in ("duration", ""):
        out.append(f"stopped by {listing.stopped_by} {after}")
    if listing.lost:
        out.append(f"{listing.lost} call(s) were lost (utrace did not read them in time): counts are lower bounds")
    if listing.unlisted:
        out.append(f"{listing.unlisted} call(s) of functions past the first {len(listing.functions)} are not listed")
    out += listing.warnings
    return out


def _js_place(f: JsFunction) -> str:
    if f.script is None:
        return ""
    return f"{f.script}:{f.line}" if f.line is not None else str(f.script)


def write_js_plain(listing: JsListing, out: BinaryIO) -> None:
    """`# what this is` then `CALLS FUNCTION [SCRIPT:LINE]` per function, most called first."""
    out.write(_utf8(f"# {safe(js_window(listing))}\n"))
    for f in listing.functions:
        place = _js_place(f)
        name = safe(f.name) if f.name else "(anonymous)"  # as V8's own stack traces say it
        out.write(_utf8(f"{f.calls:9d} {name}" + (f"  {safe(place)}" if place else "") + "\n"))


def write_js_json(listing: JsListing, out: TextIO) -> None:
    """One {"kind": "js-function", ...} line per function (`script` and `line` null when the events did not
    carry them), then one {"kind": "js-window", ...} line saying what the listing is."""
    import json

    for f in listing.functions:
        obj = {"kind": "js-function", "name": f.name, "calls": f.calls}
        obj |= {"script": _json(f.script), "line": _json(f.line)}
        out.write(json.dumps(obj) + "\n")  # ASCII: exact, and nothing a terminal acts on
    window = {
        "kind": "js-window",
        "pid": listing.pid,
        "glob": listing.glob,
        "seconds": round(listing.seconds, 3),
        "stopped_by": listing.stopped_by,
        "functions": len(listing.functions),
        "calls": listing.calls,
        "lost": listing.lost,
        "note": js_window(listing),
    }
    out.write(json.dumps(window) + "\n")


def _json(v: object) -> object:
    return v if v is None or isinstance(v, (str, int, float)) else str(v)


class ColdIndexProgress:
    """Shows 'indexing FILE' on a terminal while a big file is read for the first time."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._status: object | None = None

    def __call__(self, path: str) -> None:
        if not self._stream.isatty():
            return
        from rich.console import Console

        self.stop()
        status = Console(file=self._stream).status(f"indexing {markup(path)} (first time; cached afterwards)")
        status.start()
        self._status = status

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()  # type: ignore[attr-defined]
            self._status = None
