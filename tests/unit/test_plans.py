"""The plan cache (`utrace.store.plans`): what it reads back, and what it refuses to build."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from utrace.model import ArgKind, ArgSpec, ProbeKind, ProbeSpec, Reg
from utrace.store import plans
from utrace.store.cache import seal

ALLOWED = frozenset({("utrace.model", n) for n in ("ArgKind", "ArgSpec", "ProbeKind", "ProbeSpec", "Reg")})
SPEC = ProbeSpec(
    name="main.Greet",
    module="/bin/x",
    offset=0x1234,
    kind=ProbeKind.ENTRY,
    args=(ArgSpec("n", ArgKind.S64, Reg("rbx")),),
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr("utrace.store.cache._trusted_dirs", {})
    return tmp_path / "utrace"


def _put(key: tuple[object, ...], value: object, key_text: str | None = None) -> Path:
    """Write an entry as `plans.save` does (without its forked writer)."""
    text = plans._key_text("t", key)
    file = plans._file(text)
    assert file is not None
    Path(file).write_bytes(seal(pickle.dumps((key_text or text, value))))
    return Path(file)


def test_an_entry_comes_back_equal_and_only_under_its_key(cache: Path) -> None:
    _put(("a", 1), ([SPEC], ["a note"]))
    assert plans.load("t", ("a", 1), ALLOWED) == ([SPEC], ["a note"])
    assert plans.load("t", ("a", 2), ALLOWED) is None
    assert plans.load("u", ("a", 1), ALLOWED) is None


def test_an_entry_whose_saved_key_differs_is_not_used(cache: Path) -> None:
    """A file found under this key's name but made for another key (a digest collision, a copy)."""
    _put(("a", 1), [SPEC], key_text="something else")
    assert plans.load("t", ("a", 1), ALLOWED) is None


def test_classes_outside_the_plan_are_not_built(cache: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    _put(("a", 1), [_Call(os.system, (f"touch {marker}",))])
    assert plans.load("t", ("a", 1), ALLOWED) is None
    assert not marker.exists()
    # getattr, how enum members are pickled, looks up enum members only
    _put(("b", 1), _Call(getattr, (ProbeSpec, "__init__")))
    assert plans.load("t", ("b", 1), ALLOWED) is None
    _put(("c", 1), [ProbeKind.EXIT])
    assert plans.load("t", ("c", 1), ALLOWED) == [ProbeKind.EXIT]


class _Call:
    """Pickled as a call of `fn` with `args` (what a hostile pickle does)."""

    def __init__(self, fn: object, args: tuple[object, ...]) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[object, ...]:
        return (self.fn, self.args)


def test_an_entry_others_may_write_is_not_read(cache: Path) -> None:
    file = _put(("a", 1), [SPEC])
    file.chmod(0o666)
    assert plans.load("t", ("a", 1), ALLOWED) is None
    file.chmod(0o600)
    assert plans.load("t", ("a", 1), ALLOWED) == [SPEC]


def test_the_code_stamp_changes_with_any_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A planner changed since an entry was written never reads it: the stamp covers every .py file."""
    import utrace

    pkg = tmp_path / "utrace"
    (pkg / "runtimes" / "go").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    mod = pkg / "runtimes" / "go" / "plan.py"
    mod.write_text("x = 1\n")
    monkeypatch.setattr(utrace, "__file__", str(pkg / "__init__.py"))
    monkeypatch.setattr(plans, "_stamp", [])
    before = plans.code_stamp()
    assert plans.code_stamp() == before
    st = mod.stat()
    os.utime(mod, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    monkeypatch.setattr(plans, "_stamp", [])
    touched = plans.code_stamp()
    assert touched != before
    mod.write_text("x = 12\n")  # another size
    os.utime(mod, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    monkeypatch.setattr(plans, "_stamp", [])
    assert plans.code_stamp() not in (before, touched)


def test_a_go_plan_is_keyed_by_every_word_of_the_request_but_the_target_choice() -> None:
    """A field another change adds to TraceRequest is in the key without being named there."""
    from dataclasses import replace

    from utrace.elf.index import cache_key
    from utrace.model import Module, Target
    from utrace.runtimes.base import TraceRequest
    from utrace.runtimes.go.plancache import _key

    exe = Path(__file__).resolve().parents[2] / "fixtures" / "build" / "go" / "greet"
    if not exe.exists():
        pytest.skip("fixtures not built")
    target = Target(exe=str(exe), modules=(Module(path=str(exe), display=str(exe), base=0),))
    base = TraceRequest(runtime="go", binary=str(exe), probes=("main.Greet",))
    key = _key(base, target)
    assert key is not None and cache_key(str(exe)) in key
    assert _key(replace(base, pid=1, command=("x",), binary=None), target) == key
    changed = {"runtime": "native", "probes": ("main.F",), "ret": True, "max_len": 64, "extra": (("x", True),)}
    for name, value in changed.items():
        assert _key(replace(base, **{name: value}), target) != key, name
