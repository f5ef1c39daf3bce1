"""Create a database double on an array: its LUNs, their partitions, an open database.

    db = create_database(root, "ORCL", array, "dbhost", san, password="...",
                         datafiles=[64 << 20, 64 << 20])

makes vdisks ORCL_data1.. (one datafile each), ORCL_ctl (control file) and ORCL_redo
(the online log groups) through the ArrayDriver, presents them to the database host, and
formats them through that host's SAN port. Datafiles are named as a Linux host sees raw
devices: /dev/disk/by-id/wwn-0x<LUN WWN>-part<N>, so the LUN identity is in the name.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from simulators.oracle.client import ROOT_ENV
from simulators.oracle.instance import Instance
from simulators.oracle.media import CF_MAGIC, DF_MAGIC
from simulators.oracle.recovery import open_db

MiB = 1 << 20


def device(wwn: str, part: int) -> str:
    return f"/dev/disk/by-id/wwn-0x{wwn.replace('-', '').lower()}-part{part}"


def create_database(root: Path | str, name: str, array: Any, host: str, san: dict[str, Any],
                    password: str, datafiles: list[int], user: str = "sys", pool: str = "DG1",
                    redo_groups: int = 3, redo_size: int = MiB, archivelog: bool = True,
                    controlfile_on_data: bool = False) -> Path:
    """An open database in `root/<name>`; returns that instance directory."""
    name = name.upper()
    home = Path(root) / name
    if home.exists():
        shutil.rmtree(home)
    (home / "fs").mkdir(parents=True)
    files: dict[str, dict[str, int]] = {}
    dfs: list[dict[str, Any]] = []

    def lun(vdisk: str, size: int) -> tuple[int, str]:
        wwn = array.create_vdisk(vdisk, size, pool).wwn
        return array.present(vdisk, host).lun, wwn

    cf_names = []
    for n, size in enumerate(datafiles, 1):
        number, wwn = lun(f"{name}_data{n}", size)
        dsize = size - (4 * MiB if controlfile_on_data and n == 1 else 0)
        files[device(wwn, 1)] = {"lun": number, "offset": 0, "size": dsize}
        dfs.append({"file": n, "name": device(wwn, 1), "ts": "SYSTEM" if n == 1 else "USERS",
                    "size": dsize, "ckpt": 1, "backup": 0})
        if controlfile_on_data and n == 1:
            files[device(wwn, 2)] = {"lun": number, "offset": dsize, "size": 4 * MiB}
            cf_names.append(device(wwn, 2))
    if not cf_names:
        number, wwn = lun(f"{name}_ctl", 4 * MiB)
        files[device(wwn, 1)] = {"lun": number, "offset": 0, "size": 4 * MiB}
        cf_names.append(device(wwn, 1))
    number, wwn = lun(f"{name}_redo", redo_groups * redo_size)
    redo = []
    for g in range(redo_groups):
        member = device(wwn, g + 1)
        files[member] = {"lun": number, "offset": g * redo_size, "size": redo_size}
        redo.append({"group": g + 1, "member": member, "seq": 0, "first": 0,
                     "first_time": time.time(), "status": "UNUSED"})
    site = {"db_name": name, "user": user,
            "password_sha256": hashlib.sha256(password.encode()).hexdigest(),
            "files": files, "controlfiles": cf_names, "archive_dest": "/u01/app/oracle/arch",
            "san": san}
    (home / "site.json").write_text(json.dumps(site, indent=1))
    os.chmod(home / "site.json", 0o600)
    (home / "instance.json").write_text(json.dumps(
        {"status": "STARTED", "scn": 1000, "pos": 0, "crashed": False, "faults": {}}))
    inst = Instance(home)
    for f in dfs:
        inst.media.put_header(f["name"], DF_MAGIC, {"file": f["file"], "ckpt": 1, "backup": 0,
                                                    "fuzzy": False, "resetlogs": 1})
    inst._cf = {"type": "CURRENT", "db_name": name, "dbid": random.randrange(1 << 31),
                "log_mode": "ARCHIVELOG" if archivelog else "NOARCHIVELOG",
                "resetlogs_scn": 1, "resetlogs_time": time.time(), "incarnations": [],
                "files": dfs, "redo": redo, "archived": [], "ckpt": 1}
    inst.init_group(redo[0], 1, 1000)
    inst.put_cf()
    assert inst.media.read(cf_names[0], 0, len(CF_MAGIC)) == CF_MAGIC
    inst.mount()
    open_db(inst, False)
    inst.save()
    return home


def sim_env(root: Path | str) -> dict[str, str]:
    """The environment a process needs to reach doubles under `root` (the 'listener')."""
    return {ROOT_ENV: str(root)}


def restore_controlfile(home: Path | str, path: str) -> None:
    """The host-side copy an administrator makes: a backup control file over the control
    files (the instance must be down), as `cp backup.ctl <control file>` would."""
    inst = Instance(Path(home))
    if inst.status != "SHUTDOWN":
        raise RuntimeError("shut the instance down before replacing its control files")
    blob = inst.media.host_path(path).read_bytes()
    for name in inst.site["controlfiles"]:
        inst.media.write(name, 0, blob)


def lose_archived_log(home: Path | str, sequence: int) -> str:
    """Fault: an archived log deleted from the archive destination; its name."""
    inst = Instance(Path(home))
    for path in sorted(inst.media.host_path(inst.site["archive_dest"]).glob(f"1_{sequence}_*")):
        path.unlink()
        return f"{inst.site['archive_dest']}/{path.name}"
    raise FileNotFoundError(f"no archived log of sequence {sequence}")


def inject_drop(home: Path | str, statement: str, count: int = 1) -> None:
    """Fault: the connection drops (ORA-03113) on the next `count` statements so starting."""
    with Instance.locked(Path(home)) as inst:
        inst.st.setdefault("faults", {}).setdefault("drop", {})[statement] = count


def corrupt_datafile(home: Path | str, file_no: int) -> str:
    """Fault: a datafile's header block overwritten with zeros on its LUN; its name."""
    inst = Instance(Path(home))
    name = next(f["name"] for f in inst.media.controlfile(inst.site["controlfiles"][0])["files"]
                if f["file"] == file_no)
    inst.media.write(name, 0, bytes(8192))
    return name
