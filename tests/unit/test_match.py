"""utrace.elf.match: the one "did you mean" for native, node, Go and JVM names."""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.elfgen import Sym, build_elf
from utrace.elf.go.gobin import open_binary
from utrace.elf.index import function_table
from utrace.elf.match import close_names, function_not_found, function_suggestions, go_not_found
from utrace.errors import NotFoundError
from utrace.runtimes.base import ModuleSymbols, Plan, TraceRequest
from utrace.runtimes.jvm import _all_names
from utrace.runtimes.node import NodeRuntime, _close_alias

ROOT = Path(__file__).resolve().parents[2]
GREET = ROOT / "fixtures" / "build" / "go" / "greet"


def _table(tmp_path: Path, names: list[str]):  # type: ignore[no-untyped-def]
    syms = [Sym(n, 0x10 * (i + 1)) for i, n in enumerate(names)]
    path = build_elf(symtab=syms, text_size=0x10 * (len(names) + 2)).write(tmp_path / "f")
    return function_table(str(path), use_cache=False)


def test_native_suggests_raw_and_demangled_base_names(tmp_path: Path) -> None:
    t = _table(tmp_path, ["demo_greet", "demo_add", "_ZN4demo5greetEPKci"])
    assert function_suggestions([t], "demo_gret")[0] == "demo_greet"
    assert "demo::greet" in function_suggestions([t], "demo::gret")
    assert function_suggestions([t], "zzzzzz") == []
    err = function_not_found([t], "demo_gret(int x)", "f")
    assert str(err).startswith("no function matches 'demo_gret(int x)' in f") and err.suggestions[0] == "demo_greet"


def test_libuv_rename_is_offered_by_its_words(tmp_path: Path) -> None:
    """libuv 1.44 renamed uv_tcp_listen uv__tcp_listen; a name that holds every word typed is offered
    even when difflib's ratio is far below its cutoff (10 of 33 letters here)."""
    t = _table(tmp_path, ["uv__tcp_listen", "uv_listen", "uv__stream_tcp_listen_internal", "uv_run"])
    assert function_suggestions([t], "uv_tcp_listen")[0] == "uv__tcp_listen"
    assert close_names("tcp_listen", ["uv__stream_tcp_listen_internal"]) == []
    assert "uv__stream_tcp_listen_internal" in function_suggestions([t], "tcp_listen")
    assert "uv_run" not in function_suggestions([t], "tcp_listen")


def test_node_puts_the_renamed_libuv_function_first(tmp_path: Path) -> None:
    t = _table(tmp_path, ["uv__tcp_listen", "uv_listen", "uv_run", "uv_tcp_listen_x"])
    modules = [ModuleSymbols(t.module, "node", t)]
    assert _close_alias("uv_tcp_listn") == "uv_tcp_listen" and _close_alias("read") == ""
    with pytest.raises(NotFoundError) as e:
        NodeRuntime().resolve_expr(modules, "uv_tcp_listn", TraceRequest("node"), Plan())
    assert str(e.value).startswith("no function matches 'uv_tcp_listn' in node")
    assert e.value.suggestions[0] == "uv__tcp_listen" and len(e.value.suggestions) <= 5


def _go_nm_names(path: Path) -> set[str]:
    """Function names of a Go program as `go tool nm` prints them (the Go toolchain, not our reader)."""
    tools = sorted(glob.glob(str(Path.home() / ".cache/utrace/toolchains/go-*/usr/lib/go-*/bin/go")))
    go = tools[-1] if tools else shutil.which("go")
    if go is None or not GREET.exists():
        pytest.skip("no Go toolchain or fixtures/build/go/greet (make setup)")
    out = subprocess.run([go, "tool", "nm", str(path)], capture_output=True, text=True, timeout=120, check=True)
    return {line.split()[-1].removesuffix(".abi0") for line in out.stdout.splitlines() if " T " in line}


