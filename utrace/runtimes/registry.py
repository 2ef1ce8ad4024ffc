"""Runtime plugins by name. Built-ins are registered here; others come from the
`utrace.runtimes` entry-point group and are loaded tolerantly (a broken plugin is skipped)."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from utrace.errors import UsageError


def _builtin() -> dict[str, Any]:
    from utrace.runtimes.jvm import JvmRuntime
    from utrace.runtimes.native import NativeRuntime
    from utrace.runtimes.node import NodeRuntime

    return {"native": NativeRuntime, "node": NodeRuntime, "java": JvmRuntime}


def runtimes() -> dict[str, Any]:
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
    rts = runtimes()
    if name not in rts:
        raise UsageError(f"unknown runtime {name!r} (known: {', '.join(sorted(rts))})")
    return rts[name]()
