"""Parsing of `js:NAME` and `js:SCRIPT:NAME` (utrace.runtimes.v8js._glob), and the cache key of a pattern."""

from __future__ import annotations

import pytest

from utrace.errors import UsageError
from utrace.probes.v8values import globs_id
from utrace.runtimes.v8js import _glob


def test_name_only() -> None:
    assert _glob("js:priceOf") == (b"", b"priceOf")
    assert _glob("js:Cart.*") == (b"", b"Cart.*")


def test_script_and_name() -> None:
    assert _glob("js:app.js:priceOf") == (b"app.js", b"priceOf")
    assert _glob("js:src/lib.js:Cart.add") == (b"src/lib.js", b"Cart.add")
    assert _glob("js:file:///x/app.mjs:f") == (b"file:///x/app.mjs", b"f")


@pytest.mark.parametrize(
    "expr", ["js::priceOf", "js:app.js:", "js:a*.js:f", "js:" + "x" * 128 + ":f", "js:é.js:f", "js:a.js:*"]
)
def test_refused(expr: str) -> None:
    with pytest.raises(UsageError) as e:
        _glob(expr)
    assert "\n" not in str(e.value) and repr(expr)[:20] in str(e.value)


def test_script_is_part_of_the_cache_key() -> None:
    assert globs_id((b"priceOf",), b"lib.js") != globs_id((b"priceOf",), b"app.js")
    assert globs_id((b"priceOf",), b"lib.js") != globs_id((b"priceOf",))
    assert globs_id((b"priceOf",)) == globs_id((b"priceOf",), b"")
