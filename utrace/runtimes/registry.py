"""Runtime plugins by name. Built-ins are listed here the way an entry point names its object
("module:Class"); others come from the `utrace.runtimes` entry-point group and are loaded tolerantly
(a broken plugin, or one without a `command`, is skipped). A plugin cannot replace a built-in.

Each runtime class declares its command (`command: ClassVar[CommandSpec]`); the CLI builds
`utrace NAME` from it for every name here, and never names a runtime itself.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from utrace.errors import UsageError
from utrace.runtimes.base import CommandSpec, Runtime

# loaded on first use, so that tracing node never imports the Go plugin's disassembler and DWARF reader
BUILTIN: dict[str, str] = {
    "native": "utrace.runtimes.native:NativeRuntime",
    "node": "utrace.runtimes.node:NodeRuntime",
    "java": "utrace.runtimes.jvm:JvmRuntime",
    "go": "utrace.runtimes.go.plan:GoRuntime",
}
GROUP = "utrace.runtimes"

_loaded: dict[str, type[Runtime] | None] = {}  # name -> class, None when it could not be loaded


def _load(value: str) -> type[Runtime]:
    module, _, attr = value.partition(":")
    obj: Any = import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return _checked(obj)


def _checked(obj: Any) -> type[Runtime]:
    """A runtime class: a class with a CommandSpec `command` and `target` and `plan` methods."""
    if not (
        isinstance(obj, type)
        and isinstance(getattr(obj, "command", None), CommandSpec)
        and callable(getattr(obj, "target", None))
        and callable(getattr(obj, "plan", None))
    ):
        raise TypeError(f"{obj!r} is not a utrace runtime class")
    return obj


def _plugins() -> dict[str, Any]:
    """The entry points of the `utrace.runtimes` group by name, not loaded (built-in names left out)."""
    from importlib.metadata import entry_points  # 20 ms of imports: only when a plugin may be needed

    try:
        return {ep.name: ep for ep in entry_points(group=GROUP) if ep.name not in BUILTIN}
    except Exception:  # broken metadata of some installed distribution must not break utrace
        return {}


def names() -> list[str]:
    """Every registered runtime's name: the built-ins, then plugins (not loaded)."""
    return [*BUILTIN, *sorted(_plugins())]


def runtime_class(name: str) -> type[Runtime] | None:
    """The class registered under `name`, loaded (None: no such runtime, or its plugin is broken)."""
    if name not in _loaded:
        cls: type[Runtime] | None = None
        try:
            if name in BUILTIN:
                cls = _load(BUILTIN[name])  # a built-in that fails to load is a bug: let it raise
            else:
                ep = _plugins().get(name)
                if ep is not None:
                    cls = _checked(ep.load())
        except Exception:
            if name in BUILTIN:
                raise
            cls = None  # a broken third-party plugin must not break utrace
        _loaded[name] = cls
    return _loaded[name]


def commands() -> dict[str, tuple[str, CommandSpec]]:
    """Command name -> (runtime name, its command): every runtime's name and aliases (an alias
    never takes a name already given to a runtime or an earlier alias)."""
    out: dict[str, tuple[str, CommandSpec]] = {}
    loaded = [(n, c) for n in names() if (c := runtime_class(n)) is not None]
    for name, cls in loaded:
        out[name] = (name, cls.command)
    for name, cls in loaded:
        for alias in cls.command.aliases:
            out.setdefault(alias, (name, cls.command))
    return out


def command(name: str) -> tuple[str, CommandSpec] | None:
    """(runtime name, its command) for a command name: a runtime's own name, else the first alias that
    `commands()` would give it, loading runtimes only until it is found (`utrace jvm` never loads Go)."""
    cls = runtime_class(name)
    if cls is not None:
        return name, cls.command
    for runtime in names():
        other = runtime_class(runtime)
        if other is not None and name in other.command.aliases:
            return runtime, other.command
    return None


def get_runtime(name: str) -> Runtime:
    """A new instance of the runtime called `name` (its own name, not an alias).

    Raises:
        UsageError: no runtime has that name.
    """
    cls = runtime_class(name)
    if cls is None:
        known = sorted(n for n in names() if runtime_class(n) is not None)
        raise UsageError(f"unknown runtime {name!r} (known: {', '.join(known)})")
    return cls()
