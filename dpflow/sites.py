"""Sites of the data-centre file: which array and hosts are where, and what CA protects.

Why its own models: a site failover plan is computed from these alone (the --dry-run
plan touches no hardware), so they must say everything the flow needs: the array of
each site, the array's names for the site's ESX hosts (the LUNs are presented to them),
and the DR groups with their home site and member vdisks.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Site(_Strict):
    name: str
    array: str = Field(description="the array at this site (a name under 'arrays:')")
    vcenter: str | None = Field(None, description="the site's vCenter (a name under "
                                "'vcenters:'), if VMs are brought up there")
    hosts: list[str] = Field(min_length=1, description="the array's names for this site's "
                             "ESX hosts: replicated LUNs are presented to them")
    networks: dict[str, str] = Field(default_factory=dict, description="network re-mapping "
                                     "of VMs brought up here: other site's network → this "
                                     "site's network")


class ProtectedVm(_Strict):
    """A VM whose files are on a replicated datastore, brought up at the other site."""

    name: str
    priority: int = Field(3, ge=1, le=5, description="power-on group: group 1 first; a group "
                          "starts when every VM of the previous one is up or failed")
    up_timeout_s: float = Field(60.0, gt=0, description="how long to wait for power on and "
                                "the guest heartbeat")
    probes: list[str] = Field(default_factory=list, description="application probes once "
                              "up, as for restore tests (e.g. guest-file:/srv/app/ready, with "
                              "restore_tests.guest_user / guest_password)")


class DrGroupSpec(_Strict):
    """A Continuous Access DR group as the administrator planned it."""

    name: str
    home: str = Field(description="the site that is normally the source")
    remote: str = Field(description="the site it replicates to")
    vdisks: list[str] = Field(min_length=1, description="member vdisks (same names at both "
                              "sites); VMs sharing a VMFS LUN must share a group")
    mode: Literal["sync", "async", "enhanced"] = "sync"
    failsafe: bool = False
    in_sync_timeout_s: float = Field(300.0, gt=0, description="a planned failover waits "
                                     "this long for the group to be in sync")
    datastore: str | None = Field(None, description="the VMFS volume (its label) on the "
                                  "group's vdisks that holds the VMs below")
    vms: list[ProtectedVm] = Field(default_factory=list, description="VMs on that datastore, "
                                   "registered and powered on at the other site")
    on_vm_failure: Literal["continue", "stop"] = Field(
        "continue", description="a VM that does not come up: continue with the next "
        "priority groups, or stop before them")


def check_sites(sites: list[Site], groups: list[DrGroupSpec], arrays: set[str],
                vcenters: set[str]) -> None:
    """Raise ValueError (one line) when a site or DR group names something unknown."""
    names = [s.name for s in sites]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate site name(s): {', '.join(sorted(dup))}")
    for s in sites:
        if s.array not in arrays:
            raise ValueError(f"site '{s.name}': unknown array '{s.array}'")
        if s.vcenter is not None and s.vcenter not in vcenters:
            raise ValueError(f"site '{s.name}': unknown vcenter '{s.vcenter}'")
    gnames = [g.name for g in groups]
    dup = {n for n in gnames if gnames.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate DR group name(s): {', '.join(sorted(dup))}")
    for g in groups:
        for role, site in (("home", g.home), ("remote", g.remote)):
            if site not in names:
                raise ValueError(f"DR group '{g.name}': unknown {role} site '{site}'")
        if g.home == g.remote:
            raise ValueError(f"DR group '{g.name}': home and remote are the same site")
        if g.vms and g.datastore is None:
            raise ValueError(f"DR group '{g.name}': 'vms' need the 'datastore' that holds them")
        if g.vms:
            for site in (g.home, g.remote):
                if next(s for s in sites if s.name == site).vcenter is None:
                    raise ValueError(f"DR group '{g.name}' has VMs: site '{site}' needs a "
                                     "'vcenter'")
