"""dpflow's test vCenter: the dpflow-vcsim binary (govmomi's vcsim + our Go main).

``Vcsim`` builds the binary if needed, starts it on a free port with its own work
directory and TLS certificates, and stops it. The helper methods below are the
simulated *world* (the guest writing to its disk, an admin creating VMs, faults in the
network): they use pyVmomi and the datastore files directly, never dpflow's driver,
so that tests of the driver check it against something it did not build itself.

Changed Block Tracking (simulators/vcsim/cbt.go): ``changeTrackingEnabled`` via
ReconfigVM gives each disk a tracking epoch; changeIds look like vCenter's
("52 xx .. xx-xx .. xx/N"): N is 0 when tracking is turned on and advances with each
snapshot, whose config shows the changeId of the state it froze. QueryChangedDiskAreas
answers changed 64 KiB blocks (merged) or, for "*", allocated areas, at most
``page_limit`` areas per answer. Unknown/reset/resized changeId: vmodl.fault
.InvalidArgument (invalidProperty "changeId"); tracking off: vim.fault.FileFault.

Guest operations (simulators/vcsim/guest.go): GuestFileManager works on the first ext2/3/4
file system of a powered-on VM's first disk (whole disk, MBR or GPT partition), editing
the current -flat file with debugfs, so a later backup sees uploads. Guest login
``guest_user``/``guest_password`` (else vim.fault.InvalidGuestLogin); powered off:
vim.fault.InvalidPowerState. InitiateFileTransferToGuest answers "https://*/guestFile?id=…"
('*': the host you called), served by the simulator's own listener.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from simulators.tls import ensure_certs

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "vcsim" / "build.sh"
BINARY = HERE / "vcsim" / "build" / "dpflow-vcsim"
DEFAULT_DATASTORE = "LocalDS_0"


def build() -> Path:
    """Build dpflow-vcsim offline (a no-op when up to date) and return its path."""
    out = subprocess.run(
        ["sh", str(BUILD_SCRIPT)], check=True, capture_output=True, text=True, timeout=600
    )
    return Path(out.stdout.strip().splitlines()[-1])


class VcsimError(RuntimeError):
    """The simulator failed to start or answered a control request with an error."""


class Vcsim:
    """A running dpflow-vcsim; use as a context manager.

    ``vms_per_pool`` sizes vcsim's default inventory (DC0, one cluster, one standalone
    host; 2 per pool gives 4 VMs). ``faults`` are rules loaded at start-up (see
    ``set_fault``). ``cbt_page_limit`` bounds the changed areas per
    QueryChangedDiskAreas answer (simulator default 64; see ``set_cbt_page_limit``).
    ``persist`` keeps the inventory in ``work_dir/state`` (simulators/vcsim/persist.go),
    so that ``restart`` (or a fault of kind "crash") finds it again, as a vCenter does.
    """

    def __init__(
        self,
        username: str = "dpflow",
        password: str = "dpflow-secret",
        *,
        work_dir: Path | str | None = None,
        cert_dir: Path | str | None = None,
        vms_per_pool: int = 2,
        faults: list[dict[str, Any]] | None = None,
        cbt_page_limit: int | None = None,
        guest_user: str = "root",
        guest_password: str = "dpflow-guest",
        extra_args: tuple[str, ...] = (),
        extra_env: dict[str, str] | None = None,
        start_timeout: float = 60.0,
        persist: bool = False,
    ) -> None:
        self.username = username
        self.password = password
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="dpflow-vcsim-"))
        self._cert_dir = Path(cert_dir) if cert_dir else self.work_dir / "certs"
        self._vms_per_pool = vms_per_pool
        self._faults = faults or []
        self._cbt_page_limit = cbt_page_limit
        self.guest_user = guest_user
        self.guest_password = guest_password
        self._extra_args = extra_args
        self._extra_env = extra_env or {}
        self._start_timeout = start_timeout
        self.persist = persist
        self._proc: subprocess.Popen[bytes] | None = None
        self._si: Any = None
        self.url = ""
        self.host = ""
        self.port = 0
        self.ca_file = Path()
        self.datastores: dict[str, Path] = {}

    # -- life cycle ---------------------------------------------------------------

    def __enter__(self) -> Vcsim:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def datastore_dir(self) -> Path:
        """Directory holding LocalDS_0's files (the datastore's backing store)."""
        return self.datastores[DEFAULT_DATASTORE]

    def start(self) -> Vcsim:
        """Start the simulator and wait until it printed its URL and datastores (on the
        port it had before, if it ran before)."""
        binary = build()
        certs = ensure_certs(self._cert_dir)
        self.ca_file = certs.ca_file
        tmp = self.work_dir / "tmp"  # vcsim puts datastore directories in $TMPDIR
        tmp.mkdir(parents=True, exist_ok=True)
        args = [
            str(binary), "-l", f"127.0.0.1:{self.port}",
            "-tlscert", str(certs.cert_file), "-tlskey", str(certs.key_file),
            "-username", self.username, "-password", self.password,
            "-vm", str(self._vms_per_pool),
            "-cbt-dir", str(self.work_dir / "cbt"),
            "-guest-user", self.guest_user, "-guest-password", self.guest_password,
        ]
        if self._cbt_page_limit is not None:
            args += ["-cbt-page-limit", str(self._cbt_page_limit)]
        if self._faults:
            faults_file = self.work_dir / "faults.json"
            faults_file.write_text(json.dumps(self._faults))
            args += ["-faults", str(faults_file)]
        if self.persist:
            args += ["-state-dir", str(self.work_dir / "state")]
        args += list(self._extra_args)
        out_path = self.work_dir / "vcsim.out"
        out_path.unlink(missing_ok=True)
        with open(out_path, "wb") as out, open(self.work_dir / "vcsim.log", "ab") as err:
            # Files, not pipes: nobody drains a pipe during the test, and a full pipe
            # would block the simulator.
            self._proc = subprocess.Popen(
                args, stdout=out, stderr=err,
                env={**os.environ, **self._extra_env, "TMPDIR": str(tmp)},
                start_new_session=True,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + self._start_timeout
        while True:
            lines = out_path.read_text().splitlines()
            if "DPFLOW_VCSIM_READY=1" in lines:
                break
            if self._proc.poll() is not None:
                log = (self.work_dir / "vcsim.log").read_text()[-2000:]
                raise VcsimError(f"dpflow-vcsim exited with {self._proc.returncode}: {log}")
            if time.monotonic() > deadline:
                self.stop()
                raise VcsimError(f"dpflow-vcsim not ready after {self._start_timeout} s")
            time.sleep(0.02)
        for line in lines:
            key, _, value = line.partition("=")
            if key == "DPFLOW_VCSIM_URL":
                self.url = value
            elif key == "DPFLOW_VCSIM_DATASTORE":
                name, _, path = value.partition("=")
                self.datastores[name] = Path(path)
        hostport = self.url.split("://", 1)[1].split("/", 1)[0]
        self.host, _, port = hostport.rpartition(":")
        self.port = int(port)
        return self

    def stop(self) -> None:
        """SIGTERM the simulator (SIGKILL after 10 s) and remove its datastore
        directories, which vcsim leaves behind when killed."""
        if self._si is not None:
            try:
                Disconnect(self._si)
            except Exception:  # noqa: BLE001 - the server may already be gone
                pass
            self._si = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for path in self.datastores.values():
            shutil.rmtree(path, ignore_errors=True)
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        atexit.unregister(self.stop)

    def restart(self, downtime: float = 0.0) -> None:
        """Kill the simulator (SIGKILL: nothing saved at the end) and start it again on
        the same port with the same certificates and state, after ``downtime`` s. Only
        with ``persist``: without it a restart would lose the whole inventory."""
        if not self.persist:
            raise VcsimError("restart() needs Vcsim(persist=True)")
        self._si = None  # its session died with the process
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        time.sleep(downtime)
        self.start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the simulator answers again (after a crash fault's restart)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.state()
                return
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def state(self) -> dict[str, Any]:
        """persistent, saves (inventory saves by this process) and generation (crash
        restarts so far)."""
        return self._control("GET", "/_state")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- clients ------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying TLS context trusting only the simulator's CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def si(self) -> Any:
        """A cached pyVmomi ServiceInstance logged in as the configured user (logged in
        again when a test expired the simulator's sessions)."""
        if self._si is not None:
            try:
                _ = self._si.content.sessionManager.currentSession
            except vim.fault.NotAuthenticated:
                self._si = None
            except OSError:  # the process was restarted: its connection is gone
                self._si = None
        if self._si is None:
            self._si = SmartConnect(
                host=self.host, port=self.port, user=self.username, pwd=self.password,
                sslContext=self.ssl_context(),
            )
        return self._si

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        r = requests.request(
            method, self.base_url + path, json=body, verify=str(self.ca_file), timeout=30
        )
        if r.status_code >= 400:
            raise VcsimError(f"{method} {path}: {r.status_code} {r.text.strip()}")
        return r.json()

    def datastore_url(self, ds_path: str, dc: str = "DC0") -> str:
        """HTTPS URL of a datastore file, e.g. ``[LocalDS_0] vm/vm-flat.vmdk``."""
        ds, _, rel = ds_path.partition("] ")
        return f"{self.base_url}/folder/{rel}?dcPath={dc}&dsName={ds.lstrip('[')}"

    # -- inventory ----------------------------------------------------------------

    def _find_vm(self, name: str) -> Any | None:
        content = self.si().RetrieveContent()
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine], True
        )
        try:
            for vm in view.view:
                if vm.name == name:
                    return vm
        finally:
            view.Destroy()
        return None

    def vm(self, name: str) -> Any:
        """The pyVmomi VirtualMachine called ``name`` (KeyError if none)."""
        vm = self._find_vm(name)
        if vm is None:
            raise KeyError(f"no VM named {name!r}")
        return vm

    def vm_exists(self, name: str) -> bool:
        return self._find_vm(name) is not None

    def create_vm(
        self, name: str, disk_sizes: list[int], power_on: bool = False,
        datastore: str = DEFAULT_DATASTORE, networks: tuple[str, ...] = (),
    ) -> str:
        """Create VM ``name`` with a SCSI controller and one thin disk per size (bytes,
        multiples of 1 KiB), files created on ``datastore``, one NIC per entry of
        ``networks`` on that network. Returns the VM's moref."""
        content = self.si().RetrieveContent()
        dc = content.rootFolder.childEntity[0]
        pool = next(
            cr.resourcePool for cr in dc.hostFolder.childEntity
            if isinstance(cr, vim.ClusterComputeResource)
        )
        controller = vim.vm.device.VirtualDeviceSpec(
            operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
            device=vim.vm.device.ParaVirtualSCSIController(
                key=-100, busNumber=0,
                sharedBus=vim.vm.device.VirtualSCSIController.Sharing.noSharing,
            ),
        )
        changes = [controller]
        units = [u for u in range(16) if u != 7]
        for i, size in enumerate(disk_sizes):
            if size % 1024:
                raise ValueError(f"disk size {size} is not a multiple of 1 KiB")
            changes.append(vim.vm.device.VirtualDeviceSpec(
                operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
                fileOperation=vim.vm.device.VirtualDeviceSpec.FileOperation.create,
                device=vim.vm.device.VirtualDisk(
                    key=-(200 + i), controllerKey=-100, unitNumber=units[i],
                    capacityInKB=size // 1024, capacityInBytes=size,
                    backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                        diskMode="persistent", thinProvisioned=True, fileName=f"[{datastore}]",
                    ),
                ),
            ))
        nets = {n.name: n for n in dc.network}
        changes += [vim.vm.device.VirtualDeviceSpec(
            operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
            device=vim.vm.device.VirtualE1000(
                key=-(300 + i), backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
                    deviceName=n, network=nets[n])))
            for i, n in enumerate(networks)]
        spec = vim.vm.ConfigSpec(
            name=name, memoryMB=64, numCPUs=1, guestId="otherLinux64Guest",
            files=vim.vm.FileInfo(vmPathName=f"[{datastore}]"), deviceChange=changes,
        )
        task = dc.vmFolder.CreateVM_Task(config=spec, pool=pool)
        WaitForTask(task)
        vm = task.info.result
        if power_on:
            WaitForTask(vm.PowerOnVM_Task())
        return str(vm._moId)

    # -- disks --------------------------------------------------------------------

    def _disks(self, vm_name: str) -> list[Any]:
        devices = self.vm(vm_name).config.hardware.device
        return [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]

    def local_path(self, ds_path: str) -> Path:
        """Local file of ``[DS] dir/file``."""
        ds, _, rel = ds_path.partition("] ")
        return self.datastores[ds.lstrip("[")] / rel

    def flat_path(self, ds_path: str) -> Path:
        """The -flat file holding the bytes of descriptor ``[DS] dir/x.vmdk``."""
        local = self.local_path(ds_path)
        return local.with_name(local.name.removesuffix(".vmdk") + "-flat.vmdk")

    def current_disk_path(self, vm_name: str, index: int) -> Path:
        """The -flat file the guest writes to now: after a snapshot, the delta's (a
        copy-on-write file: only what the guest wrote since; holes read through to the
        parent — use read_current_disk for the whole live disk)."""
        return self.flat_path(self._disks(vm_name)[index].backing.fileName)

    def _current_and_parent(self, vm_name: str, index: int) -> tuple[Path, Path | None]:
        backing = self._disks(vm_name)[index].backing
        parent = backing.parent
        return self.flat_path(backing.fileName), (
            self.flat_path(parent.fileName) if parent is not None else None)

    def read_current_disk(self, vm_name: str, index: int) -> Path:
        """The live disk as one plain file (a copy-on-write delta is filled from its
        parent first, as the simulator does before debugfs or a clone reads it)."""
        current, parent = self._current_and_parent(vm_name, index)
        if parent is not None:
            _fill_holes(current, parent)
        return current

    def snapshot_disk_path(self, vm_name: str, snapshot_name: str, index: int) -> Path:
        """The -flat file frozen by snapshot ``snapshot_name`` (as its config shows)."""
        snap = self._snapshot(vm_name, snapshot_name)
        disks = [
            d for d in snap.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)
        ]
        return self.flat_path(disks[index].backing.fileName)

    def seed_disk(self, vm_name: str, index: int, src: Path | bytes) -> None:
        """Replace the disk's content with ``src`` (bytes or a file, copied sparse:
        holes stay holes); the rest of the disk reads as zeros."""
        dst, parent = self._current_and_parent(vm_name, index)
        size = dst.stat().st_size
        with open(dst, "r+b") as out:
            out.truncate(0)
            out.truncate(size)
            if isinstance(src, bytes | bytearray | memoryview):
                if len(src) > size:
                    raise ValueError(f"{len(src)} bytes do not fit a {size}-byte disk")
                out.write(src)
            else:
                with open(src, "rb") as inp:
                    length = os.fstat(inp.fileno()).st_size
                    if length > size:
                        raise ValueError(
                            f"{src} ({length} bytes) does not fit a {size}-byte disk")
                    _copy_data_extents(inp.fileno(), out.fileno(), length)
        if parent is not None:  # a delta: the parent's data must not read through
            _fill_holes(dst, parent, zeros=True)

    def guest_write(self, vm_name: str, index: int, offset: int, data: bytes) -> None:
        """Write as the guest would: into the current disk file. After a snapshot that
        is the copy-on-write delta: the parent's part of the first and last file-system
        block the write touches is copied in first, so every allocated block of the
        delta is whole and its holes still read through to the parent."""
        dst, parent = self._current_and_parent(vm_name, index)
        size = dst.stat().st_size
        end = offset + len(data)
        if end > size:
            raise ValueError("write beyond the end of the disk")
        fd = os.open(dst, os.O_RDWR)
        try:
            if parent is not None and data:
                blk = os.fstat(fd).st_blksize
                edges = {offset - offset % blk, (end - 1) - (end - 1) % blk}
                with open(parent, "rb") as p:
                    for b in edges:
                        if not _allocated(fd, b):
                            os.pwrite(fd, os.pread(p.fileno(), min(blk, size - b), b), b)
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    # -- snapshots ----------------------------------------------------------------

    def _snapshot_trees(self, vm_name: str) -> list[Any]:
        info = self.vm(vm_name).snapshot
        out: list[Any] = []
        todo = list(info.rootSnapshotList) if info else []
        while todo:
            node = todo.pop(0)
            out.append(node)
            todo.extend(node.childSnapshotList)
        return out

    def _snapshot(self, vm_name: str, name: str) -> Any:
        for node in self._snapshot_trees(vm_name):
            if node.name == name:
                return node.snapshot
        raise KeyError(f"VM {vm_name!r} has no snapshot {name!r}")

    def snapshot_names(self, vm_name: str) -> list[str]:
        return [node.name for node in self._snapshot_trees(vm_name)]

    def snapshot_count(self, vm_name: str) -> int:
        return len(self._snapshot_trees(vm_name))

    def snapshot(self, vm_name: str, name: str) -> Any:
        """The pyVmomi VirtualMachineSnapshot called ``name`` (KeyError if none)."""
        return self._snapshot(vm_name, name)

    def create_snapshot(self, vm_name: str, name: str, quiesce: bool = False) -> Any:
        """Take a snapshot (no memory) as an admin would; returns the snapshot."""
        task = self.vm(vm_name).CreateSnapshot_Task(name=name, memory=False, quiesce=quiesce)
        WaitForTask(task)
        return task.info.result

    def remove_snapshot(self, vm_name: str, name: str) -> None:
        WaitForTask(self._snapshot(vm_name, name).RemoveSnapshot_Task(removeChildren=False))

    def resize_disk(self, vm_name: str, index: int, size: int) -> None:
        """Grow disk ``index`` to ``size`` bytes (ReconfigVM edit, as an admin would)."""
        disk = self._disks(vm_name)[index]
        disk.capacityInKB = size // 1024
        disk.capacityInBytes = size
        spec = vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(
            operation=vim.vm.device.VirtualDeviceSpec.Operation.edit, device=disk,
        )])
        WaitForTask(self.vm(vm_name).ReconfigVM_Task(spec=spec))

    # -- changed block tracking ------------------------------------------------------

    def enable_cbt(self, vm_name: str, enabled: bool = True) -> None:
        """Turn change tracking on (or off) with ReconfigVM. Turning it on after it was
        off starts a new tracking epoch: every earlier changeId becomes invalid."""
        spec = vim.vm.ConfigSpec(changeTrackingEnabled=enabled)
        WaitForTask(self.vm(vm_name).ReconfigVM_Task(spec=spec))

    def disable_cbt(self, vm_name: str) -> None:
        self.enable_cbt(vm_name, False)

    def disk_key(self, vm_name: str, index: int) -> int:
        return int(self._disks(vm_name)[index].key)

    def change_id(self, vm_name: str, index: int, snapshot_name: str | None = None) -> str:
        """The changeId on disk ``index``'s backing: of the VM's current config, or of
        the snapshot's config ("" when tracking is off)."""
        if snapshot_name is None:
            devices = self._disks(vm_name)
        else:
            devices = [
                d for d in self._snapshot(vm_name, snapshot_name).config.hardware.device
                if isinstance(d, vim.vm.device.VirtualDisk)
            ]
        return str(devices[index].backing.changeId or "")

    def changed_areas(
        self, vm_name: str, snapshot_name: str, index: int, change_id: str,
    ) -> tuple[list[tuple[int, int]], int]:
        """Page QueryChangedDiskAreas to the disk's end; returns the (start, length)
        areas and the number of calls it took."""
        vm = self.vm(vm_name)
        snap = self._snapshot(vm_name, snapshot_name)
        disk = [
            d for d in snap.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)
        ][index]
        capacity = int(disk.capacityInBytes or disk.capacityInKB * 1024)
        areas: list[tuple[int, int]] = []
        offset, calls = 0, 0
        while offset < capacity:
            info = vm.QueryChangedDiskAreas(
                snapshot=snap, deviceKey=disk.key, startOffset=offset, changeId=change_id
            )
            calls += 1
            areas += [(int(a.start), int(a.length)) for a in info.changedArea or []]
            offset = int(info.startOffset + info.length)
        return areas, calls

    def set_cbt_page_limit(self, n: int) -> None:
        """At most ``n`` changed areas per QueryChangedDiskAreas answer."""
        self._control("POST", "/_cbt", {"page_limit": n})

    def corrupt_cbt(self, drop_area: int | None) -> None:
        """Make every QueryChangedDiskAreas answer silently omit the changed area with
        index ``drop_area`` (0-based, counted from the disk's start over the whole,
        unpaged list); None answers truthfully again."""
        self._control("POST", "/_cbt", {"drop_area": drop_area})

    def cbt_state(self) -> dict[str, Any]:
        """page_limit, drop_area, dropped (answers corrupted so far), queries,
        block_size and tracked ({vm moref: {disk key: current changeId}})."""
        return self._control("GET", "/_cbt")

    # -- faults -------------------------------------------------------------------

    def set_fault(self, **rule: Any) -> dict[str, Any]:
        """Add a fault rule; returns it with its id. Keys: method (SOAP method, e.g.
        "CreateSnapshot_Task") or path (regex on the URL path), kind (task | soap |
        http | drop | drop_after | delay | expire), count (first N calls, 0 = always),
        fault (vim25 fault name), status, message, ms, bytes, verb (HTTP method filter).
        ``expire`` ends every session: before the method's call, or on a path once
        ``bytes`` more bytes of matching responses were sent (count: how many times).
        ``restart`` does the same and then drops every client request for ``ms`` (a
        vCenter service restart; the inventory stays, the process is not restarted).
        ``crash`` (needs ``persist``) restarts the process itself, on the same port, down
        for ``ms``: it keeps only its saved inventory; with ``bytes`` on a path, once that
        many bytes of matching responses were sent. The rule dies with the process: its
        firing shows as ``state()["generation"]``."""
        rules = self._control("POST", "/_fault", rule)["rules"]
        return rules[-1]

    def clear_faults(self) -> None:
        self._control("DELETE", "/_fault")

    def faults(self) -> list[dict[str, Any]]:
        """Rules with their ``hits`` counters and ``active`` flags."""
        return self._control("GET", "/_fault")["rules"]

    # -- sessions -----------------------------------------------------------------

    def expire_sessions(self) -> dict[str, int]:
        """End every session now, as vCenter does when a session's lifetime is over:
        SOAP calls with an ended session get NotAuthenticated, datastore /folder
        requests 401. Returns the counters of ``sessions()``."""
        return self._control("POST", "/_session", {"expire": "all"})

    def sessions(self) -> dict[str, int]:
        """Session counters: logins (sessions handed out), live, expired (sessions
        ended), expiries (times sessions were ended), refused_soap and refused_http
        (requests refused for an ended session), restarts (service restarts)."""
        return self._control("GET", "/_session")

    def set_datastore_free(self, free: int | None, name: str = DEFAULT_DATASTORE) -> None:
        """Make the datastore report ``free`` bytes of free space (None: the real value)."""
        if free is None:
            self._control("DELETE", f"/_datastore?name={name}")
        else:
            self._control("POST", "/_datastore", {"name": name, "freeSpace": free})


