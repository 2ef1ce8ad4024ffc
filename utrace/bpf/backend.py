"""The only module that imports bcc: compile, load, attach, poll, detach.

bcc compiles the generated C; its instructions and map definitions are cached and loaded by
`utrace.bpf.bpfsys` (a warm start skips libbcc and clang). Attaching does not go through bcc either:
utrace calls `perf_event_open` on the kernel's uprobe PMU itself, because
  * bcc 0.26's Python prototype of `bpf_attach_uprobe` drops `ref_ctr_offset` (bcc#5236), which
    USDT semaphores need;
  * a PMU-created uprobe lives exactly as long as its file descriptor: nothing is written to
    `uprobe_events`, and the kernel removes the probe even if utrace is killed with SIGKILL.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import marshal
import os
import platform
import struct
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

from utrace.bpf import bpfsys, kernel
from utrace.errors import EnvironmentProblem, TracingError, UtraceError
from utrace.model import ProbeKind
from utrace.probes.codegen import AGG_KEY, TARGET_AWAITING_EXEC, TARGET_TRACED, BpfProgram
from utrace.process import procfs
from utrace.store.cache import read_sealed, seal, trusted_cache_dir, write_jobs


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
    try:
        with procfs.kernel_path(path) as kpath:  # inside a process's root, as it was read
            fd, err = _perf_event_open_uprobe(
                pmu_type, kpath, offset, retprobe=retprobe, pid=pid, ref_ctr_offset=ref_ctr_offset
            )
    except OSError as e:
        raise TracingError(f"cannot attach a uprobe to {path}: {e.strerror}") from None
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


_COMPILED_FORMAT = 2  # 2: keyed by the kernel's build and bcc's release too


def _compiled_cache_file(source: str) -> Path | None:
    """Where the compiled form of `source` is kept, in the trusted cache directory (None when there is
    none): named by everything that shapes it, the text, the kernel it was built against (release,
    machine, build: `toolchain_stamp`), bcc's release (and so its clang) and the format."""
    cache = trusted_cache_dir()
    if cache is None:
        return None
    uname = os.uname()
    key = f"{_COMPILED_FORMAT}\0{uname.release}\0{uname.machine}\0{toolchain_stamp()}\0{source}"
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
    return cache / f"bpf-v{_COMPILED_FORMAT}-{digest[:40]}.marshal"


def toolchain_stamp() -> str:
    """The kernel's build and bcc's release, read without importing bcc (a warm start never does).

    /proc/version names the release, the build number and time and the compiler: a kernel rebuilt
    (another configuration, other structure layouts in its headers) has another. bcc's Python package
    carries its release (`bcc/version.py`), shipped in step with libbcc and the clang inside it; the
    size and time of its `libbcc.py` change with any reinstall too.
    """
    parts = []
    try:
        with open("/proc/version", "rb") as f:
            parts.append(f.read(4096).decode("utf-8", "surrogateescape"))
    except OSError:
        parts.append("")
    try:
        import importlib.util

        spec = importlib.util.find_spec("bcc")
        origin = spec.origin if spec is not None else None
        if origin:
            home = os.path.dirname(origin)
            with open(os.path.join(home, "version.py"), "rb") as f:
                parts.append(f.read(4096).decode("utf-8", "surrogateescape"))
            st = os.stat(os.path.join(home, "libbcc.py"))
            parts.append(f"{st.st_size}-{st.st_mtime_ns}")
    except (OSError, ImportError, ValueError):
        parts.append("no bcc")
    return "\0".join(parts)


def _cached_compiled(source: str) -> bpfsys.Compiled | None:
    """The cached compiled form, if there is one that only this user (or root) could have written.

    A cached program is loaded into the kernel with this process's privileges, so a file (or a
    directory holding it) that someone else owns or may write is ignored and the program compiled
    anew (`cache.trusted_cache_dir`, `cache.read_sealed`).
    """
    file = _compiled_cache_file(source)
    if file is None:
        return None
    body = read_sealed(file)
    if body is None:
        return None
    try:
        return bpfsys.Compiled.from_plain(marshal.loads(body))
    except (ValueError, TypeError, KeyError, EOFError):
        return None


