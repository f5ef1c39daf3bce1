"""Application probes of a restore test: checks run against the booted test VM.

A probe is written `kind:argument` in the VM's check spec (restore_tests.checks.<vm>.probes).
Built in: `guest-file:/path`, the file as the running guest sees it (vSphere guest
operations, with restore_tests.guest_user / guest_password). Other kinds come from
installed packages: an entry point in the group `dpflow.probes` named after the kind,
pointing at a callable `(ProbeContext, argument) -> dpflow.proofs.Check`. Unknown kinds
are refused when the test starts, before anything is created.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from dpflow.environment import Environment
from dpflow.errors import DpflowError, UserError, first_line
from dpflow.proofs import Check
from drivers.protocols import VmInfo
from tasks.common import step

GROUP = "dpflow.probes"


@dataclass
class ProbeContext:
    """What a probe may use: the environment, the vCenter, the booted test VM, and the
    protected VM's name (the spec's owner)."""

    env: Environment
    vcenter: str
    vm: VmInfo
    source_vm: str


Probe = Callable[[ProbeContext, str], Check]


def guest_file(ctx: ProbeContext, path: str) -> Check:
    from drivers.vsphere_guest import GuestFiles

    policy = ctx.env.dc.restore_tests
    if policy.guest_password is None:
        raise UserError("probe guest-file needs guest credentials: set "
                        "restore_tests.guest_password (env or prefect_secret)")
    gf = GuestFiles(ctx.env.hypervisor(ctx.vcenter), ctx.vm, policy.guest_user,
                    policy.guest_password.resolve())
    seen = gf.exists(path)
    return Check(name=f"probe guest-file:{path}", status="passed" if seen else "failed",
                 detail=("the running guest sees it (guest operations)" if seen else
                         "the running guest does not see it (guest operations)"))


BUILTIN: dict[str, Probe] = {"guest-file": guest_file}


def probe(kind: str) -> Probe:
    """The probe of `kind`: built in, or an installed entry point; UserError if none."""
    if kind in BUILTIN:
        return BUILTIN[kind]
    found = [ep for ep in entry_points(group=GROUP) if ep.name == kind]
    if not found:
        known = ", ".join(sorted(BUILTIN) + sorted(ep.name for ep in entry_points(group=GROUP)))
        raise UserError(f"unknown probe kind '{kind}': known kinds are {known} (more through "
                        f"entry points in the group {GROUP})")
    fn: Probe = found[0].load()
    return fn


def check_probes(env: Environment, vm: str) -> None:
    """Every probe of the VM's spec is known (and has what it needs): bad input, early."""
    spec = env.dc.restore_tests.for_vm(vm)
    for p in spec.probes:
        kind, _, _ = p.partition(":")
        probe(kind)
        if kind == "guest-file":
            if env.dc.restore_tests.guest_password is None:
                raise UserError("probe guest-file needs guest credentials: set "
                                "restore_tests.guest_password (env or prefect_secret)")
            env.dc.restore_tests.guest_password.resolve()


@step(name="run probes", retries=0)
def run_probes(env: Environment, vcenter: str, vm: VmInfo, source_vm: str) -> list[Check]:
    """Each probe of the spec against the running test VM; a probe that raises fails."""
    ctx = ProbeContext(env, vcenter, vm, source_vm)
    out = []
    for p in env.dc.restore_tests.for_vm(source_vm).probes:
        kind, _, arg = p.partition(":")
        try:
            out.append(probe(kind)(ctx, arg))
        except DpflowError as exc:
            out.append(Check(name=f"probe {p}", status="failed", detail=first_line(exc)))
    return out
