"""The runtime contract: a runtime is a class declaring its command as data (CommandSpec), registered
by name. A plugin installed elsewhere, found through the `utrace.runtimes` entry-point group exactly
as pip would install it (a .dist-info with entry_points.txt on sys.path), gets `utrace NAME` with its
help, aliases, options, completion and refusals, without a line of the CLI naming it. No root needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from utrace.runtimes import registry
from utrace.runtimes.base import CommandSpec, Runtime

REPO = Path(__file__).resolve().parents[2]

TINY = """
from typing import ClassVar

from utrace.errors import TargetError
from utrace.runtimes.base import Catalogue, CommandSpec, Completion, Operands, OptionSpec, Plan


class TinyRuntime:
    name: ClassVar[str] = "tiny"
    command: ClassVar[CommandSpec] = CommandSpec(
        summary="Trace tiny things. Second sentence.",
        examples=("utrace tiny --pid 1 thing", "utrace wee thing --flavour mint"),
        aliases=("wee", "native"),  # an alias never takes a built-in's name
        operands=Operands.PROBES,
        options=(OptionSpec(("--flavour",), "flavour", "The flavour of thing."),),
        probes=Completion.CATALOGUE,
        catalogue=Catalogue(names=("thing", "other"), more=("thing:small", "thing:big")),
        refused=(("ret", "--ret does not apply to tiny things"),),
    )

    def target(self, request):
        flavour = dict(request.extra).get("flavour")
        raise TargetError(f"no {flavour} thing for {', '.join(request.probes)}\\nsecond line")

    def plan(self, request, target):
        return Plan()


class NotARuntime:  # no command: skipped
    pass
"""

ENTRY_POINTS = """\
[utrace.runtimes]
tiny = tinyrt:TinyRuntime
plain = tinyrt:NotARuntime
broken = tinyrt_missing:Nothing
node = tinyrt:TinyRuntime
"""


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("plugin")
    (d / "tinyrt.py").write_text(textwrap.dedent(TINY))
    info = d / "tinyrt-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyrt\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return d


def utrace(plugin: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k != "UTRACE_DEBUG"}
    e["PYTHONPATH"] = f"{REPO}{os.pathsep}{plugin}"
    e.update(env)
    return subprocess.run(
        [sys.executable, "-m", "utrace", *args], cwd=REPO, env=e, capture_output=True, text=True, timeout=60
    )


def test_a_plugin_command_is_listed_in_the_help(plugin: Path) -> None:
    p = utrace(plugin, "--help")
    assert p.returncode == 0, p.stderr
    commands = p.stdout.split("Commands:")[1].split()
    listed = [w for w in commands if w.isalpha() and w.islower()]
    for name in ("tiny", "wee", "native", "node", "go", "java", "jvm", "list", "doctor", "completion"):
        assert name in listed, p.stdout
    assert "plain" not in listed and "broken" not in listed
    assert "  tiny        Trace tiny things." in p.stdout
    assert "  wee         Trace tiny things." in p.stdout
    assert "  native      Trace functions of any C, C++ or Rust program." in p.stdout  # not the plugin's alias
    assert "  node        Trace libuv and node C++ functions in Node.js." in p.stdout  # a plugin cannot replace it


def test_a_plugin_command_has_its_help_options_and_examples(plugin: Path) -> None:
    for name in ("tiny", "wee"):
        p = utrace(plugin, name, "--help")
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith(f"Usage: utrace {name} [OPTIONS] PROBES...\n")
        assert "\n    utrace tiny --pid 1 thing\n    utrace wee thing --flavour mint\n" in p.stdout
        for option in ("--flavour TEXT", "The flavour of thing.", "--pid", "--dump-bpf", "--max-len"):
            assert option in p.stdout


def test_a_plugin_trace_reaches_its_runtime_and_fails_with_one_line(plugin: Path) -> None:
    p = utrace(plugin, "tiny", "thing", "other", "--flavour", "mint", "--dump-bpf")
    assert p.returncode == 3  # TargetError
    assert p.stderr == "utrace: error: no mint thing for thing, other\\x0asecond line\n"
    p = utrace(plugin, "wee", "thing", "--ret")
    assert (p.returncode, p.stderr) == (2, "utrace: error: --ret does not apply to tiny things\n")
    p = utrace(plugin, "tiny")
    assert p.returncode == 2 and p.stderr == "utrace: error: Missing argument 'PROBES...'.\n"


def test_a_plugin_catalogue_completes(plugin: Path) -> None:
    def complete(line: str) -> list[str]:
        words = line.split(" ")
        p = utrace(plugin, _UTRACE_COMPLETE="bash_complete", COMP_WORDS=line, COMP_CWORD=str(len(words) - 1))
        assert p.returncode == 0 and p.stderr == "", p.stderr
        return p.stdout.splitlines()

    assert complete("utrace ti") == ["plain,tiny"]
    assert complete("utrace tiny ") == ["plain,other", "plain,thing"]
    assert complete("utrace wee thing:") == ["plain,thing:big", "plain,thing:small"]
    assert "plain,--flavour" in complete("utrace tiny --")


def test_builtin_runtimes_declare_their_commands_and_are_typed() -> None:
    assert registry.names()[:4] == ["native", "node", "java", "go"]
    for name in ("native", "node", "java", "go"):
        cls = registry.runtime_class(name)
        assert cls is not None and cls.name == name and isinstance(cls.command, CommandSpec)
        rt: Runtime = registry.get_runtime(name)
        assert type(rt) is cls
    assert registry.commands()["jvm"][0] == "java"
    for name, found in registry.commands().items():  # one lookup and the full table agree
        assert registry.command(name) == found
    assert registry.command("cobol") is None


def test_runtime_objects_keep_nothing_between_calls() -> None:
    """A runtime instance has no per-call state: planning the same request twice on one object is
    planning it on two; the Go runtime's object stays empty."""
    build = REPO / "fixtures" / "build" / "go"
    pie, plain = build / "greet-go1.21-pie", build / "greet"
    if not (pie.exists() and plain.exists()):
        pytest.skip("Go fixtures not built (scripts/build-fixtures.sh)")
    from utrace.runtimes.base import TraceRequest

    rt = registry.get_runtime("go")
    for exe in (pie, plain, pie):
        request = TraceRequest("go", binary=str(exe), probes=("main.Greet",))
        plan = rt.plan(request, rt.target(request))
        fresh = registry.get_runtime("go")
        again = fresh.plan(request, fresh.target(request))
        assert [s.context for s in plan.specs] == [s.context for s in again.specs]
        assert any(a.name == "pc" for s in plan.specs for a in s.context) == (exe == pie)
        assert vars(rt) == {}


