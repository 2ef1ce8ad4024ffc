"""symbols_for: the marshal cache under $XDG_CACHE_HOME/utrace, keyed by the file's identity and build-id."""

from __future__ import annotations

import marshal
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.elfgen import Sym, build_elf
from utrace.elf import index
from utrace.errors import ElfError
from utrace.store.cache import seal

SYMS = [Sym("main", 0x10), Sym("_ZN3foo3barEv", 0x20), Sym("f.cold", 0x30)]


@pytest.fixture(autouse=True)
def no_memory(monkeypatch):
    """Each call reads the cache file (tables this process has read are kept: see the test of that)."""
    monkeypatch.setattr(index, "_remember", lambda *a: None)
    monkeypatch.setattr(index, "_read", {})


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home / "utrace"


def _columns(t):
    return (t.names, t.raws, t.addresses, t.sizes, t.bindings, t.clones, t.segments)


def _fail(*args, **kwargs):
    raise AssertionError("read_symbols called although the cache holds the table")


def test_second_call_is_served_from_cache(tmp_path, cache_home, monkeypatch):
    path = build_elf(symtab=SYMS, build_id=b"\xab" * 20).write(tmp_path / "a.out")
    cold: list[str] = []
    first = index.symbols_for(path, on_cold=cold.append)
    assert cold == [path]
    files = os.listdir(cache_home)
    st = os.stat(path)
    key = f"{'ab' * 20}-{st.st_size}-{st.st_dev:x}-{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_ctime_ns:x}"
    assert index.cache_key(path) == key
    assert files == [f"symbols-v{index._FORMAT}-{key}.marshal"]
    monkeypatch.setattr(index, "read_symbols", _fail)
    second = index.symbols_for(path, on_cold=cold.append)
    assert cold == [path]  # no second cold read
    assert _columns(second) == _columns(first)
    assert second.build_id == "ab" * 20 and second.module == path
    assert second.names[1] == "foo::bar()"
    assert [second.raws[i] for i in second.entries()] == ["main", "_ZN3foo3barEv"]
    assert second.symbol(0) == first.symbol(0)


def test_a_table_read_once_is_not_read_again_until_the_file_changes(tmp_path, cache_home, monkeypatch):
    monkeypatch.undo()  # this process's memory of tables, and the cache directory again
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home.parent))
    monkeypatch.setattr(index, "_read", {})
    path = build_elf(symtab=SYMS, build_id=b"\xab" * 20).write(tmp_path / "a.out")
    first = index.symbols_for(path)
    reads: list[object] = []
    monkeypatch.setattr(index, "read_sealed", lambda f: reads.append(f))
    assert index.symbols_for(path) is first and reads == []
    assert index.symbols_for(path, use_cache=False) is not first
    os.utime(path, ns=(1, 1))  # the same bytes, another identity: read again (from the cache dir: refused)
    again = index.symbols_for(path)
    assert again is not first and len(reads) == 1 and _columns(again)[:-1] == _columns(first)[:-1]


def test_the_same_file_by_another_path_shares_the_entry_and_module_is_the_callers_path(
    tmp_path, cache_home, monkeypatch
):
    a = build_elf(symtab=SYMS).write(tmp_path / "a")
    index.symbols_for(a)
    monkeypatch.setattr(index, "read_symbols", _fail)
    through_root = f"/proc/self/root{a}"
    assert index.symbols_for(through_root).module == through_root


def test_a_copy_with_the_same_build_id_and_size_is_not_served_the_others_entry(tmp_path, cache_home):
    """A build-id is the file's to choose: a forged file with another's build-id and size (a hostile
    process's library) must not answer for the real one, nor the real one's entry for it."""
    real = build_elf(symtab=SYMS, build_id=b"\xee" * 20).write(tmp_path / "real")
    forged_syms = [Sym("main", 0x11), Sym("_ZN3foo3barEv", 0x21), Sym("f.cold", 0x31)]
    forged = build_elf(symtab=forged_syms, build_id=b"\xee" * 20).write(tmp_path / "forged")
    assert os.path.getsize(real) == os.path.getsize(forged)
    forged_first = index.symbols_for(forged).addresses
    real_first = index.symbols_for(real).addresses
    assert [a - b for a, b in zip(forged_first, real_first, strict=True)] == [1, 1, 1]
    assert index.symbols_for(forged).addresses == forged_first
    assert index.symbols_for(real).addresses == real_first
    assert len(list(cache_home.iterdir())) == 2


