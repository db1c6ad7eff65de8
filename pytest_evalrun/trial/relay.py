"""The relay a sandboxed step starts in front of its command (``python -I -S -c "...import
relay; relay.main(...)" PORT=SOCKET ... -- COMMAND ...``, imported from its own directory for
its cached bytecode; the standard library only, nothing of this package).

It binds ``127.0.0.1:PORT`` (and ``[::1]:PORT`` where IPv6 is up) in the sandbox's own network
namespace for each forward, detaches a relay process (a grandchild, so it is no child of the
command: a shell's ``wait`` never waits for it) that copies each accepted connection to and
from ``SOCKET`` (a host Unix socket bound into the sandbox), and execs the command: the command
is the process bubblewrap waits for, and when it exits the PID namespace ends, relay included.
The ports are listening before the command starts.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not ``typing``'s: importing typing costs ~3 ms of every step
if TYPE_CHECKING:  # ``socket`` alone costs ~9 ms of the step's start, ``_socket`` ~2 ms
    import _socket

_BUFFER = 65536

# seccomp: the command (not the relay) may not create AF_UNIX sockets with socket(2): a socket
# file of the host that is visible in the sandbox (a directory listed under ``sandbox: read:``
# or ``write:``) does not answer.  ``socketpair(2)`` (pipes between its own processes) works.
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_SOCKET_NR = {"x86_64": (41, 0x40000000 + 41), "aarch64": (198,)}
_AUDIT_ARCH_I386, _I386_SOCKET, _I386_SOCKETCALL = 0x40000003, 359, 102
_LD, _JEQ, _RET = 0x20, 0x15, 0x06
_ALLOW, _DENY = 0x7FFF0000, 0x00050000 | 13  # SECCOMP_RET_ERRNO | EACCES


def unix_socket_filter(machine: str) -> bytes | None:
    """The classic BPF program (``struct sock_filter[]``) that makes ``socket(AF_UNIX, ...)``
    fail with EACCES (and, for 32-bit x86 programs, every ``socketcall``); None on a machine
    it does not know."""
    import struct

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


def _no_unix_sockets() -> None:
    """Install :func:`unix_socket_filter` for this process and what it execs."""
    import ctypes

    program = unix_socket_filter(os.uname().machine)
    if program is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(program, len(program))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Prog(len(program) // 8, ctypes.addressof(buf))
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def _pump(src: _socket.socket, dst: _socket.socket) -> None:
    import _socket

    try:
        while True:
            data = src.recv(_BUFFER)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for sock, how in ((dst, _socket.SHUT_WR), (src, _socket.SHUT_RD)):
        try:  # noqa: SIM105 (contextlib: one more import)
            sock.shutdown(how)
        except OSError:
            pass


def _connection(client: _socket.socket, path: str) -> None:
    import _socket
    import _thread

    upstream = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        client.close()
        upstream.close()
        return
    done = _thread.allocate_lock()
    done.acquire()

    def back() -> None:
        try:
            _pump(upstream, client)
        finally:
            done.release()

    _thread.start_new_thread(back, ())
    _pump(client, upstream)
    done.acquire()
    client.close()
    upstream.close()


def _accept(listener: _socket.socket, path: str) -> None:
    import _socket
    import _thread
    import time

    while True:
        try:
            fd, _ = listener._accept()  # type: ignore[attr-defined]
        except (InterruptedError, ConnectionAbortedError):
            continue
        except OSError:  # out of descriptors: let connections end
            time.sleep(0.05)
            continue
        _thread.start_new_thread(_connection, (_socket.socket(fileno=fd), path))


def _listen(port: int) -> list[int]:
    """Listening sockets on 127.0.0.1:port (and [::1]:port where IPv6 is up), as fds."""
    import _socket

    found: list[int] = []
    for family, host in ((_socket.AF_INET, "127.0.0.1"), (_socket.AF_INET6, "::1")):
        sock = _socket.socket(family, _socket.SOCK_STREAM)
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            if family == _socket.AF_INET6:
                sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            if family == _socket.AF_INET:
                raise SystemExit(
                    f"evalrun relay: cannot listen on 127.0.0.1:{port}: {exc}"
                ) from None
            continue  # no IPv6 inside: 127.0.0.1 alone
        found.append(sock.detach())
    return found


def _serve(listeners: list[tuple[int, str]]) -> None:
    """Relay forever (``_socket`` and ``_thread``: the relay shares the step's start with the
    command, and ``socket``/``threading`` cost ~10 ms of CPU to import)."""
    import _socket
    import _thread

    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)  # never hold the step's output open
    *others, (last_fd, last_path) = listeners
    for fd, path in others:
        _thread.start_new_thread(_accept, (_socket.socket(fileno=fd), path))
    _accept(_socket.socket(fileno=last_fd), last_path)


def main(argv: list[str]) -> None:
    if "--" not in argv:
        raise SystemExit("usage: relay.py PORT=SOCKET ... [--unix-sockets] -- COMMAND ...")
    cut = argv.index("--")
    specs, command = argv[:cut], argv[cut + 1 :]
    unix_sockets = "--unix-sockets" in specs
    specs = [s for s in specs if s != "--unix-sockets"]
    if not command:
        raise SystemExit("evalrun relay: no command")
    status_fd = -1  # written to only when the command cannot be exec'd (closed on exec)
    if specs and specs[0].startswith("--exec-status-fd="):
        status_fd = int(specs.pop(0).partition("=")[2])
        os.set_inheritable(status_fd, False)
    listeners: list[tuple[int, str]] = []
    for spec in specs:
        port, _, path = spec.partition("=")
        listeners += [(fd, path) for fd in _listen(int(port))]
    if listeners:
        child = os.fork()
        if child == 0:
            if status_fd >= 0:
                os.close(status_fd)
            if os.fork() == 0:
                try:
                    _serve(listeners)
                finally:
                    os._exit(0)
            os._exit(0)
        os.waitpid(child, 0)
        for fd, _ in listeners:
            os.close(fd)
    try:
        if not unix_sockets:
            _no_unix_sockets()
    except OSError as exc:
        sys.stderr.write(f"evalrun relay: cannot restrict Unix sockets: {exc}\n")
        os._exit(1)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"bwrap: execvp {command[0]}: {exc.strerror}\n")
        sys.stderr.flush()
        if status_fd >= 0:
            try:  # noqa: SIM105 (contextlib is one more import at every step's start)
                os.write(status_fd, f"execvp {command[0]}: {exc.strerror}".encode()[:4000])
            except OSError:
                pass
        os._exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
