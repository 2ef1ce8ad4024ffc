"""`--count --by ARG` and `--hist=ARG` on the command line: bad requests get one line and exit 2, and
`--hist` stays a flag (only `--hist=ARG` takes a value). Real subprocesses, no root needed."""

from __future__ import annotations

import pytest

from tests.unit.test_cli_errors import TRUE, USAGE, assert_one_error, files, run

__all__ = ["files"]  # the fixture, shared with test_cli_errors

CASES = [
    ("by-without-count", ["native", "{demo}", "demo_greet", "--by", "name", "--dump-bpf"], "add --count"),
    ("by-empty", ["native", "{demo}", "demo_greet", "--count", "--by", "", "--dump-bpf"], "--by needs an argument"),
    ("hist-empty", ["native", "{demo}", "demo_greet", "--hist=", "--dump-bpf"], "--hist=ARG needs an argument name"),
    ("by-and-hist-arg", ["native", "{demo}", "demo_greet", "--count", "--by", "a", "--hist=b"], "exclude each other"),
    ("hist-and-hist-arg", ["native", "{demo}", "demo_greet", "--hist", "--hist=b"], "exclude each other"),
    ("count-and-hist-arg", ["native", "{demo}", "demo_greet", "--count", "--hist=b"], "exclude each other"),
    ("top-and-by", ["native", "{demo}", "demo_greet", "--top", "--count", "--by", "a"], "exclude each other"),
    (
        "hist-space-arg",
        ["native", "{demo}", "demo_greet", "--hist", "n", "--dump-bpf"],
        "a histogram of argument ARG is --hist=ARG",
    ),
    ("ret-and-by", ["native", "{demo}", "demo_greet", "--count", "--by", "a", "--ret"], "name the return value"),
    (
        "unknown-arg",
        ["native", "{demo}", "demo_greet(const char *name, long n)", "--count", "--by", "nme", "--dump-bpf"],
        "no traced probe has an argument 'nme'; available: demo_greet: name, n",
    ),
    (
        "hist-of-a-string",
        ["native", "{demo}", "demo_greet(const char *name, long n)", "--hist=name", "--dump-bpf"],
        "name of demo_greet is a string, and --hist=ARG needs an integer",
    ),
    (
        "usdt-names",
        ["java", "--binary", "{jdk}", "class-load", "--count", "--by", "klass", "--dump-bpf"],
        "hotspot:class__loaded: class, loader, shared",
    ),
]


@pytest.mark.parametrize(("argv", "contains"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error(files, tmp_path, argv, contains):  # type: ignore[no-untyped-def]
    r = run(*(a.format(**files) for a in argv), cache=tmp_path / "cache")
    assert_one_error(r, USAGE, contains)
    assert r.stdout == ""


def test_hist_alone_is_still_the_latency_flag_before_a_probe(files, tmp_path):  # type: ignore[no-untyped-def]
    """`--hist demo_greet`: the flag, then a probe (not ARG "demo_greet" and no probe)."""
    r = run("native", files["demo"], "--hist", "demo_greet", "--dump-bpf", cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert "hist, 65536" in r.stdout and "by_counts" not in r.stdout


def test_hist_arg_and_count_by_generate_the_keyed_maps(files, tmp_path):  # type: ignore[no-untyped-def]
    sig = "demo_greet(const char *name, long n)"
    r = run("native", files["demo"], sig, "--hist=n", "--dump-bpf", cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert "by_counts" in r.stdout and "bpf_log2l" in r.stdout and "char s[" not in r.stdout
    r = run("native", files["demo"], sig, "--count", "--by", "name", "--max-len", "300", "--dump-bpf",
            cache=tmp_path / "cache")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "char s[304];" in r.stdout and "bpf_probe_read_user_str" in r.stdout
    assert TRUE  # the shared helpers are imported from test_cli_errors
