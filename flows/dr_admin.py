"""DR groups as the data-centre file describes them: create what is missing, report state.

protect: for each DR group of the config, created at its home site's array towards the
remote site's array (idempotent: an existing group is left as it is). dr_status: every
DR group as each site's array sees it (role, mode, state, log usage, lag); a site whose
array does not answer is reported as unreachable, not as an error.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel

from dpflow.environment import open_environment
from dpflow.errors import first_line
from drivers.remote import DrGroupInfo
from tasks import dr


class SiteStatus(BaseModel):
    site: str
    array: str
    reachable: bool
    groups: list[DrGroupInfo] = []
    message: str = ""


@flow(name="dr-protect", log_prints=True)
def protect(dc: str) -> list[DrGroupInfo]:
    with open_environment(dc) as env:
        dcm = env.dc
        out = []
        for g in dcm.dr_groups:
            home, remote = dcm.site(g.home), dcm.site(g.remote)
            out.append(dr.ensure_group(env, home.array, g.name, list(g.vdisks), remote.array,
                                       g.mode, g.failsafe))
        return out


@flow(name="dr-status", log_prints=True)
def dr_status(dc: str) -> list[SiteStatus]:
    with open_environment(dc) as env:
        dcm = env.dc
        out = []
        for s in dcm.sites:
            try:
                out.append(SiteStatus(site=s.name, array=s.array, reachable=True,
                                      groups=dr.list_groups(env, s.array)))
            except Exception as exc:  # noqa: BLE001 - an unreachable site is a status
                out.append(SiteStatus(site=s.name, array=s.array, reachable=False,
                                      message=first_line(exc)))
        return out
