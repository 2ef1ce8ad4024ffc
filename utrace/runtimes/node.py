"""`node`: Node.js processes. libuv and node C++ functions, libuv arguments decoded by prototype.

Two layouts exist: libuv linked statically into the `node` executable (NodeSource builds), or
`libnode.so.N` plus the system `libuv.so.1` (Debian's own nodejs). Modules come from the pid's maps,
or from the executable's DT_NEEDED entries resolved like the dynamic linker would.
"""

from __future__ import annotations

import os
import re
from typing import ClassVar

from utrace.elf.dynamic import needed_libraries
from utrace.elf.match import close_names, share_literal
from utrace.errors import ElfError, TargetError
from utrace.model import ArgKind, ArgSpec, Deref, Filter, Module, Reg, Symbol, Target
from utrace.process.target import process_target, resolve_path
from utrace.runtimes.base import (
    CommandSpec,
    Completion,
    ModuleSymbols,
    Operands,
    OptionSpec,
    Plan,
    TraceRequest,
    find_functions,
    not_found,
)
from utrace.runtimes.cxxthis import MembershipOracle
from utrace.runtimes.native import NativeRuntime, args_for, command_path, maps_file
from utrace.runtimes.signature import sysv_args
from utrace.v8layout import V8Layout

# uv_handle_type (uv.h): the `type` member sits after `void *data` and `uv_loop_t *loop`.
HANDLE_TYPES = (
    (0, "unknown"), (1, "async"), (2, "check"), (3, "fs_event"), (4, "fs_poll"), (5, "handle"),
    (6, "idle"), (7, "pipe"), (8, "poll"), (9, "prepare"), (10, "process"), (11, "stream"),
    (12, "tcp"), (13, "timer"), (14, "tty"), (15, "udp"), (16, "signal"), (17, "file"),
)  # fmt: skip
UV_TCP = 12
HANDLE_TYPE_OFFSET = 16

