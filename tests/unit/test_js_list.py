"""`utrace list --pid PID --js [GLOB] [--for SECONDS]`: options checked before anything is armed (one
`utrace: error:` line, exit 2), the listing's rendering, and the line for a glob nothing matched. No root
needed (the tracing itself is tests/e2e/test_js_list.py)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from tests.unit.test_cli_errors import NO_PID, USAGE, assert_one_error, run
from utrace.app.list_probes import JsFunction, JsListing, list_js, nothing_called
from utrace.errors import EnvironmentProblem
from utrace.output.listing import js_notes, write_js_json, write_js_plain

PID = str(os.getpid())

BAD = [
    ("for-zero", ["--pid", PID, "--js", "price*", "--for", "0"], "--for must be a number of seconds"),
    ("for-negative", ["--pid", PID, "--js", "price*", "--for", "-1"], "--for must be"),
    ("for-nan", ["--pid", PID, "--js", "price*", "--for", "nan"], "--for must be"),
    ("for-inf", ["--pid", PID, "--js", "--for", "inf"], "--for must be"),
    ("for-too-long", ["--pid", PID, "--js", "--for", "61"], "at most 60"),
    ("for-not-a-number", ["--pid", PID, "--js", "x", "--for", "2s"], "'2s' is not a valid float"),
    ("for-without-js", ["--pid", PID, "--for", "2"], "--for applies to --js"),
    ("js-without-pid", ["--js", "price*"], "give --pid PID"),
    ("js-bad-glob", ["--pid", PID, "--js", "price;rm"], "a JavaScript function name or glob of 1 to 64"),
    ("js-long-glob", ["--pid", PID, "--js", "p" * 65], "1 to 64 characters"),
    ("js-with-usdt", ["--pid", PID, "--js", "p*", "--usdt"], "--usdt and --functions do not apply to --js"),
    ("js-and-pattern", ["--pid", PID, "price*", "--js"], "--js takes the glob itself"),
]


@pytest.mark.parametrize(("argv", "contains"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_option_is_one_line(argv: list[str], contains: str, tmp_path: Path) -> None:
    r = run("list", *argv, cache=tmp_path / "cache")
    assert_one_error(r, USAGE, contains)
    assert r.stdout == ""


def test_not_root_is_said_before_the_process_is_looked_at(monkeypatch: pytest.MonkeyPatch) -> None:
    import utrace.bpf.backend as backend

    monkeypatch.setattr(backend, "privileges_problem", lambda: "tracing needs root (...); try sudo")
    with pytest.raises(EnvironmentProblem, match="arms probes in the process: tracing needs root"):
        list_js(NO_PID, "price*", 2.0)


def test_seen_max_is_the_kernel_maps_size() -> None:
    from utrace.probes.v8values import MAPS, SEEN
    from utrace.runtimes.v8js import SEEN_MAX

    assert f"BPF_HASH({SEEN}, struct jsname, u8, {SEEN_MAX});" in MAPS


def _listing(**kw: object) -> JsListing:
    base = JsListing(pid=42, glob="price*", window_s=2.0, seconds=2.01, stopped_by="duration")
    for k, v in kw.items():
        setattr(base, k, v)
    return base


def test_plain_and_json_show_script_and_line_when_the_events_carry_them() -> None:
    listing = _listing(
        functions=[
            JsFunction("priceOf", 7, "/srv/app.js", 12),
            JsFunction("priceTotal", 3),
            JsFunction("", 2, "/srv/a\x1b[31m.js", None),
        ]
    )
    out = io.BytesIO()
    write_js_plain(listing, out)
    lines = out.getvalue().decode().splitlines()
    assert lines[0].startswith("# 3 JavaScript functions matching 'price*' called in pid 42 during 2.0 s: only")
    assert "not every function that exists" in lines[0]
    assert lines[1].split() == ["7", "priceOf", "/srv/app.js:12"]
    assert lines[2].split() == ["3", "priceTotal"]
    assert lines[3].split()[:2] == ["2", "(anonymous)"] and "\x1b" not in lines[3]
    text = io.StringIO()
    write_js_json(listing, text)
    rows = [json.loads(line) for line in text.getvalue().splitlines()]
    assert rows[0] == {"kind": "js-function", "name": "priceOf", "calls": 7, "script": "/srv/app.js", "line": 12}
    assert rows[1]["script"] is None and rows[1]["line"] is None
    assert rows[2]["name"] == "" and rows[2]["script"] == "/srv/a\x1b[31m.js"  # exact in JSON (escaped there)
    assert "\x1b" not in text.getvalue()
    assert rows[3]["kind"] == "js-window" and rows[3]["functions"] == 3 and rows[3]["calls"] == 12


def test_notes_say_a_short_window_and_lost_calls() -> None:
    assert js_notes(_listing()) == []
    notes = js_notes(_listing(stopped_by="SIGINT", seconds=0.5, lost=3))
    assert notes[0] == "stopped by SIGINT after 0.5 s of 2 s"
    assert "3 call(s) were lost" in notes[1]
    assert js_notes(_listing(stopped_by="target exited", seconds=1.25)) == ["pid 42 exited after 1.2 s of 2 s"]


def test_nothing_called_names_the_closest_seen() -> None:
    line = nothing_called(_listing(glob="priceOff*", seen=["other", "priceOf", "priceTotal"]))
    assert line.startswith("no JavaScript function matching 'priceOff*' was called in pid 42 during 2.0 s")
    assert line.endswith("closest names of the 3 functions seen called: priceOf")
    full = nothing_called(_listing(glob="priceOff*", seen=["priceOf"], seen_full=True))
    assert "of the 1+ functions seen called" in full
    assert "none with a close name" in nothing_called(_listing(glob="zzz", seen=["other"]))
    assert "optimised are not seen" in nothing_called(_listing(glob="*"))
