"""V8's post-mortem metadata: the `v8dbg_*` data symbols Node.js builds export.

Each `v8dbg_NAME` is an `int` whose value (read from the file's data at the symbol's address) is an
object layout offset, an instance type or a tagging constant of the V8 inside this very binary
(V8's `tools/gen-postmortem-metadata.py`). Everything utrace reads from a V8 heap comes from here, never
from a table per Node version. A name that changed spelling across V8 versions is looked for under
each spelling it has had (`Oddball__kind_offset__int` in V8 11, `Oddball__kind__int` from 12 on); a
field's type suffix (`__Object`, `__Tagged_Object_`) is ignored. A needed constant missing from the file
is a refusal that names it.
"""

from __future__ import annotations

import struct

from utrace.elf.reader import SHT_DYNSYM, SHT_NOBITS, SHT_SYMTAB, ElfImage
from utrace.errors import ElfError
from utrace.v8layout import V8Layout

_SYM = struct.Struct("<IBBHQQ")
_PREFIX = b"v8dbg_"
_MAX_CONSTANTS = 20000


def read_constants(path: str) -> dict[str, int]:
    """Every `v8dbg_*` symbol of `path` (.dynsym and .symtab) -> its int value (without the prefix).

    Raises:
        ElfError: the file cannot be read.
    """
    out: dict[str, int] = {}
    with ElfImage(path) as image:
        for sec in image.sections:
            if sec.type not in (SHT_SYMTAB, SHT_DYNSYM):
                continue
            strsec = image.section_at(sec.link)
            if strsec is None or strsec.type == SHT_NOBITS:
                continue
            strtab = image.section_bytes(strsec)
            table = image.section_bytes(sec)
            n = len(table) // _SYM.size
            for name_off, _info, _other, shndx, value, size in _SYM.iter_unpack(table[: n * _SYM.size]):
                if shndx == 0 or size not in (4, 8) or not strtab.startswith(_PREFIX, name_off):
                    continue
                end = strtab.find(b"\0", name_off)
                name = strtab[name_off + len(_PREFIX) : end if end >= 0 else len(strtab)].decode("ascii", "replace")
                if name in out:
                    continue
                off = image.vaddr_to_offset(value)
                if off is not None:
                    out[name] = int.from_bytes(image.read(off, 4), "little", signed=True)
                elif any(s.vaddr + s.filesz <= value < s.vaddr + s.memsz for s in image.segments):
                    out[name] = 0  # a zero-initialised int lives in .bss: 0 is its value

                if len(out) > _MAX_CONSTANTS:
                    raise ElfError(f"{path}: implausibly many v8dbg_ symbols")
    return out


class V8MetaError(ElfError):
    """The binary lacks a constant utrace needs (or has none): the reason names it."""


