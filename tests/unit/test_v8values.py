"""How an event's JSVALUE field (kind, length, value, bytes) is shown, and what the kernel side emits
for objects: checked on made-up fields and on the layouts of official Node builds."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from utrace.model import ArgKind, ArgSpec, Const
from utrace.probes import v8values
from utrace.probes.v8values import (
    K_ARRAY,
    K_FUNCTION,
    K_OBJECT,
    K_OTHER,
    MAX_BACK_POINTERS,
    N_NO_CONSTRUCTOR,
    N_NO_NAME,
    N_NOT_READ,
    N_OK,
    decode,
)
from utrace.v8layout import V8Layout

CACHE = Path(os.environ.get("UTRACE_CACHE", Path.home() / ".cache" / "utrace")) / "realworld"


def _layout(**kw: object) -> V8Layout:
    base: dict[str, object] = {f.name: 0 for f in dataclasses.fields(V8Layout)}
    base.update(smi_shift=32, tagged_size=8, js_array_type=2113, js_function_type=2066, js_object_type=1057)
    base.update(first_js_function_type=None, last_js_function_type=None, js_array_length=23)
    base.update(jsfunction_code=None, code_flags=None)
    base.update(kw)
    return V8Layout(**base)  # type: ignore[arg-type]


def _named(kind: int, name: bytes, status: int, t: int = 1057, null: int = 0, cap: int = 16) -> str:
    return str(decode(_layout(), kind, len(name), t | status << 16 | null << 24, name[:cap].ljust(2 * cap, b"\0")))


def test_arrays_by_length() -> None:
    assert decode(_layout(), K_ARRAY, 0, 3 << 32, b"") == "Array(3)"
    assert decode(None, K_ARRAY, 0, 0, b"") == "Array(0)"
    assert decode(_layout(), K_ARRAY, 0, 1003 << 32, b"") == "Array(1003)"
    # a length not read (no JSArray.length in the binary): plain Array, never a number
    assert decode(_layout(), K_OTHER, 0, 2113, b"") == "Array"


def test_functions_by_name() -> None:
    assert _named(K_FUNCTION, b"priceOf", N_OK, t=2066) == "Function priceOf"
    assert _named(K_FUNCTION, b"", N_NO_NAME, t=2066) == "Function"
    assert _named(K_FUNCTION, b"", N_NOT_READ, t=2066) == "Function <name not read>"


def test_objects_by_constructor_name() -> None:
    assert _named(K_OBJECT, b"Cart", N_OK) == "Cart{}"
    assert _named(K_OBJECT, b"Map", N_OK, t=2108) == "Map{}"
    assert _named(K_OBJECT, b"Object", N_OK, null=1) == "[Object: null prototype]{}"
    # a name longer than the bytes captured says so
    assert _named(K_OBJECT, b"AVeryLongConstructorName", N_OK, cap=8) == "AVeryLon...{}"
    # a function whose type this V8 does not name (a class on node 20) is made by Function
    assert _named(K_OBJECT, b"Function", N_OK, t=2067) == "Function"
    # ... but an ordinary object whose map says Function, or one in a V8 that names function types, is not
    assert _named(K_OBJECT, b"Function", N_OK, t=1057) == "Function{}"
    ranged = _layout(first_js_function_type=2066, last_js_function_type=2082)
    assert str(decode(ranged, K_OBJECT, 8, 2100 | N_OK << 16, b"Function".ljust(32, b"\0"))) == "Function{}"


def test_objects_whose_constructor_is_not_read_say_so() -> None:
    assert _named(K_OBJECT, b"", N_NOT_READ) == "<object, constructor name not read>"
    assert _named(K_OBJECT, b"", N_NO_NAME) == "<object, its constructor has no name>"
    assert _named(K_OBJECT, b"", N_NO_CONSTRUCTOR, t=2131) == (
        "<object, no JavaScript constructor, V8 instance type 2131>"
    )
    assert decode(_layout(), K_OTHER, 0, 2131, b"") == "<object, V8 instance type 2131>"


class _Em:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.n = 0

    def new(self) -> str:
        self.n += 1
        return f"v{self.n}"

    def emit(self, line: str) -> None:
        self.lines.append(line)

    def value(self, loc: object) -> str:
        return "arg"


def _c(layout: V8Layout) -> str:
    em = _Em()
    v8values.emit_value(em, layout, ArgSpec("arg0", ArgKind.JSVALUE, Const(0)), "f0", 64)
    return "\n".join(em.lines)


def test_emitted_c_is_bounded_and_follows_the_layout() -> None:
    c = _c(_layout(map_type=255, sfi_type=262))
    assert f"i < {MAX_BACK_POINTERS}" in c  # back pointers: a bounded walk
    assert "== 262ULL" in c  # the SharedFunctionInfo's type is checked before its name is read
    assert f"f0_kind = {K_ARRAY}" in c
    # without JSArray.length the kernel never says K_ARRAY
    assert f"f0_kind = {K_ARRAY}" not in _c(_layout(js_array_length=None))
    # an argument is a function by the range the binary names, else by JS_FUNCTION_TYPE only
    assert "== 2066ULL) {" in c
    ranged = _c(_layout(first_js_function_type=2066, last_js_function_type=2082))
    assert ">= 2066ULL &&" in ranged and "<= 2082ULL" in ranged


@pytest.mark.parametrize("major", (20, 26))
def test_layouts_of_official_builds(major: int) -> None:
    from utrace.elf.v8meta import v8_layout

    node = CACHE / f"node-{major}" / "bin" / "node"
    if not node.exists():
        pytest.skip(f"run scripts/fetch-node-official.sh {major}")
    L = v8_layout(str(node))
    # JSArray.length where the JSObject header ends (3 tagged words: map, properties, elements)
    assert L.js_array_length == 3 * L.tagged_size - L.heap_object_tag
    assert (L.first_js_function_type is None) == (major == 20)
