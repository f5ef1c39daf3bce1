"""An in-process EVA with a database double on it, for the double's and driver's unit tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from drivers.oracle import OracleDriver
from simulators.eva import EvaArray
from simulators.oracle.build import create_database
from simulators.oracle.client import ROOT_ENV, connect
from simulators.oracle.media import LOCAL_PORTS
from simulators.oracle.workload import Workload

MiB = 1 << 20
DSN = "dbhost:1521/ORCL"
PASSWORD = "change-on-install"


@dataclass
class Rig:
    array: EvaArray
    home: Path
    db: OracleDriver
    app: Workload

    def luns(self, kind: str = "data") -> list[str]:
        return sorted(v for v in self.array.vdisks if v.startswith(f"ORCL_{kind}"))

    def replica(self, name: str, luns: list[str] | None = None) -> None:
        self.array.create_replica_set(name, luns or self.luns(), "snapclone")

    def restore(self, name: str) -> None:
        """As dpflow's IR does: sources taken from the host, restored, given back."""
        held = {v: lun for (v, h), (lun, _) in self.array.presentations.items()
                if h == "dbhost" and v in {p.source for p in self.array.pairs_of(name)}}
        for v in held:
            self.array.unpresent(v, "dbhost")
        self.array.modify(name, "restore")
        for v, lun in held.items():
            self.array.present(v, "dbhost", lun)


class ModelAdmin:
    """The two admin calls create_database makes, straight on the array model (the
    SMI-S path is covered by the integration tests; here it would only cost time)."""

    def __init__(self, array: EvaArray) -> None:
        self.array = array

    def create_vdisk(self, name: str, size: int, pool: str) -> SimpleNamespace:
        return SimpleNamespace(wwn=self.array.create_vdisk(name, size, pool).id)

    def present(self, vdisk: str, host: str) -> SimpleNamespace:
        return SimpleNamespace(lun=self.array.present(vdisk, host))


def make_rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kw: object) -> Rig:
    array = EvaArray(tmp_path / "eva")
    array.add_pool("DG1", 1 << 30)
    array.add_host("dbhost", ["5001438000000B01"])
    key = str(tmp_path)
    LOCAL_PORTS[key] = array.host_port("dbhost")
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "ora"))
    home = create_database(tmp_path / "ora", "ORCL", ModelAdmin(array), "dbhost",
                           {"local": key}, PASSWORD, [8 * MiB, 8 * MiB], **kw)  # type: ignore[arg-type]
    return Rig(array, home, OracleDriver(DSN, "sys", PASSWORD, connect),
               Workload(DSN, "sys", PASSWORD))
