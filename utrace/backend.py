"""The only module that imports bcc: compile, load, attach, poll, detach."""

from __future__ import annotations

import io
import os
import sys
from contextlib import redirect_stderr
from typing import Any


def _import_bcc() -> Any:
    import bcc

    return bcc


def bcc_status() -> tuple[bool, str]:
    """Whether `import bcc` works here, and its version or the reason it does not."""
    try:
        bcc = _import_bcc()
    except Exception as e:  # ImportError, or an OSError when libbcc.so is missing
        return False, f"cannot import bcc ({type(e).__name__}: {e}) from {sys.executable}"
    version = getattr(bcc, "__version__", "unknown")
    return True, f"bcc {version} from {os.path.dirname(bcc.__file__)}"


_TEST_PROGRAM = r"""
#include <uapi/linux/ptrace.h>
BPF_RINGBUF_OUTPUT(events, 1);
int utrace_probe(struct pt_regs *ctx) { return 0; }
"""


def load_test() -> tuple[bool, str]:
    """Compile and load a minimal uprobe program: the definitive check that headers and BPF work."""
    try:
        bcc = _import_bcc()
        err = io.StringIO()
        with redirect_stderr(err):
            b = bcc.BPF(text=_TEST_PROGRAM)
            b.load_func("utrace_probe", bcc.BPF.KPROBE)
            b.cleanup()
    except Exception as e:
        first = (str(e) or type(e).__name__).splitlines()[0]
        return False, f"{first}"
    return True, "compiled with clang and loaded into the kernel"
