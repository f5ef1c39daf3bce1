"""The nightly data centre: dpflow's flows on schedules, served by one process.

    uv run python deployments/serve.py --config dpflow.yaml --vms web01 db01

Image backups every night (CBT incrementals after the first), a weekly verify that
reads 10 % of the chunks, and a weekly forget + prune. Each is an ordinary Prefect
deployment: trigger, pause or re-schedule it from the Prefect UI, or run the same flows
on a process work pool with `prefect deploy` (deployments/prefect.yaml) for many proxies.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dpflow.retention import KeepPolicy


def build(config: str, vms: list[str], *, backup_cron: str = "0 1 * * *",
          verify_cron: str = "0 6 * * 0", prune_cron: str = "0 7 * * 0") -> list[Any]:
    """The deployments, validated but not yet served (tests build them too)."""
    from dpflow import config as cfg
    from flows.maintenance import forget_versions, prune_media, verify_media
    from flows.vm_image import backup_vms

    cfg.load(Path(config))  # a bad data-centre file stops here, with its one line
    keep = KeepPolicy(daily=7, weekly=4, monthly=12)
    return [
        backup_vms.to_deployment("nightly-image-backup", cron=backup_cron,
                                 parameters={"config": config, "vms": vms}),
        verify_media.to_deployment("weekly-verify", cron=verify_cron,
                                   parameters={"config": config, "read_percent": 10.0}),
        forget_versions.to_deployment("weekly-forget", cron=prune_cron,
                                      parameters={"config": config,
                                                  "policy": keep.model_dump(),
                                                  "apply": True}),
        prune_media.to_deployment("weekly-prune", cron=prune_cron,
                                  parameters={"config": config, "apply": True}),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="dpflow.yaml")
    ap.add_argument("--vms", nargs="+", required=True)
    args = ap.parse_args()
    from prefect import serve

    from dpflow import prefect_server

    prefect_server.ensure_server()
    serve(*build(str(Path(args.config).resolve()), args.vms))


if __name__ == "__main__":
    main()
