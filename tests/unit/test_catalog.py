"""Catalog v1: sessions and committed versions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from dpflow.catalog import Catalog
from dpflow.errors import NotFound, UserError


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


@pytest.mark.parametrize("url, why", [
    ("nonsense", "Could not parse"),
    ("sqlite:////proc/no-such-dir/catalog.db", "No such file"),
    ("sqlite:////etc/hostname", "not a database"),
    ("postgresql://dp:s3cret@127.0.0.1:1/catalog", ""),
])
def test_an_unusable_catalog_url_is_one_line_naming_it(url: str, why: str) -> None:
    with pytest.raises(UserError) as info:
        Catalog(url)
    msg = str(info.value)
    assert msg.startswith("cannot open the catalog ") and why in msg
    assert "check catalog_url" in msg and "\n" not in msg and "s3cret" not in msg