# Prototypes of libuv functions people trace (uv.h, libuv 1.x). `handle` parameters also get their
# handle type decoded.
PROTOTYPES: dict[str, list[str]] = {
    "uv_listen": ["uv_stream_t* handle", "int backlog", "void* cb"],
    "uv__tcp_listen": ["uv_tcp_t* handle", "int backlog", "void* cb"],
    "uv_tcp_listen": ["uv_tcp_t* handle", "int backlog", "void* cb"],
    "uv__pipe_listen": ["uv_pipe_t* handle", "int backlog", "void* cb"],
    "uv_pipe_listen": ["uv_pipe_t* handle", "int backlog", "void* cb"],
    "uv_accept": ["uv_stream_t* server", "uv_stream_t* client"],
    "uv_tcp_bind": ["uv_tcp_t* handle", "void* addr", "unsigned int flags"],
    "uv__tcp_bind": ["uv_tcp_t* handle", "void* addr", "unsigned int addrlen", "unsigned int flags"],
    "uv_tcp_connect": ["void* req", "uv_tcp_t* handle", "void* addr", "void* cb"],
    "uv_tcp_init": ["void* loop", "uv_tcp_t* handle"],
    "uv_tcp_open": ["uv_tcp_t* handle", "int fd"],
    "uv_read_start": ["uv_stream_t* handle", "void* alloc_cb", "void* read_cb"],
    "uv_read_stop": ["uv_stream_t* handle"],
    "uv_write": ["void* req", "uv_stream_t* handle", "void* bufs", "unsigned int nbufs", "void* cb"],
    "uv_try_write": ["uv_stream_t* handle", "void* bufs", "unsigned int nbufs"],
    "uv_shutdown": ["void* req", "uv_stream_t* handle", "void* cb"],
    "uv_close": ["uv_handle_t* handle", "void* cb"],
    "uv_timer_start": ["uv_timer_t* handle", "void* cb", "unsigned long timeout", "unsigned long repeat"],
    "uv_timer_stop": ["uv_timer_t* handle"],
    "uv_run": ["void* loop", "int mode"],
    "uv_queue_work": ["void* loop", "void* req", "void* work_cb", "void* after_work_cb"],
    "uv_getaddrinfo": ["void* loop", "void* req", "void* cb", "const char* node", "const char* service", "void* hints"],
    "uv_spawn": ["void* loop", "uv_process_t* handle", "void* options"],
    "uv_kill": ["int pid", "int signum"],
    "uv_udp_send": ["void* req", "uv_udp_t* handle", "void* bufs", "unsigned int nbufs", "void* addr", "void* cb"],
    "uv_fs_open": ["void* loop", "void* req", "const char* path", "int flags", "int mode", "void* cb"],
    "uv_fs_close": ["void* loop", "void* req", "int file", "void* cb"],
    "uv_fs_read": ["void* loop", "void* req", "int file", "void* bufs", "unsigned int nbufs", "long offset"],
    "uv_fs_write": ["void* loop", "void* req", "int file", "void* bufs", "unsigned int nbufs", "long offset"],
    "uv_fs_stat": ["void* loop", "void* req", "const char* path", "void* cb"],
    "uv_fs_lstat": ["void* loop", "void* req", "const char* path", "void* cb"],
    "uv_fs_fstat": ["void* loop", "void* req", "int file", "void* cb"],
    "uv_fs_unlink": ["void* loop", "void* req", "const char* path", "void* cb"],
    "uv_fs_mkdir": ["void* loop", "void* req", "const char* path", "int mode", "void* cb"],
    "uv_fs_mkdtemp": ["void* loop", "void* req", "const char* tpl", "void* cb"],
    "uv_fs_rmdir": ["void* loop", "void* req", "const char* path", "void* cb"],
    "uv_fs_rename": ["void* loop", "void* req", "const char* path", "const char* new_path", "void* cb"],
    "uv_fs_scandir": ["void* loop", "void* req", "const char* path", "int flags", "void* cb"],
    "uv_fs_access": ["void* loop", "void* req", "const char* path", "int mode", "void* cb"],
    "uv_fs_readlink": ["void* loop", "void* req", "const char* path", "void* cb"],
    "uv_fs_realpath": ["void* loop", "void* req", "const char* path", "void* cb"],
    "uv_fs_ftruncate": ["void* loop", "void* req", "int file", "long offset", "void* cb"],
    "uv_fs_fsync": ["void* loop", "void* req", "int file", "void* cb"],
    "uv_fs_copyfile": ["void* loop", "void* req", "const char* path", "const char* new_path", "int flags", "void* cb"],
    "uv_fs_symlink": ["void* loop", "void* req", "const char* path", "const char* new_path", "int flags", "void* cb"],
    "uv_fs_chmod": ["void* loop", "void* req", "const char* path", "int mode", "void* cb"],
    "uv_fs_utime": ["void* loop", "void* req", "const char* path", "void* atime", "void* mtime", "void* cb"],
    "uv_fs_opendir": ["void* loop", "void* req", "const char* path", "void* cb"],
}  # fmt: skip

# Names users know that libuv renamed: (wanted, [candidates in order], filter on TCP handles?)
ALIASES: dict[str, list[tuple[str, bool]]] = {
    "uv_tcp_listen": [("uv_tcp_listen", False), ("uv__tcp_listen", False), ("uv_listen", True)],
    "uv_pipe_listen": [("uv_pipe_listen", False), ("uv__pipe_listen", False)],
    "uv_tcp_bind": [("uv_tcp_bind", False), ("uv__tcp_bind", False)],
}

_LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib",
             "/usr/local/lib")  # fmt: skip
_NODE_LIB = re.compile(r"lib(node|uv)\.so")