def test_unknown_runtime_names_the_known_ones() -> None:
    from utrace.errors import UsageError

    with pytest.raises(UsageError, match=r"unknown runtime 'cobol' \(known: go, java, native, node"):
        registry.get_runtime("cobol")


def test_jvm_runtime_finds_its_libjvm_again_instead_of_keeping_it() -> None:
    """Where libjvm.so came from (a note when the command is no java launcher) is found again by plan()."""
    import shutil

    from utrace.errors import TargetError
    from utrace.runtimes.base import TraceRequest

    if shutil.which("java") is None:
        pytest.skip("no java on PATH")
    rt = registry.get_runtime("java")
    request = TraceRequest("java", command=("sh", "-c", "true"), probes=("class-load",))
    try:
        target = rt.target(request)
    except TargetError as e:
        pytest.skip(f"no JDK found: {e}")
    notes = rt.plan(request, target).notes
    said = [n for n in notes if n.endswith("; sh is not a java launcher")]
    assert len(said) == 1 and said[0].startswith(f"using {target.modules[0].display} from "), notes
    assert vars(rt) == {}
    launched = TraceRequest("java", command=("java", "-cp", "x", "Main"), probes=("class-load",))
    assert not any("not a java launcher" in n for n in rt.plan(launched, rt.target(launched)).notes)


def test_native_and_node_runtimes_keep_no_oracle_between_calls() -> None:
    """The C++ `this` oracle is made per plan and handed to `arguments`, not left on the object."""
    from utrace.runtimes.base import TraceRequest

    geo = REPO / "fixtures" / "build" / "cpp" / "geo"
    if not geo.exists():
        pytest.skip("C++ fixtures not built (scripts/build-fixtures.sh)")
    for name in ("native", "node"):
        rt = registry.get_runtime(name)
        request = TraceRequest(name, binary=str(geo), probes=("geo::*",))
        plan = rt.plan(request, registry.get_runtime("native").target(request))  # node's plan on a C++ file
        assert "geo::helper(int)" in {s.name for s in plan.specs}
        assert vars(rt) == {}
