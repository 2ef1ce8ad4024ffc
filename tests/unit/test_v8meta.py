"""v8dbg_* constants read from official Node builds, checked against binutils: `nm -D` for the symbol's
address and section letter, `objdump -s` for the 4 bytes there (a symbol in .bss is 0)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from utrace.elf.v8meta import V8MetaError, layout_from, read_constants, v8_layout

CACHE = Path(os.environ.get("UTRACE_CACHE", Path.home() / ".cache" / "utrace")) / "realworld"
NAMES = (
    "v8dbg_class_JSFunction__shared__SharedFunctionInfo",
    "v8dbg_SmiShiftSize",
    "v8dbg_type_ScopeInfo__SCOPE_INFO_TYPE",
    "v8dbg_scopeinfo_idx_first_vars",
    "v8dbg_class_HeapObject__map__Map",
    "v8dbg_OddballFalse",
)


def _binutils_value(node: Path, name: str) -> int:
    nm = subprocess.run(["nm", "-D", str(node)], capture_output=True, text=True, check=True).stdout
    m = re.search(rf"^([0-9a-f]+) (\w) {name}$", nm, re.M)
    assert m, name
    addr, letter = int(m.group(1), 16), m.group(2)
    if letter in "bB":
        return 0
    dump = subprocess.run(
        ["objdump", "-s", f"--start-address={addr:#x}", f"--stop-address={addr + 4:#x}", str(node)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    line = next(ln for ln in dump.splitlines() if ln.strip().startswith(f"{addr:x}"))
    return int.from_bytes(bytes.fromhex(line.split()[1]), "little", signed=True)


@pytest.mark.parametrize("major", (20, 22, 24, 26))
def test_constants_equal_binutils(major: int) -> None:
    node = CACHE / f"node-{major}" / "bin" / "node"
    if not node.exists() or not shutil.which("objdump"):
        pytest.skip(f"run scripts/fetch-node-official.sh {major}; needs binutils")
    consts = read_constants(str(node))
    for name in NAMES:
        assert consts[name.removeprefix("v8dbg_")] == _binutils_value(node, name), name
    layout = v8_layout(str(node))
    # offsets in the layout are from the tagged pointer (the heap-object tag already taken off)
    assert layout.jsfunction_shared == consts["class_JSFunction__shared__SharedFunctionInfo"] - 1
    assert layout.smi_shift == 32 and layout.tagged_size == 8


def test_a_missing_constant_is_a_refusal_that_names_it() -> None:
    with pytest.raises(V8MetaError, match="no v8dbg_"):
        layout_from({}, "x")
    with pytest.raises(V8MetaError, match="v8dbg_class_JSFunction__shared"):
        layout_from({"HeapObjectTag": 1}, "x")


def test_a_binary_without_v8_is_refused() -> None:
    with pytest.raises(V8MetaError):
        v8_layout("/bin/true")