def test_an_entry_for_another_identity_is_refused(tmp_path, cache_home, monkeypatch):
    """An entry whose stored identity or load segments are not the file's is ignored (read cold)."""
    path = build_elf(symtab=SYMS).write(tmp_path / "a.out")
    good = index.symbols_for(path)
    [file] = list(cache_home.iterdir())
    payload = list(marshal.loads(file.read_bytes()[4:]))
    other = list(payload[1])
    other[3] += 1  # another inode
    calls = []
    real = index.read_symbols
    monkeypatch.setattr(index, "read_symbols", lambda *a: calls.append(1) or real(*a))
    for variant in ([*payload[:1], tuple(other), *payload[2:]], [*payload[:-1], [(0, 0, 1)]]):
        file.write_bytes(seal(marshal.dumps(tuple(variant))))
        assert _columns(index.symbols_for(path)) == _columns(good)
    assert calls == [1, 1]


def test_a_stripped_copy_with_the_same_build_id_is_not_served_the_original(tmp_path, cache_home):
    """strip keeps the build-id: the unstripped file's table must not answer for the stripped one."""
    full = build_elf(symtab=SYMS, build_id=b"\xcd" * 20).write(tmp_path / "full")
    stripped = build_elf(symtab=[], build_id=b"\xcd" * 20).write(tmp_path / "stripped")
    assert os.path.getsize(full) != os.path.getsize(stripped)
    assert len(index.symbols_for(full)) > 0
    assert len(index.symbols_for(stripped)) == 0
    assert len(index.symbols_for(full)) > 0  # and the other way round, from the cache


def test_without_build_id_keyed_by_file(tmp_path, cache_home, monkeypatch):
    path = build_elf(symtab=SYMS, build_id=None).write(tmp_path / "a.out")
    table = index.symbols_for(path)
    assert table.build_id is None
    [name] = os.listdir(cache_home)
    assert name.startswith(f"symbols-v{index._FORMAT}-none-")
    # Rewriting the file (new mtime/size) must not serve the old table.
    build_elf(symtab=[Sym("other", 0x10)], build_id=None, text_size=0x300).write(path)
    assert index.symbols_for(path).raws == ["other"]


@pytest.mark.parametrize("content", [b"", b"\x00garbage\xff" * 10, None])
def test_corrupt_cache_file_is_ignored(tmp_path, cache_home, content):
    path = build_elf(symtab=SYMS).write(tmp_path / "a.out")
    good = index.symbols_for(path)
    [file] = list(cache_home.iterdir())
    file.write_bytes(content if content is not None else file.read_bytes()[:-7])  # None: truncate
    table = index.symbols_for(path)
    assert _columns(table) == _columns(good)
    assert table.symbol(2).raw == "f.cold"


def test_every_single_byte_corruption_is_ignored_quickly(tmp_path, cache_home):
    """Without a checksum, one flipped byte in a list/tuple count makes marshal fill gigabytes."""
    path = build_elf(symtab=SYMS).write(tmp_path / "a.out")
    good = _columns(index.symbols_for(path))
    [file] = list(cache_home.iterdir())
    clean = file.read_bytes()
    signal.signal(signal.SIGALRM, signal.default_int_handler)
    signal.alarm(20)  # KeyboardInterrupt rather than a hung test run
    try:
        for pos in range(len(clean)):
            for flip in (0x50, 0xFF):
                file.write_bytes(clean[:pos] + bytes([clean[pos] ^ flip]) + clean[pos + 1 :])
                start = time.monotonic()
                assert _columns(index.symbols_for(path)) == good, (pos, flip)
                assert time.monotonic() - start < 1.0, (pos, flip)  # about 1 ms when ignored
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


JUNK = [5, None, "x", [5], (1, 2), b"\x01"]


def test_malformed_payload_is_ignored(tmp_path, cache_home):
    """A well-formed marshal file whose fields have the wrong shape (any field, any junk)."""
    path = build_elf(symtab=SYMS).write(tmp_path / "a.out")
    good = index.symbols_for(path)
    [file] = list(cache_home.iterdir())
    payload = marshal.loads(file.read_bytes()[4:])  # after the CRC-32
    assert isinstance(payload, tuple)
    variants = [payload[:-1], (*payload, 0), ["not", "a", "tuple"], 7]
    variants += [(*payload[:i], junk, *payload[i + 1 :]) for i in range(len(payload)) for junk in JUNK]
    for variant in variants:
        file.write_bytes(seal(marshal.dumps(variant)))  # a valid checksum: reaches the checks
        table = index.symbols_for(path)
        assert _columns(table) == _columns(good), variant


def test_non_utf8_names_round_trip_through_the_cache(tmp_path, cache_home, monkeypatch):
    path = build_elf(symtab=[Sym("bad\udcffname", 0x10), Sym("_Zx\udcfe", 0x20)]).write(tmp_path / "a")
    first = index.symbols_for(path)
    monkeypatch.setattr(index, "read_symbols", _fail)
    assert _columns(index.symbols_for(path)) == _columns(first)
    assert first.raws == ["bad\udcffname", "_Zx\udcfe"]