def compile_program(source: str, functions: list[str]) -> bpfsys.Compiled:
    """Compile with bcc (clang) and take its instructions and map definitions; bcc's maps are closed.

    The headers bcc will most likely use are checked (`kernel.untrusted_headers`, ~0.1 s) on another
    thread while bcc compiles with them; the result is used only once they are found trusted. When they
    are not, it is thrown away and everything happens as it did without the guess: the headers are
    chosen and checked first (with the same warnings), then bcc compiles.

    Raises:
        EnvironmentProblem: no kernel headers, bcc missing, or bcc's compiler says headers are wrong.
        TracingError: the program did not compile (the compiler's first error).
    """
    try:
        guess = kernel.header_guess()
        if guess is not None:
            compiled = _compile_on_trust(source, functions, *guess)
            if compiled is not None:
                return compiled
        headers = kernel.prepare_bcc_headers()
        if not headers.path:
            raise EnvironmentProblem(f"no kernel headers for bcc to compile with ({headers.how}); run `utrace doctor`")
        return _compile(source, functions)
    finally:
        kernel.release_private_headers()


def _compile_on_trust(
    source: str, functions: list[str], headers: kernel.HeaderSource, paths: list[str]
) -> bpfsys.Compiled | None:
    """`source` compiled with `headers` while `paths` are checked; None when they are not trusted.

    What the compiler writes to the standard error (libbcc writes there itself) is held back until the
    headers are found trusted, and dropped when they are not: utrace says only what it said before."""
    import tempfile
    import threading

    verdict: list[str | None] = []
    check = threading.Thread(
        target=lambda: verdict.append(next((w for p in paths if (w := kernel.untrusted_headers(p))), None)),
        daemon=True,
    )
    check.start()
    before = os.environ.get("BCC_KERNEL_SOURCE")
    if not headers.exact:
        os.environ["BCC_KERNEL_SOURCE"] = headers.path
    compiled: bpfsys.Compiled | None = None
    failure: UtraceError | None = None
    with tempfile.TemporaryFile() as said:
        stderr_fd = os.dup(2)
        try:
            os.dup2(said.fileno(), 2)
            compiled = _compile(source, functions)
        except UtraceError as e:
            failure = e
        finally:
            os.dup2(stderr_fd, 2)
            os.close(stderr_fd)
        check.join()
        if verdict == [None]:
            said.seek(0)
            _copy_to_stderr(said.read())
            if failure is not None:
                raise failure  # trusted headers: what the compiler said stands
            return compiled
    if before is None:  # as it was before the guess: the usual way then warns as it would have
        os.environ.pop("BCC_KERNEL_SOURCE", None)
    else:
        os.environ["BCC_KERNEL_SOURCE"] = before
    return None


def _copy_to_stderr(data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(2, view) :]
    except OSError:
        pass


def _compile(source: str, functions: list[str]) -> bpfsys.Compiled:
    """bcc's compile of `source` with the headers it has been pointed at (see `compile_program`)."""
    try:
        bcc = _import_bcc()
    except Exception as e:
        raise EnvironmentProblem(f"bcc is not importable ({e}); install python3-bpfcc (see `utrace doctor`)") from None
    err = io.StringIO()
    bpf: Any = None
    try:
        with redirect_stderr(err):
            # bytes: bcc takes str too, with a DeprecationWarning that carries the whole source
            bpf = bcc.BPF(text=source.encode())
            return _extract(bpf, functions)
    except Exception as e:
        detail = _first_error(err.getvalue()) or str(e).splitlines()[0]
        if "headers" in detail or "kconfig.h" in detail:
            raise EnvironmentProblem(f"bcc cannot compile: {detail} (run `utrace doctor`)") from None
        raise TracingError(f"the BPF program did not compile: {detail}") from None
    finally:
        if bpf is not None:
            with redirect_stderr(io.StringIO()):
                try:
                    bpf.cleanup()
                except Exception:
                    pass


