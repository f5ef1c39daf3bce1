"""The per-site deployments that process workers run: one `backup-vm-image` deployment
per work pool the data centre names (`work_pool:` of a vCenter), which backup-vms sends
that site's VMs to. Checked before anything is created: a missing work pool, or a
concurrency limit the server does not take, is one line and exit code 2.

    prefect work-pool create "site A proxies" --type process       # once per site
    uv run python deployments/pools.py --dc default
    DPFLOW_PROXY=proxy-a prefect worker start --pool "site A proxies"   # on each proxy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dpflow import datacentre
from dpflow.config import DataCentre
from dpflow.errors import UserError, first_line
from dpflow.limits import ensure
from dpflow.locks import limit_name
from dpflow.pools import deployment_name, pools

ROOT = Path(__file__).resolve().parents[1]


def check_pools(dc: DataCentre) -> list[str]:
    """The data centre's work pools, each known to the Prefect server (UserError if not)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    wanted = pools(dc)
    with get_client(sync_client=True) as client:
        for pool in wanted:
            try:
                client.read_work_pool(pool)
            except ObjectNotFound:
                raise UserError(f"work pool '{pool}' does not exist on the Prefect server: "
                                f"create it (prefect work-pool create '{pool}' --type "
                                f"process), then deploy again") from None
    return wanted


def create_limits(dc: DataCentre) -> None:
    """The per-proxy concurrency limits, made now so that a server that refuses them says
    so at deploy time (datastore and host limits follow the same path at backup time)."""
    limits = {limit_name("proxy", p.name): dc.limits.per_proxy for p in dc.proxies}
    try:
        ensure(limits)
    except Exception as exc:  # noqa: BLE001 - any refusal is the operator's to read
        raise UserError(f"cannot create the concurrency limits {', '.join(sorted(limits))} "
                        f"on the Prefect server: {first_line(exc)}; see the server's log, "
                        f"then deploy again") from exc


def deploy_pools(dc: str) -> dict[str, Any]:
    """Check, then create or update each pool's deployment; {pool: deployment id}."""
    from prefect import Flow

    model = datacentre.load(dc)
    wanted = check_pools(model)
    if not wanted:
        raise UserError("no vCenter of the data centre names a work_pool: backup-vms backs "
                        "its VMs up in its own process (deployments/serve.py)")
    create_limits(model)
    # the workers run the flow from this checkout's directory (the same path on every proxy)
    flow = Flow.from_source(source=str(ROOT), entrypoint="flows/vm_image.py:backup_vm_image")
    return {pool: flow.to_deployment(deployment_name(pool), parameters={"dc": dc})
            .apply(work_pool_name=pool) for pool in wanted}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--dc", default="default",
                    help="registered data-centre name (or a data-centre file)")
    args = ap.parse_args()
    from dpflow import prefect_server

    try:
        prefect_server.ensure_server()
        for pool, dep in deploy_pools(args.dc).items():
            print(f"{pool}: deployment backup-vm-image/{deployment_name(pool)} ({dep})")
    except UserError as exc:
        print(f"dpflow: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
