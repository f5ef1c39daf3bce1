"""The database double through the real driver: every wrong sequence fails as Oracle would.

Each test drives drivers.oracle.OracleDriver against the double on an in-process EVA
(datafiles, control file and redo on LUNs; replicas and restores made by the array
model), and checks the ORA code the driver kept at its boundary.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.oracle import OracleDriver
from drivers.oracle_protocol import OraPermanent, OraTransient, OraUserError
from simulators.oracle.build import inject_drop, lose_archived_log, restore_controlfile
from simulators.oracle.client import connect
from simulators.oracle.workload import committed_rows
from tests.unit.oracle_rig import DSN, PASSWORD, Rig, make_rig


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Rig:
    return make_rig(tmp_path, monkeypatch)


def ids(r: Rig) -> list[int]:
    return [i for i, _ in committed_rows(DSN, "sys", PASSWORD)]


def zdb(r: Rig, name: str = "rs1", luns: list[str] | None = None) -> tuple[int, int]:
    """BEGIN BACKUP, replica, END BACKUP, archive log current: (begin SCN, end SCN)."""
    begin = r.db.begin_backup()
    r.replica(name, luns)
    r.app.commit(3)  # committed while in backup mode, after the replica
    end = r.db.end_backup()
    r.db.archive_log_current()
    return begin, end


def crash_and_restore(r: Rig, name: str = "rs1") -> None:
    r.db.shutdown(abort=True)
    r.restore(name)
    r.db.startup_mount()


def raises(code: str, cls: type = OraPermanent):  # noqa: ANN201 - a pytest context
    return pytest.raises(cls, match=code)


def test_complete_instant_recovery_keeps_every_committed_transaction(rig: Rig) -> None:
    rig.app.commit(10)
    zdb(rig)
    rig.app.commit(10)  # after the backup: only in archived + online redo
    rig.db.archive_log_current()
    rig.app.commit(5)  # only in the online redo
    crash_and_restore(rig)
    with raises("ORA-01113") as exc:
        rig.db.open()
    assert exc.value.code == "ORA-01113" and "ORA-01110: data file 1" in exc.value.text
    rig.db.recover()
    rig.db.open()
    assert ids(rig) == rig.app.journal.ids() == list(range(1, 29))


def test_point_in_time_recovery_holds_exactly_the_transactions_before_the_point(rig) -> None:
    rig.app.commit(10)
    _, end = zdb(rig)
    rig.app.commit(10)
    point = rig.db.check().current_scn
    rig.app.commit(10)
    rig.db.archive_log_current()
    crash_and_restore(rig)
    rig.db.recover(("scn", point))
    with raises("ORA-01589"):
        rig.db.open()
    rig.db.open(resetlogs=True)
    got = committed_rows(DSN, "sys", PASSWORD)
    assert [i for i, _ in got] == list(range(1, 24)) and all(s <= point for _, s in got)
    assert rig.db.check().resetlogs_scn > point


def test_not_in_archivelog_mode_refuses_begin_backup(tmp_path, monkeypatch) -> None:
    r = make_rig(tmp_path, monkeypatch, archivelog=False)
    with raises("ORA-01123", OraUserError):
        r.db.begin_backup()


def test_begin_backup_twice_and_end_backup_without_begin(rig) -> None:
    with raises("ORA-01142"):
        rig.db.end_backup()
    rig.db.begin_backup()
    with raises("ORA-01146"):
        rig.db.begin_backup()


def test_shutdown_in_backup_mode_and_crash_in_backup_mode(rig) -> None:
    rig.db.begin_backup()
    with raises("ORA-01149"):
        rig.db.shutdown()
    rig.db.shutdown(abort=True)
    rig.db.startup_mount()
    with raises("ORA-10873"):
        rig.db.open()
    rig.db.end_backup()  # allowed while mounted: the way out
    rig.db.open()


def test_fuzzy_replica_without_backup_mode_under_recovered(rig) -> None:
    rig.app.commit(5)
    point = rig.db.check().current_scn
    rig.app.commit(5)
    rig.replica("fuzzy")  # no BEGIN BACKUP: the copy holds rows newer than its checkpoint
    rig.db.archive_log_current()
    crash_and_restore(rig, "fuzzy")
    with raises("ORA-01547") as exc:
        rig.db.recover(("scn", point))
    assert "ORA-01194: file 1 needs more recovery to be consistent" in exc.value.text
    with raises("ORA-01194"):
        rig.db.open(resetlogs=True)


def test_recovery_stopped_before_the_end_of_backup_marker(rig) -> None:
    rig.app.commit(5)
    begin, _ = zdb(rig)
    crash_and_restore(rig)
    with raises("ORA-01547") as exc:
        rig.db.recover(("scn", begin + 1))
    assert "ORA-01195: online backup of file 1" in exc.value.text


def test_a_lun_left_out_of_the_replica(rig) -> None:
    rig.app.commit(5)
    _, end = zdb(rig, luns=rig.luns()[:1])
    rig.app.commit(5)
    rig.db.archive_log_current()
    crash_and_restore(rig)
    with raises("ORA-01547") as exc:
        rig.db.recover(("scn", end + 1))
    assert "ORA-01152: file 2 was not restored from a sufficiently old backup" in exc.value.text


def test_backup_controlfile_needs_using_backup_controlfile_and_resetlogs(rig) -> None:
    rig.app.commit(5)
    zdb(rig)
    rig.db.backup_controlfile("/u01/app/oracle/bkp/c1.ctl")
    rig.db.archive_log_current()
    rig.db.shutdown(abort=True)
    rig.restore("rs1")
    restore_controlfile(rig.home, "/u01/app/oracle/bkp/c1.ctl")
    rig.db.startup_mount()
    with raises("ORA-01589"):
        rig.db.open()
    with raises("ORA-01610"):
        rig.db.recover()
    rig.db.recover(("cancel", None), backup_controlfile=True)
    rig.db.open(resetlogs=True)
    assert ids(rig) == list(range(1, 9))  # every archived transaction, none of the online


def test_files_from_before_the_last_resetlogs(rig) -> None:
    rig.app.commit(5)
    _, end = zdb(rig)
    rig.db.archive_log_current()
    crash_and_restore(rig)
    rig.db.recover(("scn", end + 1))
    rig.db.open(resetlogs=True)
    crash_and_restore(rig)  # the same replica again: it predates the new incarnation
    with raises("ORA-01190"):
        rig.db.recover()


def test_missing_archived_log(rig) -> None:
    rig.app.commit(5)
    zdb(rig)
    rig.app.commit(5)
    rig.db.archive_log_current()
    rig.db.archive_log_current()
    name = lose_archived_log(rig.home, 2)
    crash_and_restore(rig)
    with raises("ORA-00308") as exc:
        rig.db.recover()
    assert f"cannot open archived log '{name}'" in str(exc.value).splitlines()[0]


def test_a_dropped_connection_is_transient_and_the_driver_reconnects(rig) -> None:
    inject_drop(rig.home, "ALTER DATABASE END BACKUP")
    rig.db.begin_backup()
    with raises("ORA-03113", OraTransient):
        rig.db.end_backup()
    rig.db.end_backup()  # a new connection, as a task retry makes
    assert {b.status for b in rig.db.backup_status()} == {"NOT ACTIVE"}


def test_bad_credentials_and_unknown_database_are_user_errors(rig) -> None:
    with raises("ORA-01017", OraUserError):
        OracleDriver(DSN, "sys", "wrong", connect).check()
    with raises("ORA-12514", OraUserError):
        OracleDriver("dbhost:1521/NOPE", "sys", PASSWORD, connect).check()


def test_connect_has_an_outer_deadline() -> None:
    import threading

    never = threading.Event()
    drv = OracleDriver(DSN, "sys", "x", lambda **_: never.wait(), connect_timeout_s=0.2)
    with raises("no answer", OraTransient):
        drv.check()
    never.set()
