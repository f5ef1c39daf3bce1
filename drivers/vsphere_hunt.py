"""What a call whose answer was lost did on vCenter: the snapshot and VM hunter.

A CreateSnapshot or CreateVM whose answer never came back (the SOAP call timed out on the
client, the connection dropped, the task ran past its deadline) may still complete on
vCenter. Calling again blindly leaves two snapshots, one of them orphaned for good, or two
VMs for one restore. So before any new attempt the driver looks on vCenter first: a
creation task of the same kind still running on the object is waited for; a snapshot with
the caller's name, or a VM with the caller's name and marker, is adopted (extra snapshots
of that name are removed); only when nothing shows up within `hunt_s` is the call made
again. Snapshot and VM names are the caller's idempotency keys.
"""

from __future__ import annotations

import http.client
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from pyVmomi import vim, vmodl

from drivers.errors import DpflowError, TransientError
from drivers.protocols import SnapshotRef, VmInfo

T = TypeVar("T")
log = logging.getLogger("dpflow.drivers.vsphere")

SNAPSHOT_TASK = "VirtualMachine.createSnapshot"
CREATE_VM_TASK = "Folder.createVm"
_ACTIVE = ("queued", "running")


def answer_lost(exc: BaseException) -> bool:
    """True when a call may have been carried out although its answer never arrived: the
    connection timed out or broke (an HTTP status or a vSphere fault is an answer)."""
    cause = exc.__cause__
    return isinstance(cause, OSError | http.client.IncompleteRead)


def snapshot_tree(vm_moref: str, tree: Any) -> list[tuple[int, SnapshotRef]]:
    """(depth, snapshot) for every node of a VM's snapshot tree, roots at depth 0."""
    out: list[tuple[int, SnapshotRef]] = []
    stack = [(0, n) for n in (tree.rootSnapshotList if tree else [])]
    while stack:
        depth, node = stack.pop()
        out.append((depth, SnapshotRef(moref=node.snapshot._moId, name=node.name,
                                       vm_moref=vm_moref, quiesced=bool(node.quiesced))))
        stack.extend((depth + 1, c) for c in node.childSnapshotList or [])
    return out


class Hunter:
    """Mixin of VSphere, over its call, wait_task, si, vc (hunt_s) and remove_snapshot."""

    si: Any
    vc: Any
    call: Any
    wait_task: Any
    remove_snapshot: Any

    def active_tasks(self, entity_moref: str, description_id: str) -> list[str]:
        """Morefs of queued or running tasks of one kind on one object (recent tasks)."""
        def go() -> list[str]:
            tm = self.si.content.taskManager
            tasks = list(tm.recentTask or [])
            if not tasks:
                return []
            pc = vmodl.query.PropertyCollector
            spec = pc.FilterSpec(objectSet=[pc.ObjectSpec(obj=t) for t in tasks],
                                 propSet=[pc.PropertySpec(type=vim.Task, pathSet=["info"])])
            out = []
            for oc in self.si.content.propertyCollector.RetrieveContents([spec]):
                info = oc.propSet[0].val if oc.propSet else None
                if (info is not None and info.descriptionId == description_id
                        and info.entity is not None and info.entity._moId == entity_moref
                        and str(info.state) in _ACTIVE):
                    out.append(oc.obj._moId)
            return out
        return cast(list[str], self.call(f"recent {description_id} tasks", go))

    def _settle(self, entity_moref: str, description_id: str, what: str) -> None:
        """Wait for every running creation task of that kind on the object to end."""
        for moref in self.active_tasks(entity_moref, description_id):
            log.warning("%s: waiting for the earlier task %s before anything else", what, moref)
            try:
                self.wait_task(moref, what)
            except TransientError:
                raise
            except DpflowError as exc:  # it failed: nothing of it to adopt
                log.warning("%s: earlier task %s failed: %s", what, moref, exc)

    def adopt_snapshot(self, vm: VmInfo, name: str, quiesce: bool) -> SnapshotRef | None:
        """The snapshot `name` an earlier attempt made (after its task ended), if any.
        Of several, the one nearest the root is kept and the others removed; one that is
        not quiesced when quiescing was asked for is removed, not adopted."""
        what = f"snapshot {name} of VM {vm.name}"
        self._settle(vm.moref, SNAPSHOT_TASK, what)
        tree = self.call(what, lambda: vim.VirtualMachine(vm.moref, self.si._stub).snapshot)
        mine = sorted((d, s) for d, s in snapshot_tree(vm.moref, tree) if s.name == name)
        keep = next((s for _, s in mine if s.quiesced or not quiesce), None)
        for _, s in sorted(mine, key=lambda p: -p[0]):  # deepest first: never a parent
            if s is not keep:
                log.warning("%s: removing the extra snapshot %s an earlier attempt left",
                            what, s.moref)
                self.remove_snapshot(s)
        if keep is not None:
            log.warning("%s: adopting %s, made by an earlier attempt", what, keep.moref)
        return keep

    def hunt(self, find: Callable[[], T | None], what: str) -> T | None:
        """Look for the outcome of a call whose answer was lost, for up to hunt_s."""
        end = time.monotonic() + self.vc.hunt_s
        pause = 0.2
        while True:
            try:
                found = find()
            except TransientError as exc:  # vCenter not answering yet: keep looking
                log.warning("%s: looking on vCenter: %s", what, exc)
                found = None
            if found is not None or time.monotonic() >= end:
                if found is None:
                    log.warning("%s: nothing found on vCenter after %g s; calling again",
                                what, self.vc.hunt_s)
                return found
            time.sleep(pause)
            pause = min(pause * 1.5, 2.0)
