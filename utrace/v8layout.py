"""The layout of a V8 heap as one binary's V8 has it: plain data, read by `utrace.elf.v8meta` from the
binary's `v8dbg_*` constants and used by the probes that read JavaScript values."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class V8Layout:
    """What utrace reads from a V8 heap, as this binary's V8 lays it out (byte offsets into objects,
    already corrected for the heap-object tag: add them to a tagged pointer)."""

    heap_object_tag: int
    heap_object_tag_mask: int
    smi_tag_mask: int
    smi_shift: int  # SmiShiftSize + SmiTagSize: a Smi's value is the word >> smi_shift
    tagged_size: int
    map: int  # HeapObject.map
    instance_type: int  # Map.instance_type (u16)
    first_nonstring_type: int
    string_repr_mask: int
    string_encoding_mask: int
    seq_tag: int
    cons_tag: int
    thin_tag: int
    sliced_tag: int
    one_byte_tag: int
    jsfunction_shared: int
    sfi_name_or_scope_info: int
    sfi_script: int
    string_length: int  # i32
    seq_one_byte_chars: int
    seq_two_byte_chars: int
    cons_first: int
    cons_second: int
    thin_actual: int
    sliced_parent: int
    sliced_offset: int
    heap_number_value: int
    oddball_kind: int
    script_name: int
    scope_info_type: int
    heap_number_type: int
    oddball_type: int
    js_function_type: int
    js_array_type: int
    js_object_type: int
    scopeinfo_first_vars: int  # index (in tagged slots after the map) of ScopeInfo's variable part
    scopeinfo_ncontextlocals: int
    oddball_false: int
    oddball_true: int
    oddball_null: int
    oddball_undefined: int
    map_constructor: int  # Map.constructor_or_back_pointer
    map_prototype: int  # Map.prototype (a JSReceiver or null)
    map_type: int  # MAP_TYPE
    sfi_type: int  # SHARED_FUNCTION_INFO_TYPE
    js_array_length: int | None  # JSArray.length (a Smi); None when the binary does not say
    first_js_function_type: int | None  # the JSFunction instance types (class constructors have their
    last_js_function_type: int | None  # own): None when the binary does not say (node 20)
    fp_function: int  # frame pointer offset of the JSFunction slot in a JS frame
    jsfunction_code: int | None  # JSFunction.code (V8 >= 11.x with Code objects), None when absent
    code_flags: int | None  # Code.flags (u32) and its kind field
    code_kind_mask: int
    code_kind_shift: int
    code_kind_baseline: int
    code_kind_interpreted: int
    # --stack in node: the frame slot of a context or a frame-type marker (V8's StackFrame::ComputeType);
    # None when the binary does not say
    fp_context_or_frame_type: int | None = None
    script_type: int | None = None  # the instance type of a Script
    script_source: int | None = None  # Script.source (a String, or undefined)
    code_type: int | None = None  # the instance type of a Code (the object JSFunction.code points at)
    code_instruction_start: int | None = None  # Code.instruction_start (an untagged address)


def scopeinfo_position_slot(layout: V8Layout) -> tuple[int, int] | None:
    """Where a function's ScopeInfo holds its start position (a Smi; its end position, a Smi, is the
    next slot): the slot index (in tagged slots after the map) is `base + per_local * n`, `(base,
    per_local)` returned here, n being the ScopeInfo's context-local count (per_local 2: after the
    variable part, which is n + 1 slots instead when the names are one table, 75 or more locals). It
    follows from the header's size (v8dbg_scopeinfo_idx_first_vars): a header of flags, parameter count
    and context-local count (V8 before 12.x) puts the position info after the variable part (2 slots per
    context local) and the three function-name slots; two slots more (V8 12.x on) are the position info, right after the
    context-local count. Any other header: None (positions not read). utrace.probes.v8values (the
    probes) and utrace.process.v8frames (stack frames) both read positions by this rule."""
    if layout.scopeinfo_first_vars == layout.scopeinfo_ncontextlocals + 1:
        return layout.scopeinfo_first_vars + 3, 2
    if layout.scopeinfo_first_vars == layout.scopeinfo_ncontextlocals + 3:
        return layout.scopeinfo_ncontextlocals + 1, 0
    return None
