"""Running the exoray CLI as real processes that a failpoint may kill (with their whole group)."""

from __future__ import annotations

import os
import subprocess
import sys


def start(*args: str, failpoint: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if failpoint:
        env["EXORAY_FAILPOINTS"] = failpoint
    # exec keeps the shell's pid, the new session's id: the failpoint can kill the whole run.
    command = 'export EXORAY_FAILPOINT_PGID=$$; exec "$@"'
    return subprocess.Popen(["bash", "-c", command, "exoray", sys.executable, "-m", "exoray.cli",
                             *args], env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err