def _bcc_lib(bcc_lib: Any) -> Any:
    """Our own handle on libbcc (same library), with the prototypes of the calls used here."""
    lib = ctypes.CDLL(bcc_lib._name)
    vp, cp, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    protos = {
        "bpf_function_start": (vp, [vp, cp]),
        "bpf_function_size": (sz, [vp, cp]),
        "bpf_module_license": (cp, [vp]),
        "bpf_module_kern_version": (ctypes.c_uint, [vp]),
        "bpf_num_tables": (sz, [vp]),
        "bpf_table_name": (cp, [vp, sz]),
        "bpf_table_fd_id": (ctypes.c_int, [vp, sz]),
        "bpf_table_type_id": (ctypes.c_int, [vp, sz]),
        "bpf_table_max_entries_id": (sz, [vp, sz]),
        "bpf_table_flags_id": (ctypes.c_int, [vp, sz]),
        "bpf_table_key_size_id": (sz, [vp, sz]),
        "bpf_table_leaf_size_id": (sz, [vp, sz]),
    }
    for name, (res, args) in protos.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def _extract(bpf: Any, functions: list[str]) -> bpfsys.Compiled:
    import bcc.libbcc

    lib = _bcc_lib(bcc.libbcc.lib)
    mod = bpf.module
    maps: list[bpfsys.MapSpec] = []
    index_of_fd: dict[int, int] = {}
    for i in range(int(lib.bpf_num_tables(mod))):
        fd = int(lib.bpf_table_fd_id(mod, i))
        name = (lib.bpf_table_name(mod, i) or b"").decode()
        index_of_fd[fd] = len(maps)
        kind, key = int(lib.bpf_table_type_id(mod, i)), int(lib.bpf_table_key_size_id(mod, i))
        value, entries = int(lib.bpf_table_leaf_size_id(mod, i)), int(lib.bpf_table_max_entries_id(mod, i))
        maps.append(bpfsys.MapSpec(name, kind, key, value, entries, int(lib.bpf_table_flags_id(mod, i))))
    out = []
    for fn in functions:
        start = lib.bpf_function_start(mod, fn.encode())
        if not start:
            raise TracingError(f"bcc produced no function {fn}")
        insns = ctypes.string_at(start, int(lib.bpf_function_size(mod, fn.encode())))
        relocs = []
        for at, fd in bpfsys.map_references(insns):
            if fd not in index_of_fd:
                raise TracingError(f"{fn} refers to a map utrace did not declare (fd {fd})")
            relocs.append((at, index_of_fd[fd]))
        out.append(bpfsys.Function(fn, insns, tuple(relocs)))
    license = (lib.bpf_module_license(mod) or b"GPL").decode()
    return bpfsys.Compiled(tuple(maps), tuple(out), license, int(lib.bpf_module_kern_version(mod)))


_ENOTSUPP = 524  # the kernel's internal "not supported", which bpf(2) can leak


class _MultiUnsupported(Exception):
    """The kernel refused the first multi-uprobe link as a kind of attachment it does not offer."""


def multi_uprobes_wanted() -> bool:
    """Attach through multi-uprobe links (Linux >= 6.6) unless UTRACE_UPROBE_MULTI=0."""
    if os.environ.get("UTRACE_UPROBE_MULTI", "1") == "0":
        return False
    try:
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (6, 6)


