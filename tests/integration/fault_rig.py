"""The fault matrix's rig: one data centre (the session's vcsim, an EVA of its own, one
store and catalog) shared by every case, the objects the restore paths need made once,
and what the invariants read from the simulators (through pyVmomi and a plain SMI-S
driver, never through the code under test's own state)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl
from typer.testing import CliRunner

from dpflow.environment import environment
from dpflow_cli.demo_array import initial_bytes, read_lun, write_lun
from drivers.smis import SmisArray
from simulators.eva.process import EvaServer
from simulators.guest_disks import MiB, make_guest_disk
from tasks.vsphere import RESTORE_MARKER
from tests.integration.fault_matrix import Case, Injection

LUN_SIZE = MiB
POOL = "DG1"
HOSTS = {"proxy": ["5001438000000A01"], "dbhost": ["5001438000000B01"]}
GUEST_PW = "DPFLOW_TEST_GUEST_PW"


class Rig:
    def __init__(self, vcsim: Any, eva: EvaServer, root: Path) -> None:
        self.vcsim, self.eva, self.dir = vcsim, eva, root
        self.eva_started = True
        doc = {
            "vcenters": [{"name": "vcsim", "host": vcsim.host, "port": vcsim.port,
                          "user": vcsim.username,
                          "password": {"env": "DPFLOW_TEST_VC_PASSWORD"},
                          "ca_file": str(vcsim.ca_file), "hunt_s": 1.0}],
            "arrays": [{"name": "eva1", "host": "127.0.0.1", "port": eva.port,
                        "user": eva.user, "password": {"env": "DPFLOW_TEST_EVA_PASSWORD"},
                        "ca_file": str(eva.ca_file), "backup_host": "proxy", "timeout_s": 3.0,
                        "job_deadline_s": 20, "replica_kind": "vsnap", "keep": 2,
                        "pool": POOL}],
            "stores": [{"name": "library", "path": str(root / "store"),
                        "key": {"env": "DPFLOW_TEST_STORE_KEY"}}],
            "catalog_url": f"sqlite:///{root / 'catalog.db'}",
            "snapshot": {"quiesce": "prefer", "quiesce_attempts": 2},
        }
        self.cfg = root / "dpflow.yaml"
        self.cfg.write_text(yaml.safe_dump(doc))
        environment(str(self.cfg)).store(create=True)  # the LUN paths alone make none
        self.drv = SmisArray(eva.connection(timeout=10.0), poll_s=0.02)
        self.luns: dict[str, int] = {}
        self.initial = b""
        self._made: dict[str, Any] = {}

    # -- the data centre -------------------------------------------------------------

    def catalog(self) -> Any:
        return environment(str(self.cfg)).catalog()

    def store(self) -> Any:
        return environment(str(self.cfg)).store()

    def cli(self, case: Case, *args: str) -> tuple[int, str]:
        """The real `dpflow` command, in this process (its exit code and output)."""
        from dpflow_cli.main import app

        r = CliRunner().invoke(app, [*args, "-c", str(self.cfg)], env={"COLUMNS": "200"})
        out = r.output
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            import traceback

            out += "Traceback:\n" + "".join(traceback.format_exception(r.exception))
        print(f"$ dpflow {' '.join(args)}  -> exit {r.exit_code}\n{out}")
        return r.exit_code, out

    # -- faults ----------------------------------------------------------------------

    def inject(self, inj: Injection) -> dict[str, Any] | None:
        rule = inj.kwargs()
        if inj.sim == "vc" and rule["kind"] == "crash":  # the rule dies with the process
            return {**dict(self.vcsim.set_fault(**rule)),
                    "generation": self.vcsim.state()["generation"]}
        if inj.sim == "vc":
            return dict(self.vcsim.set_fault(**rule))
        op = rule.pop("op")
        getattr(self.eva.faults, op)(**rule)
        return None

    def fired(self, inj: Injection, rule: dict[str, Any] | None) -> int:
        """How often the simulator applied the fault (its own counter)."""
        if inj.sim == "vc" and inj.kwargs()["kind"] == "crash":
            assert rule is not None
            return int(self.vcsim.state()["generation"] - rule["generation"])
        if inj.sim == "vc":
            assert rule is not None
            return sum(r["hits"] for r in self.vcsim.faults() if r["id"] == rule["id"])
        kw = inj.kwargs()
        if kw["op"] == "fill_pool":  # a state, not a call: full while the case ran
            return int(any(p.free_bytes == 0 for p in self.drv.list_pools()
                           if p.name == kw["pool"]))
        return int(self.eva.faults.fired().get(kw["method"].lower(), 0))

    def clear(self) -> None:
        self.vcsim.clear_faults()
        self.eva.faults.clear()  # pools given back too

    # -- objects the restore paths need, made once -------------------------------------

    def _vm(self, prefix: str, size: int = 8 * MiB) -> tuple[str, bytes]:
        vm = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.vcsim.create_vm(vm, [size])
        img = self.dir / f"{vm}.img"
        make_guest_disk(img, size, seed=len(vm))
        self.vcsim.seed_disk(vm, 0, img)
        data = img.read_bytes()
        img.unlink()
        return vm, data

    def image_version(self) -> tuple[str, str]:
        """A VM with an image version (its bytes kept for the bit-for-bit check)."""
        if "image" not in self._made:
            from flows.vm_image import backup_vm_image

            vm, data = self._vm("fm-src")
            r = backup_vm_image(str(self.cfg), vm)
            assert r.status == "completed"
            self._made["image"] = (vm, r.version_id, data)
        vm, vid, _ = self._made["image"]
        return vm, vid

    def guest_vm(self) -> str:
        """A running VM with an ext4 disk and a file-level version."""
        if "guest" not in self._made:
            from flows.vm_files import backup_vm_files

            vm, _ = self._vm("fm-guest")
            WaitForTask(self.vcsim.vm(vm).PowerOnVM_Task())
            assert backup_vm_files(str(self.cfg), vm).status == "completed"
            self._made["guest"] = vm
        return str(self._made["guest"])

    def lun_group(self) -> None:
        """Group rep (rep-a, rep-b) for replicates; group irg (ir-a, ir-b), presented to
        dbhost with known bytes, with one replica set, for restores."""
        if "luns" in self._made:
            return
        from flows.luns import replicate_luns

        for name in ("rep-a", "rep-b", "ir-a", "ir-b"):
            self.drv.create_vdisk(name, LUN_SIZE, POOL)
        port = self.eva.host_port("dbhost")
        for i, name in enumerate(("ir-a", "ir-b")):
            self.luns[name] = self.drv.present(name, "dbhost").lun
            write_lun(port, self.luns[name], initial_bytes(LUN_SIZE, i + 1))
        self.initial = initial_bytes(LUN_SIZE, 1)
        r = replicate_luns(str(self.cfg), "irg", ["ir-a", "ir-b"], "vsnap")
        assert r.status == "completed"
        self._made["luns"] = True

    # -- after a case ----------------------------------------------------------------------

    def follow_up(self, case: Case, name: str, out: str) -> None:
        """A compensation failed for good: its leftover was reported, and the path's next
        run (faults cleared) removes it."""
        what = case.step.follow_up
        if what == "snapshot":
            assert "was left" in out, out
            code, again = self.cli(case, "backup", "vm" if case.path == "image-backup"
                                   else "files", name)
            assert code == 0 and "leftover snapshot" in again or code == 0, again
        elif what == "vm":
            src, vid = self.image_version()
            other = f"fm-r-{uuid.uuid4().hex[:8]}"
            code, again = self.cli(case, "restore", "vm", src, "--version", vid, "--as", other)
            assert code == 0, again
            self.destroy(other)
        elif what == "replica":
            code, again = self.cli(case, "replicate", "rep", "rep-a", "rep-b", "--keep", "2",
                                   "--kind", "vsnap")
            assert code == 0, again
        elif what == "presentation":
            assert "not given back" in out, out
            code, again = self.cli(case, "restore", "luns", "irg", "--detach-hosts")
            assert code == 0, again

    def check_data(self, case: Case, name: str) -> None:
        """After a transient fault the restored bytes are the source's, bit for bit."""
        if case.path == "image-restore":
            _, _, data = self._made["image"]
            with open(self.vcsim.current_disk_path(name, 0), "rb") as f:
                assert f.read(len(data)) == data
        elif case.path == "lun-restore":
            got = read_lun(self.eva.host_port("dbhost"), self.luns["ir-a"], LUN_SIZE)
            assert got == self.initial

    def destroy(self, vm: str) -> None:
        if self.vcsim.vm_exists(vm):
            WaitForTask(self.vcsim.vm(vm).Destroy_Task())

    def tidy(self, case: Case, name: str) -> None:
        """Keep the shared inventory small: the case's own VM goes."""
        if case.path in ("image-backup", "file-backup", "image-restore"):
            self.destroy(name)