def test_go_not_found_says_why_and_offers_close_names() -> None:
    names = _go_nm_names(GREET)
    assert "main.Greet" in names and not any(n.startswith("net/http.") for n in names)
    e = go_not_found(names, "main.Gret", "main.Gret", "greet")
    assert "package main is linked in, but this function is not" in str(e) and e.suggestions[0] == "main.Greet"
    e = go_not_found(names, "net/http.Get", "net/http.Get", "greet")
    assert "package net/http is not part of this program" in str(e)
    e = go_not_found(names, "Greet", "Greet", "greet")
    assert "(not in the pclntab, and not inlined anywhere)" in str(e)
    # the same method on another receiver: main.(*T).M for main.M
    assert "main.(*T).M" in go_not_found(names, "main.M", "main.M", "greet").suggestions


def test_fixed_vocabularies() -> None:
    assert close_names("class-lod", _all_names(), cutoff=0.6)[0] == "class-load"
    assert close_names("nothing-like-it", _all_names(), cutoff=0.6) == []


GENERIC = ROOT / "fixtures" / "build" / "go" / "generic-go1.22"


@pytest.mark.parametrize(
    ("pattern", "wanted"),
    [
        ("main.Scale", lambda n: n.startswith("main.Scale[")),  # a generic name: every instantiation
        ("main.Scale[go.shape.int]", lambda n: n == "main.Scale[go.shape.int]"),  # `[` is literal
        ("main.(*Stack).Push", lambda n: n.startswith("main.(*Stack[") and n.endswith("]).Push")),
        ("main.Look*", lambda n: n.startswith("main.Lookup[")),
    ],
)
def test_listing_a_go_program_matches_as_utrace_go_does(pattern: str, wanted) -> None:  # type: ignore[no-untyped-def]
    """`utrace list` on a Go program finds what `utrace go` traces for the same name (both through
    go_name_matcher); the oracle is `go tool nm`'s names of the fixture."""
    from utrace.app.list_probes import list_target
    from utrace.model import Module, Target

    oracle = {n for n in _go_nm_names(GENERIC) if wanted(n)}
    assert oracle
    target = Target(exe=str(GENERIC), modules=(Module(path=str(GENERIC), display=str(GENERIC)),))
    listing = list_target(target, pattern, usdt=False)
    (mf,) = listing.functions
    assert mf.table is not None
    assert {mf.table.names[i] for i in mf.indices} == oracle


def test_go_name_matcher() -> None:
    from utrace.elf.match import go_name_matcher

    assert go_name_matcher(None) is None and go_name_matcher("*") is None
    m = go_name_matcher("net/http.(*Client).Do")
    assert m is not None and m("net/http.(*Client).Do") and not m("net/http.(*Client).Dox")
    m = go_name_matcher("main.(*T).*")
    assert m is not None and m("main.(*T).M") and not m("main.T.M")
    m = go_name_matcher("main.Map")
    assert m is not None and m("main.Map[go.shape.map[string]int]") and not m("main.Mapper")


def test_go119_instantiations_are_listed_by_their_elf_names() -> None:
    """Go 1.18-1.19 pclntabs name every instantiation "F[...]": the one function table names them as the
    ELF symbols (and `go tool nm`) do, so `utrace list`, stacks and `utrace go` agree; a stripped file
    keeps the pclntab's "F[...]"."""
    generic = ROOT / "fixtures" / "build" / "go" / "generic"
    oracle = {n for n in _go_nm_names(generic) if n.startswith("main.")}
    assert any("[go.shape." in n for n in oracle)  # a Go 1.18-1.19 build whose ELF symbols spell them out
    table = function_table(str(generic), use_cache=False)
    assert table.go and any("[...]" in f.name for f in open_binary(str(generic)).pclntab().functions)
    assert {table.names[i] for i in table.entries() if table.names[i].startswith("main.")} == oracle
    stripped = function_table(str(generic) + "-stripped", use_cache=False)
    scale = sorted(stripped.names[i] for i in stripped.entries() if stripped.names[i].startswith("main.Scale"))
    assert scale == ["main.Scale[...]", "main.Scale[...]"]