class Tracer:
    """A loaded program and its attached probes. Use as a context manager: exit always detaches.

    bcc compiles (once per program text and kernel: the result is cached, see `bpfsys`); maps,
    programs, attaching and reading are utrace's own system calls.
    """

    def __init__(self, program: BpfProgram, launched: bool = False) -> None:
        """`launched`: the program's pid is a process held before its exec, traced from that exec on."""
        self.program = program
        self.launched = launched
        self._loaded: bpfsys.Loaded | None = None
        self._compiled: bpfsys.Compiled | None = None
        self._ring: bpfsys.RingBuffer | None = None
        self._on_record: Callable[[bytes], None] | None = None
        self._fds: list[int] = []
        self.attached = 0
        # `detach` removes the probes but leaves the fork and exit programs running, and the maps
        # readable, until `release`: a launched tree is ended after the probes are gone
        self.keep_family = False
        self._family_fds: list[int] = []

    def load(self) -> None:
        """Compile (or take the cached compiled form) and load. Raises EnvironmentProblem/TracingError."""
        kernel.ensure_tracefs()
        source = self.program.source
        compiled = _cached_compiled(source)
        if compiled is None:
            compiled = compile_program(source, self.program.functions + [f for f, _ in self.program.tracepoints])
            file = _compiled_cache_file(source)
            if file is not None:
                write_jobs([(file, lambda: seal(marshal.dumps(compiled.to_plain())))])
        self._compiled = compiled
        self._load(multi=multi_uprobes_wanted())

    def _load(self, multi: bool) -> None:
        assert self._compiled is not None
        raw = frozenset(f for f, _ in self.program.tracepoints)
        try:
            try:
                self._loaded = bpfsys.load(self._compiled, multi=multi, raw_tracepoint=raw)
            except bpfsys.BpfError as e:
                if not multi or e.errno != errno.EINVAL:
                    raise
                # a kernel that does not know the attach type
                self._loaded = bpfsys.load(self._compiled, raw_tracepoint=raw)
        except bpfsys.BpfError as e:
            raise TracingError(f"the BPF program did not load: {e.strerror}") from None
        if self.program.options.pid is not None:
            self.seed(self.program.options.pid, awaiting_exec=self.launched)
        ident = self.program.options.exe_identity
        if ident is not None and "exe_file" in self._loaded.maps:  # the file whose processes are traced
            for i, v in enumerate(ident):
                self._loaded.maps["exe_file"].update(struct.pack("<I", i), struct.pack("<Q", v))

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
        assert self._loaded is not None, "load() first"
        if self._loaded.dispatcher is not None:
            try:
                self._attach_multi(self._loaded.dispatcher, pid)
                self._attach_tracepoints()
                return
            except _MultiUnsupported:  # load the programs again, for perf events
                self._loaded.close()
                self._load(multi=False)
        assert self._loaded is not None
        for spec, prog_fd in zip(self.program.specs, self._loaded.programs, strict=True):
            fd = open_uprobe(
                pmu,
                spec.module,
                spec.offset,
                retprobe=spec.kind is ProbeKind.RETURN,
                pid=-1 if pid is None else pid,
                ref_ctr_offset=spec.ref_ctr_offset,
            )
            self._fds.append(fd)
            _attach_prog(fd, prog_fd)
            self.attached += 1
        self._attach_tracepoints()

    def _attach_tracepoints(self) -> None:
        """The scheduler programs (after the uprobes: a fallback from multi-uprobe links loads the
        programs again, and a raw tracepoint would keep running the first ones)."""
        assert self._loaded is not None
        for fn, tracepoint in self.program.tracepoints:
            try:
                self._family_fds.append(bpfsys.attach_raw_tracepoint(tracepoint, self._loaded.raw_tracepoint[fn]))
            except bpfsys.BpfError as e:
                raise TracingError(f"cannot attach to the {tracepoint} tracepoint: {e.strerror}") from None

    # --- the processes traced (programs with a pid filter: see codegen.Options) ---------------------

    def seed(self, pid: int, awaiting_exec: bool = False) -> bool:
        """Trace `pid` (as utrace sees it): now, or from its next exec. False if it was there already."""
        assert self._loaded is not None, "load() first"
        value = TARGET_AWAITING_EXEC if awaiting_exec else TARGET_TRACED
        return self._loaded.maps["target"].insert(struct.pack("<I", pid), struct.pack("<I", value))

    def unseed(self, pid: int) -> bool:
        """Forget `pid` (a seed that had exited before it was added); False if the kernel already had."""
        assert self._loaded is not None, "load() first"
        return self._loaded.maps["target"].delete(struct.pack("<I", pid))

    def tracked(self) -> list[int]:
        """Host tgids of the live processes descending from traced ones ([] without the fork program)."""
        if self._loaded is None or "tracked" not in self._loaded.maps:
            return []
        return [struct.unpack("<I", k)[0] for k in self._loaded.maps["tracked"].keys()]  # noqa: SIM118

    def is_tracked(self, pid: int) -> bool:
        if self._loaded is None or "tracked" not in self._loaded.maps:
            return False
        return self._loaded.maps["tracked"].lookup(struct.pack("<I", pid)) is not None

    def family(self) -> tuple[int, int, int]:
        """(processes added by forks, entries removed at exits, forks not followed: map full)."""
        if self._loaded is None or "family" not in self._loaded.maps:
            return 0, 0, 0
        m = self._loaded.maps["family"]
        added, removed, overflow = (m.sum_u64(struct.pack("<I", i)) for i in range(3))
        return added, removed, overflow

    def _attach_multi(self, dispatcher: int, pid: int | None) -> None:
        """One multi-uprobe link per file and kind (entry, return): detaching then waits for the kernel
        once per link instead of once per probe (50 probes: 0.1 s instead of 5 s)."""
        specs = self.program.specs
        groups: dict[tuple[str, bool], list[int]] = {}
        for i, spec in enumerate(specs):
            groups.setdefault((spec.module, spec.kind is ProbeKind.RETURN), []).append(i)
        for (module, retprobe), members in groups.items():
            try:
                with procfs.kernel_path(module) as kpath:  # inside a process's root, as it was read
                    fd = bpfsys.attach_uprobe_multi(
                        dispatcher,
                        kpath,
                        [specs[i].offset for i in members],
                        [specs[i].ref_ctr_offset for i in members],
                        members,  # the cookie: the program's index in the dispatcher's array
                        pid=0 if pid is None else pid,
                        retprobe=retprobe,
                    )
            except bpfsys.BpfError as e:
                if not self._fds and e.errno in (errno.EINVAL, errno.EOPNOTSUPP, _ENOTSUPP):
                    raise _MultiUnsupported from None  # or an offset it refuses: perf events will say
                why = os.strerror(e.errno or 0)
                raise TracingError(f"cannot attach {len(members)} uprobe(s) to {module}: {why}") from None
            except OSError as e:  # the file under the process's root cannot be opened (see procfs.kernel_path)
                raise TracingError(f"cannot attach {len(members)} uprobe(s) to {module}: {e.strerror}") from None
            self._fds.append(fd)
            self.attached += len(members)

    def open_ring(self, callback: Callable[[bytes], None]) -> None:
        assert self._loaded is not None, "load() first"
        self._ring = bpfsys.RingBuffer(self._loaded.maps["events"])
        self._on_record = callback

    def watch(self, fd: int) -> None:
        """Let `poll` return early when `fd` (a pidfd) becomes readable."""
        if self._ring is not None:
            self._ring.watch(fd)

    def poll(self, timeout_ms: int, limit: int | None = None, until: float | None = None) -> int:
        """Wait up to `timeout_ms` for a wakeup, then read what is there (at most `limit` records, until
        `until`, see RingBuffer.consume) and return how many: events are submitted without waking the
        reader for each one (see codegen's prelude), so a timeout is the usual way in and a wakeup the
        exception."""
        assert self._ring is not None and self._on_record is not None, "open_ring() first"
        if timeout_ms > 0:
            self._ring.wait(timeout_ms / 1000)
        return self._ring.consume(self._on_record, limit, until)

    def drain(self, limit: int | None = None, until: float | None = None) -> int:
        if self._ring is not None and self._on_record is not None:
            return self._ring.consume(self._on_record, limit, until)
        return 0

    def unlink(self) -> None:
        """Remove the probes, keeping the maps and the ring to read what they recorded. Closing a perf
        event or link waits for the kernel's grace period, so no probe's program runs afterwards."""
        fds, self._fds = self._fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def skip(self) -> int:
        """Count the records left in the ring without reading them, and free their space. After
        `unlink`, a record still being written can only be a program finishing: it gets a few ms."""
        if self._ring is None:
            return 0
        n, busy = self._ring.skip()
        for _ in range(20):
            if not busy:
                break
            time.sleep(0.001)
            more, busy = self._ring.skip()
            n += more
        return n

    def lost(self) -> int:
        return self.counter("lost")

    def counter(self, name: str) -> int:
        """Slot 0 of the per-CPU array `name` summed over CPUs; 0 if the program has no such map."""
        if self._loaded is None or name not in self._loaded.maps:
            return 0
        return self._loaded.maps[name].sum_u64(struct.pack("<I", 0))

    def keys(self, name: str, limit: int = 4096) -> list[bytes]:
        """The raw keys of the hash map `name` (at most `limit`); [] if the program has no such map."""
        if self._loaded is None or name not in self._loaded.maps:
            return []
        out: list[bytes] = []
        for key in self._loaded.maps[name].keys():  # noqa: SIM118 (a Map is not iterable)
            if len(out) >= limit:
                break
            out.append(bytes(key))
        return out

    def aggregates(self, name: str) -> dict[tuple[int, int, int], int]:
        """The per-CPU hash `name` ({probe, pid, slot} -> count) summed over CPUs; {} if absent."""
        if self._loaded is None or name not in self._loaded.maps:
            return {}
        table = self._loaded.maps[name]
        out: dict[tuple[int, int, int], int] = {}
        for key in list(table.keys()):
            probe, pid, slot = struct.unpack_from(AGG_KEY, key)
            out[(probe, pid, slot)] = table.sum_u64(key)
        return out

    def sums(self, name: str) -> dict[bytes, int]:
        """Any map `name` of u64 values as {raw key: value summed over CPUs}; {} if absent."""
        if self._loaded is None or name not in self._loaded.maps:
            return {}
        table = self._loaded.maps[name]
        return {key: table.sum_u64(key) for key in list(table.keys())}

    def detach(self) -> None:
        """Remove the probes and close the ring; with `keep_family`, the fork and exit programs and
        the maps stay until `release`, else they go too."""
        self.unlink()
        if self._ring is not None:
            ring, self._ring = self._ring, None
            ring.close()
        if not self.keep_family:
            self.release()

    def release(self) -> None:
        """Everything `detach` left: the scheduler programs' attachments, the programs and maps."""
        fds, self._family_fds = self._family_fds, []
        _close_fds(fds)
        if self._loaded is not None:
            loaded, self._loaded = self._loaded, None
            loaded.close()

    def __enter__(self) -> Tracer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return ""
