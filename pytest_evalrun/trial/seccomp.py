"""The seccomp filter of a sandboxed step: no ``socket(AF_UNIX)`` (bubblewrap installs it,
``bwrap --seccomp FD``, just before it execs the step's command).

A socket file of the host that is visible in the sandbox (a directory listed under ``sandbox:
read:`` or ``write:``) then does not answer.  ``socketpair(2)`` (pipes between the step's own
processes) works, and so do inherited Unix sockets.  ``sandbox: {unix_sockets: true}`` turns it
off for a variant.
"""

from __future__ import annotations

import os
import struct

__all__ = ["seccomp_fd", "unix_socket_filter"]


_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_SOCKET_NR = {"x86_64": (41, 0x40000000 + 41), "aarch64": (198,)}
_AUDIT_ARCH_I386, _I386_SOCKET, _I386_SOCKETCALL = 0x40000003, 359, 102
_LD, _JEQ, _RET = 0x20, 0x15, 0x06
_ALLOW, _DENY = 0x7FFF0000, 0x00050000 | 13  # SECCOMP_RET_ERRNO | EACCES


def unix_socket_filter(machine: str) -> bytes | None:
    """The classic BPF program (``struct sock_filter[]``) that makes ``socket(AF_UNIX, ...)``
    fail with EACCES (and, for 32-bit x86 programs, every ``socketcall``); None on a machine
    it does not know."""
    if machine not in _AUDIT_ARCH:
        return None
    # (code, jump if true, jump if false, k); a str names a label, a 1-tuple marks one
    code: list[tuple[object, ...]] = [(_LD, 0, 0, 4), (_JEQ, "native", 0, _AUDIT_ARCH[machine])]
    if machine == "x86_64":
        code += [(_JEQ, "i386", "allow", _AUDIT_ARCH_I386)]
    code += [(_RET, 0, 0, _ALLOW), ("native",), (_LD, 0, 0, 0)]
    code += [(_JEQ, "af", 0, nr) for nr in _SOCKET_NR[machine]]
    code += [(_RET, 0, 0, _ALLOW)]
    if machine == "x86_64":
        code += [("i386",), (_LD, 0, 0, 0), (_JEQ, "deny", 0, _I386_SOCKETCALL),
                 (_JEQ, "af", "allow", _I386_SOCKET)]  # fmt: skip
    code += [("af",), (_LD, 0, 0, 16), (_JEQ, "deny", "allow", 1)]  # args[0] == AF_UNIX
    code += [("deny",), (_RET, 0, 0, _DENY), ("allow",), (_RET, 0, 0, _ALLOW)]
    labels: dict[object, int] = {}
    for op in code:
        if len(op) == 1:
            labels[op[0]] = sum(len(o) > 1 for o in code[: code.index(op)])
    out: list[bytes] = []
    for op in (o for o in code if len(o) > 1):
        here = len(out)
        jt, jf = (labels[j] - here - 1 if isinstance(j, str) else j for j in op[1:3])
        out.append(struct.pack("=HBBI", op[0], jt, jf, op[3]))
    return b"".join(out)


def seccomp_fd() -> int | None:
    """A pipe's read end holding :func:`unix_socket_filter` for this machine (bwrap's
    ``--seccomp FD`` reads it to the end; the caller closes it after the step has started),
    or None on a machine the filter does not know."""
    program = _program(os.uname().machine)
    if program is None:
        return None
    read, write = os.pipe()
    try:
        os.write(write, program)  # a few hundred bytes: far below a pipe's buffer
    finally:
        os.close(write)
    return read


_CACHE: dict[str, bytes | None] = {}


def _program(machine: str) -> bytes | None:
    if machine not in _CACHE:
        _CACHE[machine] = unix_socket_filter(machine)
    return _CACHE[machine]
