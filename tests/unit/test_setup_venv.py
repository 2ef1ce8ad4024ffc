"""scripts/lib/venv-bcc.sh, the step of scripts/setup.sh that makes Debian's bcc importable from the venv, run on
a throwaway venv. No root needed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import hypothesis
import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = """
import sys
import bcc
from hypothesis.internal.constants_ast import is_local_module_file
print(bcc.__file__)
print(is_local_module_file(bcc.__file__))
"""


def test_bcc_is_an_installed_package_not_local_code(tmp_path: Path) -> None:
    """Hypothesis parses the source of every module it takes for the project's own code, looking for
    constants; bcc/__init__.py has an invalid escape (b'^.*\\.cold...'), so taking bcc for local code printed
    `DeprecationWarning: invalid escape sequence` in whichever test first ran after bcc was imported
    (test_fuzz_go.py in `make test`). Linked into site-packages, bcc is what it is: installed code."""
    if not os.path.isdir("/usr/lib/python3/dist-packages/bcc"):
        pytest.skip("python3-bpfcc is not installed")
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    for _ in range(2):  # idempotent
        subprocess.run([str(REPO / "scripts" / "lib" / "venv-bcc.sh"), str(venv)], check=True, timeout=60)
    # The project venv's hypothesis (and its dependencies) for this check only, without the project venv's own
    # bcc link: everything in its site-packages but bcc, linked into a folder of its own.
    site = Path(hypothesis.__file__).parents[1]
    borrowed = tmp_path / "borrowed"
    borrowed.mkdir()
    for entry in site.iterdir():
        if not entry.name.startswith("bcc"):
            (borrowed / entry.name).symlink_to(entry)
    env = dict(os.environ, PYTHONPATH=str(borrowed))
    p = subprocess.run([str(venv / "bin" / "python"), "-W", "error", "-c", CHECK], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr
    where, local = p.stdout.splitlines()
    assert where.startswith(str(venv)) and "/site-packages/bcc/" in where, where
    assert local == "False"
