"""The fault matrix: every step of every path that talks to a simulator × {transient,
permanent}, each fault injected THROUGH the simulator (vcsim's /_fault rules, the EVA's
run-time faults), never by patching dpflow.

A case is (path, step, kind, injection). A step lists every injection that applies to it
(a task fault, a SOAP fault, an HTTP status, a dropped connection, a provider that hangs,
a job that fails, a full pool ...); the full matrix runs them all, the default sample
(seeded, the seed printed) draws cases at random within a time budget.

What a case expects is the contract: a transient fault is retried and the run completes
(exit 0); a permanent one fails the run (exit 1) and leaves nothing behind. Where the
faulted step is itself a compensation (removing the snapshot, destroying a half-restored
VM, unpresenting a replica, giving LUNs back) a permanent fault may leave its object: it
must then be reported, and the next run of the path must remove it (`follow_up`).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["transient", "permanent"]
MIB = 1 << 20
SEED_ENV, FULL_ENV, BUDGET_ENV = "DPFLOW_FAULT_SEED", "DPFLOW_CAMPAIGN", "DPFLOW_FAULT_BUDGET_S"


@dataclass(frozen=True)
class Injection:
    """One fault, as the simulator is told it. sim "vc": kwargs of Vcsim.set_fault; sim
    "eva": a RemoteFaults call (op = its name) and the CIM method whose firing is counted."""

    sim: Literal["vc", "eva"]
    how: str
    rule: tuple[tuple[str, Any], ...]

    def kwargs(self) -> dict[str, Any]:
        return dict(self.rule)


def vc(how: str, **rule: Any) -> Injection:
    return Injection("vc", how, tuple(sorted(rule.items())))


def eva(how: str, **rule: Any) -> Injection:
    return Injection("eva", how, tuple(sorted(rule.items())))


def soap_faults(method: str, *, lost: bool = True) -> dict[Kind, list[Injection]]:
    """The ways a vSphere SOAP method fails: a task or SOAP fault vCenter answers, a 503,
    a dropped connection (the answer lost: the driver hunts for the outcome first)."""
    transient = [vc("task SystemError", method=method, kind="task", fault="SystemError", count=1),
                 vc("SOAP SystemError", method=method, kind="soap", fault="SystemError", count=1),
                 vc("HTTP 503", method=method, kind="http", status=503, count=1)]
    if lost:
        transient.append(vc("connection dropped", method=method, kind="drop", count=1))
    if not method.endswith("_Task"):
        transient = [i for i in transient if not i.how.startswith("task")]
        permanent = [vc("SOAP NotSupported", method=method, kind="soap", fault="NotSupported",
                        count=0)]
    else:
        permanent = [vc("task NotSupported", method=method, kind="task", fault="NotSupported",
                        count=0),
                     vc("SOAP InvalidState", method=method, kind="soap", fault="InvalidState",
                        count=0)]
    return {"transient": transient, "permanent": permanent}


def datastore_faults(verb: str, path: str = r"-flat\.vmdk$") -> dict[Kind, list[Injection]]:
    """A datastore (or guest) HTTP transfer: 503s, a cut connection or, for a disk read, the
    vCenter process killed and started again mid-transfer (its inventory kept, its
    sessions lost) heal; 404/403 do not."""
    restart = [vc("vCenter restarted", path=path, verb=verb, kind="crash", bytes=2 * MIB,
                  ms=500, count=1)] if verb == "GET" and path.endswith("vmdk$") else []
    return {"transient": [vc("HTTP 503 x2", path=path, verb=verb, kind="http", status=503,
                             count=2),
                          vc("connection dropped", path=path, verb=verb, kind="drop", count=1),
                          *restart],
            "permanent": [vc("HTTP 404", path=path, verb=verb, kind="http", status=404, count=0),
                          vc("HTTP 403", path=path, verb=verb, kind="http", status=403,
                             count=0)]}


def smis_faults(method: str, *, job: bool = True, hang: bool = True
                ) -> dict[Kind, list[Injection]]:
    """An SMI-S extrinsic method: busy (rc 6) or a provider that does not answer in time
    heal; Failed (rc 4) on every call, or its job ending in Exception, do not."""
    transient = [eva("busy (rc 6)", op="fail_method", method=method, rc=6,
                     description="controller busy", count=1)]
    if hang:
        transient.append(eva("provider timeout", op="hang", method=method, seconds=3.5, count=1))
    permanent = [eva("failed (rc 4)", op="fail_method", method=method, rc=4,
                     description="controller failure", count=50)]
    if job:
        permanent.append(eva("job exception", op="fail_job", method=method, error_code=0x8010,
                             description="disk failure", count=50))
    # the array's own slowness under load must not pass for the fault: calls get 3 s
    # (timeout_s), a hung provider answers after 3.5 s
    return {"transient": transient, "permanent": permanent}


@dataclass(frozen=True)
class Step:
    """A step of a path and how it fails. `trigger`: faults that make the path reach a
    compensation step at all; `follow_up`: what a permanent fault may leave ("snapshot",
    "vm", "replica", "presentation") and the next run removes."""

    name: str
    faults: dict[Kind, list[Injection]]
    trigger: tuple[Injection, ...] = ()
    follow_up: str = ""
    options: tuple[str, ...] = ()


# seconds of one case per path, what the sample's budget is spent by: a third of what the
# whole matrix measured per case at a load of 9 on 2 cores (the LUN paths talk to the
# Python EVA, which every retry and timeout of theirs waits on)
COST_S = {"image-backup": 3.5, "file-backup": 4.5, "image-restore": 4.0,
          "file-restore-into-guest": 2.0, "lun-replicate": 13.0, "lun-restore": 7.0}


NOT_FOUND = vc("HTTP 404 (trigger)", path=r"-flat\.vmdk$", verb="PUT", kind="http", status=404,
               count=0)
HIDE_FAILS = eva("failed (trigger)", op="fail_method", method="HidePaths", rc=4,
                 description="controller failure", count=50)

# property reads (RetrieveProperties) change nothing: a lost answer is asked again, and
# the first one is the CLI's pre-flight lookup of the VM (retried like a task step)
READS = {"transient": soap_faults("RetrieveProperties")["transient"],
         "permanent": []}

PATHS: dict[str, list[Step]] = {
    "image-backup": [
        Step("look up VM", READS),
        Step("enable change tracking", soap_faults("ReconfigVM_Task", lost=False)),
        Step("create snapshot", soap_faults("CreateSnapshot_Task")),
        Step("read disk", datastore_faults("GET")),
        Step("remove snapshot", soap_faults("RemoveSnapshot_Task", lost=False),
             follow_up="snapshot"),
    ],
    "file-backup": [
        Step("create snapshot", soap_faults("CreateSnapshot_Task")),
        Step("read disk", datastore_faults("GET")),
        Step("remove snapshot", soap_faults("RemoveSnapshot_Task", lost=False),
             follow_up="snapshot"),
    ],
    "image-restore": [
        Step("create VM", soap_faults("CreateVM_Task")),
        Step("write disk", datastore_faults("PUT")),
        Step("verify disk", datastore_faults("GET")),
        Step("destroy half-restored VM", soap_faults("Destroy_Task", lost=False),
             trigger=(NOT_FOUND,), follow_up="vm"),
    ],
    "file-restore-into-guest": [
        Step("make directory", soap_faults("MakeDirectoryInGuest", lost=False)),
        Step("start upload", soap_faults("InitiateFileTransferToGuest", lost=False)),
        Step("upload", datastore_faults("PUT", r"^/guestFile")),
    ],
    "lun-replicate": [
        Step("create replica set", smis_faults("CreateGroupReplica")),
        # deleting a mirrorclone set detaches it with the same method: the compensation
        # meets the same fault, so the set may stay (reported) until the next replicate
        Step("fracture mirrorclones", smis_faults("ModifyReplicaSynchronization"),
             options=("--kind", "mirrorclone"), follow_up="replica"),
        Step("present to backup host", smis_faults("ExposePaths", job=False)),
        Step("unpresent from backup host", smis_faults("HidePaths", job=False),
             follow_up="replica"),
        Step("no space (strict)", {"transient": [], "permanent": [
            eva("pool full", op="fill_pool", pool="DG1")]},
             options=("--kind", "snapclone", "--policy", "strict")),
    ],
    "lun-restore": [
        Step("detach sources from hosts", smis_faults("HidePaths", job=False)),
        Step("restore sources from replica", smis_faults("ModifyReplicaSynchronization")),
        Step("give sources back to hosts", smis_faults("ExposePaths", job=False),
             trigger=(), follow_up="presentation"),
    ],
}


@dataclass(frozen=True)
class Case:
    path: str
    step: Step
    kind: Kind
    injection: Injection

    def __str__(self) -> str:
        return f"{self.path}/{self.step.name}/{self.kind}/{self.injection.how}".replace(" ", "_")

    @property
    def cost_s(self) -> float:
        return COST_S[self.path]


def all_cases() -> list[Case]:
    """The whole matrix, built from PATHS: path × step × kind × injection."""
    return [Case(path, step, kind, inj) for path, steps in PATHS.items() for step in steps
            for kind in ("transient", "permanent") for inj in step.faults[kind]]


def seed() -> int:
    return int(os.environ.get(SEED_ENV) or time.time())


def select(cases: list[Case], seed: int, budget_s: float) -> list[Case]:
    """The seeded sample: one case of each path first (so every path is exercised), then
    more at random while the estimated cost stays within the budget; in matrix order."""
    rng = random.Random(seed)
    order = rng.sample(cases, len(cases))
    chosen: list[Case] = []
    spent = 0.0
    for path in PATHS:
        first = next(c for c in order if c.path == path)
        chosen.append(first)
        spent += first.cost_s
    for c in order:
        if c not in chosen and spent + c.cost_s <= budget_s:
            chosen.append(c)
            spent += c.cost_s
    return [c for c in cases if c in chosen]


def campaign() -> tuple[int, list[Case], int]:
    """(seed, cases to run, size of the whole matrix)."""
    every = all_cases()
    s = seed()
    if os.environ.get(FULL_ENV) == "full":
        return s, every, len(every)
    return s, select(every, s, float(os.environ.get(BUDGET_ENV, "36"))), len(every)
