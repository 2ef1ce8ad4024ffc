"""`js:NAME` for functions whose names are not one flat string where V8 keeps it: inferred names V8
builds as a chain of cons strings (`Cart.prototype.computeTotal = function ...` is
`Cart.computeTotal`), and functions with 75 or more context variables (their ScopeInfo keeps the
names in a hash table, the function's own name after it). Such calls were counted as "could not read".

Oracles: the program's own count of its calls, and V8's precise coverage (NODE_V8_COVERAGE), which
names each function as V8 does (SharedFunctionInfo::DebugName) and counts its calls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, need

pytestmark = pytest.mark.usefixtures("root_bpf")

CACHE = Path(os.environ.get("UTRACE_CACHE", Path.home() / ".cache" / "utrace")) / "realworld"
LOCALS = 80
BIG = ", ".join(f"v{i} = {i}" for i in range(LOCALS))
SUM = " + ".join(f"v{i}" for i in range(LOCALS))
NAMES = f"""\
const count = {{ cart: 0, handler: 0, big: 0 }};
function Cart() {{}}
Cart.prototype.computeTotal = function (x) {{ count.cart++; return x * 2; }};
const app = {{ handlers: {{}} }};
app.handlers.onCheckoutComplete = function (x) {{ count.handler++; return x + 1; }};
function bigScope(x) {{
  let {BIG};
  count.big++;
  const all = () => {SUM};  // every variable captured: all {LOCALS} live in the function's context
  return all() + x;
}}
const c = new Cart();
const n = Number(process.argv[2]);
let s = 0;
for (let i = 0; i < n; i++) {{
  s += c.computeTotal(i) + app.handlers.onCheckoutComplete(i);
  if (i % 10 === 0) s += bigScope(i);
}}
console.log('counts ' + JSON.stringify(count));
"""
WANT = {"Cart.computeTotal": "cart", "app.handlers.onCheckoutComplete": "handler", "bigScope": "big"}


def _coverage(cov: Path, script: str) -> dict[str, int]:
    """V8's name and call count of each function of `script`."""
    got: dict[str, int] = {}
    for f in cov.glob("*.json"):
        for s in json.loads(f.read_text())["result"]:
            if s["url"].endswith(script):
                for fn in s["functions"]:
                    got[fn["functionName"]] = int(fn["ranges"][0]["count"])
    return got


@pytest.mark.parametrize("major", (20, 26))
def test_cons_and_many_locals_names_counted_as_v8_names_them(major: int, tmp_path: Path) -> None:
    node = CACHE / f"node-{major}" / "bin" / "node"
    need(node.exists(), f"run scripts/fetch-node-official.sh {major}")
    script = tmp_path / "names.js"
    script.write_text(NAMES)
    cov = tmp_path / "cov"
    env = {**os.environ, "NODE_V8_COVERAGE": str(cov)}
    probes = [f"js:{name}" for name in WANT]
    p = subprocess.run(
        [sys.executable, "-m", "utrace", "node", *probes, "--count", "--", str(node), str(script), "1000"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    own = json.loads(p.stdout.split("counts ", 1)[1].splitlines()[0])
    v8 = _coverage(cov, "names.js")
    for name, key in WANT.items():
        row = next((line for line in p.stdout.splitlines() if f"js:{name} " in line), None)
        assert row is not None, (name, p.stdout, p.stderr)
        assert int(row.split()[-1]) == own[key] == v8[name] > 0, (name, row, own, v8)
    # node's own functions of these shapes too (its large modules, `Socket._writeGeneric`): every
    # call's name was read
    assert "could not read" not in p.stderr, p.stderr
