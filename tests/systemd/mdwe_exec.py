"""Exec a command with the kernel's MemoryDenyWriteExecute (PR_SET_MDWE, Linux 6.3+).

systemd's MemoryDenyWriteExecute=yes refuses writable+executable mappings;
the kernel's PR_MDWE_REFUSE_EXEC_GAIN does the same and survives execve, so a
test can run the real gateway under it without systemd.

Usage: python mdwe_exec.py PROGRAM [ARGS...]   (exit 3 when unsupported)
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1

if __name__ == "__main__":
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        print(f"PR_SET_MDWE: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        sys.exit(3)
    os.execv(sys.argv[1], sys.argv[1:])
