"""LUN replica paths end to end: flows → tasks → the real SMI-S driver → the EVA process.

Every test talks to one simulated EVA served over HTTPS (certificate verified) through
a plain pywbem.WBEMConnection, as to a real provider. Restores are compared byte for
byte with the point in time; every failure path is checked for leftovers (replica sets,
presentations to the backup host, catalogued versions).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from dpflow.catalog import SessionRow
from dpflow.environment import environment
from dpflow.errors import PermanentError, UserError
from dpflow_cli.demo_array import DependentWriter, initial_bytes, read_lun, write_lun
from drivers.smis import SmisArray
from simulators.eva.process import EvaServer

pytestmark = pytest.mark.usefixtures("prefect_server")
MiB = 1 << 20
SIZE = 4 * MiB
POOL = "DG1"
HOSTS = {"proxy": ["5001438000000A01"], "dbhost": ["5001438000000B01"]}


@pytest.fixture(scope="module")
def eva(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EvaServer]:
    with EvaServer.start(tmp_path_factory.mktemp("eva"), pools={POOL: 64 * MiB},
                         hosts=HOSTS) as server:
        yield server


@pytest.fixture
def drv(eva: EvaServer) -> Iterator[SmisArray]:
    """A direct driver for the test's own setup and inspection; the array clean after."""
    eva.faults.clear()
    eva.set_jobs(True, 0.02)
    d = SmisArray(eva.connection(timeout=30.0), poll_s=0.02)  # test set-up and clean-up: patient
    yield d
    eva.faults.clear()
    eva.control(op="fill_pool", pool=POOL, filled=False)
    for p in d.list_presentations():
        d.unpresent(p.vdisk, p.host)
    for rs in d.list_replica_sets():
        d.delete_replica_set(rs.name)
    for v in d.list_vdisks():
        d.delete_vdisk(v.name)
    d.close()


