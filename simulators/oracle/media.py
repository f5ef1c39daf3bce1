"""Where the database double keeps its bytes, and how they are laid out.

Datafiles, the control file and the online redo logs are partitions of EVA vdisks
presented to the database host, read and written only through the host's SAN port (the
array's data path), so an array replica holds exactly what the database had written.
Archived logs and backup control files are files on the host's own filesystem
(`<instance dir>/fs/...`), as on a real host's archive destination.

Layouts (all little-endian):
- datafile: header block (magic + JSON: file#, checkpoint SCN, backup-start SCN, fuzzy,
  resetlogs SCN) then one 32-byte row slot per committed transaction (id, SCN, marker).
- redo group / archived log: header block (magic + JSON: sequence, first SCN, resetlogs
  SCN) then 32-byte records (SCN, time, kind, file#, id): row, begin and end backup.
- control file: magic + JSON.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import requests

HEADER = 8192
ROW = struct.Struct("<QQQQ")  # id, scn, marker, reserved
ROW_MARK = 0x5258_4E54_5844_5046
REC = struct.Struct("<QdHHIQ")  # scn, unix time, kind, file#, reserved, txn id
R_ROW, R_BEGIN, R_END = 1, 2, 3
DF_MAGIC, LOG_MAGIC, CF_MAGIC = b"DPFDATAFILE1\n", b"DPFREDOLOG01\n", b"DPFCONTROL01\n"
LOCAL_PORTS: dict[str, Any] = {}  # in-process SAN ports by name (unit tests)


class SanError(OSError):
    """The array refused a read or write (LUN not presented, beyond the end, ...)."""


class Port(Protocol):
    def read(self, lun: int, offset: int, length: int) -> bytes: ...

    def write(self, lun: int, offset: int, data: bytes) -> None: ...


class HttpsPort:
    """The host's data path to a simulated EVA process (HTTPS, CA verified)."""

    def __init__(self, url: str, host: str, ca_file: str, user: str, password: str) -> None:
        self.base = f"{url}/san/{host}"
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify, self.http.auth = ca_file, (user, password)

    def read(self, lun: int, offset: int, length: int) -> bytes:
        r = self.http.get(f"{self.base}/{lun}", params={"offset": offset, "length": length})
        if r.status_code != 200:
            raise SanError(f"read of LUN {lun} refused: {r.text}")
        return r.content

    def write(self, lun: int, offset: int, data: bytes) -> None:
        r = self.http.put(f"{self.base}/{lun}", params={"offset": offset}, data=data)
        if r.status_code != 204:
            raise SanError(f"write to LUN {lun} refused: {r.text}")


def open_port(san: dict[str, Any]) -> Port:
    if "local" in san:
        return LOCAL_PORTS[san["local"]]
    return HttpsPort(san["url"], san["host"], san["ca_file"], san["user"], san["password"])


@dataclass(frozen=True)
class Part:
    """One partition: a file's place on a LUN as the host sees it."""

    lun: int
    offset: int
    size: int


class Media:
    """Reads and writes of the database's files on the SAN (and the host filesystem)."""

    def __init__(self, site: dict[str, Any], home: Path) -> None:
        self.parts = {n: Part(**p) for n, p in site["files"].items()}
        self.port = open_port(site["san"])
        self.fs = home / "fs"

    def read(self, name: str, offset: int, length: int) -> bytes:
        p = self.parts[name]
        try:
            data = self.port.read(p.lun, p.offset + offset, length)
        except Exception as exc:  # the local port raises the array's own Refusal
            raise SanError(str(exc)) from exc
        return data

    def write(self, name: str, offset: int, data: bytes) -> None:
        p = self.parts[name]
        if offset + len(data) > p.size:
            raise SanError(f"write beyond the end of {name}")
        try:
            self.port.write(p.lun, p.offset + offset, data)
        except Exception as exc:
            raise SanError(str(exc)) from exc

    # ---- headers (datafiles, logs) ----------------------------------------------------
    def header(self, name: str, magic: bytes) -> dict[str, Any] | None:
        raw = self.read(name, 0, HEADER)
        if not raw.startswith(magic):
            return None
        return json.loads(raw[len(magic):].rstrip(b"\0"))

    def put_header(self, name: str, magic: bytes, head: dict[str, Any]) -> None:
        blob = magic + json.dumps(head).encode()
        self.write(name, 0, blob + bytes(HEADER - len(blob)))

    # ---- datafile rows ----------------------------------------------------------------
    def put_row(self, name: str, slot: int, txn: int, scn: int) -> None:
        self.write(name, HEADER + slot * ROW.size, ROW.pack(txn, scn, ROW_MARK, 0))

    def rows(self, name: str) -> list[tuple[int, int]]:
        """(id, scn) of every row, up to the first empty slot."""
        out: list[tuple[int, int]] = []
        piece = 2048 * ROW.size
        off = HEADER
        while off < self.parts[name].size:
            raw = self.read(name, off, piece)
            for i in range(0, len(raw) - ROW.size + 1, ROW.size):
                txn, scn, mark, _ = ROW.unpack_from(raw, i)
                if mark != ROW_MARK:
                    return out
                out.append((txn, scn))
            off += piece
        return out

    # ---- redo records -------------------------------------------------------------------
    def append_records(self, name: str, index: int, recs: list[tuple[int, float, int, int, int]]
                       ) -> None:
        blob = b"".join(REC.pack(s, t, k, f, 0, i) for s, t, k, f, i in recs)
        self.write(name, HEADER + index * REC.size, blob)

    def log_bytes(self, name: str, count: int) -> bytes:
        return self.read(name, 0, HEADER + count * REC.size)

    def capacity(self, name: str) -> int:
        return (self.parts[name].size - HEADER) // REC.size

    # ---- control file -------------------------------------------------------------------
    def controlfile(self, name: str) -> dict[str, Any] | None:
        raw = self.read(name, 0, 4096)
        if not raw.startswith(CF_MAGIC):
            return None
        n = int.from_bytes(raw[len(CF_MAGIC):len(CF_MAGIC) + 8], "little")
        start = len(CF_MAGIC) + 8
        body = raw[start:start + n]
        if len(body) < n:
            body += self.read(name, 4096, n - len(body))
        return json.loads(body)

    def put_controlfile(self, name: str, cf: dict[str, Any]) -> None:
        body = json.dumps(cf).encode()
        self.write(name, 0, CF_MAGIC + len(body).to_bytes(8, "little") + body)

    # ---- the host's filesystem ----------------------------------------------------------
    def host_path(self, path: str) -> Path:
        return self.fs / path.lstrip("/")

    def write_host_file(self, path: str, data: bytes) -> None:
        p = self.host_path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, p)


def parse_log(blob: bytes) -> tuple[dict[str, Any], list[tuple[int, float, int, int, int]]]:
    """An archived log's (or a group's) header and its records."""
    if not blob.startswith(LOG_MAGIC):
        raise ValueError("not a redo log")
    head = json.loads(blob[len(LOG_MAGIC):HEADER].rstrip(b"\0"))
    recs = []
    for i in range(HEADER, len(blob) - REC.size + 1, REC.size):
        s, t, k, f, _, txn = REC.unpack_from(blob, i)
        if s == 0:
            break
        recs.append((s, t, k, f, txn))
    return head, recs
