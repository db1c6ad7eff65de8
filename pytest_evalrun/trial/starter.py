"""The starter a sandboxed step with forwards runs in front of its command, inside the sandbox:
``python -I -S -c SOURCE [--exec-status-fd=N] --listeners-fd=N PORT ... -- COMMAND ...``
(this file's source, passed whole: nothing to import from the package and no bytecode cache).

For each forward's ``PORT`` it listens on ``127.0.0.1:PORT`` (and ``[::1]:PORT`` where IPv6 is
up) in the sandbox's own network namespace, hands the *listening sockets* to the plugin over
the inherited Unix socket ``--listeners-fd`` (``SCM_RIGHTS``; the plugin accepts on them
outside the sandbox: :mod:`pytest_evalrun.trial.forwards`), closes its copies and execs the
command.  No process of the plugin stays in the sandbox; the ports are listening before the
command starts.  The seccomp filter that forbids ``socket(AF_UNIX)`` is bubblewrap's
(``--seccomp``), already in force here: this starter creates none.

Only built-in modules (``sys``, ``posix``, ``_socket``): under ``-I -S`` not even ``os`` is
imported at start, and every import here is paid by every step.
"""

import _socket
import posix
import sys


def _listen(port: int) -> list[int]:
    """Listening sockets on 127.0.0.1:port (and [::1]:port where IPv6 is up), as fds."""
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
                raise SystemExit(f"evalrun: cannot listen on 127.0.0.1:{port}: {exc}") from None
            continue  # no IPv6 inside: 127.0.0.1 alone
        found.append(sock.detach())
    return found


def _hand_over(channel: int, ports: list[int]) -> None:
    """Send the listening sockets (one message: the port of each, then the descriptors)."""
    fds: list[int] = []
    names: list[str] = []
    for port in ports:
        for fd in _listen(port):
            fds.append(fd)
            names.append(str(port))
    sock = _socket.socket(fileno=channel)
    try:
        data = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
        sock.sendmsg([" ".join(names).encode()], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, data)])
    finally:
        sock.close()
        for fd in fds:
            posix.close(fd)


def _exec(command: list[str]) -> OSError:
    """exec ``command`` as ``execvp`` would (the ``PATH`` of the step's environment); the
    error when it cannot."""
    name = command[0]
    if "/" in name:
        candidates = [name]
    else:
        path = posix.environ.get(b"PATH", b"/bin:/usr/bin").decode("utf-8", "surrogateescape")
        candidates = [f"{d}/{name}" if d else name for d in path.split(":")]
    error: OSError = FileNotFoundError(2, "No such file or directory")
    first = True
    for candidate in candidates:
        try:
            posix.execv(candidate, command)
        except OSError as exc:  # the first error other than "not there" is the one to say
            if first and exc.errno not in (2, 20):  # ENOENT, ENOTDIR
                error, first = exc, False
    return error


def main(argv: list[str]) -> None:
    if "--" not in argv:
        raise SystemExit("usage: starter [--exec-status-fd=N] [--listeners-fd=N PORT ...] -- CMD")
    cut = argv.index("--")
    options, command = argv[:cut], argv[cut + 1 :]
    if not command:
        raise SystemExit("evalrun: no command")
    status_fd = channel = -1
    ports: list[int] = []
    for option in options:
        if option.startswith("--exec-status-fd="):
            status_fd = int(option.partition("=")[2])
            posix.set_inheritable(status_fd, False)  # written to only when the exec fails
        elif option.startswith("--listeners-fd="):
            channel = int(option.partition("=")[2])
        else:
            ports.append(int(option))
    if channel >= 0:
        _hand_over(channel, ports)
    error = _exec(command)
    sys.stderr.write(f"bwrap: execvp {command[0]}: {error.strerror}\n")
    sys.stderr.flush()
    if status_fd >= 0:
        try:  # noqa: SIM105 (contextlib is one more import at every step's start)
            posix.write(status_fd, f"execvp {command[0]}: {error.strerror}".encode()[:4000])
        except OSError:
            pass
    posix._exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
