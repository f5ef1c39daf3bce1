"""Shared parts of the image benchmark: timing a whole process, sizes, digests, and
restic and borg driven as their users run them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SIDE = ROOT / "bench" / "_dpflow_side.py"
MiB = 1 << 20


# --- measuring -----------------------------------------------------------------------

def timed(cmd: list[str], *, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> tuple[float, int, str]:
    """Run `cmd` under /usr/bin/time: (wall seconds, peak RSS KiB, stdout)."""
    with tempfile.NamedTemporaryFile("r", dir="/var/tmp", prefix="dpflow-bench-rss-") as rf:
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rf.name, *cmd], env=env,
                           cwd=cwd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode:
            raise RuntimeError(f"{' '.join(cmd[:4])} … failed ({p.returncode}):\n"
                               f"{p.stderr[-3000:]}")
        rss = int(rf.read().strip().splitlines()[-1])
    return wall, rss, p.stdout


def du(path: Path) -> int:
    """Apparent size of every file under `path` (what the repository holds)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def content_digest(path: Path) -> str:
    """Digest of a file's content that never reads it whole into memory and skips holes:
    size, then every non-zero 1 MiB block with its index (a hole and written zeros give
    the same digest, as they are the same content)."""
    h = hashlib.blake2b(digest_size=16)
    zero = bytes(MiB)
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        h.update(size.to_bytes(8, "little"))
        off = 0
        while off < size:
            try:
                data = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            i = data // MiB
            while i * MiB < hole:
                block = os.pread(fd, MiB, i * MiB)
                if block != zero[:len(block)]:
                    h.update(i.to_bytes(8, "little"))
                    h.update(block)
                i += 1
            off = i * MiB
    return h.hexdigest()


def warm_up(src: Path, work: Path, nbytes: int) -> float:
    """Write `nbytes` (copies of src) and fsync: the first GiBs written after a pause are
    slow for every tool; this takes that hit before the restores are timed."""
    t0 = time.perf_counter()
    out = work / "warmup.bin"
    left = nbytes
    with open(src, "rb") as inp, open(out, "wb") as f:
        while left > 0:
            block = inp.read(8 * MiB) or (inp.seek(0) or inp.read(8 * MiB))
            f.write(block[:left])
            left -= len(block[:left])
        f.flush()
        os.fsync(f.fileno())
    out.unlink()
    return time.perf_counter() - t0


# --- the tools -----------------------------------------------------------------------

class Restic:
    name = "restic"

    def __init__(self, work: Path) -> None:
        self.repo = work / "restic-repo"
        self.work = work
        self.env = dict(os.environ, RESTIC_PASSWORD="bench",
                        RESTIC_CACHE_DIR=str(work / "restic-cache"))
        timed(["restic", "-q", "-r", str(self.repo), "init", "--repository-version", "2"],
              env=self.env)

    def backup(self, img: Path) -> dict[str, Any]:
        wall, rss, _ = timed(["restic", "-q", "-r", str(self.repo), "backup",
                              "--compression", "auto", str(img)], env=self.env)
        return {"seconds": wall, "maxrss_kib": rss}

    def restore(self, img: Path, target: Path) -> tuple[dict[str, Any], Path]:
        wall, rss, _ = timed(["restic", "-q", "-r", str(self.repo), "restore", "latest",
                              "--target", str(target)], env=self.env)
        return {"seconds": wall, "maxrss_kib": rss}, target / img.relative_to("/")


class Borg:
    name = "borg"

    def __init__(self, work: Path) -> None:
        self.repo = work / "borg-repo"
        base = work / "borg-home"
        self.env = dict(os.environ, BORG_BASE_DIR=str(base),
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
        self.day = 0
        timed(["borg", "init", "-e", "none", str(self.repo)], env=self.env)

    def backup(self, img: Path) -> dict[str, Any]:
        self.day += 1
        wall, rss, _ = timed(["borg", "create", "--compression", "zstd,3",
                              f"{self.repo}::day{self.day}", img.name], env=self.env,
                             cwd=img.parent)
        return {"seconds": wall, "maxrss_kib": rss}

    def restore(self, img: Path, target: Path) -> tuple[dict[str, Any], Path]:
        target.mkdir(parents=True)
        wall, rss, _ = timed(["borg", "extract", f"{self.repo}::day{self.day}"],
                             env=self.env, cwd=target)
        return {"seconds": wall, "maxrss_kib": rss}, target / img.name


def side(op: str, *args: str) -> dict[str, Any]:
    """A look into dpflow's catalog or store (bench/_dpflow_side.py), not timed."""
    p = subprocess.run([sys.executable, str(SIDE), op, *args], capture_output=True,
                       text=True, cwd=ROOT)
    if p.returncode:
        raise RuntimeError(f"_dpflow_side {op} failed:\n{p.stderr[-3000:]}")
    return json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])


DPFLOW = Path(sys.executable).parent / "dpflow"  # the console script a user runs


def dpflow(*args: str) -> dict[str, Any]:
    """One `dpflow` command, the whole process timed (interpreter, imports, Prefect,
    SOAP, the work, the summary it prints)."""
    wall, rss, out = timed([str(DPFLOW), *args], env=dict(os.environ, COLUMNS="200"),
                           cwd=ROOT)
    return {"seconds": wall, "maxrss_kib": rss, "stdout": out[-2000:]}


def limit(cmd: str, img: Path) -> dict[str, Any]:
    """A physical limit on the same bytes: `cat` (a plain read) or `zstd -T2 -3`."""
    argv = {"read": ["cat", str(img)],
            "zstd": ["zstd", "-q", "-T2", "-3", "-c", str(img)]}[cmd]
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    return {"seconds": time.perf_counter() - t0}


def load() -> float:
    return os.getloadavg()[0]
