"""A LUN presented to the backup host, read and written as a block device.

Why two kinds: on a real backup host a LUN presented by the array is a block device
(`/dev/disk/by-id/wwn-0x<WWN>`), read with pread; the simulated EVA serves the same
host view over HTTPS (`/san/<host>/<lun>`, its own CA verified). Which one is chosen
by the array's configuration (`san: block | https`). Both answer `allocated()`: the
mapped extents of a thin LUN (SCSI GET LBA STATUS; a block device answers "all of it",
so a backup reads it whole), so copying a sparse LUN costs what it holds.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import requests

from drivers.errors import PermanentError, TransientError


class SanLun(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...

    def write(self, offset: int, data: bytes) -> None: ...

    def allocated(self) -> list[tuple[int, int]]: ...

    def close(self) -> None: ...


class HttpsLun:
    """The simulated array's host data path (the proxy's view of one LUN)."""

    def __init__(self, url: str, host: str, lun: int, size: int, user: str, password: str,
                 ca_file: str | None, timeout: float = 60.0) -> None:
        self.size, self.timeout = size, timeout
        self.base = f"{url}/san/{host}/{lun}"
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = ca_file or True
        self.http.auth = (user, password)

    def _go(self, method: str, what: str, **kw: Any) -> requests.Response:
        try:
            r = self.http.request(method, self.base, timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise TransientError(f"{what} of {self.base}: {exc}") from exc
        if r.status_code >= 500:
            raise TransientError(f"{what} of {self.base}: HTTP {r.status_code}")
        if r.status_code >= 300:
            raise PermanentError(f"{what} of {self.base} refused: {r.text}")
        return r

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        return self._go("GET", "read", params={"offset": offset, "length": length}).content

    def write(self, offset: int, data: bytes) -> None:
        self._go("PUT", "write", params={"offset": offset}, data=data)

    def allocated(self) -> list[tuple[int, int]]:
        return [(int(o), int(n)) for o, n in self._go("GET", "allocation map",
                                                        params={"allocated": 1}).json()]

    def close(self) -> None:
        self.http.close()


class BlockLun:
    """A LUN as the backup host's block device."""

    def __init__(self, path: str, size: int, writable: bool = False) -> None:
        self.path, self.size = path, size
        try:
            self._fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        except OSError as exc:
            raise PermanentError(f"cannot open {path} on the backup host: {exc.strerror} "
                                 f"(is the LUN presented and its device discovered?)") from exc

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, max(0, min(length, self.size - offset)), offset)

    def write(self, offset: int, data: bytes) -> None:
        os.pwrite(self._fd, data, offset)

    def allocated(self) -> list[tuple[int, int]]:
        return [(0, self.size)]

    def close(self) -> None:
        os.close(self._fd)


def open_lun(array: Any, password: str, host: str, lun: int, wwn: str, size: int,
             writable: bool = False) -> SanLun:
    """The LUN numbered `lun` for `host` on `array` (a dpflow.config.Array)."""
    if array.san == "https":
        return HttpsLun(array.url, host, lun, size, array.user, password,
                        str(array.ca_file) if array.ca_file else None, array.timeout_s)
    name = "wwn-0x" + "".join(c for c in wwn.lower() if c in "0123456789abcdef")
    return BlockLun(f"{array.san_device_dir.rstrip('/')}/{name}", size, writable)
