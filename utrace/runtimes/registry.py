"""Runtime plugins by name. Built-ins are registered here; others come from the
`utrace.runtimes` entry-point group and are loaded tolerantly (a broken plugin is skipped)."""

from __future__ import annotations

from typing import Any

from utrace.errors import UsageError


def _go() -> Any:
    from utrace.runtimes.go.plan import GoRuntime

    return GoRuntime()


def _java() -> Any:
    from utrace.runtimes.jvm import JvmRuntime

    return JvmRuntime()


def _native() -> Any:
    from utrace.runtimes.native import NativeRuntime

    return NativeRuntime()


def _node() -> Any:
    from utrace.runtimes.node import NodeRuntime

    return NodeRuntime()


def _builtin() -> dict[str, Any]:
    # factories, so that tracing node never imports the Go plugin's disassembler and DWARF reader
    return {"native": _native, "node": _node, "go": _go, "java": _java}


def runtimes() -> dict[str, Any]:
    from importlib.metadata import entry_points  # 20 ms of imports: only when a plugin may be needed

    found = _builtin()
    try:
        for ep in entry_points(group="utrace.runtimes"):
            if ep.name not in found:
                try:
                    found[ep.name] = ep.load()
                except Exception:  # a broken third-party plugin must not break utrace
                    continue
    except Exception:
        pass
    return found


def get_runtime(name: str) -> Any:
    builtin = _builtin()
    if name in builtin:  # a plugin cannot replace a built-in (runtimes() keeps the built-in too)
        return builtin[name]()
    rts = runtimes()
    if name not in rts:
        raise UsageError(f"unknown runtime {name!r} (known: {', '.join(sorted(rts))})")
    return rts[name]()
