"""The house rules, read from the source itself with Python's own parser: one-way layering, no function over
80 lines, no two modules with the same file name.

Each module may import only modules of its own layer or a lower one; the libraries that define a layer's
job are imported only there (click: cli/, rich: output/, bcc: bpf/backend.py, pyelftools, cxxfilt and
capstone: elf/).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "utrace"

# Lowest first. A module is placed by the longest prefix of its dotted name found here.
LAYERS: list[list[str]] = [
    ["utrace", "utrace.model", "utrace.predicate", "utrace.v8layout", "utrace.errors"],
    ["utrace.store", "utrace.process.procfs"],
    ["utrace.elf", "utrace.probes"],
    ["utrace.process", "utrace.bpf"],
    ["utrace.runtimes"],
    ["utrace.app"],
    ["utrace.output"],
    ["utrace.cli", "utrace.__main__"],
]

ONLY_IN = {
    "click": ("utrace.cli",),
    "rich": ("utrace.output",),
    "bcc": ("utrace.bpf.backend",),
    "elftools": ("utrace.elf",),
    "cxxfilt": ("utrace.elf",),
    "capstone": ("utrace.elf",),
}


def _module_name(path: Path) -> str:
    """utrace/elf/go/gobin.py -> utrace.elf.go.gobin; a package's __init__.py -> the package."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = sorted(PACKAGE.rglob("*.py"))
KNOWN = {_module_name(p) for p in MODULES}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(name: str) -> int:
    best, best_len = -1, -1
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if _within(name, prefix) and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    assert best >= 0, f"{name} is in no layer"
    return best


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from utrace.x import y` may name a submodule y: then it is y's layer that counts
            subs = [f"{target}.{alias.name}" for alias in node.names]
            known = [s for s in subs if s in KNOWN]
            found += [(node.lineno, s) for s in known] if len(known) == len(subs) else [(node.lineno, target)]
    return found


def test_the_tree_is_found() -> None:
    names = {_module_name(p) for p in MODULES}
    assert {
        "utrace.model",
        "utrace.cli.main",
        "utrace.bpf.backend",
        "utrace.elf.symbols",
    } <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_imports_go_one_way(path: Path) -> None:
    module = _module_name(path)
    own = layer_of(module)
    wrong = []
    for line, target in _imports(path):
        if target in KNOWN and layer_of(target) > own:
            wrong.append(f"line {line}: {target} (layer {layer_of(target)} > {own})")
        top = target.split(".")[0]
        if top in ONLY_IN and not any(_within(module, home) for home in ONLY_IN[top]):
            wrong.append(f"line {line}: {target} belongs in {ONLY_IN[top]}")
    assert not wrong, f"{module} (layer {own}) imports upward or out of place: " + "; ".join(wrong)


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The rule itself: an elf module importing the CLI is caught, one importing the model is not."""
    assert layer_of("utrace.cli.main") > layer_of("utrace.elf.symbols")
    assert layer_of("utrace.process.procfs") < layer_of("utrace.elf.reader") < layer_of("utrace.process.stacks")
    assert layer_of("utrace.elf.go.gobin") == layer_of("utrace.elf")


def _long_functions(source: str, limit: int) -> list[str]:
    tree = ast.parse(source)
    return [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, from line {node.lineno})"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > limit
    ]


def test_no_function_is_over_80_lines() -> None:
    long = {str(p.relative_to(PACKAGE.parent)): _long_functions(p.read_text(), 80) for p in MODULES}
    assert not {k: v for k, v in long.items() if v}
    assert _long_functions("def f():\n" + "    x = 1\n" * 80, 80) == ["f (81 lines, from line 1)"]


def test_no_two_modules_share_a_file_name() -> None:
    seen: dict[str, list[str]] = {}
    for p in MODULES:
        if p.name not in ("__init__.py", "__main__.py"):
            seen.setdefault(p.name, []).append(str(p.relative_to(PACKAGE.parent)))
    assert not {name: paths for name, paths in seen.items() if len(paths) > 1}
