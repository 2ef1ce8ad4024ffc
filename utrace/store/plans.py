"""Resolved probe plans kept in the cache, so that tracing the same file the same way again skips reading it.

A Go plan costs a warm trace ~0.1 s of pclntab, DWARF and disassembly (and ~0.05 s of imports), every
time, for the same answer. The answer is kept here, keyed by everything it is made from:

- the file traced, by its identity (`index.cache_key`: build-id, size, device, inode, modification
  and change times; the change time cannot be set by a user), its path and how it is shown;
- the request's words that the planner reads (probes, --ret, --max-len, the runtime's own options);
- utrace's own code: the name, size and modification time of every module of the package
  (`code_stamp`), so a changed planner never meets a plan made by an older one.

The entry repeats its whole key, compared on every read (a digest names the file). It is pickled,
and read back with an unpickler that builds only the classes a plan is made of (`load`'s `allowed`),
from a file in the trusted cache directory only (`cache.read_sealed`), as the other cache files are.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from enum import Enum
from typing import Any

from utrace.store.cache import read_sealed, seal, trusted_cache_dir, write_atomic

_FORMAT = 1
PREFIX = "plan-"
_stamp: list[str] = []


def code_stamp() -> str:
    """Name, size and modification time of every `.py` file of the utrace package (~1 ms, once a process)."""
    if _stamp:
        return _stamp[0]
    import utrace

    root = os.path.dirname(os.path.abspath(utrace.__file__))
    parts = [utrace.__version__]
    todo = [root]
    while todo:
        d = todo.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False) and e.name != "__pycache__":
                    todo.append(e.path)
                elif e.name.endswith(".py"):
                    st = e.stat(follow_symlinks=False)
                    parts.append(f"{os.path.relpath(e.path, root)}:{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                continue
    _stamp.append(hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest())
    return _stamp[0]


def _key_text(kind: str, key: tuple[object, ...]) -> str:
    return repr((_FORMAT, kind, code_stamp(), key))


def _file(key_text: str) -> str | None:
    cache = trusted_cache_dir()
    if cache is None:
        return None
    digest = hashlib.sha256(key_text.encode("utf-8", "surrogateescape")).hexdigest()
    return str(cache / f"{PREFIX}v{_FORMAT}-{digest[:40]}.pickle")


class _Restricted(pickle.Unpickler):
    """Builds only the classes named in `allowed` (and enum members of them), nothing else."""

    def __init__(self, data: bytes, allowed: frozenset[tuple[str, str]]) -> None:
        super().__init__(io.BytesIO(data))
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("builtins", "getattr"):
            return _enum_member  # how an enum member is pickled: getattr(EnumClass, "NAME")
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a plan")
        return super().find_class(module, name)


def _enum_member(cls: object, name: str) -> Enum:
    if not (isinstance(cls, type) and issubclass(cls, Enum)):
        raise pickle.UnpicklingError("only enum members are looked up")
    return cls[name]


def load(kind: str, key: tuple[object, ...], allowed: frozenset[tuple[str, str]]) -> Any:
    """The value saved under (`kind`, `key`), or None when there is none (or it cannot be believed)."""
    key_text = _key_text(kind, key)
    file = _file(key_text)
    if file is None:
        return None
    body = read_sealed(file)
    if body is None:
        return None
    try:
        saved_key, value = _Restricted(bytes(body), allowed).load()
    except Exception:  # damaged, or made of other classes: as if there were none
        return None
    return value if saved_key == key_text else None


def save(kind: str, key: tuple[object, ...], value: object) -> None:
    """Save `value` under (`kind`, `key`). A plan is a few kB: written here (~1 ms; forking a writer costs
    more), and left to the next `cache.write_jobs` to prune with the rest."""
    key_text = _key_text(kind, key)
    file = _file(key_text)
    if file is None:
        return
    from pathlib import Path

    try:
        write_atomic(Path(file), seal(pickle.dumps((key_text, value), protocol=pickle.HIGHEST_PROTOCOL)))
    except OSError:
        pass  # a read-only or full cache only costs speed