def test_use_cache_false_neither_reads_nor_writes(tmp_path, cache_home, monkeypatch):
    path = build_elf(symtab=SYMS).write(tmp_path / "a.out")
    index.symbols_for(path, use_cache=False)
    assert not cache_home.exists()
    index.symbols_for(path)
    calls = []
    real = index.read_symbols
    monkeypatch.setattr(index, "read_symbols", lambda *a: calls.append(1) or real(*a))
    index.symbols_for(path, use_cache=False)
    assert calls == [1]


def test_unwritable_cache_only_costs_speed(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # cache dir cannot be created under a file
    path = build_elf(symtab=SYMS).write(tmp_path / "a.out")
    assert index.symbols_for(path).raws == ["main", "_ZN3foo3barEv", "f.cold"]


def test_default_cache_dir_is_under_home(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = build_elf(symtab=SYMS).write(tmp_path / "a.out")
    index.symbols_for(path)
    assert len(list((tmp_path / "home" / ".cache" / "utrace").iterdir())) == 1


@pytest.mark.parametrize("make", ["missing", "directory", "not_elf"])
def test_bad_paths_raise_elf_error(tmp_path, cache_home, make):
    path = tmp_path / "x"
    if make == "directory":
        path.mkdir()
    elif make == "not_elf":
        path.write_bytes(b"hello world" * 10)
    with pytest.raises(ElfError):
        index.symbols_for(str(path))


def test_corrupt_length_does_not_allocate_gigabytes(tmp_path):
    """A string header claiming 2 GiB, read under a 1 GiB address-space limit: ignored, no MemoryError."""
    script = r"""
import os, resource, struct, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from utrace.store.cache import seal
from utrace.elf import index
good = index.symbols_for(sys.argv[1])
[file] = list((Path(os.environ["XDG_CACHE_HOME"]) / "utrace").iterdir())
file.write_bytes(seal(b"u" + struct.pack("<i", 0x7FFFFFF0) + b"abc"))
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
assert index.symbols_for(sys.argv[1]).raws == good.raws
"""
    path = build_elf(symtab=SYMS).write(tmp_path / "a.out")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-c", script, path, root], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_cache_is_pruned_least_recently_used_first(tmp_path, monkeypatch):
    """Entries are keyed by file identity, so rebuilt binaries keep adding them: the writer removes the
    least recently used of utrace's own files past the limit, and nothing else in the directory."""
    import os

    from utrace.store import cache

    (tmp_path / "toolchains").mkdir()
    (tmp_path / "notes.txt").write_bytes(b"x" * 5000)  # not a cache file of ours: never removed
    for i, name in enumerate(["symbols-a", "bpf-b", "plain-c", "symbols-d"]):
        f = tmp_path / name
        f.write_bytes(b"y" * 1000)
        os.utime(f, (1000 + i, 1000 + i))  # a is the least recently used, d the most
    assert cache.prune(tmp_path, limit=4000) == 0  # within the limit: nothing removed
    assert cache.prune(tmp_path, limit=2500) == 2000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "plain-c", "symbols-d", "toolchains"]
    monkeypatch.setenv("UTRACE_CACHE_MAX_MB", "0.001")  # 1048 bytes: written files count too
    cache.write_jobs([(tmp_path / "symbols-e", lambda: b"z" * 900)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "symbols-e", "toolchains"]
    monkeypatch.setenv("UTRACE_CACHE_MAX_MB", "nan")
    assert cache.max_cache_bytes() == 1024 << 20


def test_a_big_table_is_written_by_a_child(tmp_path, cache_home, monkeypatch):
    """A big table's entry is packed and written by a forked child (the tracer goes on meanwhile)."""
    monkeypatch.setattr(index, "_WRITE_BEHIND_COUNT", 2)
    pid = os.getpid()
    writers: list[int] = []
    real = index.seal
    monkeypatch.setattr(index, "seal", lambda body: writers.append(os.getpid()) or real(body))
    path = build_elf(symtab=SYMS).write(tmp_path / "a.out")
    table = index.symbols_for(path)
    assert writers == []  # not packed here
    deadline = time.monotonic() + 30
    while not list(cache_home.glob("symbols-*.marshal")) and time.monotonic() < deadline:
        time.sleep(0.05)
    index._read.clear()
    monkeypatch.setattr(index, "read_symbols", _fail)
    assert _columns(index.symbols_for(path)) == _columns(table) and os.getpid() == pid


def test_a_cache_writer_child_holds_none_of_our_descriptors(tmp_path):
    """The child writing cache files behind closes what it inherited: the other end of a pipe we
    close sees its end at once, not when the (slow) writer is done."""
    import select

    from utrace.store.cache import write_behind

    r, w = os.pipe()

    def slow() -> bytes:
        time.sleep(3)
        return b"x"

    write_behind([(tmp_path / "slow-file", slow)])
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], 2)
        assert ready and os.read(r, 1) == b""  # EOF: no process holds the write end any more
    finally:
        os.close(r)
