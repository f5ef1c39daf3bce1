"""Hostile guest images, restored: a seeded campaign over images built with the real
tools (mkfs.ext4 -d, mkntfs, sfdisk) and then patched or damaged as a compromised or
broken guest would leave them. Each image is restored twice (skip, then overwrite) into
a fresh directory; after each restore nothing exists outside the target, no temporary
file is left, and the outcome is a tally or one clean line, never a traceback.

Replay a failure with DPFLOW_HOSTILE_SEED=<seed printed>; more cases with
DPFLOW_HOSTILE_CASES=<n>.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from dpflow.errors import DpflowError
from dpflow.guestfs.target import fit_name
from simulators.guest_fs_images import HOSTILE_KINDS, hostile_disk
from tests.unit.test_guestfs_restore import restore_image

CASES = int(os.environ.get("DPFLOW_HOSTILE_CASES", "10"))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


def test_hostile_images_never_write_outside_the_target(tmp_path):
    seed = int(os.environ.get("DPFLOW_HOSTILE_SEED") or random.SystemRandom().randrange(2**32))
    print(f"hostile image campaign: seed {seed}, {CASES} cases")
    rng = random.Random(seed)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep")
    passwd = os.stat("/etc/passwd").st_mtime_ns
    seen: dict[str, int] = {}
    for case in range(CASES):
        kinds = set(rng.sample(HOSTILE_KINDS, rng.randrange(1, len(HOSTILE_KINDS) + 1)))
        if case < 2:  # the first cases take every kind but damage, so links are exercised
            kinds = {k for k in HOSTILE_KINDS if not k.startswith("damaged")}
        why = f"seed {seed} case {case} {sorted(kinds)}"
        disk = tmp_path / f"case{case}.img"
        hostile_disk(disk, rng, outside, kinds)
        target = tmp_path / f"target{case}"
        before = snapshot(tmp_path / "outside")
        for conflict in ("skip", "overwrite"):
            try:
                out = restore_image(disk, target, conflict)
            except DpflowError as exc:  # a clean refusal is an outcome; one line
                assert "\n" not in str(exc), why
                continue
            for key, n in (("failed", len(out.failed)), ("refused", len(out.refused)),
                           ("renamed", len(out.renamed)), ("hard_links", out.hard_links),
                           ("symlinks", out.symlinks), ("files", out.files)):
                seen[key] = seen.get(key, 0) + n
            assert snapshot(outside) == before, why
            assert os.stat("/etc/passwd").st_mtime_ns == passwd, why
            names = [n for _, ds, fs in os.walk(target) for n in ds + fs]
            assert not [n for n in names if n.startswith(".dpflow-")], why
            for dirpath, dirs, files in os.walk(target):
                for n in dirs + files:
                    p = Path(dirpath) / n
                    assert p.is_symlink() or p.resolve().is_relative_to(target.resolve()), why
            if kinds & {"damaged-superblock", "damaged-metadata", "damaged-table"}:
                continue
            if "escaping-links" in kinds:
                assert os.readlink(target / "d0p1/to-outside") == str(outside), why
            if "shadowed-link" in kinds:  # a link and a directory of one name
                assert any("a second directory entry of that name: refused" in r
                           for r in out.refused), why
            if "overlong-names" in kinds:
                v = target / "d0p1"
                long = v / fit_name("%5C" * 255)
                assert os.stat(v / "plain/hard-link-0").st_ino == os.stat(long).st_ino, why
            if "forged-entries" in kinds:
                assert any("forged directory entry '..': refused" in r
                           for r in out.refused), why
        disk.unlink()
    print(f"hostile image campaign: seed {seed}: {seen}")
    assert seen.get("symlinks", 0) > 0 and seen.get("renamed", 0) > 0, seen
    assert seen.get("refused", 0) > 0 and seen.get("hard_links", 0) > 0, seen
