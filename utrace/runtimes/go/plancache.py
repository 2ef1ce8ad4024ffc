"""The Go planner's answers, cached (`utrace.store.plans`): keyed by the executable's identity and the
request's words; what a saved plan is made of, and nothing else, may be read back."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from utrace.errors import ElfError
from utrace.model import Target
from utrace.runtimes.base import TraceRequest
from utrace.store import plans

KIND = "go"
_TARGET_ONLY = frozenset({"binary", "pid", "command"})
ALLOWED = frozenset(
    {
        ("utrace.model", "ArgKind"),
        ("utrace.model", "ArgSpec"),
        ("utrace.model", "Const"),
        ("utrace.model", "Deref"),
        ("utrace.model", "Diff"),
        ("utrace.model", "Filter"),
        ("utrace.model", "GoField"),
        ("utrace.model", "GoKind"),
        ("utrace.model", "GoType"),
        ("utrace.model", "PrefixFilter"),
        ("utrace.model", "ProbeKind"),
        ("utrace.model", "ProbeSpec"),
        ("utrace.model", "Reg"),
        ("utrace.model", "Stack"),
        ("utrace.model", "Tls"),
        ("utrace.runtimes.go.goargs", "Captures"),
        ("utrace.runtimes.go.goargs", "Interface"),
    }
)


def _key(request: TraceRequest, target: Target) -> tuple[object, ...] | None:
    """What a Go plan is made of; None when the executable cannot be identified (no caching then: the
    planner says what is wrong with it)."""
    from utrace.elf.index import cache_key

    exe = target.modules[0]
    try:
        ident = cache_key(exe.path)
    except ElfError:
        return None
    # every word of the request but those that only choose the target (its identity is in the key):
    # a field added to TraceRequest is part of the key without anyone having to remember it here
    words = tuple((f.name, getattr(request, f.name)) for f in fields(request) if f.name not in _TARGET_ONLY)
    return (exe.path, exe.display, ident, words)


def load(request: TraceRequest, target: Target) -> Any:
    """(specs, notes, needs_tls, the presenter's saved fields) planned before for this request, or None."""
    key = _key(request, target)
    if key is None:
        return None
    return plans.load(KIND, key, ALLOWED)


def save(request: TraceRequest, target: Target, value: object) -> None:
    key = _key(request, target)
    if key is not None:
        plans.save(KIND, key, value)
