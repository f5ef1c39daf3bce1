"""Two sites for Continuous Access: EVA server processes that replicate to each other.

Why a helper: tests, the demo and the bench all need the same wiring (each array told its
peer's URL, credentials and CA, so the inter-site link is verified HTTPS like the
management path), the same link controls on both ends (down, up, slow), one clock move
for both arrays (the failback guard) and a data-centre file that describes the sites.

    with TwoSites.start(tmp) as s:
        cfg = s.write_config(tmp / "dc.yaml", [{"name": "dr1", "home": "A", "remote": "B",
                                                "vdisks": ["vd1"], "mode": "async"}])
        s.link(up=False)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from simulators.eva.process import EvaServer
from simulators.vcsim import Vcsim

MiB = 1 << 20
SITES = {"A": ("EVA-A", "esx-a", "50014380000000A1"), "B": ("EVA-B", "esx-b",
                                                           "50014380000000B1")}
BACKUP_HOST = ("backup", {"A": "50014380000000A9", "B": "50014380000000B9"})
SITE_NETWORK = {"A": "VM Network", "B": "DR Network"}  # the VMs' network at each site


def link_arrays(a: EvaServer, b: EvaServer) -> None:
    """Connect two running arrays both ways (names as the arrays report them)."""
    name_a, name_b = a.control(op="name")["name"], b.control(op="name")["name"]
    for here, there, peer in ((a, b, name_b), (b, a, name_a)):
        here.control(op="connect_peer", peer=peer, url=there.url, user=there.user,
                     password=there.password, ca_file=str(there.ca_file))


def set_link(arrays: list[EvaServer], **wire: Any) -> None:
    """The inter-site link as both ends see it: up=False cuts it, bandwidth (bytes/s)
    and delay_s slow it."""
    for e in arrays:
        e.control(op="link", **wire)


class TwoSites:
    """Site A and site B, one simulated EVA each, linked; hosts esx-a / esx-b."""

    def __init__(self, root: Path, arrays: dict[str, EvaServer],
                 vcenters: dict[str, Vcsim] | None = None) -> None:
        self.root, self.arrays, self.vcenters = root, arrays, vcenters or {}

    @classmethod
    def start(cls, root: Path | str, pool_bytes: int = 512 * MiB,
              vcenters: bool = False) -> TwoSites:
        """With vcenters=True, each site also gets a vCenter simulator whose hosts are the
        site's array host (their SAN is the array's data path); site B has a "DR Network"."""
        root = Path(root)
        arrays: dict[str, EvaServer] = {}
        vcs: dict[str, Vcsim] = {}
        try:
            for site, (name, host, wwn) in SITES.items():
                arrays[site] = EvaServer.start(
                    root / name, pools={"DG1": pool_bytes},
                    hosts={host: [wwn], BACKUP_HOST[0]: [BACKUP_HOST[1][site]]}, name=name)
            link_arrays(arrays["A"], arrays["B"])
            if vcenters:
                for site, e in arrays.items():
                    vcs[site] = start_site_vcenter(root / f"vc-{site}", e, SITES[site][1],
                                                   SITE_NETWORK[site])
        except BaseException:
            for v in vcs.values():
                v.stop()
            for e in arrays.values():
                e.stop()
            raise
        return cls(root, arrays, vcs)

    @property
    def a(self) -> EvaServer:
        return self.arrays["A"]

    @property
    def b(self) -> EvaServer:
        return self.arrays["B"]

    def host(self, site: str) -> Any:
        """The data path of the site's ESX host (LUN reads and writes)."""
        return self.arrays[site].host_port(SITES[site][1])

    @contextmanager
    def healthy(self) -> Iterator[TwoSites]:
        """The link up at full speed and no vCenter faults, before and after the block."""
        def reset() -> None:
            self.link(up=True, bandwidth=None)
            for vc in self.vcenters.values():
                vc.clear_faults()
        reset()
        try:
            yield self
        finally:
            reset()

    def link(self, **wire: Any) -> None:
        set_link(list(self.arrays.values()), **wire)

    def advance_clock(self, seconds: float) -> None:
        for e in self.arrays.values():
            e.control(op="advance_clock", seconds=seconds)

    def dr_info(self, site: str, group: str) -> dict[str, Any]:
        """The group as the site's array sees it (not through SMI-S: for checks)."""
        return dict(self.arrays[site].control(op="dr_info", group=group))

    def restart(self, site: str) -> None:
        """Start a stopped array again from its state (a site coming back)."""
        old = self.arrays[site]
        name, host, wwn = SITES[site]
        self.arrays[site] = EvaServer.start(old.root, user=old.user, password=old.password,
                                            name=name)
        link_arrays(self.arrays["A"], self.arrays["B"])

    def write_config(self, path: Path, dr_groups: list[dict[str, Any]],
                     env_prefix: str = "DPFLOW_SITE") -> Path:
        """A data-centre file with both arrays, both sites and these DR groups (and both
        vCenters with each site's network mapping, when started). The passwords are put
        in the environment (the file only names the variables)."""
        arrays = []
        for site, e in self.arrays.items():
            var = f"{env_prefix}_{site}_PASSWORD"
            os.environ[var] = e.password
            arrays.append({"name": SITES[site][0], "host": "127.0.0.1", "port": e.port,
                           "user": e.user, "password": {"env": var}, "ca_file": str(e.ca_file),
                           "backup_host": BACKUP_HOST[0], "timeout_s": 10.0})
        sites: list[dict[str, Any]] = [{"name": s, "array": SITES[s][0], "hosts": [SITES[s][1]]}
                                       for s in self.arrays]
        vcenters = []
        for site, vc in self.vcenters.items():
            var = f"{env_prefix}_VC_{site}_PASSWORD"
            os.environ[var] = vc.password
            vcenters.append({"name": f"vc-{site}", "host": vc.host, "port": vc.port,
                             "user": vc.username, "password": {"env": var},
                             "ca_file": str(vc.ca_file), "connect_timeout_s": 5.0,
                             "call_timeout_s": 60.0, "hunt_s": 5.0})
            other = next(s for s in SITE_NETWORK if s != site)
            sites[list(self.arrays).index(site)].update(
                vcenter=f"vc-{site}", networks={SITE_NETWORK[other]: SITE_NETWORK[site]})
        cfg: dict[str, Any] = {
            "stores": [{"name": "library", "path": str(path.parent / "store")}],
            "catalog_url": f"sqlite:///{path.parent / 'catalog.db'}",
            "vcenters": vcenters, "arrays": arrays, "sites": sites, "dr_groups": dr_groups}
        if self.vcenters:  # the guests' login, for application probes
            vc = next(iter(self.vcenters.values()))
            os.environ[f"{env_prefix}_GUEST_PASSWORD"] = vc.guest_password
            cfg["restore_tests"] = {"guest_user": vc.guest_user,
                                    "guest_password": {"env": f"{env_prefix}_GUEST_PASSWORD"}}
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def stop(self) -> None:
        for v in self.vcenters.values():
            v.stop()
        for e in self.arrays.values():
            e.stop()

    def __enter__(self) -> TwoSites:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_site_vcenter(work: Path, array: EvaServer, host: str, network: str) -> Vcsim:
    """A vCenter simulator whose hosts reach `array` as its host `host` (the SAN), with
    `network` as a port group when it is not vcsim's own "VM Network"."""
    vc = Vcsim(work_dir=work, vms_per_pool=0,
               extra_args=("-san-url", array.url, "-san-host", host, "-san-user", array.user,
                           "-san-ca", str(array.ca_file)),
               extra_env={"DPFLOW_VCSIM_SAN_PASSWORD": array.password}).start()
    try:
        if network != "VM Network":
            from simulators.site_vms import add_port_group

            add_port_group(vc, network)
    except BaseException:
        vc.stop()
        raise
    return vc
