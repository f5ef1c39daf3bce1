"""The database double's instance: SCN clock, control file, redo, backup mode, open/close.

Why the instance state is a file (`instance.json`, the "SGA") beside the host's
filesystem: every connection, in any thread or process, sees one instance, as every
session of a real instance does; a file lock serialises calls. The database itself
(control file, datafiles, online redo) lives on the EVA LUNs (`media.Media`).

Simplifications, each named: rows are written to their datafile at commit (after their
redo), so a datafile is never behind its redo and crash recovery has nothing to apply;
instance recovery after a crash therefore only checks what Oracle checks. Split blocks
are not modelled.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from simulators.oracle.errors import dropped, file_error, ora
from simulators.oracle.media import (
    CF_MAGIC,
    DF_MAGIC,
    LOG_MAGIC,
    R_BEGIN,
    R_END,
    R_ROW,
    Media,
    SanError,
)

UP = ("STARTED", "MOUNTED", "OPEN")


class Instance:
    """One call's view of the instance: load, act, save (under the instance lock)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.site: dict[str, Any] = json.loads((home / "site.json").read_text())
        self.st: dict[str, Any] = json.loads((home / "instance.json").read_text())
        self.media = Media(self.site, home)
        self._cf: dict[str, Any] | None = None

    @classmethod
    @contextmanager
    def locked(cls, home: Path) -> Iterator[Instance]:
        with open(home / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            inst = cls(home)
            try:
                yield inst
            finally:
                inst.save()

    def save(self) -> None:
        path = self.home / "instance.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.st))
        os.replace(tmp, path)

    # ---- faults -------------------------------------------------------------------------
    def maybe_drop(self, sql: str) -> None:
        """Injected fault: the connection drops on a statement starting with a prefix."""
        drops: dict[str, int] = self.st.setdefault("faults", {}).setdefault("drop", {})
        for prefix, n in list(drops.items()):
            if n > 0 and " ".join(sql.split()).upper().startswith(prefix.upper()):
                drops[prefix] = n - 1
                raise dropped()

    # ---- state checks ---------------------------------------------------------------------
    @property
    def status(self) -> str:
        return str(self.st["status"])

    def need(self, *states: str) -> None:
        if self.status == "SHUTDOWN":
            raise ora(1034)
        if self.status not in states:
            if "OPEN" in states and len(states) == 1:
                raise ora(1109)
            if self.status == "OPEN":
                raise ora(1126)
            raise ora(1507)

    def next_scn(self) -> int:
        self.st["scn"] += 1
        return int(self.st["scn"])

    # ---- control file -----------------------------------------------------------------
    @property
    def cf(self) -> dict[str, Any]:
        if self._cf is None:
            try:
                cf = self.media.controlfile(self.site["controlfiles"][0])
            except SanError as exc:
                raise ora(205, more=[str(exc)]) from exc
            if cf is None:
                raise ora(205)
            self._cf = cf
        return self._cf

    def put_cf(self) -> None:
        for name in self.site["controlfiles"]:
            self.media.put_controlfile(name, self.cf)

    def file_name(self, file_no: int) -> str:
        return next(f["name"] for f in self.cf["files"] if f["file"] == file_no)

    def head(self, file_no: int) -> dict[str, Any]:
        name = self.file_name(file_no)
        try:
            h = self.media.header(name, DF_MAGIC)
        except SanError as exc:
            raise file_error(1157, file_no, name) from exc
        if h is None:
            raise file_error(1157, file_no, name)
        return h

    def put_head(self, file_no: int, h: dict[str, Any]) -> None:
        self.media.put_header(self.file_name(file_no), DF_MAGIC, h)

    # ---- redo -----------------------------------------------------------------------------
    def current_group(self) -> dict[str, Any]:
        return next(g for g in self.cf["redo"] if g["status"] == "CURRENT")

    def log(self, recs: list[tuple[int, float, int, int, int]]) -> None:
        """Append redo records to the current group (switching when it is full)."""
        g = self.current_group()
        if self.st["pos"] + len(recs) > self.media.capacity(g["member"]):
            self.switch_log()
            g = self.current_group()
        self.media.append_records(g["member"], self.st["pos"], recs)
        self.st["pos"] += len(recs)

    def switch_log(self) -> None:
        """Log switch: the current group archived (in ARCHIVELOG mode), the next one opened."""
        cf = self.cf
        g = self.current_group()
        scn = self.next_scn()
        if cf["log_mode"] == "ARCHIVELOG":
            name = f"{self.site['archive_dest']}/1_{g['seq']}_{cf['resetlogs_scn']}.arc"
            self.media.write_host_file(name, self.media.log_bytes(g["member"], self.st["pos"]))
            cf["archived"].append({"seq": g["seq"], "first": g["first"], "next": scn,
                                   "first_time": g["first_time"], "next_time": time.time(),
                                   "name": name, "resetlogs": cf["resetlogs_scn"]})
        g["status"] = "INACTIVE"
        groups = cf["redo"]
        nxt = groups[(groups.index(g) + 1) % len(groups)]
        self.init_group(nxt, g["seq"] + 1, scn)
        self.checkpoint(scn)

    def init_group(self, g: dict[str, Any], seq: int, first: int) -> None:
        size = self.media.parts[g["member"]].size
        self.media.write(g["member"], 0, bytes(size))
        self.media.put_header(g["member"], LOG_MAGIC, {"seq": seq, "first": first,
                                                       "resetlogs": self.cf["resetlogs_scn"]})
        g.update(seq=seq, first=first, first_time=time.time(), status="CURRENT")
        self.st["pos"] = 0

    def checkpoint(self, scn: int) -> None:
        """Every file not in backup mode is current to `scn` (rows are written at commit)."""
        for f in self.cf["files"]:
            h = self.head(f["file"])
            if not h["backup"]:
                h["ckpt"] = scn
                self.put_head(f["file"], h)
            f["ckpt"] = h["ckpt"]
        self.cf["ckpt"] = scn
        self.put_cf()

    # ---- transactions -----------------------------------------------------------------------
    def commit(self, ids: list[int]) -> int:
        self.need("OPEN")
        files = self.cf["files"]
        recs, rows = [], []
        for txn in ids:
            f = files[(txn - 1) % len(files)]
            scn = self.next_scn()
            recs.append((scn, time.time(), R_ROW, f["file"], txn))
            rows.append((f["name"], (txn - 1) // len(files), txn, scn))
        self.log(recs)  # redo first, then the blocks
        for name, slot, txn, scn in rows:
            self.media.put_row(name, slot, txn, scn)
        return int(self.st["scn"])

    def rows(self) -> list[tuple[int, int]]:
        self.need("OPEN")
        out = [r for f in self.cf["files"] for r in self.media.rows(f["name"])]
        return sorted(out)

    # ---- backup mode ------------------------------------------------------------------------
    def begin_backup(self) -> None:
        self.need("OPEN")
        cf = self.cf
        if cf["log_mode"] != "ARCHIVELOG":
            raise ora(1123)
        for f in cf["files"]:
            if f["backup"]:
                raise file_error(1146, f["file"], f["name"])
        scn = self.next_scn()
        self.checkpoint(scn)
        self.log([(scn, time.time(), R_BEGIN, f["file"], 0) for f in cf["files"]])
        for f in cf["files"]:
            h = self.head(f["file"])
            h["backup"], h["ckpt"] = scn, scn  # the header freezes at the backup start
            self.put_head(f["file"], h)
            f["backup"] = scn
        self.put_cf()

    def end_backup(self) -> None:
        self.need("OPEN", "MOUNTED")
        cf = self.cf
        active = [f for f in cf["files"] if f["backup"]]
        if not active:
            raise ora(1142)
        scn = self.next_scn()
        self.log([(scn, time.time(), R_END, f["file"], 0) for f in active])
        for f in active:
            h = self.head(f["file"])
            h["backup"], h["ckpt"] = 0, scn
            self.put_head(f["file"], h)
            f["backup"], f["ckpt"] = 0, scn
        self.put_cf()

    def backup_controlfile(self, path: str) -> None:
        self.need("MOUNTED", "OPEN")
        copy = dict(self.cf, type="BACKUP", scn=self.st["scn"])
        body = json.dumps(copy).encode()
        self.media.write_host_file(path, CF_MAGIC + len(body).to_bytes(8, "little") + body)

    # ---- instance life ---------------------------------------------------------------------
    def startup(self) -> None:
        if self.status != "SHUTDOWN":
            raise ora(1081)
        self.st["status"] = "STARTED"

    def mount(self) -> None:
        if self.status == "SHUTDOWN":
            raise ora(1034)
        if self.status != "STARTED":
            raise ora(1100)
        _ = self.cf
        self.st["status"] = "MOUNTED"

    def shutdown(self, mode: str) -> None:
        """mode: abort | immediate (first call) | final; close/dismount come between."""
        if self.status == "SHUTDOWN":
            raise ora(1034)
        if mode == "abort":
            self.st.update(status="SHUTDOWN", crashed=True, shutting=False)
            return
        if mode == "immediate":
            if self.status in ("MOUNTED", "OPEN"):
                for f in self.cf["files"]:
                    if f["backup"]:
                        raise file_error(1149, f["file"], f["name"])
            self.st["shutting"] = True
        elif mode == "final":
            if self.status != "STARTED":
                raise ora(1126)
            self.st.update(status="SHUTDOWN", shutting=False)

    def close_db(self) -> None:
        self.need("OPEN")
        scn = self.next_scn()
        self.checkpoint(scn)
        for f in self.cf["files"]:
            h = self.head(f["file"])
            h["fuzzy"] = False
            self.put_head(f["file"], h)
        self.st.update(status="MOUNTED", crashed=False)

    def dismount(self) -> None:
        self.need("MOUNTED")
        self.st["status"] = "STARTED"
