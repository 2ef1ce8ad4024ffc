"""utrace.output.lines: text for a shared pipe goes out in whole lines of at most PIPE_BUF bytes."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest
from _pytest.monkeypatch import MonkeyPatch
from hypothesis import given
from hypothesis import strategies as st

from utrace.output.lines import PIPE_BUF, shared, write_lines


class Writes(io.RawIOBase):
    """A raw file that records each write() it is given, as a pipe would see the syscalls."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.calls.append(bytes(b))
        return len(b)


def _text_out() -> tuple[io.TextIOWrapper, Writes]:
    raw = Writes()
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8"), raw


LINE_CHARS = st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",))


@given(st.lists(st.text(alphabet=LINE_CHARS, max_size=9000), min_size=1, max_size=60))
def test_whole_lines_in_writes_of_at_most_pipe_buf(lines: list[str]) -> None:
    out, raw = _text_out()
    text = "\n".join(lines) + "\n"
    write_lines(out, text, whole=True)
    assert b"".join(raw.calls) == text.encode()
    for call in raw.calls:
        assert call.endswith(b"\n")
        # a write longer than PIPE_BUF is only ever one line that is itself that long
        assert len(call) <= PIPE_BUF or call.count(b"\n") == 1


def test_many_short_lines_are_batched_not_written_one_by_one() -> None:
    out, raw = _text_out()
    lines = [f'{{"kind": "call", "n": {i}}}' for i in range(5000)]
    write_lines(out, "\n".join(lines) + "\n", whole=True)
    assert len(raw.calls) < 5000 // 50
    assert max(len(c) for c in raw.calls) <= PIPE_BUF


def test_pipes_and_terminals_are_shared_regular_files_are_not(tmp_path: os.PathLike[str]) -> None:
    r, w = os.pipe()
    with open(w, "w") as pipe_out, open(os.path.join(tmp_path, "f"), "w") as file_out:
        assert shared(pipe_out)
        assert not shared(file_out)
    os.close(r)
    assert not shared(io.StringIO())
    with open(os.devnull, "w") as null:
        assert not shared(null)  # benchmarks write there: no reason to cut writes


def test_a_failed_write_leaves_the_file_at_its_last_complete_line(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    """A full disk: write(2) takes part of the text, then fails; the cut line is removed."""
    path = tmp_path / "out.json"
    real_write = os.write
    budget = [60]

    def write(fd: int, data: bytes) -> int:  # what a file system with `budget` bytes left does
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_write(fd, bytes(data)[: budget[0]])
        budget[0] -= n
        return n

    with open(path, "w", encoding="utf-8") as out:
        write_lines(out, "first line\n", whole=False)
        monkeypatch.setattr("utrace.output.lines.os.write", write)
        with pytest.raises(OSError) as e:
            write_lines(out, "".join(f"line {i:03}\n" for i in range(20)), whole=False)
        monkeypatch.undo()
        assert e.value.errno == errno.ENOSPC
    text = path.read_text()
    assert text == "first line\n" + "".join(f"line {i:03}\n" for i in range(6))  # 60 bytes: 6 whole + 6 cut
