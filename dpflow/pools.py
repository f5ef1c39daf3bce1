"""Work pools of the data centre: which pool's workers back up a vCenter's VMs, and the
deployment a VM's backup is sent to there.

One deployment of `backup-vm-image` per pool (a Prefect deployment names one pool), named
from the pool, so backup-vms finds it from the data-centre file alone.
"""

from __future__ import annotations

import re

from dpflow.config import DataCentre

FLOW = "backup-vm-image"


def deployment_name(pool: str) -> str:
    """'site A proxies' → 'vm-image-backup-site-a-proxies'."""
    return "vm-image-backup-" + re.sub(r"[^a-z0-9]+", "-", pool.lower()).strip("-")


def pool_of(dc: DataCentre, vcenter: str) -> str | None:
    for vc in dc.vcenters:
        if vc.name == vcenter:
            return vc.work_pool
    return None


def pools(dc: DataCentre) -> list[str]:
    """The data centre's work pools, in the order of its vCenters."""
    return list(dict.fromkeys(vc.work_pool for vc in dc.vcenters if vc.work_pool))
