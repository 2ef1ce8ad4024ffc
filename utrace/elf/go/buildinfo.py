"""Go build information: the toolchain version, module info and build settings a Go binary records.

Read from `.go.buildinfo` (debug/buildinfo's format: inline strings since Go 1.18, pointers before),
`.note.go.buildid`, and the `runtime.buildVersion` symbol of binaries older than the build info.
The register-ABI decision (`go_abi`) follows from the version, else from the pclntab format.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from utrace.elf.buildid import iter_notes
from utrace.elf.reader import EM_AARCH64, EM_X86_64, ET_DYN, PF_W, PF_X, SHT_NOBITS
from utrace.errors import ElfError

if TYPE_CHECKING:
    from utrace.elf.go.gobin import GoBinary

BUILDINFO_MAGIC = b"\xff Go buildinf:"
_BUILDINFO_ALIGN = 16
_BUILDINFO_SCAN = 64 * 1024
_FLAG_BIG_ENDIAN = 0x1
_FLAG_VERSION_INL = 0x2
NT_GO_BUILD_ID = 4

EM_PPC64 = 21
EM_S390 = 22
EM_RISCV = 243
EM_LOONGARCH = 258
_ARCH = {EM_X86_64: "amd64", EM_AARCH64: "arm64", EM_PPC64: "ppc64le", EM_S390: "s390x", EM_RISCV: "riscv64"}
_ARCH[EM_LOONGARCH] = "loong64"

# First version with the register ABI per GOARCH (go.md §1.1); absent: stack ABI only.
_REGABI_SINCE = {"amd64": (1, 17), "arm64": (1, 18), "ppc64": (1, 18), "ppc64le": (1, 18)}


Version = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class GoInfo:
    """What a Go binary says about itself.

    Attributes:
        path: the file.
        version: the toolchain version as Go prints it ("go1.19.8", "go1.21rc2", "devel go1.23-abc ..."),
            None when nothing in the file records it (Go < 1.13 stripped).
        version_tuple: (major, minor, patch) for numeric comparison, None when `version` is None or unparsable.
        version_source: where the version came from: "buildinfo", "runtime.buildVersion" or "" (unknown).
        build_id: the Go build ID from `.note.go.buildid` ("actionID/contentID..."), None if absent.
        main_path: the main package path ("path" line of the module info, e.g. "command-line-arguments").
        module_path: the main module path ("mod" line), None for GOPATH builds.
        module_version: the main module version ("(devel)", "v1.2.3"), None when there is no "mod" line.
        deps: (path, version) of each dependency module ("dep" lines).
        settings: build settings, "build KEY=VALUE" lines (Go 1.18+): "-buildmode", "-compiler",
            "CGO_ENABLED", "GOARCH", "GOOS", "GOAMD64", "-ldflags" (unquoted), "vcs.*" ...
        pie: ET_DYN file or -buildmode=pie.
        cgo: CGO_ENABLED from the settings, else whether `.symtab` has `x_cgo_init` (runtime/cgo's C part;
            `_cgo_init` is a plain runtime variable present in every binary); None when unknown.
        arch: GOARCH derived from the ELF machine ("amd64", "arm64", ...; "em<N>" for others).
        has_symtab: a non-empty `.symtab` (not built with -ldflags=-s, not stripped).
        has_dwarf: a `.debug_info` or `.zdebug_info` section.
        abi: "regabi" (ABIInternal, arguments in registers) or "stack" (ABI0).
        abi_source: why: "version go1.19.8" or "pclntab magic go1.18-1.19 (version unknown)".
    """

    path: str
    version: str | None
    version_tuple: Version | None
    version_source: str
    build_id: str | None
    main_path: str | None
    module_path: str | None
    module_version: str | None
    deps: tuple[tuple[str, str], ...]
    settings: dict[str, str]
    pie: bool
    cgo: bool | None
    arch: str
    has_symtab: bool
    has_dwarf: bool
    abi: str
    abi_source: str


_VERSION_RE = re.compile(r"go(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse_version(version: str | None) -> Version | None:
    """Numeric (major, minor, patch) of a Go version string; None when it names no release.

    "go1.19.8" -> (1, 19, 8); "go1.21rc2" and "go1.21" -> (1, 21, 0); "go1.9" -> (1, 9, 0);
    "devel go1.23-abcdef ..." -> (1, 23, 0); "devel +abc" -> None. Compare tuples, never strings:
    "go1.9" < "go1.20" only numerically.
    """
    if not version:
        return None
    s = version.strip()
    # "devel go1.23-abc ..." names its base release somewhere inside; a release string starts with it.
    m = _VERSION_RE.search(s) if s.startswith("devel") else _VERSION_RE.match(s.split()[0] if s.split() else s)
    # No release has a 10-digit number; garbage may have thousands, which int() refuses past 4300.
    if not m or any(len(g) > 9 for g in m.groups() if g):
        return None
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)


def version_at_least(version: str | Version | None, minimum: tuple[int, ...]) -> bool:
    """True when `version` (string or tuple) is numerically >= `minimum` (e.g. (1, 17))."""
    v = parse_version(version) if isinstance(version, str) or version is None else version
    return v is not None and v >= tuple(minimum) + (0,) * (3 - len(minimum))


def strip_modinfo(mod: bytes) -> bytes:
    """Remove the 16-byte sentinels around runtime.modinfo (they are not text), as debug/buildinfo does."""
    if len(mod) >= 33 and mod[-17] == 0x0A:
        return mod[16:-16]
    return mod


def parse_buildinfo(data: bytes, read_va: Callable[[int, int], bytes] | None = None) -> tuple[str, bytes]:
    """Decode a `.go.buildinfo` blob that starts with its magic: (version, raw modinfo with sentinels).

    Args:
        data: the bytes from the magic on (at least 32).
        read_va: for the pointer format (Go < 1.18): read N bytes at a virtual address.

    Raises:
        ElfError: bad magic, truncated, or a pointer that leads nowhere.
    """
    if len(data) < 32 or not data.startswith(BUILDINFO_MAGIC):
        raise ElfError("no Go build info header")
    ptr_size, flags = data[14], data[15]
    if flags & _FLAG_VERSION_INL:
        from utrace.elf.dwarf import uleb128  # (imported here: `utrace native` asks only whether a file is Go)

        vers_len, pos = uleb128(data, 32)
        if pos + vers_len > len(data):
            raise ElfError("truncated Go build info (version)")
        version = data[pos : pos + vers_len]
        pos += vers_len
        mod_len, pos = uleb128(data, pos)
        if pos + mod_len > len(data):
            raise ElfError("truncated Go build info (modinfo)")
        return version.decode("utf-8", "replace"), bytes(data[pos : pos + mod_len])
    if ptr_size not in (4, 8):
        raise ElfError(f"Go build info has pointer size {ptr_size}")
    if read_va is None:
        raise ElfError("Go build info uses pointers but no address reader was given")
    order = ">" if flags & _FLAG_BIG_ENDIAN else "<"
    word = order + ("Q" if ptr_size == 8 else "I")
    if len(data) < 16 + 2 * ptr_size:
        raise ElfError("truncated Go build info (pointers)")
    (vers_ptr,) = struct.unpack_from(word, data, 16)
    (mod_ptr,) = struct.unpack_from(word, data, 16 + ptr_size)

    from utrace.elf.go.pclntab import MAX_NAME

    def go_string(ptr: int) -> bytes:
        hdr = read_va(ptr, 2 * ptr_size)
        s_ptr, s_len = struct.unpack(order + word[1] * 2, hdr)
        if s_len > MAX_NAME * 16:
            raise ElfError("Go build info string too long")
        return read_va(s_ptr, s_len) if s_len else b""

    version = go_string(vers_ptr)
    mod = go_string(mod_ptr) if mod_ptr else b""
    return version.decode("utf-8", "replace"), mod


def _unquote(value: str) -> str:
    """Undo Go's strconv.Quote that `go build` applies to setting values with spaces or quotes."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            out = json.loads(value)
            return out if isinstance(out, str) else value
        except ValueError:
            return value[1:-1]
    return value


