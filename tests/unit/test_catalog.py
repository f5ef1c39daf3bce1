"""Catalog v1: sessions and committed versions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from dpflow.catalog import Catalog
from dpflow.errors import NotFound


def test_versions_appear_only_when_committed(tmp_path: Path) -> None:
    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    sid = cat.begin_session("backup-image", "vm", "web01")
    assert cat.versions("web01") == []
    with pytest.raises(NotFound, match="back it up first"):
        cat.latest_version("web01")
    cat.commit_version(version_id=sid, session_id=sid, object_kind="vm", name="web01",
                       store="lib", created=datetime.now(UTC), quiesced=False, bytes_read=10,
                       bytes_added=5, disks=[{"key": 2000, "label": "Hard disk 1",
                                              "capacity_bytes": 10, "chunks_stored": 1}],
                       note="crash-consistent")
    cat.end_session(sid, "completed", "", 10, 5)
    v = cat.latest_version("web01")
    assert (v.id, v.object.name, v.disks[0].label, v.note) == (sid, "web01", "Hard disk 1",
                                                              "crash-consistent")
    assert cat.get_session(sid).status == "completed"
    with pytest.raises(NotFound, match="unknown version"):
        cat.version("nope")
