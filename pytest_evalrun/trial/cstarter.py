"""The starter (:mod:`~.starter`) compiled: the same work without a Python interpreter's start
(~10 ms per step idle, ~20 ms on a loaded machine; docs/performance.md).

Built once per machine and source, with the C compiler found on ``PATH`` (``cc``, ``gcc``,
``clang``), into this package's own directory (every sandboxed step sees that directory
already: no mount is added) as ``_starter-<hash>-<machine>``, and checked by running it once.
Where there is no compiler, the directory is not writable, or the build or the check fails,
:func:`binary` is None and the Python starter runs instead: the two behave alike (same
arguments, same messages), and the tests run both.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..filewrite import write_bytes_atomic

__all__ = ["SOURCE", "binary"]

SOURCE = r"""
/* evalrun's starter: [--exec-status-fd=N] [--listeners-fd=N PORT ...] -- COMMAND ...
   (pytest_evalrun/trial/starter.py does the same; see its docstring) */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FDS 128

static int listen_on(int family, int port) {
  int one = 1, s = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (family == AF_INET6) {
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons((unsigned short)port);
    a.sin6_addr = in6addr_loopback;
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&a, sizeof a) == 0 && listen(s, 128) == 0) return s;
  } else {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) == 0 && listen(s, 128) == 0) return s;
  }
  int saved = errno;
  close(s);
  errno = saved;
  return -1;
}

int main(int argc, char **argv) {
  int status_fd = -1, channel = -1, fds[MAX_FDS], n = 0, i;
  char names[MAX_FDS * 7 + 1];
  size_t used = 0;
  names[0] = 0;
  for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
    if (strncmp(argv[i], "--exec-status-fd=", 17) == 0) {
      status_fd = atoi(argv[i] + 17);
      fcntl(status_fd, F_SETFD, FD_CLOEXEC);
    } else if (strncmp(argv[i], "--listeners-fd=", 15) == 0) {
      channel = atoi(argv[i] + 15);
    } else {
      int port = atoi(argv[i]), family;
      for (family = 0; family < 2; family++) {
        int s = listen_on(family ? AF_INET6 : AF_INET, port);
        if (s < 0) {
          if (family) continue; /* no IPv6 inside: 127.0.0.1 alone */
          fprintf(stderr, "evalrun: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
          return 1;
        }
        if (n == MAX_FDS) { fprintf(stderr, "evalrun: too many forwards\n"); return 1; }
        fds[n++] = s;
        used += (size_t)snprintf(names + used, sizeof names - used, "%s%d", used ? " " : "", port);
      }
    }
  }
  if (i >= argc - 1) { fprintf(stderr, "evalrun: no command\n"); return 2; }
  if (channel >= 0) {
    union { char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)]; struct cmsghdr align; } control;
    struct iovec iov;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    iov.iov_base = used ? names : (char *)"-";
    iov.iov_len = used ? used : 1;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (n > 0) {
      msg.msg_control = control.buf;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n);
      struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
      memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)n);
    }
    if (sendmsg(channel, &msg, 0) < 0) {
      fprintf(stderr, "evalrun: cannot hand the listening sockets out: %s\n", strerror(errno));
      return 1;
    }
    close(channel);
  }
  while (n > 0) close(fds[--n]);
  execvp(argv[i + 1], argv + i + 1);
  {
    char why[4096];
    int len = snprintf(why, sizeof why, "execvp %s: %s", argv[i + 1], strerror(errno));
    fprintf(stderr, "bwrap: %s\n", why);
    if (status_fd >= 0 && len > 0) {
      size_t size = (size_t)len < sizeof why ? (size_t)len : sizeof why - 1;
      ssize_t ignored = write(status_fd, why, size);
      (void)ignored;
    }
  }
  return 1;
}
"""


def binary() -> str | None:
    """The compiled starter's path (built now if needed), or None: use the Python one (also
    when ``EVALRUN_PY_STARTER`` is set: the fallback on request, for tests and debugging)."""
    if os.environ.get("EVALRUN_PY_STARTER"):
        return None
    return _binary()


@functools.lru_cache(maxsize=1)
def _binary() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256(SOURCE.encode()).hexdigest()[:12]
    path = os.path.join(here, f"_starter-{digest}-{os.uname().machine}")
    if not os.path.exists(path) and not _build(path):
        return None
    return path if _works(path) else None


def _build(path: str) -> bool:
    compiler = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    directory = os.path.dirname(path)
    if compiler is None or not os.access(directory, os.W_OK):
        return False
    work = tempfile.mkdtemp(prefix="evalrun-starter-")
    try:
        source = os.path.join(work, "starter.c")
        with open(source, "w", encoding="utf-8") as out:
            out.write(SOURCE)
        built = os.path.join(work, "starter")
        try:
            done = subprocess.run(
                [compiler, "-O2", "-o", built, source],
                capture_output=True, timeout=120, check=False,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return False
        if done.returncode != 0 or not os.path.isfile(built):
            return False
        # beside its final name, then renamed: concurrent builds (xdist workers) never see
        # half a file
        try:
            write_bytes_atomic(Path(path), Path(built).read_bytes(), mode=0o755)
        except OSError:
            return False
        return True
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _works(path: str) -> bool:
    """Does it run here (not a foreign or damaged file, not on a ``noexec`` mount)?"""
    try:
        done = subprocess.run([path, "--", "true"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0
