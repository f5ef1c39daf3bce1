"""verify cross-checks catalog ↔ manifests ↔ chunks on a real store (no Prefect, no vCenter)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dpflow.store import ChunkStore, DiskManifest, VersionManifest
from dpflow.store.maintenance import Catalogued, verify
from dpflow.store.manifest import delete_manifest, read_manifest, write_manifest
from dpflow.store.packs import pack_path
from dpflow.store.pipeline import backup_disk
from tests.unit.test_store import CS, BytesDisk


@pytest.fixture
def store(tmp_path: Path) -> ChunkStore:
    with ChunkStore(tmp_path / "store", pack_target=2 * CS).init() as s:
        yield s


def back_up(store: ChunkStore, vid: str, data: bytes) -> Catalogued:
    """One version of one disk, committed as a backup does: chunks, manifest, catalog row."""
    chunks, _ = backup_disk(BytesDisk(data), store, chunk_size=CS, workers=2)
    disk = DiskManifest(key=2000, label="Hard disk 1", capacity_bytes=len(data),
                        chunk_size=CS, chunks=chunks)
    write_manifest(store, VersionManifest(version_id=vid, object_name="vm1",
                                          created=datetime.now(UTC), quiesced=True, vm={},
                                          disks=[disk]))
    return Catalogued(vid, "vm1", {2000: disk.stored_chunks})


def test_a_sound_store_counts_every_version_even_one_without_chunks(store):
    cat = [back_up(store, "v-data", os.urandom(4 * CS)), back_up(store, "v-zero", bytes(4 * CS))]
    report = verify(store, cat, read_percent=100)
    assert report.ok
    assert report.versions == 2  # the all-zero version has no chunk, and still counts
    assert report.chunks_checked == report.chunks_read == 4


def test_a_catalogued_version_without_its_manifest_fails_by_name(store):
    cat = [back_up(store, "v1", os.urandom(3 * CS)), back_up(store, "v2", os.urandom(3 * CS))]
    delete_manifest(store, "v2")
    report = verify(store, cat)
    assert not report.ok
    assert report.unrestorable == {"v2": "its manifest is missing from the store"}
    assert report.versions == 2


def test_a_missing_pack_names_every_version_it_breaks(store):
    data = os.urandom(3 * CS)
    cat = [back_up(store, "v1", data), back_up(store, "v2", data),  # v2 dedups onto v1
           back_up(store, "v3", os.urandom(CS))]
    cid = read_manifest(store, "v1").disks[0].chunks[0]
    pack, _, _ = store.index.lookup(cid)
    pack_path(store.packs_dir, pack).unlink()
    report = verify(store, cat)
    assert not report.ok
    assert set(report.damaged[cid]) == {"v1", "v2"}
    assert set(report.unrestorable) == {"v1", "v2"}
    assert report.unrestorable["v1"].startswith("chunk ")


def test_a_manifest_that_disagrees_with_the_catalog_fails(store):
    good = back_up(store, "v1", os.urandom(2 * CS))
    lying = Catalogued("v1", "vm1", {2000: 2, 2001: 5})  # the catalog says two disks
    assert verify(store, [good]).ok
    report = verify(store, [lying])
    assert "the catalog" in report.unrestorable["v1"]


def test_a_manifest_no_catalog_row_names_is_reported_but_not_a_failure(store):
    kept = back_up(store, "v1", os.urandom(2 * CS))
    back_up(store, "orphan", os.urandom(2 * CS))  # killed between manifest and catalog
    report = verify(store, [kept], read_percent=100)
    assert report.ok
    assert report.uncatalogued == ["orphan"]
    assert report.chunks_checked == 4  # its chunks are still checked (prune keeps them)


def test_prune_keeps_and_verify_checks_the_chunks_of_an_oracle_backup(store, tmp_path):
    from dpflow.catalog import Catalog
    from dpflow.catalog_oracle import commit_oracle_backup
    from dpflow.catalog_refs import catalog_refs, catalogued_in_store
    from dpflow.store.maintenance import prune
    from dpflow.store.pipeline import StreamWriter

    w = StreamWriter(store, CS, workers=2)
    log, cf = os.urandom(3 * CS), os.urandom(CS)
    _, log_chunks, _ = w.write([log], len(log))
    _, cf_chunks, _ = w.write([cf], len(cf))
    w.commit()
    cat = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    sid = cat.begin_session("zdb-oracle", "lungroup", "oracle:ORCL")
    commit_oracle_backup(
        cat, version_id=sid, session_id=sid, database="orcl", array="eva1", replica_set="r1",
        kind="snapclone", requested_kind="snapclone", created=datetime.now(UTC), members=[],
        begin_scn=1, end_scn=2, archived_scn=3, resetlogs_scn=0, store="library",
        logs=[{"name": "1_7.arc", "chunks": [{"id": c, "size": CS} for c in log_chunks]}],
        controlfile={"name": "c.ctl", "chunks": [{"id": c, "size": CS} for c in cf_chunks]},
        datafiles=[], media_version_id="lun-images")
    back_up(store, "lun-images", os.urandom(2 * CS))  # the replica's LUNs copied to media
    refs = list(catalog_refs(cat, "library"))
    assert {c for _, c in refs} == set(log_chunks + cf_chunks)
    assert prune(store, apply=False).packs_deleted > 0  # without them, the logs look unused
    assert prune(store, apply=True, extra=refs).packs_deleted == 0
    assert all(store.get(c) for c in log_chunks + cf_chunks)
    pack, _, _ = store.index.lookup(cf_chunks[0])
    pack_path(store.packs_dir, pack).unlink()
    expected = catalogued_in_store(cat, "library")
    assert [c.version_id for c in expected] == ["lun-images"]
    report = verify(store, expected, extra=refs)
    assert report.unrestorable.keys() == {sid} and report.uncatalogued == []
    delete_manifest(store, "lun-images")
    assert verify(store, expected, extra=refs).unrestorable.keys() == {sid, "lun-images"}


def test_prune_deletes_pack_files_the_index_does_not_name(store):
    """A prune killed after its index update but before its deletions leaves pack files no
    index entry names: nothing can read them, and the next prune deletes them."""
    from dpflow.store.maintenance import prune

    cat = [back_up(store, "v1", os.urandom(3 * CS))]
    back_up(store, "v2", os.urandom(3 * CS))
    delete_manifest(store, "v2")  # forgotten: its packs are prune's work
    refs = {c for d in read_manifest(store, "v1").disks for c in d.chunks}
    packs = {p for c, p, *_ in store.index.entries() if c not in refs}
    assert packs
    store.index.remove_packs(sorted(packs))  # the killed prune got this far
    left = {f.stem for f in store.packs_dir.rglob("*.pack")} & packs
    assert left == packs
    dry = prune(store, apply=False)
    assert sorted(n for n, _ in dry.unindexed_removed) == sorted(
        str(pack_path(store.packs_dir, p).relative_to(store.root)) for p in packs)
    assert {f.stem for f in store.packs_dir.rglob("*.pack")} & packs == packs  # dry run
    prune(store, apply=True)
    assert {f.stem for f in store.packs_dir.rglob("*.pack")} & packs == set()
    assert verify(store, cat, read_percent=100).ok
