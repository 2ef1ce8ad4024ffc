"""`SymbolTable.holding` keeps its answers and narrows later ones; `share_literal` makes an alias cost
what one name does (node 26: `uv_tcp_listen`, tried as itself and then as `uv__tcp_listen`)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from utrace.elf.match import match_functions, share_literal
from utrace.elf.symbols import SymbolTable


class _Column(list[bytes]):
    """A name column that counts how often it is walked whole."""

    walks = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        _Column.walks += 1
        return super().__iter__()


def _table(names: list[str], as_bytes: bool) -> SymbolTable:
    n = len(names)
    common = {"addresses": [0x1000 + 16 * i for i in range(n)], "sizes": [16] * n, "bindings": [1] * n,
              "clones": [""] * n, "segments": [(0, 0, 1 << 20)]}  # fmt: skip
    if as_bytes:
        col = _Column(s.encode() for s in names)
        return SymbolTable("m", None, name_bytes=col, raw_bytes=col, **common)  # type: ignore[arg-type]
    return SymbolTable("m", None, names=list(names), raws=list(names), **common)  # type: ignore[arg-type]


NAMES = ["uv__tcp_listen", "uv_listen", "uv__pipe_listen", "uv_tcp_bind", "main", "uv_tcp_listenx", "x_listen"]


def test_an_alias_walks_the_names_once() -> None:
    table = _table(NAMES * 100, as_bytes=True)
    patterns = ["uv_tcp_listen", "uv__tcp_listen", "uv_listen"]
    share_literal([table], patterns)
    walks = _Column.walks
    found = {p: match_functions(table, p) for p in patterns}
    assert _Column.walks == walks  # every pattern looked for among the holders of "_listen" only
    fresh = _table(NAMES * 100, as_bytes=True)
    assert found == {p: match_functions(fresh, p) for p in patterns}
    assert [table.name_at(i) for i in found["uv__tcp_listen"]] == ["uv__tcp_listen"] * 100


@settings(max_examples=200, deadline=None)
@given(
    names=st.lists(st.text("ab_c\u00e9", max_size=8), max_size=30),
    first=st.text("ab_c\u00e9", min_size=1, max_size=3),
    more=st.lists(st.text("ab_c\u00e9", max_size=3), min_size=1, max_size=4),
    as_bytes=st.booleans(),
)
def test_narrowed_answers_are_the_answers(names: list[str], first: str, more: list[str], as_bytes: bool) -> None:
    """Oracle: `in` over each name. Asked `first`, then longer texts containing it (narrowed), then others."""
    table = _table(names, as_bytes)
    texts = [first, *(a + first + b for a, b in zip(more, reversed(more), strict=True)), *more]
    for text in texts:
        if text:
            assert table.holding(text) == {i for i, n in enumerate(names) if text in n}, text
