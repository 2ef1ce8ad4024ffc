"""`utrace list` against oracles nobody here wrote: nm, nm -C and readelf -n."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import need, run_utrace

LIBJVM = [
    Path("/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so"),
    Path("/usr/lib/jvm/temurin-25-jdk-amd64/lib/server/libjvm.so"),
]


def nm_functions(path: str, demangle: bool = False) -> set[tuple[str, int]]:
    args = ["nm", "--defined-only"] + (["-C"] if demangle else []) + [path]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "TtWiu" and parts[1] != "":
            found.add((parts[2], int(parts[0], 16)))
    return found


def utrace_json(*args: str) -> list[dict[str, object]]:
    p = run_utrace("list", *args, "--json", check=True)
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def test_node_uv_functions_equal_nm(node_bin: str) -> None:
    want = {(n, a) for n, a in nm_functions(node_bin) if n.startswith("uv_") and not re.search(r"\.cold", n)}
    got = {(o["symbol"], o["address"]) for o in utrace_json(node_bin, "uv_*", "--functions")}
    assert len(want) > 100
    assert got == want


def readelf_notes(path: Path) -> set[tuple[str, str, int, int, str]]:
    out = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True, check=True).stdout
    notes = set()
    for m in re.finditer(
        r"Provider: (\S+)\s+Name: (\S+)\s+Location: (0x[0-9a-f]+), Base: 0x[0-9a-f]+, Semaphore: (0x[0-9a-f]+)"
        r"\s+Arguments:([^\n]*)",
        out,
    ):
        notes.add((m[1], m[2], int(m[3], 16), int(m[4], 16), m[5].strip()))
    return notes


@pytest.mark.parametrize("libjvm", LIBJVM, ids=["openjdk17", "temurin25"])
def test_libjvm_usdt_equal_readelf(libjvm: Path) -> None:
    if not libjvm.exists():
        if "temurin" in str(libjvm):
            pytest.skip("Temurin 25 is not in this machine image and no registry here offers it")
        need(False, f"{libjvm} missing (default-jdk-headless)")
    want = readelf_notes(libjvm)
    got = {
        (o["provider"], o["name"], o["address"], o["semaphore"] or 0, " ".join(o["arguments"]))  # type: ignore[arg-type]
        for o in utrace_json(str(libjvm), "--usdt")
    }
    assert len(want) > 500
    assert got == want


def test_sdt_fixture_probes_and_semaphore(fixtures_built: Path) -> None:
    exe = fixtures_built / "c" / "sdt_demo"
    want = readelf_notes(exe)
    got = {
        (o["provider"], o["name"], o["address"], o["semaphore"] or 0, " ".join(o["arguments"]))  # type: ignore[arg-type]
        for o in utrace_json(str(exe), "utrace_demo:*")
    }
    assert got == want
    assert any(n[1] == "gated" and n[3] != 0 for n in got), "the gated probe has a semaphore"


def test_cpp_overloads_and_templates_equal_nm_demangled(fixtures_built: Path) -> None:
    exe = str(fixtures_built / "cpp" / "overloads")
    want = {(n, a) for n, a in nm_functions(exe, demangle=True) if "demo::" in n}
    got = {(o["name"], o["address"]) for o in utrace_json(exe, "--functions") if "demo::" in str(o["name"])}
    assert {n for n, _ in want if "area" in n} >= {
        "demo::Shape::area() const",
        "demo::Shape::area(int) const",
        "demo::Shape::area(double) const",
    }
    assert got == want
    # a name without parameters finds the whole overload set
    overloads = utrace_json(exe, "demo::Shape::area")
    assert len(overloads) == 3


def test_list_by_pid_covers_every_module(fixtures_built: Path) -> None:
    exe = fixtures_built / "c" / "sdt_demo"
    proc = subprocess.Popen([str(exe), "--wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("ready")
        rows = utrace_json("--pid", str(proc.pid), "demo_add")
        assert [r["module"] for r in rows] == [str(exe)]
        libc = utrace_json("--pid", str(proc.pid), "malloc", "--functions")
        assert any("libc.so" in str(r["module"]) for r in libc)
    finally:
        proc.kill()
        proc.wait()


def test_warm_cache_is_used(tmp_path: Path, fixtures_built: Path) -> None:
    env_cache = tmp_path / "cache"
    exe = str(fixtures_built / "cpp" / "overloads")
    env = {**os.environ, "XDG_CACHE_HOME": str(env_cache)}
    cmd = [sys.executable, "-m", "utrace", "list", exe, "--json"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    files = list((env_cache / "utrace").glob("symbols-*"))
    assert len(files) == 1
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    assert first == second


def test_stripped_copy_is_listed_as_itself_from_a_shared_cache(tmp_path: Path, fixtures_built: Path) -> None:
    """strip keeps the GNU build-id: after listing sdt_demo, its stripped copy must still be listed as what
    readelf finds in it (its .dynsym only), not served sdt_demo's cached table, and the other way round."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    full, stripped = str(fixtures_built / "c" / "sdt_demo"), str(fixtures_built / "c" / "sdt_demo-stripped")

    def listed(path: str) -> set[tuple[str, int]]:
        out = subprocess.run(
            [sys.executable, "-m", "utrace", "list", path, "--functions", "--json"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        return {(r["name"], r["address"]) for r in map(json.loads, out.splitlines())}

    for path in (full, stripped, full, stripped):
        assert listed(path) == {(name, address) for name, address, _size in readelf_functions(path)}, path
    assert listed(full) != listed(stripped)


def _wait_for(pattern: str, where: Path, timeout: float = 30.0) -> list[Path]:
    """Cache files of a big listing are written by a detached process: wait for them to appear."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = list(where.glob(pattern))
        done = [f for f in files if f.suffix in (".txt", ".marshal")]  # others are half-written temporaries
        if done and len(done) == len(files):
            return done
        time.sleep(0.1)
    raise AssertionError(f"no {pattern} in {where} after {timeout} s")


def test_big_listing_cold_and_warm_agree_with_nm(tmp_path: Path, node_bin: str) -> None:
    """node's complete listing: the cold read (forked reader, cache written behind) and the warm one
    (served from the rendered cache) print the same lines, whose names and addresses are nm -C's."""
    cache = tmp_path / "cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    cmd = [sys.executable, "-m", "utrace", "list", node_bin, "--functions"]
    cold = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    _wait_for("plain-*", cache / "utrace")
    _wait_for("symbols-*", cache / "utrace")
    warm = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    assert warm == cold
    lines = cold.splitlines()
    assert lines[0] == f"# {node_bin}: {len(lines) - 1} functions"
    got = set()
    for line in lines[1:]:
        address, size, name = line.split(None, 2)
        got.add((name, int(address, 16), int(size)))
    want = readelf_functions(node_bin)
    assert len(got) > 50000
    # the same functions (addresses and sizes); names as readelf demangles them (binutils' demangler,
    # which agrees with libstdc++'s on all but a handful of names)
    assert {(a, n) for _name, a, n in got} == {(a, n) for _name, a, n in want}
    assert len(got & want) > 0.999 * len(got)
    # and a filtered listing from the same cache agrees with the complete one
    uv = subprocess.run([*cmd, "uv_tcp_*"], capture_output=True, text=True, env=env, check=True).stdout
    assert set(uv.splitlines()[1:]) == {line for line in lines[1:] if line.split(None, 2)[2].startswith("uv_tcp_")}


def readelf_functions(path: str) -> set[tuple[str, int, int]]:
    """(demangled name, address, size) of every defined FUNC/IFUNC symbol but `.cold` parts, both tables."""
    out = subprocess.run(["readelf", "-W", "--syms", "--demangle", path], capture_output=True, text=True).stdout
    found = set()
    for line in out.splitlines():
        parts = line.split(None, 7)
        if len(parts) == 8 and parts[3] in ("FUNC", "IFUNC") and parts[6] not in ("UND", "ABS"):
            value = int(parts[1], 16)
            name = re.sub(r"@.*$", "", parts[7]) if "(" not in parts[7] else parts[7]
            if value and ".cold" not in name:
                found.add((name, value, int(parts[2], 0)))
    return found