@pytest.fixture
def cfg(tmp_path: Path, eva: EvaServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DPFLOW_TEST_EVA_PASSWORD", eva.password)
    c = {"arrays": [{"name": "eva1", "host": "127.0.0.1", "port": eva.port, "user": eva.user,
                     "password": {"env": "DPFLOW_TEST_EVA_PASSWORD"}, "ca_file": str(eva.ca_file),
                     "backup_host": "proxy", "timeout_s": 3.0, "job_deadline_s": 20,
                     "replica_kind": "snapclone", "keep": 3}],
         "stores": [{"name": "library", "path": "store"}]}
    path = tmp_path / "dpflow.yaml"
    path.write_text(yaml.safe_dump(c))
    return str(path)


def group_of_two(drv: SmisArray, eva: EvaServer) -> tuple[int, int, bytes, bytes]:
    """LUNs data and logs with real bytes, presented to dbhost; their LUN numbers and bytes."""
    drv.create_vdisk("data", SIZE, POOL)
    drv.create_vdisk("logs", SIZE, POOL)
    a, b = drv.present("data", "dbhost").lun, drv.present("logs", "dbhost").lun
    init_a, init_b = initial_bytes(SIZE, 1), initial_bytes(SIZE, 2)
    write_lun(eva.host_port("dbhost"), a, init_a)
    write_lun(eva.host_port("dbhost"), b, init_b)
    return a, b, init_a, init_b


def assert_nothing_left(cfg: str, drv: SmisArray, group: str = "db") -> None:
    """No replica set, no presentation to the backup host, no version; the session failed."""
    assert drv.list_replica_sets() == []
    assert [p for p in drv.list_presentations() if p.host == "proxy"] == []
    cat = environment(cfg).catalog()
    assert cat.replica_sets(group, include_removed=True) == []
    with cat.session() as db:
        statuses = [s.status for s in db.scalars(select(SessionRow))]
    assert statuses and statuses[-1] == "failed"


def test_replicate_under_a_writer_then_restore_is_the_point_in_time(cfg, drv, eva):
    """Snapclone of a 2-LUN group while a host writes dependent writes; IR restore; bytes
    equal the writes up to the replica's moment (rebuilt from the writer's journal)."""
    from flows.luns import replicate_luns, restore_luns_from_replica

    a, b, init_a, init_b = group_of_two(drv, eva)
    host = eva.host_port("dbhost")
    writer = DependentWriter(host, a, b, SIZE, pause_s=0.001)
    writer.start()
    try:
        while writer.n < 10:
            time.sleep(0.005)
        r = replicate_luns(cfg, "db", ["data", "logs"], "snapclone")
        n_after = writer.n
        while writer.n < n_after + 10 and writer.is_alive():  # writes after the replica too
            time.sleep(0.005)
    finally:
        writer.stop.set()
        writer.join()
    assert writer.error is None
    assert r.status == "completed" and r.kind == "snapclone" and len(r.presented_luns) == 2
    assert [p for p in drv.list_presentations() if p.host == "proxy"] == []
    (row,) = environment(cfg).catalog().replica_sets("db")
    assert (row.name, row.version_id, row.kind) == (r.replica_set, r.version_id, "snapclone")
    assert [m.source for m in row.members] == ["data", "logs"]

    with pytest.raises(UserError, match="presented to a host that may be running"):
        restore_luns_from_replica(cfg, "db")
    rr = restore_luns_from_replica(cfg, "db", detach_hosts=True)
    assert sorted(rr.detached) == ["data@dbhost", "logs@dbhost"]
    # the hosts have their LUNs back at the same numbers
    assert {(p.vdisk, p.lun) for p in drv.list_presentations() if p.host == "dbhost"} == {
        ("data", a), ("logs", b)}
    got_a, got_b = read_lun(host, a, SIZE), read_lun(host, b, SIZE)
    na = DependentWriter.point_in_time(init_a, got_a, log=False)
    nb = DependentWriter.point_in_time(init_b, got_b, log=True)
    assert 10 <= na <= n_after < writer.n and na - nb in (0, 1)
    assert got_a == DependentWriter.expected(init_a, na, log=False)
    assert got_b == DependentWriter.expected(init_b, nb, log=True)


def test_rotation_keeps_n_and_mirrorclones_are_fractured(cfg, drv, eva):
    from flows.luns import replicate_luns

    group_of_two(drv, eva)
    results = [replicate_luns(cfg, "db", ["data", "logs"], kind, keep=2)
               for kind in ("vsnap", "mirrorclone", "snapshot")]
    assert [r.kind for r in results] == ["vsnap", "mirrorclone", "snapshot"]
    assert results[2].rotated == [results[0].replica_set]
    cat = environment(cfg).catalog()
    kept = [r.name for r in cat.replica_sets("db")]
    assert kept == [results[1].replica_set, results[2].replica_set]
    assert sorted(s.name for s in drv.list_replica_sets()) == sorted(kept)
    gone = [r for r in cat.replica_sets("db", include_removed=True) if r.status == "removed"]
    assert [g.name for g in gone] == [results[0].replica_set] and gone[0].removed
    mirror = drv.get_replica_set(results[1].replica_set)
    assert {x.state for x in mirror.replicas} == {"fractured"}


def test_strict_policy_fails_when_the_array_lacks_space(cfg, drv, eva):
    from flows.luns import replicate_luns

    group_of_two(drv, eva)
    eva.faults.fill_pool(POOL)
    with pytest.raises(PermanentError, match="policy strict.*insufficient free space"):
        replicate_luns(cfg, "db", ["data", "logs"], "snapclone", policy="strict")
    assert_nothing_left(cfg, drv)


def test_loose_policy_falls_back_and_the_version_says_so(cfg, drv, eva):
    from flows.luns import replicate_luns

    group_of_two(drv, eva)
    eva.faults.fill_pool(POOL)
    r = replicate_luns(cfg, "db", ["data", "logs"], "snapclone", policy="loose")
    assert (r.status, r.kind, r.requested_kind) == ("completed", "vsnap", "snapclone")
    (row,) = environment(cfg).catalog().replica_sets("db")
    assert (row.kind, row.requested_kind) == ("vsnap", "snapclone")
    assert "requested snapclone, made vsnap (policy loose)" in row.version.note


@pytest.mark.parametrize("fault", ["job", "present", "timeout"])
def test_failed_session_leaves_no_replica_presentation_or_version(cfg, drv, eva, fault):
    """job: the array's job ends in Exception; present: the replica exists, then presenting
    it to the backup host fails (the set must be deleted); timeout: the provider does not
    answer ExposePaths in time, on every retry (a late answer must not leave anything)."""
    from flows.luns import replicate_luns

    group_of_two(drv, eva)
    if fault == "job":
        eva.faults.fail_job("CreateGroupReplica", error_code=0x8010, description="disk failure")
    elif fault == "present":
        eva.faults.fail_method("ExposePaths", rc=4, description="controller busy", count=10)
    else:
        eva.faults.hang("ExposePaths", seconds=3.5, count=3)
    with pytest.raises(Exception) as exc:  # noqa: PT011 - the words are checked below
        replicate_luns(cfg, "db", ["data", "logs"], "snapclone")
    words = {"job": "disk failure", "present": "controller busy", "timeout": "timed out"}
    assert words[fault] in str(exc.value)
    if fault == "timeout":  # the provider's last hung call may still be finishing
        deadline = time.monotonic() + 15
        while True:
            try:
                assert_nothing_left(cfg, drv)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    else:
        assert_nothing_left(cfg, drv)


def test_a_timed_out_create_is_found_again_by_name(cfg, drv, eva):
    """The provider times out once; the retry finds or makes the set: exactly one."""
    from flows.luns import replicate_luns

    group_of_two(drv, eva)
    eva.faults.hang("CreateGroupReplica", seconds=3.5, count=1)
    r = replicate_luns(cfg, "db", ["data", "logs"], "vsnap")
    assert r.status == "completed"
    assert [s.name for s in drv.list_replica_sets()] == [r.replica_set]


def test_leftover_replica_of_a_killed_session_is_removed(cfg, drv, eva):
    from flows.luns import replicate_luns

    group_of_two(drv, eva)
    drv.create_replica_set("dp-deadbeef", ["data", "logs"], "vsnap")
    drv.present("dp-deadbeef-data", "proxy")
    r = replicate_luns(cfg, "db", ["data", "logs"], "vsnap")
    assert [s.name for s in drv.list_replica_sets()] == [r.replica_set]


def test_restore_without_hosts_and_concurrent_sessions_wait(cfg, drv, eva):
    """Two replicates of one group at once run one after the other (exclusive per group)."""
    from flows.luns import replicate_luns, restore_luns_from_replica

    a, b, init_a, _ = group_of_two(drv, eva)
    out: list = []
    # each thread runs in a copy of this context: it carries the test server's settings
    # (a bare thread would start Prefect's own ephemeral server)
    ts = [threading.Thread(target=contextvars.copy_context().run, args=(lambda: out.append(
        replicate_luns(cfg, "db", ["data", "logs"], "snapshot")),)) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(r.status for r in out) == ["completed", "completed"]
    host = eva.host_port("dbhost")
    host.write(a, 0, b"changed after the replica")
    drv.unpresent("data", "dbhost")
    drv.unpresent("logs", "dbhost")
    rr = restore_luns_from_replica(cfg, "db", out[0].replica_set)
    assert rr.detached == []
    lun = drv.present("data", "dbhost").lun
    assert read_lun(host, lun, SIZE) == init_a


def test_cli_bad_input_is_one_line_before_the_array(cfg, drv):
    from dpflow_cli.main import app

    runner = CliRunner()
    for args, words in [
        (["replicate", "db", "data", "--kind", "clone"], "unknown replica kind 'clone'"),
        (["replicate", "db", "data", "data"], "LUN(s) named twice: data"),
        (["replicate", "db", "data", "--keep", "0"], "bad --keep 0"),
        (["replicate", "db", "data", "--array", "eva9"], "unknown array 'eva9'"),
        (["restore", "luns", "db"], "no replica set of LUN group 'db'"),
    ]:
        res = runner.invoke(app, [*args, "--config", cfg])
        assert res.exit_code == 2, res.output
        assert words in res.output
