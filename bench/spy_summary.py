"""Summarise py-spy raw samples of dpflow operations (bench_image.py --py-spy DIR):
where dpflow's data-path threads spend their time, by category (share of samples).

    python bench/spy_summary.py DIR/backup_day1.txt [...]
"""

from __future__ import annotations

import collections
import sys

CATEGORIES = [  # (name, a frame name that marks it), the first match wins
    ("idle: waiting for work", "_worker (concurrent"),
    ("store: index lookup (SQLite per chunk)", "PackIndex.lookup"),
    ("store: compress + encrypt", "ChunkStore.encode"),
    ("store: decrypt + decompress", "ChunkStore.decode"),
    ("store: chunk id (keyed blake3)", "chunk_id"),
    ("store: pack write", "PackWriter"),
    ("store: pack read", "read_blob"),
    ("HTTPS: requests' .netrc lookup", "get_netrc_auth"),
    ("HTTPS: waiting for / reading the answer", "SSLSocket.read"),
    ("HTTPS: sending", "SSLSocket.send"),
    ("HTTPS: requests/urllib3 per-request code", "requests/"),
    ("HTTPS: socket poll", "wait.py"),
]
THREADS = ("dpflow-copy", "dpflow-restore", "dpflow-verify")


def summarise(path: str) -> None:
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in open(path):
        stack, _, n = line.rstrip().rpartition(" ")
        frames = stack.split(";")
        thread = next((t for t in THREADS if t in frames[0]), None)
        if thread is None:
            continue
        tail = ";".join(frames[-8:])
        for name, key in CATEGORIES:
            if key in (frames[-1] if name.startswith("idle") else tail):
                break
        else:
            name = "other: " + frames[-1][:60]
        counts[(thread, name)] += int(n)
    print(f"== {path}")
    totals = collections.Counter()
    for (thread, _), n in counts.items():
        totals[thread] += n
    for (thread, name), n in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1])):
        if n / totals[thread] >= 0.02:
            print(f"  {thread:15} {name:45} {100 * n / totals[thread]:5.1f} %")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        summarise(p)
