"""DT_NEEDED and DT_RUNPATH/DT_RPATH from `.dynamic`, to find the shared libraries a binary loads."""

from __future__ import annotations

import struct

from utrace.elf.reader import ElfImage

DT_NEEDED = 1
DT_RPATH = 15
DT_RUNPATH = 29


def needed_libraries(path: str) -> tuple[list[str], list[str]]:
    """(DT_NEEDED names, RUNPATH/RPATH folders) of an ELF file; ([], []) when it has no `.dynamic`."""
    with ElfImage(path) as image:
        dyn = image.section(".dynamic")
        dynstr = image.section(".dynstr")
        if dyn is None or dynstr is None:
            return [], []
        data = image.section_bytes(dyn)
        strings = image.section_bytes(dynstr)
    needed: list[str] = []
    paths: list[str] = []
    for tag, val in struct.iter_unpack("<qQ", data[: len(data) - len(data) % 16]):
        if tag == 0:
            break
        if tag in (DT_NEEDED, DT_RPATH, DT_RUNPATH) and val < len(strings):
            end = strings.find(b"\0", val)
            s = strings[val : end if end >= 0 else len(strings)].decode("utf-8", "replace")
            (needed if tag == DT_NEEDED else paths).append(s)
    return needed, [p for entry in paths for p in entry.split(":") if p]