# field -> the constant names it may have had (first found wins), type suffixes ignored
_FIELDS: dict[str, tuple[str, ...]] = {
    "heap_object_tag": ("HeapObjectTag",),
    "heap_object_tag_mask": ("HeapObjectTagMask",),
    "smi_tag_mask": ("SmiTagMask",),
    "smi_shift_size": ("SmiShiftSize",),
    "tagged_size": ("TaggedSize",),
    "map": ("class_HeapObject__map__",),
    "instance_type": ("class_Map__instance_type__",),
    "first_nonstring_type": ("FirstNonstringType",),
    "string_repr_mask": ("StringRepresentationMask",),
    "string_encoding_mask": ("StringEncodingMask",),
    "seq_tag": ("SeqStringTag",),
    "cons_tag": ("ConsStringTag",),
    "thin_tag": ("ThinStringTag",),
    "sliced_tag": ("SlicedStringTag",),
    "one_byte_tag": ("OneByteStringTag",),
    "jsfunction_shared": ("class_JSFunction__shared__",),
    "sfi_name_or_scope_info": ("class_SharedFunctionInfo__name_or_scope_info__",),
    "sfi_script": ("class_SharedFunctionInfo__script__", "class_SharedFunctionInfo__script_or_debug_info__"),
    "string_length": ("class_String__length__",),
    "seq_one_byte_chars": ("class_SeqOneByteString__chars__",),
    "seq_two_byte_chars": ("class_SeqTwoByteString__chars__",),
    "cons_first": ("class_ConsString__first__",),
    "cons_second": ("class_ConsString__second__",),
    "thin_actual": ("class_ThinString__actual__",),
    "sliced_parent": ("class_SlicedString__parent__",),
    "sliced_offset": ("class_SlicedString__offset__",),
    "heap_number_value": ("class_HeapNumber__value__",),
    "oddball_kind": ("class_Oddball__kind__", "class_Oddball__kind_offset__"),
    "script_name": ("class_Script__name__",),
    "scope_info_type": ("type_ScopeInfo__SCOPE_INFO_TYPE",),
    "heap_number_type": ("type_HeapNumber__HEAP_NUMBER_TYPE",),
    "oddball_type": ("type_Oddball__ODDBALL_TYPE",),
    "js_function_type": ("type_JSFunction__JS_FUNCTION_TYPE",),
    "js_array_type": ("type_JSArray__JS_ARRAY_TYPE",),
    "js_object_type": ("type_JSObject__JS_OBJECT_TYPE",),
    "scopeinfo_first_vars": ("scopeinfo_idx_first_vars",),
    "scopeinfo_ncontextlocals": ("scopeinfo_idx_ncontextlocals",),
    "oddball_false": ("OddballFalse",),
    "oddball_true": ("OddballTrue",),
    "oddball_null": ("OddballNull",),
    "oddball_undefined": ("OddballUndefined",),
    "map_constructor": ("class_Map__constructor_or_back_pointer__",),
    "map_prototype": ("class_Map__prototype__",),
    "map_type": ("type_Map__MAP_TYPE",),
    "sfi_type": ("type_SharedFunctionInfo__SHARED_FUNCTION_INFO_TYPE",),
    "fp_function": ("off_fp_function",),
    "code_kind_mask": ("CodeKindFieldMask",),
    "code_kind_shift": ("CodeKindFieldShift",),
    "code_kind_baseline": ("CodeKindBaseline",),
    "code_kind_interpreted": ("CodeKindInterpretedFunction",),
}
_OPTIONAL: dict[str, tuple[str, ...]] = {
    "js_array_length": ("class_JSArray__length__",),
    "jsobject_header_size": ("class_JSObject__internal_fields__",),
    "first_js_function_type": ("FirstJSFunctionType",),
    "last_js_function_type": ("LastJSFunctionType",),
    "jsfunction_code": ("class_JSFunction__code__",),
    "code_flags": ("class_Code__flags__",),
    "fp_context_or_frame_type": ("off_fp_context_or_frame_type",),
    "script_type": ("type_Script__SCRIPT_TYPE",),
    "script_source": ("class_Script__source__",),
    "code_type": ("type_Code__CODE_TYPE",),
    "code_instruction_start": ("class_Code__instruction_start__",),
}


def _find(constants: dict[str, int], names: tuple[str, ...]) -> tuple[str, int] | None:
    for want in names:
        if want in constants:
            return want, constants[want]
        if want.endswith("__"):
            hits = sorted(k for k in constants if k.startswith(want) and "__" not in k[len(want) :])
            if hits:
                return hits[0], constants[hits[0]]
    return None