def libuv_args(name: str, max_len: int) -> list[ArgSpec] | None:
    proto = PROTOTYPES.get(name)
    if proto is None:
        return None
    specs = sysv_args(proto, max_len=max_len)
    out: list[ArgSpec] = []
    for p, spec in zip(proto, specs, strict=False):
        ctype = p.rsplit(" ", 1)[0]
        if re.match(r"uv_(stream|tcp|pipe|udp|timer|process|handle)_t\*", ctype) and isinstance(spec.loc, Reg):
            out.append(ArgSpec(spec.name, ArgKind.PTR, spec.loc))
            # the first handle's type is "type"; a second handle (uv_accept's client) gets its own name
            type_name = "type" if not any(a.name == "type" for a in out) else f"{spec.name}_type"
            out.append(
                ArgSpec(
                    type_name,
                    ArgKind.S32,
                    Deref(spec.loc, HANDLE_TYPE_OFFSET, 4),
                    labels=HANDLE_TYPES,
                )
            )
        elif ctype == "void*":
            continue  # loop, req, callbacks and buffers: noise in a trace line
        else:
            out.append(spec)
    return out


def resolve_library(name: str, runpath: list[str], origin: str) -> str | None:
    dirs = [p.replace("$ORIGIN", origin) for p in runpath]
    dirs += [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    dirs += list(_LIB_DIRS)
    for d in dirs:
        cand = os.path.join(d, name)
        if os.path.isfile(cand):
            return os.path.realpath(cand)
    return None


def node_modules_from_file(exe: str) -> list[Module]:
    """The node executable and, when libuv/node code lives in shared libraries, those libraries."""
    modules = [Module(path=exe, display=exe)]
    try:
        needed, runpath = needed_libraries(exe)
    except ElfError:
        return modules
    origin = os.path.dirname(exe)
    for lib in needed:
        if _NODE_LIB.match(lib):
            found = resolve_library(lib, runpath, origin)
            if found:
                modules.append(Module(path=found, display=found))
                if "libnode" in lib:  # libnode.so itself needs libuv.so.1
                    try:
                        sub, sub_rp = needed_libraries(found)
                    except ElfError:
                        sub, sub_rp = [], []
                    for s in sub:
                        if s.startswith("libuv.so"):
                            f2 = resolve_library(s, sub_rp, os.path.dirname(found))
                            if f2 and all(m.path != f2 for m in modules):
                                modules.append(Module(path=f2, display=f2))
    return modules


class NodeRuntime(NativeRuntime):
    name: ClassVar[str] = "node"
    command: ClassVar[CommandSpec] = CommandSpec(
        summary="Trace libuv and node C++ functions in Node.js.",
        examples=(
            "utrace node --pid 1234 uv_tcp_listen",
            "utrace node 'uv_fs_*' -- node app.js",
            "utrace node 'node::fs::*' --pid 1234 --json",
        ),
        operands=Operands.PROBES,
        options=(
            OptionSpec(
                ("--binary",),
                "binary",
                "The node executable (default: from --pid, the command, or PATH).",
                complete=Completion.FILE,
            ),
        ),
    )

    def target(self, request: TraceRequest) -> Target:
        pid_target = process_target(request.pid) if request.pid is not None else None
        if pid_target is not None and request.binary and not maps_file(pid_target, request.binary):
            # --binary names a node the process does not run: the one its descendants exec (--follow)
            exe = resolve_path(request.binary)
            modules = node_modules_from_file(exe)
            if len(modules) == 1 and not _has_libuv(exe):
                raise TargetError(f"{exe} is not a Node.js executable (no libuv in it or its libraries)")
            return Target(exe=exe, pid=pid_target.pid, nspid=pid_target.nspid, modules=tuple(modules))
        if pid_target is not None:
            t = pid_target
            mods = [m for i, m in enumerate(t.modules) if i == 0 or _NODE_LIB.search(os.path.basename(m.display))]
            if "node" not in os.path.basename(t.modules[0].display) and len(mods) == 1:
                has_uv = _has_libuv(t.modules[0].path)
                if not has_uv:
                    raise TargetError(f"pid {request.pid} ({t.modules[0].display}) is not a Node.js process")
            return Target(exe=t.exe, pid=t.pid, nspid=t.nspid, root=t.root, modules=tuple(mods))
        if request.binary:
            exe = resolve_path(request.binary)
        elif request.command:
            exe = command_path(request.command[0])
        else:
            exe = command_path("node")
        modules = node_modules_from_file(exe)
        if len(modules) == 1 and not _has_libuv(exe):
            raise TargetError(f"{exe} is not a Node.js executable (no libuv in it or its libraries)")
        return Target(exe=exe, modules=tuple(modules))

    def plan(self, request: TraceRequest, target: Target) -> Plan:
        from dataclasses import replace

        from utrace.runtimes import v8js

        js = [p for p in request.probes if v8js.is_js(p)]
        if not js:
            plan = super().plan(request, target)
        else:
            rest = tuple(p for p in request.probes if not v8js.is_js(p))
            plan = super().plan(replace(request, probes=rest), target) if rest else Plan()
            v8js.plan_js(request, target, js, plan)
        plan.v8_frames = _frames_layout(target)
        return plan

    def _resolve_alias(self, modules: list[ModuleSymbols], expr: str, plan: Plan) -> tuple[list[Symbol], str, bool]:
        for candidate, tcp_only in ALIASES.get(expr, []):
            found = find_functions(modules, candidate)
            if found:
                if candidate != expr:
                    why = " (restricted to TCP handles)" if tcp_only else ""
                    plan.notes.append(
                        f"{expr} does not exist in this libuv (renamed uv__tcp_listen in libuv 1.44); "
                        f"tracing {candidate}{why}"
                        if expr == "uv_tcp_listen"
                        else f"{expr} does not exist here; tracing {candidate}{why}"
                    )
                return found, candidate, tcp_only
        return [], expr, False

    def resolve_expr(
        self, modules: list[ModuleSymbols], expr: str, request: TraceRequest, plan: Plan
    ) -> tuple[list[Symbol], list[str] | None, tuple[Filter, ...]]:
        if expr in ALIASES:  # tried as itself, then as its other names: what they share is looked for once
            share_literal((ms.table for ms in modules), [expr, *(c for c, _t in ALIASES[expr])])
        found, params = self.resolve(modules, expr, request)
        if found:
            return found, params, ()
        if expr in ALIASES:
            found, _used, tcp_only = self._resolve_alias(modules, expr, plan)
            if found:
                tcp = Filter(Deref(Reg("rdi"), HANDLE_TYPE_OFFSET, 4), ArgKind.S32, UV_TCP)
                return found, None, (tcp,) if tcp_only else ()
        err = not_found(modules, expr, "node")
        for cand, _t in ALIASES.get(_close_alias(expr), []):
            if find_functions(modules, cand) and cand not in err.suggestions:
                err.suggestions.insert(0, cand)
        raise type(err)(f"no function matches {expr!r} in node", err.suggestions[:5])

    def arguments(
        self, sym: Symbol, params: list[str] | None, request: TraceRequest, oracle: MembershipOracle
    ) -> list[ArgSpec]:
        uv = libuv_args(sym.raw, request.max_len) if params is None else None
        return uv if uv is not None else args_for(sym, params, request.max_len, oracle)


def _close_alias(expr: str) -> str:
    close = close_names(expr, list(ALIASES), 1, cutoff=0.8)
    return close[0] if close else ""


def _has_libuv(path: str) -> bool:
    from utrace.elf.index import function_table

    try:
        t = function_table(path)
    except ElfError:
        return False
    return t.has_raw("uv_run") or t.has_raw("uv_listen")


def _frames_layout(target: Target) -> V8Layout | None:
    """The V8 layout that names a stack's JavaScript frames (see utrace.process.v8frames), when the
    node binary (or a library of it) has V8's metadata with the frame slots; None otherwise."""
    from utrace.elf.v8meta import v8_layout

    for m in target.modules:
        try:
            layout = v8_layout(m.path)
        except ElfError:
            continue
        if layout.fp_context_or_frame_type is not None:
            return layout
    return None