def _copy_data_extents(src: int, dst: int, length: int) -> None:
    """Copy [0, length) from src to dst at the same offsets, skipping holes."""
    off = 0
    while off < length:
        try:
            data = os.lseek(src, off, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole remains
            return
        hole = os.lseek(src, data, os.SEEK_HOLE)
        pos = data
        while pos < hole:
            n = os.copy_file_range(src, dst, hole - pos, pos, pos)
            if n == 0:
                break
            pos += n
        off = hole


def _allocated(fd: int, offset: int) -> bool:
    """Whether the file-system block at offset holds data (not a hole)."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) == offset
    except OSError:  # ENXIO: only a hole remains
        return False


def _extents(fd: int, length: int) -> list[tuple[int, int]]:
    """The [start, end) data extents of fd below length."""
    out, off = [], 0
    while off < length:
        try:
            data = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            break
        if data >= length:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), length)
        out.append((data, hole))
        off = hole
    return out


def _fill_holes(dst: Path, src: Path, zeros: bool = False) -> None:
    """Write into dst every part of src's data extents that is a hole in dst: src's
    bytes (a delta made whole), or zeros (the parent's data hidden)."""
    with open(dst, "r+b") as out, open(src, "rb") as inp:
        size = os.fstat(out.fileno()).st_size
        have = _extents(out.fileno(), size)
        for start, stop in _extents(inp.fileno(), size):
            pos = start
            for h0, h1 in have:
                if h1 <= pos or h0 >= stop:
                    continue
                if h0 > pos:
                    _copy_or_zero(inp.fileno(), out.fileno(), pos, h0 - pos, zeros)
                pos = max(pos, h1)
            if pos < stop:
                _copy_or_zero(inp.fileno(), out.fileno(), pos, stop - pos, zeros)


def _copy_or_zero(src: int, dst: int, off: int, length: int, zeros: bool) -> None:
    step = 4 << 20
    for pos in range(off, off + length, step):
        n = min(step, off + length - pos)
        os.pwrite(dst, bytes(n) if zeros else os.pread(src, n, pos), pos)
