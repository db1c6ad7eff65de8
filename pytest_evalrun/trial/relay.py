"""The relay a sandboxed step starts in front of its command (run as a file, ``python -I -S
relay.py PORT=SOCKET ... -- COMMAND ...``; the standard library only, nothing of this package).

It binds ``127.0.0.1:PORT`` (and ``[::1]:PORT`` where IPv6 is up) in the sandbox's own network
namespace for each forward, detaches a relay process (a grandchild, so it is no child of the
command: a shell's ``wait`` never waits for it) that copies each accepted connection to and
from ``SOCKET`` (a host Unix socket bound into the sandbox), and execs the command: the command
is the process bubblewrap waits for, and when it exits the PID namespace ends, relay included.
The ports are listening before the command starts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time

_BUFFER = 65536


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(_BUFFER)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                sock.shutdown(how)


def _connection(client: socket.socket, path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _accept(listener: socket.socket, path: str) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except (InterruptedError, ConnectionAbortedError):
            continue
        except OSError:  # out of descriptors: let connections end
            time.sleep(0.05)
            continue
        threading.Thread(target=_connection, args=(client, path), daemon=True).start()


def _listen(port: int) -> list[socket.socket]:
    found: list[socket.socket] = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            if family == socket.AF_INET:
                raise SystemExit(
                    f"evalrun relay: cannot listen on 127.0.0.1:{port}: {exc}"
                ) from None
            continue  # no IPv6 inside: 127.0.0.1 alone
        found.append(sock)
    return found


def _serve(listeners: list[tuple[socket.socket, str]]) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)  # never hold the step's output open
    threads = [
        threading.Thread(target=_accept, args=(sock, path), daemon=True) for sock, path in listeners
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main(argv: list[str]) -> None:
    if "--" not in argv:
        raise SystemExit("usage: relay.py PORT=SOCKET ... -- COMMAND ...")
    cut = argv.index("--")
    specs, command = argv[:cut], argv[cut + 1 :]
    if not command:
        raise SystemExit("evalrun relay: no command")
    listeners: list[tuple[socket.socket, str]] = []
    for spec in specs:
        port, _, path = spec.partition("=")
        listeners += [(sock, path) for sock in _listen(int(port))]
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            try:
                _serve(listeners)
            finally:
                os._exit(0)
        os._exit(0)
    os.waitpid(child, 0)
    for sock, _ in listeners:
        sock.close()
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"bwrap: execvp {command[0]}: {exc.strerror}\n")
        sys.stderr.flush()
        os._exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
