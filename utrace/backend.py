"""The only module that imports bcc: compile, load, attach, poll, detach.

bcc compiles the generated C and loads each function. Attaching does not go through bcc: utrace calls
`perf_event_open` on the kernel's uprobe PMU itself, because
  * bcc 0.26's Python prototype of `bpf_attach_uprobe` drops `ref_ctr_offset` (bcc#5236), which
    USDT semaphores need;
  * a PMU-created uprobe lives exactly as long as its file descriptor: nothing is written to
    `uprobe_events`, and the kernel removes the probe even if utrace is killed with SIGKILL.
"""

from __future__ import annotations

import ctypes
import errno
import io
import os
import platform
import struct
import sys
from collections.abc import Callable
from contextlib import redirect_stderr
from typing import Any

from utrace import kernel
from utrace.errors import EnvironmentProblem, TracingError
from utrace.model import ProbeKind
from utrace.probes.codegen import BpfProgram


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
            b = bcc.BPF(text=_TEST_PROGRAM.encode())
            b.load_func(b"utrace_probe", bcc.BPF.KPROBE)
            b.cleanup()
    except Exception as e:
        first = (str(e) or type(e).__name__).splitlines()[0]
        return False, f"{first}"
    return True, "compiled with clang and loaded into the kernel"


# --- perf_event_open on the uprobe PMU -------------------------------------------------------------

_NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}
PERF_FLAG_FD_CLOEXEC = 8
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
_ATTR_SIZE = 112

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]


def _retprobe_bit() -> int:
    try:
        with open(os.path.join(kernel.UPROBE_PMU, "format", "retprobe")) as f:
            text = f.read().strip()
        return 1 << int(text.split(":")[1])
    except (OSError, ValueError, IndexError):
        return 1


def open_uprobe(pmu_type: int, path: str, offset: int, *, retprobe: bool, pid: int, ref_ctr_offset: int = 0) -> int:
    """Create a uprobe perf event and return its fd.

    Args:
        pmu_type: the uprobe PMU's perf type.
        path: the ELF file (any path the kernel can resolve, /proc/PID/root/... included).
        offset: file offset of the instruction.
        retprobe: a return probe instead of an entry probe.
        pid: only this process (-1: every process that maps the file).
        ref_ctr_offset: file offset of a USDT semaphore the kernel should count up while attached.

    Raises:
        TracingError: the kernel refused (the message carries errno's meaning).
    """
    fd, err = _perf_event_open_uprobe(pmu_type, path, offset, retprobe=retprobe, pid=pid, ref_ctr_offset=ref_ctr_offset)
    if fd < 0:
        raise TracingError(f"cannot attach a uprobe to {path} at offset {offset:#x}: {os.strerror(err)}")
    return fd


def _perf_event_open_uprobe(
    pmu_type: int, path: str, offset: int, *, retprobe: bool, pid: int, ref_ctr_offset: int = 0
) -> tuple[int, int]:
    """(fd, 0) or (-1, errno): perf_event_open on the uprobe PMU (see open_uprobe)."""
    nr = _NR_PERF_EVENT_OPEN.get(platform.machine())
    if nr is None:
        raise EnvironmentProblem(f"unsupported architecture {platform.machine()}")
    path_buf = ctypes.create_string_buffer(os.fsencode(path))
    config = (_retprobe_bit() if retprobe else 0) | (ref_ctr_offset << 32)
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQ", attr, 0, pmu_type, _ATTR_SIZE, config, 1)  # sample_period = 1
    struct.pack_into("<I", attr, 48, 1)  # wakeup_events
    struct.pack_into("<QQ", attr, 56, ctypes.addressof(path_buf), offset)  # config1, config2
    cpu = -1 if pid >= 0 else 0
    fd = _libc.syscall(nr, attr, ctypes.c_int(pid), ctypes.c_int(cpu), ctypes.c_int(-1),
                       ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))  # fmt: skip
    if fd < 0:
        return -1, ctypes.get_errno()
    return int(fd), 0


def uprobes_permitted() -> bool | None:
    """Whether the kernel lets this process create uprobes: True, False (EACCES/EPERM), None (not tried).

    One uprobe is created on a private scratch file that no process maps, for this process only, and
    removed at once: the kernel checks the caller's capabilities when the event is created, before it
    looks at the file's contents. Needed because the rule changed: Linux 5.8 accepted CAP_PERFMON for
    uprobes, Linux 6.16 (commit ba677dbe77af, "perf: Revert to requiring CAP_SYS_ADMIN for uprobes",
    also in stable kernels) requires CAP_SYS_ADMIN again.
    """
    import tempfile

    pmu = kernel.uprobe_pmu_type()
    if pmu is None:
        return None
    try:
        with tempfile.NamedTemporaryFile(prefix="utrace-uprobe-check-") as f:
            f.write(b"\x90" * 16)  # nops: a valid instruction at the probed offset
            f.flush()
            fd, err = _perf_event_open_uprobe(pmu, f.name, 0, retprobe=False, pid=os.getpid())
    except OSError:
        return None
    if fd >= 0:
        os.close(fd)
        return True
    return False if err in (errno.EACCES, errno.EPERM) else None