@dataclass(slots=True)
class ModInfo:
    """Parsed runtime.modinfo (the text `go version -m` prints after the first line)."""

    main_path: str | None = None
    module_path: str | None = None
    module_version: str | None = None
    deps: list[tuple[str, str]] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)


def parse_modinfo(mod: bytes) -> ModInfo:
    """Parse the lines of runtime.modinfo (sentinels stripped here if still present)."""
    info = ModInfo()
    text = strip_modinfo(mod).decode("utf-8", "replace")
    for line in text.splitlines():
        parts = line.split("\t")
        kind = parts[0]
        if kind == "path" and len(parts) >= 2:
            info.main_path = parts[1]
        elif kind == "mod" and len(parts) >= 2:
            info.module_path = parts[1]
            info.module_version = parts[2] if len(parts) >= 3 else None
        elif kind == "dep" and len(parts) >= 3:
            info.deps.append((parts[1], parts[2]))
        elif kind == "build" and len(parts) >= 2:
            key, sep, value = "\t".join(parts[1:]).partition("=")
            if sep:
                info.settings[key] = _unquote(value)
    return info


def find_buildinfo(blob: bytes | memoryview) -> int:
    """Offset of the build info magic at a 16-byte aligned offset in `blob`, or -1."""
    pos = 0
    raw = bytes(blob)
    while True:
        pos = raw.find(BUILDINFO_MAGIC, pos)
        if pos < 0:
            return -1
        if pos % _BUILDINFO_ALIGN == 0:
            return pos
        pos += 1


