"""`js:NAME` arguments and return values that are objects, shown as JavaScript names them: an object by
its constructor's name (`Cart{}`), an array by its length (`Array(3)`), a function by its name.

Oracle: the traced program's own printout of each value (`obj.constructor.name`, `arr.length`,
`fn.name`, and for an object without a prototype Node's own `util.inspect`), on official Node builds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import run_utrace
from tests.e2e.test_js_node import official

pytestmark = pytest.mark.usefixtures("root_bpf")

OBJECTS = """\
const util = require('util');
class Cart { constructor() { this.items = []; } }
class LineItem { constructor(n) { this.a = n; this.b = n; this.c = n; this.d = n; this.e = n; } }
function priceOf(a, b, c, d) { return a; }
const show = (v) => typeof v === 'function' ? 'Function ' + v.name
  : Array.isArray(v) ? 'Array(' + v.length + ')'
  : Object.getPrototypeOf(v) === null ? util.inspect(v).replace(' {}', '{}')
  : v.constructor?.name + '{}';
const big = []; for (let i = 0; i < 1000 + process.pid % 7; i++) big.push(i);
const calls = [
  [new Cart(), {}, [1, 2, 3], new Map()],
  [Object.create(null), priceOf, [], new Set()],
  [new LineItem(1), {a: 1, b: 2}, big, new Date(0)],
  [function namedLater() {}, new Error('x'), [[1], 2], new Cart()],
];
for (const c of calls) {
  priceOf(...c);
  console.log(JSON.stringify(c.map(show)));
}
"""


@pytest.mark.parametrize("major", (20, 26))
def test_objects_as_the_program_names_them(major: int, tmp_path: Path) -> None:
    node = official(major)
    script = tmp_path / "objects.js"
    script.write_text(OBJECTS)
    p = run_utrace("node", "js:priceOf", "--ret", "--json", "--", str(node), str(script), timeout=120)
    assert p.returncode == 0, p.stderr
    printed = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("[")]
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    calls = [e for e in events if e["kind"] == "call" and e.get("context", {}).get("function") == "priceOf"]
    rets = [e for e in events if e["kind"] == "return" and e["probe"] == "js:priceOf"]
    assert len(printed) == len(calls) == len(rets) == 4, p.stdout
    assert printed[1][0] == "[Object: null prototype]{}"  # Node's own name for it
    for want, ev, ret in zip(printed, calls, rets, strict=True):
        got = [str(ev["args"][f"arg{i}"]) for i in range(4)]
        assert got == want, (got, want)
        assert str(ret["ret"]["value"]) == want[0]  # priceOf returns its first argument
