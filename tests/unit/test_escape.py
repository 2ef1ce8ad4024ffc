"""Nothing the traced process controls reaches a terminal raw: the escaping function and every text
output that shows names, comms, frames, arguments and notes. JSON stays exact."""

from __future__ import annotations

import io
import json
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.elfgen import Probe, Sym, build_elf
from utrace.app.list_probes import list_target
from utrace.app.session import Summary
from utrace.model import Event, Frame, Module, Target
from utrace.output.escape import json_safe, needs_escape, safe, safe_bytes, utf8_text
from utrace.output.listing import JSON, PLAIN, write_json, write_plain, write_table
from utrace.output.otlp import process_resource, span_message
from utrace.output.perfetto import PerfettoReporter
from utrace.output.spans import Span, Track
from utrace.output.stream import JsonReporter, TextReporter, write_aggregates
from utrace.output.top import TopReporter, plain_snapshot, top_rows
from utrace.probes.decode import Rendered, StringValue
from utrace.process.target import file_target
from utrace.runtimes.base import Plan

# a window title (OSC 0 ... BEL), a cursor move (CSI as one C1 character), rich markup that crashed
# the summary, a byte that is not UTF-8 (surrogateescape), DEL, a right-to-left override
TITLE = "\x1b]0;pwned\x07"
HOSTILE = f"evil{TITLE}\x9b2J[/x][bold]\udc9b\x7f\u202e"
SHOWN = "evil\\x1b]0;pwned\\x07\\x9b2J[/x][bold]\\x9b\\x7f\\u202e"