def privileges_problem() -> str | None:
    """Why this process cannot trace (one line for the user), or None when it can.

    Loading the programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN, which implies both);
    creating uprobes needs CAP_SYS_ADMIN on current kernels (see uprobes_permitted).
    """
    caps = kernel.effective_capabilities()
    if caps & (1 << kernel.CAP_SYS_ADMIN):
        return None
    if not kernel.can_trace_capabilities(caps):
        return "tracing needs root (CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON on kernels before 6.16); try sudo"
    if uprobes_permitted() is False:
        return (
            "this kernel lets only CAP_SYS_ADMIN create uprobes (CAP_BPF and CAP_PERFMON are not enough "
            "since Linux 6.16); run as root or add CAP_SYS_ADMIN"
        )
    return None


def _attach_prog(perf_fd: int, prog_fd: int) -> None:
    if _libc.ioctl(perf_fd, PERF_EVENT_IOC_SET_BPF, prog_fd) != 0:
        err = ctypes.get_errno()
        os.close(perf_fd)
        raise TracingError(f"cannot attach the BPF program: {os.strerror(err)}")
    if _libc.ioctl(perf_fd, PERF_EVENT_IOC_ENABLE, 0) != 0:
        err = ctypes.get_errno()
        os.close(perf_fd)
        raise TracingError(f"cannot enable the uprobe: {os.strerror(err)}")


class Tracer:
    """A loaded program and its attached probes. Use as a context manager: exit always detaches."""

    def __init__(self, program: BpfProgram) -> None:
        self.program = program
        self._bpf: Any = None
        self._fds: list[int] = []
        self.attached = 0

    def load(self) -> None:
        """Compile and load. Raises EnvironmentProblem/TracingError with the compiler's first error."""
        headers = kernel.prepare_bcc_headers()
        if not headers.path:
            raise EnvironmentProblem(f"no kernel headers for bcc to compile with ({headers.how}); run `utrace doctor`")
        kernel.ensure_tracefs()
        try:
            bcc = _import_bcc()
        except Exception as e:
            raise EnvironmentProblem(
                f"bcc is not importable ({e}); install python3-bpfcc (see `utrace doctor`)"
            ) from None
        err = io.StringIO()
        try:
            with redirect_stderr(err):
                # bytes: bcc takes str too, with a DeprecationWarning that carries the whole source
                self._bpf = bcc.BPF(text=self.program.source.encode())
                self._progs = [self._bpf.load_func(fn.encode(), bcc.BPF.KPROBE) for fn in self.program.functions]
        except Exception as e:
            detail = _first_error(err.getvalue()) or str(e).splitlines()[0]
            if "headers" in detail or "kconfig.h" in detail:
                raise EnvironmentProblem(f"bcc cannot compile: {detail} (run `utrace doctor`)") from None
            raise TracingError(f"the BPF program did not compile or load: {detail}") from None

    def attach(self, pid: int | None) -> None:
        pmu = kernel.uprobe_pmu_type()
        if pmu is None:
            raise EnvironmentProblem("the kernel has no uprobe PMU (needs CONFIG_UPROBE_EVENTS, Linux >= 4.17)")
        gated = [s.name for s in self.program.specs if s.ref_ctr_offset]
        if gated and not kernel.uprobe_ref_ctr_supported():
            # Without kernel reference counting the probe would attach and never fire (the program
            # skips a probe whose semaphore is zero); say so instead of tracing nothing.
            raise EnvironmentProblem(
                f"{gated[0]} is semaphore-gated and this kernel cannot count USDT semaphores "
                "(uprobe ref_ctr_offset needs Linux >= 4.20)"
            )
        for spec, prog in zip(self.program.specs, self._progs, strict=True):
            fd = open_uprobe(
                pmu,
                spec.module,
                spec.offset,
                retprobe=spec.kind is ProbeKind.RETURN,
                pid=-1 if pid is None else pid,
                ref_ctr_offset=spec.ref_ctr_offset,
            )
            self._fds.append(fd)
            _attach_prog(fd, prog.fd)
            self.attached += 1

    def open_ring(self, callback: Callable[[bytes], None]) -> None:
        string_at = ctypes.string_at

        def _cb(_ctx: Any, data: Any, size: int) -> int:
            callback(string_at(data, size))
            return 0

        self._ring_cb = _cb
        self._bpf["events"].open_ring_buffer(_cb)

    def poll(self, timeout_ms: int) -> None:
        """Wait up to `timeout_ms` for a wakeup, then read everything there: events are submitted
        without waking the reader for each one (see codegen's prelude), so a timeout is the usual way
        in and a wakeup the exception."""
        self._bpf.ring_buffer_poll(timeout_ms)
        self._bpf.ring_buffer_consume()

    def drain(self) -> None:
        self._bpf.ring_buffer_consume()

    def lost(self) -> int:
        if self._bpf is None:
            return 0
        table = self._bpf["lost"]
        try:
            return int(sum(int(v) for v in table[table.Key(0)]))
        except Exception:
            return 0

    def aggregates(self, name: str) -> dict[tuple[int, int, int], int]:
        """The per-CPU hash `name` ({probe, pid, slot} -> count) summed over CPUs; {} if absent."""
        if self._bpf is None:
            return {}
        try:
            table = self._bpf[name]
        except KeyError:
            return {}
        out: dict[tuple[int, int, int], int] = {}
        for key, values in table.items():
            out[(int(key.probe), int(key.pid), int(key.slot))] = int(sum(int(v) for v in values))
        return out

    def detach(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        if self._bpf is not None:
            bpf, self._bpf = self._bpf, None
            with redirect_stderr(io.StringIO()):
                try:
                    bpf.cleanup()
                except Exception:
                    pass

    def __enter__(self) -> Tracer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return ""