def _vm_props(vcsim: Any) -> list[dict[str, Any]]:
    """name, snapshot tree and notes of every VM, in one PropertyCollector call."""
    si = vcsim.si()
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine],
                                                   True)
    pc = vmodl.query.PropertyCollector
    try:
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[pc.TraversalSpec(
                name="v", type=vim.view.ContainerView, path="view", skip=False)])],
            propSet=[pc.PropertySpec(type=vim.VirtualMachine,
                                     pathSet=["name", "snapshot", "config.annotation"])])
        out = []
        for oc in content.propertyCollector.RetrieveContents([spec]):
            out.append({p.name: p.val for p in oc.propSet or []})
        return out
    finally:
        view.Destroy()


def _names(tree: Any) -> list[str]:
    todo = list(tree.rootSnapshotList) if tree else []
    out = []
    while todo:
        node = todo.pop()
        out.append(node.name)
        todo.extend(node.childSnapshotList or [])
    return out


def fm_vms(vcsim: Any) -> dict[str, list[str]]:
    """The matrix's VMs (named fm-...) and the names of their snapshots."""
    return {p["name"]: _names(p.get("snapshot")) for p in _vm_props(vcsim)
            if str(p.get("name", "")).startswith("fm-")}


def restore_marker_vms(vcsim: Any) -> dict[str, str]:
    """The matrix's VMs a restore created: name → the restore's session id."""
    return {p["name"]: str(p["config.annotation"]).removeprefix(RESTORE_MARKER).strip()
            for p in _vm_props(vcsim) if str(p.get("name", "")).startswith("fm-")
            and str(p.get("config.annotation") or "").startswith(RESTORE_MARKER)}


def lun_state(rig: Rig) -> tuple[list[str], list[Any], dict[str, int]]:
    """Replica sets on the array, presentations to the backup host, and where the
    restore group's LUNs are presented to dbhost."""
    pres = rig.drv.list_presentations()
    return ([s.name for s in rig.drv.list_replica_sets()],
            [p for p in pres if p.host == "proxy"],
            {p.vdisk: p.lun for p in pres if p.host == "dbhost" and p.vdisk in rig.luns})
