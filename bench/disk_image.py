"""A realistic VM disk for benchmarks: zero, text-like and random extents, seeded.

≈35 % zero extents, ≈35 % compressible log-like text, ≈30 % random, in 1–4 MiB
extents, shuffled with a fixed seed, so every tool is measured on the same bytes.
"""

from __future__ import annotations

import random
from pathlib import Path

MiB = 1 << 20


def make_disk(path: Path, size: int, seed: int = 42) -> None:
    rng = random.Random(seed)
    extents: list[tuple[str, int]] = []
    total = 0
    while total < size:
        n = min(rng.randint(1, 4) * MiB, size - total)
        kind = rng.choices(["zero", "text", "random"], weights=[35, 35, 30])[0]
        extents.append((kind, n))
        total += n
    rng.shuffle(extents)
    words = [b"INFO", b"WARN", b"request", b"served", b"user", b"session", b"db", b"GET",
             b"/api/v1/items", b"200", b"latency_ms", b"cache", b"hit", b"miss"]
    with open(path, "wb") as f:
        f.truncate(size)
        for kind, n in extents:
            if kind == "zero":
                f.seek(n, 1)
            elif kind == "random":
                f.write(rng.randbytes(n))
            else:
                lines = []
                length = 0
                while length < n:
                    line = b"%d %s %s\n" % (rng.randint(10**9, 10**10),
                                             b" ".join(rng.choices(words, k=8)),
                                             rng.randbytes(4).hex().encode())
                    lines.append(line)
                    length += len(line)
                f.write(b"".join(lines)[:n])
