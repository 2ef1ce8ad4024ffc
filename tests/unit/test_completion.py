"""Completion candidates: names cut for typing, grouping when many match, the JVM catalogue."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from utrace.app.candidates import LIMIT, catalogue_names, narrow, probe_name
from utrace.runtimes.jvm import CATEGORIES, LAYOUTS, JvmRuntime


def test_probe_name_is_what_matches_every_overload():
    assert probe_name("demo::Shape::area(double) const") == "demo::Shape::area"
    assert probe_name("long demo::twice<long>(long)") == "demo::twice<long>"  # return type dropped
    assert probe_name("demo::operator()(int)") == "demo::operator()"
    assert probe_name("operator new(unsigned long)") == "operator new"
    assert probe_name("(anonymous namespace)::Foo::bar(int)") == "(anonymous namespace)::Foo::bar"
    assert probe_name("std::vector<int, std::allocator<int> >::push_back(int const&)") == (
        "std::vector<int, std::allocator<int> >::push_back"
    )
    assert probe_name("uv_run") == "uv_run"


def test_few_matches_are_returned_whole_and_sorted():
    names = ["uv_run", "uv_listen", "uv_loop_init", "node::Start", "uv__io_poll"]
    assert narrow(names, "uv_l") == ["uv_listen", "uv_loop_init"]
    assert narrow(names, "x") == []


def test_many_matches_are_grouped_by_their_next_part():
    names = [f"uv_fs_{i}" for i in range(80)] + [f"uv_tcp_{i}" for i in range(80)] + ["uv_run"]
    assert narrow(names, "uv_") == ["uv_fs_", "uv_run", "uv_tcp_"]
    cpp = [f"node::fs::F{i}" for i in range(150)] + [f"node::crypto::C{i}" for i in range(150)]
    assert narrow(cpp, "node::") == ["node::crypto::", "node::fs::"]
    go = [f"net/http.(*Client).M{i}" for i in range(200)] + ["net/http.Get"]
    assert narrow(go, "net/http.") == ["net/http.(*Client).", "net/http.Get"]


def test_a_single_group_grows_the_prefix_instead_of_ending_the_word():
    # one candidate "uv_" would make the shell add a space after it; the prefix grows instead
    names = [f"uv_fs_{i:03}" for i in range(150)] + [f"uv_fs_x{i:03}" for i in range(150)]
    out = narrow(names, "u")
    assert len(out) > 1 and all(o.startswith("uv_fs_") for o in out)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ab_:.(", min_size=1, max_size=12), max_size=400), st.text(alphabet="ab_", max_size=3))
def test_candidates_are_few_and_lead_to_real_names(names, incomplete):
    out = narrow(names, incomplete)
    assert len(out) <= LIMIT and out == sorted(set(out))
    for c in out:
        assert c.startswith(incomplete) and any(n.startswith(c) for n in names)
    matching = {n for n in names if n.startswith(incomplete)}
    if len(matching) <= LIMIT:
        assert set(out) == matching
    else:  # every matching name is reachable from some candidate, or the list was cut at LIMIT
        assert len(out) == LIMIT or all(any(n.startswith(c) for c in out) for n in matching)


def test_java_catalogue_first_then_hotspot_names():
    catalogue = JvmRuntime.command.catalogue
    assert catalogue is not None

    def java_names(incomplete: str) -> list[str]:
        return catalogue_names(catalogue, incomplete)

    assert java_names("") == sorted(CATEGORIES)
    assert java_names("class-") == ["class-init", "class-load", "class-unload"]
    assert java_names("hotspot:gc") == ["hotspot:gc__begin", "hotspot:gc__end"]
    assert java_names("thread__s") == sorted(n for n in LAYOUTS if n.startswith("thread__s"))


def test_names_a_process_controls_never_reach_the_shell_raw():
    """A symbol named with an escape sequence (a binary's names are the traced program's) is not offered:
    the shell would print the candidate to the terminal as it is."""
    names = ["hot", "hot\x1b]0;pwned\x07", "ho\x9bt", "hot\udc80x", "hotter"]
    assert narrow(names, "ho") == ["hot", "hotter"]


def test_pid_help_is_the_escaped_comm(tmp_path):
    import click

    from utrace.cli.completion import complete_pid

    me = os.getpid()
    with open(f"/proc/{me}/comm", "w") as f:
        f.write("py\x1b[2Jx")
    try:
        items = {c.value: c.help for c in complete_pid(click.Context(click.Command("x")), None, str(me))}  # type: ignore[arg-type]
    finally:
        with open(f"/proc/{me}/comm", "w") as f:
            f.write("python3")
    assert items[str(me)] == "py\\x1b[2Jx"
