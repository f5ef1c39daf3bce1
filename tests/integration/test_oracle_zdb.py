"""Oracle ZDB and Instant Recovery end to end: flows → tasks → the real oracledb driver code
→ the database double → its datafiles on LUNs of the EVA process (HTTPS, verified), and the
replicas made by the real SMI-S driver. Every recovered database is checked transaction by
transaction against what the workload was told was committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from dpflow.catalog import SessionRow
from dpflow.catalog_oracle import oracle_backups
from dpflow.environment import environment
from dpflow.errors import PermanentError, UserError
from drivers.smis import SmisArray
from simulators.eva.process import EvaServer
from simulators.oracle.build import create_database, inject_drop, lose_archived_log
from simulators.oracle.client import ROOT_ENV, connect
from simulators.oracle.workload import Workload, committed_rows

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]
MiB = 1 << 20
POOL = "DG1"
HOSTS = {"proxy": ["5001438000000A01"], "dbhost": ["5001438000000B01"]}
PASSWORD = "oracle-test-pw"


@pytest.fixture(scope="module")
def eva(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EvaServer]:
    with EvaServer.start(tmp_path_factory.mktemp("eva"), pools={POOL: 512 * MiB},
                         hosts=HOSTS) as server:
        server.set_jobs(True, 0.02)
        yield server


@pytest.fixture
def drv(eva: EvaServer) -> Iterator[SmisArray]:
    eva.faults.clear()
    d = SmisArray(eva.connection(timeout=30.0), poll_s=0.02)  # test set-up and clean-up: patient
    yield d
    eva.faults.clear()
    for p in d.list_presentations():
        d.unpresent(p.vdisk, p.host)
    for rs in d.list_replica_sets():
        d.delete_replica_set(rs.name)
    for v in d.list_vdisks():
        d.delete_vdisk(v.name)
    d.close()


def make_db(tmp_path: Path, eva: EvaServer, drv: SmisArray, name: str = "ORCL",
            **kw: object) -> Workload:
    san = {"url": eva.url, "host": "dbhost", "ca_file": str(eva.ca_file), "user": eva.user,
           "password": eva.password}
    create_database(tmp_path / "ora", name, drv, "dbhost", san, PASSWORD, [16 * MiB, 16 * MiB],
                    **kw)  # type: ignore[arg-type]
    return Workload(f"dbhost:1521/{name}", "sys", PASSWORD, pause_s=0.001)


@pytest.fixture
def cfg(tmp_path: Path, eva: EvaServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DPFLOW_TEST_EVA_PASSWORD", eva.password)
    monkeypatch.setenv("DPFLOW_TEST_ORA_PASSWORD", PASSWORD)
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "ora"))
    db = {"dsn": "dbhost:1521/{}", "user": "sys", "connect": "simulators.oracle.client:connect",
          "password": {"env": "DPFLOW_TEST_ORA_PASSWORD"}, "connect_timeout_s": 30}
    c = {"arrays": [{"name": "eva1", "host": "127.0.0.1", "port": eva.port, "user": eva.user,
                     "password": {"env": "DPFLOW_TEST_EVA_PASSWORD"}, "ca_file": str(eva.ca_file),
                     "backup_host": "proxy", "timeout_s": 20.0, "job_deadline_s": 120,
                     "replica_kind": "snapclone", "keep": 2}],
         "databases": [dict(db, name=n, dsn=db["dsn"].format(n))
                       for n in ("ORCL", "NOARC", "SHARED")]
         + [dict(db, name="GHOST", dsn="dbhost:1521/GHOST"),
            dict(db, name="BADPW", dsn="dbhost:1521/ORCL",
                 password={"env": "DPFLOW_TEST_EVA_PASSWORD"})],
         "stores": [{"name": "library", "path": "store"}]}
    c["arrays"][0]["san"] = "https"  # the backup host reads LUNs over the EVA's data path
    path = tmp_path / "dpflow.yaml"
    path.write_text(yaml.safe_dump(c))
    return str(path)


def rows(name: str = "ORCL") -> list[tuple[int, int]]:
    return committed_rows(f"dbhost:1521/{name}", "sys", PASSWORD)


def backup_mode(name: str = "ORCL") -> set[str]:
    from drivers.oracle import OracleDriver

    d = OracleDriver(f"dbhost:1521/{name}", "sys", PASSWORD, connect)
    try:
        return {b.status for b in d.backup_status()}
    finally:
        d.close()


def crash(name: str = "ORCL") -> None:
    """The database host dies: instance gone, datafiles fuzzy."""
    conn = connect(user="sys", password=PASSWORD, dsn=f"dbhost:1521/{name}", mode=2)
    import oracledb

    conn.shutdown(mode=oracledb.DBSHUTDOWN_ABORT)


def last_session(cfg: str) -> str:
    with environment(cfg).catalog().session() as db:
        return [s.status for s in db.scalars(select(SessionRow))][-1]


def test_zdb_under_a_workload_then_instant_recovery_loses_nothing(cfg, drv, eva, tmp_path):
    from flows.oracle import backup_oracle_zdb, instant_recover_oracle

    app = make_db(tmp_path, eva, drv)
    app.start()
    try:
        while app.next_id < 20:
            pass
        r = backup_oracle_zdb(cfg, "orcl")
    finally:
        app.halt()
    assert app.error is None
    assert r.status == "completed" and r.kind == "snapclone" and r.logs >= 1
    assert r.luns == ["ORCL_data1", "ORCL_data2"] and r.begin_scn < r.end_scn
    assert backup_mode() == {"NOT ACTIVE"}
    ((ob, rs),) = oracle_backups(environment(cfg).catalog(), "ORCL")
    assert (rs.name, ob.begin_scn, ob.end_scn) == (r.replica_set, r.begin_scn, r.end_scn)
    assert ob.log_list()[0]["chunks"] and "ORCL_" in ob.controlfile
    app.commit(7)  # after the backup: only in the online redo

    with pytest.raises(UserError, match="database ORCL is open"):
        instant_recover_oracle(cfg, "ORCL")
    crash()
    ir = instant_recover_oracle(cfg, "ORCL")
    assert ir.point == "complete" and not ir.resetlogs
    assert [i for i, _ in rows()] == app.journal.ids()  # every acknowledged commit, no more


def test_zdb_is_registered_with_the_store_while_it_writes_logs(cfg, drv, eva, tmp_path,
                                                              monkeypatch):
    """A prune defers while any backup is registered: the ZDB's archived logs and control
    file are new chunks a concurrent prune must not take, so the ZDB registers first."""
    import flows.oracle
    from dpflow.store.maintenance import live_backups

    seen: list[list[str]] = []
    save = flows.oracle.save_logs_and_controlfile

    def watched(env, db, store, begin_scn, session_id):  # type: ignore[no-untyped-def]
        seen.append([b["session"] for b in live_backups(env.store(store))])
        return save(env, db, store, begin_scn, session_id)

    monkeypatch.setattr(flows.oracle, "save_logs_and_controlfile", watched)
    make_db(tmp_path, eva, drv).commit(3)
    r = flows.oracle.backup_oracle_zdb(cfg, "ORCL")
    assert r.status == "completed" and seen == [[r.session_id]]
    assert live_backups(environment(cfg).store(None)) == []  # unregistered at the end


def test_point_in_time_recovery_holds_exactly_the_transactions_up_to_the_scn(cfg, drv, eva,
                                                                             tmp_path):
    from flows.oracle import backup_oracle_zdb, instant_recover_oracle

    app = make_db(tmp_path, eva, drv)
    app.commit(10)
    backup_oracle_zdb(cfg, "ORCL")
    app.commit(10)
    before = {i for i, _ in rows()}
    point = max(s for _, s in rows())
    app.commit(10)
    ir = instant_recover_oracle(cfg, "ORCL", until_scn=point, shutdown_open=True)
    assert ir.resetlogs
    got = rows()
    assert {i for i, _ in got} == before and all(s <= point for _, s in got)


def test_replica_job_fails_after_begin_backup_end_backup_still_runs(cfg, drv, eva, tmp_path):
    from flows.oracle import backup_oracle_zdb

    make_db(tmp_path, eva, drv).commit(3)
    eva.faults.fail_job("CreateGroupReplica", error_code=0x8010, description="disk failure")
    with pytest.raises(PermanentError, match="disk failure"):
        backup_oracle_zdb(cfg, "ORCL")
    assert backup_mode() == {"NOT ACTIVE"}
    assert drv.list_replica_sets() == []
    assert oracle_backups(environment(cfg).catalog(), "ORCL") == []
    assert last_session(cfg) == "failed"


def test_connection_dropped_mid_flow_reconnects_and_ends_backup_mode(cfg, drv, eva, tmp_path):
    from flows.oracle import backup_oracle_zdb

    make_db(tmp_path, eva, drv).commit(3)
    home = tmp_path / "ora" / "ORCL"
    inject_drop(home, "ALTER DATABASE END BACKUP")
    inject_drop(home, "ALTER DATABASE BEGIN BACKUP")
    r = backup_oracle_zdb(cfg, "ORCL")
    assert r.status == "completed" and backup_mode() == {"NOT ACTIVE"}
    assert [s.name for s in drv.list_replica_sets()] == [r.replica_set]


def test_missing_archived_log_is_one_line_naming_it(cfg, drv, eva, tmp_path):
    from flows.oracle import backup_oracle_zdb, instant_recover_oracle
    from simulators.oracle.instance import Instance

    app = make_db(tmp_path, eva, drv)
    app.commit(5)
    backup_oracle_zdb(cfg, "ORCL")
    app.commit(5)
    home = tmp_path / "ora" / "ORCL"
    seq = Instance(home).cf["archived"][-1]["seq"]
    name = lose_archived_log(home, seq)
    crash()
    with pytest.raises(PermanentError) as exc:
        instant_recover_oracle(cfg, "ORCL")
    text = str(exc.value)
    assert "\n" not in text and "ORA-00308" in text and name in text and "MOUNTED" in text


def test_bad_input_is_one_line_before_the_array(cfg, drv, eva, tmp_path):
    from flows.oracle import backup_oracle_zdb

    make_db(tmp_path, eva, drv)
    make_db(tmp_path, eva, drv, name="NOARC", archivelog=False)
    make_db(tmp_path, eva, drv, name="SHARED", controlfile_on_data=True)
    for db, words in [("BADPW", "wrong user or password"),
                      ("SHARED", "share LUN\\(s\\) SHARED_data1 with datafiles"),
                      ("GHOST", "listener does not know this database"),
                      ("NOARC", "NOARCHIVELOG mode"),
                      ("NOSUCH", "unknown database 'NOSUCH'")]:
        with pytest.raises(UserError, match=words) as exc:
            backup_oracle_zdb(cfg, db)
        assert "\n" not in str(exc.value)
    assert drv.list_replica_sets() == [] and backup_mode() == {"NOT ACTIVE"}


def test_cli_backup_list_and_recover_with_bad_input_as_one_line(cfg, drv, eva, tmp_path):
    from typer.testing import CliRunner

    from dpflow_cli.main import app

    runner = CliRunner()
    work = make_db(tmp_path, eva, drv)
    work.commit(4)
    for args, words in [
        (["backup", "oracle", "NOSUCH"], "unknown database 'NOSUCH'"),
        (["backup", "oracle", "BADPW"], "wrong user or password"),
        (["recover", "oracle", "ORCL", "--until", "yesterday"], "bad --until 'yesterday'"),
        (["recover", "oracle", "ORCL"], "no Zero Downtime Backup of database ORCL"),
    ]:
        res = runner.invoke(app, [*args, "--config", cfg])
        assert res.exit_code == 2, res.output
        assert words in " ".join(res.output.split())
    res = runner.invoke(app, ["backup", "oracle", "orcl", "--config", cfg])
    assert res.exit_code == 0, res.output
    assert "backed up ORCL" in res.output
    work.commit(4)
    res = runner.invoke(app, ["recover", "oracle", "ORCL", "--list", "--config", cfg])
    ((_, rs),) = oracle_backups(environment(cfg).catalog(), "ORCL")
    assert res.exit_code == 0 and rs.name in res.output
    res = runner.invoke(app, ["recover", "oracle", "ORCL", "--shutdown", "--config", cfg])
    assert res.exit_code == 0, res.output
    assert "recovered ORCL" in res.output
    assert [i for i, _ in rows()] == work.journal.ids() == list(range(1, 9))


def test_rdm_discovery_datafiles_to_the_vms_rdm_disks_to_array_vdisks(cfg, drv, eva, tmp_path,
                                                                       vcsim, monkeypatch):
    """The VM runs the database; each datafile LUN must be one of its RDM disks."""
    import uuid

    from flows.oracle import backup_oracle_zdb
    from simulators.oracle.rdm import attach_rdms

    make_db(tmp_path, eva, drv).commit(3)
    vm = f"dbvm-{uuid.uuid4().hex[:6]}"
    vcsim.create_vm(vm, [1 << 20])
    attach_rdms(vcsim, vm, [drv.get_vdisk("ORCL_data1").wwn])
    monkeypatch.setenv("DPFLOW_TEST_VC_PASSWORD", vcsim.password)
    c = yaml.safe_load(Path(cfg).read_text())
    c["vcenters"] = [{"name": "vcsim", "host": vcsim.host, "port": vcsim.port,
                      "user": vcsim.username, "password": {"env": "DPFLOW_TEST_VC_PASSWORD"},
                      "ca_file": str(vcsim.ca_file)}]
    c["databases"][0]["vm"] = vm
    Path(cfg).write_text(yaml.safe_dump(c))
    with pytest.raises(UserError, match=f"ORCL_data2 of ORCL are not RDM disks of VM {vm}"):
        backup_oracle_zdb(cfg, "ORCL")
    assert drv.list_replica_sets() == []
    attach_rdms(vcsim, vm, [drv.get_vdisk("ORCL_data2").wwn])
    r = backup_oracle_zdb(cfg, "ORCL")
    assert r.status == "completed" and r.luns == ["ORCL_data1", "ORCL_data2"]


def test_zdb_to_media_then_restore_from_media_when_the_replica_is_gone(cfg, drv, eva,
                                                                       tmp_path):
    from flows.oracle import backup_oracle_zdb
    from flows.oracle_media import restore_oracle_from_media
    from simulators.oracle.build import corrupt_datafile

    app = make_db(tmp_path, eva, drv)
    app.commit(5)
    first = backup_oracle_zdb(cfg, "ORCL", to_media=True)
    assert first.media_version_id and [p for p in drv.list_presentations()
                                       if p.host == "proxy"] == []
    app.commit(5)
    second = backup_oracle_zdb(cfg, "ORCL", keep=1)
    assert second.rotated == [first.replica_set]  # the replica of the media copy is gone
    app.commit(5)
    crash()
    corrupt_datafile(tmp_path / "ora" / "ORCL", 1)
    r = restore_oracle_from_media(cfg, "ORCL")
    assert r.version_id == first.version_id and r.point == "complete"
    assert [i for i, _ in rows()] == app.journal.ids() == list(range(1, 16))
    assert [p for p in drv.list_presentations() if p.host == "proxy"] == []
