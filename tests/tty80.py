"""Run ocisquash with a pseudo-terminal of a given width as its stdin, stdout and stderr (python's ``pty``)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import sys
import termios


def on_terminal(*args: str, cols: int = 80) -> tuple[str, int]:
    """Run ``ocisquash ARGS`` with a pseudo-terminal of ``cols`` columns as stdin, stdout and stderr."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once, nothing else
        os.environ.update({"COLUMNS": str(cols), "TERM": "xterm"})
        os.environ.pop("NO_COLOR", None)
        os.execv(sys.executable, [sys.executable, "-m", "ocisquash", *args])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    out = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode("utf-8", "replace")).replace("\r\n", "\n")
    return text, os.waitstatus_to_exitcode(status)