def build_id(binary: GoBinary) -> str | None:
    """The Go build ID from `.note.go.buildid` (section, else any PT_NOTE segment)."""
    blobs: list[bytes] = []
    sec = binary.img.section(".note.go.buildid")
    if sec is not None and sec.type != SHT_NOBITS:
        blobs.append(binary.img.section_bytes(sec))
    else:
        blobs.extend(_note_segments(binary))
    for blob in blobs:
        for name, ntype, desc in iter_notes(blob):
            if name == b"Go" and ntype == NT_GO_BUILD_ID:
                return desc.rstrip(b"\0").decode("utf-8", "replace")
    return None


def _note_segments(binary: GoBinary) -> Iterator[bytes]:
    for off, filesz in binary.img.note_segments:
        if 0 < filesz <= 1 << 20 and off + filesz <= binary.img.size:
            yield binary.img.read(off, filesz)


def buildinfo_blob(binary: GoBinary) -> bytes | None:
    """The `.go.buildinfo` bytes from the magic on (section, else debug/buildinfo's segment), or None."""
    sec = binary.img.section(".go.buildinfo")
    if sec is not None and sec.type != SHT_NOBITS:
        blob = binary.img.read(sec.offset, min(sec.size, _BUILDINFO_SCAN))
    else:
        # debug/buildinfo: without the section, the first writable non-executable PT_LOAD.
        seg = next((s for s in binary.img.segments if s.flags & PF_W and not s.flags & PF_X), None)
        if seg is None:
            return None
        blob = binary.img.read(seg.offset, min(seg.filesz, _BUILDINFO_SCAN))
    pos = find_buildinfo(blob)
    return blob[pos:] if pos >= 0 else None


def read_info(binary: GoBinary) -> GoInfo | None:
    """What `binary` says about itself (`GoInfo`), or None when it is not a Go binary.

    Raises:
        ElfError: corrupt Go build info.
    """
    build_id = binary.build_id()
    blob = buildinfo_blob(binary)
    syms = binary.symbols()
    if build_id is None and blob is None and "runtime.buildVersion" not in syms:
        return None
    version: str | None = None
    source = ""
    mod = ModInfo()
    if blob is not None:
        try:
            v, raw_mod = parse_buildinfo(blob, binary.read_va_memory)
        except ElfError as e:
            raise ElfError(f"{binary.path}: corrupt Go build info ({e})") from None
        version, source = v or None, "buildinfo" if v else ""
        mod = parse_modinfo(raw_mod)
    if version is None and "runtime.buildVersion" in syms:
        try:
            va = syms["runtime.buildVersion"]
            ptr, n = binary.read_word(va), int(struct.unpack("<Q", binary.read_va(va + 8, 8))[0])
            if 0 < n < 256:
                version, source = binary.read_va(ptr, n).decode("utf-8", "replace"), "runtime.buildVersion"
        except ElfError:
            version = None
    arch = _ARCH.get(binary.img.machine, f"em{binary.img.machine}")
    vt = parse_version(version)
    pie = binary.img.e_type == ET_DYN or mod.settings.get("-buildmode") == "pie"
    cgo_setting = mod.settings.get("CGO_ENABLED")
    cgo: bool | None
    if cgo_setting is not None:
        cgo = cgo_setting == "1"
    elif binary.has_symtab:
        cgo = "x_cgo_init" in syms
    else:
        cgo = None
    abi, abi_source = go_abi(binary, arch, version, vt)
    names = {s.name for s in binary.img.sections}
    return GoInfo(
        path=binary.path,
        version=version,
        version_tuple=vt,
        version_source=source,
        build_id=build_id,
        main_path=mod.main_path,
        module_path=mod.module_path,
        module_version=mod.module_version,
        deps=tuple(mod.deps),
        settings=dict(mod.settings),
        pie=pie,
        cgo=cgo,
        arch=arch,
        has_symtab=binary.has_symtab,
        has_dwarf=".debug_info" in names or ".zdebug_info" in names,
        abi=abi,
        abi_source=abi_source,
    )


def go_abi(binary: GoBinary, arch: str, version: str | None, vt: Version | None) -> tuple[str, str]:
    """("regabi" or "stack", why): from the version when known, else from the pclntab format."""
    since = _REGABI_SINCE.get(arch)
    if vt is not None:
        return ("regabi" if since is not None and vt >= (*since, 0) else "stack"), f"version {version}"
    if since is None:
        return "stack", f"{arch} has no register ABI support here (version unknown)"
    from utrace.elf.go.pclntab import MAGIC_116, MAGIC_118, MAGIC_120

    try:
        tab = binary.pclntab()
    except ElfError:
        return "stack", "version unknown and no pclntab: assumed stack ABI"
    if tab.magic in (MAGIC_118, MAGIC_120):
        return "regabi", f"pclntab magic {tab.version_range} (version unknown)"
    # 1.16 and 1.17 share the table format; runtime.spillArgs exists only with the 1.17 register ABI.
    if tab.magic == MAGIC_116 and arch == "amd64" and tab.lookup("runtime.spillArgs") is not None:
        return "regabi", "pclntab magic go1.16-1.17 with runtime.spillArgs (version unknown)"
    return "stack", f"pclntab magic {tab.version_range} (version unknown)"
