"""The architecture-specific part of stdio redirection (§6.3): x86-64's registers, syscall numbers and
instructions. ``redirect`` holds the generic ptrace logic; another architecture would need a module
like this one (and testing on real hardware before being trusted with PID 1's children).
"""

from __future__ import annotations

import ctypes
import platform
import struct

#: The machine (``uname -m``) these tables are for.
MACHINE = "x86_64"
AUDIT_ARCH = 0xC000003E  # AUDIT_ARCH_X86_64, as PTRACE_GET_SYSCALL_INFO reports it

PTRACE_GETREGS = 12
PTRACE_SETREGS = 13

NR_CLOSE = 3
NR_MMAP = 9
NR_MUNMAP = 11
NR_FCNTL = 72
NR_RESTART_SYSCALL = 219
NR_TGKILL = 234
NR_OPENAT = 257
NR_DUP3 = 292
NR_KCMP = 312
NR_I386_RESTART_SYSCALL = 0  # for a 64-bit process that used ``int $0x80``

#: The code segment selector of a 64-bit user process (a 32-bit one is not supported).
USER_CS_64 = 0x33
SYSCALL_INSN = b"\x0f\x05"
INT80_INSN = b"\xcd\x80"
#: Registers holding syscall arguments 1-6, in order.
ARGUMENT_REGISTERS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")

_REG_NAMES = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
    "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs",
)


class Regs(ctypes.Structure):
    """``struct user_regs_struct`` of x86-64, field order as in the kernel's ``asm/user_64.h``."""

    _fields_ = [(name, ctypes.c_ulong) for name in _REG_NAMES]


def unsupported() -> str | None:
    """None if these tables fit this machine and this Python, else a one-line reason why not."""
    machine = platform.machine()
    if machine != MACHINE:
        return f"stdio redirection needs x86-64, this is {machine or 'an unknown machine'}"
    if struct.calcsize("P") != 8:
        return "stdio redirection needs a 64-bit Python"
    return None
