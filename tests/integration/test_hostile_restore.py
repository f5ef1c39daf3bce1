"""Hostile guest images through the real CLI, as an administrator meets them: seeded
disks of the campaign (tests/unit/test_hostile_images.py; one by default, more with
DPFLOW_HOSTILE_CLI_CASES) put on vcsim VMs, backed up file by file and as an image, then
restored with `dpflow restore files` (from the file-level version and --from-image). Each
command ends in its output lines or one error line, never a traceback; nothing appears
outside the restore directory.

Replay with DPFLOW_HOSTILE_SEED=<seed printed>.
"""

from __future__ import annotations

import os
import random

import pytest

from simulators.guest_fs_images import HOSTILE_KINDS, hostile_disk
from tests.integration.test_vm_files import cli, new_vm

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]
CASES = int(os.environ.get("DPFLOW_HOSTILE_CLI_CASES", "1"))


DONE = (0, 3)  # completed, or partial: done with what was refused/failed listed (README)


def clean(code: int, out: str, why: str, one_line: bool = True) -> None:
    assert "Traceback" not in out, f"{why}\n{out}"
    if code not in DONE and one_line:
        lines = [ln for ln in out.splitlines() if ln.strip()]
        assert len(lines) == 1, f"{why}\n{out}"


def test_hostile_images_through_the_cli(vcsim, dc_config, tmp_path):
    seed = int(os.environ.get("DPFLOW_HOSTILE_SEED") or random.SystemRandom().randrange(2**32))
    print(f"hostile images through the CLI: seed {seed}, {CASES} cases")
    rng = random.Random(seed)
    outside = tmp_path / "outside"
    outside.mkdir()
    c = str(dc_config)
    for case in range(CASES):
        kinds = set(HOSTILE_KINDS) - {"damaged-table"} if case == 0 else \
            set(rng.sample(HOSTILE_KINDS, rng.randrange(1, len(HOSTILE_KINDS) + 1)))
        why = f"seed {seed} case {case} {sorted(kinds)}"
        disk = tmp_path / f"hostile{case}.img"
        hostile_disk(disk, rng, outside, kinds)
        vm = new_vm(vcsim, "hostile-cli", [disk])
        code, out = cli("backup", "files", vm, "-c", c)
        clean(code, out, why)
        code_img, out_img = cli("backup", "vm", vm, "-c", c)
        clean(code_img, out_img, why, one_line=False)  # a table, one row per VM
        runs = []
        if code in DONE:
            runs.append(("files", []))
        if code_img in DONE:
            runs.append(("image", ["--from-image"]))
        for name, extra in runs:
            target = tmp_path / f"t{case}-{name}"
            code, out = cli("restore", "files", vm, "*", "--to", str(target), *extra, "-c", c)
            clean(code, out, f"{why} {name}")
            if code in DONE:
                assert "totals: " in out, out
                assert (code == 3) == ("refused:" in out or "failed:" in out), out
            assert list(outside.iterdir()) == [], why
            assert not list(target.rglob(".dpflow-*")), why
        if case == 0:  # every kind but a damaged table: both restores ran and listed
            assert len(runs) == 2, why
            assert "refused:" in out and "renamed:" in out, out
