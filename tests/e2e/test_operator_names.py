"""C++ operator names (`operator<`, `operator()`, `operator unsigned long`, `operator< <int>` ...) cut,
listed and traced right, against oracles nobody here wrote: binutils' `c++filt -p` (libiberty's own
"name without parameters"), `nm -C`, and the fixture's printout."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, need, run_utrace
from utrace.elf.demangle import base_name, display_name

LIBSTDCXX = Path("/usr/lib/x86_64-linux-gnu/libstdc++.so.6")


def defined_cxx_functions(path: str) -> list[str]:
    """The raw C++ function names `nm` (dynamic and static tables) shows defined in `path`; special
    names (vtables, guard variables, transaction clones) and GCC clones (`.cold`, `.isra.0`) left out."""
    raws: set[str] = set()
    for dyn in (["-D"], []):
        out = subprocess.run(["nm", *dyn, "--defined-only", path], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "TtWi" and parts[2].startswith("_Z"):
                raw = parts[2].split("@", 1)[0]
                if "." not in raw and not raw.startswith(("_ZT", "_ZG")):
                    raws.add(raw)
    return sorted(raws)


def cxxfilt(raws: list[str], *flags: str) -> list[str]:
    out = subprocess.run(["c++filt", *flags], input="\n".join(raws) + "\n", capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == len(raws)
    return lines


@pytest.mark.parametrize("path", [str(LIBSTDCXX), "/usr/bin/node"], ids=["libstdc++", "node"])
def test_names_without_parameters_equal_cxxfilt_p(path: str) -> None:
    """base_name(display_name(x)) is exactly what `c++filt -p` prints for x, for every C++ function of a
    real library: names with operators (305 in libstdc++ 14: `operator>>(bool&)`, `operator void
    (std::__exception_ptr::exception_ptr::*)()() const`...), local scopes, `(anonymous namespace)`."""
    need(shutil.which("c++filt") is not None, "c++filt missing (binutils)")
    need(Path(path).exists(), f"{path} missing")
    raws = defined_cxx_functions(path)
    full, want = cxxfilt(raws), cxxfilt(raws, "-p")
    pairs = [(f, w) for r, f, w in zip(raws, full, want, strict=True) if f != r]  # both demangled it
    ops = [(f, w) for f, w in pairs if re.search(r"\boperator\b", w)]
    assert len(ops) > 50, "the library should have C++ operators"
    wrong = [(f, w, base_name(display_name(f))) for f, w in pairs if base_name(display_name(f)) != w]
    assert wrong == [], wrong[:10]


# --- the operators fixture ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def operators_bin(fixtures_built: Path) -> Iterator[str]:
    """fixtures/build/cpp/operators (scripts/build-fixtures.sh), else built here the same way."""
    built = fixtures_built / "cpp" / "operators"
    if built.exists():
        yield str(built)
        return
    need(shutil.which("g++") is not None, "g++ missing: cannot build fixtures/cpp/operators.cpp")
    tmp = Path(tempfile.mkdtemp(prefix="utrace-ops-"))
    try:
        exe = tmp / "operators"
        src = ROOT / "fixtures" / "cpp" / "operators.cpp"
        subprocess.run(["g++", "-std=c++20", "-O2", "-g", "-Wall", "-o", str(exe), str(src)], check=True)
        exe.chmod(0o755)
        tmp.chmod(0o755)
        yield str(exe)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def nm_by_base(path: str) -> dict[str, set[tuple[str, int]]]:
    """{name without parameters (`c++filt -p`): {(nm -C name, address)}} for the functions `nm -C` shows."""
    out = subprocess.run(["nm", "--defined-only", path], capture_output=True, text=True, check=True).stdout
    rows = [(int(p[0], 16), p[2]) for p in (line.split() for line in out.splitlines()) if len(p) == 3]
    rows = [(a, r) for a, r in rows if r.startswith("_Z") and "." not in r and not r.startswith(("_ZT", "_ZG"))]
    raws = [r for _a, r in rows]
    groups: dict[str, set[tuple[str, int]]] = {}
    for (addr, _raw), full, base in zip(rows, cxxfilt(raws), cxxfilt(raws, "-p"), strict=True):
        groups.setdefault(base, set()).add((full, addr))
    return groups


def test_listing_an_operator_lists_exactly_its_overloads(operators_bin: str) -> None:
    """`utrace list BIN 'demo::Shape::operator<'` lists the functions whose name without parameters
    (`c++filt -p`) is that, no more (`operator<<`, `operator<=`, `operator<=>`) and no less; the same for
    every operator of the fixture (`operator()`, `operator[]`, `operator unsigned long`...)."""
    need(shutil.which("c++filt") is not None, "c++filt missing (binutils)")
    groups = nm_by_base(operators_bin)
    ops = {b: g for b, g in groups.items() if b.startswith(("demo::Shape::operator", "demo::operator"))}
    assert len(ops["demo::Shape::operator<"]) == 2, ops.keys()
    assert len(ops) >= 15, ops.keys()
    for base, want in sorted(ops.items()):
        p = run_utrace("list", operators_bin, base, "--functions", "--json", check=True)
        got = {(str(o["name"]), int(o["address"])) for o in map(json.loads, p.stdout.splitlines())}
        assert got == want, base


@pytest.mark.usefixtures("root_bpf")
def test_tracing_operators_by_name(operators_bin: str) -> None:
    """Every overload of `operator<` and `operator()` is traced, a member's `this` is the object the
    program printed, arguments are where the program says, and the free `operator<` has no `this`."""
    n = 3
    p = run_utrace(
        "native",
        operators_bin,
        "demo::Shape::operator<",
        "demo::Shape::operator()",
        "demo::Shape::operator unsigned long",
        "demo::operator<",
        "--json",
        "--",
        operators_bin,
        str(n),
        timeout=180,
    )
    assert p.returncode == 0, p.stderr
    evs = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    assert evs and evs[-1]["kind"] == "summary"
    evs = evs[:-1]
    iters = [m for m in (re.match(r"iter (\d+) shape=(0x[0-9a-f]+) ", x) for x in p.stdout.splitlines()) if m]
    assert [int(m[1]) for m in iters] == list(range(1, n + 1))
    shapes = [int(m[2], 16) for m in iters]

    def calls(probe: str) -> list[dict[str, int]]:
        return [e["args"] for e in evs if e["probe"] == probe]

    less_int = calls("demo::Shape::operator<(int) const")
    assert [a["this"] for a in less_int] == shapes
    assert [a["arg0"] for a in less_int] == list(range(1, n + 1))
    assert [a["this"] for a in calls("demo::Shape::operator<(demo::Shape const&) const")] == shapes
    call = calls("demo::Shape::operator()(int) const")
    assert [(a["this"], a["arg0"]) for a in call] == list(zip(shapes, range(1, n + 1), strict=True))
    assert [a["this"] for a in calls("demo::Shape::operator unsigned long() const")] == shapes
    free = calls("demo::operator<(demo::Shape const&, long)")
    assert len(free) == n and all("this" not in a for a in free)
    assert [a["arg1"] for a in free] == list(range(1, n + 1))
    # `demo::operator<` is not `demo::operator< <int>`: a template instance has its own name
    assert not [e for e in evs if "Box" in str(e["probe"])]
