"""The compiled program is cached: a second run with the same program loads it without bcc.

Oracle: `hot`'s own printout (calls and sum) and Python's import log (`-X importtime`), which says
whether bcc was imported at all.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, utrace_cmd

pytestmark = pytest.mark.usefixtures("root_bpf")


def _count(hot: str, n: int, cache: Path) -> tuple[int, int, bool]:
    """(calls utrace counted, calls the program said it made, whether bcc was imported)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPROFILEIMPORTTIME": "1"}
    p = subprocess.run(utrace_cmd("native", hot, "hot", "--count", "--json", "--", hot, str(n)),
                       capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    said = int(next(line for line in lines if line.startswith("calls ")).split()[1])
    counts = [json.loads(line) for line in lines if line.startswith('{"kind": "count"')]
    imported = {line.rsplit("|", 1)[1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    return sum(c["count"] for c in counts), said, "bcc" in imported


def test_second_run_loads_the_cached_program_without_bcc(fixtures_built: Path, tmp_path: Path) -> None:
    hot = str(fixtures_built / "c" / "hot")
    cache = tmp_path / "cache"
    counted, said, with_bcc = _count(hot, 3000, cache)
    assert counted == said == 3000 and with_bcc
    files = list((cache / "utrace").glob("bpf-*"))
    assert len(files) == 1
    # another process (another pid in the program's filter), the same compiled program
    counted, said, with_bcc = _count(hot, 4000, cache)
    assert counted == said == 4000 and not with_bcc
    assert list((cache / "utrace").glob("bpf-*")) == files


def test_a_damaged_cached_program_is_compiled_again(fixtures_built: Path, tmp_path: Path) -> None:
    hot = str(fixtures_built / "c" / "hot")
    cache = tmp_path / "cache"
    _count(hot, 10, cache)
    (file,) = (cache / "utrace").glob("bpf-*")
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    counted, said, with_bcc = _count(hot, 2500, cache)
    assert counted == said == 2500 and with_bcc
    counted, said, with_bcc = _count(hot, 2600, cache)  # and the file was written anew
    assert counted == said == 2600 and not with_bcc


def test_a_cached_program_others_may_write_is_not_loaded(fixtures_built: Path, tmp_path: Path) -> None:
    hot = str(fixtures_built / "c" / "hot")
    cache = tmp_path / "cache"
    _count(hot, 10, cache)
    (file,) = (cache / "utrace").glob("bpf-*")
    file.chmod(0o666)  # anyone could have put their own instructions there
    counted, said, with_bcc = _count(hot, 1500, cache)
    assert counted == said == 1500 and with_bcc
