"""The chunk store contract: what the data path may rely on, whatever holds the bytes.

Two implementations keep it: `ChunkStore` (packs on disk, the production store) and
`MemoryChunkStore` (an in-memory twin for tests). One conformance suite
(tests/conformance/test_store_protocol.py) runs over both, so a caller tested against
the twin behaves the same against the disk.

Terms. A chunk is *pending* once put() accepted it and until the next flush() or
abandon() of the same store object; it is *durable* once flush() returned. Another store
object on the same storage (another thread's, another process's, or the next one after a
crash) sees durable chunks only.

Errors. `CorruptChunk` (a PermanentError) is raised by get() for a chunk that is unknown,
missing, truncated, fails authentication or does not hash to its id: never wrong bytes.
`ValueError` is a caller's bug (an id that is not chunk_id(data)). `StoreClosed` (a
RuntimeError) is any use after close(). Errors of the file system (OSError, e.g. a full
disk) pass through put() and flush() unchanged; the store then holds what it held before
the failed call plus, at most, chunks that are whole, and the caller should abandon().
No call here is transient: retrying is the caller's decision, at the level of a disk.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class StoreClosed(RuntimeError):
    """The store object was closed; open a new one."""


@runtime_checkable
class ChunkStoreProtocol(Protocol):
    """Content-addressed chunks with one explicit commit point (flush)."""

    @property
    def encrypted(self) -> bool:
        """Whether chunk ids are keyed and blobs sealed."""
        ...

    def chunk_id(self, data: bytes | memoryview) -> str:
        """The id of `data` in this store: a pure function of the bytes (and the store's
        key, if any); equal bytes always get equal ids, different bytes different ones."""
        ...

    def has(self, cid: str) -> bool:
        """True when the chunk is durable, or pending in this store object: either way the
        caller need not put it again before the next flush(). Never raises for an unknown id."""
        ...

    def put(self, cid: str, data: bytes | memoryview) -> int:
        """Accept `data` under `cid`, idempotently; returns the bytes this call added (0 when
        the chunk was already durable or pending: across threads of one store object, each
        chunk is added exactly once).

        `cid` must be chunk_id(data), else ValueError and nothing is stored. The chunk is
        pending: not durable, not visible to other store objects, not readable by get().
        Safe to call from many threads at once.
        """
        ...

    def flush(self) -> None:
        """The commit point: every chunk put so far on this store object is durable (it
        survives a crash of the process and of the machine) and visible to every store
        object on the same storage. Call it before anything (a manifest, a catalog row)
        names those chunks. Must not run while other threads still put()."""
        ...

    def abandon(self) -> None:
        """Drop every pending chunk: none of them ever becomes visible, and their temporary
        files are removed. Durable chunks are untouched. The compensation of a failed copy."""
        ...

    def get(self, cid: str) -> bytes:
        """The exact bytes of a durable chunk, proven by their hash before they are returned;
        CorruptChunk otherwise (including a chunk that is only pending). Thread-safe."""
        ...

    def all_chunk_ids(self) -> set[str]:
        """Ids of every durable chunk."""
        ...

    def close(self) -> None:
        """Release every file descriptor and connection; pending chunks are abandoned.
        Idempotent (and so is abandon() afterwards); put, has, flush, get and
        all_chunk_ids afterwards raise StoreClosed."""
        ...