def layout_from(constants: dict[str, int], where: str) -> V8Layout:
    """The layout from a binary's constants.

    Raises:
        V8MetaError: a needed constant is missing, or the heap is one utrace does not read (pointer
            compression: 4-byte tagged values).
    """
    if not constants:
        raise V8MetaError(f"{where} has no v8dbg_* symbols (V8's post-mortem metadata): its JavaScript cannot be read")
    values: dict[str, int] = {}
    missing = []
    for field, names in _FIELDS.items():
        got = _find(constants, names)
        if got is None:
            missing.append("v8dbg_" + names[0].rstrip("_"))
        else:
            values[field] = got[1]
    if missing:
        raise V8MetaError(f"{where} lacks V8 metadata utrace needs: {', '.join(missing)}")
    if values["tagged_size"] != 8:
        raise V8MetaError(
            f"{where}: V8 uses {values['tagged_size']}-byte tagged values (pointer compression), "
            "which utrace does not read"
        )
    optional = {}
    for field, names in _OPTIONAL.items():
        got = _find(constants, names)
        optional[field] = got[1] if got is not None else None
    tag = values["heap_object_tag"]

    def off(name: str) -> int:
        return values[name] - tag  # offsets are from the object start; pointers carry the tag

    def opt(name: str) -> int | None:
        v = optional[name]
        return None if v is None else v - tag

    object_fields = {
        "map", "jsfunction_shared", "sfi_name_or_scope_info", "sfi_script", "string_length",
        "seq_one_byte_chars", "seq_two_byte_chars", "cons_first", "cons_second", "thin_actual",
        "sliced_parent", "sliced_offset", "heap_number_value", "oddball_kind", "script_name", "instance_type",
        "map_constructor", "map_prototype",
    }  # fmt: skip
    kwargs = {k: (off(k) if k in object_fields else v) for k, v in values.items() if k != "smi_shift_size"}
    # JSArray.length: no Node build names it (V8 moved JSArray to Torque); it is JSArray's only field
    # of its own (`class JSArray extends JSObject { length: Number }`), so it sits where a JSObject's
    # header ends: `JSObject::internal_fields`, which gen-postmortem-metadata.py defines as
    # JSObject::kHeaderSize. Checked against the program's own `arr.length` (tests/e2e/test_js_objects.py).
    array_length = opt("js_array_length")
    if array_length is None:
        array_length = opt("jsobject_header_size")
    return V8Layout(
        **kwargs,
        smi_shift=values["smi_shift_size"] + 1,
        js_array_length=array_length,
        first_js_function_type=optional["first_js_function_type"],
        last_js_function_type=optional["last_js_function_type"],
        jsfunction_code=opt("jsfunction_code"),
        code_flags=opt("code_flags"),
        fp_context_or_frame_type=optional["fp_context_or_frame_type"],
        script_type=optional["script_type"],
        script_source=opt("script_source"),
        code_type=optional["code_type"],
        code_instruction_start=opt("code_instruction_start"),
    )


def v8_layout(path: str) -> V8Layout:
    """The V8 layout of the binary at `path`.

    Raises:
        V8MetaError: see `layout_from`.
        ElfError: the file cannot be read.
    """
    return layout_from(read_constants(path), path)


__all__ = ["V8Layout", "V8MetaError", "layout_from", "read_constants", "v8_layout"]


def indirect_jumps(path: str, start: int, size: int) -> list[int]:
    """Addresses of the `jmp REG` instructions of the x86-64 function at [start, start + size),
    decoded linearly from its start (capstone): where a V8 builtin hands a call on to other code."""
    return exits(path, start, size)[0]


def exits(path: str, start: int, size: int) -> tuple[list[int], list[int]]:
    """(`jmp REG` addresses, `ret` addresses) of the x86-64 function at [start, start + size), decoded
    linearly from its start (capstone).

    Raises:
        ElfError: the bytes cannot be read or do not decode to the end.
    """
    import capstone

    with ElfImage(path) as image:
        off = image.vaddr_to_offset(start)
        if off is None or size <= 0 or size > 1 << 20:
            raise ElfError(f"{path}: no code at {start:#x}")
        code = image.read(off, size)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    jumps: list[int] = []
    rets: list[int] = []
    end = start
    for insn in md.disasm_lite(code, start):
        addr, length, mnemonic, op = insn
        end = addr + length
        if mnemonic == "jmp" and op.strip() in _REGS:
            jumps.append(addr)
        elif mnemonic == "ret":
            rets.append(addr)
    if end != start + size:
        raise ElfError(f"{path}: the code at {start:#x} does not decode to its end")
    return jumps, rets


_REGS = frozenset(
    ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"]
)
