"""The 'file library' media: content-addressed chunks and version manifests on disk.

Format: docs/store-format.md.
"""

from dpflow.store.chunks import ChunkStore, CorruptChunk
from dpflow.store.manifest import DiskManifest, VersionManifest

__all__ = ["ChunkStore", "CorruptChunk", "DiskManifest", "VersionManifest"]
