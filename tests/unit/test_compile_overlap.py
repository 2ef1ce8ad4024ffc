"""bcc compiles while the headers it was pointed at are checked; the result counts only once they pass.

(tests/e2e/test_hostile_files.py plants untrusted trees whose headers stop the compile: that nothing of it
shows and one warning is said is checked there, with the real compiler.)"""

from __future__ import annotations

import os
import threading

import pytest

from utrace.bpf import backend, kernel
from utrace.errors import TracingError

HS = kernel.HeaderSource("/hdrs", "merged from linux-headers-x", exact=False)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BCC_KERNEL_SOURCE", "")  # restored after the test, whatever the test sets
    monkeypatch.delenv("BCC_KERNEL_SOURCE")


def _compiler(said: bytes, fail: bool = False, seen: list[str | None] | None = None):  # type: ignore[no-untyped-def]
    def compile_(source: str, functions: list[str]) -> object:
        if seen is not None:
            seen.append(os.environ.get("BCC_KERNEL_SOURCE"))
        os.write(2, said)  # as libbcc does: straight to the descriptor
        if fail:
            raise TracingError("the BPF program did not compile: x")
        return "compiled"

    return compile_


def test_the_check_runs_while_bcc_compiles(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    compiling = threading.Event()

    def check(path: str) -> str | None:
        assert compiling.wait(30), "the check waited for the compile to end"
        return None

    def compile_(source: str, functions: list[str]) -> object:
        compiling.set()
        os.write(2, b"a note from clang\n")
        return "compiled"

    monkeypatch.setattr(kernel, "untrusted_headers", check)
    monkeypatch.setattr(backend, "_compile", compile_)
    assert backend._compile_on_trust("int x;", [], HS, ["/hdrs"]) == "compiled"
    assert capfd.readouterr().err == "a note from clang\n"  # trusted: said as it would have been


def test_untrusted_headers_throw_the_result_away_silently(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    seen: list[str | None] = []
    monkeypatch.setattr(kernel, "untrusted_headers", lambda p: "owned by uid 65534")
    monkeypatch.setattr(backend, "_compile", _compiler(b"error: PLANTED\n", fail=True, seen=seen))
    assert backend._compile_on_trust("int x;", [], HS, ["/hdrs"]) is None
    assert seen == ["/hdrs"]
    assert "BCC_KERNEL_SOURCE" not in os.environ  # as before the guess
    assert capfd.readouterr().err == ""


def test_a_compile_error_with_trusted_headers_stands(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(kernel, "untrusted_headers", lambda p: None)
    monkeypatch.setattr(backend, "_compile", _compiler(b"error: real\n", fail=True))
    with pytest.raises(TracingError):
        backend._compile_on_trust("int x;", [], HS, ["/hdrs"])
    assert capfd.readouterr().err == "error: real\n"


def test_every_path_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The running kernel's build and source directories both: the second untrusted is enough to refuse."""
    monkeypatch.setattr(kernel, "untrusted_headers", lambda p: "writable" if p == "/b" else None)
    monkeypatch.setattr(backend, "_compile", _compiler(b""))
    exact = kernel.HeaderSource("/a", "running kernel", exact=True)
    assert backend._compile_on_trust("int x;", [], exact, ["/a", "/b"]) is None
    assert backend._compile_on_trust("int x;", [], exact, ["/a"]) == "compiled"
