"""Files into a running guest through vSphere guest operations (pyVmomi), no agent of ours.

GuestFileManager.MakeDirectoryInGuest for directories, InitiateFileTransferToGuest for
each file (with its POSIX or Windows attributes), then an HTTP PUT of the bytes to the
URL it returns. Errors translated at this boundary as in drivers/vsphere.py: wrong guest
credentials are the administrator's (UserError), "tools not running" may heal
(TransientError), an existing file is reported to the caller's conflict policy.

Needs VMware Tools in the guest (vcsim: a guest file manager in the Go main, see
docs in the report of issue 4).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from pyVmomi import vim

from drivers.errors import PermanentError, TransientError, UserError
from drivers.protocols import VmInfo


class GuestFileExists(PermanentError):
    """The guest already has a file at that path (the conflict policy decides)."""


class GuestFiles:
    """Guest file operations on one VM, over a logged-in drivers.vsphere.VSphere."""

    def __init__(self, hv: Any, vm: VmInfo, user: str, password: str) -> None:
        self.hv, self.vm = hv, vm
        self.auth = vim.vm.guest.NamePasswordAuthentication(username=user, password=password,
                                                            interactiveSession=False)

    def _fm(self) -> Any:
        gom = self.hv.si.content.guestOperationsManager
        if gom is None or gom.fileManager is None:
            raise PermanentError(f"vCenter {self.hv.vc.name} offers no guest file operations")
        return gom.fileManager

    def _call(self, what: str, fn: Any) -> Any:
        try:
            return self.hv._call(what, fn)
        except (UserError, TransientError, PermanentError) as exc:
            cause = exc.__cause__
            if isinstance(cause, vim.fault.InvalidGuestLogin):
                raise UserError(f"{what}: the guest of {self.vm.name} refused the guest "
                                f"credentials (InvalidGuestLogin)") from cause
            if isinstance(cause, vim.fault.FileAlreadyExists):
                raise GuestFileExists(f"{what}: exists in the guest") from cause
            if isinstance(cause, (vim.fault.GuestOperationsUnavailable,
                                  vim.fault.ToolsUnavailable)):
                raise TransientError(f"{what}: guest operations unavailable "
                                     f"(VMware Tools not running?)") from cause
            raise

    def mkdir(self, path: str) -> None:
        vm = self.hv._vm_by_moref(self.vm.moref)
        try:
            self._call(f"mkdir {path} in {self.vm.name}", lambda: self._fm().MakeDirectoryInGuest(
                vm=vm, auth=self.auth, directoryPath=path, createParentDirectories=True))
        except GuestFileExists:
            pass

    def exists(self, path: str) -> bool:
        """Whether the running guest sees an object at `path` (ListFilesInGuest on its
        directory, matched by name)."""
        vm = self.hv._vm_by_moref(self.vm.moref)
        parent, _, name = path.rstrip("/").rpartition("/")
        try:
            found = self._call(f"list {path} in {self.vm.name}",
                               lambda: self._fm().ListFilesInGuest(
                                   vm=vm, auth=self.auth, filePath=parent or "/",
                                   matchPattern=name))
        except PermanentError as exc:
            if isinstance(exc.__cause__, (vim.fault.FileNotFound, vim.fault.NotADirectory)):
                return False
            raise
        return any(f.path == name for f in (found.files or []))

    def upload(self, path: str, blocks: Iterable[bytes], size: int, overwrite: bool,
               mode: int | None = None, mtime_s: int | None = None, windows: bool = False
               ) -> None:
        from datetime import UTC, datetime

        vm = self.hv._vm_by_moref(self.vm.moref)
        when = datetime.fromtimestamp(mtime_s, UTC) if mtime_s is not None else None
        if windows:
            attrs: Any = vim.vm.guest.FileManager.WindowsFileAttributes(modificationTime=when)
        else:
            attrs = vim.vm.guest.FileManager.PosixFileAttributes(modificationTime=when,
                                                                 permissions=mode)
        url = self._call(f"upload {path} to {self.vm.name}",
                         lambda: self._fm().InitiateFileTransferToGuest(
                             vm=vm, auth=self.auth, guestFilePath=path, fileAttributes=attrs,
                             fileSize=size, overwrite=overwrite))
        parts = urlsplit(url)
        if parts.hostname in ("*", None):  # ESXi answers '*' for "the host you called"
            parts = parts._replace(netloc=f"{self.hv.vc.host}:{self.hv.vc.port}")
        try:
            r = requests.put(urlunsplit(parts), data=b"".join(blocks), verify=self.hv._verify(),
                             timeout=(10, 300))
        except (requests.RequestException, OSError) as exc:
            raise TransientError(f"upload {path} to {self.vm.name}: {exc}") from exc
        if r.status_code >= 500:
            raise TransientError(f"upload {path} to {self.vm.name}: HTTP {r.status_code}")
        if r.status_code >= 300:
            raise PermanentError(f"upload {path} to {self.vm.name}: HTTP {r.status_code} "
                                 f"{r.text[:200]}")
