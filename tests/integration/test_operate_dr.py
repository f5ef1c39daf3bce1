"""The Oracle recovery deployments (flows/operate_dr.py) run end to end as a worker runs a
run started from the UI form: the deployment's parameters plus the form's, the backup
asked at run time and answered, against the Oracle double and the EVA simulator. Every
recovered database is checked against what its workload was told was committed."""

from __future__ import annotations

import contextvars
import threading
from pathlib import Path
from typing import Any

import pytest

from simulators.oracle.build import corrupt_datafile
from tests.integration import test_oracle_zdb as ora
from tests.integration.served import answer_question, run_like_a_deployment
from tests.integration.test_oracle_zdb import crash, make_db, rows

eva, drv, cfg = ora.eva, ora.drv, ora.cfg  # the Oracle tests' fixtures (an EVA per module)

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]


def started(dc: str, name: str, form: dict[str, Any]) -> tuple[threading.Thread, dict]:
    """The deployment's run in a thread (in a copy of this context: the test server's
    settings), so that the test can answer its question."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = run_like_a_deployment(dc, name, form)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            out["error"] = exc

    t = threading.Thread(target=contextvars.copy_context().run, args=(run,))
    t.start()
    return t, out


def finished(t: threading.Thread, out: dict[str, Any]) -> dict[str, Any]:
    t.join(300)
    assert not t.is_alive(), "the recovery run did not finish"
    assert "error" not in out, out.get("error")
    return dict(out["result"])


def test_oracle_recovery_deployments_ask_for_the_backup_and_recover(cfg, drv, eva,
                                                                    tmp_path: Path) -> None:
    from flows.oracle import backup_oracle_zdb

    app = make_db(tmp_path, eva, drv)
    app.commit(5)
    first = backup_oracle_zdb(cfg, "ORCL", to_media=True)
    app.commit(5)
    assert first.status == "completed" and first.media_version_id

    crash()  # Instant Recovery from the replica, chosen when the run asks
    t, out = started(cfg, "oracle-instant-recovery", {"db": "ORCL"})
    offered = answer_question("oracle-instant-recovery", {"db": "ORCL"}, first.version_id)
    assert len(offered) == 1  # the one replica on the array
    ir = finished(t, out)
    assert (ir["replica_set"], ir["point"], ir["resetlogs"]) == (first.replica_set, "complete",
                                                                 False)
    assert [i for i, _ in rows()] == app.journal.ids() == list(range(1, 11))

    app.commit(5)
    crash()  # the datafiles lost: back from the LUN images in the store
    corrupt_datafile(tmp_path / "ora" / "ORCL", 1)
    t, out = started(cfg, "oracle-restore-from-media", {"db": "ORCL"})
    offered = answer_question("oracle-restore-from-media", {"db": "ORCL"}, first.version_id)
    assert len(offered) == 1
    media = finished(t, out)
    assert media["version_id"] == first.version_id and media["point"] == "complete"
    assert [i for i, _ in rows()] == app.journal.ids() == list(range(1, 16))
    assert [p for p in drv.list_presentations() if p.host == "proxy"] == []
