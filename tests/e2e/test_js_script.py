"""`js:` events name the function's script and line, and `js:SCRIPT:NAME` narrows a pattern to a script.

Oracle: the program's own `new Error().stack`, printed once from inside each traced function, on the
line where the function starts (V8's `at NAME (/path/app.js:LINE:COL)`), and the program's own count of
its calls. Official Node 20 and 26 (ScopeInfo keeps a function's position in different places there).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.conftest import run_utrace
from tests.e2e.test_js_node import official

pytestmark = pytest.mark.usefixtures("root_bpf")

N = 3000
# each traced function prints V8's own idea of where it is (the stack's first frame) on its first call,
# from the line its definition starts on
_WHERE = "console.log('WHERE ' + new Error().stack.split('\\n')[1].trim())"
APP = f"""\
'use strict';
const lib = require('./lib.js');
let count = 0;
function priceOf(item, qty) {{ if (count++ === 0) {_WHERE}; return qty * 2 + item.length; }}

class Cart {{
  constructor() {{ this.n = 0; }}
  add(x) {{ if (this.n++ === 0) {_WHERE}; return x + 1; }}
}}
let arrowed = 0;
const arrow = (a) => {{ if (arrowed++ === 0) {_WHERE}; return a * 3; }};
const c = new Cart();
let s = 0;
for (let i = 0; i < {N}; i++) {{ s += priceOf('pear', i); s += c.add(i); s += arrow(i); s += lib.priceOf(i); }}
console.log('counts ' + count + ' ' + c.n + ' ' + arrowed + ' ' + lib.count() + ' ' + (s & 1));
// the source is read from the live process when the first event of each script is shown: a program
// that exits at once may leave its lines unknown (said as such); this one stays a moment
setTimeout(() => {{}}, 300);
"""
LIB = f"""\
// a second module, with a function of the same name as one in app.js


let n = 0;
function priceOf(x) {{ if (n++ === 0) {_WHERE}; return x; }}
module.exports = {{ priceOf, count: () => n }};
"""


def _write(tmp_path: Path) -> Path:
    (tmp_path / "lib.js").write_text(LIB)
    app = tmp_path / "app.js"
    app.write_text(APP)
    return app


def _where(stdout: str) -> dict[tuple[str, str], int]:
    """(function, script path) -> line, from the program's own stack printouts."""
    out: dict[tuple[str, str], int] = {}
    for m in re.finditer(r"^WHERE at (?:\S+\.)?(\w+) \((/\S+?):(\d+):\d+\)$", stdout, re.M):
        out[(m.group(1), m.group(2))] = int(m.group(3))
    return out


def _counts(stdout: str) -> list[int]:
    m = re.search(r"^counts (\d+) (\d+) (\d+) (\d+)", stdout, re.M)
    assert m, stdout[-2000:]
    return [int(x) for x in m.groups()]


@pytest.mark.parametrize("major", (20, 26))
def test_script_and_line_as_v8_says(major: int, tmp_path: Path) -> None:
    """Every event of a plain function, a class method, an arrow function and a same-named function in a
    second module names the script and the line V8's own stack trace gives."""
    node = official(major)
    app = _write(tmp_path)
    p = run_utrace("node", "js:priceOf", "js:add", "js:arrow", "--json", "--", str(node), str(app), timeout=300)
    assert p.returncode == 0, p.stderr
    where = _where(p.stdout)
    lib, mine = str(tmp_path / "lib.js"), str(app)
    assert set(where) == {("priceOf", mine), ("add", mine), ("arrow", mine), ("priceOf", lib)}, p.stdout[-3000:]
    assert _counts(p.stdout) == [N, N, N, N]
    seen: dict[tuple[str, str], int] = {}
    for line in p.stdout.splitlines():
        if not line.startswith('{"kind": "call"'):
            continue
        ctx = json.loads(line)["context"]
        key = (ctx["function"], ctx["script"])
        assert key in where, ctx
        assert ctx["line"] == where[key], (ctx, where[key])
        seen[key] = seen.get(key, 0) + 1
    assert seen == dict.fromkeys(where, N)


@pytest.mark.parametrize("major", (20, 26))
def test_narrowed_to_a_script(major: int, tmp_path: Path) -> None:
    """`js:lib.js:priceOf` counts lib.js's priceOf only: the program's count of it, not app.js's."""
    node = official(major)
    app = _write(tmp_path)
    p = run_utrace("node", "js:lib.js:priceOf", "--json", "--", str(node), str(app), timeout=300)
    assert p.returncode == 0, p.stderr
    assert _counts(p.stdout)[3] == N
    calls = [json.loads(x) for x in p.stdout.splitlines() if x.startswith('{"kind": "call"')]
    assert len(calls) == N
    assert {(c["probe"], c["context"]["script"], c["context"]["line"]) for c in calls} == {
        ("js:lib.js:priceOf", str(tmp_path / "lib.js"), 5)
    }
    # a path suffix narrows too; a script named otherwise matches nothing
    p = run_utrace("node", "js:" + tmp_path.name + "/app.js:priceOf", "--count", "--", str(node), str(app))
    assert p.returncode == 0, p.stderr
    assert re.search(rf"^js:\S+app\.js:priceOf\s+\d+\s+{N}$", p.stdout, re.M), p.stdout
    p = run_utrace("node", "js:b.js:priceOf", "--count", "--", str(node), str(app))
    assert "matched no JavaScript call" in p.stderr


@pytest.mark.parametrize("expr", ["js::priceOf", "js:app.js:", "js:a*.js:priceOf", "js:" + "x" * 200 + ":f"])
def test_bad_script_pattern(expr: str, tmp_path: Path) -> None:
    """A malformed js:SCRIPT:NAME is refused in one line naming it, with a non-zero exit."""
    node = official(26)
    app = _write(tmp_path)
    p = run_utrace("node", expr, "--", str(node), str(app))
    assert p.returncode != 0
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and expr[:20] in lines[0], p.stderr
    assert "counts" not in p.stdout  # the program never ran
