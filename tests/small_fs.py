"""A real small file system for "target full" tests: a tmpfs of a given size mounted in a
private mount namespace (unshare -m), so nothing outside the test's process sees it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

MOUNT = "/tmp/dpflow-small-target"


def run_on_small_fs(argv: list[str], size: str, env: dict[str, str] | None = None,
                    cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """`argv` run with a fresh tmpfs of `size` (e.g. '1m', or 'SIZE,nr_inodes=N' to bound
    its inodes too) mounted at MOUNT."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed for a real full target")
    ns = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    sh = f'mkdir -p {MOUNT} && mount -t tmpfs -o size={size} none {MOUNT} && exec "$@"'
    return subprocess.run([*ns, "sh", "-c", sh, "sh", *argv], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)
