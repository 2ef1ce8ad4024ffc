"""--stack on a node: JavaScript frames named from V8's own frame slots, without --perf-basic-prof.

Oracle: the program's own `new Error().stack`, printed at the same point (V8's stack trace of the
same frames: their names, scripts and lines), and V8's own `fn.name` and `%GetOptimizationStatus`
(optimised frames). Official Node builds 20 and 26 (layouts differ: offsets, frame types).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import run_utrace
from tests.e2e.test_js_node import official

pytestmark = pytest.mark.usefixtures("root_bpf")

MAJORS = (20, 26)

# each line the program prints: the function names of its own stack (V8's), innermost first, then
# (JSL, FSL) each frame's script and line; the process lives on a little so utrace reads the names
# from its memory while it runs. Each function of the chain is on one line: the line of its frame in
# V8's stack (where it runs) is the line where it starts (what utrace shows); openIt takes its stack
# trace on its first line.
CHAIN = """\
const fs = require('fs');
function names(stack) {
  return stack.split('\\n').slice(1).map((l) => {
    const m = /^\\s+at (?:async )?(.*?) \\(/.exec(l);
    return m ? m[1] : '';
  });
}
function lines(stack) {
  return stack.split('\\n').slice(1).map((l) => {
    const m = /\\((.*):(\\d+):\\d+\\)$/.exec(l);
    return m ? [m[1], Number(m[2])] : ['', 0];
  });
}
function show(st) { console.log('JS ' + JSON.stringify(names(st))); console.log('JSL ' + JSON.stringify(lines(st))); }
function priceOf(item, qty) { show(new Error().stack); return qty * 2; }
function middle(x) { return priceOf('pear', x); }
function outer(x) { return middle(x) + 1; }
function main() { return outer(7); }
function openIt(p) { const st = new Error().stack;
  console.log('FS ' + JSON.stringify([fs.openSync.name, ...names(st)]));
  console.log('FSL ' + JSON.stringify(lines(st)));
  fs.closeSync(fs.openSync(p, 'r'));
}
function viaFs(p) { return openIt(p); }
function startFs(p) { return viaFs(p); }
main();
startFs(process.argv[2]);
setTimeout(() => {}, 1500);
"""

# `hot` optimised (V8's own status says so) calls priceOf, which utrace keeps out of the
# optimising tiers (and from being inlined): the frame of `hot` is optimised code
OPTIMISED = """\
function priceOf(item, qty) {
  if (qty === 99) console.log('OPT ' + JSON.stringify([%GetOptimizationStatus(hot), hot.name]));
  return qty;
}
function hot(q) { return priceOf('pear', q) + 1; }
%PrepareFunctionForOptimization(hot);
hot(1); hot(2);
%OptimizeFunctionOnNextCall(hot);
hot(3);
hot(99);
setTimeout(() => {}, 1500);
"""


def _events(stdout: str) -> list[dict[str, object]]:
    return [e for e in (json.loads(line) for line in stdout.splitlines() if line.startswith("{")) if "probe" in e]


def _js_names(ev: dict[str, object]) -> list[str]:
    """The names utrace gave the event's JavaScript frames, innermost first."""
    stack = ev["stack"]
    assert isinstance(stack, list)
    out = []
    for f in stack:
        if "js" in f:
            assert f["js"] == "", f"a JavaScript frame whose function was not read: {f}"
            out.append(f["function"])
    return out


def _js_lines(ev: dict[str, object]) -> list[list[object]]:
    """[script, line] of the event's JavaScript frames, innermost first."""
    stack = ev["stack"]
    assert isinstance(stack, list)
    return [[f["module"], f["line"]] for f in stack if "js" in f]


def _printed_lines(stdout: str, tag: str) -> list[list[object]]:
    lines = [line for line in stdout.splitlines() if line.startswith(tag + " ")]
    assert len(lines) == 1, stdout[-3000:]
    got = json.loads(lines[0][len(tag) + 1 :])
    assert isinstance(got, list)
    return got


def _printed(stdout: str, tag: str) -> list[str]:
    lines = [line for line in stdout.splitlines() if line.startswith(tag + " ")]
    assert len(lines) == 1, stdout[-3000:]
    got = json.loads(lines[0][len(tag) + 1 :])
    assert isinstance(got, list)
    return [str(x) for x in got]


@pytest.mark.parametrize("major", MAJORS)
def test_js_frames_at_a_js_probe_and_a_libuv_probe(major: int, tmp_path: Path) -> None:
    """At `js:priceOf` the JavaScript frames are, in order, the functions V8's own stack trace names
    (priceOf, middle, outer, main); at `uv_fs_open`, reached from fs.openSync, they are openSync (V8's
    `fs.openSync.name`) and then the program's openIt, viaFs, startFs."""
    node = official(major)
    script = tmp_path / "chain.js"
    script.write_text(CHAIN)
    target = tmp_path / "data.txt"
    target.write_text("x")
    p = run_utrace("node", "js:priceOf", "uv_fs_open", "--stack", "--json", "--", str(node), str(script), str(target))
    assert p.returncode == 0, p.stderr
    events = _events(p.stdout)
    js_oracle = _printed(p.stdout, "JS")[:4]
    assert js_oracle == ["priceOf", "middle", "outer", "main"], js_oracle
    calls = [e for e in events if e["probe"] == "js:priceOf"]
    assert len(calls) == 1, p.stdout[-3000:]
    assert _js_names(calls[0])[:4] == js_oracle
    # the frames name the script they belong to (V8's Script.name)
    stack = calls[0]["stack"]
    assert isinstance(stack, list)
    assert [f["module"] for f in stack if "js" in f][:4] == [str(script)] * 4
    # and the line each starts on (the lines V8's own stack trace gives them)
    lines_oracle = _printed_lines(p.stdout, "JSL")[:4]
    assert [sc for sc, _ in lines_oracle] == [str(script)] * 4 and all(n > 0 for _, n in lines_oracle)
    assert _js_lines(calls[0])[:4] == lines_oracle

    fs_oracle = _printed(p.stdout, "FS")
    opens = [e for e in events if e["probe"] == "uv_fs_open" and e["args"].get("path") == str(target)]  # type: ignore[union-attr]
    assert len(opens) == 1, p.stdout[-3000:]
    assert _js_names(opens[0])[:4] == fs_oracle[:4] == ["openSync", "openIt", "viaFs", "startFs"]
    # openIt spans lines and runs its last one: its frame's line is where it starts (where V8's stack
    # trace was taken)
    fs_lines = _printed_lines(p.stdout, "FSL")[:3]
    assert [sc for sc, _ in fs_lines] == [str(script)] * 3
    assert _js_lines(opens[0])[1:4] == fs_lines
    # no native frame was taken for a JavaScript one: the innermost frames are libuv's and node's C++
    first = opens[0]["stack"]
    assert isinstance(first, list)
    assert first[0]["function"] == "uv_fs_open" and "js" not in first[0]


@pytest.mark.parametrize("major", MAJORS)
def test_an_optimised_frame_is_named(major: int, tmp_path: Path) -> None:
    """An optimised frame (V8's %GetOptimizationStatus says `hot` runs Maglev or TurboFan code, here
    node 20 TurboFan, node 26 Maglev) is named from its slots."""
    node = official(major)
    script = tmp_path / "opt.js"
    script.write_text(OPTIMISED)
    p = run_utrace("node", "js:priceOf", "--stack", "--json", "--", str(node), "--allow-natives-syntax", str(script))
    assert p.returncode == 0, p.stderr
    status, name = _printed(p.stdout, "OPT")
    # V8's OptimizationStatus (runtime-test.cc): kOptimized, kMaglevved, kTurboFanned
    optimised = (1 << 4) | (1 << 5) | (1 << 6)
    assert int(status) & optimised, status
    events = _events(p.stdout)
    first = [e for e in events if e["probe"] == "js:priceOf" and e["args"].get("arg1") == 1]  # type: ignore[union-attr]
    calls = [e for e in events if e["probe"] == "js:priceOf" and e["args"].get("arg1") == 99]  # type: ignore[union-attr]
    assert len(calls) == 1 and len(first) == 1, p.stdout[-3000:]
    names = _js_names(calls[0])
    assert names[:2] == ["priceOf", name], names
    # the frame of `hot` returns into its optimised code now, into the interpreter at its first call
    opt, interpreted = (e["stack"][1] for e in (calls[0], first[0]))  # type: ignore[index]
    assert opt["function"] == interpreted["function"] == name and opt["address"] != interpreted["address"]


@pytest.mark.parametrize("major", MAJORS)
def test_baseline_frames_are_named(major: int, tmp_path: Path) -> None:
    """With every function compiled by Sparkplug (`--always-sparkplug`), the call enters through V8's
    baseline prologue and every caller's frame is baseline code: the names are still V8's own."""
    node = official(major)
    script = tmp_path / "chain.js"
    script.write_text(CHAIN)
    target = tmp_path / "data.txt"
    target.write_text("x")
    p = run_utrace(
        "node", "js:priceOf", "--stack", "--json", "--", str(node), "--always-sparkplug", str(script), str(target)
    )
    assert p.returncode == 0, p.stderr
    calls = [e for e in _events(p.stdout) if e["probe"] == "js:priceOf"]
    assert len(calls) == 1, p.stdout[-3000:]
    stack = calls[0]["stack"]
    assert isinstance(stack, list)
    assert stack[0]["function"] == "Builtins_BaselineOutOfLinePrologue"
    assert _js_names(calls[0])[:4] == _printed(p.stdout, "JS")[:4] == ["priceOf", "middle", "outer", "main"]
    assert _js_lines(calls[0])[:4] == _printed_lines(p.stdout, "JSL")[:4]


@pytest.mark.parametrize("major", MAJORS)
def test_frames_of_a_program_that_exits_at_once_are_named(major: int, tmp_path: Path) -> None:
    """The same chain in a program that exits as soon as it has run it: utrace reads the frames' names
    from its memory first thing when the event arrives (before reading symbol tables), so they are
    V8's own names, not 'function not read' because the process had already gone."""
    node = official(major)
    script = tmp_path / "chain.js"
    script.write_text(CHAIN.replace("setTimeout(() => {}, 1500);\n", ""))
    target = tmp_path / "data.txt"
    target.write_text("x")
    p = run_utrace("node", "js:priceOf", "uv_fs_open", "--stack", "--json", "--", str(node), str(script), str(target))
    assert p.returncode == 0, p.stderr
    calls = [e for e in _events(p.stdout) if e["probe"] == "js:priceOf"]
    assert len(calls) == 1, p.stdout[-3000:]
    assert _js_names(calls[0])[:4] == _printed(p.stdout, "JS")[:4] == ["priceOf", "middle", "outer", "main"]