def raw_controls(text: str) -> list[str]:
    """Characters a terminal could act on, or that reorder or hide text: C0 (but newline), DEL, C1, lone
    surrogates, format characters (bidirectional overrides), line and paragraph separators."""
    return [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cs", "Cf", "Zl", "Zp")]


def test_safe_shows_controls_as_escapes_and_keeps_everything_else() -> None:
    assert safe(HOSTILE) == SHOWN
    assert safe("tab\there\nnewline\r") == "tab\\x09here\\x0anewline\\x0d"
    assert safe("\U000e0001") == "\\U000e0001"  # a tag character (Cf) beyond the BMP
    plain = "demo::Shape::area() const [clone .isra.0] Grüße 日本 ✓ $ \\ ["
    assert safe(plain) is plain  # the common case costs one check and no copy


@given(st.text())
def test_safe_output_is_always_printable(s: str) -> None:
    out = safe(s)
    assert out.isprintable() and not raw_controls(out)
    out.encode("utf-8")  # no lone surrogate left (this would raise): it can be written to any UTF-8 stream
    if s.isprintable():
        assert out == s


def test_bytes_are_escaped_as_the_text_path_escapes_them() -> None:
    # a raw 0x9b (not UTF-8) and the UTF-8 encoding of U+009B both show as \x9b; valid UTF-8 stays
    assert safe_bytes(b"a\x9bb") == b"a\\x9bb"
    assert safe_bytes(b"a\xc2\x9bb") == b"a\\x9bb"
    assert safe_bytes("Grüße".encode()) == "Grüße".encode()
    assert needs_escape([b"ok", b"a\x1bb"]) and needs_escape([b"ok", "é".encode()]) and needs_escape([b"\x7f"])
    assert not needs_escape([b"main", b"std::vector<int>::push_back(int const&)", b""])


@given(st.lists(st.binary(max_size=12), max_size=8))
def test_needs_escape_catches_every_name_safe_bytes_changes(names: list[bytes]) -> None:
    if not needs_escape(names):
        assert all(safe_bytes(n) == n for n in names)


@given(st.text())
def test_json_safe_is_exact_and_leaves_nothing_for_a_terminal(s: str) -> None:
    line = json_safe(json.dumps({"name": s}, ensure_ascii=False))
    assert json.loads(line) == {"name": s}  # the same value, lone surrogates included
    assert not raw_controls(line)


def event(**kw: object) -> Event:
    base: dict[str, object] = dict(kind="call", probe=HOSTILE, pid=42, tid=43, comm=TITLE + "[/x]", ts_ns=1, cpu=0)
    base["args"] = {
        "s": StringValue("a" + TITLE + "\x9b"),
        f"n{TITLE}": 7,  # a parameter name from a hostile binary's DWARF
        "note": "<unavailable: operand 8@%rax\x1b[2J not readable>",
        "go": Rendered(f'*errors.errorString("{TITLE}")'),
    }
    base["context"] = {"goid": 1}
    base["stack"] = (
        Frame(0x1000, HOSTILE, 4, "/tmp/" + TITLE),
        Frame(0x2000, f"LazyCompile:*{TITLE} /app/x.js:1", 0, "[perf-map]"),
        Frame(0x3000, None, 0, None),
    )
    base.update(kw)
    return Event(**base)  # type: ignore[arg-type]


def target(display: str = "/srv/" + TITLE) -> Target:
    return Target(exe=display, modules=[Module(display, display)])


def test_text_stream_escapes_every_process_controlled_string() -> None:
    out, err = io.StringIO(), io.StringIO()
    rep = TextReporter(out, err, color=False)
    rep.started(target(), Plan(notes=[f"using {TITLE} from PATH"]), 1, None)
    rep.event(event())
    rep.event(event(kind="return", ret={f"r{TITLE}": Rendered(TITLE)}, args={}, stack=()))
    rep.finished(Summary(events=2, per_probe=Counter({HOSTILE: 2}), stopped_by=f"target exited {TITLE}"))
    text, notes = out.getvalue(), err.getvalue()
    assert not raw_controls(text) and not raw_controls(notes), (text, notes)
    first = text.splitlines()[0]
    assert "\\x1b]0;pwned\\x07[/x] -> " + SHOWN in first  # comm, then the probe
    assert 's="a\\u001b]0;pwned\\u0007\\u009b"' in first  # a string argument: JSON-quoted as before
    assert "n\\x1b]0;pwned\\x07=7" in first
    assert "<unavailable: operand 8@%rax\\x1b[2J not readable>" in first
    assert '*errors.errorString("\\x1b]0;pwned\\x07")' in first
    assert f"#0  {SHOWN}+0x4 (\\x1b]0;pwned\\x07)" in text
    assert "#1  LazyCompile:*\\x1b]0;pwned\\x07 /app/x.js:1+0x0 ([perf-map])" in text
    assert "r\\x1b]0;pwned\\x07=\\x1b]0;pwned\\x07" in text.splitlines()[-1]
    assert "utrace: using \\x1b]0;pwned\\x07 from PATH" in notes
    assert "attached to /srv/\\x1b]0;pwned\\x07 " in notes
    assert SHOWN in notes and "stopped by target exited \\x1b]0;pwned\\x07" in notes  # the summary


@pytest.mark.parametrize(
    "value",
    ["κάστανο", "日本語 ok", "emoji 🍐", 'quote " and \\ backslash', "tab\tnew\nline", "del\x7f c1\x9b bidi\u202e"],
)
def test_text_stream_string_arguments_read_as_json_strings_with_letters_of_any_script(value: str) -> None:
    """A string argument is shown quoted as JSON quotes it (the same value, read back by json.loads),
    letters of any script as they are, and nothing a terminal acts on."""
    out, err = io.StringIO(), io.StringIO()
    rep = TextReporter(out, err, color=False)
    rep.started(target("/srv/app"), Plan(), 1, None)
    rep.event(event(probe="f", comm="app", args={"s": StringValue(value)}, stack=()))
    rep.flush()
    line = out.getvalue().splitlines()[0]
    assert not raw_controls(line), line
    shown = line.split(" s=", 1)[1]
    assert json.loads(shown) == value
    assert all(c in shown for c in value if c.isprintable())  # printable characters as they are


def test_summary_with_markup_in_a_name_prints_it_as_text() -> None:
    err = io.StringIO()
    rep = TextReporter(io.StringIO(), err, color=False)
    rep.finished(Summary(events=1, per_probe=Counter({"f[/x]": 1, "[bold red]g": 1}), stopped_by="[/]"))
    assert "f[/x]" in err.getvalue() and "[bold red]g" in err.getvalue() and "stopped by [/]" in err.getvalue()


def test_counts_and_histograms_escape_probe_names() -> None:
    out = io.StringIO()
    write_aggregates(out, Summary(counts={(HOSTILE, 1): 3}, hist={(HOSTILE, 1): {10: 2}}))
    assert not raw_controls(out.getvalue()) and out.getvalue().count(SHOWN) == 2


def test_json_stream_is_exact() -> None:
    out = io.StringIO()
    rep = JsonReporter(out, io.StringIO())
    rep.event(event())
    rep.finished(Summary(events=1, per_probe=Counter({HOSTILE: 1}), counts={(HOSTILE, 5): 1}))
    text = out.getvalue()
    assert not raw_controls(text)
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["probe"] == HOSTILE and lines[0]["comm"] == TITLE + "[/x]"
    assert lines[0]["args"]["s"] == "a" + TITLE + "\x9b" and lines[0]["stack"][0]["function"] == HOSTILE
    assert lines[1]["probe"] == HOSTILE and lines[2]["per_probe"] == {HOSTILE: 1}


def test_perfetto_is_exact() -> None:
    out = io.StringIO()
    rep = PerfettoReporter(out, io.StringIO())
    rep.started(target(), Plan(), 1, None)
    rep.event(event(stack=()))
    rep.finished(Summary(events=1, stopped_by=TITLE))
    assert not raw_controls(out.getvalue())
    names = [e["name"] for e in json.loads(out.getvalue())]
    assert HOSTILE in names


def test_top_plain_and_live_escape_probe_comm_and_title() -> None:
    rows = top_rows({(HOSTILE, 7): 10}, {}, 1.0)
    text = plain_snapshot(rows, {7: TITLE}, "# head", "calls/s")
    assert not raw_controls(text) and SHOWN in text and "\\x1b]0;pwned\\x07" in text.splitlines()[2]
    out, err = io.StringIO(), io.StringIO()
    top = TopReporter(out, err, live=True, comm={7: TITLE + "[/x]"}.get)
    top.started(target(), Plan(), 1, None)
    top.snapshot({(HOSTILE, 7): 10, ("[/x]", 7): 1}, 1.0)
    top.finished(Summary(events=11, counts={(HOSTILE, 7): 10}, duration_s=1.0, stopped_by="[/x]"))
    drawn = out.getvalue()
    assert "\x07" not in drawn and "\x1b]" not in drawn and "\x9b" not in drawn  # rich's own CSI/SGR only
    assert "\\x1b]0;pwned" in drawn and "[/x]" in drawn


@pytest.fixture
def hostile_elf(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    syms = [Sym("plain_fn", 0x10), Sym(HOSTILE, 0x20), Sym("[red]x[/red]", 0x30)]
    probes = [Probe(f"prov{TITLE}", "name[/x]", 0x10, f"8@%rdi{TITLE}")]
    return build_elf(symtab=syms, probes=probes).write(tmp_path / ("bin" + TITLE))


@pytest.mark.parametrize("warm", [False, True])
def test_listing_plain_lines_escape_names_cold_and_cached(hostile_elf, warm) -> None:
    if warm:
        list_target(file_target(hostile_elf), None, render=PLAIN)  # renders and caches the lines
    listing = list_target(file_target(hostile_elf), None, render=PLAIN)
    out = io.BytesIO()
    write_plain(listing, out)
    text = out.getvalue().decode("utf-8")  # valid UTF-8: the raw 0x9c byte is gone
    assert not raw_controls(text), text
    assert SHOWN in text and "[red]x[/red]" in text and " plain_fn\n" in text
    assert "prov\\x1b]0;pwned\\x07:name[/x] [8@%rdi\\x1b]0;pwned\\x07]" in text


@pytest.mark.parametrize("pattern", [None, "evil*"])
def test_listing_json_rendered_and_cached_is_the_same_as_written_from_the_table(hostile_elf, pattern) -> None:
    """`--json` renders its function lines up front and caches a complete listing (`JSON`): cold and
    read back, the output is byte for byte what write_json makes from the symbol table."""

    def text(render: object) -> str:
        listing = list_target(file_target(hostile_elf), pattern, render=render)  # type: ignore[arg-type]
        out = io.TextIOWrapper(io.BytesIO(), encoding="ascii", newline="")
        write_json(listing, out)
        out.flush()
        return out.buffer.getvalue().decode("ascii")  # type: ignore[attr-defined]

    plain = text(None)
    names = [json.loads(line)["name"] for line in plain.splitlines() if '"function"' in line]
    assert names == ([HOSTILE] if pattern else ["plain_fn", HOSTILE, "[red]x[/red]"])
    cache = Path(hostile_elf).parent / "cache" / "utrace"
    assert text(JSON) == plain  # cold: rendered up front
    assert len([f for f in cache.iterdir() if f.name.startswith("json-")]) == (0 if pattern else 1)
    assert text(JSON) == plain  # from the cache file (a complete listing)
    other = Target(exe=hostile_elf, modules=(Module(path=hostile_elf, display="other\nname"),))
    listing = list_target(other, pattern, render=JSON)  # the same file shown by another name: its own text
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii", newline="")
    write_json(listing, out)
    out.flush()
    modules = {json.loads(line)["module"] for line in out.buffer.getvalue().decode().splitlines()}  # type: ignore[attr-defined]
    assert modules == {"other\nname"}


def test_listing_for_a_terminal_keeps_tables_for_small_listings(hostile_elf) -> None:
    """A terminal gets the cached plain text only for listings too long for a table (`cached_above`)."""
    list_target(file_target(hostile_elf), None, render=PLAIN)  # caches the complete listing's text
    small = list_target(file_target(hostile_elf), None, render=PLAIN, cached_above=3)
    assert small.functions[0].table is not None  # 3 functions: a table can be drawn
    assert list_target(file_target(hostile_elf), None, render=PLAIN, cached_above=2).functions[0].table is None
    out = io.StringIO()
    write_table(small, out)
    assert "plain_fn" in out.getvalue()


def test_listing_subset_escapes_only_the_picked_names(hostile_elf) -> None:
    listing = list_target(file_target(hostile_elf), "evil*", functions=True, usdt=False, render=PLAIN)
    out = io.BytesIO()
    write_plain(listing, out)
    body = out.getvalue().decode("utf-8").splitlines()[1:]
    assert len(body) == 1 and body[0].endswith(" " + SHOWN)


def test_listing_table_shows_markup_and_escapes(hostile_elf, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # no folding inside a name
    listing = list_target(file_target(hostile_elf), None)
    out = io.StringIO()
    write_table(listing, out)  # rich would raise MarkupError on "[/x]" parsed as markup
    text = out.getvalue()
    assert not raw_controls(text)
    assert "[red]x[/red]" in text and "name[/x]" in text and "\\x1b]0;pwned\\x07" in text


def test_listing_json_is_exact(hostile_elf) -> None:
    out = io.StringIO()
    write_json(list_target(file_target(hostile_elf), None), out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert not raw_controls(out.getvalue())
    assert {r["name"] for r in rows if r["kind"] == "function"} == {"plain_fn", HOSTILE, "[red]x[/red]"}
    (usdt,) = [r for r in rows if r["kind"] == "usdt"]
    assert usdt["provider"] == f"prov{TITLE}" and usdt["arguments"] == [f"8@%rdi{TITLE}"]


def test_otlp_spans_of_names_that_are_not_utf8_serialize() -> None:
    """Protobuf strings must be UTF-8: a name's stray byte is sent as \\xNN, everything else as it is."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

    assert utf8_text("a\udc9bb\ud800") == "a\\x9bb\\ud800" and utf8_text(TITLE) == TITLE
    span = Span(HOSTILE, Track(42, 43, False), 43, TITLE, 1, 2, {"s\udcff": StringValue("x\udcfe")}, 1, 1)
    msg = PbSpan.FromString(span_message(span, 0).SerializeToString())  # raised UnicodeEncodeError
    assert msg.name == "evil\x1b]0;pwned\x07\x9b2J[/x][bold]\\x9b\x7f\u202e"
    attrs = {kv.key: kv.value.string_value for kv in msg.attributes}
    assert attrs["utrace.arg.s\\xff"] == "x\\xfe" and attrs["thread.name"] == TITLE
    resource = process_resource(0, "\udc9b", "/x/\udc9b")  # a path from readlink with a stray byte
    assert "/x/\\x9b" in [kv.value.string_value for kv in resource if kv.SerializeToString()]


@given(
    st.lists(st.tuples(st.binary(min_size=1, max_size=12), st.binary(min_size=1, max_size=12)), max_size=30),
    st.text(max_size=8),
    st.data(),
)
def test_json_lines_are_what_json_makes(rows: list[tuple[bytes, bytes]], display: str, data) -> None:
    """json_lines formats names as bytes in one go; oracle: the standard library's json, per object,
    over the names decoded as utrace decodes them (UTF-8 with surrogate escapes)."""
    from utrace.elf.symbols import SymbolTable
    from utrace.output.listing import json_lines

    rows = [(n.replace(b"\0", b"x"), r.replace(b"\0", b"x")) for n, r in rows]  # ELF names hold no NUL
    n = len(rows)
    table = SymbolTable(
        "m", None, addresses=list(range(0, 16 * n, 16)), sizes=[3] * n, bindings=[1] * n, clones=[""] * n,
        name_bytes=[r[0] for r in rows], raw_bytes=[r[1] for r in rows],
    )  # fmt: skip
    indices = sorted(data.draw(st.sets(st.integers(0, n - 1))) if n else [])
    if data.draw(st.booleans()):
        indices = list(range(n))
    want = "".join(
        json.dumps(
            {"kind": "function", "name": table.names[i], "symbol": table.raws[i], "address": 16 * i, "size": 3,
             "module": display}
        ) + "\n"
        for i in indices
    )  # fmt: skip
    assert json_lines(table, indices, display).decode("ascii") == want


def test_json_lines_escape_only_the_names_that_need_it(monkeypatch) -> None:
    """Names JSON leaves alone are formatted as they are; json's encoder sees only the others (and the
    module's name): node 26 has 137k names, a few with a byte JSON escapes."""
    import json as json_mod

    from utrace.elf.symbols import SymbolTable
    from utrace.output.listing import json_lines

    names = [b"plain_%d" % i for i in range(1000)] + [b'quote"d', b"ctl\x01", b"caf\xc3\xa9"]
    n = len(names)
    table = SymbolTable("m", None, addresses=[1] * n, sizes=[2] * n, bindings=[1] * n, clones=[""] * n,
                        name_bytes=names, raw_bytes=list(names))  # fmt: skip
    real = json_mod.encoder.encode_basestring_ascii
    seen: list[str] = []
    monkeypatch.setattr(json_mod.encoder, "encode_basestring_ascii", lambda s: seen.append(s) or real(s))
    lines = json_lines(table, range(n), "mod").decode("ascii").splitlines()
    assert [json.loads(line)["name"] for line in lines[-3:]] == ['quote"d', "ctl\x01", "café"]
    assert sorted(seen) == sorted(["mod"] + ['quote"d', "ctl\x01", "café"] * 2)  # the module, names, raws
