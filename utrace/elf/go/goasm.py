"""Instruction-level facts about Go functions on x86-64, from capstone (never byte-grepping).

- `return_sites`: every `ret` of a function: where utrace puts plain uprobes instead of a
  uretprobe, which would corrupt Go's movable stacks (golang/go#22008, iovisor/bcc#1320).
- `after_stack_check`: the first instruction after the prologue's stack-bound check. Go's
  prologue compares sp with g.stackguard0 and, when the stack is too small, jumps to a block that
  calls runtime.morestack and then jumps back to the function's first instruction: a probe on the
  first instruction fires twice for one call. After the check it fires once, and sp and the
  argument registers still hold their entry values (the check only uses flags and scratch R12/R13).
"""

from __future__ import annotations

from dataclasses import dataclass

import capstone
from capstone import x86_const as x86

_RETS = {x86.X86_INS_RET}
_JCC = {
    x86.X86_INS_JA, x86.X86_INS_JAE, x86.X86_INS_JB, x86.X86_INS_JBE, x86.X86_INS_JE, x86.X86_INS_JNE,
    x86.X86_INS_JG, x86.X86_INS_JGE, x86.X86_INS_JL, x86.X86_INS_JLE, x86.X86_INS_JO, x86.X86_INS_JNO,
    x86.X86_INS_JS, x86.X86_INS_JNS, x86.X86_INS_JP, x86.X86_INS_JNP,
}  # fmt: skip
_DATA = 0  # capstone's instruction id for bytes skipped as data (skipdata mode)
_PROLOGUE_LIMIT = 12  # instructions: the check is at most a handful
_MORESTACK_LIMIT = 64  # instructions of the morestack block (spills, call, unspills, jmp back)


@dataclass(frozen=True, slots=True)
class Insn:
    address: int
    size: int
    mnemonic: str
    op_str: str


def _engine() -> capstone.Cs:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    md.skipdata = True  # data or undecodable bytes inside a function must not end the sweep
    return md


def _target(insn: capstone.CsInsn) -> int | None:
    ops = insn.operands
    if len(ops) == 1 and ops[0].type == x86.X86_OP_IMM:
        return int(ops[0].imm)
    return None


def return_sites(code: bytes, address: int) -> list[int]:
    """Addresses of every `ret` instruction in `code`, a function's bytes starting at `address`."""
    return [i.address for i in _engine().disasm(code, address) if i.id in _RETS]


def _writes_sp(insn: capstone.CsInsn) -> bool:
    if insn.id in (x86.X86_INS_CALL, x86.X86_INS_PUSH, x86.X86_INS_POP, x86.X86_INS_RET, x86.X86_INS_JMP):
        return True
    _read, written = insn.regs_access()
    return x86.X86_REG_RSP in written


def _is_morestack_block(md: capstone.Cs, code: bytes, base: int, target: int, entry: int) -> bool:
    """The block at `target` calls something and then jumps back to the function's entry."""
    called = False
    for n, insn in enumerate(md.disasm(code[target - base :], target)):
        if n >= _MORESTACK_LIMIT or insn.id == _DATA:
            return False
        if insn.id == x86.X86_INS_CALL:
            called = True
        elif insn.id == x86.X86_INS_JMP:
            return called and _target(insn) == entry
        elif insn.id in _RETS:
            return False
    return False


def after_stack_check(code: bytes, address: int) -> int | None:
    """The address just after the stack-bound check of a Go function, or None if it has none.

    Functions marked NOSPLIT (and most assembly) have no check and never call morestack; for them
    the function's first instruction is the right place.
    """
    md = _engine()
    end = address + len(code)
    found: int | None = None
    for n, insn in enumerate(md.disasm(code, address)):
        # Bytes that do not decode (skipdata's ".byte" pseudo-instructions) cannot be a prologue.
        if n >= _PROLOGUE_LIMIT or insn.id == _DATA or _writes_sp(insn):
            break
        if insn.id in _JCC:
            t = _target(insn)
            if t is not None and address < t < end and _is_morestack_block(md, code, address, t, address):
                found = insn.address + insn.size
    return found


def disassemble(code: bytes, address: int, limit: int | None = None) -> list[Insn]:
    """Plain listing (for diagnostics and tests)."""
    out: list[Insn] = []
    for n, i in enumerate(_engine().disasm(code, address)):
        if limit is not None and n >= limit:
            break
        out.append(Insn(i.address, i.size, i.mnemonic, i.op_str))
    return out
