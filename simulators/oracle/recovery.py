"""Opening the database and media recovery, with the checks Oracle makes.

OPEN compares every datafile header (read from its LUN) with the control file: a file
older than the control file needs media recovery (ORA-01113), a file still in backup
mode after a crash must be ended or recovered (ORA-10873), a file of an older
incarnation is refused (ORA-01190). RECOVER applies the redo of the archived logs (and,
for complete recovery, the online logs) to the datafiles from each file's checkpoint up
to the stop point; an end-of-backup marker takes a file out of backup mode. After an
incomplete recovery every file must be consistent at the stop point, else the database
cannot be opened with RESETLOGS (ORA-01195, 01194, 01152).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from simulators.oracle.errors import file_error, line, ora
from simulators.oracle.instance import Instance
from simulators.oracle.media import LOG_MAGIC, R_END, R_ROW, parse_log

Rec = tuple[int, float, int, int, int]


def open_db(inst: Instance, resetlogs: bool) -> None:
    inst.need("MOUNTED")
    cf = inst.cf
    if not resetlogs and (cf["type"] == "BACKUP" or cf.get("needs_resetlogs")):
        raise ora(1589)
    if resetlogs and cf["type"] == "CURRENT" and not cf.get("needs_resetlogs"):
        raise ora(1139)
    heads = {f["file"]: inst.head(f["file"]) for f in cf["files"]}
    for f in cf["files"]:
        h = heads[f["file"]]
        if h["resetlogs"] != cf["resetlogs_scn"]:
            raise file_error(1190, f["file"], f["name"])
    if resetlogs:
        problems = consistency(inst, heads, int(cf["stop"]))
        if problems:
            code, f = problems[0]
            raise file_error(code, f["file"], f["name"])
        _reset_logs(inst, heads)
    else:
        for f in cf["files"]:
            h = heads[f["file"]]
            if h["ckpt"] < f["ckpt"]:
                raise file_error(1113, f["file"], f["name"])
            if h["backup"]:
                raise file_error(10873, f["file"], f["name"])
            if h["ckpt"] > f["ckpt"]:
                raise file_error(1122, f["file"], f["name"])
    scn = inst.next_scn()
    for f in cf["files"]:
        h = heads[f["file"]]
        h.update(ckpt=scn, fuzzy=True, resetlogs=cf["resetlogs_scn"])
        inst.put_head(f["file"], h)
        f["ckpt"] = scn
    cf["ckpt"] = scn
    inst.put_cf()
    inst.st.update(status="OPEN", crashed=False)


def _reset_logs(inst: Instance, heads: dict[int, dict[str, Any]]) -> None:
    """A new incarnation: online logs cleared, sequence 1, SCN moved past the stop point."""
    cf = inst.cf
    scn = inst.next_scn()
    cf["incarnations"].append({"resetlogs_scn": cf["resetlogs_scn"], "until": cf["stop"]})
    cf.update(resetlogs_scn=scn, resetlogs_time=time.time(), type="CURRENT",
              needs_resetlogs=False)
    cf.pop("stop", None)
    for g in cf["redo"]:
        g.update(status="UNUSED", seq=0)
    inst.init_group(cf["redo"][0], 1, scn)


def consistency(inst: Instance, heads: dict[int, dict[str, Any]], stop: int
                ) -> list[tuple[int, dict[str, Any]]]:
    """What keeps each file from being consistent at `stop` (code, control file entry)."""
    out = []
    for f in inst.cf["files"]:
        h = heads[f["file"]]
        if h["backup"]:
            out.append((1195, f))
        elif h["ckpt"] > stop:
            out.append((1152, f))
        elif any(scn > stop for _, scn in inst.media.rows(f["name"])):
            out.append((1194, f))
    return out


def recover(inst: Instance, until: tuple[str, Any] | None, using_backup: bool) -> None:
    inst.need("MOUNTED")
    cf = inst.cf
    if cf["type"] == "BACKUP" and not using_backup:
        raise ora(1610)
    heads = {f["file"]: inst.head(f["file"]) for f in cf["files"]}
    for f in cf["files"]:
        if heads[f["file"]]["resetlogs"] != cf["resetlogs_scn"]:
            raise file_error(1190, f["file"], f["name"])
    complete = until is None and not using_backup
    behind = [f for f in cf["files"]
              if heads[f["file"]]["ckpt"] < f["ckpt"] or heads[f["file"]]["backup"]]
    if complete and not behind:
        raise ora(264)
    start = min(heads[f["file"]]["ckpt"] for f in cf["files"])
    recs, end = _redo(inst, start, online=until is None or until[0] != "cancel")
    stop = _stop(until, recs, end)
    if complete:  # to the end of the redo: as current as the control file
        stop = max([stop, cf["ckpt"], *(f["ckpt"] for f in cf["files"])])
    for scn, _t, kind, file_no, txn in recs:
        if scn > stop:
            break
        h = heads.get(file_no)
        if h is None or scn <= h["ckpt"] and not (kind == R_END and h["backup"]):
            continue
        if kind == R_ROW:
            n = len(cf["files"])
            inst.media.put_row(inst.file_name(file_no), (txn - 1) // n, txn, scn)
        elif kind == R_END and h["backup"]:
            h["backup"] = 0
    for f in cf["files"]:
        h = heads[f["file"]]
        if h["ckpt"] < stop:
            h["ckpt"] = stop if h["backup"] == 0 else h["ckpt"]
        inst.put_head(f["file"], h)
        f["ckpt"], f["backup"] = h["ckpt"], h["backup"]
    if complete:
        inst.put_cf()
        return
    cf.update(needs_resetlogs=True, stop=stop)
    inst.put_cf()
    problems = consistency(inst, heads, stop)
    if problems:
        raise ora(1547, more=[line(code, f["file"]) for code, f in problems[:1]]
                  + [line(1110, problems[0][1]["file"], problems[0][1]["name"])])


def _redo(inst: Instance, start: int, online: bool) -> tuple[list[Rec], int]:
    """Redo after `start`: archived logs of this incarnation in sequence (a missing one is
    ORA-00308), then the online logs not yet archived; and the SCN where redo ends."""
    cf = inst.cf
    recs: list[Rec] = []
    end = start
    logs = sorted((a for a in cf["archived"] if a["resetlogs"] == cf["resetlogs_scn"]),
                  key=lambda a: a["seq"])
    if cf["type"] == "BACKUP":
        logs = _logs_on_disk(inst, logs)
    last_seq = 0
    for a in logs:
        last_seq = a["seq"]
        if a["next"] <= start:
            continue
        path = inst.media.host_path(a["name"])
        if not path.exists():
            raise ora(308, a["name"], more=[line(27037)])
        recs += parse_log(path.read_bytes())[1]
        end = max(end, a["next"] - 1)
    if online and cf["type"] == "CURRENT":
        for g in sorted(cf["redo"], key=lambda g: g["seq"]):
            if g["seq"] <= last_seq or g["status"] == "UNUSED":
                continue
            count = inst.st["pos"] if g["status"] == "CURRENT" else \
                inst.media.capacity(g["member"])
            blob = inst.media.log_bytes(g["member"], count)
            if blob.startswith(LOG_MAGIC):
                recs += parse_log(blob)[1]
        end = max([end, *(r[0] for r in recs)])
    recs.sort()
    return recs, end


def _logs_on_disk(inst: Instance, known: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """With a backup control file, logs archived after it are found by their names."""
    cf = inst.cf
    logs = list(known)
    seq = max((a["seq"] for a in logs), default=0) + 1
    while True:
        name = f"{inst.site['archive_dest']}/1_{seq}_{cf['resetlogs_scn']}.arc"
        path = inst.media.host_path(name)
        if not path.exists():
            return logs
        head, recs = parse_log(path.read_bytes())
        nxt = (recs[-1][0] + 1) if recs else head["first"] + 1
        logs.append({"seq": seq, "first": head["first"], "next": nxt, "name": name,
                     "resetlogs": head["resetlogs"]})
        seq += 1


def _stop(until: tuple[str, Any] | None, recs: list[Rec], end: int) -> int:
    if until is None or until[0] == "cancel":
        return end
    if until[0] == "scn":
        return min(int(until[1]), end)
    t = until[1]
    when = t.replace(tzinfo=UTC).timestamp() if isinstance(t, datetime) else float(t)
    before = [r[0] for r in recs if r[1] <= when]
    return max(before) if before else (recs[0][0] - 1 if recs else end)
