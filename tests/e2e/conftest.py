"""End-to-end fixtures: root, BPF and real processes. Under CI=true a missing prerequisite fails."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "fixtures" / "build"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip with a reason, or fail in CI: a green CI run must mean the tracing really happened."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def root_bpf() -> None:
    need(os.geteuid() == 0, "end-to-end tracing needs root")
    need(os.path.exists("/sys/bus/event_source/devices/uprobe/type"), "kernel has no uprobe PMU")
    try:
        import bcc  # noqa: F401
    except Exception as e:  # pragma: no cover - environment
        need(False, f"bcc not importable: {e}")


@pytest.fixture(scope="session")
def fixtures_built() -> Path:
    if not (BUILD / "c" / "sdt_demo").exists():
        subprocess.run([str(ROOT / "scripts" / "build-fixtures.sh"), str(BUILD)], check=True)
    need((BUILD / "c" / "sdt_demo").exists(), "fixtures not built (scripts/build-fixtures.sh)")
    return BUILD


@pytest.fixture(scope="session")
def node_bin() -> str:
    node = shutil.which("node")
    need(node is not None, "node is not installed")
    assert node is not None
    return os.path.realpath(node)


def utrace_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "utrace", *args]


def run_utrace(*args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(utrace_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and p.returncode != 0:
        raise AssertionError(f"utrace {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p


class Background:
    """A utrace run in the background, with helpers to wait until its probes are armed."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            utrace_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
        self.err_lines: list[str] = []

    def wait_attached(self, timeout: float = 60) -> None:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"utrace exited early: {''.join(self.err_lines)}")
            self.err_lines.append(line)
            if "attached" in line:
                return
        raise AssertionError("utrace did not attach in time")

    def finish(self, timeout: float = 60) -> tuple[str, str, int]:
        out, err = self.proc.communicate(timeout=timeout)
        return out, "".join(self.err_lines) + err, self.proc.returncode

    def interrupt(self, settle: float = 0.0, timeout: float = 60) -> tuple[str, str, int]:
        """Ctrl-C after `settle` seconds (for the last events to be read), then what `finish` gives."""
        time.sleep(settle)
        self.proc.send_signal(signal.SIGINT)
        return self.finish(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.kill()


@pytest.fixture
def background() -> Iterator[list[Background]]:
    started: list[Background] = []
    yield started
    for b in started:
        if b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait()


def read_text_byte(pid: int, address: int) -> int:
    """The byte at `address` in a live process: 0xCC while a uprobe breakpoint is installed there."""
    with open(f"/proc/{pid}/mem", "rb") as f:
        f.seek(address)
        return f.read(1)[0]


def load_base(pid: int, path: str) -> int:
    """Where `path` (a PIE or library) is mapped in `pid`: first mapping start minus its file offset."""
    real = os.path.realpath(path)
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and os.path.realpath(parts[5].strip()) == real:
            return int(parts[0].split("-")[0], 16) - int(parts[2], 16)
    raise AssertionError(f"{path} not mapped in {pid}")


def uprobe_events() -> str:
    p = Path("/sys/kernel/tracing/uprobe_events")
    return p.read_text() if p.exists() else ""
